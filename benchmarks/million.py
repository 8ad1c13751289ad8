"""A program that produces a given number of spans: ``python benchmarks/million.py [SPANS]``.

Ten tasks hand one lock around, each hold across an ``await``; traced with
``--min-wait 0 --min-hold 0`` every hand-off is a wait span and a hold span.
"""

import asyncio
import sys


async def main(spans: int) -> None:
    lock = asyncio.Lock()
    rounds = max(1, spans // 20)

    async def worker() -> None:
        for _ in range(rounds):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(10)))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000))
