"""What a finished piece of work left behind: locks held, permits taken, futures unresolved.

The pytest plugin asks after every test. Nothing here is on a hot path:
:func:`watch` makes primitive creation remember locks and semaphores in a
weak set (only while someone watches), and a test's end walks that set once.

A lock is *leaked* when it is still held and no pending task is running the
coroutine that acquired it: that coroutine finished (or was destroyed)
without releasing it, so nobody ever will. The same for a semaphore permit.
A future is *unresolved* when it was created after the mark and is still
pending, or was garbage-collected pending.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from aiotrace import semconv
from aiotrace._loops import pending_tasks
from aiotrace._sites import SITES, line_of, qualname, short_path
from aiotrace.primitives._base import (
    WATCHED,
    PrimRef,
    display_name,
    holding,
    ref_of,
    tasks_by_frame,
)

COLLECTED: Final[deque[tuple[int, PrimRef, int, str | None]]] = deque(maxlen=1000)
"""Futures garbage-collected unresolved while watching: (created ns, ref, waiters, creator).

The name is looked up when the leaks are listed, not in the finaliser that
notes one: that runs in the middle of whatever the program was doing when
the garbage collector ran, and reading source there is not ours to do.
"""


@dataclass(frozen=True)
class Leak:
    """One thing left behind."""

    kind: str
    """``lock held``, ``permit taken`` or ``future unresolved``."""
    primitive: str
    """Its name, as reports show it (``cache_lock (app.py:12)``)."""
    detail: str
    """By whom, where, in words."""
    key: tuple[int, int]
    """Identity, so that the same leak is reported once."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.primitive}: {self.detail}"


LOCK_HELD: Final = "lock held"
PERMIT_TAKEN: Final = "permit taken"
FUTURE_UNRESOLVED: Final = "future unresolved"
KINDS: Final = (LOCK_HELD, PERMIT_TAKEN, FUTURE_UNRESOLVED)
"""Every kind, most severe first: a held lock strands its waiters at once."""


_EVERY_KIND_WATCHERS: Final[list[int]] = [0]
"""How many watchers asked for every kind (how many watch at all is ownership
tracking's count, ``_lock_order.track_ownership``: each watcher tracks)."""


def watch(every_kind: bool = False) -> None:
    """Start remembering the locks and semaphores created from now on.

    ``every_kind`` remembers events, conditions, barriers and queues too
    (the wait-for graph maps a task's waiter future back to them). Each call
    is undone by one :func:`unwatch` with the same ``every_kind``.
    """
    from aiotrace.primitives import _lock_order
    from aiotrace.primitives._base import _WATCHED_KINDS

    _lock_order.track_ownership()  # a leak names the line the lock was taken at
    if every_kind:
        _EVERY_KIND_WATCHERS[0] += 1
        _WATCHED_KINDS.update(_EVERY_KIND)
    if WATCHED[0] is None:
        WATCHED[0] = weakref.WeakSet()


_EVERY_KIND: Final = frozenset(
    {
        semconv.KIND_EVENT,
        semconv.KIND_CONDITION,
        semconv.KIND_BARRIER,
        semconv.KIND_QUEUE,
        semconv.KIND_PRIORITY_QUEUE,
        semconv.KIND_LIFO_QUEUE,
    }
)


def unwatch(every_kind: bool = False) -> None:
    """Stop one :func:`watch`; when none is left, stop remembering and forget.

    Ownership tracking stops with the last, unless lock-order checking
    still needs it: a program traced again later in the process runs its
    hot paths without it, as one never watched.
    """
    from aiotrace.primitives import _lock_order
    from aiotrace.primitives._base import _WATCHED_KINDS

    if every_kind and _EVERY_KIND_WATCHERS[0] > 0:
        _EVERY_KIND_WATCHERS[0] -= 1
        if not _EVERY_KIND_WATCHERS[0]:
            _WATCHED_KINDS.difference_update(_EVERY_KIND)
    if _lock_order.untrack_ownership():
        return  # another watcher still watches
    WATCHED[0] = None
    COLLECTED.clear()


