"""Lock-order checking (lockdep for asyncio): who takes which lock while holding which.

While enabled (``LOCK_ORDER[0]``), every lock acquisition and semaphore
permit notes its owner frame in :data:`HELD`; an acquisition whose frame, or
one of its callers, already holds another primitive records the nesting
"A then B" between the two primitives' *classes* (their creation sites). The
first time the opposite nesting "B then A" is seen, on any code path, the
reporter is told: a possible deadlock, even if this run never hung.

A lock an ``@asynccontextmanager``'s generator took is held by a frame
suspended at its ``yield``, on no stack: :data:`ENTERED` leads from the frame
running the ``async with`` to it, while ownership is tracked (contextlib's
``__aenter__`` and ``__aexit__`` are wrapped for that long).

Nestings of two primitives of the same class (locks made at one line, such
as one per account) are not checked: their order is by instance, which a
class cannot tell. ``aiotrace.ignore_lock_order(primitive)`` exempts a class.

Costs: a dict look-up and update per acquisition and release while enabled;
the walk up the callers (at most :data:`DEPTH` frames) only when something
is held at all.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiotrace._patching import Patch, PatchSet
from aiotrace._recorder import RECORDER
from aiotrace._sites import CONTEXTLIB_FILE
from aiotrace.primitives._base import (
    ASYNC_CODE,
    ASYNC_GENERATOR,
    ENTER,
    as_coroutine_function,
    outliving,
)

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


ENTERED: Final[dict[Any, Any]] = {}
"""Frame running an ``async with`` -> the async generator of each ``@asynccontextmanager``
it has entered and not left (one, or a list of them); kept while ownership is tracked.

A generator holding a lock (``async with lock: yield``) is suspended at its
``yield``, out of every task's await chain, while the ``async with`` around
it runs: its frame holds the lock, and nothing leads from that frame to the
task. This leads there: the frame that entered it, which is in the task's
chain (or on its stack). Read by lock-order checking (what the task holds up
its stack), and by diagnosis (who holds what such a generator took).
"""

ENTERED_BY: Final[dict[Any, tuple[Any, int]]] = {}
"""The other way: async generator -> the frame that entered its context manager, and
where (its ``f_lasti`` then: the ``async with``)."""


def entered_generators(frame: Any) -> list[Any]:
    """The async generators whose context managers ``frame`` entered and has not left."""
    gens = ENTERED.get(frame)
    if gens is None:
        return []
    return list(gens) if type(gens) is list else [gens]


def entering_frames() -> list[tuple[Any, Any]]:
    """(generator frame, the frame that entered its context manager), for each entered
    ``@asynccontextmanager`` whose generator is suspended. Safe from another thread:
    the dict is copied, which runs no Python code."""
    pairs = []
    for gen, (frame, _) in ENTERED_BY.copy().items():
        gen_frame = getattr(gen, "ag_frame", None)
        if gen_frame is not None:
            pairs.append((gen_frame, frame))
    return pairs


def entered_at(gen_frame: Any) -> tuple[Any, int] | None:
    """(code, lasti) of the ``async with`` that entered the context manager whose generator
    runs ``gen_frame``, if one did. A walk of every entered one: for the rare
    reader (a new nesting, a report), never the hot path."""
    if (
        gen_frame is None
        or not ENTERED_BY
        or not getattr(getattr(gen_frame, "f_code", None), "co_flags", 0) & ASYNC_GENERATOR
    ):
        return None  # (a plain coroutine's frame, as a rule: no walk)
    for gen, (frame, lasti) in ENTERED_BY.copy().items():
        if getattr(gen, "ag_frame", None) is gen_frame:
            return (frame.f_code, lasti)
    return None


def _entered_another(frame: Any, gens: Any, gen: Any) -> None:
    """``frame`` entered ``gen``'s context inside one it entered before: both are held."""
    if type(gens) is list:
        gens.append(gen)
    else:
        ENTERED[frame] = [gens, gen]


def _left(gen: Any) -> None:
    """``gen``'s context was left (or its generator finished): no longer :data:`ENTERED`."""
    entry = ENTERED_BY.pop(gen, None)
    if entry is not None:
        _left_one_of(entry[0], gen)


def _left_one_of(frame: Any, gen: Any) -> None:
    """Of the contexts ``frame`` entered, ``gen``'s was left."""
    gens = ENTERED.pop(frame, None)
    if type(gens) is list:
        with contextlib.suppress(ValueError):
            gens.remove(gen)
        if len(gens) > 1:
            ENTERED[frame] = gens
        elif gens:
            ENTERED[frame] = gens[0]
    elif gens is not None and gens is not gen:  # another's, still entered
        ENTERED[frame] = gens


_PRUNE_AT: Final = [1024]
"""Past this many entered contexts, those whose generator finished are forgotten."""


