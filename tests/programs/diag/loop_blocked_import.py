"""A coroutine imports a module whose top-level code is slow: the loop stops for the import.

The module is written to a temporary directory first, so the import is a
first import on every run.
"""

import asyncio
import os
import sys
import tempfile

SLOW_MODULE = "import time\n\ntime.sleep(0.3)  # the module's slow set-up\n"


async def main() -> None:
    async def load_plugins() -> None:
        import aiotrace_slow_plugin  # noqa: F401  # the first import, inside the loop

    async def heartbeat() -> None:
        for _ in range(5):
            await asyncio.sleep(0.05)

    await asyncio.gather(
        asyncio.create_task(load_plugins(), name="plugins"),
        asyncio.create_task(heartbeat(), name="heartbeat"),
    )
    print("done")


with tempfile.TemporaryDirectory() as where:
    with open(os.path.join(where, "aiotrace_slow_plugin.py"), "w") as fh:
        fh.write(SLOW_MODULE)
    sys.path.insert(0, where)
    asyncio.run(main())
