"""Task spans: one per task, true parentage, every way tasks are made, never a wrapped coroutine."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import re
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace import semconv
from aiotrace._sites import SHARED_SYNTAX_TREE_DEPTH
from aiotrace.testing import Captured, CapturedSpan, capture_spans
from tests.cli_support import python
from tests.conftest import ORIGINAL_CREATE_TASK, line_of

needs_311 = pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup/context= are 3.11+")


def _by_task(spans: list[CapturedSpan]) -> dict[str, CapturedSpan]:
    return {s[semconv.ATTR_TASK_NAME]: s for s in spans if s.name == semconv.SPAN_TASK}


@pytest.mark.pristine
def test_nested_tasks_three_levels_deep(traced: Captured) -> None:
    """Each task's span is the child of the span current where it was created."""

    async def grandchild() -> int:
        await asyncio.sleep(0.001)
        return 3

    async def child() -> int:
        return await asyncio.create_task(grandchild(), name="grandchild")  # grandchild-made

    async def parent() -> int:
        return await asyncio.create_task(child(), name="child")

    async def main() -> int:
        return await asyncio.create_task(parent(), name="parent")

    assert asyncio.run(main()) == 3
    tasks = _by_task(traced.task_spans)
    main_span = next(
        s for s in traced.task_spans if s[semconv.ATTR_TASK_COROUTINE].endswith("main")
    )
    assert main_span.parent_id is None  # asyncio.run's task: a root
    assert tasks["parent"].parent_id == main_span.span_id
    assert tasks["child"].parent_id == tasks["parent"].span_id
    assert tasks["grandchild"].parent_id == tasks["child"].span_id
    trace_ids = {s.span.context.trace_id for s in traced.task_spans}  # type: ignore[union-attr]
    assert len(trace_ids) == 1
    grandchild_span = tasks["grandchild"]
    assert grandchild_span[semconv.ATTR_OUTCOME] == semconv.OUTCOME_COMPLETED
    assert grandchild_span[semconv.ATTR_TASK_COROUTINE] == (
        "test_nested_tasks_three_levels_deep.<locals>.grandchild"
    )
    assert grandchild_span[semconv.ATTR_TASK_PARENT] == "child"
    assert grandchild_span[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# grandchild-made")
    assert grandchild_span[semconv.ATTR_CODE_FUNCTION_NAME].endswith("child")
    # Parents end after their children.
    assert tasks["child"].span.end_time >= grandchild_span.span.end_time  # type: ignore[operator]


def test_everything_a_task_does_nests_under_it(traced: Captured) -> None:
    """Primitive spans and the user's own spans inside a task are children of its span."""
    tracer = trace.get_tracer("test")  # the global (no-op) provider: only the context matters

    async def worker(lock: asyncio.Lock) -> trace.SpanContext:
        async with lock:
            await asyncio.sleep(0.002)
        current = trace.get_current_span()
        current.set_attribute("app.order", 42)
        current.add_event("checkpoint", {"step": 1})
        with tracer.start_as_current_span("inner"):
            pass
        return current.get_span_context()

    async def main() -> trace.SpanContext:
        return await asyncio.create_task(worker(asyncio.Lock()), name="worker")

    ctx = asyncio.run(main())
    worker_span = _by_task(traced.task_spans)["worker"]
    assert ctx.span_id == worker_span.span_id
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold.parent_id == worker_span.span_id
    assert worker_span["app.order"] == 42
    assert ("checkpoint", {"step": 1}) in worker_span.events


def test_what_the_user_sets_on_a_task_span_is_exported(traced: Captured) -> None:
    """Name, status, links and recorded exceptions set through the Span API reach the span."""
    other = trace.SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=trace.TraceFlags(1))

    async def worker() -> trace.SpanContext:
        current = trace.get_current_span()
        current.update_name("checkout")
        current.set_status(trace.Status(trace.StatusCode.ERROR, "card declined"))
        current.add_link(other, {"why": "retry of"})
        current.record_exception(ValueError("declined"))
        return current.get_span_context()

    async def main() -> trace.SpanContext:
        return await asyncio.create_task(worker(), name="worker")

    ctx = asyncio.run(main())
    span = traced.by_id()[ctx.span_id]
    assert span.name == "checkout"
    assert span["aiotrace.task.name"] == "worker"
    assert span.span.status.status_code is trace.StatusCode.ERROR
    assert span.span.status.description == "card declined"
    assert span.links == [(0x5678, {"why": "retry of"})]
    ((event, attrs),) = span.events
    assert event == semconv.EVENT_EXCEPTION
    assert attrs[semconv.ATTR_EXCEPTION_TYPE] == "ValueError"
    assert attrs[semconv.ATTR_EXCEPTION_MESSAGE] == "declined"


