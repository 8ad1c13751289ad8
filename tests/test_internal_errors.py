"""A bug in aiotrace's bookkeeping never reaches the traced program."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import inspect
import logging
import math
import os
import signal
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.primitives import _lock_order, locks
from aiotrace.testing import capture_spans
from tests.cli_support import python
from tests.conftest import PRISTINE, snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


async def _contend() -> list[int]:
    lock = asyncio.Lock()
    done: list[int] = []

    async def worker(i: int) -> None:
        async with lock:
            await asyncio.sleep(0.002)
            done.append(i)

    await asyncio.gather(*(worker(i) for i in range(3)))
    return done


def test_bookkeeping_error_is_swallowed_counted_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in the lock family's bookkeeping: counted, logged once, family disabled."""

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("bug in aiotrace")

    monkeypatch.setattr(locks, "_waited", broken)
    with (
        caplog.at_level(logging.ERROR, logger="aiotrace"),
        capture_spans(min_wait=0, min_hold=0) as captured,
    ):
        assert asyncio.run(_contend()) == [0, 1, 2]  # the program is unaffected
        errors = aiotrace.stats().internal_errors
        assert asyncio.run(_contend()) == [0, 1, 2]
        stats = aiotrace.stats()
        spans = captured.primitive_spans
    # Both waiters already past the check failed; then the family stopped recording.
    assert errors == 2
    assert stats.internal_errors == errors
    records = [r for r in caplog.records if r.name == "aiotrace"]
    assert len(records) == 1
    assert "tracing of lock has been disabled" in records[0].getMessage()
    # The traceback: from logging, or where that would build a syntax tree, in the message
    assert records[0].exc_info is not None or "ZeroDivisionError: bug" in records[0].getMessage()
    # The first holder's span was recorded before the failure; nothing after it.
    assert [s.name for s in spans] == [semconv.SPAN_LOCK_HOLD]


def test_other_families_keep_working_after_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disabling the lock family leaves events traced."""

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(locks, "_record_hold", broken)

    async def main() -> None:
        await _contend()
        ev = asyncio.Event()
        waiter = asyncio.create_task(ev.wait())
        await asyncio.sleep(0.002)
        ev.set()
        await waiter

    with capture_spans(min_wait=0, min_hold=0) as captured:
        asyncio.run(main())
        names = {s.name for s in captured.primitive_spans}
        assert aiotrace.stats().internal_errors >= 1
    assert semconv.SPAN_EVENT_WAIT in names
    assert semconv.SPAN_LOCK_HOLD not in names


@pytest.mark.pristine
def test_broken_sink_does_not_break_the_program(caplog: pytest.LogCaptureFixture) -> None:
    """A TracerProvider whose processor raises loses spans (counted), not the program."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    class Exploding(SimpleSpanProcessor):
        def on_end(self, span: object) -> None:
            raise OSError("disk full")

    provider = TracerProvider()
    provider.add_span_processor(Exploding(InMemorySpanExporter()))
    aiotrace.instrument(provider, min_wait=0, min_hold=0)
    try:
        with caplog.at_level(logging.WARNING):
            assert asyncio.run(_contend()) == [0, 1, 2]
            aiotrace.flush()
    finally:
        aiotrace.uninstrument()
    stats = aiotrace.stats()
    assert stats.internal_errors == 0
    # 5 primitive spans and 6 task spans (the main task and five workers, in
    # two runs of _contend) all failed in the provider: counted, not lost silently.
    assert (
        stats.spans_dropped == stats.dropped_reasons["TracerProvider raised"] == stats.spans_built
    )
    assert stats.spans_exported == 0
    assert "span sink failed: disk full" in caplog.text


