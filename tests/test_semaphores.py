"""Semaphore and BoundedSemaphore spans: saturation, waits, hand-offs, capacity."""

from __future__ import annotations

import asyncio
import sys
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.primitives import _base, _lock_order
from aiotrace.testing import Captured, capture_spans
from tests.conftest import line_of, quiet_hand_offs

HOLD = 0.02


async def _throttled(sem: asyncio.Semaphore, n: int) -> int:
    running = 0
    peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with sem:  # sem-entered
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(HOLD)
            running -= 1

    await asyncio.gather(*(asyncio.create_task(call(), name=f"c{i}") for i in range(n)))
    return peak


def test_semaphore_waits_link_to_the_permit_they_got(traced: Captured) -> None:
    """Four calls through Semaphore(2): two wait, each linked to the hold that freed a permit."""
    peak = asyncio.run(_throttled(asyncio.Semaphore(2), 4))
    assert peak == 2

    holds = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    waits = traced.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert sorted(h[semconv.ATTR_TASK_NAME] for h in holds) == ["c0", "c1", "c2", "c3"]
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["c2", "c3"]
    by_id = {h.span_id: h for h in holds}
    by_task = {h[semconv.ATTR_TASK_NAME]: h for h in holds}
    for wait, giver in zip(waits, ("c0", "c1"), strict=True):
        assert wait[semconv.ATTR_SEMAPHORE_VALUE] == 0
        assert wait[semconv.ATTR_SEMAPHORE_CAPACITY] == 2
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_ACQUIRED
        ((target, attrs),) = wait.links
        assert attrs == {semconv.ATTR_LINK_KIND: semconv.LINK_HANDOFF}
        # The permit came from the hold that ended exactly when this wait did.
        assert by_id[target][semconv.ATTR_TASK_NAME] == giver
        assert wait[semconv.ATTR_BLOCKER_TASK] == giver
        assert by_id[target].span.end_time == wait.span.end_time
        # Where the user waited and where the permit was held: the async with.
        assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# sem-entered")
        assert by_id[target][semconv.ATTR_CODE_LINE_NUMBER] == line_of("# sem-entered")
        # (On 3.10 the qualified name is looked up within a time budget per
        # process, which a long session may have spent: the last part is sure.)
        assert str(wait[semconv.ATTR_CODE_FUNCTION_NAME]).rsplit(".", 1)[-1] == "call"
    assert waits[0][semconv.ATTR_WAITERS_AHEAD] == 0
    assert waits[1][semconv.ATTR_WAITERS_AHEAD] == 1
    assert by_task["c0"][semconv.ATTR_WAITERS_DURING] == 2
    # Never more than two holds overlap.
    edges = sorted(
        [(h.span.start_time, 1) for h in holds] + [(h.span.end_time, -1) for h in holds],
        key=lambda e: (e[0], e[1]),
    )
    level = peak_level = 0
    for _, step in edges:
        level += step
        peak_level = max(peak_level, level)
    assert peak_level == 2


def test_two_permits_handed_over_before_either_waiter_runs() -> None:
    """Two releases in a row wake two waiters: each wait links to its own hold, nothing is left."""

    async def main() -> asyncio.Semaphore:
        sem = asyncio.Semaphore(2)
        await sem.acquire()
        await sem.acquire()

        async def waiter() -> None:
            async with sem:
                pass

        waiters = [asyncio.create_task(waiter(), name=f"w{i}") for i in (1, 2)]
        await asyncio.sleep(0.002)  # both queued
        sem.release()  # wakes w1
        sem.release()  # wakes w2: w1 has not run yet
        await asyncio.gather(*waiters)
        return sem

    with capture_spans(min_wait=0.0, min_hold=60.0) as captured:
        sem = asyncio.run(main())
        waits = captured.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
        holds = {h.span_id: h for h in captured.named(semconv.SPAN_SEMAPHORE_HOLD)}
        assert aiotrace.stats().internal_errors == 0
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["w1", "w2"]
    targets = [target for w in waits for target, _ in w.links]
    assert len(targets) == len(set(targets)) == 2  # two holds, one each
    for wait, target in zip(waits, targets, strict=True):
        assert holds[target].span.end_time == wait.span.end_time
    assert not sem._aiotrace_handoffs  # type: ignore[attr-defined]  # every note taken
    assert not sem._aiotrace_starts  # type: ignore[attr-defined]


