"""Does to sys.stderr what argv[1] says: ``close`` it, or ``capture`` it for good.

Either way it first takes two locks in both orders: a lock-order finding,
which ``aiotrace run`` prints at once.
"""

import asyncio
import io
import sys


async def main() -> None:
    users = asyncio.Lock()
    orders = asyncio.Lock()
    async with users, orders:
        pass
    async with orders, users:
        pass


how = sys.argv[1]
captured = io.StringIO()
if how == "capture":
    sys.stderr = captured  # the program's own business from here on
asyncio.run(main())
print("captured:", repr(captured.getvalue()))
if how == "close":
    sys.stderr.close()
