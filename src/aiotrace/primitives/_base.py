"""What every primitive family shares: identity, creation sites, wait/hold bookkeeping.

Every traced primitive instance carries three attributes:

``_aiotrace_ref``
    a :class:`PrimRef` (process-unique id, kind, explicit name, creation site);
``_aiotrace_stats``
    the :class:`SiteStats` of its creation site, shared by every instance made
    there, whose ``n`` the fast path increments;
``_aiotrace_t0`` / ``_aiotrace_owner``
    (locks) when the current hold began and which task holds it.

Primitives created before ``instrument()`` have none of them. For
Condition, Barrier and Queue, whose fast paths read one of them at most,
class-level defaults installed by the patch layer make reads work; they
are patches like any other, so ``uninstrument()`` removes them. Lock,
Semaphore and Event, whose every wait and hold reads several, cannot:
from Python 3.12 a class attribute named like an instance attribute stops
CPython specialising every access to it, which made the uncontended
``async with lock`` cost 1.64x bare instead of 1.34x. Their patched
``__init__`` gives every new instance its attributes (:func:`defaults_setter`),
and the patched methods :func:`adopt_preexisting` an older instance the
first time a read finds one missing. The slow path creates a ref lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import itertools
import re
import sys
import threading
import weakref
from _thread import get_ident
from asyncio.events import _get_running_loop
from collections import deque
from time import perf_counter_ns
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Final

from aiotrace import semconv
from aiotrace._context import current_span
from aiotrace._loops import coro_of
from aiotrace._recorder import R_HOLD, R_OPTIONAL, R_SPAN, RECORDER
from aiotrace._sites import (
    CONTEXTLIB_FILE,
    SITES,
    RawSite,
    as_untraced,
    capture_creation,
    field_name,
    file_kind,
    first_user_frame,
    site_and_via,
    via_label,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable, Iterator

_pid_counter = itertools.count(1)
next_pid: Final[Callable[[], int]] = _pid_counter.__next__

CancelledError: Final = asyncio.CancelledError


# asyncio's own dict of the task running in each loop, kept by the C
# accelerator on 3.10-3.13. ``tasks_by_loop(running_loop())`` is two C calls,
# cheaper than ``asyncio.current_task()`` (a Python function before 3.12), so
# the fast paths inline it.
running_loop: Final = _get_running_loop
_current_tasks: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)
if isinstance(_current_tasks, dict):
    tasks_by_loop: Callable[[Any], Any] = _current_tasks.get
else:  # pragma: no cover - a future Python without the dict

    def tasks_by_loop(loop: Any) -> Any:
        """``asyncio.current_task(loop)``, or ``None`` outside a loop."""
        return asyncio.current_task(loop) if loop is not None else None


def current_task() -> asyncio.Task[Any] | None:
    """``asyncio.current_task()`` that returns ``None`` instead of raising outside a loop."""
    return tasks_by_loop(running_loop())  # type: ignore[no-any-return]


def current_task_name() -> str | None:
    """Name of the running task, or ``None`` outside any task."""
    task = tasks_by_loop(running_loop())
    if task is None:
        return None
    try:
        return task.get_name()  # type: ignore[no-any-return]
    except Exception:  # a Task subclass with a broken get_name()
        return None


# Owners are frames: ``sys._getframe(1)`` costs ~20 ns where finding the current
# task costs ~110 ns on 3.10-3.11. The frame of the coroutine that acquired a
# primitive stays alive while it holds it, and maps back to its task when
# someone asks (a span is built, a deadlock is diagnosed).


ASYNC_GENERATOR: Final = inspect.CO_ASYNC_GENERATOR
ASYNC_CODE: Final = (
    inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_GENERATOR
)
"""Flags of the code a frame that can hold a primitive runs: a task's, not the loop's."""
ENTER: Final = "__aenter__"
COROUTINE_NOT_GENERATOR: Final = (
    inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_GENERATOR
)
"""A frame whose code has none of these flags is an async generator's or no coroutine's
(the loop's, running a task made of an ``acquire()``): one test for both."""


def as_coroutine_function(function: Any) -> None:
    """Let ``inspect`` and ``asyncio`` (``iscoroutinefunction``) take a plain function
    that returns the original's coroutine for the ``async def`` it stands in for."""
    mark = getattr(inspect, "markcoroutinefunction", None)  # 3.12+
    if mark is not None:
        mark(function)
    else:  # 3.10-3.11: asyncio's own mark
        function._is_coroutine = getattr(asyncio.coroutines, "_is_coroutine", None)


def outliving(frame: FrameType) -> FrameType:
    """The frame that holds what ``frame`` just took, where ``frame`` returns holding it.

    An explicit ``acquire()`` in a context manager of the program's own: a
    class's ``__aenter__`` returns holding the lock, and an
    ``@asynccontextmanager`` generator is suspended at its ``yield``, out of
    its task's await chain. Neither runs while the ``async with`` body does,
    so neither maps back to the holding task: a deadlock through two such
    guards read as a hang nobody could end, and their nesting was never seen
    by lock-order checking. The holder is the frame running the ``async
    with`` (or the ``async for`` over a generator holding it): up past every
    ``__aenter__``, async generator and ``contextlib`` frame (a context
    entered through ``AsyncExitStack.enter_async_context``). Called only for
    the first two kinds of frame, tested by the caller with ``co_flags`` and
    ``co_name``.
    """
    back = frame.f_back
    # Never past a task's first coroutine, into the loop's frames (an
    # ``__aenter__`` run as a task of its own holds what it took itself).
    while back is not None and back.f_code.co_flags & ASYNC_CODE:
        frame = back
        code = frame.f_code
        if not (
            code.co_flags & ASYNC_GENERATOR
            or code.co_name == ENTER
            or code.co_filename == CONTEXTLIB_FILE  # AsyncExitStack.enter_async_context
        ):
            break
        back = frame.f_back
    return frame


def outliving_and_site(frame: FrameType) -> tuple[FrameType, FrameType]:
    """:func:`outliving`, and the frame whose line is the hold's site.

    That is the outliving frame's line, the program's ``async with`` of its own
    context manager, unless a library's code entered the context manager (FastAPI's
    dependency injection, through an ``AsyncExitStack``): then ``frame``'s, the
    program's line that took it. ``fastapi/dependencies/utils.py:659`` says
    nothing of which dependency holds the pool.
    """
    outer = outliving(frame)
    if file_kind(outer.f_code.co_filename) is None and file_kind(frame.f_code.co_filename) is False:
        return outer, frame
    return outer, outer


STACK_ENTER: Final = contextlib.AsyncExitStack.enter_async_context.__code__
"""``AsyncExitStack.enter_async_context``'s code. A primitive it enters
(``await stack.enter_async_context(lock)``) is held by its caller, the frame
whose ``async with AsyncExitStack()`` releases it: ``enter_async_context``
returns at once. Taken for the owner, its finished frame made a deadlock
through two stacks read as two leaks (3.10-3.11), the second lock a stack
took was never seen nested in the first, and holders were sampled at its
``return``. Compared by identity where a primitive is taken (see
:func:`outliving`)."""


class _StackProbe:
    """For :func:`_stack_enter_lasti`: notes its caller's ``f_lasti`` when entered."""

    def __init__(self, seen: list[int]) -> None:
        self.seen = seen

    async def __aenter__(self) -> None:
        self.seen.append(sys._getframe(1).f_lasti)

    async def __aexit__(self, *exc: object) -> None:
        return None


def _stack_enter_lasti() -> int:
    """``enter_async_context``'s ``f_lasti`` while the ``__aenter__`` it awaits runs.

    A Lock's ``async with`` reads its caller's ``f_lasti`` anyway under diagnosis;
    only where it equals this is the caller's code compared with :data:`STACK_ENTER`.
    Reading ``f_code`` on every entry cost an uncontended ``async with lock``, checked,
    0.06x of a bare one in instructions. (-1, never an ``f_lasti``, if this cannot
    tell: what a stack enters is then held by its finished frame, as before.)
    """
    seen: list[int] = []
    try:
        entering = contextlib.AsyncExitStack().enter_async_context(_StackProbe(seen))
        try:
            entering.send(None)
        except StopIteration:
            pass
        finally:
            entering.close()
        return seen[0] if seen else -1
    except Exception:
        return -1


STACK_ENTER_LASTI: Final = _stack_enter_lasti()


def asyncio_callers_holder(frame: FrameType) -> FrameType | None:
    """Who holds what an ``acquire()`` that asyncio called (``frame``, asyncio's) took.

    ``await asyncio.wait_for(lock.acquire(), timeout)``, the common way to take
    a lock with a time limit. From 3.12 ``wait_for`` awaits it in the caller's
    own task: the holder is the first frame up that is not asyncio's. On 3.10
    and 3.11 ``wait_for`` runs it as a task of its own, which finishes holding
    it: the holder is the frame awaiting ``wait_for``, in the task that
    ``wait_for`` wakes (see :func:`_wait_for_caller`). Taken for the owner,
    ``asyncio/tasks.py`` (or the loop's ``Handle._run``, on 3.10 and 3.11) was
    the line reported, lock order never saw such locks nested, and on 3.10
    and 3.11 a deadlock through two of them read as two leaks. Any other
    task made of an ``acquire()`` (``create_task(lock.acquire())``) holds it
    for nobody we can name: None, as for a lock taken before tracing.
    """
    user = first_user_frame(frame)
    if user is not None and user.f_code.co_flags & ASYNC_CODE:
        return user
    # (A task's first coroutine has below it the loop's frame, or under uvloop,
    # whose loop has none, ``asyncio.run()``'s and the program's that called it.)
    return _wait_for_caller(current_task())


def held_past_asyncio(frame: FrameType) -> FrameType | None:
    """``frame``, the caller of an ``acquire()``, unless it is ``asyncio.wait_for``'s or no
    coroutine's (a task made of the ``acquire()``): then :func:`asyncio_callers_holder`."""
    code = frame.f_code
    if code is WAIT_FOR or not code.co_flags & ASYNC_CODE:
        return asyncio_callers_holder(frame)
    return frame


WAIT_FOR: Final = getattr(asyncio.tasks.wait_for, "__code__", None)
"""``asyncio.wait_for``'s code: from 3.12 it awaits what it is given itself."""
_RELEASE_WAITER: Final = getattr(asyncio.tasks, "_release_waiter", None)
"""3.10-3.11's ``wait_for`` wakes itself through this, given its task's ``done`` callback."""


def _wait_for_caller(task: Any) -> FrameType | None:
    """The frame awaiting the ``asyncio.wait_for()`` that runs ``task`` (3.10-3.11), if any.

    That ``wait_for`` gave ``task`` a done callback, ``partial(_release_waiter,
    waiter)``, and awaits ``waiter``: whose own callback wakes the task awaiting
    ``wait_for`` (a bound method of that task). In that task's await chain the
    frame before ``wait_for``'s is the caller.
    """
    if _RELEASE_WAITER is None or task is None:
        return None
    for callback, _ in getattr(task, "_callbacks", None) or ():
        if getattr(callback, "func", None) is not _RELEASE_WAITER or not callback.args:
            continue
        for wake, _ in getattr(callback.args[0], "_callbacks", None) or ():
            outer = getattr(wake, "__self__", None)
            if not isinstance(outer, asyncio.Task):
                continue
            caller = None
            for frame in chain_frames(outer):
                if frame.f_code is WAIT_FOR:
                    return caller
                caller = frame
    return None


def holding(owner: FrameType, frames: Container[int]) -> FrameType | None:
    """``owner`` if ``frames`` (ids) has it, else the first of its callers it has.

    A coroutine that returns holding what it took (``connect()`` taking the
    lock that ``close()`` gives back) leaves it to its caller, the frame that
    holds it now. From 3.12 a finished frame still names that caller
    (``f_back``); 3.10 and 3.11 drop it, and such a hold stays nobody's. A
    suspended owner has no caller to follow (its task's chain has it, or
    nothing does). The walk stops at the first plain function: the event
    loop's, below a task's first coroutine, which every task's stack shares.
    """
    frame: FrameType | None = owner
    for _ in range(64):
        if frame is None:
            return None
        if id(frame) in frames:
            return frame
        frame = frame.f_back
        if frame is not None and not frame.f_code.co_flags & ASYNC_CODE:
            return None
    return None


def stack_ids(frame: FrameType | None, limit: int = 64) -> set[int]:
    """The ids of ``frame`` and its callers: a stack to look frames up in."""
    ids = set()
    while frame is not None and limit:
        ids.add(id(frame))
        frame = frame.f_back
        limit -= 1
    return ids


def in_stack(target: FrameType, frame: FrameType | None, limit: int = 64) -> bool:
    """Whether ``target`` is ``frame`` or one of its callers (the running stack)."""
    while frame is not None and limit:
        if frame is target:
            return True
        frame = frame.f_back
        limit -= 1
    return False


def _awaits_frame(task: Any, target: FrameType) -> bool:
    return any(frame is target for frame in chain_frames(task))


HOLDER_SCAN_SHARE: Final = 0.05
"""Over time, at most this share of the program's time goes to looking for tasks by frame."""
HOLDER_SCAN_BURST_NS: Final = 20_000_000
"""...and at most this much at once, after a quiet while."""


class HolderLookups:
    """Which task runs which suspended frame, as last read, and how much reading is left.

    A release by another task than the one that took the lock must find the
    holder's task from its frame (all the hot path keeps), and nothing leads
    from a suspended frame to its task: every task's await chain is read,
    about 1.3 µs a task, 13 ms with 10,000 tasks waiting. Done at each such
    release, that was a cliff. So one reading indexes the frames of every
    task's chain, and answers every later question about them (checked
    against that task's chain: it may have moved on). A frame that was
    already holding the lock when the loop's tasks were last read and is in
    no task's chain now is in none for good (its coroutine finished, or runs
    outside any task): only a lock taken since asks for a new reading.

    Readings are paid from a budget that grows with the program's time
    (``share`` of it, up to ``burst_ns`` saved). When it is spent, the hold
    span goes without its holder's name (its acquire site still says where
    it was taken), counted in ``skipped`` and in ``aiotrace.stats()``.
    """

    __slots__ = (
        "burst_ns",
        "credit_ns",
        "found",
        "last_ns",
        "read_loop",
        "read_ns",
        "scans",
        "share",
        "skipped",
    )

    def __init__(self) -> None:
        self.found: dict[int, weakref.ref[Any]] = {}
        """id(frame) -> the task whose chain held it, at the last reading."""
        self.read_loop = 0
        """id() of the loop whose tasks were last read..."""
        self.read_ns = 0
        """...and when that reading began."""
        self.share = HOLDER_SCAN_SHARE
        self.burst_ns = HOLDER_SCAN_BURST_NS
        self.credit_ns = HOLDER_SCAN_BURST_NS
        self.last_ns = perf_counter_ns()
        self.scans = 0
        self.skipped = 0

    def afford(self) -> bool:
        """Whether a reading may be made now."""
        now = perf_counter_ns()
        self.credit_ns = min(self.burst_ns, self.credit_ns + int((now - self.last_ns) * self.share))
        self.last_ns = now
        if self.credit_ns > 0:
            return True
        self.skipped += 1
        RECORDER.stats.holders_unnamed += 1
        return False

    def forget(self) -> None:
        """Let the last reading go (with 10,000 tasks, a dict of 30,000 frames' ids)."""
        self.found = {}
        self.read_loop = 0

    def read(self, loop: Any) -> None:
        """Index the frames of every task on ``loop`` (:func:`tasks_by_frame`), weakly."""
        start = perf_counter_ns()
        found: dict[int, weakref.ref[Any]] = {}
        refs: dict[int, weakref.ref[Any]] = {}  # id(task) -> its one weak reference
        for key, task in tasks_by_frame(asyncio.all_tasks(loop), sys._getframe(1)).items():
            known = refs.get(id(task))
            if known is None:
                try:
                    known = refs[id(task)] = weakref.ref(task)
                except TypeError:  # a task-like object of the program's, not weakly referable
                    continue
            found[key] = known
        self.found = found
        self.read_loop = id(loop)
        self.read_ns = start
        end = perf_counter_ns()
        self.scans += 1
        self.credit_ns -= end - start
        self.last_ns = end


HOLDERS: Final = HolderLookups()


_OPAQUE_AWAITABLES: Final = frozenset(
    {"async_generator_asend", "async_generator_athrow", "coroutine_wrapper"}
)
"""What an await chain can pass through without a name for the next link:
``async for`` over an async generator awaits an ``async_generator_asend``
(``_athrow``, closing it), an awaitable whose ``__await__`` returns a
coroutine's (aiohttp's ``session.get()``) a ``coroutine_wrapper``. Each
refers to the generator or coroutine it steps, which the garbage
collector's referents give. By name: making one to take its type would
start an async generator, which a running loop's hooks would then keep."""


_OPAQUE_TYPES: dict[type, bool] = {}


def _opaque(kind: type) -> bool:
    """Whether objects of ``kind`` are :data:`_OPAQUE_AWAITABLES` (known by type once)."""
    known = _OPAQUE_TYPES.get(kind)
    if known is None:
        if len(_OPAQUE_TYPES) > 1000:  # classes made on the fly, say
            _OPAQUE_TYPES.clear()
        known = _OPAQUE_TYPES[kind] = kind.__name__ in _OPAQUE_AWAITABLES
    return known


def chain_frames(task: Any) -> Iterator[FrameType]:
    """The frames of ``task``'s suspended await chain, outermost first.

    A running task's chain stops at its outermost coroutine: the rest is on
    its thread's stack. The chain goes on through the awaitables of
    :data:`_OPAQUE_AWAITABLES`: a task stuck inside an async generator it
    iterates, or inside a library's request, is stuck where that one is.
    """
    coro = coro_of(task)
    for _ in range(256):
        if coro is None:
            return
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            yield frame
        awaited = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
        if awaited is None and _opaque(type(coro)):
            awaited = next(
                (
                    r
                    for r in gc.get_referents(coro)
                    if hasattr(r, "cr_frame") or hasattr(r, "ag_frame")
                ),
                None,
            )
        coro = awaited


def tasks_by_frame(tasks: Iterable[Any], stack: FrameType | None) -> dict[int, Any]:
    """id(frame) -> the task running it, for every frame of ``tasks``' await chains.

    Who holds what a frame took. A running task's chain stops at its
    outermost coroutine: the rest of it is on this thread's ``stack``, below
    that frame. Below it there may be another running task's (an eager
    task's first step runs inside ``create_task()``, on its creator's
    stack): each frame on the stack belongs to the first task's outermost
    coroutine met above it.
    """
    by_frame: dict[int, Any] = {}
    for task in tasks:
        for frame in chain_frames(task):
            by_frame.setdefault(id(frame), task)
    unowned: list[int] = []
    for _ in range(256):
        if stack is None:
            break
        unowned.append(id(stack))
        outermost = by_frame.get(id(stack))
        if outermost is not None:  # a running task's: the frames met so far are its
            by_frame.update(dict.fromkeys(unowned, outermost))
            unowned.clear()
        stack = stack.f_back
    return by_frame


def task_of_frame(
    target: FrameType | None, taken_ns: int | None = None
) -> asyncio.Task[Any] | None:
    """The task whose await chain contains ``target`` (None if it is no task's any more).

    The running task is found through the Python stack (its ``cr_await`` is
    not set while it runs); the others through their suspended await chains,
    as :class:`HolderLookups` last read them. ``taken_ns``: when ``target``
    took what is released (it ran in its task then).
    """
    if target is None:
        return None
    loop = running_loop()
    if loop is None:
        return None
    current = tasks_by_loop(loop)
    if current is not None and in_stack(target, sys._getframe(1), 256):
        return current  # type: ignore[no-any-return]
    lookups = HOLDERS
    for attempt in range(2):
        known = lookups.found.get(id(target))
        task = known() if known is not None else None
        if task is not None and _awaits_frame(task, target):
            return task  # type: ignore[no-any-return]
        if attempt or (
            taken_ns is not None and taken_ns < lookups.read_ns and lookups.read_loop == id(loop)
        ):
            return None  # in no task's chain at the last reading, nor since
        if not lookups.afford():
            return None
        lookups.read(loop)
    return None


def task_name(task: asyncio.Task[Any] | None) -> str | None:
    """The task's name, or ``None`` outside any task."""
    if task is None:
        return None
    try:
        return task.get_name()
    except Exception:  # a Task subclass with a broken get_name()
        return None


class SiteStats:
    """Counters for all primitives created at one site; bounded by the program's code size."""

    __slots__ = (
        "capacity",
        "held_at",
        "holds",
        "internal",
        "kind",
        "label",
        "max_hold_ns",
        "max_wait_ns",
        "n",
        "no_lock_order",
        "owner",
        "raw",
        "spanned",
        "thread",
        "via",
        "wait_ns",
        "waits",
    )

    def __init__(
        self, kind: str, raw: RawSite | None, internal: bool, via: RawSite | None = None
    ) -> None:
        self.n = 0
        """Fast-path operations (uncontended, short) at this site."""
        self.kind = kind
        self.raw = raw
        self.internal = internal
        self.via = via
        """Where ``raw`` is a library's line: the program's line that led there.

        A library's primitives are counted per program line that made them:
        the pool behind ``users = Pool()`` apart from the one behind
        ``orders = Pool()``, though both locks come from one line of the pool.
        """
        self.waits = 0
        self.wait_ns = 0
        self.max_wait_ns = 0
        self.holds = 0
        """Holds that went through the slow path (waited for, or long)."""
        self.max_hold_ns = 0
        self.spanned = 0
        """Slow-path operations (waits and holds) past their threshold, or internal.

        The hot paths count a wait or a hold and nothing else; the rare
        paths count here what went past the threshold, so the operations
        below it (``quiet``) cost no counter of their own.
        """
        self.label: str | None = None
        """The name given with ``aiotrace.name()`` (the last one, if several)."""
        self.capacity: int | None = None
        """Semaphores: the permits of those made here, or ``CAPACITIES_VARY``."""
        self.no_lock_order = False
        """Left out of lock-order checking (``aiotrace.ignore_lock_order``)."""
        self.owner: tuple[SiteStats, str] | None = None
        """For a helper (a Condition's own Lock): its owner's stats and the name suffix."""
        self.held_at: dict[tuple[CodeType, int], int] | None = None
        """(code, line) -> how often a holder of one of these was sampled there while
        others waited (see ``_lock_order.sample_holders``); None until then."""
        self.thread = get_ident() if raw is not None else 0
        """The thread that made this site's primitives, or 0: several threads did, or
        it is not known.

        The pytest plugin counts a test's waits from these counters, which
        every thread adds to; a server that a session fixture runs on a
        thread of its own, waiting on its own events all session, is not
        any test's waiting (see ``pytest_plugin._measure``).
        """

    def display_name(self, suffix: str = "") -> str:
        """The name reports show for this site: given, derived from an owner, or from the site.

        ``suffix``: a helper's, named after this site's primitive (see :func:`site_name`).
        """
        if self.owner is not None:
            owner, own = self.owner
            return owner.display_name(own + suffix)
        if self.label is not None:
            return self.label + suffix
        if self.raw is None:
            return f"{self.kind}{suffix} {semconv.UNKNOWN_SITE}"
        return site_name(self.raw, self.via, suffix)

    @property
    def operations(self) -> int:
        """Fast-path operations, holds and waits at this site."""
        return self.n + self.holds + self.waits

    @property
    def quiet(self) -> int:
        """Slow-path operations not spanned (below their threshold)."""
        return self.waits + self.holds - self.spanned

    @property
    def below_threshold(self) -> int:
        """Operations counted but not spanned."""
        return self.n + self.waits + self.holds - self.spanned


class PrimRef:
    """Identity of one primitive instance, without a reference back to it."""

    __slots__ = ("capacity", "kind", "name", "pid", "raw", "stats")

    def __init__(self, kind: str, raw: RawSite | None, stats: SiteStats) -> None:
        self.pid = next_pid()
        self.kind = kind
        self.raw = raw
        self.stats = stats
        self.name: str | None = None
        self.capacity: int | None = None
        """A semaphore's initial value."""


_SITE_LIMIT: Final = 50_000
_site_stats: dict[tuple[int, int, str, bool, int, int], SiteStats] = {}
_site_lock = threading.Lock()
_overflow: dict[str, SiteStats] = {}
PREEXISTING: Final[dict[str, SiteStats]] = {}
"""Shared stats of primitives created before instrumentation, per kind."""


def preexisting_stats(kind: str) -> SiteStats:
    """The stats bucket for primitives of ``kind`` created before ``instrument()``."""
    stats = PREEXISTING.get(kind)
    if stats is None:
        stats = SiteStats(kind, None, False)
        PREEXISTING[kind] = stats
        RECORDER.sites.append(stats)
    return stats


def defaults_setter(defaults: dict[str, Any]) -> Callable[[Any], None]:
    """A function setting aiotrace's per-instance attributes on a new primitive, in one order.

    One order keeps them in the class's shared key layout, where CPython
    specialises their accesses. Generated, as ``dataclasses`` generates an
    ``__init__``: an attribute store per field, its value bound as a default
    argument. A loop of ``setattr`` calls cost a Lock's ten fields 1.3 µs,
    a third of its traced creation; this costs 0.13 µs.
    """
    names = list(defaults)
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"not attribute names: {names!r}")
    values = {f"_v{i}": value for i, value in enumerate(defaults.values())}
    params = "".join(f", {v}={v}" for v in values)
    body = "".join(f"    prim.{name} = _v{i}\n" for i, name in enumerate(names)) or "    pass\n"
    namespace: dict[str, Any] = dict(values)
    exec(f"def give_defaults(prim{params}):\n{body}", namespace)  # our own text
    setter: Callable[[Any], None] = namespace["give_defaults"]
    setter.__qualname__ = "defaults_setter.<locals>.give_defaults"
    setter.__module__ = __name__
    return setter


