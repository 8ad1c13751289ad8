"""A Condition's lock and a plain lock taken in opposite orders: a deadlock through a Condition."""

import asyncio
import sys

REVERSED = sys.argv[1:] != ["--ordered"]


async def main() -> None:
    jobs = asyncio.Condition()
    registry = asyncio.Lock()

    async def scheduler() -> None:
        async with jobs:
            await asyncio.sleep(0.05)
            async with registry:
                jobs.notify_all()

    async def auditor() -> None:
        if REVERSED:
            async with registry:
                await asyncio.sleep(0.05)
                async with jobs:
                    pass
        else:
            async with jobs:
                await asyncio.sleep(0.05)
                async with registry:
                    pass

    await asyncio.gather(
        asyncio.create_task(scheduler(), name="scheduler"),
        asyncio.create_task(auditor(), name="auditor"),
    )
    print("done")


asyncio.run(main())
