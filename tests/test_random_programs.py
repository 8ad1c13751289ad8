"""Random programs observe exactly what they observe untraced, in every mode of tracing.

The suites of CPython (``test_cpython_suites.py``) test each primitive one
behaviour at a time. A program mixes them: tasks take a lock and are
cancelled in its queue, release a permit another task took, notify a
condition while others time out on an event, leave a future to a task that
was cancelled, wait on a Condition whose lock other tasks take directly, use
a subclass of the program's whose ``acquire()`` does more than asyncio's.
Each of aiotrace's fast paths decides from the primitive's state which of
asyncio's paths it takes, and the decision is only right if it is right in
every state such a mix reaches.

Here a seeded generator writes small programs of a few tasks, each a list
of steps drawn from every primitive's operations (including the misuses
that raise), cancellations of other tasks and zero timeouts. A program
only ever yields with ``sleep(0)`` or on a primitive, never on the clock,
so its run is deterministic: the same program gives the same log every
time. The log is every step's outcome (value, or exception type and
message) in the order the steps finished, what was still pending at the
end, and each primitive's final state and ``repr``. Each program runs
untraced, then traced with thresholds at their defaults, at zero (every
wait and hold a span), with the checks ``aiotrace run`` does (ownership and
lock order) and with asyncio's own primitives, tasks and futures traced
too, and with asyncio's slow paths awaited rather than inlined; then
instrumented, and uninstrumented, a few loop iterations in, while tasks
hold, wait and are being woken; then on uvloop against uvloop untraced; then
300 of them in one process under ``aiotrace run``, against ``python``.
Every log must equal the untraced one, and aiotrace must count no internal
error. And the spans of 300 of them, every wait and hold spanned, must
tell a story that could have happened (a Lock's holds never overlap, a
wait's link goes to the hold that ended in it, and so on); and the leaks
found when 300 of them end must be exactly what each left behind.

Each primitive's slow path is reached (the test checks it), and the test
fails for a fast path that decides wrongly: a Lock's ``async with`` taking
a free lock that has waiters queued, a Semaphore's taking a free permit
another waiter was woken for, a Lock's ``acquire()`` that looks only at its
first waiter's cancellation, a ``put_nowait()`` that forgets to clear the
``join()`` event, a Condition's ``async with`` that takes any lock's fast
path, a subclass's included, each failed it (2026-12-04).

A failure names the seed; ``python -m tests.test_random_programs SEED``
prints that program and its untraced log.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import pytest

import aiotrace
from aiotrace import semconv
from aiotrace._pipeline import Discard
from aiotrace.testing import capture_spans
from tests.cli_support import aiotrace as aiotrace_command
from tests.cli_support import python
from tests.outcomes import SELF_TRACED_VARIABLE

Step = tuple[str, int]
Program = list[list[Step]]

# Each operation with its weight in a drawn program: the locks and
# semaphores, which have the most fast paths, drawn most often.
_OPERATIONS: dict[str, int] = {
    "lock_with": 6,
    "lock_acquire": 4,
    "lock_take": 2,
    "lock_release": 2,
    "sem_with": 5,
    "sem_acquire": 3,
    "sem_take": 2,
    "sem_release": 1,
    "bsem_with": 3,
    "bsem_take": 2,
    "bsem_release": 2,
    "event_wait": 3,
    "event_set": 2,
    "event_clear": 2,
    "cond_wait": 2,
    "cond_wait_for": 2,
    "cond_notify": 3,
    "cond_notify_all": 1,
    "cond_notify_unlocked": 1,
    "cond_with": 2,
    "queue_put": 3,
    "queue_get": 3,
    "queue_put_nowait": 2,
    "queue_put_full": 1,
    "queue_get_nowait": 2,
    "queue_task_done": 2,
    "queue_join": 1,
    "future_wait": 2,
    "future_set": 2,
    "future_cancel": 1,
    "wait_for_zero": 3,
    "spawn": 2,
    "spawn_await": 2,
    "gather": 2,
    "cancel": 3,
    "sleep": 4,
    "sublock_with": 2,
    "sublock_acquire": 2,
    "subsem_with": 2,
    "subsem_release": 1,
    "shared_wait": 2,
    "shared_notify": 2,
    "subcond_wait": 1,
    "subcond_notify": 1,
}
if sys.version_info >= (3, 11):
    _OPERATIONS |= {"barrier_wait": 2, "barrier_abort": 1, "timeout_zero": 2, "task_group": 2}
if sys.version_info >= (3, 13):
    _OPERATIONS |= {"queue_shutdown": 1}

_TASKS = (2, 8)
_STEPS = (3, 10)
_SETTLE = 40
"""Loop iterations every program gets before what still waits is cancelled."""
_MIDWAY = 3
"""Loop iterations before ``instrument()`` or ``uninstrument()`` in the midway modes:
the programs' tasks are then holding, waiting and being woken."""


