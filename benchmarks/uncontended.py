"""Every primitive's uncontended operations traced over bare: ``python -m benchmarks.uncontended``.

``benchmarks.run`` times one uncontended operation, ``async with lock``,
the one aiotrace's fast paths were first written for. A program uses the
others as often: a semaphore as a concurrency limit (most acquisitions
find a permit), ``await lock.acquire()`` with ``release()`` in a
``finally``, a ``Condition``'s ``async with``, an ``Event`` set and
waited on after it was set, a ``Queue`` that always has an item. Each is
timed here bare and with ``aiotrace.instrument()`` at its defaults
(records encoded and dropped, as ``benchmarks.instructions`` does; no
task or future spans, none of these makes one), alternating in one
process; each repetition's ratio is traced over bare, and the median is
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from .interleaved import add_reps, times, traced_over_bare
from .workloads import uncontended_lock, uncontended_semaphore

Operation = Callable[[int], Coroutine[Any, Any, object]]


async def lock_acquire_release(n: int) -> None:
    lock = asyncio.Lock()
    for _ in range(n):
        await lock.acquire()
        lock.release()


async def bounded_semaphore_async_with(n: int) -> None:
    sem = asyncio.BoundedSemaphore(5)
    for _ in range(n):
        async with sem:
            pass


async def semaphore_acquire_release(n: int) -> None:
    sem = asyncio.Semaphore(5)
    for _ in range(n):
        await sem.acquire()
        sem.release()


async def condition_async_with(n: int) -> None:
    cond = asyncio.Condition()
    for _ in range(n):
        async with cond:
            pass


async def event_wait_when_set(n: int) -> None:
    event = asyncio.Event()
    event.set()
    for _ in range(n):
        await event.wait()


async def event_set_clear(n: int) -> None:
    event = asyncio.Event()
    for _ in range(n):
        event.set()
        event.clear()


async def queue_nowait(n: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
        queue.get_nowait()
        queue.task_done()


async def queue_put_get(n: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        await queue.put(i)
        await queue.get()
        queue.task_done()


OPERATIONS: dict[str, Operation] = {
    "`async with lock`": uncontended_lock,
    "`await lock.acquire()`, `lock.release()`": lock_acquire_release,
    "`async with sem` (Semaphore(5))": uncontended_semaphore,
    "`async with sem` (BoundedSemaphore(5))": bounded_semaphore_async_with,
    "`await sem.acquire()`, `sem.release()`": semaphore_acquire_release,
    "`async with cond`": condition_async_with,
    "`await event.wait()`, the event set": event_wait_when_set,
    "`event.set()`, `event.clear()`": event_set_clear,
    "`put_nowait`, `get_nowait`, `task_done`": queue_nowait,
    "`await put`, `await get`, `task_done`": queue_put_get,
}
"""What one operation is -> the loop doing it ``n`` times."""


def _time(operation: Operation, count: int) -> float:
    """Seconds per operation, in a fresh event loop."""

    async def run() -> float:
        started = time.perf_counter()
        await operation(count)
        return (time.perf_counter() - started) / count

    return asyncio.run(run())


def measure(reps: int, count: int) -> list[tuple[str, float, float, float]]:
    """Rows of (operation, bare µs, traced µs, median ratio)."""
    rows = []
    for name, operation in OPERATIONS.items():
        bare, traced, ratio = traced_over_bare(
            reps, functools.partial(_time, operation, count), tasks=False, futures=False
        )
        rows.append((name, bare * 1e6, traced * 1e6, ratio))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reps(parser, default=9)
    parser.add_argument("--count", type=int, default=30_000, help="operations per run")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {args.count} per run, {args.reps} repetitions")
    print("| uncontended | bare µs | traced µs | traced / bare |")
    print("|---|---|---|---|")
    for name, bare, traced, ratio in measure(args.reps, args.count):
        print(f"| {name} | {bare:.2f} | {traced:.2f} | {times(ratio)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
