"""Two transfers take two locks of the program's own (made of futures, as aiorwlock's
are) in opposite orders: aiotrace cannot tell who holds them, so the hang names the
``async with`` each stuck task is inside."""

import asyncio
from collections import deque


class FutureLock:
    def __init__(self) -> None:
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._held:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        if self._waiters:
            self._waiters.popleft().set_result(None)


accounts = FutureLock()
ledger = FutureLock()


async def transfer() -> None:
    async with accounts:
        await asyncio.sleep(0.05)
        async with ledger:
            pass


async def audit() -> None:
    async with ledger:
        await asyncio.sleep(0.05)
        async with accounts:
            pass


async def main() -> None:
    await asyncio.gather(transfer(), audit())
    print("done")


asyncio.run(main())
