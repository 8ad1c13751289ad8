"""The workloads every benchmark measures; each returns the number of operations it did.

Kept free of aiotrace imports so that peers (and the bare run) execute exactly
the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

Workload = Callable[[int], Coroutine[Any, Any, int]]


async def uncontended_lock(n: int) -> int:
    """``async with lock: pass`` with nobody else around: the hottest path."""
    lock = asyncio.Lock()
    for _ in range(n):
        async with lock:
            pass
    return n


@contextlib.asynccontextmanager
async def _locked(lock: asyncio.Lock) -> AsyncIterator[None]:
    async with lock:
        yield


async def uncontended_lock_in_context_manager(n: int) -> int:
    """``async with locked(lock): pass``, ``locked`` an ``@asynccontextmanager`` around
    ``async with lock``: a program's guard. Under diagnosis (``checks``) each entry
    notes which frame entered the generator, which holds the lock for it."""
    lock = asyncio.Lock()
    for _ in range(n):
        async with _locked(lock):
            pass
    return n


async def uncontended_semaphore(n: int) -> int:
    """``async with sem: pass`` with permits to spare: a semaphore as a concurrency
    limit, most of whose acquisitions never wait."""
    sem = asyncio.Semaphore(5)
    for _ in range(n):
        async with sem:
            pass
    return n


async def contended_lock(n: int, tasks: int = 10) -> int:
    """Ten tasks hand one lock around; each holds it across a yield to the loop."""
    lock = asyncio.Lock()
    rounds = max(1, n // tasks)

    async def worker() -> None:
        for _ in range(rounds):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return rounds * tasks


async def semaphore_2_of_10(n: int, tasks: int = 10) -> int:
    """Ten tasks through a Semaphore(2), each holding a permit across a yield."""
    sem = asyncio.Semaphore(2)
    rounds = max(1, n // tasks)

    async def worker() -> None:
        for _ in range(rounds):
            async with sem:
                await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return rounds * tasks


async def event_fan_out(n: int, waiters: int = 10) -> int:
    """One setter wakes ten waiters, over and over; an operation is one wake-up."""
    rounds = max(1, n // waiters)
    go = asyncio.Event()
    arrived = asyncio.Event()
    count = 0

    async def waiter() -> None:
        nonlocal count
        for _ in range(rounds):
            await go.wait()
            count += 1
            if count % waiters == 0:
                arrived.set()
            while go.is_set():
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(waiter()) for _ in range(waiters)]
    for _ in range(rounds):
        await asyncio.sleep(0)
        go.set()
        await arrived.wait()
        arrived.clear()
        go.clear()
    await asyncio.gather(*tasks)
    return rounds * waiters


async def queue_hand_off(n: int, consumers: int = 4) -> int:
    """Items through a bounded Queue(8), one producer and four consumers."""
    queue: asyncio.Queue[int] = asyncio.Queue(8)

    async def consume() -> None:
        while True:
            item = await queue.get()
            queue.task_done()
            if item < 0:
                return

    tasks = [asyncio.create_task(consume()) for _ in range(consumers)]
    for i in range(n):
        await queue.put(i)
    for _ in range(consumers):
        await queue.put(-1)
    await asyncio.gather(*tasks)
    return n


async def create_task_await(n: int) -> int:
    """``await asyncio.create_task(trivial())``: the cost of one task."""

    async def trivial() -> int:
        return 1

    for _ in range(n):
        await asyncio.create_task(trivial())
    return n


async def gather_1000(n: int) -> int:
    """``asyncio.gather`` of 1000 trivial coroutines; an operation is one coroutine."""

    async def trivial() -> int:
        return 1

    rounds = max(1, n // 1000)
    for _ in range(rounds):
        await asyncio.gather(*(trivial() for _ in range(1000)))
    return rounds * 1000


async def ensure_future_of_future(n: int) -> int:
    """``asyncio.ensure_future(fut)`` of an existing future: should cost nothing."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    fut.set_result(None)
    for _ in range(n):
        asyncio.ensure_future(fut)  # noqa: RUF006  # returns fut itself: nothing to keep
    return n


async def future_per_request(n: int) -> int:
    """A future per request, resolved by another task and awaited: a connection's reader
    resolving each caller's reply, as client libraries do. An operation is one request."""
    loop = asyncio.get_running_loop()
    pending: deque[asyncio.Future[int]] = deque()
    done = False

    async def reader() -> None:
        while not done:
            while pending:
                pending.popleft().set_result(1)
            await asyncio.sleep(0)

    task = asyncio.create_task(reader())
    for _ in range(n):
        fut = loop.create_future()
        pending.append(fut)
        await fut
    done = True
    await task
    return n


