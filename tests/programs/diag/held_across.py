"""A cache lock held across a slow fetch, and a connection pool's permits held across
a query: each keeps the others waiting at one line. ``--outside`` fetches before
taking the lock, and queries one at a time: nobody waits while anything is held."""

import asyncio
import sys


class Cache:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.data: dict[int, int] = {}

    async def get(self, key: int, outside: bool) -> int:
        if outside:
            value = await fetch(key)
            async with self.lock:
                return self.data.setdefault(key, value)
        async with self.lock:
            if key not in self.data:
                self.data[key] = await fetch(key)  # held across the fetch
            return self.data[key]


async def fetch(key: int) -> int:
    await asyncio.sleep(0.03)
    return key * 2


async def query(pool: asyncio.Semaphore, i: int) -> int:
    async with pool:
        await asyncio.sleep(0.02)  # held across the query
        return i


async def main(outside: bool) -> None:
    cache = Cache()
    pool = asyncio.Semaphore(2)
    await asyncio.gather(*(cache.get(i % 4, outside) for i in range(12)))
    if outside:
        for i in range(3):
            await query(pool, i)
    else:
        await asyncio.gather(*(query(pool, i) for i in range(8)))
    print("done")


if __name__ == "__main__":
    asyncio.run(main("--outside" in sys.argv[1:]))