def adopt_preexisting(prim: Any, defaults: dict[str, Any]) -> None:
    """Give a primitive made before ``instrument()`` the attributes it lacks.

    Only the missing ones: a patched fast path may already have stored some
    (when the current hold began) on an old instance.
    """
    for name, value in defaults.items():
        if not hasattr(prim, name):
            setattr(prim, name, value)


def stats_for(
    kind: str, raw: RawSite | None, internal: bool, via: RawSite | None = None
) -> SiteStats:
    """The shared :class:`SiteStats` of a creation site (and program line, see ``via``)."""
    if raw is None:
        return preexisting_stats(kind)
    if via is None:
        key = (id(raw[0]), raw[1], kind, internal, 0, -1)
    else:
        key = (id(raw[0]), raw[1], kind, internal, id(via[0]), via[1])
    stats = _site_stats.get(key)
    if stats is None:
        with _site_lock:
            stats = _site_stats.get(key)
            if stats is None:
                if len(_site_stats) >= _SITE_LIMIT:
                    stats = _overflow.get(kind)
                    if stats is None:
                        stats = _overflow[kind] = SiteStats(kind, None, internal)
                        RECORDER.sites.append(stats)
                    return stats
                stats = SiteStats(kind, raw, internal, via)
                _site_stats[key] = stats
                RECORDER.sites.append(stats)
    return stats


