"""A coroutine calls time.sleep(): the whole event loop stops for it.

``--awaits``: the twin, which awaits ``asyncio.sleep()`` instead.
``--imports``: the coroutine imports a module whose top-level code sleeps
(written to a temporary directory first, so that the import is a first
import on every run): the loop stops for the import.
"""

import asyncio
import os
import sys
import tempfile
import time

MODE = sys.argv[1] if sys.argv[1:] else "--blocks"
SLOW_MODULE = "import time\n\ntime.sleep(0.25)  # the module's slow set-up\n"


async def main() -> None:
    async def compress() -> None:
        if MODE == "--awaits":
            await asyncio.sleep(0.3)
        elif MODE == "--imports":
            import aiotrace_slow_plugin  # noqa: F401  # the first import, inside the loop
        else:
            time.sleep(0.3)  # blocks every task

    async def heartbeat() -> None:
        for _ in range(5):
            await asyncio.sleep(0.05)

    await asyncio.gather(
        asyncio.create_task(compress(), name="compress"),
        asyncio.create_task(heartbeat(), name="heartbeat"),
    )
    print("done")


with tempfile.TemporaryDirectory() as where:
    with open(os.path.join(where, "aiotrace_slow_plugin.py"), "w") as fh:
        fh.write(SLOW_MODULE)
    sys.path.insert(0, where)
    asyncio.run(main())