def test_bounded_semaphore_has_its_own_span_names(traced: Captured) -> None:
    """BoundedSemaphore spans are named after it, and over-release still raises ValueError."""

    async def main() -> None:
        sem = asyncio.BoundedSemaphore(1)
        await _throttled(sem, 2)
        with pytest.raises(ValueError, match="released too many times"):
            sem.release()

    asyncio.run(main())
    names = {s.name for s in traced.primitive_spans}
    assert names == {semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE, semconv.SPAN_BOUNDED_SEMAPHORE_HOLD}
    for span in traced.primitive_spans:
        assert span[semconv.ATTR_PRIMITIVE_KIND] == semconv.KIND_BOUNDED_SEMAPHORE
        assert span[semconv.ATTR_SEMAPHORE_CAPACITY] == 1


def test_permit_released_by_another_task(traced: Captured) -> None:
    """A permit given back by a different task is one hold, naming both tasks."""

    async def main() -> None:
        sem = asyncio.Semaphore(1)
        await sem.acquire()

        async def giver() -> None:
            await asyncio.sleep(0.005)
            sem.release()

        await asyncio.create_task(giver(), name="giver")

    asyncio.run(main())
    (hold,) = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert hold[semconv.ATTR_RELEASER_TASK] == "giver"
    assert hold[semconv.ATTR_TASK_NAME] != "giver"


async def _given_back_by_main(holders: int, idle: int) -> list[str]:
    """``holders`` tasks each take a permit and wait; main gives every permit back.

    ``idle`` more tasks wait beside, holding nothing. Main is named ``giver``.
    Returns the holders' names, in the order they took their permits.
    """
    asyncio.current_task().set_name("giver")  # type: ignore[union-attr]
    sem = asyncio.Semaphore(holders)
    done = asyncio.Event()
    beside = [asyncio.create_task(done.wait()) for _ in range(idle)]

    async def holder() -> None:
        await sem.acquire()
        await done.wait()

    names = [f"holder-{i}" for i in range(holders)]
    tasks = [asyncio.create_task(holder(), name=name) for name in names]
    await asyncio.sleep(0)  # every holder has its permit
    assert sem._value == 0  # type: ignore[attr-defined]
    for _ in range(holders):
        sem.release()
    done.set()
    await asyncio.gather(*tasks, *beside)
    return names


def test_permits_given_back_by_another_task_name_their_holders_from_one_reading(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release by a task that holds no permit ends the oldest one, another task's.
    That task is found from its frame by reading every task's await chain: once for
    all twenty releases here, not once each (with 10,000 tasks waiting, a reading
    takes about 13 ms)."""
    lookups = _base.HolderLookups()
    monkeypatch.setattr(_base, "HOLDERS", lookups)
    names = asyncio.run(_given_back_by_main(holders=20, idle=300))
    holds = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert [h[semconv.ATTR_TASK_NAME] for h in holds] == names
    assert {h[semconv.ATTR_RELEASER_TASK] for h in holds} == {"giver"}
    assert (lookups.scans, lookups.skipped) == (1, 0)


def test_a_remembered_holder_is_checked_before_it_is_named(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a reading found is checked against the task's await chain when used: a
    frame that is no longer that task's (it finished, and the frame's id went to
    another) is looked for again, and the hold names the task that runs it now."""
    lookups = _base.HolderLookups()
    monkeypatch.setattr(_base, "HOLDERS", lookups)
    bystanders: list[Any] = []

    async def main() -> None:
        lock = asyncio.Lock()
        taken = asyncio.Event()

        async def holder() -> None:
            await lock.acquire()
            taken.set()
            await asyncio.sleep(1)  # released under it, then cancelled

        async def bystander() -> None:
            await asyncio.sleep(1)

        other = asyncio.create_task(bystander(), name="bystander")
        bystanders.append(other)
        task = asyncio.create_task(holder(), name="holder")
        await taken.wait()
        # A stale entry: the holder's frame, remembered as the bystander's.
        lookups.found[id(lock._aiotrace_owner)] = weakref.ref(other)  # type: ignore[attr-defined]
        lock.release()
        task.cancel()
        other.cancel()
        await asyncio.gather(task, other, return_exceptions=True)

    asyncio.run(main())
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_TASK_NAME] == "holder"
    assert lookups.scans == 1