WATCHED: Final[list[weakref.WeakSet[Any] | None]] = [None]
"""Locks and semaphores created while a leak check watches (see ``_leaks.watch``)."""

_WATCHED_KINDS: Final[set[str]] = {
    semconv.KIND_LOCK,
    semconv.KIND_SEMAPHORE,
    semconv.KIND_BOUNDED_SEMAPHORE,
}
"""Kinds remembered while watching; diagnosis adds every kind (for its wait-for graph)."""


PROGRAM_SITES: Final[dict[tuple[int, int, str], SiteStats]] = {}
"""(id(code), lasti, kind) of a creation line in the program's own code -> its stats.

A program that makes a primitive per request or per connection (``self._lock
= asyncio.Lock()`` in a class's ``__init__``) makes it at one line, over and
over. What the walk of :func:`capture_creation` finds for such a line is the
line itself, never internal, with no program line behind it; only the
``__init__`` that called ours needs looking at, and this finds its answer in
one look-up (half of a Lock's traced creation, before). A library's line is
not kept: its program line differs from call to call. Bounded as the stats
are: an entry shares its stats' code object, whose id it keys on."""


FIELD_SITES: Final[dict[tuple[int, int, int, int, str], SiteStats]] = {}
"""(id(code), lasti) of a dataclass's generated ``__init__`` making a field's default,
(id(code), lasti) of the program's line that called it, and the kind -> its stats: as
:data:`PROGRAM_SITES`, for a request object made per request whose field is an Event.
Bounded as the stats are: an entry shares its stats' code objects (the raw site and the
program's line), whose ids it keys on."""


