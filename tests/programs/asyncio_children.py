"""Event loops in threads, and child processes that import asyncio late or never.

How a traced run follows each (see ``tests/test_cli.py``). Modes:

* ``threads``: an event loop in a thread of this process, then the same in
  a child (``thread-child``), whose first import of asyncio is in that thread;
* ``late``: a child that never imports asyncio (``tool``: prints which
  aiotrace and asyncio modules it has), then one that imports asyncio after
  0.3 s (``late-child``: prints the type of asyncio's loader, in the module
  and its spec, and of each finder on ``sys.meta_path``).
"""

import json
import subprocess
import sys
import threading
import time


def contend() -> None:
    """Two tasks take turns at a lock; asyncio is imported here, not before."""
    import asyncio

    async def main() -> None:
        lock = asyncio.Lock()

        async def hold() -> None:
            async with lock:
                await asyncio.sleep(0.02)

        await asyncio.gather(hold(), hold())

    asyncio.run(main())


def in_a_thread() -> None:
    thread = threading.Thread(target=contend)
    thread.start()
    thread.join()


def child(mode: str) -> str:
    return subprocess.run(
        [sys.executable, __file__, mode], capture_output=True, text=True, check=True
    ).stdout


mode = sys.argv[1]
if mode == "threads":
    in_a_thread()
    print(child("thread-child"), end="")
elif mode == "thread-child":
    in_a_thread()
elif mode == "late":
    print(child("tool"), end="")
    print(child("late-child"), end="")
elif mode == "tool":
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("aiotrace", "asyncio"))))
elif mode == "late-child":
    time.sleep(0.3)
    contend()
    asyncio = sys.modules["asyncio"]
    loaders = [type(asyncio.__loader__).__name__, type(asyncio.__spec__.loader).__name__]
    print(json.dumps([*loaders, [type(finder).__name__ for finder in sys.meta_path]]))
