"""No leak: a program that makes many short-lived tasks and futures keeps memory bounded."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import aiotrace
from aiotrace import semconv
from aiotrace._context import TASK_SPANS
from aiotrace.primitives.tasks import PENDING

BATCH = 2500


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: object) -> SpanExportResult:
        self.count += len(spans)  # type: ignore[arg-type]
        return SpanExportResult.SUCCESS


async def _batch() -> None:
    loop = asyncio.get_running_loop()

    async def short_lived(fut: asyncio.Future[int]) -> None:
        fut.set_result(1)

    for _ in range(BATCH):
        fut = loop.create_future()
        await asyncio.create_task(short_lived(fut))
        await fut


# tracemalloc counts every thread's memory: under a traced session (this suite
# run with --aiotrace) it would count the session's own buffers too.
@pytest.mark.pristine
def test_memory_is_bounded_over_many_tasks_and_futures() -> None:
    """After warm-up, more batches of tasks and futures add (almost) no memory."""
    exporter = Discard()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    aiotrace.instrument(provider)
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(8):
            asyncio.run(_batch())
            aiotrace.flush()
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])
        assert not TASK_SPANS
        assert not PENDING
    finally:
        tracemalloc.stop()
        aiotrace.uninstrument()
    assert exporter.count >= 8 * BATCH * 2  # a task span and a future span each
    # The pipeline remembers the last 20,000 span ids (for links), which the
    # first four batches of 5,000 spans fill; after that memory is flat: three
    # more batches, 7,500 tasks and 7,500 futures, add well under 10 bytes each.
    warmed = sizes[4]
    growth = sizes[-1] - warmed
    assert growth < 100_000, (sizes, growth)


class KeepTasks(SpanExporter):
    """Keeps task spans, drops the others (the future spans would count as growth)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.spans.extend(s for s in spans if s.name == semconv.SPAN_TASK)
        return SpanExportResult.SUCCESS


@pytest.mark.pristine
def test_a_long_lived_task_resolving_futures_keeps_a_bounded_span() -> None:
    """A connection's reader task resolves every request's future: each resolution is an
    event on the reader's span, which lives as long as the connection. The span keeps the
    latest 128 events (the SDK's span limit) and counts the others as dropped."""
    exporter = KeepTasks()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    aiotrace.instrument(provider)
    sizes = []

    async def reader() -> None:
        loop = asyncio.get_running_loop()
        for round_ in range(12):
            for n in range(BATCH):
                loop.create_future().set_result(round_ * BATCH + n)
            aiotrace.flush()
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])

    async def main() -> None:
        await asyncio.create_task(reader(), name="reader")

    tracemalloc.start()
    try:
        asyncio.run(main())
    finally:
        tracemalloc.stop()
        aiotrace.flush()
        aiotrace.uninstrument()
    # The pipeline remembers the last 20,000 span ids (see above): flat after that.
    growth = sizes[-1] - sizes[8]
    assert growth < 100_000, (sizes, growth)  # 7,500 resolutions kept: about 1.5 MB
    (span,) = [s for s in exporter.spans if s.attributes.get(semconv.ATTR_TASK_NAME) == "reader"]
    assert len(span.events) == 128
    assert span.dropped_events == 12 * BATCH - 128
    assert span.events[-1].name == semconv.SPAN_FUTURE_RESOLVE  # the latest are kept


# Not a timing: tracemalloc counts bytes, the same on every run of a Python.
@pytest.mark.pristine
@pytest.mark.parametrize("workload", ["lock", "semaphore", "event"])
def test_a_buffered_record_costs_at_most_200_bytes(workload: str) -> None:
    """Under back-pressure records wait in the buffer: each spanned operation costs <= 200 B.

    (Before records shared their sites and attributes, a lock hand-off's cost 514.)
    """
    from benchmarks.delivery import buffered_bytes_per_operation

    assert buffered_bytes_per_operation(workload, 20_000) <= 200
