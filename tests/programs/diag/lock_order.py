"""Two code paths take the same two locks in opposite orders (never at the same time here)."""

import asyncio
import sys


async def main(inverted: bool) -> None:
    users_lock = asyncio.Lock()
    orders_lock = asyncio.Lock()

    async def rename_user() -> None:
        async with users_lock:
            async with orders_lock:
                await asyncio.sleep(0)

    async def cancel_order() -> None:
        if inverted:
            async with orders_lock:
                async with users_lock:
                    await asyncio.sleep(0)
        else:
            async with users_lock:
                async with orders_lock:
                    await asyncio.sleep(0)

    await asyncio.create_task(rename_user(), name="rename-user")
    await asyncio.create_task(cancel_order(), name="cancel-order")


if __name__ == "__main__":
    asyncio.run(main(inverted=sys.argv[1:] != ["--consistent"]))
    print("done")