def draw(seed: int) -> Program:
    """The program of ``seed``: per task, its steps as (operation, argument)."""
    rng = random.Random(seed)
    names = list(_OPERATIONS)
    weights = list(_OPERATIONS.values())
    tasks = rng.randint(*_TASKS)
    return [
        [(op, rng.randint(0, 3)) for op in rng.choices(names, weights, k=rng.randint(*_STEPS))]
        for _ in range(tasks)
    ]


class _CountingLock(asyncio.Lock):
    """A program's Lock subclass whose ``acquire()`` does more than asyncio's."""

    def __init__(self) -> None:
        super().__init__()
        self.acquires = 0

    async def acquire(self) -> bool:
        self.acquires += 1
        return await super().acquire()


class _CountingSemaphore(asyncio.BoundedSemaphore):
    """A program's BoundedSemaphore subclass whose ``release()`` does more."""

    def __init__(self, value: int = 2) -> None:
        super().__init__(value)
        self.releases = 0

    def release(self) -> None:
        self.releases += 1
        super().release()


@dataclass
class World:
    """The primitives a program shares, made inside its loop, and what it logs."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    sem: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    bsem: asyncio.BoundedSemaphore = field(default_factory=lambda: asyncio.BoundedSemaphore(2))
    event: asyncio.Event = field(default_factory=asyncio.Event)
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)
    sublock: _CountingLock = field(default_factory=_CountingLock)
    subsem: _CountingSemaphore = field(default_factory=_CountingSemaphore)
    shared: asyncio.Condition = field(init=False)
    """A Condition over ``lock``, which other steps take directly."""
    subcond: asyncio.Condition = field(init=False)
    """A Condition over ``sublock``, whose ``acquire()`` is the subclass's."""
    queues: list[asyncio.Queue[Any]] = field(
        default_factory=lambda: [
            asyncio.Queue(2),
            asyncio.LifoQueue(1),
            asyncio.PriorityQueue(3),
            asyncio.Queue(),
        ]
    )
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    barrier: Any = None
    count: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    spawned: list[asyncio.Task[Any]] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shared = asyncio.Condition(self.lock)
        self.subcond = asyncio.Condition(self.sublock)


