"""Lock-order checking (lockdep for asyncio): who takes which lock while holding which.

While enabled (``LOCK_ORDER[0]``), every lock acquisition and semaphore
permit notes its owner frame in :data:`HELD`; an acquisition whose frame, or
one of its callers, already holds another primitive records the nesting
"A then B" between the two primitives' *classes* (their creation sites). The
first time the opposite nesting "B then A" is seen, on any code path, the
reporter is told: a possible deadlock, even if this run never hung.

Nestings of two primitives of the same class (locks made at one line, such
as one per account) are not checked: their order is by instance, which a
class cannot tell. ``aiotrace.ignore_lock_order(primitive)`` exempts a class.

Costs: a dict look-up and update per acquisition and release while enabled;
the walk up the callers (at most :data:`DEPTH` frames) only when something
is held at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import ASYNC_CODE

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

LOCK_ORDER: Final[list[bool]] = [False]
"""Lock-order checking on/off, read by the patched fast paths."""

DIAGNOSING: Final[list[bool]] = [False]
"""Ownership details wanted (the line each lock was taken at): on under diagnosis.

The fast paths test this one flag and nothing else when diagnosis is off."""

DEPTH: Final = 8
"""How many callers up an acquisition looks for primitives already held."""


HELD: Final[dict[Any, Any]] = {}
"""Owner frame -> the primitive it holds, or a :class:`Holding` when it holds several.