def test_permits_of_finished_tasks_are_not_looked_for_twice(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A permit taken before the last reading, by a frame that is in no task's chain,
    is in none for good (here its task has finished): its release reads nothing.
    Permits taken since do ask for a reading: their frames may be in a chain."""
    lookups = _base.HolderLookups()
    monkeypatch.setattr(_base, "HOLDERS", lookups)
    readings: list[int] = []

    async def main() -> None:
        sem = asyncio.Semaphore(6)

        async def take() -> None:
            await sem.acquire()

        await asyncio.gather(*(take() for _ in range(3)))
        for _ in range(3):
            sem.release()
            readings.append(lookups.scans)
        await asyncio.gather(*(take() for _ in range(3)))
        for _ in range(3):
            sem.release()
            readings.append(lookups.scans)

    asyncio.run(main())
    assert readings == [1, 1, 1, 2, 2, 2]
    assert lookups.skipped == 0
    holds = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert len(holds) == 6
    assert all(semconv.ATTR_TASK_NAME not in h.attributes for h in holds)


Stay = Callable[[], Coroutine[Any, Any, None]]
Middle = Callable[[asyncio.Lock, asyncio.Lock, Stay], Coroutine[Any, Any, None]]


async def _released_in_a_reading(middle: Middle) -> None:
    """Task ``other`` takes a lock; task ``middle`` takes a second one in ``middle()``,
    a coroutine below its outermost, has the first released there (a release by
    another task: a reading of the tasks' chains), and awaits ``stay()``, holding
    the second; then main gives it back. Main is named ``main``; both tasks end
    cancelled."""
    asyncio.current_task().set_name("main")  # type: ignore[union-attr]
    theirs, its_own = asyncio.Lock(), asyncio.Lock()
    other_took = asyncio.Event()
    gave_back = asyncio.Event()

    async def other() -> None:
        await theirs.acquire()
        other_took.set()
        await asyncio.sleep(1)  # cancelled

    async def stay() -> None:
        gave_back.set()
        await asyncio.sleep(1)  # cancelled

    async def outermost() -> None:
        await other_took.wait()
        await middle(theirs, its_own, stay)

    tasks = [
        asyncio.create_task(other(), name="other"),
        asyncio.create_task(outermost(), name="middle"),
    ]
    await gave_back.wait()
    its_own.release()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _holders_and_releasers(traced: Captured) -> list[tuple[str, str]]:
    holds = traced.named(semconv.SPAN_LOCK_HOLD)
    return [(h[semconv.ATTR_TASK_NAME], h[semconv.ATTR_RELEASER_TASK]) for h in holds]


def test_a_frame_running_when_the_tasks_were_read_is_found_later(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading made in the middle of a task's coroutines sees the running task's
    chain only on the stack: a lock taken further down it, released later by another
    task, still names that task."""
    lookups = _base.HolderLookups()
    monkeypatch.setattr(_base, "HOLDERS", lookups)

    async def middle(theirs: asyncio.Lock, its_own: asyncio.Lock, stay: Stay) -> None:
        await its_own.acquire()
        theirs.release()  # another task's lock: a reading, made from here
        await stay()

    asyncio.run(_released_in_a_reading(middle))
    assert _holders_and_releasers(traced) == [("other", "middle"), ("middle", "main")]
    assert lookups.scans == 1


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_a_reading_inside_an_eager_tasks_first_step_tells_the_tasks_on_the_stack_apart(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An eager task's first step runs inside ``create_task()``, on its creator's
    stack. A reading made there sees two running tasks on one stack: the creator's
    frames are the creator's, and a lock the creator took there, released later by
    another task, names the creator."""
    lookups = _base.HolderLookups()
    monkeypatch.setattr(_base, "HOLDERS", lookups)
    started: list[asyncio.Task[None]] = []

    async def middle(theirs: asyncio.Lock, its_own: asyncio.Lock, stay: Stay) -> None:
        async def eager() -> None:
            theirs.release()  # another task's lock: a reading, in this first step

        await its_own.acquire()
        started.append(asyncio.create_task(eager()))  # runs eager() at once, here
        await stay()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        await _released_in_a_reading(middle)
        loop.set_task_factory(None)

    asyncio.run(main())
    # (asyncio names an eager task after its first step: then, it had its default name)
    assert [(holder, releaser[:5]) for holder, releaser in _holders_and_releasers(traced)] == [
        ("other", "Task-"),
        ("middle", "main"),
    ]
    assert lookups.scans == 1


def test_with_the_reading_budget_spent_a_release_reads_nothing(
    traced: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings of the tasks' await chains are paid from a budget that grows with the
    program's time. Spent, a release by another task reads nothing: the hold is still
    a span, with its releaser and acquire site, but without its holder's name."""
    lookups = _base.HolderLookups()
    lookups.share = 0.0  # never grows back
    lookups.credit_ns = -1
    monkeypatch.setattr(_base, "HOLDERS", lookups)
    names = asyncio.run(_given_back_by_main(holders=3, idle=10))
    holds = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert len(holds) == len(names)
    assert all(semconv.ATTR_TASK_NAME not in h.attributes for h in holds)
    assert {h[semconv.ATTR_RELEASER_TASK] for h in holds} == {"giver"}
    assert (lookups.scans, lookups.skipped) == (0, 3)
    assert aiotrace.stats().holders_unnamed == 3


def test_the_reading_budget_grows_back_with_time() -> None:
    """A reading that overspent waits until the program's time has paid for it,
    at ``share`` of that time; savings stop at ``burst_ns``."""
    lookups = _base.HolderLookups()
    lookups.share = 1.0
    lookups.credit_ns = -2_000_000  # 2 ms overspent: 2 ms of waiting at share 1
    lookups.last_ns = time.perf_counter_ns()
    assert not lookups.afford()
    time.sleep(0.005)
    assert lookups.afford()
    time.sleep(0.005)
    lookups.burst_ns = 1_000
    assert lookups.afford()
    assert lookups.credit_ns == 1_000
    assert lookups.skipped == 1


def test_a_permit_given_back_from_a_helper_is_the_callers_own(traced: Captured) -> None:
    """A coroutine that gives its permit back through a helper gives back its own,
    not the oldest: its frame is up the helper's stack."""

    async def main() -> None:
        sem = asyncio.Semaphore(2)
        first_took = asyncio.Event()
        second_done = asyncio.Event()

        async def give_back() -> None:
            sem.release()

        async def first() -> None:
            await sem.acquire()
            first_took.set()
            await second_done.wait()
            await give_back()

        async def second() -> None:
            await first_took.wait()
            await sem.acquire()
            await asyncio.sleep(0.001)
            await give_back()
            second_done.set()

        await asyncio.gather(
            asyncio.create_task(first(), name="first"),
            asyncio.create_task(second(), name="second"),
        )

    asyncio.run(main())
    holds = traced.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert [h[semconv.ATTR_TASK_NAME] for h in holds] == ["second", "first"]
    assert all(h.get(semconv.ATTR_RELEASER_TASK) is None for h in holds)


@pytest.mark.pristine  # its thresholds: a traced session's would win
@pytest.mark.parametrize("bounded", [False, True], ids=["Semaphore", "BoundedSemaphore"])
def test_short_hand_offs_are_counted_not_spanned(bounded: bool) -> None:
    """Below the thresholds every permit hand-off is counted exactly, and nothing is spanned."""
    sem = quiet_hand_offs(lambda: asyncio.BoundedSemaphore(2) if bounded else asyncio.Semaphore(2))
    assert sem._aiotrace_permits == []  # every permit given back
    assert not sem._aiotrace_handoffs  # every hand-off note taken


def test_async_with_keeps_subclasses_and_bounds(traced: Captured) -> None:
    """``async with`` on a subclass runs its own acquire/release; a bound still raises."""
    calls: list[str] = []

    class Counting(asyncio.Semaphore):
        async def acquire(self) -> bool:
            calls.append("acquire")
            return await super().acquire()

        def release(self) -> None:
            calls.append("release")
            super().release()

    async def main() -> None:
        async with Counting(1):
            pass
        bounded = asyncio.BoundedSemaphore(1)
        with pytest.raises(ValueError, match="released too many times"):
            async with bounded:
                bounded.release()  # the permit back early: __aexit__'s release is one too many
        assert bounded._value == 1  # type: ignore[attr-defined]

    asyncio.run(main())
    assert calls == ["acquire", "release"]
    assert aiotrace.stats().internal_errors == 0
    assert {s.name for s in traced.primitive_spans} <= {
        semconv.SPAN_SEMAPHORE_HOLD,
        semconv.SPAN_BOUNDED_SEMAPHORE_HOLD,
    }


def _one_inversion(main: Callable[[], Coroutine[Any, Any, tuple[Any, Any]]]) -> Any:
    """Run ``main`` with lock order checked: it returns (first, second), nested both ways.

    Exactly that one inversion is reported, nothing is left held, and nothing of
    aiotrace's failed on the way (a failure stops tracing the family, which could
    hide a wrong owner). Returns the nesting seen first ("first, then second").
    """
    found: list[tuple[Any, Any]] = []
    with capture_spans():
        _lock_order.enable(lambda earlier, now: found.append((earlier, now)))
        try:
            first, second = asyncio.run(main())
            assert _lock_order.HELD == {}
            assert aiotrace.stats().internal_errors == 0
        finally:
            _lock_order.disable()
    ((earlier, now),) = found
    first_stats, second_stats = first._aiotrace_stats, second._aiotrace_stats
    assert (earlier.first, earlier.second) == (first_stats, second_stats)
    assert (now.first, now.second) == (second_stats, first_stats)
    return earlier


@pytest.mark.pristine  # turns lock-order checking on and off itself
def test_lock_order_sees_every_permit_taken_and_given_back() -> None:
    """A Semaphore and a Lock nested both ways is one inversion; nothing stays held."""

    async def main() -> tuple[asyncio.Semaphore, asyncio.Lock]:
        sem = asyncio.Semaphore(2)
        lock = asyncio.Lock()

        async def sem_then_lock() -> None:
            async with sem, lock:
                await asyncio.sleep(0)

        async def lock_then_sem() -> None:
            async with lock, sem:
                await asyncio.sleep(0)

        await sem_then_lock()
        for _ in range(3):  # short holds and hand-offs, given back on the quick path
            await asyncio.gather(*(sem_then_lock() for _ in range(3)))
        assert _lock_order.HELD == {}
        await lock_then_sem()
        return sem, lock

    _one_inversion(main)


@pytest.mark.pristine  # turns ownership tracking on and off itself
@pytest.mark.parametrize("how", ["async with", "acquire()"])
def test_a_permit_taken_after_a_wait_is_owned_by_the_waiters_frame(how: str) -> None:
    """Under diagnosis a permit records its owner's frame and where it was taken: for one
    taken after a wait too, whether ``async with`` waited in ``__aenter__`` or
    ``acquire()`` did (a leak, a deadlock, names that task and line)."""
    seen: list[tuple[bool, bool]] = []

    async def main() -> None:
        sem = asyncio.Semaphore(1)

        async def holder() -> None:
            async with sem:
                await asyncio.sleep(0.01)

        async def waiter() -> None:
            me = sys._getframe()
            if how == "async with":
                async with sem:  # blocks: holder has the permit
                    (permit,) = sem._aiotrace_permits  # type: ignore[attr-defined]
                    seen.append(
                        (permit[1] is me, permit[2] is not None and permit[2][0] is me.f_code)
                    )
            else:
                await sem.acquire()  # blocks: holder has the permit
                (permit,) = sem._aiotrace_permits  # type: ignore[attr-defined]
                seen.append((permit[1] is me, permit[2] is not None and permit[2][0] is me.f_code))
                sem.release()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        await asyncio.gather(first, waiter())

    with capture_spans():
        _lock_order.track_ownership()
        try:
            asyncio.run(main())
            assert aiotrace.stats().internal_errors == 0
        finally:
            _lock_order.untrack_ownership()
    assert seen == [(True, True)]


@pytest.mark.pristine  # turns lock-order checking on and off itself
def test_lock_order_keeps_what_a_frame_still_holds() -> None:
    """Giving back a permit leaves the frame's other holds recorded: later nestings count."""

    async def main() -> tuple[asyncio.Lock, asyncio.Lock]:
        outer = asyncio.Lock()
        sem = asyncio.Semaphore(1)
        inner = asyncio.Lock()
        async with outer:
            async with sem:  # the frame now holds two
                pass
            async with inner:  # outer is still held: outer, then inner
                pass
        async with inner, outer:  # the other way round
            pass
        return outer, inner

    _one_inversion(main)


@pytest.mark.pristine  # turns lock-order checking on and off itself
def test_lock_order_checks_each_class_held_once_not_each_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frame holding 200 locks of one class (a lock per row) checks a further
    acquisition against that class once, not against each of the 200 (which made
    every acquisition walk all taken before it). Given back out of order, the class
    stays held while any of its locks is, and a nesting names where the last of
    them still held was taken."""
    from aiotrace._sites import line_of as line_at

    checked = [0]
    nested = _lock_order._nested

    def counted(*args: Any) -> None:
        checked[0] += 1
        nested(*args)

    monkeypatch.setattr(_lock_order, "_nested", counted)
    seen: list[int] = []

    async def main() -> tuple[asyncio.Lock, asyncio.Lock]:
        rows = [asyncio.Lock() for _ in range(200)]
        table = asyncio.Lock()
        for row in rows:
            await row.acquire()  # row-taken
        for row in (rows[100], rows[199], rows[0]):  # the last taken among them
            row.release()
        checked[0] = 0
        async with table:  # rows, then the table
            pass
        seen.append(checked[0])
        for row in rows:
            if row.locked():
                row.release()
        async with table:
            await rows[5].acquire()  # the table, then a row: the inversion
            rows[5].release()
        return rows[0], table

    earlier = _one_inversion(main)
    assert seen == [1]
    assert earlier.first_site is not None
    assert line_at(*earlier.first_site) == line_of("# row-taken")
