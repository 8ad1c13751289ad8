"""Sets its own TracerProvider, as an instrumented service does at start-up.

Prints what its own exporter received and any warning OpenTelemetry logged:
under ``aiotrace run`` it must be what it is under ``python``.
"""

import asyncio
import json
import logging

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

warnings: list[str] = []


class Catch(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        warnings.append(record.getMessage())


logging.getLogger("opentelemetry").addHandler(Catch())
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("app")


async def main() -> None:
    lock = asyncio.Lock()

    async def work(n: int) -> None:
        with tracer.start_as_current_span(f"work-{n}"):
            async with lock:
                await asyncio.sleep(0.01)

    await asyncio.gather(work(1), work(2))


asyncio.run(main())
print(
    json.dumps(
        {
            "provider": trace.get_tracer_provider() is provider,
            "spans": sorted(s.name for s in exporter.get_finished_spans()),
            "warnings": warnings,
        }
    )
)
