"""Workers that leave a lock held, a permit taken and a future unresolved when they finish."""

import asyncio
import sys

LEAKS = sys.argv[1:] != ["--tidy"]


async def main() -> None:
    cache_lock = asyncio.Lock()
    pool = asyncio.Semaphore(2)
    pending_reply: list[asyncio.Future[str]] = []

    async def refresh() -> None:
        await cache_lock.acquire()
        if not LEAKS:
            cache_lock.release()

    async def query() -> None:
        await pool.acquire()
        if not LEAKS:
            pool.release()

    async def request() -> None:
        reply = asyncio.get_running_loop().create_future()
        pending_reply.append(reply)
        if not LEAKS:
            reply.set_result("ok")

    for coro, name in ((refresh(), "refresh"), (query(), "query"), (request(), "request")):
        await asyncio.create_task(coro, name=name)
    print("done")


asyncio.run(main())
