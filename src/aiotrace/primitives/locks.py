"""Lock, Semaphore and BoundedSemaphore: wait spans, hold spans, ownership.

The uncontended ``async with lock`` is the hottest path aiotrace touches, so
``Lock.__aenter__``/``__aexit__`` are given inlined fast paths: the same state
changes as CPython's ``Lock.acquire``/``release`` (identical from 3.10 to
3.13), plus one clock read and the owning task on entry, and on exit one clock
read, a comparison with ``min_hold`` and a counter increment. Everything else
(sites, the current span, task names, records) happens only when an operation
waited or was held long enough to be worth a span.

Ownership: ``_aiotrace_owner`` is the task holding a Lock; a Semaphore keeps a
list of ``[t0, task, hold id, site]`` per taken permit. A hold gets an id (its
future span id) as soon as someone waits on it, so that the waiter's span can
link to it; the hold record is then always emitted, and the pipeline builds it
if the hold passed ``min_hold`` or a built wait links to it.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import deque
from time import perf_counter_ns
from typing import Any, Final

from aiotrace import semconv
from aiotrace._context import current_span, task_span_of
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace._sites import capture, is_internal_file
from aiotrace.primitives._base import (
    Wait,
    current_task,
    emit_hold,
    finish_wait,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
    task_name,
)

FAMILY_LOCK: Final = "lock"
FAMILY_SEMAPHORE: Final = "semaphore"


def _waiting(waiters: Any) -> int:
    """Waiters that are still waiting (not cancelled, not already woken)."""
    if not waiters:
        return 0
    return sum(1 for w in waiters if not w.done())


# ==========================================================================
# Lock
# ==========================================================================


def lock_patches() -> list[Patch]:
    """Patches for ``asyncio.Lock`` (also the lock inside every ``Condition``)."""
    Lock: Any = asyncio.Lock
    orig_init = vars(Lock)["__init__"]
    orig_acquire = vars(Lock)["acquire"]
    orig_release = vars(Lock)["release"]
    rec = RECORDER
    enabled = rec.enabled
    min_hold = int(rec.options.min_hold * 1e9)
    pc = perf_counter_ns
    getframe = sys._getframe
    if sys.version_info >= (3, 12):
        ct = asyncio.current_task
    else:
        ct = current_task

    @functools.wraps(orig_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        if enabled[FAMILY_LOCK]:
            try:
                on_create(self, semconv.KIND_LOCK)
            except Exception as exc:
                rec.fail(FAMILY_LOCK, exc)

    @functools.wraps(orig_acquire)
    async def acquire(self: Any) -> bool:
        if not self._locked and (
            self._waiters is None or all(w.cancelled() for w in self._waiters)
        ):
            self._locked = True
            t0 = self._aiotrace_t0 = pc()
            self._aiotrace_owner = ct()
            # An explicit acquire() (not `async with`) may be released far
            # away; remember where it was taken.
            frame = getframe(1)
            code = frame.f_code
            if not is_internal_file(code.co_filename):
                self._aiotrace_asite = (t0, code, frame.f_lasti)
            return True
        return await _lock_contended(self)

    async def _lock_contended(self: Any) -> bool:
        wait = None
        ref = None
        if enabled[FAMILY_LOCK]:
            try:
                ref = ref_of(self, semconv.KIND_LOCK)
                if not ref.stats.internal:
                    wait = Wait(pc())
                    wait.attrs[semconv.ATTR_WAITERS_AHEAD] = _waiting(self._waiters)
                    owner = self._aiotrace_owner
                    hid = self._aiotrace_hid
                    if hid is None:
                        hid = self._aiotrace_hid = rec.next_id()
                    self._aiotrace_nw += 1
                    wait.links.append((semconv.LINK_BLOCKER, hid))
                    if owner is not None:
                        wait.attrs[semconv.ATTR_BLOCKER_TASK] = task_name(owner)
            except Exception as exc:
                rec.fail(FAMILY_LOCK, exc)
                wait = None
        try:
            result: bool = await orig_acquire(self)
        except BaseException as exc:
            if wait is not None and ref is not None:
                try:
                    finish_wait(
                        FAMILY_LOCK,
                        ref,
                        wait,
                        pc(),
                        semconv.SPAN_LOCK_ACQUIRE,
                        outcome_of(exc, wait.task),
                    )
                except Exception as inner:
                    rec.fail(FAMILY_LOCK, inner)
            raise
        t1 = self._aiotrace_t0 = pc()
        self._aiotrace_owner = ct()
        if wait is not None and ref is not None:
            try:
                handoff = self._aiotrace_last_hid
                if handoff is not None and handoff != wait.links[0][1]:
                    wait.links.append((semconv.LINK_HANDOFF, handoff))
                if _waiting(self._waiters):
                    # Our hold starts contended: waiters will link to it.
                    self._aiotrace_hid = rec.next_id()
                if wait.site is not None:
                    self._aiotrace_asite = (t1, *wait.site)
                finish_wait(
                    FAMILY_LOCK,
                    ref,
                    wait,
                    t1,
                    semconv.SPAN_LOCK_ACQUIRE,
                    semconv.OUTCOME_ACQUIRED,
                )
            except Exception as exc:
                rec.fail(FAMILY_LOCK, exc)
        return result

    def _hold_end(self: Any, t0: int, t1: int, owner: Any) -> None:
        hid = self._aiotrace_hid
        self._aiotrace_hid = None
        nw = self._aiotrace_nw
        self._aiotrace_nw = 0
        if hid is not None:
            self._aiotrace_last_hid = hid
        if not enabled[FAMILY_LOCK]:
            return
        try:
            ref = ref_of(self, semconv.KIND_LOCK)
            stats = ref.stats
            rec.stats.operations += 1
            if t0 == 0 or stats.internal:
                return  # acquired before instrumentation, or asyncio's own lock
            dt = t1 - t0
            stats.holds += 1
            if dt > stats.max_hold_ns:
                stats.max_hold_ns = dt
            optional = dt < min_hold
            if optional and hid is None:
                rec.stats.below_threshold += 1
                return
            task = ct()
            attrs: dict[str, Any] = {}
            if nw:
                attrs[semconv.ATTR_WAITERS_DURING] = nw
            if owner is not None and owner is not task:
                attrs[semconv.ATTR_RELEASER_TASK] = task_name(task)
            asite = self._aiotrace_asite
            site = (asite[1], asite[2]) if asite is not None and asite[0] == t0 else capture()
            emit_hold(
                semconv.SPAN_LOCK_HOLD,
                ref,
                hid if hid is not None else rec.next_id(),
                t0,
                t1,
                current_span() if owner is task else _owner_parent(owner),
                task_name(owner if owner is not None else task),
                site,
                attrs or None,
                optional,
            )
        except Exception as exc:
            rec.fail(FAMILY_LOCK, exc)

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        if self._locked:
            self._locked = False
            self._wake_up_first()
            t1 = pc()
            t0 = self._aiotrace_t0
            owner = self._aiotrace_owner
            self._aiotrace_owner = None
            if t1 - t0 < min_hold and self._aiotrace_hid is None:
                self._aiotrace_stats.n += 1
            else:
                _hold_end(self, t0, t1, owner)
        else:
            raise RuntimeError("Lock is not acquired.")

    mixin_aenter = asyncio.locks._ContextManagerMixin.__aenter__
    mixin_aexit = asyncio.locks._ContextManagerMixin.__aexit__

    @functools.wraps(mixin_aenter)
    async def __aenter__(self: Any) -> None:
        if (
            type(self) is Lock
            and not self._locked
            and (self._waiters is None or all(w.cancelled() for w in self._waiters))
        ):
            self._locked = True
            self._aiotrace_t0 = pc()
            self._aiotrace_owner = ct()
            return None
        await self.acquire()
        # We return None so that "async with lock as x" binds None, as asyncio does.
        return None

    @functools.wraps(mixin_aexit)
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if type(self) is Lock and self._locked:
            self._locked = False
            self._wake_up_first()
            t1 = pc()
            t0 = self._aiotrace_t0
            owner = self._aiotrace_owner
            self._aiotrace_owner = None
            if t1 - t0 < min_hold and self._aiotrace_hid is None:
                self._aiotrace_stats.n += 1
            else:
                _hold_end(self, t0, t1, owner)
        else:
            self.release()

    return [
        *_lock_state_defaults(Lock, semconv.KIND_LOCK),
        Patch(Lock, "__init__", __init__),
        Patch(Lock, "acquire", acquire),
        Patch(Lock, "release", release),
        Patch(Lock, "__aenter__", __aenter__),
        Patch(Lock, "__aexit__", __aexit__),
    ]


def _owner_parent(owner: Any) -> Any:
    """The span to parent a hold under when a task other than its owner released it."""
    span = task_span_of(owner)
    return span if span is not None else current_span()


def _lock_state_defaults(cls: type, kind: str) -> list[Patch]:
    """Class-level defaults so primitives made before instrumentation work unchanged."""
    return [
        Patch(cls, "_aiotrace_ref", None),
        Patch(cls, "_aiotrace_stats", preexisting_stats(kind)),
        Patch(cls, "_aiotrace_t0", 0),
        Patch(cls, "_aiotrace_owner", None),
        Patch(cls, "_aiotrace_hid", None),
        Patch(cls, "_aiotrace_nw", 0),
        Patch(cls, "_aiotrace_last_hid", None),
        Patch(cls, "_aiotrace_asite", None),
    ]


# ==========================================================================
# Semaphore and BoundedSemaphore
# ==========================================================================


# A taken permit is a small list, cheaper to build than an object:
# [t0, task, raw site, hold id (None until someone waits), waiters during it].
_P_T0: Final = 0
_P_TASK: Final = 1
_P_SITE: Final = 2
_P_HID: Final = 3
_P_NW: Final = 4


def semaphore_patches() -> list[Patch]:
    """Patches for ``asyncio.Semaphore``; ``BoundedSemaphore`` inherits them.

    ``BoundedSemaphore.__init__`` and ``.release`` call ``super()``, so patching
    ``Semaphore`` alone sees every operation exactly once.
    """
    Semaphore = asyncio.Semaphore
    Bounded = asyncio.BoundedSemaphore
    orig_init = vars(Semaphore)["__init__"]
    orig_acquire = vars(Semaphore)["acquire"]
    orig_release = vars(Semaphore)["release"]
    rec = RECORDER
    enabled = rec.enabled
    min_hold = int(rec.options.min_hold * 1e9)
    pc = perf_counter_ns
    getframe = sys._getframe

    def _kind(self: Any) -> str:
        return (
            semconv.KIND_BOUNDED_SEMAPHORE if isinstance(self, Bounded) else semconv.KIND_SEMAPHORE
        )

    def _names(kind: str) -> tuple[str, str]:
        if kind == semconv.KIND_BOUNDED_SEMAPHORE:
            return semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE, semconv.SPAN_BOUNDED_SEMAPHORE_HOLD
        return semconv.SPAN_SEMAPHORE_ACQUIRE, semconv.SPAN_SEMAPHORE_HOLD

    @functools.wraps(orig_init)
    def __init__(self: Any, value: int = 1, *args: Any, **kwargs: Any) -> None:
        orig_init(self, value, *args, **kwargs)
        if enabled[FAMILY_SEMAPHORE]:
            try:
                on_create(self, _kind(self))
                self._aiotrace_capacity = value
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)

    def _take(self: Any, t0: int, task: Any, site: Any) -> list[Any]:
        permit = [t0, task, site, None, 0]
        permits = self.__dict__.get("_aiotrace_permits")
        if permits is None:
            self._aiotrace_permits = [permit]
        else:
            permits.append(permit)
        return permit

    @functools.wraps(orig_acquire)
    async def acquire(self: Any) -> bool:
        if not self.locked():
            result: bool = await orig_acquire(self)
            if enabled[FAMILY_SEMAPHORE]:
                try:
                    frame = getframe(1)
                    code = frame.f_code
                    site = None if is_internal_file(code.co_filename) else (code, frame.f_lasti)
                    _take(self, pc(), current_task(), site)
                except Exception as exc:
                    rec.fail(FAMILY_SEMAPHORE, exc)
            return result
        wait = None
        ref = None
        kind = _kind(self)
        if enabled[FAMILY_SEMAPHORE]:
            try:
                ref = ref_of(self, kind)
                if not ref.stats.internal:
                    wait = Wait(pc())
                    attrs = wait.attrs
                    attrs[semconv.ATTR_WAITERS_AHEAD] = _waiting(self._waiters)
                    attrs[semconv.ATTR_SEMAPHORE_VALUE] = max(self._value, 0)
                    capacity = self.__dict__.get("_aiotrace_capacity")
                    if capacity is not None:
                        attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = capacity
                    holders: list[str] = []
                    for permit in self.__dict__.get("_aiotrace_permits") or ():
                        if permit[_P_HID] is None:
                            permit[_P_HID] = rec.next_id()
                        permit[_P_NW] += 1
                        if not wait.links:
                            wait.links.append((semconv.LINK_BLOCKER, permit[_P_HID]))
                        if permit[_P_TASK] is not None:
                            holders.append(task_name(permit[_P_TASK]) or "")
                    if holders:
                        attrs[semconv.ATTR_HOLDERS] = tuple(holders)
                        attrs[semconv.ATTR_BLOCKER_TASK] = holders[0]
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)
                wait = None
        try:
            result = await orig_acquire(self)
        except BaseException as exc:
            if wait is not None and ref is not None:
                try:
                    finish_wait(
                        FAMILY_SEMAPHORE,
                        ref,
                        wait,
                        pc(),
                        _names(kind)[0],
                        outcome_of(exc, wait.task),
                    )
                except Exception as inner:
                    rec.fail(FAMILY_SEMAPHORE, inner)
            raise
        if enabled[FAMILY_SEMAPHORE]:
            try:
                t1 = pc()
                task = wait.task if wait is not None else current_task()
                permit = _take(self, t1, task, wait.site if wait is not None else None)
                if _waiting(self._waiters):
                    permit[_P_HID] = rec.next_id()
                if wait is not None and ref is not None:
                    handoffs = self.__dict__.get("_aiotrace_handoffs")
                    if handoffs:
                        handoff = handoffs.popleft()
                        if not wait.links or wait.links[0][1] != handoff:
                            wait.links.append((semconv.LINK_HANDOFF, handoff))
                    finish_wait(
                        FAMILY_SEMAPHORE,
                        ref,
                        wait,
                        t1,
                        _names(kind)[0],
                        semconv.OUTCOME_ACQUIRED,
                    )
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)
        return result

    def _released(self: Any, t1: int, woke: bool) -> None:
        permits = self.__dict__.get("_aiotrace_permits")
        if not permits:
            return  # taken before instrumentation (or released by a stray call)
        task = current_task()
        # The releasing task gives back its own permit if it holds one, else the oldest.
        index = next((i for i, p in enumerate(permits) if p[_P_TASK] is task), 0)
        permit = permits.pop(index)
        kind = _kind(self)
        ref = ref_of(self, kind)
        stats = ref.stats
        dt = t1 - permit[_P_T0]
        hid = permit[_P_HID]
        if woke:
            if hid is None:
                hid = permit[_P_HID] = rec.next_id()
            handoffs = self.__dict__.get("_aiotrace_handoffs")
            if handoffs is None:
                handoffs = self._aiotrace_handoffs = deque(maxlen=4096)
            handoffs.append(hid)
        optional = dt < min_hold
        if optional and hid is None:
            stats.n += 1
            return
        rec.stats.operations += 1
        stats.holds += 1
        if dt > stats.max_hold_ns:
            stats.max_hold_ns = dt
        if stats.internal:
            return
        holder = permit[_P_TASK]
        attrs: dict[str, Any] = {}
        if permit[_P_NW]:
            attrs[semconv.ATTR_WAITERS_DURING] = permit[_P_NW]
        if holder is not None and holder is not task:
            attrs[semconv.ATTR_RELEASER_TASK] = task_name(task)
        capacity = self.__dict__.get("_aiotrace_capacity")
        if capacity is not None:
            attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = capacity
        emit_hold(
            _names(kind)[1],
            ref,
            hid if hid is not None else rec.next_id(),
            permit[_P_T0],
            t1,
            current_span() if holder is task else _owner_parent(holder),
            task_name(holder if holder is not None else task),
            permit[_P_SITE] if permit[_P_SITE] is not None else capture(),
            attrs or None,
            optional,
        )

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        woke = bool(self._waiters) and _waiting(self._waiters) > 0
        orig_release(self)
        if enabled[FAMILY_SEMAPHORE]:
            try:
                _released(self, pc(), woke)
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)

    return [
        Patch(Semaphore, "_aiotrace_ref", None),
        Patch(Semaphore, "_aiotrace_stats", None),
        Patch(Semaphore, "__init__", __init__),
        Patch(Semaphore, "acquire", acquire),
        Patch(Semaphore, "release", release),
    ]
