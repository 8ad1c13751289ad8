"""A queue pipeline: a producer feeds workers through a bounded queue.

The producer is faster than the two workers, so the queue (``maxsize=2``)
fills and the producer waits; ``join()`` waits until every item is done.
Run it traced::

    aiotrace run examples/queue_pipeline.py

What to look for:

* ``asyncio.Queue.put`` spans in the producer: blocked on a full queue,
  each linked (``waker``) to the worker whose ``get()`` freed a slot;
* ``asyncio.Queue.get`` spans in a worker only while the queue was empty;
* one ``asyncio.Queue.join`` span in ``main``, linked to the worker that
  called the last ``task_done()``.
"""

import asyncio


async def main() -> None:
    jobs: asyncio.Queue[int] = asyncio.Queue(maxsize=2)

    async def worker(name: str) -> None:
        while True:
            job = await jobs.get()
            await asyncio.sleep(0.03)  # the work
            print(f"{name} finished job {job}")
            jobs.task_done()

    async def producer() -> None:
        for job in range(8):
            await jobs.put(job)

    workers = [asyncio.create_task(worker(f"worker-{n}"), name=f"worker-{n}") for n in range(2)]
    await asyncio.create_task(producer(), name="producer")
    await jobs.join()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
