"""Cancelled and timed-out waits: outcome recorded, behaviour and lock state unchanged."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Callable
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.primitives import _timeouts
from aiotrace.testing import Captured, capture_spans

needs_timeout = pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")


async def _doomed_and_patient(
    cancel_after_hand_off: bool, make: Callable[[], Any] = asyncio.Lock
) -> tuple[Any, list[str]]:
    """Two waiters on a held lock; "doomed" is cancelled, "patient" must still get the lock.

    ``make`` may give a ``Semaphore(1)`` instead: the same scenario, the same outcome.
    """
    lock = make()
    order: list[str] = []
    await lock.acquire()

    async def waiter(tag: str) -> None:
        async with lock:
            order.append(tag)

    doomed = asyncio.create_task(waiter("doomed"), name="doomed")
    patient = asyncio.create_task(waiter("patient"), name="patient")
    if cancel_after_hand_off:
        await asyncio.sleep(0)
        lock.release()  # hands the lock to "doomed", which has not run yet
        doomed.cancel()
    else:
        await asyncio.sleep(0.005)
        doomed.cancel()
        await asyncio.sleep(0)
        lock.release()
    await patient
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert not lock.locked()
    return lock, order


def test_cancelled_lock_wait(traced: Captured) -> None:
    """A waiter cancelled in acquire() is "cancelled" (not an error) and the queue moves on."""
    _, order = asyncio.run(_doomed_and_patient(cancel_after_hand_off=False))
    assert order == ["patient"]
    waits = {w[semconv.ATTR_TASK_NAME]: w for w in traced.named(semconv.SPAN_LOCK_ACQUIRE)}
    assert waits["doomed"][semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert waits["doomed"].span.status.is_ok
    assert waits["patient"][semconv.ATTR_OUTCOME] == semconv.OUTCOME_ACQUIRED


@pytest.mark.pristine  # its thresholds: a traced session's would win
@pytest.mark.parametrize(
    ("min_wait", "spans", "counts"),
    [
        # Short waits: only the abandoned wait is a span; the hand-off was quiet.
        (60.0, [("doomed", semconv.OUTCOME_CANCELLED)], (1, 1, 2, 2)),
        # Every wait spanned: the release noted its hold for the waiter it
        # woke; the cancelled waiter takes the note, and the next one's wait
        # ends when it got the lock.
        (
            0.0,
            [("doomed", semconv.OUTCOME_CANCELLED), ("patient", semconv.OUTCOME_ACQUIRED)],
            (1, 1, 2, 0),
        ),
    ],
    ids=["quiet", "spanned"],
)
@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_a_waiter_cancelled_after_the_hand_off_passes_the_lock_on(
    min_wait: float, spans: list[tuple[str, str]], counts: tuple[int, int, int, int], kind: str
) -> None:
    """Handed the lock but cancelled before it ran: a cancelled wait, and the next one gets it."""
    make, span_name = {
        "lock": (asyncio.Lock, semconv.SPAN_LOCK_ACQUIRE),
        "semaphore": (asyncio.Semaphore, semconv.SPAN_SEMAPHORE_ACQUIRE),
    }[kind]
    with capture_spans(min_wait=min_wait, min_hold=60.0) as captured:
        lock, order = asyncio.run(_doomed_and_patient(cancel_after_hand_off=True, make=make))
        waits = captured.named(span_name)
        assert aiotrace.stats().internal_errors == 0
    assert order == ["patient"]
    assert [(w[semconv.ATTR_TASK_NAME], w[semconv.ATTR_OUTCOME]) for w in waits] == spans
    assert all(not w.links for w in waits)  # the hold that handed over went to "doomed"
    stats = lock._aiotrace_stats  # type: ignore[attr-defined]
    assert (stats.n, stats.holds, stats.waits, stats.quiet) == counts
    assert not lock._aiotrace_starts
    # No note left behind: a Lock's one, a Semaphore's by start time.
    assert getattr(lock, "_aiotrace_handoff", None) is None
    assert not getattr(lock, "_aiotrace_handoffs", None)


def test_wait_for_timeout_is_outcome_timeout(traced: Captured) -> None:
    """wait_for() running out gives "timeout"; the caller still gets TimeoutError."""

    async def main() -> None:
        lock = asyncio.Lock()
        await lock.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lock.acquire(), 0.01)
        ev = asyncio.Event()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), 0.01)
        assert lock.locked()
        lock.release()

    asyncio.run(main())
    outcomes = {
        s.name: s[semconv.ATTR_OUTCOME]
        for s in traced.spans
        if "acquire" in s.name or "wait" in s.name
    }
    assert outcomes == {
        semconv.SPAN_LOCK_ACQUIRE: semconv.OUTCOME_TIMEOUT,
        semconv.SPAN_EVENT_WAIT: semconv.OUTCOME_TIMEOUT,
    }


@pytest.mark.parametrize(
    "how",
    [
        "wait_for",
        "wait_for-gather",
        pytest.param("timeout", marks=needs_timeout),
        pytest.param("timeout-gather", marks=needs_timeout),
        "wait_for-shield",
    ],
)
def test_a_wait_in_a_task_the_timed_out_code_awaits_is_a_timeout_too(
    traced: Captured, how: str
) -> None:
    """The timeout cancels the task that awaits; that cancels the task it awaits, and so on.

    The wait cut short in the awaited task is as much a timeout as one
    awaited directly: "timeout" on every Python (3.10 and 3.11 said so for
    ``wait_for`` of a task, 3.12+ said "cancelled"). A task behind
    ``shield()`` is not cancelled, and its wait goes on to the end.
    """

    async def main() -> None:
        ev = asyncio.Event()
        inner = asyncio.create_task(ev.wait(), name="inner")

        async def timed_out() -> None:
            if how == "wait_for":
                await asyncio.wait_for(inner, 0.01)
            elif how == "wait_for-gather":
                await asyncio.wait_for(asyncio.gather(inner), 0.01)
            elif how == "timeout":
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                    await inner
            elif how == "timeout-gather":
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                    await asyncio.gather(inner)
            else:
                await asyncio.wait_for(asyncio.shield(inner), 0.01)

        with pytest.raises(asyncio.TimeoutError):
            await timed_out()
        if how == "wait_for-shield":
            ev.set()
            await inner
        assert inner.cancelled() == (how != "wait_for-shield")

    asyncio.run(main())
    (wait,) = traced.named(semconv.SPAN_EVENT_WAIT)
    assert wait[semconv.ATTR_TASK_NAME] == "inner"
    expected = semconv.OUTCOME_SET if how == "wait_for-shield" else semconv.OUTCOME_TIMEOUT
    assert wait[semconv.ATTR_OUTCOME] == expected


@pytest.mark.parametrize("how", [pytest.param("timeout", marks=needs_timeout), "wait_for"])
def test_a_failure_noting_a_timeout_never_reaches_the_program(
    traced: Captured, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noting a timeout runs in asyncio's timer callback (or inside ``wait_for``): a bug
    there is counted, and the timeout still fires as untraced."""

    def broken(task: Any, limit: int = 0) -> Any:
        raise RuntimeError("a bug in aiotrace")

    monkeypatch.setattr(_timeouts, "cancelled_with", broken)

    async def main() -> None:
        sem = asyncio.Semaphore(0)
        main_task = asyncio.current_task()
        assert main_task is not None
        # Were the timeout never to fire, this ends the wait (a CancelledError, not a hang).
        guard = asyncio.get_running_loop().call_later(5, main_task.cancel)

        async def timed_out() -> None:
            if how == "timeout":
                async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                    await sem.acquire()
            else:
                await asyncio.wait_for(sem.acquire(), 0.01)

        for _ in range(2):
            with pytest.raises(asyncio.TimeoutError):
                await timed_out()
        guard.cancel()

    asyncio.run(main())
    assert aiotrace.stats().internal_errors == 1  # once: then it stops trying
    assert len(traced.named(semconv.SPAN_SEMAPHORE_ACQUIRE)) == 2


