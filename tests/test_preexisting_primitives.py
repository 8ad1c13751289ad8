"""Primitives created, imported or acquired before instrument() are traced correctly."""

from __future__ import annotations

import asyncio
from asyncio import Lock  # imported before instrumentation on purpose
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.testing import capture_spans

EARLY_LOCK = asyncio.Lock()
EARLY_EVENT = asyncio.Event()


@pytest.mark.pristine
def test_primitive_created_before_instrument_is_traced() -> None:
    """A lock made before instrument() gets spans, named as pre-existing."""

    async def main() -> None:
        async def hold() -> None:
            async with EARLY_LOCK:
                await asyncio.sleep(0.005)

        await asyncio.gather(hold(), hold())

    with capture_spans(min_wait=0, min_hold=0) as captured:
        asyncio.run(main())
        spans = captured.primitive_spans
    assert sorted(s.name for s in spans) == [
        semconv.SPAN_LOCK_ACQUIRE,
        semconv.SPAN_LOCK_HOLD,
        semconv.SPAN_LOCK_HOLD,
    ]
    for span in spans:
        assert span[semconv.ATTR_PRIMITIVE_SITE] == semconv.UNKNOWN_SITE
        assert span[semconv.ATTR_PRIMITIVE_NAME].startswith("Lock #")


def test_class_imported_before_instrument_is_traced() -> None:
    """``from asyncio import Lock`` done earlier still gives traced locks."""

    async def main() -> None:
        lock = Lock()
        async with lock:
            await asyncio.sleep(0.002)

    with capture_spans(min_hold=0) as captured:
        asyncio.run(main())
        assert [s.name for s in captured.primitive_spans] == [semconv.SPAN_LOCK_HOLD]


@pytest.mark.pristine
def test_lock_held_across_instrument_has_no_bogus_hold() -> None:
    """A hold that began before instrumentation is not reported with a made-up start."""

    async def main() -> None:
        lock = asyncio.Lock()
        await lock.acquire()
        with capture_spans(min_hold=0) as captured:
            lock.release()
            assert captured.primitive_spans == []
            assert not lock.locked()

    asyncio.run(main())


def test_event_made_early_wakes_waiters() -> None:
    """An Event made before instrument() wakes its waiters and links them to the setter."""

    async def main() -> None:
        waiter = asyncio.create_task(EARLY_EVENT.wait())
        await asyncio.sleep(0.002)
        EARLY_EVENT.set()
        await waiter

    with capture_spans(min_wait=0) as captured:
        asyncio.run(main())
        names = sorted(s.name for s in captured.primitive_spans)
        setters = captured.events(semconv.SPAN_EVENT_SET)
    assert names == [semconv.SPAN_EVENT_WAIT]
    assert len(setters) == 1


@pytest.mark.pristine
def test_every_path_of_early_locks_semaphores_and_events_is_traced() -> None:
    """Instances made before instrument() lack aiotrace's attributes until first used.

    Each patched method must give them what they lack, on whichever path
    touches them first (fast, contended, explicit release, set), and trace
    them without an internal error.
    """
    loop = asyncio.new_event_loop()
    made = {
        "fast": asyncio.Lock(),
        "contended": asyncio.Lock(),
        "explicit": asyncio.Lock(),
        "sem_fast": asyncio.Semaphore(1),
        "sem_contended": asyncio.BoundedSemaphore(1),
        "sem_release": asyncio.Semaphore(0),
        "set_event": asyncio.Event(),
        "waited_event": asyncio.Event(),
    }
    made["set_event"].set()

    async def hold(prim: Any) -> None:
        async with prim:
            await asyncio.sleep(0.003)

    async def main() -> None:
        async with made["fast"]:
            pass
        await asyncio.gather(hold(made["contended"]), hold(made["contended"]))
        await made["explicit"].acquire()
        made["explicit"].release()
        async with made["sem_fast"]:
            pass
        await asyncio.gather(hold(made["sem_contended"]), hold(made["sem_contended"]))
        made["sem_release"].release()
        assert await made["set_event"].wait()
        waiter = asyncio.create_task(made["waited_event"].wait())
        await asyncio.sleep(0.003)
        made["waited_event"].set()
        assert await waiter

    with capture_spans(min_wait=0, min_hold=0) as captured:
        loop.run_until_complete(main())
        names = [s.name for s in captured.primitive_spans]
        assert aiotrace.stats().internal_errors == 0
    loop.close()
    assert names.count(semconv.SPAN_LOCK_ACQUIRE) == 1
    assert names.count(semconv.SPAN_LOCK_HOLD) == 4  # fast, 2 contended, explicit
    assert names.count(semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE) == 1
    assert names.count(semconv.SPAN_SEMAPHORE_HOLD) == 1
    assert names.count(semconv.SPAN_BOUNDED_SEMAPHORE_HOLD) == 2
    assert names.count(semconv.SPAN_EVENT_WAIT) == 1


def test_hot_classes_carry_no_class_level_aiotrace_attributes() -> None:
    """Lock, Semaphore and Event keep aiotrace's state on instances only.

    From Python 3.12, a class attribute of the same name stops CPython
    specialising every access to the instance attribute: the uncontended
    ``async with lock`` cost 1.64x bare that way, 1.34x without.
    """
    with capture_spans():
        for cls in (asyncio.Lock, asyncio.Semaphore, asyncio.BoundedSemaphore, asyncio.Event):
            assert [name for name in vars(cls) if name.startswith("_aiotrace")] == []
        assert "_aiotrace_t0" in vars(asyncio.Lock())
