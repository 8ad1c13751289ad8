"""In asyncio's debug mode, print the creation stack every kind of task and future records.

Each line: a label, then the stack as ``file:line name`` entries, file names
without their directories. ``waiter`` is a Lock's waiter future: untraced,
its stack ends in asyncio's code; traced, at the program's line. With an
argument ``instrument``, the program calls ``aiotrace.instrument()`` itself.
"""

import asyncio
import os
import sys

if sys.argv[1:] == ["instrument"]:
    import aiotrace

    aiotrace.instrument()


def show(label: str, obj: "asyncio.Future[object]") -> None:
    stack = obj._source_traceback  # type: ignore[attr-defined]
    frames = " | ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in stack)
    print(f"{label}: {frames}")


async def child() -> int:
    await asyncio.sleep(0)
    return 1


async def sleeper() -> None:
    await asyncio.sleep(10)


async def main() -> None:
    loop = asyncio.get_running_loop()
    show("run", asyncio.current_task())  # type: ignore[arg-type]
    task = asyncio.create_task(child())
    show("create_task", task)
    show("create_task repr", task)
    await task
    task = loop.create_task(child())
    show("loop.create_task", task)
    await task
    show("ensure_future", asyncio.ensure_future(child()))
    future = loop.create_future()
    show("create_future", future)
    future.cancel()
    show("Future()", asyncio.Future())
    if hasattr(asyncio, "TaskGroup"):
        async with asyncio.TaskGroup() as group:
            show("TaskGroup", group.create_task(child()))
    else:
        print("TaskGroup: (3.11+)")
    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0)
    show("sleep's future", task._fut_waiter)  # type: ignore[attr-defined]
    print("repr created at:", repr(task).rsplit("created at ", 1)[1])
    task.cancel()
    lock = asyncio.Lock()
    await lock.acquire()
    waiting = asyncio.create_task(lock.acquire())
    await asyncio.sleep(0)
    show("waiter", lock._waiters[0])  # type: ignore[attr-defined]
    lock.release()
    await waiting


asyncio.run(main(), debug=True)
