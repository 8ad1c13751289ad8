"""Holds a lock until interrupted (Ctrl-C): the hold must still reach the trace."""

import asyncio


async def main() -> None:
    lock = asyncio.Lock()
    async with lock:
        print("ready", flush=True)
        await asyncio.sleep(60)


asyncio.run(main())
