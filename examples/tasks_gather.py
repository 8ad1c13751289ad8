"""Tasks and gather: fan out, fan in, and what happens when one fails.

``main`` fetches three pages concurrently with ``asyncio.gather``; one of
them raises. Run it traced::

    aiotrace run examples/tasks_gather.py

What to look for:

* one ``asyncio.Task`` span per coroutine gather() turned into a task, each a
  child of ``main``'s task span, and everything they did (the sleeps, the
  semaphore) nested under them;
* the failing page's task has ``aiotrace.outcome = raised``, an error
  status and an ``exception`` event with the traceback; the others are
  ``completed``;
* the report's Tasks line counts them by outcome.
"""

import asyncio


async def fetch(page: int, connections: asyncio.Semaphore) -> str:
    async with connections:
        await asyncio.sleep(0.02 * page)
        if page == 2:
            raise ConnectionError(f"page {page}: connection reset")
        return f"page {page}: 200 OK"


async def main() -> None:
    connections = asyncio.Semaphore(2)
    results = await asyncio.gather(
        *(fetch(page, connections) for page in (1, 2, 3)), return_exceptions=True
    )
    for result in results:
        print(result if isinstance(result, str) else f"failed: {result}")


if __name__ == "__main__":
    asyncio.run(main())
