"""The only consumer of a bounded queue dies of an exception nobody reads: its producer
waits on the full queue for ever.

With ``--retrieved`` a supervisor reads the consumer's exception (and
does nothing about it): the program hangs all the same, but the failure
was seen, so the hang does not point at it.
"""

import asyncio
import sys

RETRIEVED = sys.argv[1:] == ["--retrieved"]


async def consume(queue: "asyncio.Queue[int]") -> None:
    while True:
        item = await queue.get()
        if item == 5:
            raise ValueError(f"cannot handle item {item}")
        queue.task_done()


async def main() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=3)
    consumer = asyncio.create_task(consume(queue), name="consumer")
    if RETRIEVED:

        async def supervise() -> None:
            await asyncio.wait([consumer])
            print("consumer failed:", consumer.exception())

        asyncio.create_task(supervise(), name="supervisor")
    for item in range(100):
        await queue.put(item)
    await consumer


asyncio.run(main())
