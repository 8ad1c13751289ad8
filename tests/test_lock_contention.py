"""Lock spans: waits only when contended, holds, and links from each wait to its blocker."""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace import semconv
from aiotrace.testing import Captured, capture_spans
from tests.conftest import line_of, quiet_hand_offs

HOLD = 0.02
# The qualified name, on 3.10 too (where code objects do not carry it).
QUALNAME = "_three_contenders.<locals>.worker"


async def _three_contenders() -> list[str]:
    order: list[str] = []
    cache_lock = asyncio.Lock()  # lock-created

    async def worker() -> None:
        async with cache_lock:  # lock-acquired
            order.append(asyncio.current_task().get_name())  # type: ignore[union-attr]
            await asyncio.sleep(HOLD)

    tasks = [asyncio.create_task(worker(), name=f"w{i}") for i in range(1, 4)]
    await asyncio.gather(*tasks)
    return order


def test_contended_lock_spans(traced: Captured) -> None:
    """Three tasks on one lock give three holds and two waits linked to their blockers."""
    order = asyncio.run(_three_contenders())
    assert order == ["w1", "w2", "w3"]  # FIFO fairness untouched

    holds = traced.named(semconv.SPAN_LOCK_HOLD)
    waits = traced.named(semconv.SPAN_LOCK_ACQUIRE)
    assert [h[semconv.ATTR_TASK_NAME] for h in holds] == ["w1", "w2", "w3"]
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["w2", "w3"]
    hold_by_task = {h[semconv.ATTR_TASK_NAME]: h for h in holds}

    created = line_of("# lock-created")
    acquired = line_of("# lock-acquired")
    name = f"cache_lock ({os.path.basename(__file__)}:{created})"
    for span in holds + waits:
        assert span[semconv.ATTR_PRIMITIVE_KIND] == "Lock"
        assert span[semconv.ATTR_PRIMITIVE_NAME] == name
        assert span[semconv.ATTR_CODE_LINE_NUMBER] == acquired
        assert span[semconv.ATTR_CODE_FILE_PATH] == __file__
        assert span[semconv.ATTR_CODE_FUNCTION_NAME] == QUALNAME
    assert len({s[semconv.ATTR_PRIMITIVE_ID] for s in holds + waits}) == 1

    w2, w3 = waits
    base = os.path.basename(__file__)
    for wait, blocker in ((w2, "w1"), (w3, "w2")):
        hold = hold_by_task[blocker]
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_ACQUIRED
        # Linked to the hold whose release handed the lock over, named from it.
        assert wait.links == [(hold.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_HANDOFF})]
        assert wait[semconv.ATTR_BLOCKER_TASK] == blocker
        assert wait[semconv.ATTR_BLOCKER_SITE] == f"{base}:{acquired}"
        # The wait ends at the hand-off; resuming afterwards is scheduling.
        assert wait.span.end_time == hold.span.end_time
    assert w2[semconv.ATTR_WAITERS_AHEAD] == 0
    assert w3[semconv.ATTR_WAITERS_AHEAD] == 1
    assert hold_by_task["w1"][semconv.ATTR_WAITERS_DURING] == 2
    assert hold_by_task["w2"][semconv.ATTR_WAITERS_DURING] == 1
    assert semconv.ATTR_WAITERS_DURING not in hold_by_task["w3"].attributes
    for hold in holds:
        assert hold[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RELEASED
        assert HOLD <= hold.duration < HOLD + 0.2
    # w3 waited through two holds.
    assert w3.duration >= 2 * HOLD


def test_uncontended_short_holds_are_counted_not_spanned() -> None:
    """Below min_hold and without waiters, a hold costs a counter, not a span."""

    async def main() -> None:
        lock = asyncio.Lock()
        for _ in range(100):
            async with lock:
                pass

    with capture_spans(min_hold=1.0, min_wait=1.0) as captured:
        before = aiotrace.stats()
        asyncio.run(main())
        after = aiotrace.stats()
        assert captured.primitive_spans == []
    assert after.operations - before.operations == 100
    assert after.below_threshold - before.below_threshold == 100


def test_long_uncontended_hold_is_spanned_without_waiters(traced: Captured) -> None:
    """A hold over min_hold is a span even when nobody waited for it."""

    async def main() -> None:
        lock = asyncio.Lock()
        async with lock:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    (hold,) = traced.primitive_spans
    assert hold.name == semconv.SPAN_LOCK_HOLD
    assert semconv.ATTR_WAITERS_DURING not in hold.attributes
    assert traced.named(semconv.SPAN_LOCK_ACQUIRE) == []


def test_short_hold_is_spanned_when_a_spanned_wait_links_to_it() -> None:
    """A hold under min_hold that handed the lock to a long waiter is still built."""

    async def main() -> None:
        lock = asyncio.Lock()

        async def holder(name: str) -> None:
            async with lock:
                await asyncio.sleep(0.001)

        # Ten short holds in a row: the last waiter waits for all of them.
        await asyncio.gather(
            *(asyncio.create_task(holder(f"h{i}"), name=f"h{i}") for i in range(10))
        )

    with capture_spans(min_wait=0.005, min_hold=10.0) as captured:
        asyncio.run(main())
        spans = captured.spans
    waits = [s for s in spans if s.name == semconv.SPAN_LOCK_ACQUIRE]
    holds = {s.span_id: s for s in spans if s.name == semconv.SPAN_LOCK_HOLD}
    assert waits  # the later waiters waited more than 5 ms
    assert all(w.duration >= 0.005 for w in waits)
    for wait in waits:
        ((target, attrs),) = wait.links
        assert attrs == {semconv.ATTR_LINK_KIND: semconv.LINK_HANDOFF}
        # Far below min_hold (each is a 1 ms sleep, stretched on a loaded
        # machine), yet spanned because linked.
        assert holds[target].duration < 1.0
    assert len(holds) == len(waits)  # and no other short hold was built


@pytest.mark.pristine  # its thresholds: a traced session's would win
def test_short_lock_hand_offs_are_counted_not_spanned() -> None:
    """Below the thresholds every hand-off is counted exactly, and nothing is left noted."""
    lock = quiet_hand_offs(asyncio.Lock)
    assert lock._aiotrace_handoff is None


def test_explicit_acquire_release_by_another_task(traced: Captured) -> None:
    """A lock released by a task that did not acquire it names both, at the acquire site."""

    async def main() -> None:
        lock = asyncio.Lock()
        await lock.acquire()  # explicit-acquire

        async def releaser() -> None:
            await asyncio.sleep(0.005)
            lock.release()

        await asyncio.create_task(releaser(), name="releaser")

    asyncio.run(main(), debug=False)
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# explicit-acquire")
    assert hold[semconv.ATTR_TASK_NAME] != "releaser"
    assert hold[semconv.ATTR_RELEASER_TASK] == "releaser"


def test_a_hold_through_a_programs_own_context_manager_names_its_task(traced: Captured) -> None:
    """``__aenter__`` takes the lock and returns: its frame is no task's when the paired
    ``__aexit__`` gives the lock back, in the task that entered it, which is the holder
    (it read as unknown, and the releaser as another task)."""

    class Guard:
        def __init__(self, lock: asyncio.Lock) -> None:
            self.lock = lock

        async def __aenter__(self) -> None:
            await self.lock.acquire()

        async def __aexit__(self, *exc: object) -> None:
            self.lock.release()

    async def work(guard: Guard) -> None:
        async with guard:
            await asyncio.sleep(0.002)

    async def main() -> None:
        await asyncio.create_task(work(Guard(asyncio.Lock())), name="worker")

    asyncio.run(main())
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_TASK_NAME] == "worker"
    assert semconv.ATTR_RELEASER_TASK not in hold.attributes


