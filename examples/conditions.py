"""Conditions: producers and consumers coordinating on shared state.

Two consumers wait on an ``asyncio.Condition`` until there is an item; a
producer adds items one by one and notifies. Run it traced::

    aiotrace run examples/conditions.py

What to look for:

* ``asyncio.Condition.wait`` spans in the consumers, each ending when the
  producer notified, linked (``waker``) to the ``producer`` task's span,
  which has an ``asyncio.Condition.notify`` event per notification;
* the condition's own lock as ``items_changed.lock (conditions.py:26)``:
  re-acquiring it after being notified is that lock's business, not part
  of the condition wait. Its holds here are far below a millisecond, so
  they are only counted (the report's "used ... times, never waited on"
  line); run with ``--min-hold 0`` to see every one of them as a span;
* ``aiotrace.condition.predicate = true``: the waits were rounds of
  ``wait_for(...)``.
"""

import asyncio


async def main() -> None:
    items_changed = asyncio.Condition()
    items: list[int] = []
    done = False

    async def consumer(name: str) -> None:
        while True:
            async with items_changed:
                await items_changed.wait_for(lambda: items or done)
                if not items:
                    return
                item = items.pop(0)
            print(f"{name} got {item}")
            await asyncio.sleep(0.01)  # processing, outside the lock

    async def producer() -> None:
        nonlocal done
        for item in range(4):
            await asyncio.sleep(0.03)  # making the next item
            async with items_changed:
                items.append(item)
                items_changed.notify()
        async with items_changed:
            done = True
            items_changed.notify_all()

    await asyncio.gather(
        asyncio.create_task(consumer("consumer-a"), name="consumer-a"),
        asyncio.create_task(consumer("consumer-b"), name="consumer-b"),
        asyncio.create_task(producer(), name="producer"),
    )


if __name__ == "__main__":
    asyncio.run(main())
