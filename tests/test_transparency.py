"""Tracing never changes what a program observes of asyncio's primitives."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace import _threads, semconv
from aiotrace.testing import Captured, capture_spans
from tests.cli_support import PROGRAMS, console_script, python
from tests.cli_support import aiotrace as aiotrace_command


def test_types_reprs_and_signatures_are_unchanged(traced: Captured) -> None:
    """isinstance, type, repr, signatures and coroutine-function-ness are as before."""

    async def main() -> None:
        lock = asyncio.Lock()
        assert type(lock) is asyncio.Lock
        assert isinstance(asyncio.BoundedSemaphore(), asyncio.Semaphore)
        assert repr(lock).endswith("[unlocked]>")
        async with lock as bound:
            assert bound is None
            assert lock.locked()
            assert repr(lock).endswith("[locked]>")
        assert not lock.locked()
        for cls, method in [
            (asyncio.Lock, "acquire"),
            (asyncio.Semaphore, "acquire"),
            (asyncio.Event, "wait"),
            (asyncio.Condition, "wait"),
            (asyncio.Queue, "get"),
            (asyncio.Queue, "put"),
            (asyncio.Queue, "join"),
        ]:
            func = getattr(cls, method)
            assert inspect.iscoroutinefunction(func), (cls, method)
            assert func.__name__ == method
            assert func.__doc__
        assert str(inspect.signature(asyncio.Queue.put)) == "(self, item)"
        assert str(inspect.signature(asyncio.Semaphore)) == "(value=1)" or sys.version_info < (
            3,
            11,
        )

    asyncio.run(main())


def test_errors_are_exactly_asyncios(slow_paths: str, traced: Captured) -> None:
    """Misuse raises the same exceptions with the same messages, whether aiotrace runs
    asyncio's code as its own (verified source) or calls it. (``slow_paths`` first: it
    decides what instrumenting, in ``traced``, patches in.)"""

    async def main() -> None:
        with pytest.raises(RuntimeError, match="Lock is not acquired"):
            asyncio.Lock().release()
        with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
            asyncio.Condition().notify()
        with pytest.raises(ValueError, match="BoundedSemaphore released too many times"):
            asyncio.BoundedSemaphore(1).release()
        with pytest.raises(ValueError, match="Semaphore initial value must be >= 0"):
            asyncio.Semaphore(-1)
        with pytest.raises(asyncio.QueueEmpty):
            asyncio.Queue().get_nowait()
        queue: asyncio.Queue[int] = asyncio.Queue(1)
        queue.put_nowait(1)
        with pytest.raises(asyncio.QueueFull):
            queue.put_nowait(2)
        with pytest.raises(ValueError, match="task_done") as raised:
            asyncio.Queue().task_done()
        # Raised by asyncio's task_done, or by ours running its code.
        ours = sys.modules["aiotrace.primitives.queues"].__file__
        raiser = asyncio.queues.__file__ if slow_paths == "awaited" else ours
        assert str(raised.traceback[-1].path) == raiser
        if hasattr(queue, "shutdown"):  # 3.13
            queue.shutdown()
            with pytest.raises(asyncio.QueueShutDown):
                queue.put_nowait(3)
            assert queue.get_nowait() == 1  # what was put is still there
            with pytest.raises(asyncio.QueueShutDown):
                queue.get_nowait()
            assert queue.qsize() == 0

    asyncio.run(main())


def _constructor_misuse() -> list[tuple[str, str]]:
    """What each wrong constructor call raises: ``(type, message)`` per call."""
    calls: list[Callable[[], object]] = [
        lambda: asyncio.Lock(1),  # type: ignore[call-arg]
        lambda: asyncio.Lock(loop=None),  # type: ignore[call-arg]
        lambda: asyncio.Event(1),  # type: ignore[call-arg]
        lambda: asyncio.Semaphore(1, 2),  # type: ignore[call-arg]
        lambda: asyncio.Semaphore(value=-1),
        lambda: asyncio.BoundedSemaphore(-2),
        lambda: asyncio.Condition(asyncio.Lock(), 1),  # type: ignore[call-arg]
        lambda: asyncio.Condition(lock=asyncio.Lock(), loop=None),  # type: ignore[call-arg]
        lambda: asyncio.Queue(1, 2),  # type: ignore[call-arg]
        lambda: asyncio.Queue(maxsize=1, loop=None),  # type: ignore[call-arg]
    ]
    if hasattr(asyncio, "Barrier"):  # 3.11+
        calls += [lambda: asyncio.Barrier(0), lambda: asyncio.Barrier(2, 3)]
    raised = []
    for call in calls:
        try:
            call()
        except Exception as exc:
            raised.append((type(exc).__name__, str(exc)))
        else:
            raised.append(("nothing", ""))
    return raised


@pytest.mark.pristine
def test_constructors_refuse_wrong_arguments_exactly_as_asyncios() -> None:
    """A primitive made with arguments asyncio refuses raises what asyncio raises, with or
    without extra arguments (aiotrace's ``__init__`` passes none on when there are none)."""
    untraced = _constructor_misuse()
    assert ("nothing", "") not in untraced
    with capture_spans():
        traced = _constructor_misuse()
    assert traced == untraced


@pytest.fixture(params=["inlined", "awaited"])
def slow_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with asyncio's slow paths inlined (verified source) and with the originals awaited."""
    if request.param == "awaited":
        from aiotrace.primitives import events, locks, queues

        monkeypatch.setattr(locks, "source_is", lambda func, known: False)
        monkeypatch.setattr(events, "source_is", lambda func, known: False)
        monkeypatch.setattr(queues, "source_is", lambda func, known: False)
    return str(request.param)


def test_inlined_slow_paths_match_this_python() -> None:
    """The asyncio code aiotrace inlines is exactly this Python's (else it would await it)."""
    from aiotrace.primitives import events, locks, queues
    from aiotrace.primitives._base import source_is

    assert source_is(asyncio.Lock.acquire, locks._KNOWN_LOCK_ACQUIRE)
    assert source_is(asyncio.Event.wait, events._KNOWN_EVENT_WAIT)
    assert source_is(asyncio.Event.set, events._KNOWN_EVENT_SET)
    assert source_is(asyncio.BoundedSemaphore.release, locks._KNOWN_BOUNDED_RELEASE)
    assert not source_is(asyncio.Lock.release, locks._KNOWN_LOCK_ACQUIRE)
    assert source_is(asyncio.Semaphore.release, locks._KNOWN_SEMAPHORE_RELEASE)
    # Exactly one of the two Semaphore texts: 3.10-3.12's or 3.13's.
    known = (locks._KNOWN_SEMAPHORE_ACQUIRE_310, locks._KNOWN_SEMAPHORE_ACQUIRE_313)
    assert sum(source_is(asyncio.Semaphore.acquire, text) for text in known) == 1
    # The Queue's get and put: likewise one text each before 3.13, another since.
    assert sum(source_is(asyncio.Queue.get, text) for text in queues._KNOWN_GET) == 1
    assert sum(source_is(asyncio.Queue.put, text) for text in queues._KNOWN_PUT) == 1
    assert source_is(asyncio.Queue.get, queues._KNOWN_GET[1]) == (sys.version_info >= (3, 13))
    # put_nowait, get_nowait, task_done: run as aiotrace's own, once per item.
    for method, texts in (
        (asyncio.Queue.put_nowait, queues._KNOWN_PUT_NOWAIT),
        (asyncio.Queue.get_nowait, queues._KNOWN_GET_NOWAIT),
    ):
        assert [source_is(method, text) for text in texts] == [
            sys.version_info < (3, 13),
            sys.version_info >= (3, 13),
        ]
    assert source_is(asyncio.Queue.task_done, queues._KNOWN_TASK_DONE)


def test_fifo_wakeup_order_is_kept(slow_paths: str) -> None:
    """Waiters are served in arrival order, for locks, semaphores and conditions."""

    async def main() -> dict[str, list[int]]:
        order: dict[str, list[int]] = {"lock": [], "sem": [], "cond": []}
        lock, sem, cond = asyncio.Lock(), asyncio.Semaphore(1), asyncio.Condition()

        async def use_lock(i: int) -> None:
            async with lock:
                order["lock"].append(i)
                await asyncio.sleep(0)

        async def use_sem(i: int) -> None:
            async with sem:
                order["sem"].append(i)
                await asyncio.sleep(0)

        async def use_cond(i: int) -> None:
            async with cond:
                await cond.wait()
                order["cond"].append(i)

        await asyncio.gather(*(use_lock(i) for i in range(5)), *(use_sem(i) for i in range(5)))
        waiters = [asyncio.create_task(use_cond(i)) for i in range(5)]
        await asyncio.sleep(0.001)
        for _ in range(5):
            async with cond:
                cond.notify(1)
            await asyncio.sleep(0.001)
        await asyncio.gather(*waiters)
        return order

    with capture_spans(min_wait=0, min_hold=0) as captured:
        assert asyncio.run(main()) == {k: [0, 1, 2, 3, 4] for k in ("lock", "sem", "cond")}
    waits = [s for s in captured.spans if s.name == "asyncio.Lock.acquire"]
    assert len(waits) >= 4  # the slow path was taken and traced either way


def test_blocked_queue_calls_behave_as_untraced(slow_paths: str) -> None:
    """Blocked gets and puts: FIFO service, a cancelled getter loses no item, shutdown (3.13)."""

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {"got": [], "put": []}
        queue: asyncio.Queue[int] = asyncio.Queue(1)

        async def get(i: int) -> None:
            out["got"].append((i, await queue.get()))

        getters = [asyncio.create_task(get(i)) for i in range(3)]
        cancelled = asyncio.create_task(queue.get())
        await asyncio.sleep(0)
        cancelled.cancel()
        for item in (10, 11, 12):
            await queue.put(item)  # each wakes the oldest getter
            await asyncio.sleep(0)
        await asyncio.gather(*getters)
        out["cancelled"] = cancelled.cancelled()

        queue.put_nowait(0)

        async def put(i: int) -> None:
            await queue.put(i)  # blocks: the queue is full
            out["put"].append(i)

        putters = [asyncio.create_task(put(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        out["drained"] = [await queue.get(), await queue.get(), await queue.get()]
        await asyncio.gather(*putters)
        if hasattr(queue, "shutdown"):
            blocked = asyncio.create_task(queue.get())
            await asyncio.sleep(0)
            queue.shutdown()
            out["shutdown"] = type((await asyncio.gather(blocked, return_exceptions=True))[0])
        return out

    with capture_spans(min_wait=0) as captured:
        out = asyncio.run(main())
        assert aiotrace.stats().internal_errors == 0
    assert out["got"] == [(0, 10), (1, 11), (2, 12)]
    assert out["cancelled"] is True
    assert out["put"] == [1, 2]
    assert out["drained"] == [0, 1, 2]
    if sys.version_info >= (3, 13):
        assert out["shutdown"] is asyncio.QueueShutDown
    assert captured.named(semconv.SPAN_QUEUE_GET)  # the slow path was taken and traced
    assert captured.named(semconv.SPAN_QUEUE_PUT)


def test_importing_patches_nothing() -> None:
    """``import aiotrace`` alone leaves asyncio untouched."""
    code = textwrap.dedent(
        """
        import asyncio
        before = {k: id(v) for k, v in vars(asyncio.Lock).items()}
        import aiotrace, aiotrace.testing, aiotrace.selftest
        assert {k: id(v) for k, v in vars(asyncio.Lock).items()} == before
        assert not aiotrace.is_instrumented()
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("how", ["aiotrace run", "console script", "instrument()"])
def test_debug_mode_records_the_creation_stacks_it_would_untraced(tmp_path: Path, how: str) -> None:
    """asyncio's debug mode says where each task and future was "created at": never in aiotrace.

    A task's repr and asyncio's warnings about it name the last line of
    its creation stack, which our wrappers would otherwise be; under
    ``aiotrace run`` the runner's frames would also start it. A lock's
    waiter future, made by our inlined copy of asyncio's slow path, has
    the stack untraced minus asyncio's frames for that call (they did not run).
    """
    program = PROGRAMS / "debug_stacks.py"
    bare = python(program, cwd=tmp_path)
    if how == "aiotrace run":
        traced = aiotrace_command("run", "-q", "--no-trace-file", program, cwd=tmp_path)
    elif how == "console script":
        traced = console_script("run", "-q", "--no-trace-file", program, cwd=tmp_path)
    else:
        traced = python(program, "instrument", cwd=tmp_path)
    assert bare.returncode == traced.returncode == 0, traced.stderr
    expected, got = bare.stdout.splitlines(), traced.stdout.splitlines()
    assert len(expected) == len(got) == 11
    assert got[:-1] == expected[:-1]
    assert "aiotrace" not in traced.stdout
    untraced_waiter, traced_waiter = expected[-1].split(" | "), got[-1].split(" | ")
    assert [frame.split(":")[0] for frame in untraced_waiter[-2:]] == [
        "locks.py",
        "base_events.py",
    ]
    assert traced_waiter == untraced_waiter[:-2]


class _SlowToFinalize:
    """Cyclic garbage whose finalizer lets other threads run for a while."""

    def __init__(self, started: threading.Event) -> None:
        self.me = self
        self.started = started

    def __del__(self) -> None:
        self.started.set()
        time.sleep(0.3)  # the GIL is released: the program's thread runs


class _Victim:
    def __init__(self) -> None:
        self.me = self


def test_a_programs_gc_collect_is_whole_while_aiotraces_thread_collects() -> None:
    """CPython runs one collection at a time: ``gc.collect()`` during another
    thread's returns 0 at once. aiotrace's threads must not make a program's
    collection collect nothing (``test_log_destroyed_pending_task`` failed so)."""
    started = threading.Event()
    before = gc.collect, list(gc.callbacks)  # a traced session's threads guard already

    def collect_a_slow_finalizer() -> None:
        _SlowToFinalize(started)
        gc.collect()

    was_enabled = gc.isenabled()
    gc.disable()  # only the collections this test makes
    try:
        ours = _threads.thread(collect_a_slow_finalizer, "aiotrace-test")
        ours.start()
        assert started.wait(10)
        victim = _Victim()
        gone = weakref.ref(victim)
        del victim
        assert gc.collect() > 0
        assert gone() is None
        ours.join(10)
    finally:
        if was_enabled:
            gc.enable()
    assert (gc.collect, gc.callbacks) == before


class _StuckInFinalizer:
    """Cyclic garbage whose finalizer waits until the program's thread lets it go."""

    def __init__(self, started: threading.Event, release: threading.Event) -> None:
        self.me = self
        self.started, self.release = started, release

    def __del__(self) -> None:
        self.started.set()
        self.release.wait(10)


def test_a_collection_stuck_in_aiotraces_thread_is_waited_for_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finalizer in aiotrace's collection that waits for the program's thread: the
    program's ``gc.collect()`` waits ``PATIENCE`` for it once, then goes on as it would
    untraced, and its next calls do not wait for that collection again."""
    monkeypatch.setattr(_threads, "PATIENCE", 0.2)
    started, release = threading.Event(), threading.Event()

    def collect_a_stuck_finalizer() -> None:
        _StuckInFinalizer(started, release)
        gc.collect()

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ours = _threads.thread(collect_a_stuck_finalizer, "aiotrace-test")
        ours.start()
        assert started.wait(10)
        waits = []
        for _ in range(3):
            t0 = time.monotonic()
            assert gc.collect() == 0  # CPython's: another thread is collecting
            waits.append(time.monotonic() - t0)
        release.set()
        ours.join(10)
    finally:
        release.set()
        if was_enabled:
            gc.enable()
    assert waits[0] >= 0.2
    assert max(waits[1:]) < 0.1


@pytest.mark.pristine
def test_gc_collect_is_pythons_again_when_aiotraces_threads_end() -> None:
    original = gc.collect
    provider = TracerProvider()
    aiotrace.instrument(provider)
    try:
        assert _threads.guarding()
        assert gc.collect.__name__ == "collect"
        assert gc.collect.__doc__ == original.__doc__
        with pytest.raises(ValueError, match="invalid generation"):
            gc.collect(5)  # as CPython's own
    finally:
        aiotrace.uninstrument()
    assert gc.collect is original
    assert _threads._watch not in gc.callbacks


@pytest.mark.pristine
def test_a_gc_collect_the_program_put_in_place_is_called_and_put_back() -> None:
    original = gc.collect
    calls: list[tuple[Any, ...]] = []

    def programs(*args: Any) -> int:
        calls.append(args)
        return original(*args)

    gc.collect = programs
    try:
        aiotrace.instrument(TracerProvider())
        try:
            assert _threads.guarding()
            gc.collect()
            gc.collect(0)
        finally:
            aiotrace.uninstrument()
        assert gc.collect is programs
    finally:
        gc.collect = original
    assert calls == [(), (0,)]


@pytest.mark.pristine
def test_a_programs_wrapper_over_ours_runs_once_when_ours_goes_in_again() -> None:
    """A program that wraps ``gc.collect`` while aiotrace's wrapper is in place wraps
    ours, which then cannot come out; instrumenting again puts ours over the
    program's. A call then runs each once, never round and round."""
    original = gc.collect
    calls: list[tuple[Any, ...]] = []
    aiotrace.instrument(TracerProvider())
    try:
        ours = gc.collect

        def programs(*args: Any) -> int:
            calls.append(args)
            return ours(*args)  # type: ignore[no-any-return]

        gc.collect = programs
    finally:
        aiotrace.uninstrument()
    try:
        assert gc.collect is programs
        aiotrace.instrument(TracerProvider())
        try:
            assert _threads.guarding()
            assert gc.collect() >= 0
            assert gc.collect(0) >= 0
        finally:
            aiotrace.uninstrument()
        assert gc.collect is programs
        gc.collect()
    finally:
        gc.collect = original
    assert calls == [(), (0,), ()]


def test_a_subclasss_wake_up_is_called_as_untraced() -> None:
    """aiotrace skips asyncio's ``_wake_up_first``/``_wake_up_next`` when nobody waits
    (their own first test), but not on a subclass, which may have its own."""

    def run() -> list[str]:
        calls: list[str] = []

        class Lock(asyncio.Lock):
            def _wake_up_first(self) -> None:
                calls.append("lock")
                super()._wake_up_first()  # type: ignore[misc]  # not in typeshed

        class Semaphore(asyncio.Semaphore):
            def _wake_up_next(self) -> Any:  # None before 3.13, a bool since
                calls.append("semaphore")
                return super()._wake_up_next()

        class Bounded(asyncio.BoundedSemaphore):
            def _wake_up_next(self) -> Any:  # None before 3.13, a bool since
                calls.append("bounded")
                return super()._wake_up_next()

        async def main() -> None:
            for primitive in (Lock(), Semaphore(), Bounded()):
                await primitive.acquire()
                primitive.release()
                async with primitive:
                    pass

        asyncio.run(main())
        return calls

    untraced = run()
    with capture_spans():
        assert run() == untraced
    assert len(untraced) == 6


@pytest.mark.pristine  # a traced session's pipeline starts a thread of ours in the child
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_gc_collect_back_while_the_parents_thread_runs() -> None:
    """Only the forking thread lives on in a child: there, no thread of aiotrace's runs,
    so ``gc.collect`` is what it was, and a collection the parent's thread was in is not
    waited for."""
    stop = threading.Event()
    ours = _threads.thread(stop.wait, "aiotrace-test")
    ours.start()
    try:
        deadline = time.monotonic() + 10
        while not _threads.guarding() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert _threads.guarding()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            ok = (
                gc.collect is _threads._wrapped[0]
                and _threads._watch not in gc.callbacks
                and _threads._collecting[0] == 0
            )
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        ours.join(10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_in_the_loop_is_prepared_for_past_a_tool_that_forbids_blocking_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before a fork, aiotrace stops its threads and counts the process's threads from
    ``/proc``. anyio's suite runs ``blockbuster``, which makes ``open(...).read()``, a
    blocking ``os.read`` and a blocking lock acquire (``join()``) raise inside a running
    loop: a subprocess started there counted an internal error, fork handling stopped
    for the rest of the run, and the watchdog was never started again."""
    import builtins

    def forbidden(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("blocking call inside the event loop")

    async def main() -> int:
        with monkeypatch.context() as patch:
            patch.setattr(os, "read", forbidden)
            patch.setattr(builtins, "open", forbidden)
            patch.setattr(threading.Thread, "join", forbidden)  # a blocking acquire
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
                pid = os.fork()
            if pid == 0:
                os._exit(0)
        return pid

    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    with capture_spans():  # its pipeline's thread is paused for forks, and the watchdog's
        diagnoser = Diagnoser(DiagnosisConfig(dump_signals=False), None)
        diagnoser.start()
        try:
            errors = aiotrace.stats().internal_errors
            _, status = os.waitpid(asyncio.run(main()), 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert aiotrace.stats().internal_errors == errors
            assert diagnoser.watchdog is not None
            assert diagnoser.watchdog.thread.is_alive()  # started again after the fork
        finally:
            diagnoser.finish(at_exit=False)


def test_an_owner_failing_to_stop_for_a_fork_leaves_the_others_stopped_and_started_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each thread of aiotrace's is stopped for a fork on its own: one that fails (a tool
    refusing the wait) is counted, and the others are still stopped, and started again
    after. Before, the first failure left the rest running through the fork, and never
    to be started again if they had stopped."""
    from aiotrace import _fork

    class Owner:
        def __init__(self, fails: bool) -> None:
            self.fails = fails
            self.seen: list[str] = []

        def pause_for_fork(self) -> bool:
            if self.fails:
                raise RuntimeError("cannot wait here")
            self.seen.append("stopped")
            return True

        def resume_after_fork(self) -> None:
            self.seen.append("started")

    failing, other = Owner(True), Owner(False)
    monkeypatch.setattr(_fork, "_OWNERS", [failing, other])  # the failing one first
    errors = aiotrace.stats().internal_errors
    try:
        _fork._before()
        _fork._after_in_parent()
    finally:
        _fork._withdraw_filter()  # no loop here to take out a fork warning's filter
    assert other.seen == ["stopped", "started"]
    assert aiotrace.stats().internal_errors == errors + 1


FRAMES_WITH_GARBAGE = """\
import gc, sys, threading
from aiotrace.diagnosis import _all_frames

how, offset, collector = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = []

class Holder:
    pass

def hook(event, args):  # just before the frames are made: garbage, and a collection due
    if event == "sys._current_frames" and offset >= 0:
        seen.append(gc.isenabled())
        was = gc.isenabled()
        gc.disable()
        holder = Holder()
        holder.me, holder.local = holder, threading.local()  # freed only by the collector
        del holder
        gc.set_threshold(gc.get_count()[0] + offset)
        if was:
            gc.enable()

sys.addaudithook(hook)
release, started = threading.Lock(), threading.Event()
release.acquire()

def blocked():  # its frame object is made by sys._current_frames(), not before
    started.set()
    release.acquire()

thread = threading.Thread(target=blocked)
thread.start()
started.wait()
if collector == "off":
    gc.disable()
frames = _all_frames() if how == "ours" else sys._current_frames()
offset = -1
gc.set_threshold(700)
release.release()
thread.join()
print(threading.get_ident() in frames, seen, gc.isenabled())
"""


def test_reading_every_threads_frames_never_hangs_the_process(tmp_path: Path) -> None:
    """The watchdog reads every thread's frames (``sys._current_frames()``) each tick
    while the loop is idle. On 3.11 a collection inside that call that frees a
    ``threading.local`` hangs the whole process for good (CPython gh-106883): a
    fault-injection test of the diagnosis hung so. Garbage, and a collection due at
    the first frame object made, are arranged just before the frames are made. aiotrace's
    read never hangs, and leaves the collector as it found it; on 3.11 the plain call
    hangs at one of the offsets (the test reproduces what it guards against)."""
    script = tmp_path / "frames.py"
    script.write_text(FRAMES_WITH_GARBAGE)

    def run(how: str, offset: int, collector: str = "on") -> str | None:
        try:
            result = subprocess.run(
                [sys.executable, script, how, str(offset), collector],
                capture_output=True,
                text=True,
                timeout=5 if how == "ours" else 3,
            )
        except subprocess.TimeoutExpired:
            return None  # hung
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    on_311 = sys.version_info[:2] == (3, 11)
    for offset in range(4):
        # the collector off while it reads, on 3.11; on as it was after
        assert run("ours", offset) == f"True [{not on_311}] True"
    assert run("ours", 0, collector="off") == "True [False] False"  # left off
    if on_311:
        assert None in [run("plain", offset) for offset in range(4)]
