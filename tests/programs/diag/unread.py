"""Background work that fails, its exception read by nothing: one task dropped (collected),
one kept in a list to the end, a future kept in a dict, one given an exception raised
elsewhere. The twin (``--read``) reads them."""

import asyncio
import sys

READ = sys.argv[1:] == ["--read"]


async def refresh() -> None:
    await asyncio.sleep(0)
    raise ConnectionError("backend down")  # REFRESH_RAISES


async def audit() -> None:
    raise PermissionError("audit log is read-only")  # AUDIT_RAISES


def parse(reply: asyncio.Future[int], text: str) -> None:
    try:
        reply.set_result(int(text))  # PARSE_RAISES
    except ValueError as exc:
        reply.set_exception(exc)  # PARSE_SETS


def note(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        print("read:", repr(task.exception()))


async def main() -> None:
    dropped = asyncio.create_task(refresh(), name="refresher")
    if READ:
        dropped.add_done_callback(note)
    del dropped  # fire and forget: collected as soon as it ends
    kept = [asyncio.create_task(audit(), name="auditor")]
    replies = {"r1": asyncio.get_running_loop().create_future()}
    replies["r1"].set_exception(TimeoutError("no reply"))  # REPLY_SETS
    parsed = asyncio.get_running_loop().create_future()
    # From a callback: the exception's traceback then holds parse's frame, whose own
    # reference cycle keeps `parsed` (to a collection, or the end), not main's frame.
    asyncio.get_running_loop().call_soon(parse, parsed, "twelve")
    await asyncio.sleep(0.05)
    if READ:
        await asyncio.gather(*kept, return_exceptions=True)
        replies["r1"].exception()
        parsed.exception()
    print("done")


asyncio.run(main())
