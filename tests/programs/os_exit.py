"""Leaves through ``os._exit()`` (or dies by SIGKILL) the way argv[1] says.

``main``: from the main thread, in a task; ``thread``: from another thread
while the main thread waits; ``fork``: a forked child does the work and
leaves through ``os._exit(0)`` (as a forking server's children do);
``killed-child``: a traced child process does the work, then is killed by
SIGKILL. Unflushed output must stay unflushed, as under python.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time


async def contend(tag: str) -> None:
    lock = asyncio.Lock()

    async def use() -> None:
        async with lock:
            await asyncio.sleep(0.01)

    await asyncio.gather(*(asyncio.create_task(use(), name=f"{tag}-{n}") for n in range(3)))


async def main(how: str) -> None:
    await contend(how)
    sys.stdout.write("never flushed\n")  # os._exit() drops it, traced or not
    if how == "main":
        os._exit(7)
    if how == "thread":
        threading.Thread(target=os._exit, args=(5,)).start()
        await asyncio.sleep(60)


how = sys.argv[1]
print("started", how, flush=True)
if how == "fork":
    pid = os.fork()
    if pid == 0:
        asyncio.run(contend("child"))
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("child exited", os.waitstatus_to_exitcode(status))
elif how == "killed-child":
    child = subprocess.Popen([sys.executable, __file__, "sigkill"])
    print("child exited", child.wait())
elif how == "sigkill":
    asyncio.run(contend("child"))
    time.sleep(0.6)  # the pipeline ships its records (every 0.2 s)
    os.kill(os.getpid(), signal.SIGKILL)
else:
    asyncio.run(main(how))