def keep_program_site(frame: FrameType, kind: str, raw: RawSite | None, stats: SiteStats) -> bool:
    """Keep ``stats`` in :data:`PROGRAM_SITES` for what ``frame`` creates next, if the
    walk from it found ``frame``'s own line (``raw``) and that is the program's; whether
    it did."""
    code = frame.f_code
    if (
        # First, what a library's line fails on: that is asked on every creation.
        file_kind(code.co_filename) is False
        and raw is not None
        and raw[0] is code
        and raw[1] == frame.f_lasti
        and stats.raw is not None  # not the overflow's
    ):
        if stats.via is None:
            PROGRAM_SITES[(id(code), raw[1], kind)] = stats
            return True
        # A dataclass field's default (see _sites._field_default): kept for
        # this line of the __init__ made from the program's line that called it.
        caller = frame.f_back
        if caller is not None and stats.via[0] is caller.f_code and stats.via[1] == caller.f_lasti:
            FIELD_SITES[(id(code), raw[1], id(caller.f_code), caller.f_lasti, kind)] = stats
            return True
    return False


def on_create(prim: Any, kind: str) -> PrimRef:
    """Give a new primitive its identity; called from patched ``__init__``."""
    try:
        frame: FrameType | None = sys._getframe(2)  # what called the patched __init__
    except ValueError:  # C code with nothing of Python's above it
        frame = None
    stats = None if frame is None else PROGRAM_SITES.get((id(frame.f_code), frame.f_lasti, kind))
    if stats is None and frame is not None and frame.f_code.co_filename == "<string>":
        caller = frame.f_back
        if caller is not None:
            code = frame.f_code
            key = (id(code), frame.f_lasti, id(caller.f_code), caller.f_lasti, kind)
            stats = FIELD_SITES.get(key)
    if stats is not None:
        raw = stats.raw
    else:
        raw, internal, via = capture_creation(frame, prim)
        if internal and RECORDER.options.internal_primitives:
            internal = False
        stats = stats_for(kind, raw, internal, via)
        if frame is not None and keep_program_site(frame, kind, raw, stats):
            raw = stats.raw
    thread = stats.thread
    if thread and thread != get_ident():
        stats.thread = 0  # made on several threads
    ref = PrimRef(kind, raw, stats)
    prim._aiotrace_ref = ref
    prim._aiotrace_stats = stats
    watched = WATCHED[0]
    if watched is not None and kind in _WATCHED_KINDS:
        watched.add(prim)
    return ref


