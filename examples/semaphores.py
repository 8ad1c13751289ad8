"""Semaphores: throttling "API calls" to two at a time.

Six calls go through an ``asyncio.Semaphore(2)``: two run, four wait their
turn. Run it traced::

    aiotrace run examples/semaphores.py

What to look for:

* six ``asyncio.Semaphore.hold`` spans, never more than two at the same time
  (``aiotrace.semaphore.capacity = 2``);
* four ``asyncio.Semaphore.acquire`` spans for the calls that waited, each
  with ``aiotrace.semaphore.value = 0`` and a ``handoff`` link to the call
  whose release gave it its permit;
* in the report's Semaphores section: capacity 2, four of six acquisitions
  waited, and how long in total.
"""

import asyncio


async def call_api(api: asyncio.Semaphore, request: int) -> str:
    async with api:
        await asyncio.sleep(0.05)  # the remote API's latency
        return f"response {request}"


async def main() -> None:
    api = asyncio.Semaphore(2)
    responses = await asyncio.gather(
        *(asyncio.create_task(call_api(api, i), name=f"request-{i}") for i in range(6))
    )
    print(", ".join(responses))


if __name__ == "__main__":
    asyncio.run(main())
