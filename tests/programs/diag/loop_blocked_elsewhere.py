"""The loop blocked where its stack does not say: a C callback, the standard library."""

import asyncio
import sys
import threading
import time

BLOCKS = sys.argv[1:] != ["--awaits"]


async def main() -> None:
    loop = asyncio.get_running_loop()
    if BLOCKS:
        loop.call_soon(time.sleep, 0.3)  # a callback with no frame of its own
    await asyncio.sleep(0.4)

    async def wait_for_worker() -> None:
        done = threading.Event()
        threading.Timer(0.3, done.set).start()
        if BLOCKS:
            done.wait()  # threading's wait: the time is spent in threading.py
        else:
            await asyncio.to_thread(done.wait)

    await asyncio.create_task(wait_for_worker(), name="waiter")
    print("done")


asyncio.run(main())