async def _every_primitive() -> list[object]:
    """Something of everything aiotrace patches, contended, resolved, cancelled, timed out.

    Deterministic: the same list on every run, traced or not.
    """
    results: list[object] = []
    lock, sem, bounded = asyncio.Lock(), asyncio.Semaphore(2), asyncio.BoundedSemaphore(1)
    event, cond, queue = asyncio.Event(), asyncio.Condition(), asyncio.Queue[int](2)
    passed: list[int] = []

    @contextlib.asynccontextmanager
    async def guarded() -> AsyncIterator[None]:
        async with lock:
            yield

    async def worker(i: int) -> int:
        async with guarded():  # held by a generator for the task, another taken inside
            await asyncio.sleep(0.001)
            async with bounded:
                pass
        async with sem, bounded:
            passed.append(i)
        await event.wait()
        async with cond:
            await cond.wait_for(lambda: len(passed) == 3)
        await queue.put(i)
        return i

    workers = [asyncio.create_task(worker(i), name=f"worker-{i}") for i in range(3)]
    while len(passed) < 3:
        await asyncio.sleep(0.001)
    event.set()
    async with cond:
        cond.notify_all()
    results.append(sorted([await queue.get() for _ in range(3)]))
    results.append(await asyncio.gather(*workers))
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.001, future.set_result, "resolved")
    results.append(await future)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), 0.002)
        results.append("wait_for did not time out")
    if sys.version_info >= (3, 11):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.002):
                await asyncio.sleep(1)
            results.append("timeout did not time out")

        async def fail() -> None:
            raise KeyError("in a task group")

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(1))
                group.create_task(fail())
        except BaseException as exc:  # an ExceptionGroup, named so on 3.10 too
            results.append(type(exc).__name__)
        barrier = asyncio.Barrier(2)
        results.append(sorted(await asyncio.gather(barrier.wait(), barrier.wait())))
    sleeper = asyncio.create_task(asyncio.sleep(1))
    await asyncio.sleep(0)
    sleeper.cancel()
    results.append(await asyncio.gather(sleeper, asyncio.sleep(0, "slept"), return_exceptions=True))
    return [repr(r) for r in results]


def _guards_itself(function: types.FunctionType | types.CodeType) -> bool:
    """Whether ``function``'s body is one ``try`` with an ``except Exception`` that does not
    raise, then at most a ``return`` (asyncio's own way, after a failure of ours).

    A bug in such a helper cannot leave it; made to fail whole, it would
    stand for a bug that cannot happen, so it is checked like this instead.
    """
    (definition,) = ast.parse(textwrap.dedent(inspect.getsource(function))).body
    assert isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef)
    body = definition.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if not body or not isinstance(body[0], ast.Try) or len(body) > 2:
        return False
    if body[1:] and not isinstance(body[1], ast.Return):
        return False
    return any(
        isinstance(handler.type, ast.Name)
        and handler.type.id == "Exception"
        and not any(isinstance(node, ast.Raise) for node in ast.walk(handler))
        for handler in body[0].handlers
    )


def _helpers() -> list[tuple[str, types.FunctionType, list[tuple[types.ModuleType, str]]]]:
    """Every function of aiotrace's that the patched methods may call by a module-level name.

    Each with every binding of it in those modules (``queues`` calls
    ``events.start_waiting`` by a name of its own), so that all its callers
    see it fail.
    """
    from aiotrace import _context, _leaks, _loops, _sites
    from aiotrace.primitives import _base, _lock_order, _timeouts, barriers, events, queues, tasks

    modules = [_base, locks, events, queues, barriers, tasks, _timeouts, _lock_order]
    modules += [_context, _sites, _loops, _leaks]
    bindings: dict[types.FunctionType, list[tuple[types.ModuleType, str]]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, types.FunctionType) and value.__module__.startswith("aiotrace."):
                bindings.setdefault(value, []).append((module, name))
    return [(f"{f.__module__}.{f.__name__}", f, where) for f, where in bindings.items()]