def test_task_spanned_inside_a_user_span_nests_there() -> None:
    """A task created inside the user's span is that span's child."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test")

    async def main() -> None:
        with tracer.start_as_current_span("request"):
            await asyncio.create_task(_noop(), name="job")

    with capture_spans(provider) as captured:
        asyncio.run(main())
        spans = captured.spans
    request = next(s for s in spans if s.name == "request")
    job = _by_task(spans)["job"]
    assert job.parent_id == request.span_id


async def _noop() -> None:
    await asyncio.sleep(0)


@needs_311
def test_taskgroup_with_a_failing_child(traced: Captured) -> None:
    """The failing child is "raised" with the exception recorded; its siblings "cancelled"."""

    async def fail() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("missing")

    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            group.create_task(fail(), name="fail")
            group.create_task(slow(), name="slow1")
            group.create_task(slow(), name="slow2")

    with pytest.raises(ExceptionGroup):  # type: ignore[name-defined]  # noqa: F821  # 3.11+
        asyncio.run(main())
    tasks = _by_task(traced.task_spans)
    failed = tasks["fail"]
    assert failed[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RAISED
    assert not failed.span.status.is_ok
    ((_, event),) = [e for e in failed.events if e[0] == semconv.EVENT_EXCEPTION]
    assert event[semconv.ATTR_EXCEPTION_TYPE] == "KeyError"
    assert event[semconv.ATTR_EXCEPTION_MESSAGE] == "'missing'"
    assert "raise KeyError" in event[semconv.ATTR_EXCEPTION_STACKTRACE]
    for sibling in ("slow1", "slow2"):
        assert tasks[sibling][semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
        assert tasks[sibling].span.status.is_ok  # cancellation is not an error


def test_gather_with_return_exceptions(traced: Captured) -> None:
    """gather() makes a task per coroutine; one that raised is "raised", the result unchanged."""

    async def ok() -> int:
        return 1

    async def bad() -> int:
        raise ValueError("bad")

    async def main() -> list[Any]:
        return await asyncio.gather(ok(), bad(), return_exceptions=True)

    result = asyncio.run(main())
    assert result[0] == 1
    assert isinstance(result[1], ValueError)
    outcomes = sorted(
        (s[semconv.ATTR_TASK_COROUTINE].rsplit(".", 1)[-1], s[semconv.ATTR_OUTCOME])
        for s in traced.task_spans
    )
    assert outcomes == [("bad", "raised"), ("main", "completed"), ("ok", "completed")]
    main_span = next(
        s for s in traced.task_spans if s[semconv.ATTR_TASK_COROUTINE].endswith("main")
    )
    for span in traced.task_spans:
        if span.span_id != main_span.span_id:
            assert span.parent_id == main_span.span_id


def test_a_failed_tasks_exception_is_not_kept_alive(traced: Captured) -> None:
    """Its span records the exception without holding it (nor its traceback's frames).

    Programs can see who refers to an exception (anyio's suite asserts
    ``gc.get_referrers(exc) == []`` after a task group fails); a span that
    kept it would also keep every frame's locals alive until exported.
    """

    class Gone:
        pass

    async def fail() -> None:
        local = Gone()  # noqa: F841  # kept alive by the traceback's frame, if anything keeps it
        raise LookupError("no such row")  # the raise

    async def main() -> tuple[list[Any], bool, bool]:
        task = asyncio.create_task(fail(), name="fail")
        try:
            await task
        except LookupError as caught:
            exc = caught
        del task
        await asyncio.sleep(0)
        gc.collect()
        alive = any(isinstance(o, Gone) for o in gc.get_objects())
        tb, exc.__traceback__ = exc.__traceback__, None  # the frames: ours to drop
        del tb
        gc.collect()
        # (3.10 counts main's own frame among them: its locals hold exc.)
        referrers = [r for r in gc.get_referrers(exc) if not isinstance(r, types.FrameType)]
        return referrers, alive, any(isinstance(o, Gone) for o in gc.get_objects())

    referrers, kept_by_traceback, kept_after = asyncio.run(main())
    assert referrers == []
    assert kept_by_traceback
    assert not kept_after
    ((_, event),) = [
        e for e in _by_task(traced.task_spans)["fail"].events if e[0] == semconv.EVENT_EXCEPTION
    ]
    assert event[semconv.ATTR_EXCEPTION_TYPE] == "LookupError"
    assert event[semconv.ATTR_EXCEPTION_MESSAGE] == "no such row"
    # traceback.format_exception's text, source lines included
    stacktrace = event[semconv.ATTR_EXCEPTION_STACKTRACE]
    assert f"line {line_of('# the raise')}, in fail\n" in stacktrace
    assert '    raise LookupError("no such row")' in stacktrace
    assert stacktrace.endswith("LookupError: no such row\n")


def test_a_taken_exception_formats_as_traceback_does() -> None:
    """What a span records, taken without the exception, is ``format_exception``'s text."""
    import traceback

    from aiotrace._sites import RaisedException

    def chained() -> None:
        try:
            {}["row"]
        except KeyError as exc:
            raise LookupError("no such row") from exc

    raised: list[BaseException] = []
    try:
        chained()
    except LookupError as exc:
        raised.append(exc)
    if sys.version_info >= (3, 11):
        try:
            raise ExceptionGroup("two", [ValueError(1), TypeError(2)])  # noqa: F821  # 3.11+
        except Exception as exc:  # the group itself
            raised.append(exc)
    for exc in raised:
        taken = RaisedException(exc)
        expected = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if SHARED_SYNTAX_TREE_DEPTH:  # the same less the ^^^^ lines (see stacktrace())
            assert re.search(r"(?m)^[ |]*[~^]+$", expected)
            expected = re.sub(r"(?m)^[ |]*[~^]+\n", "", expected)
        assert taken.stacktrace() == expected
        assert (taken.name, taken.message) == (type(exc).__name__, str(exc))


@pytest.mark.skipif(not SHARED_SYNTAX_TREE_DEPTH, reason="this Python's syntax trees are safe")
@pytest.mark.usefixtures("no_syntax_trees_from_aiotrace")
def test_where_a_syntax_tree_is_not_safe_an_exception_is_formatted_without_one() -> None:
    from aiotrace._sites import RaisedException

    try:
        {}["row"]
    except KeyError as exc:
        stacktrace = RaisedException(exc).stacktrace()
    assert '    {}["row"]\n' in stacktrace
    assert "^" not in stacktrace


FORMATTED_WHILE_PARSING = """
import ast, asyncio, inspect, weakref
import aiotrace

SOURCE = inspect.getsource(asyncio.tasks) * 2


class Node:
    pass


def busy(_):
    total = 0
    for i in range(20000):  # a finaliser long enough to let another thread run
        total += i


async def fails(n):
    raise KeyError({}.get(n, n) + 1)


async def main():
    keep = []
    for _ in range(20):
        tasks = [asyncio.create_task(fails(n)) for n in range(200)]
        await asyncio.gather(*tasks, return_exceptions=True)
        for _ in range(50):
            a, b = Node(), Node()
            a.b, b.a = b, a  # freed by the garbage collector, during the parse
            keep.append(weakref.ref(a, busy))
        del a, b
        ast.parse(SOURCE)


with aiotrace.tracing():
    asyncio.run(main())
print("parsed")
"""


def test_formatting_a_tasks_exception_leaves_the_programs_parse_alone(tmp_path: Path) -> None:
    """The pipeline formats failed tasks' exceptions while the program parses source.

    On 3.11.0-3.11.7 (CPython gh-106905) ``traceback`` placing its carets
    with ``ast.parse`` in aiotrace's thread, let run by a finaliser in the
    middle of the program's parse, made that parse fail: ``SystemError: AST
    constructor recursion depth mismatch`` (6 of 20 here, before the fix).
    A traced pytest run of anyio's suite stopped with an INTERNALERROR so.
    """
    program = tmp_path / "formatted.py"
    program.write_text(FORMATTED_WHILE_PARSING, encoding="utf-8")
    run = python(program, cwd=tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (0, "parsed\n", "")


def test_task_cancelled_while_holding_a_lock(traced: Captured) -> None:
    """The hold span ends when the cancelled task leaves ``async with``: outcome cancelled."""

    async def main() -> bool:
        lock = asyncio.Lock()

        async def holder() -> None:
            async with lock:
                await asyncio.sleep(10)

        task = asyncio.create_task(holder(), name="holder")
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return lock.locked()

    assert asyncio.run(main()) is False
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert hold[semconv.ATTR_TASK_NAME] == "holder"
    holder = _by_task(traced.task_spans)["holder"]
    assert holder[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert hold.parent_id == holder.span_id
    assert hold.span.end_time <= holder.span.end_time  # type: ignore[operator]


def test_every_way_of_making_a_task(traced: Captured) -> None:
    """create_task, ensure_future, loop.create_task, wait_for, timeout: each task has a span."""

    async def job(tag: str) -> str:
        await asyncio.sleep(0)
        return tag

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        results = [
            await asyncio.create_task(job("create_task")),
            await asyncio.ensure_future(job("ensure_future")),
            await loop.create_task(job("loop.create_task")),
            await loop.create_task(job("named"), name="named"),
            await asyncio.wait_for(asyncio.create_task(job("wait_for")), 1),
        ]
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(1):  # type: ignore[attr-defined]
                results.append(await asyncio.create_task(job("timeout")))
            ctx = contextvars.copy_context()
            results.append(await asyncio.create_task(job("context"), context=ctx))  # type: ignore[call-arg]
        return results

    results = asyncio.run(main())
    jobs = [s for s in traced.task_spans if s[semconv.ATTR_TASK_COROUTINE].endswith("job")]
    assert len(jobs) == len(results)
    main_span = next(
        s for s in traced.task_spans if s[semconv.ATTR_TASK_COROUTINE].endswith("main")
    )
    assert all(s.parent_id == main_span.span_id for s in jobs)
    assert [s for s in jobs if s[semconv.ATTR_TASK_NAME] == "named"]


def test_a_task_the_program_makes_of_asyncios_own_coroutine_has_a_span(traced: Captured) -> None:
    """``asyncio.wait([create_task(queue.get()), create_task(stop.wait())])``: tasks the
    program makes, of asyncio's public coroutines, are spanned as any; the tasks asyncio
    makes of its own work (a server's accept, ``asyncio.run``'s clean-up) are not."""

    async def main() -> None:
        ev = asyncio.Event()
        waiter = asyncio.create_task(ev.wait(), name="waiter")  # waiter-made
        sleeper = asyncio.create_task(asyncio.sleep(10), name="sleeper")
        threaded = asyncio.create_task(asyncio.to_thread(sum, [1, 2]), name="threaded")
        await asyncio.sleep(0)
        ev.set()
        sleeper.cancel()
        await asyncio.wait([waiter, sleeper, threaded])
        server = await asyncio.start_server(lambda _, writer: writer.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    tasks = _by_task(traced.task_spans)
    made = {
        name: (tasks[name][semconv.ATTR_TASK_COROUTINE], tasks[name][semconv.ATTR_OUTCOME])
        for name in ("waiter", "sleeper", "threaded")
    }
    assert made == {
        "waiter": ("Event.wait", semconv.OUTCOME_COMPLETED),
        "sleeper": ("sleep", semconv.OUTCOME_CANCELLED),
        "threaded": ("to_thread", semconv.OUTCOME_COMPLETED),
    }
    coroutines = sorted(s[semconv.ATTR_TASK_COROUTINE].rpartition(".")[2] for s in tasks.values())
    assert coroutines == ["main", "sleep", "to_thread", "wait"]
    # The wait has no caller but asyncio: it began where the program made its task.
    (wait,) = traced.named(semconv.SPAN_EVENT_WAIT)
    assert wait[semconv.ATTR_TASK_NAME] == "waiter"
    assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# waiter-made")


class Uncomparable:
    """A callback that cannot be compared: finding ours among a task's must not try."""

    def __call__(self, future: object) -> None:
        pass

    def __eq__(self, other: object) -> bool:
        raise AssertionError("compared")

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "Uncomparable()"


def test_task_identity_is_untouched(traced: Captured) -> None:
    """get_coro() is the user's coroutine; the name, repr and current_task() are unchanged."""

    async def work() -> asyncio.Task[Any] | None:
        await asyncio.sleep(0)
        return asyncio.current_task()

    async def main() -> None:
        coro = work()
        task = asyncio.create_task(coro, name="mine")
        assert task.get_coro() is coro
        assert task.get_name() == "mine"
        text = repr(task)
        assert "cb=[" not in text  # our done callback is not shown
        assert text.startswith("<Task pending name='mine' coro=<test_task_identity_is_untouched")
        task.add_done_callback(id)
        assert repr(task).endswith(" cb=[id()]>")  # the user's is, as asyncio shows it
        task.add_done_callback(Uncomparable())
        assert repr(task).endswith(" cb=[id(), Uncomparable()()]>")  # told apart by identity
        assert await task is task

    asyncio.run(main())


def test_a_wrong_create_task_call_fails_as_untraced(traced: Captured) -> None:
    """Extra arguments still raise TypeError: none is dropped on the way."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        coro = _noop()
        with pytest.raises(TypeError):
            loop.create_task(coro, "a name, passed positionally")  # type: ignore[call-arg]  # noqa: RUF006
        with pytest.raises(TypeError):
            loop.create_task(coro, label="a keyword no create_task takes")  # type: ignore[call-arg]  # noqa: RUF006
        coro.close()

    asyncio.run(main())


def test_user_task_factory_is_chained_and_restored() -> None:
    """A task factory set before or after instrumenting still runs, and still gets spans."""
    made: list[str] = []

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro.__qualname__)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def job() -> None:
        await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.create_task(job())
        asyncio.get_running_loop().set_task_factory(factory)  # installed while traced
        await asyncio.create_task(job())

    loop = asyncio.new_event_loop()
    loop.set_task_factory(factory)  # installed before tracing
    try:
        with capture_spans() as captured:
            loop.run_until_complete(main())
            spans = captured.task_spans
        assert loop.get_task_factory() is factory
    finally:
        loop.close()
    prefix = "test_user_task_factory_is_chained_and_restored.<locals>."
    assert made == [prefix + "main", prefix + "job", prefix + "job"]
    assert len([s for s in spans if s[semconv.ATTR_TASK_COROUTINE].endswith("job")]) == 2


def test_eager_tasks_get_spans() -> None:
    """Tasks that run (and finish) eagerly inside create_task are spanned too (3.12+)."""
    if sys.version_info < (3, 12):
        pytest.skip("eager_task_factory is 3.12+")

    async def quick() -> int:
        return 1

    async def main() -> int:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        task = asyncio.create_task(quick(), name="eager")
        assert task.done()
        return await task

    with capture_spans() as captured:
        assert asyncio.run(main()) == 1
        eager = _by_task(captured.task_spans)["eager"]
    assert eager[semconv.ATTR_OUTCOME] == semconv.OUTCOME_COMPLETED


EAGER_RAISES = """
import asyncio, gc

async def boom():
    raise KeyError("eager")

async def main():
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    try:
        await asyncio.create_task(boom(), name="read")
    except KeyError:
        pass
    asyncio.create_task(boom(), name="dropped")
    globals()["kept"] = asyncio.create_task(boom(), name="kept")
    await asyncio.sleep(0)
    gc.collect()
    print("done")

asyncio.run(main())
"""


def test_an_eager_task_that_raised_in_its_first_step_is_read_without_get_coro(
    tmp_path: Path,
) -> None:
    """3.12's get_coro() of an eager task that finished in its first step crashed the
    interpreter (a segmentation fault): read as a task that raised, its exception unread,
    it is asked nothing but its ``_coro``. asyncio has dropped that coroutine: its name
    is the one the task's span noted, whether the task is collected or kept."""
    if sys.version_info < (3, 12):
        pytest.skip("eager_task_factory is 3.12+")
    result = python("-m", "aiotrace", "run", "--check", "-c", EAGER_RAISES, cwd=tmp_path)
    assert result.stdout == "done\n", result.stderr
    for name in ("dropped", "kept"):
        assert f'EXCEPTION NEVER RETRIEVED: task "{name}" (boom) raised KeyError: ' in result.stderr
    assert '"read"' not in result.stderr


def test_a_task_spans_every_slot_is_set_however_the_task_was_made(traced: Captured) -> None:
    """A task made by a task gets its span's slots set in ``create_task`` itself, and
    one made elsewhere through ``TaskSpan()``: each path sets them all."""
    from aiotrace.primitives.tasks import TaskSpan

    unset: list[list[str]] = []

    async def look() -> None:
        span = trace.get_current_span()
        assert type(span) is TaskSpan
        unset.append([slot for slot in TaskSpan.__slots__ if not hasattr(span, slot)])

    async def main() -> None:
        await asyncio.create_task(look())  # made by a task

    asyncio.run(main())  # main's task: made outside any
    assert unset == [[]]
    tracer = trace.get_tracer("test")

    async def in_a_users_span() -> None:
        with tracer.start_as_current_span("request"):
            await asyncio.create_task(look())  # made under a span not a task's

    asyncio.run(in_a_users_span())
    assert unset == [[], []]


def test_a_task_span_ends_when_the_task_does(traced: Captured) -> None:
    """Not when the loop next gets round to a done callback: a callback that blocks
    the loop right after a task finished does not lengthen the task's span."""

    async def quick() -> None:
        # Queued before the task's end is: it runs first on the next turn.
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)

    async def main() -> None:
        await asyncio.create_task(quick(), name="quick")

    asyncio.run(main())
    quick_span = _by_task(traced.task_spans)["quick"]
    assert quick_span[semconv.ATTR_OUTCOME] == semconv.OUTCOME_COMPLETED
    assert quick_span.duration < 0.15


@pytest.mark.pristine
def test_tasks_are_spanned_where_asyncios_code_is_not_what_aiotrace_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Python whose ``call_soon`` and ``create_task`` are not the code aiotrace copies
    keeps its own: a task is made by asyncio's ``create_task``, called, and its end
    comes through a done callback, as on uvloop."""
    from aiotrace.primitives import tasks as task_patching

    original = vars(asyncio.BaseEventLoop)["call_soon"]
    monkeypatch.setattr(task_patching, "_KNOWN_CALL_SOON", "def call_soon(): pass")
    monkeypatch.setattr(task_patching, "_KNOWN_CREATE_TASK_HEADS", ("def create_task(): pass",))
    assert not task_patching._inlines_create_task(vars(asyncio.BaseEventLoop)["create_task"])

    async def seven() -> int:
        return 7

    async def main() -> int:
        return await asyncio.create_task(seven(), name="late")

    with capture_spans() as captured:
        assert vars(asyncio.BaseEventLoop)["call_soon"] is original
        assert asyncio.run(main()) == 7
        late = _by_task(captured.task_spans)["late"]
    assert late[semconv.ATTR_OUTCOME] == semconv.OUTCOME_COMPLETED
    assert vars(asyncio.BaseEventLoop)["call_soon"] is original


def test_tasks_off_leaves_create_task_alone() -> None:
    """tasks=False patches nothing on the event loop."""
    with capture_spans(tasks=False):
        assert "create_task" in vars(asyncio.BaseEventLoop)
        assert vars(asyncio.BaseEventLoop)["create_task"] is ORIGINAL_CREATE_TASK


FORKED_IN_PROCESS = """
import asyncio
import atexit
import os
import sys

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import aiotrace

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
aiotrace.instrument(tracer_provider=provider)


def show(who):
    aiotrace.uninstrument()
    for span in exporter.get_finished_spans():
        print(who, span.context.span_id, span.name, flush=True)


async def main():
    answer = asyncio.get_running_loop().create_future()

    async def waiter():
        await answer

    task = asyncio.create_task(waiter(), name="waiter")
    await asyncio.sleep(0.01)
    pid = os.fork()
    if pid == 0:  # the child leaves as the program would: its exit hooks run
        exporter.clear()
        atexit.register(show, "child")
        sys.exit(0)
    os.waitpid(pid, 0)
    answer.set_result(1)
    await task


asyncio.run(main())
show("parent")
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_fork_ends_no_span_of_the_parents_tasks_and_futures(tmp_path: Any) -> None:
    """With the user's own provider too: the parent's pending tasks and futures are its own.

    (The child, at exit, ended its copies of them: spans of the same ids as
    the parent's, in the same trace.)
    """

    program = tmp_path / "forked.py"
    program.write_text(FORKED_IN_PROCESS)
    result = subprocess.run(
        [sys.executable, str(program)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    spans: dict[str, dict[str, str]] = {"parent": {}, "child": {}}
    for line in result.stdout.splitlines():
        who, span_id, name = line.split()
        spans[who][span_id] = name
    assert sorted(spans["parent"].values()).count(semconv.SPAN_TASK) == 2
    assert semconv.SPAN_FUTURE in spans["parent"].values()
    assert not set(spans["child"]) & set(spans["parent"]), spans["child"]


def test_a_task_span_keeps_what_the_sdks_span_limits_allow(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``OTEL_SPAN_EVENT_COUNT_LIMIT`` bounds a task span as it bounds an SDK span: the
    latest events are kept, the others counted; a malformed value is said, not raised."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import aiotrace

    async def main() -> None:
        async def chatty() -> None:
            for n in range(5):
                trace.get_current_span().add_event(f"event {n}")

        await asyncio.create_task(chatty(), name="chatty")

    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "3")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with aiotrace.tracing(provider):
        asyncio.run(main())
    (span,) = [
        s for s in exporter.get_finished_spans() if s.attributes[semconv.ATTR_TASK_NAME] == "chatty"
    ]
    assert [e.name for e in span.events] == ["event 2", "event 3", "event 4"]
    assert span.dropped_events == 2

    made_before = TracerProvider()  # the SDK's own would refuse the value below
    monkeypatch.setenv("OTEL_SPAN_EVENT_COUNT_LIMIT", "many")
    with aiotrace.tracing(made_before):
        pass
    assert "OTEL_SPAN_EVENT_COUNT_LIMIT" in caplog.text


@pytest.mark.pristine
def test_a_finished_tasks_record_is_task_record_of_its_span() -> None:
    """The end of a task builds its record inline (a call fewer per task); it must be
    exactly what ``tasks.task_record`` makes of the span, which the shutdown's report
    of pending tasks uses, so that the encoder reads both alike."""
    from aiotrace._pipeline import Discard
    from aiotrace._recorder import R_TASK
    from aiotrace.primitives.tasks import task_record

    raw: list[tuple[Any, ...]] = []
    spans: list[Any] = []

    async def child(fail: bool) -> None:
        spans.append(trace.get_current_span())
        if fail:
            raise ValueError("no")

    async def main() -> None:
        await asyncio.create_task(child(False), name="fine")
        with pytest.raises(ValueError, match="no"):
            await asyncio.create_task(child(True), name="failing")

    aiotrace.instrument(consumer=Discard(), taps=[raw.extend], tasks=True)
    try:
        asyncio.run(main())
        aiotrace.flush()
    finally:
        aiotrace.uninstrument()
    records = [r for r in raw if r[0] == R_TASK]
    by_id = {r[3]: r for r in records}
    assert len(spans) == 2
    for span in spans:
        assert by_id[span.span_id] == task_record(span)
    assert [by_id[s.span_id][10] for s in spans] == ["fine", "failing"]
