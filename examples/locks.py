"""Locks: several coroutines modify a shared resource under ``async with lock``.

Four customers buy from the same stock. Each reads the stock, "writes to the
database" (a slow await) and updates it, holding the lock throughout, so the
others wait. Run it traced::

    aiotrace run examples/locks.py

What to look for:

* four ``asyncio.Lock.hold`` spans, one per customer, each about 50 ms;
* three ``asyncio.Lock.acquire`` spans: the customers that had to wait, the
  last one about 150 ms. Each links (``handoff``) to the hold that let it
  in, and names that holder in ``aiotrace.blocker.task``/``.site``;
* in the report, ``stock_lock (locks.py:24)`` tops the list of primitives
  by time waited, and the longest holds point at the ``async with`` line:
  the culprit is the slow write made while holding the lock.
"""

import asyncio


async def main() -> None:
    stock_lock = asyncio.Lock()
    stock = {"apples": 10}

    async def buy(customer: str, amount: int) -> None:
        async with stock_lock:
            left = stock["apples"]
            await asyncio.sleep(0.05)  # a slow database write, made while holding the lock
            stock["apples"] = left - amount
            print(f"{customer} bought {amount}, {stock['apples']} left")

    await asyncio.gather(
        *(
            asyncio.create_task(buy(name, n), name=name)
            for name, n in (("ann", 1), ("bob", 2), ("cat", 3), ("dan", 1))
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