async def _yield(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def _operation(world: World, who: int, at: int, op: str, arg: int) -> Any:
    """Run one step; what it returns is logged (and must be the same traced)."""
    w = world
    if op in ("lock_with", "sublock_with"):
        async with w.lock if op == "lock_with" else w.sublock:
            await _yield(arg)
    elif op in ("lock_acquire", "sublock_acquire"):
        lock = w.lock if op == "lock_acquire" else w.sublock
        await lock.acquire()
        try:
            await _yield(arg)
        finally:
            lock.release()
    elif op == "lock_take":
        return await w.lock.acquire()
    elif op == "lock_release":
        w.lock.release()
    elif op in ("sem_with", "bsem_with", "subsem_with"):
        async with {"sem_with": w.sem, "bsem_with": w.bsem, "subsem_with": w.subsem}[op]:
            await _yield(arg)
    elif op == "sem_acquire":
        await w.sem.acquire()
        try:
            await _yield(arg)
        finally:
            w.sem.release()
    elif op in ("sem_take", "bsem_take"):
        return await (w.sem if op == "sem_take" else w.bsem).acquire()
    elif op in ("sem_release", "bsem_release"):
        (w.sem if op == "sem_release" else w.bsem).release()
    elif op == "event_wait":
        return await w.event.wait()
    elif op == "event_set":
        w.event.set()
    elif op == "event_clear":
        w.event.clear()
    elif op in ("cond_wait", "shared_wait", "subcond_wait"):
        cond = {"cond": w.cond, "shared": w.shared, "subcond": w.subcond}[op.split("_")[0]]
        async with cond:
            return await cond.wait()
    elif op == "cond_wait_for":
        target = w.count + arg
        async with w.cond:
            return await w.cond.wait_for(lambda: w.count >= target)
    elif op in ("cond_notify", "cond_notify_all"):
        async with w.cond:
            w.count += 1
            if op == "cond_notify":
                w.cond.notify(arg)
            else:
                w.cond.notify_all()
    elif op == "cond_notify_unlocked":
        w.cond.notify()
    elif op == "cond_with":
        async with w.cond:
            await _yield(arg)
    elif op == "queue_put":
        await w.queues[arg].put((who, at))
    elif op == "queue_put_full":  # fills a bounded queue: the put waits, unless it is shut
        queue = w.queues[arg % 3]
        while not queue.full():
            queue.put_nowait((who, at))
        await queue.put((who, at))
    elif op == "queue_get":
        return await w.queues[arg].get()
    elif op == "queue_put_nowait":
        w.queues[arg].put_nowait((who, at))
    elif op == "queue_get_nowait":
        return w.queues[arg].get_nowait()
    elif op == "queue_task_done":
        w.queues[arg].task_done()
    elif op == "queue_join":
        await w.queues[arg].join()
    elif op == "queue_shutdown":
        w.queues[arg].shutdown(immediate=bool(arg % 2))  # type: ignore[attr-defined]  # 3.13+
    elif op == "future_wait":
        return await w.futures[arg % 2]
    elif op == "future_set":
        w.futures[arg % 2].set_result((who, at))
    elif op == "future_cancel":
        return w.futures[arg % 2].cancel()
    elif op == "wait_for_zero":
        awaitable = (w.lock.acquire, w.sem.acquire, w.event.wait, w.queues[0].get)[arg]
        got = await asyncio.wait_for(awaitable(), 0)
        if arg == 0 and got:
            w.lock.release()
        elif arg == 1 and got:
            w.sem.release()
        return got
    elif op == "timeout_zero":
        async with asyncio.timeout(0):  # type: ignore[attr-defined]  # 3.11+
            async with (w.lock, w.sem, w.bsem, w.cond)[arg]:
                await _yield(1)
    elif op == "spawn":
        inner = ("lock_with", "sem_with", "event_wait", "queue_get")[arg]
        task = asyncio.create_task(_operation(w, who, at, inner, 1), name=f"t{who}.{at}")
        w.spawned.append(task)
    elif op == "spawn_await":
        inner = ("lock_with", "bsem_with", "cond_with", "queue_put")[arg]
        return await asyncio.create_task(_operation(w, who, at, inner, 1), name=f"t{who}.{at}")
    elif op == "gather":
        results = await asyncio.gather(
            _operation(w, who, at, "lock_with", arg),
            _operation(w, who, at, ("sem_with", "event_wait", "queue_get", "cond_with")[arg], 1),
            return_exceptions=True,
        )
        return [_outcome(r) for r in results]
    elif op == "task_group":
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]  # 3.11+
            for inner in (
                ("lock_with", "lock_release"),
                ("sem_with", "bsem_with"),
                ("event_wait", "event_set"),
                ("lock_take", "cond_wait"),
            )[arg]:
                group.create_task(_operation(w, who, at, inner, 1))
    elif op == "barrier_wait":
        return await w.barrier.wait()
    elif op == "barrier_abort":
        await w.barrier.abort()
    elif op == "cancel":
        targets = w.tasks + w.spawned
        return targets[(who + arg + 1) % len(targets)].cancel()
    elif op == "sleep":
        await _yield(arg)
    elif op == "subsem_release":
        w.subsem.release()
    elif op in ("shared_notify", "subcond_notify"):
        cond = w.shared if op == "shared_notify" else w.subcond
        async with cond:
            cond.notify(arg)
    else:  # pragma: no cover - a typo in _OPERATIONS
        raise AssertionError(op)
    return None


def _outcome(result: Any) -> Any:
    if isinstance(result, BaseException):
        inner = getattr(result, "exceptions", None)
        if inner is not None:  # an ExceptionGroup: its members
            return (type(result).__name__, sorted(str(_outcome(e)) for e in inner))
        return (type(result).__name__, str(result))
    return result


