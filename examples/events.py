"""Events: coroutines wait for a signal before they proceed.

Three workers wait until a loader has finished setting up; the loader sets
an ``asyncio.Event`` and they all start. Run it traced::

    aiotrace run examples/events.py

What to look for:

* three ``asyncio.Event.wait`` spans, all ending at the same instant: when
  the event was set;
* each links (``waker``) to the ``loader`` task's span, which carries an
  ``asyncio.Event.set`` event with ``aiotrace.woken = 3`` and the line of
  the ``set()`` call;
* ``aiotrace.waker.task = loader`` on every wait: who released them.
"""

import asyncio


async def main() -> None:
    ready = asyncio.Event()

    async def worker(n: int) -> None:
        await ready.wait()
        print(f"worker {n} starts")

    async def loader() -> None:
        await asyncio.sleep(0.1)  # loading configuration
        print("configuration loaded")
        ready.set()

    await asyncio.gather(
        *(asyncio.create_task(worker(n), name=f"worker-{n}") for n in range(3)),
        asyncio.create_task(loader(), name="loader"),
    )


if __name__ == "__main__":
    asyncio.run(main())