def test_cancelling_the_waiter_of_wait_for_is_not_a_timeout(traced: Captured) -> None:
    """Cancelling the task that runs wait_for() gives "cancelled", not "timeout"."""

    async def main() -> None:
        ev = asyncio.Event()
        outer = asyncio.create_task(asyncio.wait_for(ev.wait(), 10))
        await asyncio.sleep(0.005)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(main())
    (wait,) = traced.named(semconv.SPAN_EVENT_WAIT)
    assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED


@needs_timeout
def test_asyncio_timeout_is_outcome_timeout(traced: Captured) -> None:
    """asyncio.timeout() expiring gives "timeout"; a later plain cancel gives "cancelled"."""

    async def main() -> None:
        sem = asyncio.Semaphore(0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                await sem.acquire()
        task = asyncio.create_task(sem.acquire())
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    waits = traced.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert [w[semconv.ATTR_OUTCOME] for w in waits] == [
        semconv.OUTCOME_TIMEOUT,
        semconv.OUTCOME_CANCELLED,
    ]


@pytest.mark.parametrize("how", [pytest.param("timeout", marks=needs_timeout), "wait_for"])
def test_a_timed_out_task_is_not_kept_alive(traced: Captured, how: str) -> None:
    """Noting which task a timeout cancelled must not keep that task alive after it ends.

    The note once held the ``Timeout`` itself, which refers to its task: an
    entry of a weak dictionary whose value keeps its own key alive. Every
    task that timed out stayed in memory for good, with its exception and
    every frame of its traceback (CPython's ``test_sslproto`` caught it on
    3.12: a connection's SSL context outlived the cancelled handshake).
    """

    class Payload:
        pass

    async def body(payload: Payload) -> None:
        sem = asyncio.Semaphore(0)
        if how == "timeout":
            async with asyncio.timeout(0.01):  # type: ignore[attr-defined]
                await sem.acquire()
        elif how == "wait_for":
            await asyncio.wait_for(sem.acquire(), 0.01)
        else:
            await asyncio.wait_for(asyncio.create_task(sem.acquire()), 0.01)
        del payload  # never reached: the frame holds it until the traceback goes

    async def main() -> tuple[weakref.ref[Payload], weakref.ref[asyncio.Task[None]]]:
        payload = Payload()
        task = asyncio.create_task(body(payload))
        refs = weakref.ref(payload), weakref.ref(task)
        del payload
        with pytest.raises(asyncio.TimeoutError):
            await task
        return refs

    payload, task = asyncio.run(main())
    gc.collect()
    assert task() is None
    assert payload() is None
    (wait,) = traced.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_TIMEOUT


def test_exception_in_critical_section_releases_and_propagates(traced: Captured) -> None:
    """An exception inside ``async with lock`` propagates unchanged and the hold ends."""

    async def main() -> asyncio.Lock:
        lock = asyncio.Lock()

        async def critical() -> None:
            async with lock:
                await asyncio.sleep(0.002)
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await critical()
        return lock

    lock = asyncio.run(main())
    assert not lock.locked()
    (hold,) = traced.named(semconv.SPAN_LOCK_HOLD)
    assert hold[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RAISED  # the body raised


def test_cancelled_condition_wait_reacquires_the_lock(traced: Captured) -> None:
    """A condition wait cancelled while waiting still re-acquires its lock, as asyncio does."""

    async def main() -> None:
        cond = asyncio.Condition()
        inside: list[bool] = []

        async def waiter() -> None:
            async with cond:
                try:
                    await cond.wait()
                finally:
                    inside.append(cond.locked())

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert inside == [True]
        assert not cond.locked()

    asyncio.run(main())
    (wait,) = traced.named(semconv.SPAN_CONDITION_WAIT)
    assert wait[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