@pytest.mark.pristine
@pytest.mark.parametrize("lock_order", [False, True], ids=["plain", "lock-order"])
def test_any_helper_failing_leaves_the_program_as_it_was(
    monkeypatch: pytest.MonkeyPatch, lock_order: bool
) -> None:
    """Fault injection: each of aiotrace's helper functions in turn raises, every time.

    With every primitive, task and future in play, the program's results
    are those of the untraced run, each time: whatever breaks, aiotrace
    catches, counts and stops tracing that family; never the program. Each
    helper gets a fresh instrumentation (a family disabled by the previous
    failure would hide the next one), and the many that the workload
    reaches must show as internal errors, so that the check cannot pass by
    reaching nothing. (A helper that builds the patches makes ``instrument()``
    itself refuse, as ``test_failed_patch_rolls_back`` has it: at start-up,
    with nothing left patched, never in the middle of the program.)
    """
    expected = asyncio.run(_every_primitive())
    helpers = _helpers()
    check_lock_order, stop_checking = _lock_order.enable, _lock_order.disable  # not injected
    reached: list[str] = []
    refused: list[str] = []
    changed: list[str] = []
    guarded: list[str] = []
    for name, function, bindings in helpers:
        if _guards_itself(function):
            guarded.append(name)
            continue

        def broken(*args: object, _name: str = name, **kwargs: object) -> NoReturn:
            raise RuntimeError(f"injected into {_name}")

        with monkeypatch.context() as patch:
            for module, binding in bindings:
                patch.setattr(module, binding, broken)
            logging.disable(logging.CRITICAL)  # each failure is logged once: not here
            try:
                tracing = capture_spans(min_wait=0, min_hold=0)
                try:
                    tracing.__enter__()
                except RuntimeError:  # a helper that builds the patches: instrument() refuses
                    assert snapshot() == PRISTINE  # and leaves nothing patched
                    refused.append(name)
                    continue
                if lock_order:  # and ownership: as diagnosis has them (aiotrace run)
                    check_lock_order(lambda earlier, now: None)
                try:
                    got = asyncio.run(asyncio.wait_for(_every_primitive(), 10))
                except BaseException as exc:  # what the program would see
                    got = [f"raised {exc!r}"]
                finally:
                    errors = aiotrace.stats().internal_errors
                    stop_checking()
                    tracing.__exit__(None, None, None)
            finally:
                logging.disable(logging.NOTSET)
        if got != expected:
            changed.append(f"{name}: {got}")
        if errors:
            reached.append(name)
    assert changed == [], "\n".join(changed)
    assert len(helpers) > 100
    assert len(reached) > 25, reached
    assert len(refused) < 20, refused  # the *_patches functions and what they call
    # Those on the waits' and holds' paths guard themselves (the five inlined
    # slow paths share waiter_future), rather than each caller guarding them.
    assert {
        "aiotrace.primitives._base.waiter_future",
        "aiotrace.primitives.tasks._future_waited",
        "aiotrace.primitives._lock_order.acquired",
        "aiotrace.primitives._lock_order.released",
        "aiotrace.primitives._lock_order.unhold",
    } <= set(guarded)


def _nested_helpers() -> list[tuple[str, types.CodeType]]:
    """Every function aiotrace defines inside another, but the patched methods themselves.

    The patch builders (``lock_patches``...) define the patched methods and,
    beside them, the helpers those call (``hold_end``, a Queue's ``_begin``):
    closures no module-level name reaches.
    """
    from aiotrace.primitives import _base, _timeouts, barriers, events, queues, tasks
    from tests.conftest import _patched_owners

    installed: set[types.CodeType] = set()
    aiotrace.instrument()
    _lock_order.track_ownership()  # which installs the @asynccontextmanager's
    try:
        for owner in _patched_owners():
            for value in vars(owner).values():
                function = getattr(value, "__func__", value)
                if isinstance(function, types.FunctionType):
                    installed.add(function.__code__)
    finally:
        _lock_order.untrack_ownership()
        aiotrace.uninstrument()
    found: dict[types.CodeType, str] = {}

    def walk(code: types.CodeType, where: str) -> None:
        for const in code.co_consts:
            if isinstance(const, types.CodeType) and not const.co_name.startswith("<"):
                found.setdefault(const, f"{where}.{const.co_name}")
                walk(const, f"{where}.{const.co_name}")

    for module in (_base, locks, events, queues, barriers, tasks, _timeouts, _lock_order):
        for name, value in vars(module).items():
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                walk(value.__code__, f"{module.__name__}.{name}")
    return sorted(((name, code) for code, name in found.items() if code not in installed))


