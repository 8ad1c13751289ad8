"""Barrier and Queue spans: arrival order and releaser; blocked gets, puts and joins."""

from __future__ import annotations

import asyncio
import sys

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.testing import Captured, capture_spans
from tests.conftest import line_of

needs_barrier = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Barrier is 3.11+")
DELAY = 0.01


@needs_barrier
def test_barrier_parties_link_to_the_releasing_arrival(traced: Captured) -> None:
    """Three parties: the first two wait, in arrival order, linked to the third's arrival."""

    async def main() -> list[int]:
        barrier = asyncio.Barrier(3)  # type: ignore[attr-defined]

        async def party(delay: float) -> int:
            await asyncio.sleep(delay)
            return int(await barrier.wait())

        return await asyncio.gather(
            *(asyncio.create_task(party(i * DELAY), name=f"p{i}") for i in range(3))
        )

    assert asyncio.run(main()) == [0, 1, 2]
    waits = sorted(traced.named(semconv.SPAN_BARRIER_WAIT), key=lambda s: s.span.start_time or 0)
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["p0", "p1", "p2"]
    assert [w[semconv.ATTR_BARRIER_INDEX] for w in waits] == [0, 1, 2]
    for wait in waits:
        assert wait[semconv.ATTR_BARRIER_PARTIES] == 3
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PASSED
    p0, p1, p2 = waits
    for wait in (p0, p1):
        assert wait[semconv.ATTR_WAKER_TASK] == "p2"
        assert [attrs[semconv.ATTR_LINK_KIND] for _, attrs in wait.links] == [semconv.LINK_RELEASER]
        assert wait.span.end_time == p2.span.start_time
    assert p0.duration >= 2 * DELAY * 0.9
    # The Barrier's own Condition and Lock are asyncio internals: no spans of their own.
    assert {s.name for s in traced.primitive_spans} == {semconv.SPAN_BARRIER_WAIT}


@needs_barrier
def test_a_quick_releasing_arrival_is_spanned_when_a_spanned_wait_links_to_it() -> None:
    """Under min_wait, the arrival that releases the barrier is built only because linked."""

    async def main() -> None:
        barrier = asyncio.Barrier(3)  # type: ignore[attr-defined]

        async def party(delay: float) -> None:
            await asyncio.sleep(delay)
            await barrier.wait()

        # The first two wait 0.1 s, well over min_wait even on a loaded
        # machine (0.02 s failed there); the third arrives and waits not at all.
        await asyncio.gather(*(asyncio.create_task(party(d), name=f"p{d}") for d in (0, 0, 0.1)))

    with capture_spans(min_wait=0.01) as captured:
        asyncio.run(main())
        waits = captured.named(semconv.SPAN_BARRIER_WAIT)
        errors = aiotrace.stats().internal_errors
    assert errors == 0
    (releaser,) = (w for w in waits if w[semconv.ATTR_TASK_NAME] == "p0.1")
    linked = [w for w in waits if w is not releaser]
    assert len(linked) == 2
    for wait in linked:
        assert [target for target, _ in wait.links] == [releaser.span_id]


@needs_barrier
def test_barrier_abort_breaks_waiters(traced: Captured) -> None:
    """A party waiting when the barrier is aborted ends with outcome "broken"."""

    async def main() -> None:
        barrier = asyncio.Barrier(2)  # type: ignore[attr-defined]
        waiter = asyncio.create_task(barrier.wait(), name="stranded")
        await asyncio.sleep(DELAY)
        await barrier.abort()
        with pytest.raises(asyncio.BrokenBarrierError):  # type: ignore[attr-defined]
            await waiter

    asyncio.run(main())
    (wait,) = traced.named(semconv.SPAN_BARRIER_WAIT)
    assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_BROKEN
    ((aborter, abort),) = traced.events(semconv.SPAN_BARRIER_ABORT)
    assert aborter.name == semconv.SPAN_TASK
    assert abort[semconv.ATTR_WAITERS_DURING] == 1