async def create_primitives(n: int) -> int:
    """``asyncio.Lock()``, ``Event()`` and ``Semaphore()``: an operation makes one of each.

    The other workloads make their primitives once; a program that makes them
    per request pays this every time (see ``benchmarks.creation`` for more).
    """
    for _ in range(n):
        asyncio.Lock()
        asyncio.Event()
        asyncio.Semaphore()
    return n


async def beside_10000_waiting(n: int, waiting: int = 10_000) -> int:
    """Turns of the loop (``await asyncio.sleep(0)``) while 10,000 tasks wait on an
    Event: a server with many idle connections. Nothing here is traced at its
    operations; what ``checks`` adds is the diagnosis's graph checks, whose cost
    grows with the number of pending tasks. An operation is one turn."""
    ready = asyncio.Event()
    tasks = [asyncio.create_task(ready.wait()) for _ in range(waiting)]
    for _ in range(n):
        await asyncio.sleep(0)
    ready.set()
    await asyncio.gather(*tasks)
    return n


async def given_back_beside_10000_waiting(n: int, waiting: int = 10_000) -> int:
    """Permits of a ``Semaphore`` taken by short-lived tasks and given back by
    another, ten at a time, while 10,000 tasks wait on a future (untraced here:
    no span of theirs weighs on the ratio). Each hold a release ends (traced in
    full) is another task's, found from its frame by reading every task's await
    chain, and that task has finished: no reading finds it. An operation is one
    permit, taken and given back."""
    gate = asyncio.get_running_loop().create_future()

    async def wait() -> None:
        await gate

    tasks = [asyncio.create_task(wait()) for _ in range(waiting)]
    sem = asyncio.Semaphore(0)

    async def take() -> None:
        await sem.acquire()

    for _ in range(max(1, n // 10)):
        for _ in range(10):
            sem.release()
        await asyncio.gather(*(take() for _ in range(10)))
    gate.set_result(None)
    await asyncio.gather(*tasks)
    return n


async def hundred_held(n: int, held: int = 100) -> int:
    """One coroutine takes 100 locks made at one line (a lock per row) with
    ``acquire()``, then gives them back, last first. What ``checks`` adds is
    lock-order checking, which sees one class of lock held, not 100 locks. An
    operation is one lock taken and given back."""
    rows = [asyncio.Lock() for _ in range(held)]
    for _ in range(max(1, n // held)):
        for row in rows:
            await row.acquire()
        for row in reversed(rows):
            row.release()
    return n


async def condition_ping_pong(n: int) -> int:
    """Two tasks taking turns through one Condition: ``wait_for`` their turn, pass it on
    with ``notify_all``. An operation is one turn (a wait, a notify, the lock taken twice)."""
    cond = asyncio.Condition()
    turn = [0]
    rounds = max(1, n // 2)

    async def player(me: int) -> None:
        for _ in range(rounds):
            async with cond:
                await cond.wait_for(lambda: turn[0] == me)
                turn[0] = 1 - me
                cond.notify_all()

    await asyncio.gather(player(0), player(1))
    return rounds * 2


PRIMITIVES: dict[str, Any] = {"tasks": False, "futures": False}
TASKS: dict[str, Any] = {"tasks": True, "futures": True}

WORKLOADS: dict[str, tuple[Workload, int, dict[str, Any]]] = {
    "uncontended lock (async with)": (uncontended_lock, 40_000, PRIMITIVES),
    "uncontended Semaphore (async with)": (uncontended_semaphore, 40_000, PRIMITIVES),
    "uncontended lock, through an @asynccontextmanager": (
        uncontended_lock_in_context_manager,
        20_000,
        PRIMITIVES,
    ),
    "contended lock, 10 tasks": (contended_lock, 20_000, PRIMITIVES),
    "Semaphore(2), 10 tasks": (semaphore_2_of_10, 20_000, PRIMITIVES),
    "Event fan-out to 10": (event_fan_out, 20_000, PRIMITIVES),
    "Condition ping-pong, 2 tasks": (condition_ping_pong, 20_000, PRIMITIVES),
    "Queue(8), 1 producer, 4 consumers": (queue_hand_off, 20_000, PRIMITIVES),
    "create_task + await": (create_task_await, 20_000, TASKS),
    "gather of 1000": (gather_1000, 20_000, TASKS),
    "ensure_future(fut)": (ensure_future_of_future, 100_000, TASKS),
    "create Lock, Event, Semaphore": (create_primitives, 20_000, PRIMITIVES),
    "future per request, resolved by a reader task": (future_per_request, 20_000, TASKS),
    "loop turns beside 10,000 waiting tasks": (beside_10000_waiting, 400_000, PRIMITIVES),
    "100 locks held by one coroutine": (hundred_held, 40_000, PRIMITIVES),
    "permits given back by another task, beside 10,000 waiting": (
        given_back_beside_10000_waiting,
        20_000,
        PRIMITIVES,
    ),
}
"""name -> (coroutine function, operations per run, what is traced)."""