async def _task(world: World, who: int, steps: list[Step]) -> None:
    for at, (op, arg) in enumerate(steps):
        try:
            result = await _operation(world, who, at, op, arg)
        except BaseException as exc:  # logged, then as the program would
            world.log.append((who, at, op, _outcome(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            world.log.append((who, at, op, _outcome(result)))


def _state(world: World) -> list[Any]:
    """Every primitive's final state, ``repr`` included (it shows waiters and value)."""
    w = world
    prims: list[Any] = [w.lock, w.sem, w.bsem, w.event, w.cond, w.sublock, w.subsem, *w.queues]
    state: list[Any] = [re.sub(r" at 0x[0-9a-f]+", "", repr(p)) for p in prims]
    state += [w.lock.locked(), w.sem._value, w.bsem._value, w.event.is_set(), w.count]
    state += [w.sublock.acquires, w.subsem.releases, w.subsem._value]
    state += [(q.qsize(), q._unfinished_tasks, list(q._queue)) for q in w.queues]  # type: ignore[attr-defined]  # asyncio's own
    state += [_future_state(f) for f in w.futures]
    if w.barrier is not None:
        state += [w.barrier.n_waiting, w.barrier.broken]
    return state


def _future_state(future: asyncio.Future[Any]) -> Any:
    if not future.done():
        return "pending"
    if future.cancelled():
        return "cancelled"
    return _outcome(future.exception() or future.result())


async def run_program(
    program: Program,
    midway: Callable[[], object] | None = None,
    at_end: Callable[[World], object] | None = None,
) -> list[Any]:
    """Run ``program`` in the running loop; its log.

    ``midway`` is called a few loop iterations in, while tasks hold and wait;
    ``at_end`` when every task of the program is done, before its futures are
    cancelled.
    """
    loop = asyncio.get_running_loop()
    world = World()
    world.futures = [loop.create_future(), asyncio.Future()]
    if sys.version_info >= (3, 11):
        world.barrier = asyncio.Barrier(2)
    world.tasks = [
        asyncio.create_task(_task(world, who, steps), name=f"t{who}")
        for who, steps in enumerate(program)
    ]
    await _yield(_MIDWAY)
    if midway is not None:
        midway()
    await _yield(_SETTLE)
    everyone = world.tasks + world.spawned
    world.log.append(("pending", [t.get_name() for t in everyone if not t.done()]))
    for _ in range(5):  # a cancelled step may be followed by another that waits
        for task in everyone:
            task.cancel()
        await _yield(_SETTLE)
        everyone = world.tasks + world.spawned
    world.log.append(("stuck", [t.get_name() for t in everyone if not t.done()]))
    world.log.append(
        [_outcome(t.exception()) if t.done() and not t.cancelled() else t.done() for t in everyone]
    )
    world.log.append(_state(world))
    if at_end is not None:
        at_end(world)
    for future in world.futures:
        future.cancel()
    # A task cancelled in a Condition's wait takes the Condition's lock again
    # before it ends: ``shared``'s is ``lock``, which a finished step may have
    # left held. Released here, so that every task ends before asyncio.run()
    # waits for them.
    for _ in range(10):
        if all(task.done() for task in everyone):
            break
        for lock in (world.lock, world.sublock):
            if lock.locked():
                lock.release()
        for task in everyone:
            task.cancel()
        await _yield(5)
    return world.log


def run_in_new_loop(program: Program, midway: Callable[[], object] | None = None) -> list[Any]:
    """The log of ``program`` in a fresh event loop (traced if aiotrace is instrumented)."""
    return asyncio.run(run_program(program, midway))


@contextmanager
def _checks() -> Iterator[None]:
    """Ownership tracking and lock-order checking, as ``aiotrace run`` turns them on."""
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    config = DiagnosisConfig(block_threshold=None, dump_signals=False, leaks_at_exit=False)
    diagnoser = Diagnoser(config, None)
    diagnoser.start()
    try:
        yield
    finally:
        diagnoser.finish(at_exit=False)


@contextmanager
def _awaited_slow_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """asyncio's slow paths awaited, as on a Python whose source aiotrace does not know."""
    from aiotrace.primitives import events, locks, queues

    with monkeypatch.context() as patch:
        for module in (locks, events, queues):
            patch.setattr(module, "source_is", lambda func, known: False)
        yield


_MODES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "every wait and hold": {"min_wait": 0, "min_hold": 0},
    "checks": {"min_wait": 0.0005},
    "asyncio's own too": {
        "min_wait": 0,
        "internal_futures": True,
        "internal_tasks": True,
        "internal_primitives": True,
    },
    "slow paths awaited": {"min_wait": 0, "min_hold": 0},
}

_SEEDS = range(250 if os.environ.get(SELF_TRACED_VARIABLE) else 1000)
"""A quarter of them in the self-traced suite run, which repeats these tests inside a
tracing session (see ``tests/outcomes.py``): at two to three times the cost there,
all 1000 took a third of that run."""


@pytest.fixture(scope="module")
def untraced() -> dict[int, list[Any]]:
    """Every seed's untraced log, run twice: the programs are deterministic."""
    logs = {seed: run_in_new_loop(draw(seed)) for seed in _SEEDS}
    again = {seed: run_in_new_loop(draw(seed)) for seed in _SEEDS[:20]}
    assert all(again[seed] == logs[seed] for seed in again)
    return logs


# What the programs must reach, traced with every wait a span: each
# primitive's slow path (asyncio's wait on a future), not only its fast one.
_WAITS_REACHED: list[str] = [
    semconv.SPAN_LOCK_ACQUIRE,
    semconv.SPAN_SEMAPHORE_ACQUIRE,
    semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE,
    semconv.SPAN_EVENT_WAIT,
    semconv.SPAN_CONDITION_WAIT,
    semconv.SPAN_QUEUE_GET,
    semconv.SPAN_QUEUE_PUT,
    semconv.SPAN_QUEUE_JOIN,
    semconv.SPAN_FUTURE_WAIT,
    *([semconv.SPAN_BARRIER_WAIT] if sys.version_info >= (3, 11) else []),
]


@pytest.mark.parametrize("mode", list(_MODES))
def test_random_programs_observe_what_they_do_untraced(
    mode: str, untraced: dict[int, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each program's log traced equals its log untraced; aiotrace counts no internal error."""
    with (
        _awaited_slow_paths(monkeypatch) if mode == "slow paths awaited" else _nothing(),
        capture_spans(**_MODES[mode]) as captured,
    ):
        with _checks() if mode == "checks" else _nothing():
            differ = [seed for seed in _SEEDS if run_in_new_loop(draw(seed)) != untraced[seed]]
        aiotrace.flush()
        errors = aiotrace.stats().internal_errors
    assert differ == [], f"seeds whose log differs traced ({mode}): {differ}"
    assert errors == 0
    if _MODES[mode].get("min_wait") == 0:
        reached = {span.name for span in captured.spans}
        assert [name for name in _WAITS_REACHED if name not in reached] == []


@contextmanager
def _nothing() -> Iterator[None]:
    yield


_HOLDS = (semconv.SPAN_LOCK_HOLD, semconv.SPAN_SEMAPHORE_HOLD, semconv.SPAN_BOUNDED_SEMAPHORE_HOLD)
_ACQUIRES = (
    semconv.SPAN_LOCK_ACQUIRE,
    semconv.SPAN_SEMAPHORE_ACQUIRE,
    semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE,
)


def test_random_programs_spans_tell_a_consistent_story() -> None:
    """What the spans of every wait and hold say could have happened.

    Each span's parent (but the one the capture began in) and link targets were
    exported; no span ends before it
    starts; a Lock's holds never overlap; a BoundedSemaphore(2)'s holds never
    number more than two at once; a wait's link goes to a hold that ended
    while it waited (its hand-off).
    """
    with capture_spans(min_wait=0, min_hold=0) as captured:
        for seed in _SEEDS[:300]:
            run_in_new_loop(draw(seed))
        aiotrace.flush()
    spans = captured.spans
    by_id = {span.span_id: span for span in spans}
    wrong: list[str] = []
    outside: set[int] = set()  # parents not among these spans
    for span in spans:
        start, end = span.span.start_time or 0, span.span.end_time or 0
        if end < start:
            wrong.append(f"{span.name} ends before it starts")
        if span.parent_id is not None and span.parent_id not in by_id:
            outside.add(span.parent_id)
        for target, _ in span.links:
            hold = by_id.get(target)
            if hold is None:
                wrong.append(f"{span.name}'s link target was not exported")
            elif span.name in _ACQUIRES and not (
                hold.name in _HOLDS and start <= (hold.span.end_time or 0) <= end
            ):
                wrong.append(f"{span.name} links to a {hold.name} that did not end in it")
    lock_holds: dict[int, list[tuple[int, int]]] = {}
    bounded: dict[int, list[tuple[int, int]]] = {}  # both are BoundedSemaphore(2)s
    for span in spans:
        interval = (span.span.start_time or 0, span.span.end_time or 0)
        if span.name == semconv.SPAN_LOCK_HOLD:
            lock_holds.setdefault(span[semconv.ATTR_PRIMITIVE_ID], []).append(interval)
        elif span.name == semconv.SPAN_BOUNDED_SEMAPHORE_HOLD:
            changes = bounded.setdefault(span[semconv.ATTR_PRIMITIVE_ID], [])
            changes += [(interval[0], 1), (interval[1], -1)]
    for intervals in lock_holds.values():
        intervals.sort()
        wrong += [
            "a Lock's holds overlap"
            for (_, end), (start, _) in itertools.pairwise(intervals)
            if start < end
        ]
    for changes in bounded.values():
        held = 0
        for _, change in sorted(changes):  # at one instant, a release sorts before a take
            held += change
            if held > 2:
                wrong.append(f"{held} holds of a BoundedSemaphore(2) at once")
    # Named by what the program can read: ``World.lock (test_random_programs.py:N)``
    # for a dataclass field's default, never its generated __init__'s ``<string>:3``.
    names = {span.get(semconv.ATTR_PRIMITIVE_NAME) for span in spans} - {None}
    wrong += [f"named {name}" for name in names if "<string>" in name]
    fields = {"World.lock", "World.cond", "World.sublock", "World.subsem"}  # subclasses too
    assert {name.split(" ")[0] for name in names} >= fields
    assert wrong == []
    # Only the span the capture began in (a test's, under ``pytest --aiotrace``).
    assert len(outside) <= 1
    assert len(lock_holds) > 100
    assert len(bounded) > 100  # semaphores held at least once
    assert sum(len(span.links) for span in spans if span.name in _ACQUIRES) > 100


def test_random_programs_leaks_are_what_they_left_behind() -> None:
    """With every task done, the leaks found are exactly what the program left:
    a held Lock, a BoundedSemaphore's missing permits, the futures still pending.

    A plain Semaphore's too, though a step may release it without having
    acquired it: a permit a finished task took is a leak only while the
    semaphore is short of it. From 3.12, a step that took a lock or a permit
    and returned leaves it to its task, which is no leak while it runs.
    """
    from aiotrace import _leaks

    wrong: list[tuple[int, Counter[str], Counter[str]]] = []
    left: Counter[str] = Counter()  # what the programs left, all told
    for seed in _SEEDS[:300]:
        since = perf_counter_ns()

        def check(world: World, seed: int = seed, since: int = since) -> None:
            found: Counter[str] = Counter()
            names = {
                id(world.lock): "lock",
                id(world.sem): "sem",
                id(world.bsem): "bsem",
                id(world.cond._lock): "the Condition's lock",  # type: ignore[attr-defined]  # asyncio's own
            }
            for leak in _leaks.find(since):
                if leak.kind == _leaks.FUTURE_UNRESOLVED:
                    found["future"] += 1
                elif leak.key[0] in names:  # (not another test's, under pytest --aiotrace)
                    found[names[leak.key[0]]] += 1
            # From 3.12, what a step took and returned with is its task's while that
            # task runs (a finished frame names its caller): not left behind yet.
            kept: Counter[str] = Counter()
            if sys.version_info >= (3, 12):
                for entry in world.log:
                    if (
                        len(entry) == 4
                        and entry[2] in ("lock_take", "sem_take", "bsem_take")
                        and entry[3] is True
                        and not world.tasks[entry[0]].done()
                    ):
                        kept[entry[2]] += 1
            locked = int(world.lock.locked())
            truth = Counter(
                {
                    "lock": locked - min(locked, kept["lock_take"]),
                    "sem": max(0, 2 - world.sem._value - kept["sem_take"]),  # type: ignore[attr-defined]  # asyncio's own
                    "bsem": max(0, 2 - world.bsem._value - kept["bsem_take"]),  # type: ignore[attr-defined]  # asyncio's own
                    "future": sum(not future.done() for future in world.futures),
                }
            )
            left.update(+truth)
            if found != truth:
                wrong.append((seed, found, truth))

        with capture_spans():
            _leaks.watch()
            try:
                asyncio.run(run_program(draw(seed), at_end=check))
            finally:
                _leaks.unwatch()
    assert wrong == []
    assert min(left[kind] for kind in ("lock", "sem", "bsem", "future")) > 20


def test_random_programs_on_uvloop_observe_what_they_do_untraced_there() -> None:
    """On uvloop, whose loop schedules in C, traced with every wait and hold a span."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is a test dependency")
    seeds = _SEEDS[:300]
    bare = {seed: uvloop.run(run_program(draw(seed))) for seed in seeds}
    with capture_spans(min_wait=0, min_hold=0):
        differ = [seed for seed in seeds if uvloop.run(run_program(draw(seed))) != bare[seed]]
        aiotrace.flush()
        errors = aiotrace.stats().internal_errors
    assert differ == [], f"seeds whose log differs: {differ}"
    assert errors == 0


@pytest.mark.parametrize("midway", ["instrument()", "uninstrument()"])
def test_random_programs_switched_midway_observe_what_they_do_untraced(
    midway: str, untraced: dict[int, list[Any]]
) -> None:
    """``instrument()`` while tasks hold locks and permits, wait and are being woken
    (every primitive, task and future was made untraced); or ``uninstrument()`` then
    (what was begun traced ends untraced): the program's log is unchanged."""
    differ, errors = [], 0
    ours: list[bool] = []  # whether ours is on: else uninstrument() ends pytest --aiotrace's

    def on() -> None:
        aiotrace.instrument(consumer=Discard(), min_wait=0, min_hold=0)
        ours.append(True)

    def off() -> None:
        nonlocal errors
        aiotrace.flush()
        errors += aiotrace.stats().internal_errors
        ours.clear()
        aiotrace.uninstrument()

    for seed in _SEEDS:
        if midway == "uninstrument()":
            on()
        try:
            log = run_in_new_loop(draw(seed), midway=on if midway == "instrument()" else off)
        finally:
            if ours:
                off()
        if log != untraced[seed]:
            differ.append(seed)
    assert differ == [], f"seeds whose log differs: {differ}"
    assert errors == 0


def test_random_programs_run_by_aiotrace_run_print_what_they_print_under_python(
    tmp_path: Path,
) -> None:
    """The whole product at once: ``aiotrace run -m`` (its collector process, task and
    future spans, the diagnosis it runs by default with its watchdog thread, its
    passes at exit) runs 300 programs in one process; what they print is what
    ``python -m`` prints, and the run counts no internal error."""
    root = Path(__file__).parent.parent
    args = ("-m", "tests.test_random_programs", "--logs", "0", "300")
    bare = python(*args, cwd=root, timeout=300)
    traced = aiotrace_command(
        "run",
        "--no-trace-file",
        f"--report-json={tmp_path / 'r.json'}",
        *args,
        cwd=root,
        timeout=300,
    )
    assert bare.returncode == 0, bare.stderr
    assert traced.returncode == 0, traced.stderr
    assert traced.stdout == bare.stdout
    assert bare.stdout.count("\n") == 300
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stats"]["internal_errors"] == 0
    assert report["stats"]["spans_built"] > 1000  # traced it was


def _show(seed: int) -> None:
    for who, steps in enumerate(draw(seed)):
        print(f"t{who}: {steps}")
    for entry in run_in_new_loop(draw(seed)):
        print(entry)


if __name__ == "__main__":
    if sys.argv[1] == "--logs":  # one line per seed, for the test above
        for seed in range(int(sys.argv[2]), int(sys.argv[3])):
            print(repr(run_in_new_loop(draw(seed))))
    else:
        _show(int(sys.argv[1]))
