"""Nothing is lost silently: spans reach a default BatchSpanProcessor, or are counted."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import aiotrace


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


async def _storm(rounds: int) -> None:
    lock = asyncio.Lock()

    async def worker() -> None:
        for _ in range(rounds):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(10)))


def test_default_batch_processor_loses_nothing() -> None:
    """A lock storm through a default-sized BatchSpanProcessor delivers every span built."""
    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # default queue: 2048
    aiotrace.instrument(provider, min_wait=0, min_hold=0, flush_interval=5.0)
    try:
        asyncio.run(_storm(1000))  # 10,000 holds and about as many waits
        aiotrace.flush()
        provider.force_flush()
        stats = aiotrace.stats()
    finally:
        aiotrace.uninstrument()
        provider.shutdown()
    assert stats.spans_built > 15_000
    assert stats.spans_dropped == 0
    assert exporter.count == stats.spans_built


def test_bounded_buffer_counts_exactly_what_it_drops() -> None:
    """With max_buffered set, records beyond the bound are dropped and counted, not lost."""
    exporter = Counting()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))
    aiotrace.instrument(provider, min_wait=0, min_hold=0, flush_interval=3600, max_buffered=1000)
    try:
        asyncio.run(_storm(300))
        aiotrace.flush()
        provider.force_flush()
        stats = aiotrace.stats()
    finally:
        aiotrace.uninstrument()
        provider.shutdown()
    assert exporter.count == stats.spans_built
    assert stats.spans_dropped == stats.dropped_reasons["buffer full (max_buffered)"] > 0
    assert stats.spans_built + stats.spans_dropped >= 5000


def test_the_collector_reads_a_closed_process_to_the_end(tmp_path: Any) -> None:
    """A process that says goodbye and the collector told to finish at once (no linger):

    what the process sent but the collector had not read yet is still built
    and written. (Cutting it off lost a fifth of a storm's spans, uncounted.)
    """
    from aiotrace._collector import CollectorHandle, Shipping

    trace_file = tmp_path / "t.json"
    collector = CollectorHandle({"linger": 0, "trace_file": str(trace_file)})
    aiotrace.instrument(consumer=Shipping(collector.address), min_wait=0, min_hold=0, tasks=False)
    try:
        asyncio.run(_storm(2000))
        operations = aiotrace.stats().operations
    finally:
        aiotrace.uninstrument()  # everything shipped, connection closed
    report = collector.finish()
    assert report is not None
    stats = report["stats"]
    assert stats["spans_built"] > 35_000
    assert stats["spans_built"] == stats["spans_written"]
    assert stats["spans_dropped"] == 0
    assert not any("still running" in note for note in report.get("notes", []))
    assert operations > 0


def test_a_slow_consumer_slows_the_program_instead_of_growing_the_buffer() -> None:
    """Past four times the high-water mark, the recording thread waits for the pipeline.

    The consumer here takes 100 ms a batch (a collector or exporter that lags).
    The buffer must stay near its bound while every record still arrives.
    """
    import time

    from aiotrace._recorder import RECORDER

    seen: list[int] = []
    consumed = [0]

    class Slow:
        def consume(self, records: list[tuple[Any, ...]]) -> None:
            seen.append(len(RECORDER.buffer))
            consumed[0] += len(records)
            time.sleep(0.1)

        def flush(self, timeout: float) -> bool:
            return True

        def shutdown(self, timeout: float) -> None:
            pass

    saved = RECORDER.high_water
    RECORDER.high_water = 500
    try:
        aiotrace.instrument(consumer=Slow(), min_wait=0, min_hold=0, tasks=False)
        try:
            asyncio.run(_storm(1000))  # about 20,000 records
            recorded = aiotrace.stats().operations
        finally:
            aiotrace.uninstrument()
    finally:
        RECORDER.high_water = saved
    assert recorded > 0
    assert consumed[0] > 15_000
    assert max(seen) <= 4 * 500 + 10  # without waiting it reached most of the storm


def test_waiting_for_the_pipeline_is_not_reported_as_the_program_blocking_its_loop() -> None:
    """Back-pressure blocks the loop's thread inside aiotrace: not a finding against the user."""
    import time

    from aiotrace._recorder import RECORDER
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    class Slow:
        def consume(self, records: list[tuple[Any, ...]]) -> None:
            time.sleep(0.3)

        def flush(self, timeout: float) -> bool:
            return True

        def shutdown(self, timeout: float) -> None:
            pass

    saved = RECORDER.high_water
    RECORDER.high_water = 500
    diagnoser = Diagnoser(
        DiagnosisConfig(block_threshold=0.05, dump_signals=False, leaks_at_exit=False), None
    )
    try:
        aiotrace.instrument(consumer=Slow(), min_wait=0, min_hold=0, tasks=False)
        diagnoser.start()
        try:
            asyncio.run(_storm(1000))
        finally:
            diagnoser.finish(at_exit=False)
            aiotrace.uninstrument()
    finally:
        RECORDER.high_water = saved
    assert [f.kind for f in diagnoser.findings] == []
