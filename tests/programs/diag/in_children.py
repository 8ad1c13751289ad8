"""The lock-order inversion and the blocked loop of their own programs, in a child process.

``spawn``: a new interpreter (``subprocess``); ``fork``: a Process of the
fork context, forked from inside the parent's running loop. ``--fixed``:
the child takes the locks in one order and awaits instead of blocking.
"""

import asyncio
import multiprocessing
import subprocess
import sys
import time


def child(fixed: bool) -> None:
    async def main() -> None:
        users_lock = asyncio.Lock()
        orders_lock = asyncio.Lock()

        async def rename_user() -> None:
            async with users_lock:
                async with orders_lock:
                    await asyncio.sleep(0)

        async def cancel_order() -> None:
            first, then = (users_lock, orders_lock) if fixed else (orders_lock, users_lock)
            async with first:
                async with then:
                    await asyncio.sleep(0)

        async def compress() -> None:
            if fixed:
                await asyncio.sleep(0.3)
            else:
                time.sleep(0.3)  # the block under test

        await asyncio.create_task(rename_user(), name="rename-user")
        await asyncio.create_task(cancel_order(), name="cancel-order")
        await asyncio.create_task(compress(), name="compress")

    asyncio.run(main())


async def parent(how: str, fixed: bool) -> None:
    flags = ["--fixed"] if fixed else []
    if how == "spawn":
        run = subprocess.run
        await asyncio.to_thread(run, [sys.executable, __file__, "child", *flags], check=True)
    else:
        process = multiprocessing.get_context("fork").Process(target=child, args=(fixed,))
        process.start()
        await asyncio.to_thread(process.join)
        assert process.exitcode == 0


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(sys.argv[2:] == ["--fixed"])
    else:
        asyncio.run(parent(sys.argv[1], sys.argv[2:] == ["--fixed"]))
        print("done")
