"""The program waits for a child process that deadlocks: it hangs, the culprit is the child.

The child runs ``deadlock_locks.py``. ``spawn``: as a new interpreter
(``subprocess``); ``fork``: in a Process of the fork context, forked from
inside the parent's running loop (which on 3.11+ leaves the child deaf to
a first Ctrl-C, untraced too: it inherits the parent's ``asyncio.run``
SIGINT handler); ``daemon``: as a new interpreter in a session of its own, which
Ctrl-C in the terminal would not reach, while the program sleeps instead
of waiting for it; ``sleeper``: a child that never imports asyncio, so is
not traced, and sleeps for a minute. The program writes the child's pid
to ``child.pid``.
"""

import asyncio
import multiprocessing
import os
import runpy
import subprocess
import sys
from collections.abc import Callable

DEADLOCK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deadlock_locks.py")


def deadlock() -> None:
    runpy.run_path(DEADLOCK, run_name="__main__")


def start(how: str) -> Callable[[], object]:
    """The child started, its pid written; returns what waits for it."""
    if how == "spawn":
        process = subprocess.Popen([sys.executable, DEADLOCK])
        pid, wait = process.pid, process.wait
    elif how == "sleeper":
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        pid, wait = process.pid, process.wait
    elif how == "daemon":  # with its own output, as a daemon has
        process = subprocess.Popen(
            [sys.executable, DEADLOCK],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid, wait = process.pid, process.wait
    else:
        forked = multiprocessing.get_context("fork").Process(target=deadlock)
        forked.start()
        pid, wait = forked.pid, forked.join
    with open("child.pid", "w") as fh:
        fh.write(str(pid))
    return wait


async def main(how: str) -> None:
    wait = start(how)  # started from inside the running loop
    if how == "daemon":
        await asyncio.sleep(3600)  # a daemon is not waited for
    await asyncio.to_thread(wait)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
