"""Two transfers take two account locks in opposite orders: a deadlock."""

import asyncio
import sys

REVERSED = sys.argv[1:] != ["--ordered"]


async def main() -> None:
    checking = asyncio.Lock()
    savings = asyncio.Lock()

    async def transfer(first: asyncio.Lock, second: asyncio.Lock) -> None:
        async with first:
            await asyncio.sleep(0.05)
            async with second:
                pass

    await asyncio.gather(
        asyncio.create_task(transfer(checking, savings), name="to-savings"),
        asyncio.create_task(
            transfer(savings, checking) if REVERSED else transfer(checking, savings),
            name="to-checking",
        ),
    )
    print("done")


asyncio.run(main())
