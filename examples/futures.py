"""Futures: a placeholder for a value that another task sets later.

One task creates a future and awaits it; another sets its value after a
delay. Run it traced::

    aiotrace run examples/futures.py

What to look for in the trace:

* an ``asyncio.Future`` span, named ``fut (futures.py:30)``, from the moment
  the future was created to the moment it was resolved, with
  ``aiotrace.waker.task = setter`` and ``aiotrace.waker.site`` pointing at
  the ``set_result`` line: *who* resolved it, and *where*;
* an ``asyncio.Future.wait`` span in the ``main`` task, as long as the
  delay, linked to the future's span: "this task waited 0.2 s for the value
  that task ``setter`` set at line 25";
* the ``setter`` task's span carries an ``asyncio.Future.resolve`` event.
"""

import asyncio


async def set_after(fut: asyncio.Future[str], delay: float, value: str) -> None:
    await asyncio.sleep(delay)
    fut.set_result(value)


async def main() -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    setter = asyncio.create_task(set_after(fut, 0.2, "... world"), name="setter")
    print("hello ...")
    print(await fut)
    await setter


if __name__ == "__main__":
    asyncio.run(main())
