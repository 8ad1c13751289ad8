"""Future spans: creation to resolution, who resolved it, who waited; leaks reported."""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.primitives._base import PLAIN_CREATE_FUTURE
from aiotrace.primitives.tasks import TracedFuture
from aiotrace.testing import Captured, capture_spans
from tests.conftest import line_of

DELAY = 0.02


async def _tutorial() -> str:
    """The tutorial's first lesson: a task sets a future's value after a delay."""

    async def set_after(fut: asyncio.Future[str], delay: float, value: str) -> None:
        await asyncio.sleep(delay)
        fut.set_result(value)  # resolved-here

    loop = asyncio.get_running_loop()
    fut = loop.create_future()  # future-created
    setter = asyncio.create_task(set_after(fut, DELAY, "... world"), name="setter")
    value = await fut  # future-awaited
    await setter
    return value


def test_tutorial_future_span_tree(traced: Captured) -> None:
    """The future's span names its resolver; the awaiting task's wait links to it."""
    assert asyncio.run(_tutorial()) == "... world"
    (future,) = traced.named(semconv.SPAN_FUTURE)
    (wait,) = traced.named(semconv.SPAN_FUTURE_WAIT)
    tasks = {s[semconv.ATTR_TASK_COROUTINE].rsplit(".", 1)[-1]: s for s in traced.task_spans}
    main, setter = tasks["_tutorial"], tasks["set_after"]
    base = os.path.basename(__file__)

    assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RESULT
    assert future[semconv.ATTR_PRIMITIVE_NAME] == f"fut ({base}:{line_of('# future-created')})"
    assert future[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# future-created")
    assert future[semconv.ATTR_WAKER_TASK] == "setter"
    assert future[semconv.ATTR_WAKER_SITE] == f"{base}:{line_of('# resolved-here')}"
    assert future[semconv.ATTR_FUTURE_WAITERS] == 1
    assert future[semconv.ATTR_FUTURE_TIME_TO_RESOLVE] >= DELAY * 1000 * 0.9
    assert future.parent_id == main.span_id  # created in main
    assert future.links == [(setter.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
    # The setter's task span carries the resolution as an event.
    (resolve,) = [attrs for name, attrs in setter.events if name == semconv.SPAN_FUTURE_RESOLVE]
    assert resolve[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RESULT
    assert resolve[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# resolved-here")

    assert wait.parent_id == main.span_id
    assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# future-awaited")
    assert wait.links == [(future.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_FUTURE})]
    assert wait[semconv.ATTR_WAKER_TASK] == "setter"
    assert wait.span.end_time == future.span.end_time  # the wait ended at the resolution
    assert wait.duration >= DELAY * 0.9


def test_asyncio_future_constructor_is_traced_and_isinstance_holds(traced: Captured) -> None:
    """``asyncio.Future()`` in user code is traced; isinstance/type behave as before."""

    async def main() -> None:
        fut: asyncio.Future[int] = asyncio.Future()
        plain = asyncio.futures.Future()  # asyncio's own class, not traced
        task = asyncio.ensure_future(asyncio.sleep(0))
        for obj in (fut, plain, task):
            assert isinstance(obj, asyncio.Future)
            assert asyncio.isfuture(obj)
        assert issubclass(asyncio.Task, asyncio.Future)
        assert type(fut) is asyncio.Future
        assert repr(fut) == "<Future pending>"
        fut.set_result(3)
        assert await fut == 3
        await task

    asyncio.run(main())
    (future,) = traced.named(semconv.SPAN_FUTURE)
    assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RESULT


def test_asyncios_own_futures_are_not_traced_by_default() -> None:
    """sleep() and lock waiters use futures; they produce no future spans unless asked."""

    async def main() -> None:
        lock = asyncio.Lock()
        async with lock:
            waiter = asyncio.create_task(lock.acquire())
            await asyncio.sleep(0.001)
        await waiter
        lock.release()

    with capture_spans(min_wait=0) as captured:
        asyncio.run(main())
        assert captured.named(semconv.SPAN_FUTURE, semconv.SPAN_FUTURE_WAIT) == []
    with capture_spans(internal_futures=True, min_wait=0) as captured:
        asyncio.run(main())
        assert captured.named(semconv.SPAN_FUTURE)  # the lock waiter's and sleep's futures


def test_waiters_get_plain_futures_unless_asyncios_own_are_traced() -> None:
    """A lock's, a semaphore's and an event's waiter futures are asyncio's, as without aiotrace.

    (aiotrace makes them itself, sparing the frame look-up of the patched
    ``create_future``; with ``internal_futures=True`` they are traced ones.)
    """

    async def waiter_types() -> list[object]:
        # Whether the slow paths make waiters directly (the frame look-up spared).
        direct = type(asyncio.get_running_loop()).create_future is PLAIN_CREATE_FUTURE[0]
        lock, sem, event = asyncio.Lock(), asyncio.Semaphore(0), asyncio.Event()
        await lock.acquire()
        waiting = [
            asyncio.create_task(lock.acquire()),
            asyncio.create_task(sem.acquire()),
            asyncio.create_task(event.wait()),
        ]
        await asyncio.sleep(0)
        types = [type(p._waiters[0]) for p in (lock, sem, event)]  # type: ignore[attr-defined]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        lock.release()
        return [direct, *types]

    with capture_spans():
        assert asyncio.run(waiter_types()) == [True, *[asyncio.futures.Future] * 3]
    with capture_spans(internal_futures=True):
        assert asyncio.run(waiter_types()) == [False, *[TracedFuture] * 3]


@pytest.mark.parametrize("how", ["exception", "cancel"])
def test_future_outcomes(traced: Captured, how: str) -> None:
    """set_exception() and cancel() are outcomes of the future and of its waiter."""

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def resolve() -> None:
            await asyncio.sleep(0.002)
            if how == "exception":
                fut.set_exception(LookupError("nope"))
            else:
                fut.cancel()

        resolver = asyncio.create_task(resolve(), name="resolver")
        expected = LookupError if how == "exception" else asyncio.CancelledError
        with pytest.raises(expected):
            await fut
        await resolver

    asyncio.run(main())
    (future,) = traced.named(semconv.SPAN_FUTURE)
    (wait,) = traced.named(semconv.SPAN_FUTURE_WAIT)
    if how == "exception":
        assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_EXCEPTION
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_EXCEPTION
    else:
        assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert future[semconv.ATTR_WAKER_TASK] == "resolver"


def test_garbage_collected_pending_future_is_reported(traced: Captured) -> None:
    """A future dropped while pending becomes a span with outcome "collected"."""

    async def main() -> None:
        orphan = asyncio.get_running_loop().create_future()  # orphan-created
        del orphan
        gc.collect()

    asyncio.run(main())
    (future,) = traced.named(semconv.SPAN_FUTURE)
    assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_COLLECTED
    assert future[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# orphan-created")


def test_future_pending_at_shutdown_is_reported() -> None:
    """A future still pending when tracing stops is reported with its waiters."""
    keep: list[Any] = []

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()  # never-resolved
        keep.append(fut)
        waiter = asyncio.create_task(asyncio.wait_for(asyncio.shield(fut), 0.001))
        with pytest.raises(asyncio.TimeoutError):
            await waiter

    with capture_spans() as captured:
        asyncio.run(main())
    (future,) = captured.named(semconv.SPAN_FUTURE)
    assert future[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PENDING
    assert future[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# never-resolved")
    assert not keep[0].done()


@pytest.mark.pristine
def test_traced_futures_keep_working_after_uninstrument() -> None:
    """A traced future made while instrumented still resolves and awaits after uninstrument."""

    async def make() -> asyncio.Future[int]:
        return asyncio.get_running_loop().create_future()

    loop = asyncio.new_event_loop()
    try:
        with capture_spans():
            fut = loop.run_until_complete(make())
        assert type(fut).__name__ == "Future"

        async def use() -> int:
            loop.call_soon(fut.set_result, 5)
            return await fut

        assert loop.run_until_complete(use()) == 5
    finally:
        loop.close()
    assert asyncio.Future is asyncio.futures.Future  # the name is restored


def test_naming_a_future(traced: Captured) -> None:
    """aiotrace.name() works on traced futures too."""

    async def main() -> None:
        fut = aiotrace.name(asyncio.get_running_loop().create_future(), "config-loaded")
        fut.set_result(None)
        await fut

    asyncio.run(main())
    (future,) = traced.named(semconv.SPAN_FUTURE)
    assert future[semconv.ATTR_PRIMITIVE_NAME] == "config-loaded"


def test_futures_made_at_one_line_share_its_name_unless_named(traced: Captured) -> None:
    """A future's name is worked out once per creation site when encoded; one named
    explicitly among them keeps its own, and the others keep the site's."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for i in range(4):
            reply = loop.create_future()  # reply-created
            if i == 1:
                aiotrace.name(reply, "the-second")
            reply.set_result(i)
            await reply

    asyncio.run(main())
    futures = traced.named(semconv.SPAN_FUTURE)
    site = f"{os.path.basename(__file__)}:{line_of('# reply-created')}"
    assert [f[semconv.ATTR_PRIMITIVE_NAME] for f in futures] == [
        f"reply ({site})",
        "the-second",
        f"reply ({site})",
        f"reply ({site})",
    ]
    assert {f[semconv.ATTR_PRIMITIVE_SITE] for f in futures} == {site}
    assert len({f[semconv.ATTR_FUTURE_ID] for f in futures}) == 4
    assert [f[semconv.ATTR_FUTURE_ID] for f in futures] == [
        f[semconv.ATTR_PRIMITIVE_ID] for f in futures
    ]
