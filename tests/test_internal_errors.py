"""A bug in aiotrace's bookkeeping never reaches the traced program."""

from __future__ import annotations

import asyncio
import logging

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace.primitives import locks
from aiotrace.testing import capture_spans


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
    assert records[0].exc_info is not None
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