def ref_of(prim: Any, kind: str) -> PrimRef:
    """The primitive's ref, creating one for a primitive made before instrumentation."""
    ref: PrimRef | None = getattr(prim, "_aiotrace_ref", None)
    if ref is None:
        stats = preexisting_stats(kind)
        ref = PrimRef(kind, None, stats)
        prim._aiotrace_ref = ref
        prim._aiotrace_stats = stats
    return ref


def adopt(child: Any, parent_ref: PrimRef, suffix: str) -> None:
    """Make an asyncio-created helper (a Condition's own Lock) a named part of ``parent``."""
    ref = ref_of(child, semconv.KIND_LOCK)
    ref.raw = parent_ref.raw
    parent_stats = parent_ref.stats
    ref.stats = stats_for(ref.kind, parent_ref.raw, parent_stats.internal, parent_stats.via)
    ref.stats.owner = (parent_ref.stats, suffix)
    child._aiotrace_stats = ref.stats
    ref.name = None if parent_ref.name is None else parent_ref.name + suffix
    ref_suffix[ref.pid] = (parent_ref, suffix)


ref_suffix: Final[dict[int, tuple[PrimRef, str]]] = {}
"""Helper primitives named after their owner: pid -> (owner ref, suffix)."""


# --------------------------------------------------------------------------
# Inlining asyncio's slow paths, only when they are the code we know
# --------------------------------------------------------------------------