@pytest.mark.pristine
@pytest.mark.parametrize("lock_order", [False, True], ids=["plain", "lock-order"])
def test_any_nested_helper_failing_leaves_the_program_as_it_was(lock_order: bool) -> None:
    """Fault injection into the helpers no module-level name reaches: those the patch
    builders define beside the patched methods. Each raises in turn, the first time it
    is called (the trace function raising at its call is then removed), and the
    program's results are the untraced run's. Those that guard themselves are checked
    for that instead (see ``_guards_itself``)."""
    expected = asyncio.run(_every_primitive())
    nested = _nested_helpers()
    guarded = [name for name, code in nested if _guards_itself(code)]
    changed: list[str] = []
    fired: list[str] = []
    for name, code in nested:
        if name in guarded:
            continue

        def inject(
            frame: types.FrameType, event: str, arg: object, _code: Any = code, _name: str = name
        ) -> None:
            if event == "call" and frame.f_code is _code:
                fired.append(_name)
                raise RuntimeError(f"injected into {_name}")

        logging.disable(logging.CRITICAL)  # each failure is logged once: not here
        tracing = capture_spans(min_wait=0, min_hold=0)
        tracing.__enter__()
        if lock_order:
            _lock_order.enable(lambda earlier, now: None)
        sys.settrace(inject)
        try:
            got = asyncio.run(asyncio.wait_for(_every_primitive(), 10))
        except BaseException as exc:  # what the program would see
            got = [f"raised {exc!r}"]
        finally:
            sys.settrace(None)
            _lock_order.disable()
            tracing.__exit__(None, None, None)
            logging.disable(logging.NOTSET)
        if got != expected:
            changed.append(f"{name}: {got}")
    assert changed == [], "\n".join(changed)
    assert len(nested) > 10, nested
    assert len(fired) >= 3, fired  # reached, not guarded: it cannot pass by reaching nothing
    assert {
        "aiotrace.primitives.locks.lock_patches.hold_end",
        "aiotrace.primitives.locks.semaphore_patches.take",
        "aiotrace.primitives.queues.queue_patches._begin",
        "aiotrace.primitives.queues.queue_patches._end",
        "aiotrace.primitives.queues.queue_patches._woke",
    } <= set(guarded)