The common case (one lock per frame) stores the primitive itself: the fast
paths add and remove it inline, with no call and no list.
"""


class Holding(list[Any]):
    """The primitives one frame holds, in the order taken, and their classes.

    An acquisition is checked against each *class* held up its stack, not
    each primitive: a frame that takes a lock per row, a thousand rows, made
    every acquisition walk everything taken before it (188 times a bare run
    under ``aiotrace run``). ``classes``: id(class) -> [class, how many held,
    the last taken of them] (the one whose acquire site a nesting names).
    """

    __slots__ = ("classes",)

    def __init__(self, prims: tuple[Any, ...]) -> None:
        super().__init__()
        self.classes: dict[int, list[Any]] = {}
        for prim in prims:
            self.add(prim)

    def add(self, prim: Any) -> None:
        self.append(prim)
        stats = getattr(prim, "_aiotrace_stats", None)
        entry = self.classes.get(id(stats))
        if entry is None:
            self.classes[id(stats)] = [stats, 1, prim]
        else:
            entry[1] += 1
            entry[2] = prim

    def discard(self, prim: Any) -> None:
        """One hold of ``prim`` let go: the last taken, as a rule, looked for first."""
        if self and self[-1] is prim:
            self.pop()
        else:
            try:
                self.remove(prim)
            except ValueError:
                return
        stats = getattr(prim, "_aiotrace_stats", None)
        entry = self.classes.get(id(stats))
        if entry is None:
            return
        entry[1] -= 1
        if not entry[1]:
            del self.classes[id(stats)]
        elif entry[2] is prim:
            entry[2] = next(
                other
                for other in reversed(self)
                if getattr(other, "_aiotrace_stats", None) is stats
            )


_SUSPECTS: Final[set[int]] = set()
"""ids of the frames in :data:`HELD` that :func:`forget_finished` last found running nowhere."""


def forget_finished(running: set[int]) -> None:
    """Forget the holds of frames that run nowhere any more.

    A coroutine that finished (or was cancelled) without releasing what it
    took leaves its frame in :data:`HELD`, and a frame keeps its locals: the
    program's objects, kept alive for as long as the run lasts. ``running``
    is the ids of every frame a pending task awaits in or a thread is
    running now. A frame missing from it twice in a row (the watchdog asks
    every five seconds) is gone for good: one just made, or moving between a
    thread's stack and its task's await chain, may be missed once. The
    primitive stays held, and its leak is reported as before while the
    program keeps it.
    """
    missing: set[int] = set()
    for frame in list(HELD):
        key = id(frame)
        if key in running:
            continue
        if key in _SUSPECTS:
            HELD.pop(frame, None)
        else:
            missing.add(key)
    _SUSPECTS.clear()
    _SUSPECTS.update(missing)


@dataclass(frozen=True)
class Nesting:
    """One observed "first, then second": the classes, and where and who."""

    first: Any  # SiteStats of the class held
    second: Any  # SiteStats of the class then taken
    first_site: tuple[Any, int] | None  # (code, lasti) where the first was taken
    second_site: tuple[Any, int]  # where the second was taken
    task: str | None


_EDGES: Final[dict[tuple[int, int], Nesting]] = {}
_REPORTED: Final[set[frozenset[int]]] = set()
_reporter: list[Callable[[Nesting, Nesting], None] | None] = [None]


_TRACKERS: Final[list[int]] = [0]
"""How many asked for ownership tracking: each leak watcher (``_leaks.watch``) does, the
pytest plugin's and a run's diagnosis each once, and each stops in its own time."""


def track_ownership() -> None:
    """Record where each lock was taken (for diagnosis), without checking lock order;
    until a matching :func:`untrack_ownership`."""
    _TRACKERS[0] += 1
    DIAGNOSING[0] = True


def untrack_ownership() -> int:
    """Undo one :func:`track_ownership`: tracking stops with the last, unless lock
    order is still checked. Returns how many still track."""
    if _TRACKERS[0] > 0:
        _TRACKERS[0] -= 1
    DIAGNOSING[0] = bool(_TRACKERS[0]) or LOCK_ORDER[0]
    return _TRACKERS[0]


def enable(
    reporter: Callable[[Nesting, Nesting], None],
) -> Callable[[Nesting, Nesting], None] | None:
    """Start checking; ``reporter(earlier, now)`` is called once per inverted pair.

    Returns the reporter this one stands in for, if checking was on already (a
    test diagnosed inside a diagnosed pytest session), for :func:`disable`.
    """
    previous = _reporter[0] if LOCK_ORDER[0] else None
    _reporter[0] = reporter
    DIAGNOSING[0] = True
    LOCK_ORDER[0] = True
    return previous


def disable(previous: Callable[[Nesting, Nesting], None] | None = None) -> None:
    """Stop checking and tracking, and forget what was seen; or, given the reporter
    :func:`enable` stood in for, go on checking for it."""
    if previous is not None:
        _reporter[0] = previous
        return
    LOCK_ORDER[0] = False
    DIAGNOSING[0] = bool(_TRACKERS[0])  # a leak watcher still needs the owners
    _reporter[0] = None
    HELD.clear()
    _SUSPECTS.clear()
    _EDGES.clear()
    _REPORTED.clear()


def acquired(prim: Any, frame: FrameType | None) -> None:
    """``prim`` was just taken by ``frame``, while something is held somewhere.

    (With nothing held at all, the fast paths just store ``HELD[frame] = prim``.)
    Like :func:`released` and :func:`unhold`, guarded whole (see :func:`_failed`).
    """
    try:
        if frame is None:
            return
        if HELD:
            _check(prim, frame)
        held = HELD.get(frame)
        if held is None:
            HELD[frame] = prim
        elif type(held) is Holding:
            held.add(prim)
        else:
            HELD[frame] = Holding((held, prim))
    except Exception as exc:
        _failed(exc)


def released(prim: Any, owner: FrameType | None) -> None:
    """``prim`` (one hold of it) was released; ``owner`` is the frame that took it.

    The fast paths do the commonest case inline, ``HELD.pop(owner)`` giving
    back ``prim`` itself, and call :func:`unhold` with anything else popped.
    """
    try:
        popped = HELD.pop(owner, None) if owner is not None else None
        if popped is not None and popped is not prim:
            unhold(prim, owner, popped)
    except Exception as exc:
        _failed(exc)


def unhold(prim: Any, owner: FrameType | None, popped: Any) -> None:
    """Put back what ``HELD.pop(owner)`` gave that was not ``prim`` alone, less ``prim``."""
    try:
        if type(popped) is Holding:
            popped.discard(prim)
            if len(popped) == 1:
                HELD[owner] = popped[0]
            elif popped:
                HELD[owner] = popped
        else:  # another primitive taken in that frame: still held
            HELD[owner] = popped
    except Exception as exc:
        _failed(exc)


def _failed(exc: Exception) -> None:
    """A bug in this bookkeeping: counted, and checking stops; never the program.

    It runs inside acquire and release, after asyncio's own work is done:
    raising there, an acquire would fail with the lock taken, never to be
    released (every later waiter hung), or a release would fail after
    releasing.
    """
    LOCK_ORDER[0] = False
    RECORDER.fail("lock_order", exc)


def _check(prim: Any, frame: FrameType) -> None:
    """Note a nesting for each class held by ``frame`` or its callers, up to :data:`DEPTH`.

    Only coroutines (and generators) hold primitives, and the first plain
    function up the stack is the event loop's, which runs the task: the walk
    stops there, a handful of look-ups short of :data:`DEPTH`.
    """
    stats = getattr(prim, "_aiotrace_stats", None)
    if stats is None or stats.internal or getattr(stats, "no_lock_order", False):
        return
    f = frame
    for _ in range(DEPTH):
        held = HELD.get(f)
        if type(held) is Holding:
            for held_stats, _, other in held.classes.values():
                if held_stats is not stats:
                    _nested(other, prim, stats, frame)
        elif held is not None and held is not prim:
            _nested(held, prim, stats, frame)
        back = f.f_back
        if back is None or not back.f_code.co_flags & ASYNC_CODE:
            break
        f = back


def _nested(first: Any, second: Any, second_stats: Any, frame: FrameType) -> None:
    first_stats = getattr(first, "_aiotrace_stats", None)
    if (
        first_stats is None
        or first_stats is second_stats
        or first_stats.internal
        or getattr(first_stats, "no_lock_order", False)
    ):
        return
    key = (id(first_stats), id(second_stats))
    if key in _EDGES:
        return
    from aiotrace.primitives._base import current_task_name

    nesting = Nesting(
        first_stats,
        second_stats,
        _acquire_site(first),
        (frame.f_code, frame.f_lasti),
        current_task_name(),
    )
    _EDGES[key] = nesting
    reverse = _EDGES.get((key[1], key[0]))
    pair = frozenset(key)
    if reverse is not None and pair not in _REPORTED:
        _REPORTED.add(pair)
        reporter = _reporter[0]
        if reporter is not None:
            reporter(reverse, nesting)


def sample_holders() -> int:
    """Note where each holder that others queue for is now: one sample each.

    Run by the watchdog's thread at each tick. A lock held while others wait
    is the question; the line its holder is at while they wait (suspended
    in an ``await``, or running) is the answer: ``await fetch(key)`` inside
    the ``async with``. Counted per line on the primitive's class
    (``SiteStats.held_at``); reports show the lines most sampled. Only
    what :data:`HELD` knows (lock-order checking on) is sampled, and only
    the holders whose primitive has waiters. Returns how many holding
    frames were looked at: the sample's cost.
    """
    # Copies, never iterations of what the program's thread changes: a copy
    # runs no Python code midway, so no other thread runs meanwhile. (A
    # ``list(HELD.items())`` builds a tuple per item, whose allocation can
    # start a garbage collection, whose finalisers can let the program's
    # thread run: "dictionary changed size during iteration".)
    entries = HELD.copy()
    for frame, held in entries.items():
        for prim in list(held) if type(held) is Holding else (held,):
            if not getattr(prim, "_waiters", None) or not _owned_by(prim, frame):
                continue
            stats = getattr(prim, "_aiotrace_stats", None)
            if stats is None:
                continue
            counts = stats.held_at
            if counts is None:
                counts = stats.held_at = {}
            key = (frame.f_code, frame.f_lineno)
            counts[key] = counts.get(key, 0) + 1
    return len(entries)


def _owned_by(prim: Any, frame: FrameType) -> bool:
    """Whether ``frame`` holds ``prim`` now: not a finished frame's hold, left in HELD."""
    if getattr(prim, "_aiotrace_owner", None) is frame:
        return True
    permits = getattr(prim, "_aiotrace_permits", None)
    if not permits:
        return False
    return any(permit[1] is frame for permit in list(permits))  # a copy: see above


def _acquire_site(prim: Any) -> tuple[Any, int] | None:
    owner = getattr(prim, "_aiotrace_owner", None)
    if owner is not None:
        return (owner.f_code, getattr(prim, "_aiotrace_olasti", owner.f_lasti))
    permits = getattr(prim, "_aiotrace_permits", None)
    if permits:
        site = permits[-1][2]
        return site if site is not None else None
    return None


__all__ = [
    "DIAGNOSING",
    "HELD",
    "LOCK_ORDER",
    "Nesting",
    "acquired",
    "disable",
    "enable",
    "forget_finished",
    "released",
    "sample_holders",
    "track_ownership",
    "unhold",
]