def normalized_source(func: Any) -> str | None:
    """``func``'s source without docstrings, comments, indentation or blank lines."""
    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    source = re.sub(r'"""[\s\S]*?"""', "", source)
    lines = (line.split("#")[0].strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line)


def source_is(func: Any, known: str) -> bool:
    """Whether ``func`` is exactly the asyncio code we inline a copy of.

    A patched method that awaits the original pays one coroutine per
    blocking call. Where asyncio's code has been the same from 3.10 to 3.13
    the patch runs a copy instead, but only after checking, at instrument
    time, that the running Python's method is that very code; a future
    Python that changes it gets the original awaited, not our copy.
    """
    return normalized_source(func) == known


PLAIN_CREATE_FUTURE: Final[list[Any]] = [None]
"""The ``create_future`` installed on ``BaseEventLoop`` while futures are traced,
when asyncio's own calls to it get a plain ``asyncio.futures.Future(loop=loop)``."""


def waiter_future(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """``loop.create_future()`` for a waiter of an inlined slow path (asyncio's code).

    Every contended operation makes a waiter future, and telling asyncio's
    callers from the user's costs the patched method a frame look-up (0.2 µs).
    On a loop whose method is aiotrace's plain one, the very same future is
    made directly. Callers test ``PLAIN_CREATE_FUTURE[0] is None`` (futures
    not traced) first and then call ``loop.create_future()`` themselves, as
    asyncio does: a Python call per waiter is 1% of a contended hand-off.
    Guarded whole: a failure of ours is counted, and the waiter is asyncio's
    own ``loop.create_future()``, as untraced.
    """
    try:
        if type(loop).create_future is PLAIN_CREATE_FUTURE[0]:
            future: asyncio.Future[Any] = asyncio.futures.Future(loop=loop)
            if loop._debug:  # type: ignore[attr-defined]  # a BaseEventLoop's; Future() read it
                as_untraced(future)
            return future
    except Exception as exc:
        RECORDER.fail("future", exc)
    return loop.create_future()


# --------------------------------------------------------------------------
# Life after uninstrument()
# --------------------------------------------------------------------------

_LIVE: list[list[bool]] = []


def live_flag() -> list[bool]:
    """A one-element flag, true until :func:`retire_all`; read as ``live[0]``.

    uninstrument() deletes the class-level defaults the fast paths rely on,
    but patched functions survive as bound methods (a Condition binds its
    Lock's ``acquire``/``release`` when created). A retired fast path therefore
    checks this flag first and behaves exactly like the original.
    """
    flag = [True]
    _LIVE.append(flag)
    return flag


def retire_all() -> None:
    """Make every patched function created so far behave like the original."""
    retire_since(0)


def live_mark() -> int:
    """A mark for :func:`retire_since`: the patched functions created so far."""
    return len(_LIVE)


def retire_since(mark: int) -> None:
    """Retire the patched functions created after ``mark`` (a nested instrumentation's)."""
    for flag in _LIVE[mark:]:
        flag[0] = False
    del _LIVE[mark:]


# --------------------------------------------------------------------------
# Cancellation that was really a timeout
# --------------------------------------------------------------------------

WATCH_SWALLOWED: Final[list[int]] = [0]
"""How many diagnoses want swallowed cancellations noted (``Diagnoser.start`` counts
itself in): a task's (``tasks.Swallowed``), a timeout's (``_timeouts.SwallowedTimeout``)."""

SWALLOWED: Final[deque[tuple[int, Any]]] = deque(maxlen=512)
"""(sequence number, record) of the latest swallowed cancellations, for every diagnosis
to read: each reads past the last number it saw (a test's own diagnosis inside a
diagnosed session sees them as the session's does), none takes them out."""
_SWALLOWED_SEQUENCE: Final = itertools.count(1)


def note_swallowed(record: Any) -> None:
    """Add ``record`` to :data:`SWALLOWED`, numbered."""
    SWALLOWED.append((next(_SWALLOWED_SEQUENCE), record))


TIMED_OUT: Final[weakref.WeakKeyDictionary[Any, Any]] = weakref.WeakKeyDictionary()
"""Task -> ``True`` or a weak reference to the timeout that cancelled it (see ``_timeouts.py``)."""


def is_timeout(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` is being cancelled because a timeout expired."""
    if task is None or not TIMED_OUT:
        return False
    try:
        marker = TIMED_OUT.get(task)
    except TypeError:
        return False
    if marker is None:
        return False
    if marker is True:
        return True
    # A weak reference to an asyncio.Timeout (3.11+): expiring until its
    # __aexit__ turns the CancelledError into TimeoutError.
    state = getattr(marker(), "_state", None)
    return getattr(state, "name", None) == "EXPIRING"


def outcome_of(exc: BaseException, task: asyncio.Task[Any] | None) -> str:
    """The ``aiotrace.outcome`` for a wait ended by ``exc``."""
    if isinstance(exc, CancelledError):
        return semconv.OUTCOME_TIMEOUT if is_timeout(task) else semconv.OUTCOME_CANCELLED
    if isinstance(exc, asyncio.TimeoutError):
        return semconv.OUTCOME_TIMEOUT
    return semconv.OUTCOME_ERROR


# --------------------------------------------------------------------------
# Waits
# --------------------------------------------------------------------------


def wait_spanned(ref: PrimRef, t0: int, t1: int, outcome: str) -> bool:
    """Account for a finished wait; True when it deserves a span.

    Waits that succeeded in less than ``min_wait`` are only counted. Waits
    that were abandoned (cancelled, timed out, broken) are always spanned.
    """
    duration = t1 - t0
    stats = ref.stats
    stats.waits += 1
    stats.wait_ns += duration
    if duration < RECORDER.min_wait_ns and outcome in _NORMAL:
        return False
    stats.spanned += 1
    if duration > stats.max_wait_ns:
        stats.max_wait_ns = duration
    return True


_SHARED_ATTRS: dict[str, list[dict[str, Any]]] = {}
_SHARED_UP_TO: Final = 256


def shared_attrs(key: str, count: int) -> dict[str, Any]:
    """``{key: count}``, one shared dict per small count: never mutate the result.

    Records wait in the buffer until the pipeline runs, and the pipeline
    copies attributes as it encodes them, so records can share these dicts:
    each then costs a pointer, not a dict.
    """
    if count >= _SHARED_UP_TO or count < 0:
        return {key: count}
    table = _SHARED_ATTRS.get(key)
    if table is None:
        table = _SHARED_ATTRS[key] = [{key: n} for n in range(_SHARED_UP_TO)]
    return table[count]


_INTERNED: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
_INTERNED_LIMIT: Final = 4096


def intern_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """An equal dict shared by every record with these attributes; never mutate it.

    For attributes of several keys (a semaphore's waiters, value and capacity;
    the task and line that woke an event): the fresh dict is freed at once and
    a buffered record costs a pointer. Each key has one value type in the span
    model, so ``True == 1`` never merges different attributes. Unhashable
    values are kept as they are; the table is emptied when full.
    """
    try:
        key = tuple(attrs.items())
        shared = _INTERNED.get(key)
    except TypeError:
        return attrs
    if shared is not None:
        return shared
    if len(_INTERNED) >= _INTERNED_LIMIT:
        _INTERNED.clear()
    _INTERNED[key] = attrs
    return attrs


CURRENT: Final = object()
"""``emit_wait``'s default task and parent: the current ones."""


def emit_wait(
    name: str,
    ref: PrimRef,
    t0: int,
    t1: int,
    outcome: str,
    attrs: dict[str, Any] | None,
    links: tuple[Any, ...] = (),
    span_id: int = 0,
    optional: bool = False,
    frame: FrameType | None = None,
    task: Any = CURRENT,
    parent: Any = CURRENT,
) -> None:
    """Emit a wait's span record, capturing the waiter's task, span and site now.

    Called by the waiting task itself, after the wait: its task, current span
    and call site are the same as when it began waiting, so nothing is
    captured for waits that turn out too short to span.

    ``links`` are ``(link kind, target)`` pairs, or, for the commonest link
    of all, a lock's hand-off, the hold record that handed over (see
    :func:`emit_hold`): no tuple and no span id per buffered record. A wait
    that others link to is given its ``span_id`` up front; any other gets its
    id from the pipeline (``0`` here: one int less per buffered record).
    A caller holding the frame that called the primitive passes it as
    ``frame``: the search for the user's site then starts there. A wait
    recorded from outside its task (one still waiting at exit) passes its
    ``task`` and ``parent`` span.
    """
    if task is CURRENT:
        task = current_task()
    if parent is CURRENT:
        parent = current_span()
    site, via = site_and_via(sys._getframe(1) if frame is None else frame, via_label)
    if via is not None:
        attrs = _added_via(attrs, via)
    if attrs is not None and len(attrs) > 1:
        attrs = intern_attrs(attrs)
    fields = (name, t0, t1, span_id, parent, task_name(task), site, ref, outcome)
    if optional:
        record: tuple[Any, ...] = (R_OPTIONAL, *fields, attrs)
    else:
        record = (R_SPAN, *fields, attrs, links)
    RECORDER.emit(record)


_NORMAL: Final = frozenset(
    {
        semconv.OUTCOME_ACQUIRED,
        semconv.OUTCOME_SET,
        semconv.OUTCOME_NOTIFIED,
        semconv.OUTCOME_PASSED,
        semconv.OUTCOME_GOT,
        semconv.OUTCOME_PUT,
        semconv.OUTCOME_JOINED,
    }
)


def outcome_is_normal(outcome: str) -> bool:
    """Whether ``outcome`` is a success (thresholds apply) rather than an abandonment."""
    return outcome in _NORMAL


def with_via(attrs: dict[str, Any] | None, frame: FrameType) -> dict[str, Any] | None:
    """``attrs`` plus the program's line a library's call at ``frame`` came from, if any."""
    via = via_label(frame)
    return attrs if via is None else _added_via(attrs, via)


def _added_via(attrs: dict[str, Any] | None, via: str) -> dict[str, Any]:
    """A new dict: ``attrs`` may be a shared one (see :func:`intern_attrs`)."""
    return {**attrs, semconv.ATTR_VIA_SITE: via} if attrs else {semconv.ATTR_VIA_SITE: via}


def emit_hold(
    name: str,
    ref: PrimRef,
    t0: int,
    t1: int,
    parent: Any,
    holder: str | None,
    site: RawSite | None,
    attrs: dict[str, Any] | None,
    outcome: str | None = None,
) -> tuple[Any, ...]:
    """Emit a hold record; returns it, for the wait it hands over to to link to.

    Called from ``release()``: if an exception is being handled there (the
    body of ``async with`` raised, or the task was cancelled inside it) the
    hold's outcome says so, unless ``outcome`` is given (a hold still held
    at exit). Its span id is given by the pipeline, which resolves a link to
    the record itself to that id.
    """
    if attrs is not None and len(attrs) > 1:
        attrs = intern_attrs(attrs)
    if outcome is None:
        exc = sys.exc_info()[1]
        if exc is None:
            outcome = semconv.OUTCOME_RELEASED
        elif isinstance(exc, CancelledError):
            outcome = semconv.OUTCOME_CANCELLED
        else:
            outcome = semconv.OUTCOME_RAISED
    record = (R_HOLD, name, t0, t1, 0, parent, holder, site, ref, outcome, attrs)
    RECORDER.emit(record)
    return record


Waker = tuple[Any, "str | None", "RawSite | None", int, "str | None"]
"""``(span or point-span id, task name, raw site, time, via)`` of a recorded waking call;
``via``: the program's line it came from, when the site is a library's (see
:func:`aiotrace._sites.via_label`)."""


def waking_site() -> tuple[RawSite | None, str | None]:
    """The waking call's site, and the program's line that led there if it is a library's.

    Only for a waking call that is recorded (one that ended a wait long
    enough to be spanned, a traced future's resolution): the look-up for
    ``via`` walks the stack, and only from a library's line.
    """
    try:
        frame = sys._getframe(2)  # our caller's caller: the waking call
    except ValueError:  # a stack not that deep (capture()'s guard too)
        return None, None
    return site_and_via(frame, via_label)


def waker_here(t: int) -> Waker:
    """A waking call recorded without a span event of its own (a queue's put or get)."""
    site, via = waking_site()
    return current_span(), task_name(current_task()), site, t, via


TASK_SPAN_TYPE: Final[list[type[Any]]] = [type(None)]
"""The task family's span class (set by it): :func:`mark_point` leaves its events raw."""


def mark_point(
    name: str, attrs: dict[str, Any], t: int | None = None, frame: Any = CURRENT
) -> Waker:
    """Record a waking call (``set()``, ``notify()``) as an event on the current span.

    Returns it as a :data:`Waker`, so woken waiters can link to it. With a
    recording span current (the user's, or a task span) the event goes on
    it at once, because that span may end before the pipeline runs; with no
    span current a zero-length span of that name is emitted instead, and
    returned as the link target. On a task span, the commonest case (a
    task resolving a future), the event is kept raw, as records are: its
    values are made attributes when the task's span is encoded, off the
    hot path. ``attrs`` must be the caller's own dict: it is kept as given.
    A caller that knows the waking call's frame (or that there is none:
    ``None``) passes it as ``frame``: the site's search starts there.
    """
    if t is None:
        t = perf_counter_ns()
    tname = current_task_name()
    site, via = waking_site() if frame is CURRENT else site_and_via(frame, via_label)
    span = current_span()
    if type(span) is TASK_SPAN_TYPE[0] and not span.end_ns:  # type: ignore[union-attr]
        span.add_point(name, t, attrs, tname, site, via)  # type: ignore[union-attr]
        return span, tname, site, t, via
    full = dict(attrs)
    if tname is not None:
        full[semconv.ATTR_TASK_NAME] = tname
    if via is not None:
        full[semconv.ATTR_VIA_SITE] = via
    if span is not None and span.is_recording():
        if site is not None:
            full.update(site_attributes(site))
        span.add_event(
            name,
            attributes={k: resolve_value(v) for k, v in full.items()},
            timestamp=RECORDER.to_epoch(t),
        )
        return span, tname, site, t, via
    point_id = RECORDER.next_id()
    full = intern_attrs(full)
    RECORDER.emit((R_SPAN, name, t, t, point_id, span, tname, site, None, None, full, ()))
    return point_id, tname, site, t, via


def site_attributes(raw: RawSite) -> dict[str, Any]:
    """``code.*`` attributes of a raw site (resolves it now; used off the fast path)."""
    site = SITES.resolve(raw)
    return {
        semconv.ATTR_CODE_FILE_PATH: site.path,
        semconv.ATTR_CODE_LINE_NUMBER: site.line,
        semconv.ATTR_CODE_FUNCTION_NAME: site.function,
    }


def display_name(ref: PrimRef, suffix: str = "") -> str:
    """The name a primitive is shown by: explicit, derived from its owner, or from its site.

    ``suffix``: a helper's, named after this primitive (see :func:`site_name`).
    """
    if ref.name:
        return ref.name + suffix
    owned = ref_suffix.get(ref.pid)
    if owned is not None:
        return display_name(owned[0], owned[1] + suffix)
    if ref.raw is None:
        return f"{ref.kind} #{ref.pid}{suffix} {semconv.UNKNOWN_SITE}"
    return site_name(ref.raw, ref.stats.via, suffix)


def site_name(raw: RawSite, via: RawSite | None, suffix: str = "") -> str:
    """``cache_lock (app.py:12)``; for a library's primitive, the program's line too:
    ``self._lock (pool.py:40) via app.py:7``; for a dataclass field's default, the
    field and the program's line that made the instance: ``Pool.lock (app.py:17)``.

    ``suffix`` goes after the variable, for a helper named after the
    primitive made here: ``self._cond.lock (pool.py:40) via app.py:7``, the
    Lock asyncio made for that Condition, not ``... via app.py:7.lock``.
    """
    field = field_name(raw)
    if field is not None:
        field += suffix
        return field if via is None else f"{field} ({SITES.resolve(via).label})"
    name = SITES.resolve(raw).named_with(suffix)
    return name if via is None else f"{name} via {SITES.resolve(via).label}"


def via_label_of(stats: SiteStats) -> str | None:
    """``app.py:7``: the program's line a library's primitive came from (``SiteStats.via``)."""
    return None if stats.via is None else SITES.resolve(stats.via).label


def resolve_value(value: Any) -> Any:
    """Turn record-time attribute values (refs, raw sites) into OpenTelemetry values."""
    if isinstance(value, PrimRef):
        return display_name(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], CodeType):
        return SITES.resolve(value).label
    return value
