"""Leaves the way argv[1] says: ``code N``, ``message``, ``raise``, ``return``, ``nested``."""

import asyncio
import sys


async def work(how: str) -> None:
    lock = asyncio.Lock()
    async with lock:
        await asyncio.sleep(0.002)
        if how == "raise":
            raise ValueError("the program failed")
        if how == "nested":
            try:
                {}["missing"]
            except KeyError as exc:
                raise RuntimeError("while handling") from exc


how = sys.argv[1]
print("started", how)
asyncio.run(work(how))
if how == "code":
    sys.exit(int(sys.argv[2]))
if how == "message":
    sys.exit("a message for the user")
print("finished")
