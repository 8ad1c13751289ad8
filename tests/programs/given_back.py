"""Permits given back by another task, with the holder lookup's time budget spent."""

import asyncio

from aiotrace.primitives import _base

# As if the program had spent the holder lookup's time budget: a permit given
# back by another task then goes without its holder's name.
_base.HOLDERS.share = 0.0
_base.HOLDERS.credit_ns = -1


async def main() -> None:
    sem = asyncio.Semaphore(3)
    done = asyncio.Event()

    async def holder() -> None:
        await sem.acquire()
        await done.wait()

    tasks = [asyncio.create_task(holder()) for _ in range(3)]
    await asyncio.sleep(0)
    for _ in tasks:
        sem.release()
    done.set()
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