def future_collected(created_ns: int, ref: PrimRef, waiters: int, creator: str | None) -> None:
    """Called when a traced future is garbage-collected unresolved, while watching."""
    if WATCHED[0] is not None:
        COLLECTED.append((created_ns, ref, waiters, creator))


def _function(frame: Any) -> str:
    return qualname(frame.f_code)


def _where(frame: Any) -> str:
    code = frame.f_code
    return f"{qualname(code)} ({short_path(code.co_filename)}:{frame.f_lineno})"


def find(since_ns: int) -> list[Leak]:
    """Everything left behind now: held locks and permits, and futures made after ``since_ns``."""
    from aiotrace.primitives.tasks import PENDING
    from aiotrace.report import waiting, were_waiting  # the report's words; imported when read

    leaks: list[Leak] = []
    watched = list(WATCHED[0] or ())
    # Read once for every held lock and permit, each held by a frame (asking
    # each task of each, 10,000 tasks and 1,000 locks were ten million walks).
    running = (
        set(tasks_by_frame(pending_tasks(parents_too=True), sys._getframe())) if watched else set()
    )
    for prim in watched:
        try:
            leaks.extend(_prim_leaks(prim, running))
        except Exception:  # a half-built or foreign object: not ours to judge
            continue
    for state, ref in list(PENDING.values()):
        if state.t0 >= since_ns:
            name = display_name(ref)
            site = SITES.resolve(state.site).label if state.site is not None else None
            # The line is said once: a name derived from it already shows it.
            at = f" at {site}" if site is not None and f"({site})" not in name else ""
            by = f' by task "{state.creator}"' if state.creator else ""
            created = f"created{at}{by}, " if at or by else ""
            leaks.append(
                Leak(
                    FUTURE_UNRESOLVED,
                    name,
                    f"{created}still pending, {waiting(state.waiters)}",
                    (id(state), 0),
                )
            )
    for created_ns, collected, waiters, creator in list(COLLECTED):
        if created_ns >= since_ns:
            by = f'created by task "{creator}", ' if creator else ""
            leaks.append(
                Leak(
                    FUTURE_UNRESOLVED,
                    display_name(collected),
                    f"{by}garbage-collected unresolved, {were_waiting(waiters)}",
                    (created_ns, waiters),
                )
            )
    return leaks


def _prim_leaks(prim: Any, running: set[int]) -> list[Leak]:
    """``prim``'s leaks: held by a frame not in ``running`` (the frames tasks still run)."""
    if isinstance(prim, asyncio.Lock):
        owner = getattr(prim, "_aiotrace_owner", None)
        if not prim.locked() or owner is None or holding(owner, running) is not None:
            return []
        name = display_name(ref_of(prim, semconv.KIND_LOCK))
        line = line_of(owner.f_code, getattr(prim, "_aiotrace_olasti", owner.f_lasti))
        return [
            Leak(
                LOCK_HELD,
                name,
                f"acquired at {short_path(owner.f_code.co_filename)}:{line} in "
                f"{_function(owner)}, which finished without releasing it",
                (id(prim), id(owner)),
            )
        ]
    permits = getattr(prim, "_aiotrace_permits", None)
    if not permits:
        return []
    kind = (
        semconv.KIND_BOUNDED_SEMAPHORE
        if isinstance(prim, asyncio.BoundedSemaphore)
        else semconv.KIND_SEMAPHORE
    )
    ref = ref_of(prim, kind)
    name = display_name(ref)
    out = []
    held = 0  # by a task that can still run: not leaked, but missing all the same
    for _, owner, site in list(permits):
        if owner is None:
            continue
        if holding(owner, running) is not None:
            held += 1
            continue
        where = SITES.resolve(site).label if site is not None else _where(owner)
        out.append(
            Leak(
                PERMIT_TAKEN,
                name,
                f"taken at {where} in {_function(owner)}, which finished without releasing it",
                (id(prim), id(owner)),
            )
        )
    if ref.capacity is not None:
        # No more than the semaphore is short of: a release() that matched no
        # acquire() (a plain Semaphore has no bound) gave a permit back for one
        # of these already, and nothing waits for it.
        del out[max(0, ref.capacity - prim._value - held) :]
    return out


__all__ = ["Leak", "find", "unwatch", "watch"]
