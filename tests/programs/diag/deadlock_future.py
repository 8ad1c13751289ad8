"""A task waits for a lock held by the task that awaits the future only the first will resolve."""

import asyncio
import sys

REVERSED = sys.argv[1:] != ["--ordered"]


async def main() -> None:
    config_lock = asyncio.Lock()
    box: list[asyncio.Future[int]] = []

    async def loader() -> None:
        loaded = asyncio.get_running_loop().create_future()
        box.append(loaded)
        if not REVERSED:
            loaded.set_result(1)
        await asyncio.sleep(0.02)
        async with config_lock:
            if not loaded.done():
                loaded.set_result(1)

    async def reader() -> None:
        await asyncio.sleep(0.01)
        async with config_lock:
            await box[0]

    await asyncio.gather(
        asyncio.create_task(loader(), name="loader"),
        asyncio.create_task(reader(), name="reader"),
    )
    print("done")


asyncio.run(main())
