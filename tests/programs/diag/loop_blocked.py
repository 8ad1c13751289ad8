"""A coroutine calls time.sleep(): the whole event loop stops for it."""

import asyncio
import sys
import time

BLOCKS = sys.argv[1:] != ["--awaits"]


async def main() -> None:
    async def compress() -> None:
        if BLOCKS:
            time.sleep(0.3)  # blocks every task
        else:
            await asyncio.sleep(0.3)

    async def heartbeat() -> None:
        for _ in range(5):
            await asyncio.sleep(0.05)

    await asyncio.gather(
        asyncio.create_task(compress(), name="compress"),
        asyncio.create_task(heartbeat(), name="heartbeat"),
    )
    print("done")


asyncio.run(main())
