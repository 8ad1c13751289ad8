import asyncio
import sys

from opentelemetry import trace

import aiotrace


async def main() -> None:
    lock = asyncio.Lock()
    aiotrace.name(lock, "db")
    tracer = trace.get_tracer("app")

    async def holder() -> None:
        async with lock:
            await asyncio.sleep(0.05)

    async def waiter() -> None:
        await asyncio.sleep(0.01)
        with tracer.start_as_current_span("app.fetch"):
            async with lock:
                pass

    await asyncio.gather(
        asyncio.create_task(holder(), name="holder"),
        asyncio.create_task(waiter(), name="waiter"),
    )
    print("done", sys.argv[1:])


asyncio.run(main())
