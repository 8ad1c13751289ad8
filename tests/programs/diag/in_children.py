"""lock_order.py's inversion and a blocked loop, in a child process of the program.

``spawn``: a new interpreter (``subprocess``); ``fork``: a Process of the
fork context, forked from inside the parent's running loop. ``--fixed``:
the child takes the locks in one order and awaits instead of blocking.
"""

import asyncio
import multiprocessing
import subprocess
import sys
import time

import lock_order


def child(fixed: bool) -> None:
    async def main() -> None:
        await lock_order.main(inverted=not fixed)

        async def compress() -> None:
            if fixed:
                await asyncio.sleep(0.3)
            else:
                time.sleep(0.3)  # the block under test

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
