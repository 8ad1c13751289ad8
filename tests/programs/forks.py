"""Forks once its loop has run a while (aiotrace's threads are running by then).

``os.fork``: a bare fork, the child leaving through ``os._exit``;
``multiprocessing``: a Process of the fork context; ``terminate``: such a
Process, ended with SIGTERM (``Process.terminate()``, as ``Pool`` ends its
workers) while it waits. Under ``-X dev`` Python
3.12+ warns of a fork in a multi-threaded process: this program has no
thread of its own, so it must not be warned under ``aiotrace run`` either;
with ``thread`` it starts one first, and must be warned both ways. It
prints whether the warning filters are as they were, a loop turn after.
"""

import asyncio
import multiprocessing
import os
import sys
import threading
import warnings


def work() -> None:
    async def step() -> None:
        async with asyncio.Lock():
            await asyncio.sleep(0)

    asyncio.run(step())


def wait_for_the_end(ready: "multiprocessing.synchronize.Event") -> None:
    work()
    ready.set()
    threading.Event().wait()


async def main() -> None:
    lock = asyncio.Lock()
    async with lock:
        await asyncio.sleep(0.05)
    filters = list(warnings.filters)
    done = threading.Event()
    if sys.argv[2:] == ["thread"]:
        threading.Thread(target=done.wait).start()
    if sys.argv[1] == "os.fork":
        pid = os.fork()
        if pid == 0:
            work()
            os._exit(0)
        os.waitpid(pid, 0)  # noqa: ASYNC222  # a moment's block, as the program means it
    elif sys.argv[1] == "terminate":
        context = multiprocessing.get_context("fork")
        ready = context.Event()
        child = context.Process(target=wait_for_the_end, args=(ready,))
        child.start()
        ready.wait()  # a moment's block, as the program means it
        child.terminate()
        child.join()
        print("terminated:", child.exitcode)
    else:
        child = multiprocessing.get_context("fork").Process(target=work)
        child.start()
        child.join()
    done.set()
    await asyncio.sleep(0)
    print("forked", "filters as they were:", warnings.filters == filters)


asyncio.run(main())
