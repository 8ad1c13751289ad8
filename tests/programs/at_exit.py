"""Cleans up in ``atexit`` handlers, as programs do; leaves the way argv[1] says:
``return``, ``exit`` (status 4) or ``raise``."""

import asyncio
import atexit
import sys


async def close_pool() -> None:
    pool_lock = asyncio.Lock()

    async def closer() -> None:
        async with pool_lock:
            await asyncio.sleep(0.002)

    await asyncio.gather(*(asyncio.create_task(closer(), name=f"closer-{i}") for i in range(2)))


def clean_up() -> None:
    asyncio.run(close_pool())
    print("cleaned up", file=sys.stderr)


def with_arguments(*args: object, **kwargs: object) -> None:
    print("with", args, kwargs)


def fails() -> None:
    raise RuntimeError("a handler that fails")


def never() -> None:
    print("never run")


def registers_another() -> None:
    atexit.register(never)  # while the handlers run: as in Python, not run


atexit.register(clean_up)
atexit.register(with_arguments, 1, key="value")
atexit.register(fails)
atexit.register(never)
atexit.unregister(never)
atexit.register(registers_another)
print("main done")
if sys.argv[1] == "exit":
    sys.exit(4)
if sys.argv[1] == "raise":
    raise ValueError("the program failed")
