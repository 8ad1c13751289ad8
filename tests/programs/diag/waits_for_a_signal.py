"""A service that waits for a signal (loop.add_signal_handler): not a hang.

Nothing in the program can wake it, but a signal can: here another
process sends SIGUSR2 a little later. With ``--no-handler`` nothing can
wake it (the signal is ignored): a hang, so the program must not wait long.
"""

import asyncio
import os
import signal
import subprocess
import sys

HANDLED = sys.argv[1:] != ["--no-handler"]


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if HANDLED:
        loop.add_signal_handler(signal.SIGUSR2, stop.set)
    else:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    await stop.wait()  # until SIGUSR2
    print("done")


subprocess.Popen(["sh", "-c", f"sleep 1.5; kill -USR2 {os.getpid()}"])
asyncio.run(main())
