"""Code run in a subinterpreter, from a thread the loop waits for.

The loop has nothing else to do, so the watchdog asks what other threads
are doing: on 3.12 and 3.13, asking with ``sys._current_frames()`` while
a subinterpreter runs corrupts memory and aborts the process.
"""

import asyncio
import sys

try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # type: ignore[no-redef]  # 3.12

WORK = """
import time
for _ in range(150):
    import json, pickle, re
    time.sleep(0.01)
"""


async def main() -> None:
    interp = interpreters.create()
    try:
        await asyncio.to_thread(interpreters.run_string, interp, WORK)
    finally:
        interpreters.destroy(interp)
    print("done")


asyncio.run(main())
sys.exit(0)