def _prune_entered() -> None:
    """Forget the contexts whose generator finished without ``__aexit__``: one whose
    entering raised (the generator failed before its ``yield``, as a connection that
    cannot be made). The watchdog's :func:`forget_finished` calls it; where no watchdog
    runs, so does the next entering past :data:`_PRUNE_AT`, which then waits for twice
    as many before looking again."""
    for gen in list(ENTERED_BY):
        if getattr(gen, "ag_frame", None) is None:
            _left(gen)
    _PRUNE_AT[0] = max(1024, 2 * len(ENTERED_BY))


def _context_manager_patches() -> list[Patch]:
    """``@asynccontextmanager``'s ``__aenter__`` and ``__aexit__``, noting who entered which
    generator (:data:`ENTERED`). Each hands back contextlib's own coroutine, unawaited:
    no frame of ours is left in a traceback, nor in the program's await chain.
    Installed only while ownership is tracked (see :func:`_follow_context_managers`).
    """
    cls: Any = getattr(contextlib, "_AsyncGeneratorContextManager", None)
    if cls is None or "__aenter__" not in vars(cls) or "__aexit__" not in vars(cls):
        return []  # pragma: no cover - a contextlib we do not know: nothing noted
    orig_aenter = vars(cls)["__aenter__"]
    orig_aexit = vars(cls)["__aexit__"]
    entered = ENTERED
    entered_by = ENTERED_BY
    getframe = sys._getframe

    @functools.wraps(orig_aenter)
    def __aenter__(self: Any) -> Any:
        try:
            frame = getframe(1)  # the ``async with``, as a rule
            code = frame.f_code
            flags = code.co_flags
            if flags & ASYNC_CODE:  # (else not a task's: nothing to note)
                if (
                    flags & ASYNC_GENERATOR
                    or code.co_filename == CONTEXTLIB_FILE  # AsyncExitStack's
                    or code.co_name == ENTER
                ):
                    frame = outliving(frame)  # the frame running the ``async with``
                gen = self.gen
                entered_by[gen] = (frame, frame.f_lasti)
                if len(entered_by) > _PRUNE_AT[0]:
                    _prune_entered()
                gens = entered.get(frame)
                if gens is None:
                    entered[frame] = gen
                elif gens is not gen:
                    _entered_another(frame, gens, gen)
        except Exception as exc:
            _failed(exc)
        return orig_aenter(self)

    @functools.wraps(orig_aexit)
    def __aexit__(self: Any, typ: Any, value: Any, traceback: Any) -> Any:
        try:
            gen = self.gen
            entry = entered_by.pop(gen, None)
            if entry is not None:
                frame = entry[0]
                if entered.get(frame) is gen:  # the one its frame entered, as a rule
                    entered.pop(frame, None)
                else:
                    _left_one_of(frame, gen)
        except Exception as exc:
            _failed(exc)
        return orig_aexit(self, typ, value, traceback)

    for method in (__aenter__, __aexit__):
        as_coroutine_function(method)
    return [Patch(cls, "__aenter__", __aenter__), Patch(cls, "__aexit__", __aexit__)]


_CONTEXT_PATCHES: Final[list[PatchSet]] = []
"""The ``@asynccontextmanager`` patches while they are installed."""


def _follow_context_managers() -> None:
    """Install :func:`_context_manager_patches` when ownership tracking starts, and take
    them out when it stops. A program traced without diagnosis pays nothing for them."""
    try:
        if DIAGNOSING[0]:
            if not _CONTEXT_PATCHES:
                patches = PatchSet(_context_manager_patches())
                patches.apply()
                _CONTEXT_PATCHES.append(patches)
        else:
            ENTERED.clear()
            ENTERED_BY.clear()
            if _CONTEXT_PATCHES:
                _CONTEXT_PATCHES.pop().revert()
    except Exception as exc:  # the holder of such a generator's lock stays unknown
        RECORDER.fail("lock_order", exc)


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
    program keeps it. The same goes for the frames that entered context
    managers (:data:`ENTERED`), and for generators that finished without
    their context being left.
    """
    _prune_entered()
    missing: set[int] = set()
    for frame in [*HELD, *ENTERED]:
        key = id(frame)
        if key in running:
            continue
        if key in _SUSPECTS:
            HELD.pop(frame, None)
            for gen in entered_generators(frame):
                _left(gen)
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
    first_via: tuple[Any, int] | None = None
    """Where the ``@asynccontextmanager`` that took the first was entered, if one did."""
    second_via: tuple[Any, int] | None = None
    """The same for the second."""


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
    _follow_context_managers()


def untrack_ownership() -> int:
    """Undo one :func:`track_ownership`: tracking stops with the last, unless lock
    order is still checked. Returns how many still track."""
    if _TRACKERS[0] > 0:
        _TRACKERS[0] -= 1
    DIAGNOSING[0] = bool(_TRACKERS[0]) or LOCK_ORDER[0]
    _follow_context_managers()
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
    _follow_context_managers()
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
    _follow_context_managers()
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
    """Note a nesting for each class held by ``frame`` or its callers, up to :data:`DEPTH`,
    or by the ``@asynccontextmanager`` generators they are inside (:data:`ENTERED`).

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
        if held is not None:
            _check_held(held, prim, stats, frame)
        if ENTERED:
            gens = ENTERED.get(f)
            if gens is not None:  # what its ``@asynccontextmanager`` generators hold
                for gen in gens if type(gens) is list else (gens,):
                    gen_frame = getattr(gen, "ag_frame", None)
                    held = HELD.get(gen_frame) if gen_frame is not frame else None
                    if held is not None:
                        _check_held(held, prim, stats, frame)
        back = f.f_back
        if back is None or not back.f_code.co_flags & ASYNC_CODE:
            break
        f = back


