"""The program waits for a child process that deadlocks: it hangs, the culprit is the child.

The child runs ``deadlock_locks.py``. ``spawn``: as a new interpreter
(``subprocess``); ``fork``: in a Process of the fork context, forked from
inside the parent's running loop (which leaves the child deaf to a first
Ctrl-C, untraced too: it inherits the parent's ``asyncio.run`` SIGINT
handler). The program writes the child's pid to ``child.pid``.
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
    else:
        forked = multiprocessing.get_context("fork").Process(target=deadlock)
        forked.start()
        pid, wait = forked.pid, forked.join
    with open("child.pid", "w") as fh:
        fh.write(str(pid))
    return wait


async def main(how: str) -> None:
    await asyncio.to_thread(start(how))  # started from inside the running loop


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