@pytest.mark.parametrize("entry", ["async with", "acquire()"])
def test_a_lock_taken_after_a_wait_names_its_holder_when_another_task_releases_it(
    entry: str,
) -> None:
    """The holder of a lock taken after a short wait (no span: the wait is only
    counted) is known as well as one taken at once: released by another task, its
    hold names both (``async with`` takes a waited-for lock in its own lines, not
    through acquire())."""

    async def main() -> None:
        lock = asyncio.Lock()
        await lock.acquire()
        gate = asyncio.Event()

        async def holder() -> None:
            if entry == "async with":
                async with lock:
                    gate.set()
                    await asyncio.sleep(1)  # released under it: never ends normally
            else:
                await lock.acquire()
                gate.set()
                await asyncio.sleep(1)

        async def releaser() -> None:
            await gate.wait()
            lock.release()

        waiting = asyncio.create_task(holder(), name="holder")
        await asyncio.sleep(0)  # holder() queues behind main's hold
        lock.release()
        await asyncio.create_task(releaser(), name="releaser")
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):
            await waiting

    with capture_spans(min_hold=0) as traced:
        asyncio.run(main(), debug=False)
    assert not traced.named(semconv.SPAN_LOCK_ACQUIRE)
    holds = [h for h in traced.named(semconv.SPAN_LOCK_HOLD) if h.get(semconv.ATTR_RELEASER_TASK)]
    assert [(h[semconv.ATTR_TASK_NAME], h[semconv.ATTR_RELEASER_TASK]) for h in holds] == [
        ("holder", "releaser")
    ]


@pytest.mark.pristine
def test_spans_nest_under_the_current_span() -> None:
    """Waits and holds are children of the span current where they happened."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test")

    async def main() -> int:
        lock = asyncio.Lock()

        async def worker() -> None:
            async with lock:
                await asyncio.sleep(0.005)

        with tracer.start_as_current_span("request") as request:
            await asyncio.gather(worker(), worker())
            return request.get_span_context().span_id

    with capture_spans(provider, min_wait=0, min_hold=0, tasks=False) as captured:
        request_id = asyncio.run(main())
        spans = captured.spans
    ours = [s for s in spans if s.name.startswith("asyncio.")]
    assert {s.name for s in ours} == {semconv.SPAN_LOCK_ACQUIRE, semconv.SPAN_LOCK_HOLD}
    assert len(ours) == 3
    request_span = next(s for s in spans if s.name == "request")
    for span in ours:
        assert span.parent_id == request_id
        assert span.span.context.trace_id == request_span.span.context.trace_id  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_wait_is_not_spanned_when_the_lock_was_free(traced: Captured) -> None:
    """acquire() on a free lock never produces a wait span, even at threshold zero."""

    async def main() -> None:
        lock = asyncio.Lock()
        for _ in range(3):
            await lock.acquire()
            lock.release()

    asyncio.run(main())
    assert traced.named(semconv.SPAN_LOCK_ACQUIRE) == []
    assert len(traced.named(semconv.SPAN_LOCK_HOLD)) == 3