def _check_held(held: Any, prim: Any, stats: Any, frame: FrameType) -> None:
    """Note a nesting for each class in ``held`` (what one frame holds) before ``prim``."""
    if type(held) is Holding:
        for held_stats, _, other in held.classes.values():
            if held_stats is not stats:
                _nested(other, prim, stats, frame)
    elif held is not None and held is not prim:
        _nested(held, prim, stats, frame)


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
    from aiotrace.primitives._base import current_task_name, task_name, task_of_frame

    owner = _acquire_owner(first)
    # The holder's task: the running one, as a rule, but not for asyncio.wait_for(
    # lock.acquire(), t) on 3.10-3.11, which takes it in a task of its own.
    holder = task_of_frame(frame)
    nesting = Nesting(
        first_stats,
        second_stats,
        _acquire_site(first),
        (frame.f_code, frame.f_lasti),
        task_name(holder) if holder is not None else current_task_name(),
        entered_at(owner) if owner is not None else None,
        entered_at(frame),
    )
    _EDGES[key] = nesting
    reverse = _EDGES.get((key[1], key[0]))
    pair = frozenset(key)
    if reverse is not None and pair not in _REPORTED:
        _REPORTED.add(pair)
        reporter = _reporter[0]
        if reporter is not None:
            reporter(reverse, nesting)


def sample_holders(threads_running: Callable[[], set[int] | None]) -> int:
    """Note where each holder that others queue for is now: one sample each.

    Run by the watchdog's thread at each tick. A lock held while others wait
    is the question; the line its holder is at while they wait (suspended
    in an ``await``, or running) is the answer: ``await fetch(key)`` inside
    the ``async with``. Counted per line on the primitive's class
    (``SiteStats.held_at``); reports show the lines most sampled. Only
    what :data:`HELD` knows (lock-order checking on) is sampled, and only
    the holders whose primitive has waiters. Returns how many holding
    frames were looked at: the sample's cost. ``threads_running`` reads the
    ids of the frames threads run now (the diagnosis's safe read of
    ``sys._current_frames()``; None if they cannot be read), asked only for a
    holder that may have returned holding (see :func:`_where_now`).
    """
    # Copies, never iterations of what the program's thread changes: a copy
    # runs no Python code midway, so no other thread runs meanwhile. (A
    # ``list(HELD.items())`` builds a tuple per item, whose allocation can
    # start a garbage collection, whose finalisers can let the program's
    # thread run: "dictionary changed size during iteration".)
    entries = HELD.copy()
    # A generator holding for the ``async with`` around it is at its ``yield``:
    # the line that says something is where the frame that entered it is.
    entering = {id(gen_frame): frame for gen_frame, frame in entering_frames()}
    running: set[int] | None = None  # the frames threads run now, once needed
    asked = False
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
            at = entering.get(id(frame), frame) if entering else frame
            if at.f_back is not None:  # running now, or it returned holding it (3.12+)
                if not asked:
                    running, asked = threads_running(), True
                if running is not None:
                    at = _where_now(at, running)
            key = (at.f_code, at.f_lineno)
            counts[key] = counts.get(key, 0) + 1
    return len(entries)


def _where_now(frame: FrameType, running: set[int]) -> FrameType:
    """The frame whose line tells where ``frame``'s hold is now.

    ``frame`` itself, suspended or running; but a coroutine that returned
    holding what it took (a pool's ``acquire()``) sat at its ``return`` in
    every sample: from 3.12 its finished frame names the caller it returned
    to, whose line it is (or that one's, if it returned too). 3.10 and 3.11
    name none: their samples stay at the ``return``.
    """
    for _ in range(64):
        back = frame.f_back
        if back is None or id(frame) in running:
            return frame
        frame = back
    return frame


def _owned_by(prim: Any, frame: FrameType) -> bool:
    """Whether ``frame`` holds ``prim`` now: not a finished frame's hold, left in HELD."""
    if getattr(prim, "_aiotrace_owner", None) is frame:
        return True
    permits = getattr(prim, "_aiotrace_permits", None)
    if not permits:
        return False
    return any(permit[1] is frame for permit in list(permits))  # a copy: see above


def _acquire_owner(prim: Any) -> FrameType | None:
    """The frame that took ``prim`` (a semaphore: the latest permit's)."""
    owner = getattr(prim, "_aiotrace_owner", None)
    if owner is not None:
        return owner  # type: ignore[no-any-return]
    permits = getattr(prim, "_aiotrace_permits", None)
    return permits[-1][1] if permits else None


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
