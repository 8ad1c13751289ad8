"""Primitives created, imported or acquired before instrument() are traced correctly."""

from __future__ import annotations

import asyncio
from asyncio import Lock  # imported before instrumentation on purpose

import pytest

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
