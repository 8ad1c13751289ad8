"""Replaces itself, as a re-executing launcher does: argv[1] is ``execv``, or ``execve``
with an environment copied from ``os.environ`` while traced."""

import asyncio
import os
import sys


async def contend() -> None:
    lock = asyncio.Lock()

    async def worker() -> None:
        async with lock:
            await asyncio.sleep(0.005)

    await asyncio.gather(worker(), worker())


asyncio.run(contend())
if sys.argv[1] == "again":
    print("the new program,", "traced" if "aiotrace" in sys.modules else "untraced")
    sys.exit(5)
try:
    os.execv("/nonexistent/program", ["program"])
except FileNotFoundError:
    print("a failed exec raises as untraced")
asyncio.run(contend())
print("replacing itself", flush=True)
again = [sys.executable, __file__, "again"]
if sys.argv[1] == "execve":
    os.execve(sys.executable, again, dict(os.environ))
else:
    os.execv(sys.executable, again)
