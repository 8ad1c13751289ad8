"""The main task waits for an event that its only setter never sets: a hang without a cycle."""

import asyncio
import sys

FORGETS = sys.argv[1:] != ["--sets"]


async def main() -> None:
    ready = asyncio.Event()

    async def loader() -> None:
        await asyncio.sleep(0.01)
        if not FORGETS:
            ready.set()

    asyncio.create_task(loader(), name="loader")
    await ready.wait()
    print("done")


asyncio.run(main())