def test_a_failure_is_logged_with_its_traceback_and_without_a_syntax_tree(
    caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    """An internal error may be logged from a finaliser or aiotrace's thread, in the middle
    of the program's ``ast.parse``: where a parse there breaks that one
    (``SHARED_SYNTAX_TREE_DEPTH``), the traceback is written out without its carets,
    which logging would place by parsing the line. Elsewhere logging formats it."""
    from aiotrace._recorder import LOGGER, log_failure
    from aiotrace._sites import SHARED_SYNTAX_TREE_DEPTH

    if SHARED_SYNTAX_TREE_DEPTH:
        request.getfixturevalue("no_syntax_trees_from_aiotrace")
    with caplog.at_level(logging.ERROR, logger="aiotrace"):
        try:
            {}["row"]
        except KeyError as exc:
            log_failure(LOGGER.error, "aiotrace: failed %s", "here", exc=exc)
    (record,) = caplog.records
    text = caplog.text
    assert record.getMessage().startswith("aiotrace: failed here")
    assert "Traceback (most recent call last):" in text
    assert '    {}["row"]\n' in text
    assert text.rstrip().endswith("KeyError: 'row'")
    assert (record.exc_info is None) == SHARED_SYNTAX_TREE_DEPTH


NO_PYTHON_ABOVE = """
import asyncio, atexit, itertools
import aiotrace

made = []

def report():
    print("internal errors:", aiotrace.stats().internal_errors, "locks:", len(made))
    print("identified:", all(lock._aiotrace_ref is not None for lock in made))

atexit.register(report)  # callbacks run last registered first
aiotrace.instrument()
# At exit, C code (atexit, list.extend, starmap) calls asyncio.Lock(): no Python
# frame is above its __init__.
atexit.register(made.extend, itertools.starmap(asyncio.Lock, [(), ()]))
"""


def test_a_primitive_made_with_no_python_frame_above_it_is_traced_without_an_error(
    tmp_path: Path,
) -> None:
    """A Lock made by C code at exit (atexit, ``list.extend``, ``starmap``): the patched
    ``__init__`` has no caller frame to look at. The walk finds no creation line
    (the lock is named as one made before instrumenting), and nothing fails: the
    first version of the per-line look-up failed there, and turned the lock family off."""
    script = tmp_path / "no_python_above.py"
    script.write_text(NO_PYTHON_ABOVE)
    proc = python(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "internal error" not in proc.stderr
    assert "internal errors: 0 locks: 2" in proc.stdout
    assert "identified: True" in proc.stdout


async def _diagnosed_program(handled: list[str]) -> list[str]:
    """What the diagnosis acts on in the program's own thread: a deadlock its graph
    checks find (broken by a cancellation), a dump on SIGUSR1, a lock-order inversion, a
    block of the loop, a lock left held, a task's exception nothing read, and the hang
    timeout's graph, built on the loop. Its exception handler's calls, into ``handled``,
    are part of what it observes."""
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: handled.append(str(context.get("message")))
    )
    first, second = asyncio.Lock(), asyncio.Lock()

    async def take(mine: asyncio.Lock, other: asyncio.Lock) -> str:
        async with mine:
            await asyncio.sleep(0.005)
            async with other:
                return "took both"

    one = asyncio.create_task(take(first, second))
    pair = asyncio.gather(one, take(second, first), return_exceptions=True)
    await asyncio.sleep(0.08)  # deadlocked: the graph checks see the cycle
    os.kill(os.getpid(), signal.SIGUSR1)  # a dump, on demand
    await asyncio.sleep(0.005)
    one.cancel()  # which breaks it
    results: list[Any] = [[r if isinstance(r, str) else type(r).__name__ for r in await pair]]
    async with first, second:
        pass
    async with second, first:  # the other order: a lock-order finding
        pass
    time.sleep(0.04)  # noqa: ASYNC251  # blocks the loop past its threshold
    await asyncio.create_task(asyncio.Lock().acquire())  # and ends holding it

    async def fails() -> None:
        raise LookupError("nobody reads this")

    asyncio.create_task(fails())  # noqa: RUF006  # collected unread: asyncio reports it
    await asyncio.sleep(0)
    await asyncio.sleep(0.15)  # past the hang timeout
    return [repr(r) for r in results]


async def _interrupted_program() -> list[str]:
    """Ctrl-C: the diagnosis dumps from asyncio's own handling of it (a pending task)."""
    sleeper = asyncio.create_task(asyncio.sleep(5))
    os.kill(os.getpid(), signal.SIGINT)
    await sleeper
    return ["not interrupted"]


def _diagnosis_code() -> list[tuple[str, types.CodeType]]:
    """Every function of ``aiotrace.diagnosis``: module-level, methods, nested, and the
    functions of aiotrace's it calls by a module-level name of its own."""
    from aiotrace import diagnosis

    found: dict[types.CodeType, str] = {}

    def walk(code: types.CodeType, where: str) -> None:
        if not code.co_filename.endswith(".py"):  # a dataclass's generated methods
            return
        found.setdefault(code, where)
        for const in code.co_consts:
            if isinstance(const, types.CodeType) and not const.co_name.startswith("<"):
                walk(const, f"{where}.{const.co_name}")

    for name, value in vars(diagnosis).items():
        if isinstance(value, type) and value.__module__ == diagnosis.__name__:
            for attr, member in vars(value).items():
                function = getattr(member, "fget", getattr(member, "__func__", member))
                if isinstance(function, types.FunctionType):
                    walk(function.__code__, f"{value.__module__}.{name}.{attr}")
        elif isinstance(value, types.FunctionType) and value.__module__.startswith("aiotrace"):
            walk(value.__code__, f"{value.__module__}.{value.__name__}")
    return sorted(((name, code) for code, name in found.items()), key=lambda item: item[0])


@pytest.mark.pristine
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_any_diagnosis_function_failing_leaves_the_program_as_it_was() -> None:
    """Fault injection into the diagnosis (``aiotrace run``'s, ``pytest --aiotrace``'s):
    each of its functions raises in turn, the first time the program's thread calls it.
    Its graph checks run as callbacks on the program's loop, its dumps in signal
    handlers and in asyncio's Ctrl-C handling: a bug there would reach the program's
    exception handler, or be raised where the signal came. The program observes
    what it does with nothing failing, each time; the helpers that guard themselves
    (see ``_guards_itself``) are checked for that instead."""
    from aiotrace.diagnosis import (
        DEADLOCK,
        HANG,
        LOCK_ORDER,
        LOOP_BLOCKED,
        UNRETRIEVED,
        Diagnoser,
        DiagnosisConfig,
    )

    def run(code: types.CodeType | None) -> tuple[list[str], int, list[str], list[str]]:
        def inject(frame: types.FrameType, event: str, arg: object) -> None:
            if code is None:  # the run that nothing fails in: what the thread calls
                if event == "call":
                    called.add(frame.f_code)
            elif event == "call" and frame.f_code is code:
                sys.settrace(None)  # the first call only
                fired.append(frame.f_code.co_name)
                raise RuntimeError(f"injected into {frame.f_code.co_name}")

        config = DiagnosisConfig(hang_timeout=0.2, block_threshold=0.02)
        echoed: list[str] = []
        diagnoser = Diagnoser(config, None, echo=echoed.append)
        logging.disable(logging.CRITICAL)  # each failure is logged once: not here
        aiotrace.instrument(min_wait=0, min_hold=0)
        errors = aiotrace.stats().internal_errors
        diagnoser.start()
        assert diagnoser.watchdog is not None
        watchdog = diagnoser.watchdog
        watchdog.graph_interval = watchdog.forget_interval = watchdog.discover_interval = 0.01
        watchdog.graph_share = math.inf  # every 10 ms, whatever a check costs under settrace
        sys.settrace(inject)
        got: list[str] = []
        handled: list[str] = []  # what the program's exception handler was called with
        try:
            # Interrupted first: after the hang, Ctrl-C dumps nothing more.
            for program in (
                _interrupted_program(),
                asyncio.wait_for(_diagnosed_program(handled), 10),
            ):
                try:
                    got.extend(asyncio.run(program))
                except BaseException as exc:  # what the program would see
                    got.append(f"raised {exc!r}")
            # Its failed task is freed as it ends, or, held a while longer (by a failure's
            # traceback, another thread's look at the tasks), at a collection: by now.
            gc.collect()
            got.append(repr(handled))
        finally:
            sys.settrace(None)
            kinds = sorted({finding.kind for finding in diagnoser.finish(at_exit=False)})
            errors = aiotrace.stats().internal_errors - errors
            aiotrace.uninstrument()
            logging.disable(logging.NOTSET)
        return got, errors, kinds, [text.split(":")[1].strip() for text in echoed]

    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)  # not a shell's ignore
    try:
        fired: list[str] = []
        called: set[types.CodeType] = set()
        expected, errors, kinds, echoed = run(None)
        assert errors == 0
        assert expected == [
            "raised KeyboardInterrupt()",
            "['CancelledError', 'took both']",
            "['Task exception was never retrieved']",
        ]
        assert kinds == sorted([DEADLOCK, HANG, LOCK_ORDER, LOOP_BLOCKED, UNRETRIEVED])
        assert {"SIGUSR1", "interrupted (Ctrl-C)"} <= set(echoed), echoed  # the dumps
        everything = _diagnosis_code()
        guarded = [name for name, code in everything if _guards_itself(code)]
        changed: list[str] = []
        counted: list[str] = []
        for name, code in everything:
            if name in guarded or code not in called:  # only the watchdog's thread runs it
                continue
            fired.clear()
            got, errors, _, _ = run(code)
            if got != expected:
                changed.append(f"{name}: {got}")
            if fired and errors:
                counted.append(name)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.signal(signal.SIGINT, interrupt)
    assert changed == [], "\n".join(changed)
    assert len(counted) > 10, counted  # it cannot pass by reaching nothing
    assert {
        "aiotrace.diagnosis.Watchdog._ping",
        "aiotrace.diagnosis.Diagnoser.dump",
        "aiotrace.diagnosis.Diagnoser._install_dumps.on_usr1",
        "aiotrace.diagnosis.Watchdog._graph_from_any_thread.build",
    } <= set(guarded)