def test_blocked_get_links_to_the_put_that_fed_it(traced: Captured) -> None:
    """A consumer blocked on an empty queue links to the producer's put."""

    async def main() -> list[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        got: list[int] = []

        async def consumer() -> None:
            for _ in range(2):
                got.append(await queue.get())
                queue.task_done()

        async def producer() -> None:
            for i in range(2):
                await asyncio.sleep(DELAY)
                await queue.put(i)  # queue-put

        tasks = [
            asyncio.create_task(consumer(), name="consumer"),
            asyncio.create_task(producer(), name="producer"),
        ]
        await asyncio.gather(*tasks)
        return got

    assert asyncio.run(main()) == [0, 1]
    gets = traced.named(semconv.SPAN_QUEUE_GET)
    assert len(gets) == 2
    for get in gets:
        assert get[semconv.ATTR_TASK_NAME] == "consumer"
        assert get[semconv.ATTR_OUTCOME] == semconv.OUTCOME_GOT
        assert get[semconv.ATTR_QUEUE_SIZE] == 0
        assert get[semconv.ATTR_QUEUE_MAXSIZE] == 0
        assert get[semconv.ATTR_WAKER_TASK] == "producer"
        assert get[semconv.ATTR_WAKER_SITE].endswith(f":{line_of('# queue-put')}")
        assert get.duration >= DELAY * 0.9
    assert traced.named(semconv.SPAN_QUEUE_PUT) == []  # never full


@pytest.mark.pristine  # its thresholds: a traced session's would win
def test_short_blocked_gets_are_counted_not_spanned() -> None:
    """Below ``min_wait`` a blocked get is settled on the spot: counted, no span."""
    rounds = 50

    async def main() -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()

        async def consumer() -> None:
            for _ in range(rounds):
                await queue.get()  # blocks every time: each item comes after it asks

        task = asyncio.create_task(consumer())
        for i in range(rounds):
            await asyncio.sleep(0)
            queue.put_nowait(i)
        await task
        return queue

    with capture_spans(min_wait=60.0) as captured:
        queue = asyncio.run(main())
        assert captured.named(semconv.SPAN_QUEUE_GET) == []
        assert aiotrace.stats().internal_errors == 0
    stats = queue._aiotrace_stats  # type: ignore[attr-defined]
    assert stats.waits == stats.quiet == rounds
    assert stats.n == 0  # no get found an item waiting
    assert stats.wait_ns > 0
    # Each wake left the woken get its note, and each get took its own.
    assert not queue._aiotrace_gstarts  # type: ignore[attr-defined]
    assert not queue._aiotrace_feeds  # type: ignore[attr-defined]


@pytest.mark.pristine  # its thresholds: a traced session's would win
def test_short_blocked_puts_are_counted_not_spanned() -> None:
    """Below ``min_wait`` a put blocked on a full queue is settled when a get frees a slot:
    counted, no span, and no note of it left behind."""
    rounds = 50

    async def main() -> asyncio.Queue[int]:
        queue: asyncio.Queue[int] = asyncio.Queue(1)

        async def producer() -> None:
            for i in range(rounds + 1):
                await queue.put(i)  # blocks every time but the first: the queue is full

        task = asyncio.create_task(producer())
        for _ in range(rounds + 1):
            await asyncio.sleep(0)
            queue.get_nowait()
        await task
        return queue

    with capture_spans(min_wait=60.0) as captured:
        queue = asyncio.run(main())
        assert captured.named(semconv.SPAN_QUEUE_PUT) == []
        assert aiotrace.stats().internal_errors == 0
    stats = queue._aiotrace_stats  # type: ignore[attr-defined]
    assert stats.waits == stats.quiet == rounds
    assert stats.n == 1  # the first put found room
    assert stats.wait_ns > 0
    assert not queue._aiotrace_pstarts  # type: ignore[attr-defined]
    assert not queue._aiotrace_frees  # type: ignore[attr-defined]


def test_blocked_put_and_join(traced: Captured) -> None:
    """A put blocked on a full queue links to the get that freed a slot; join to task_done."""

    async def main() -> None:
        queue: asyncio.PriorityQueue[int] = asyncio.PriorityQueue(maxsize=1)
        await queue.put(1)

        async def producer() -> None:
            await queue.put(2)

        async def worker() -> None:
            for _ in range(2):
                await asyncio.sleep(DELAY)
                await queue.get()
                queue.task_done()

        tasks = [
            asyncio.create_task(producer(), name="producer"),
            asyncio.create_task(worker(), name="worker"),
        ]
        await queue.join()
        await asyncio.gather(*tasks)

    asyncio.run(main())
    (put,) = traced.named(semconv.SPAN_PRIORITY_QUEUE_PUT)
    assert put[semconv.ATTR_TASK_NAME] == "producer"
    assert put[semconv.ATTR_QUEUE_SIZE] == 1
    assert put[semconv.ATTR_QUEUE_MAXSIZE] == 1
    assert put[semconv.ATTR_WAKER_TASK] == "worker"
    assert put[semconv.ATTR_PRIMITIVE_KIND] == semconv.KIND_PRIORITY_QUEUE
    (join,) = traced.named(semconv.SPAN_PRIORITY_QUEUE_JOIN)
    assert join[semconv.ATTR_OUTCOME] == semconv.OUTCOME_JOINED
    assert join[semconv.ATTR_QUEUE_UNFINISHED] == 1
    assert join[semconv.ATTR_WAKER_TASK] == "worker"
    ((worker, done),) = traced.events(semconv.SPAN_QUEUE_TASK_DONE)
    assert worker[semconv.ATTR_TASK_NAME] == "worker"
    assert done[semconv.ATTR_WOKEN] == 1  # the one join() waiting
    assert join.links == [(worker.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
    assert join.duration >= DELAY * 0.9  # the first task_done() emptied it


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Queue.shutdown is 3.13+")
def test_queue_shutdown_ends_blocked_gets(traced: Captured) -> None:
    """A get blocked when the queue shuts down ends with outcome "shutdown"."""

    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        getter = asyncio.create_task(queue.get(), name="getter")
        await asyncio.sleep(DELAY)
        queue.shutdown()  # type: ignore[attr-defined]
        with pytest.raises(asyncio.QueueShutDown):  # type: ignore[attr-defined]
            await getter

    asyncio.run(main())
    (get,) = traced.named(semconv.SPAN_QUEUE_GET)
    assert get[semconv.ATTR_OUTCOME] == semconv.OUTCOME_SHUTDOWN
    ((_, shutdown),) = traced.events(semconv.SPAN_QUEUE_SHUTDOWN)
    assert shutdown[semconv.ATTR_QUEUE_SIZE] == 0
