"""Stuck until killed: holders wait for an event nobody sets, others queue for what they hold.

What a CI timeout's SIGTERM finds. Under ``aiotrace run`` the waits and the
hold that never ended must still be in the trace and the report.
"""

import asyncio


async def main() -> None:
    lock = asyncio.Lock()
    pool = asyncio.Semaphore(1)
    configured = asyncio.Event()

    async def holder() -> None:
        async with lock:  # HOLD
            await configured.wait()  # EVENT

    async def waiter() -> None:
        await asyncio.sleep(0.05)
        async with lock:  # QUEUE
            pass

    async def worker() -> None:
        async with pool:  # PERMIT
            await configured.wait()

    async def client() -> None:
        await asyncio.sleep(0.05)
        async with pool:  # CLIENT
            pass

    async def ready() -> None:
        await asyncio.sleep(0.1)
        print("ready", flush=True)
        await asyncio.sleep(60)

    await asyncio.gather(
        asyncio.create_task(holder(), name="holder"),
        asyncio.create_task(waiter(), name="waiter"),
        asyncio.create_task(worker(), name="worker"),
        asyncio.create_task(client(), name="client"),
        asyncio.create_task(ready(), name="clock"),
    )


asyncio.run(main())
