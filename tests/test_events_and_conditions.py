"""Event and Condition spans: who waited, who set or notified, and the links between them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace import semconv
from aiotrace.testing import Captured, capture_spans
from tests.conftest import line_of

DELAY = 0.02


async def _two_waiters_one_setter() -> None:
    ready = asyncio.Event()

    async def waiter() -> None:
        await ready.wait()  # event-wait

    tasks = [asyncio.create_task(waiter(), name=f"waiter{i}") for i in range(2)]
    await asyncio.sleep(DELAY)
    ready.set()  # event-set
    await asyncio.gather(*tasks)
    await ready.wait()  # already set: no span


def test_event_waiters_link_to_the_setters_task(traced: Captured) -> None:
    """Two tasks wait for an event: set() is an event on the setter's task span, and both
    waits end at set() and link to that span."""
    asyncio.run(_two_waiters_one_setter())
    ((setter, event),) = traced.events(semconv.SPAN_EVENT_SET)
    assert setter.name == semconv.SPAN_TASK
    assert setter[semconv.ATTR_TASK_COROUTINE] == "_two_waiters_one_setter"
    assert event[semconv.ATTR_WOKEN] == 2
    assert event[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# event-set")
    waits = traced.named(semconv.SPAN_EVENT_WAIT)
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["waiter0", "waiter1"]
    set_at = setter.span.events[0].timestamp
    for wait in waits:
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_SET
        assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# event-wait")
        assert wait.links == [(setter.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
        assert wait[semconv.ATTR_WAKER_TASK] == setter[semconv.ATTR_TASK_NAME]
        assert wait[semconv.ATTR_WAKER_SITE] == (
            f"{os.path.basename(__file__)}:{line_of('# event-set')}"
        )
        assert wait.span.end_time == set_at
        assert wait.duration >= DELAY * 0.9
        # Each wait nests under its own task's span.
        assert (
            traced.by_id()[wait.parent_id][semconv.ATTR_TASK_NAME] == wait[semconv.ATTR_TASK_NAME]
        )
    assert waits[1][semconv.ATTR_WAITERS_AHEAD] == 1


@pytest.mark.pristine
def test_event_set_outside_any_span_is_a_point_span() -> None:
    """With no span current (task spans off), set() becomes a zero-length span to link to."""
    with capture_spans(min_wait=0, tasks=False) as captured:
        asyncio.run(_two_waiters_one_setter())
        spans = captured.spans
    (setter,) = [s for s in spans if s.name == semconv.SPAN_EVENT_SET]
    assert setter.duration == 0
    assert setter[semconv.ATTR_WOKEN] == 2
    assert setter[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# event-set")
    waits = [s for s in spans if s.name == semconv.SPAN_EVENT_WAIT]
    assert len(waits) == 2
    for wait in waits:
        assert wait.links == [(setter.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
        assert wait.span.end_time == setter.span.start_time


def test_event_set_is_an_event_on_the_setters_span() -> None:
    """With a span current, set() is recorded on it and waiters link to that span."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test")

    async def main() -> None:
        ready = asyncio.Event()
        waiter = asyncio.create_task(ready.wait())
        await asyncio.sleep(DELAY)
        with tracer.start_as_current_span("loader"):
            ready.set()
        await waiter

    with capture_spans(provider, min_wait=0, tasks=False) as captured:
        asyncio.run(main())
        spans = captured.spans
    loader = next(s for s in spans if s.name == "loader")
    (event,) = loader.span.events
    assert event.name == semconv.SPAN_EVENT_SET
    assert event.attributes[semconv.ATTR_WOKEN] == 1  # type: ignore[index]
    assert event.attributes[semconv.ATTR_PRIMITIVE_KIND] == "Event"  # type: ignore[index]
    assert str(event.attributes[semconv.ATTR_PRIMITIVE_NAME]).startswith("ready (")  # type: ignore[index]
    (wait,) = [s for s in spans if s.name == semconv.SPAN_EVENT_WAIT]
    assert wait.links == [(loader.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
    assert [s.name for s in spans if s.name == semconv.SPAN_EVENT_SET] == []


def test_a_set_on_a_task_span_is_the_event_it_would_be_on_the_users_span() -> None:
    """A task's span keeps a waking call raw and makes it an event when it is encoded (off
    the hot path); the event must be the one recorded at once on a user's span, attribute
    for attribute, with the primitive's name as it is when the span is exported."""
    provider = TracerProvider()
    tracer = provider.get_tracer("test")

    async def main() -> None:
        ready = asyncio.Event()

        async def set_later() -> None:
            await asyncio.sleep(DELAY)
            ready.set()  # set-in-task
            aiotrace.name(ready, "ready-flag")  # before the task's span is encoded

        waiter = asyncio.create_task(ready.wait())
        await asyncio.create_task(set_later(), name="setter")
        await waiter
        ready.clear()
        waiter = asyncio.create_task(ready.wait())
        await asyncio.sleep(DELAY)
        with tracer.start_as_current_span("loader"):
            ready.set()  # set-in-span
        await waiter

    with capture_spans(provider, min_wait=0) as captured:
        asyncio.run(main(), debug=False)
        sets = {span.name: (span, attrs) for span, attrs in captured.events(semconv.SPAN_EVENT_SET)}
    on_task, on_span = sets.pop(semconv.SPAN_TASK), sets.pop("loader")
    assert sets == {}
    in_task, in_span = on_task[1], on_span[1]
    assert list(in_task) == list(in_span)  # the same keys, in the same order
    assert in_task[semconv.ATTR_TASK_NAME] == "setter"
    assert in_task[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# set-in-task")
    assert in_task[semconv.ATTR_CODE_FUNCTION_NAME].endswith(".set_later")
    assert in_span[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# set-in-span")
    assert in_task[semconv.ATTR_CODE_FILE_PATH] == in_span[semconv.ATTR_CODE_FILE_PATH]
    assert in_task[semconv.ATTR_PRIMITIVE_NAME] == in_span[semconv.ATTR_PRIMITIVE_NAME]
    assert in_span[semconv.ATTR_PRIMITIVE_NAME] == "ready-flag"
    differ = {
        semconv.ATTR_TASK_NAME,
        semconv.ATTR_CODE_LINE_NUMBER,
        semconv.ATTR_CODE_FUNCTION_NAME,
    }
    assert {k: v for k, v in in_task.items() if k not in differ} == {
        k: v for k, v in in_span.items() if k not in differ
    }
    # The event's time is the set()'s: the waiter's span ends there.
    (first_wait, _) = captured.named(semconv.SPAN_EVENT_WAIT)
    assert on_task[0].span.events[0].timestamp == first_wait.span.end_time


async def _producer_consumer() -> list[int]:
    cond = asyncio.Condition()  # cond-created
    items: list[int] = []
    seen: list[int] = []

    async def consumer() -> None:
        async with cond:
            await cond.wait_for(lambda: bool(items))  # cond-wait
            seen.append(items.pop())

    async def producer() -> None:
        await asyncio.sleep(DELAY)
        async with cond:
            items.append(1)
            cond.notify()  # cond-notify
        await asyncio.sleep(DELAY)
        async with cond:
            items.append(2)
            cond.notify_all()

    await asyncio.gather(
        asyncio.create_task(consumer(), name="consumer1"),
        asyncio.create_task(consumer(), name="consumer2"),
        asyncio.create_task(producer(), name="producer"),
    )
    return seen


def test_condition_waits_end_when_notified(traced: Captured) -> None:
    """Condition waits end at notify(), link to the notifier; re-locking is the lock's span."""
    assert asyncio.run(_producer_consumer()) == [1, 2]
    notifies = traced.events(semconv.SPAN_CONDITION_NOTIFY)
    waits = traced.named(semconv.SPAN_CONDITION_WAIT)
    assert [attrs[semconv.ATTR_WOKEN] for _, attrs in notifies] == [1, 1]
    producer = notifies[0][0]
    assert {span.span_id for span, _ in notifies} == {producer.span_id}
    assert producer[semconv.ATTR_TASK_NAME] == "producer"
    assert notifies[0][1][semconv.ATTR_CONDITION_NOTIFY_N] == 1
    assert semconv.ATTR_CONDITION_NOTIFY_N not in notifies[1][1]  # notify_all
    assert notifies[0][1][semconv.ATTR_CODE_LINE_NUMBER] == line_of("# cond-notify")
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["consumer1", "consumer2"]
    notified_at = [event.timestamp for event in producer.span.events]
    for wait, when in zip(waits, notified_at, strict=True):
        assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_NOTIFIED
        assert wait[semconv.ATTR_CONDITION_PREDICATE] is True
        assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# cond-wait")
        assert wait.links == [(producer.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_WAKER})]
        assert wait[semconv.ATTR_WAKER_TASK] == "producer"
        assert wait.span.end_time == when
    # The condition's own lock is named after the condition.
    created = line_of("# cond-created")
    lock_spans = [s for s in traced.spans if s.name.startswith("asyncio.Lock")]
    assert lock_spans
    assert {s[semconv.ATTR_PRIMITIVE_NAME] for s in lock_spans} == {
        f"cond.lock ({os.path.basename(__file__)}:{created})"
    }
    assert {s[semconv.ATTR_PRIMITIVE_NAME] for s in waits} == {
        f"cond ({os.path.basename(__file__)}:{created})"
    }


async def _wait_then_take(other: asyncio.Lock) -> asyncio.Condition:
    """A waiter that, woken, takes ``other`` while holding the condition's lock."""
    cond = asyncio.Condition()
    ready = False

    async def waiter() -> None:
        async with cond:
            await cond.wait_for(lambda: ready)  # re-taken-here
            async with other:
                await asyncio.sleep(0.002)

    async def notifier() -> None:
        nonlocal ready
        async with cond:
            ready = True
            cond.notify_all()

    woken = asyncio.create_task(waiter(), name="waiter")
    await asyncio.sleep(0)
    await asyncio.create_task(notifier(), name="notifier")
    await woken
    return cond


def test_the_hold_a_condition_wait_takes_again_is_the_waiters(traced: Captured) -> None:
    """asyncio's ``Condition.wait`` takes the lock again itself: that hold was taken
    for another task's (released by the waiter's ``async with``), without the
    waiter's name, at ``asyncio/locks.py``. It is the waiter's, taken at its line."""
    asyncio.run(_wait_then_take(asyncio.Lock()))
    holds = [
        h
        for h in traced.named(semconv.SPAN_LOCK_HOLD)
        if h[semconv.ATTR_PRIMITIVE_NAME].split(" (")[0].endswith(".lock")
    ]
    assert [h.get(semconv.ATTR_TASK_NAME) for h in holds] == ["waiter", "notifier", "waiter"]
    after = holds[-1]
    assert after[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# re-taken-here")
    assert after[semconv.ATTR_CODE_FILE_PATH] == __file__
    assert semconv.ATTR_RELEASER_TASK not in after.attributes


async def _wait_in_time(cond: asyncio.Condition) -> None:
    async with cond:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(cond.wait(), 0.001)  # re-taken-in-time
        await asyncio.sleep(0.002)


def test_the_hold_a_condition_wait_with_a_time_limit_takes_again_is_the_waiters(
    traced: Captured,
) -> None:
    """``await asyncio.wait_for(cond.wait(), t)``, a condition wait with a time limit:
    the lock taken again when it times out is the waiter's, at its line. It was sited
    in ``asyncio/tasks.py`` (3.12+), or on 3.10-3.11, where ``wait_for`` runs the wait
    as a task of its own, at the loop's ``events.py`` with no holder at all."""

    async def main() -> None:
        await asyncio.create_task(_wait_in_time(asyncio.Condition()), name="waiter")

    asyncio.run(main())
    holds = [
        h
        for h in traced.named(semconv.SPAN_LOCK_HOLD)
        if h[semconv.ATTR_PRIMITIVE_NAME].split(" (")[0].endswith(".lock")
    ]
    assert [h.get(semconv.ATTR_TASK_NAME) for h in holds] == ["waiter", "waiter"]
    after = holds[-1]
    assert after[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# re-taken-in-time")
    assert after[semconv.ATTR_CODE_FILE_PATH] == __file__
    assert semconv.ATTR_RELEASER_TASK not in after.attributes


@pytest.mark.pristine  # turns lock-order checking on and off itself
def test_lock_order_sees_what_is_taken_after_a_condition_wait() -> None:
    """Taking ``other`` after ``cond.wait_for()`` nests it in the condition's lock; one
    path the other way round is an inversion. The nesting was missed: the lock's
    owner was asyncio's ``Condition.wait``, finished by then, not the waiter."""
    from aiotrace.primitives import _lock_order

    found: list[tuple[Any, Any]] = []

    async def main() -> None:
        other = asyncio.Lock()
        cond = await _wait_then_take(other)
        async with other, cond:
            pass

    with capture_spans():
        _lock_order.enable(lambda earlier, now: found.append((earlier, now)))
        try:
            asyncio.run(main())
            assert _lock_order.HELD == {}
            assert aiotrace.stats().internal_errors == 0
        finally:
            _lock_order.disable()
    assert len(found) == 1


class _CountingDeque(collections.deque):  # type: ignore[type-arg]
    """A Condition's waiter queue that counts the waiters read by iterating it.

    Not the diagnosis's reads: under ``pytest --aiotrace`` the session's
    watchdog reads every primitive's waiters twice a second, as many times
    as a loaded machine makes this test last."""

    read = 0

    def __iter__(self) -> Iterator[Any]:
        counted = not sys._getframe(1).f_code.co_filename.endswith(
            os.path.join("aiotrace", "diagnosis.py")
        )
        for item in super().__iter__():
            if counted:
                _CountingDeque.read += 1
            yield item


def test_notify_reads_only_the_waiters_it_wakes(traced: Captured) -> None:
    """notify(n) wakes the first n waiters not done, and counts them the same way:
    one at a time from the front (a waiter cancelled there skipped), not over every
    waiter, which made ``notify()`` in a loop quadratic (160 µs a call with 1,000
    waiting). ``woken`` stays exact."""

    async def main() -> list[int]:
        cond = asyncio.Condition()
        cond._waiters = _CountingDeque()  # type: ignore[attr-defined]
        woke: list[int] = []

        async def waiter(i: int) -> None:
            async with cond:
                await cond.wait()
                woke.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(100)]
        await asyncio.sleep(0)
        tasks[0].cancel()  # its waiter future is done, and still first in the queue
        _CountingDeque.read = 0
        async with cond:
            cond.notify(2)
        for _ in range(97):
            await asyncio.sleep(0)
            async with cond:
                cond.notify()
        await asyncio.gather(*tasks, return_exceptions=True)
        reads = _CountingDeque.read
        assert reads < 400, reads  # each notify reads a few; all of them, 5,000
        return woke

    assert asyncio.run(main()) == list(range(1, 100))
    woken = [attrs[semconv.ATTR_WOKEN] for _, attrs in traced.events(semconv.SPAN_CONDITION_NOTIFY)]
    # From 3.13 the cancelled waiter, leaving wait(), wakes the next one itself
    # (asyncio's _notify(1), not a notify() call): the last notify() wakes nobody.
    spurious = 1 if sys.version_info >= (3, 13) else 0
    assert woken == [2] + [1] * (97 - spurious)  # (an SDK span keeps 128 events)


def test_a_conditions_async_with_is_its_locks_and_what_was_put_on_it_still_runs(
    traced: Captured,
) -> None:
    """``async with cond`` takes the Condition's lock as ``async with lock`` would (aiotrace
    takes it without asyncio's two coroutines): the hold is the lock's, at the line of the
    ``async with``, in the task that held it. What asyncio's ``async with`` would call
    instead, it still calls: an ``acquire``/``release`` put on the instance (a mock's way),
    even after an ``async with`` that found them plain, and a Condition made on a Lock
    subclass, whose own methods run."""
    calls: list[str] = []

    class CountingLock(asyncio.Lock):
        async def acquire(self) -> bool:
            calls.append("subclass acquire")
            return await super().acquire()

        def release(self) -> None:
            calls.append("subclass release")
            super().release()

    async def main() -> None:
        plain = asyncio.Condition()
        async with plain:  # plain-async-with
            await asyncio.sleep(0)
        assert not plain.locked()

        wrapped = asyncio.Condition()
        async with wrapped:  # aiotrace now knows its methods as plain: changed, they run
            pass
        acquire, release = wrapped.acquire, wrapped.release

        async def counted_acquire() -> bool:
            calls.append("instance acquire")
            return await acquire()

        def counted_release() -> None:
            calls.append("instance release")
            release()

        wrapped.acquire = counted_acquire  # type: ignore[method-assign]
        wrapped.release = counted_release  # type: ignore[method-assign]
        async with wrapped:
            assert wrapped.locked()
        assert not wrapped.locked()

        on_subclass = asyncio.Condition(CountingLock())
        async with on_subclass:
            assert on_subclass.locked()
        assert not on_subclass.locked()

        with pytest.raises(RuntimeError, match="Lock is not acquired"):
            await plain.__aexit__(None, None, None)

    asyncio.run(main())
    assert calls == [
        "instance acquire",
        "instance release",
        "subclass acquire",
        "subclass release",
    ]
    holds = traced.named(semconv.SPAN_LOCK_HOLD)
    assert len(holds) == 4
    plain_hold = holds[0]
    assert plain_hold[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# plain-async-with")
    assert plain_hold[semconv.ATTR_PRIMITIVE_NAME].startswith("plain.lock (")
    assert (
        plain_hold[semconv.ATTR_TASK_NAME]
        == traced.named(semconv.SPAN_TASK)[0][semconv.ATTR_TASK_NAME]
    )


def test_condition_with_explicit_lock_keeps_its_lock_name(traced: Captured) -> None:
    """A Condition built on the user's lock leaves that lock's own name alone."""

    async def main() -> None:
        shared = asyncio.Lock()
        cond = asyncio.Condition(shared)
        async with cond:
            await asyncio.sleep(0.002)

    asyncio.run(main())
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_PRIMITIVE_NAME].startswith("shared (")


def test_a_conditions_methods_replaced_by_none_fail_as_untraced() -> None:
    """``async with cond`` calls what the instance holds, whatever aiotrace has remembered
    of it: ``None`` there fails as it would untraced, before and after a plain use, on a
    plain Lock and on a subclass's."""

    class Sub(asyncio.Lock):
        pass

    def run() -> list[str]:
        seen: list[str] = []

        async def main() -> None:
            for lock in (None, Sub()):
                for used_first in (False, True):
                    cond = asyncio.Condition(lock)
                    if used_first:
                        async with cond:
                            pass
                    for name in ("acquire", "release"):
                        saved = getattr(cond, name)
                        setattr(cond, name, None)
                        try:
                            async with cond:
                                pass
                        except TypeError as exc:
                            seen.append(f"{name}: {exc}")
                        finally:
                            setattr(cond, name, saved)
                            if cond.locked():
                                cond.release()

        asyncio.run(main())
        return seen

    untraced = run()
    with capture_spans():
        assert run() == untraced
    assert len(untraced) == 8
