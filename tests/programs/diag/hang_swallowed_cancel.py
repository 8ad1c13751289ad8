"""A TaskGroup's body fails; its other task catches the cancellation the group sends and
goes on waiting: the group waits for it for ever. A hang's interrupt cannot end it either
(the group, already cancelling its tasks, does not cancel them again)."""

import asyncio
import contextlib


async def main() -> None:
    stop = asyncio.Event()

    async def worker() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):  # every time: the bug
                await stop.wait()

    async with asyncio.TaskGroup() as group:
        group.create_task(worker(), name="worker")
        await asyncio.sleep(0.01)
        raise RuntimeError("shutting down")


asyncio.run(main())
