"""The program waits for a child process that deadlocks: it hangs, the culprit is the child.

``spawn``: the child is a new interpreter (``subprocess``); ``fork``: a
Process of the fork context, forked from inside the parent's running loop
(which leaves the child deaf to a first Ctrl-C, untraced too: it inherits
the parent's ``asyncio.run`` SIGINT handler). The child writes its pid to
``child.pid``.
"""

import asyncio
import multiprocessing
import os
import subprocess
import sys


async def transfers() -> None:
    checking = asyncio.Lock()
    savings = asyncio.Lock()

    async def transfer(first: asyncio.Lock, second: asyncio.Lock) -> None:
        async with first:
            await asyncio.sleep(0.05)
            async with second:
                pass

    await asyncio.gather(
        asyncio.create_task(transfer(checking, savings), name="to-savings"),
        asyncio.create_task(transfer(savings, checking), name="to-checking"),
    )


def child() -> None:
    with open("child.pid", "w") as fh:
        fh.write(str(os.getpid()))
    asyncio.run(transfers())


async def parent(how: str) -> None:
    if how == "spawn":
        await asyncio.to_thread(subprocess.run, [sys.executable, __file__, "child"])
    else:
        process = multiprocessing.get_context("fork").Process(target=child)
        process.start()
        await asyncio.to_thread(process.join)


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child()
    else:
        asyncio.run(parent(sys.argv[1]))
