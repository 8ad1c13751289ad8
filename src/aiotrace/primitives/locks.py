"""Lock, Semaphore and BoundedSemaphore: wait spans, hold spans, ownership.

The uncontended ``async with lock`` is the hottest path aiotrace touches, so
``Lock.__aenter__``/``__aexit__`` get inlined fast paths: the same state
changes as CPython's ``Lock.acquire``/``release`` (identical from 3.10 to
3.13), plus on entry one clock read and the owner's frame, and on exit one
clock read, a comparison with ``min_hold`` and a counter increment.

Contended operations pay a little more, still without touching OpenTelemetry
unless the operation is worth a span:

* a waiter notes when it started and how many were ahead, and gives the
  current hold an id (so its span, if any, can link to it);
* a hold that someone waited for but that was shorter than ``min_hold`` is
  kept in a small per-primitive ring instead of being recorded; if a wait that
  passes ``min_wait`` links to it, the waiter records it then.

So at default thresholds a contended hand-off produces no records, while every
spanned wait still links to the hold that blocked it ("who blocked me?").

Ownership: ``_aiotrace_owner`` is the frame of the coroutine holding a Lock
(see ``_base.owner_frame``); a Semaphore keeps a list of taken permits
``[t0, owner frame, site, hold id, waiters]``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import deque
from time import perf_counter_ns
from typing import Any, Final, cast

from aiotrace import semconv
from aiotrace._context import current_span, task_span_of
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace._sites import capture, is_internal_file, user_frame
from aiotrace.primitives._base import (
    current_task,
    emit_hold,
    emit_wait,
    in_stack,
    live_flag,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
    task_name,
    task_of_frame,
    wait_spanned,
)

FAMILY_LOCK: Final = "lock"
FAMILY_SEMAPHORE: Final = "semaphore"
RING: Final = 64
"""Short contended holds remembered per primitive, for links from later waits."""

# A remembered hold: (span id, t0, t1, parent span, holder (a name, or the
# owner frame to name it from later), site, waiters during it, releaser name
# or None); see _emit_hold.
_H_ID: Final = 0


def _hold_context(owner: Any, caller: Any) -> tuple[Any, Any, str | None]:
    """(parent span, holder, releaser name if not the holder) at release time.

    ``caller`` is the frame that called ``release``/``__aexit__``. When the
    owner frame is on the running stack the holder is releasing its own lock
    (the usual ``async with``): the parent is the current span, and the holder
    is named later from it or from the owner frame (see ``_holder_name``).
    Otherwise another task released it, and the hold is parented under the
    holder's task span, if it has one.
    """
    if owner is None or owner is caller or in_stack(owner, caller):
        return current_span(), owner, None
    holder = task_of_frame(owner)
    span = task_span_of(holder)
    return (
        span if span is not None else current_span(),
        task_name(holder),
        task_name(current_task()),
    )


def _holder_name(holder: Any, parent: Any) -> str | None:
    """The holder's task name: already a name, or from its task span or owner frame."""
    if holder is None or isinstance(holder, str):
        return holder
    name = getattr(parent, "task_name", None)  # a task span knows its task's name
    if name is not None:
        return str(name)
    task = task_of_frame(holder)
    return task_name(task) if task is not None else task_name(current_task())


def _site_at_release(asite: Any, t0: int, caller: Any) -> Any:
    """Where a hold began: the explicit ``acquire()`` call if we saw one, else the release.

    For ``async with`` both are the same line: CPython attributes the
    ``__aexit__`` call to the ``async with`` statement. Only if ``caller`` is
    asyncio's own (a Condition's ``__aexit__``) do we walk further.
    """
    if asite is not None and asite[0] == t0:
        return (asite[1], asite[2])
    code = caller.f_code
    if is_internal_file(code.co_filename):
        return capture()
    return (code, caller.f_lasti)


def _remember(prim: Any, hold: tuple[Any, ...]) -> None:
    ring = prim._aiotrace_ring
    if ring is None:
        ring = prim._aiotrace_ring = deque(maxlen=RING)
    ring.append(hold)


def _emit_hold(name: str, ref: Any, hold: tuple[Any, ...]) -> None:
    hid, t0, t1, parent, holder, site, waiters, releaser = hold
    holder = _holder_name(holder, parent)
    attrs: dict[str, Any] = {}
    if waiters:
        attrs[semconv.ATTR_WAITERS_DURING] = waiters
    if releaser is not None:
        attrs[semconv.ATTR_RELEASER_TASK] = releaser
    if ref.capacity is not None:
        attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = ref.capacity
    emit_hold(name, ref, hid, t0, t1, parent, holder, site, attrs or None, False)


def _record_linked(prim: Any, name: str, ref: Any, hids: list[int]) -> None:
    """Record remembered holds that a spanned wait links to (each at most once).

    They go out before the wait itself, so links always point backwards in
    the record stream and the pipeline resolves them in one pass.
    """
    ring = prim._aiotrace_ring
    if not ring:
        return
    for hold in list(ring):
        if hold[_H_ID] in hids:
            ring.remove(hold)
            _emit_hold(name, ref, hold)
            prim._aiotrace_stats.quiet -= 1


# ==========================================================================
# Lock
# ==========================================================================


def lock_patches() -> list[Patch]:
    """Patches for ``asyncio.Lock`` (also the lock inside every ``Condition``)."""
    Lock: Any = asyncio.Lock
    live = live_flag()
    orig_init = vars(Lock)["__init__"]
    orig_acquire = vars(Lock)["acquire"]
    orig_release = vars(Lock)["release"]
    rec = RECORDER
    enabled = rec.enabled
    next_id = rec.next_id
    min_hold = rec.min_hold_ns
    min_wait = rec.min_wait_ns
    pc = perf_counter_ns
    getframe = sys._getframe
    hold_name = semconv.SPAN_LOCK_HOLD
    mixin = asyncio.locks._ContextManagerMixin
    # acquire() called from an __aenter__ (ours for a Lock, asyncio's for a
    # Condition): the owner is that __aenter__'s caller.
    via_aenter: set[Any] = {mixin.__aenter__.__code__}

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
        waiters = self._waiters
        if not self._locked and (
            not waiters or (waiters[0].cancelled() and all(w.cancelled() for w in waiters))
        ):
            # asyncio's own test, cheapest case first: free, nobody queued.
            self._locked = True
            t0 = self._aiotrace_t0 = pc()
            if live[0]:
                frame = getframe(1)
                if frame.f_code in via_aenter:
                    self._aiotrace_owner = frame.f_back
                else:
                    # An explicit acquire() may be released far away: remember
                    # where it was taken (``async with`` gets it at release).
                    self._aiotrace_owner = frame
                    self._aiotrace_asite = (t0, frame.f_code, frame.f_lasti)
            return True
        # Contended: note what the wait span would need, cheaply, then wait.
        t0 = pc()
        tracing = enabled[FAMILY_LOCK] and live[0]
        if tracing:
            ahead = len(waiters) if waiters else 0
            blocker_hid = self._aiotrace_hid
            if blocker_hid is None:
                blocker_hid = self._aiotrace_hid = next_id()
            self._aiotrace_nw += 1
        try:
            result: bool = await orig_acquire(self)
        except BaseException as exc:
            if tracing:
                try:
                    t1 = pc()
                    ref = ref_of(self, semconv.KIND_LOCK)
                    outcome = outcome_of(exc, current_task())
                    if not ref.stats.internal and wait_spanned(ref, t0, t1, outcome):
                        span_wait(self, ref, t0, t1, outcome, ahead, blocker_hid, None)
                except Exception as inner:
                    rec.fail(FAMILY_LOCK, inner)
            raise
        t1 = self._aiotrace_t0 = pc()
        if tracing:
            frame = getframe(1)
            if frame.f_code in via_aenter:
                self._aiotrace_owner = frame.f_back
            else:
                self._aiotrace_owner = frame
                self._aiotrace_asite = (t1, frame.f_code, frame.f_lasti)
            handoff = self._aiotrace_last_hid
            queued = len(self._waiters)
            if queued:
                # Our hold starts contended: the queued waiters will link to it.
                self._aiotrace_hid = next_id()
                self._aiotrace_nw = queued
            stats = self._aiotrace_stats
            waited = t1 - t0
            stats.waits += 1
            stats.wait_ns += waited
            if waited < min_wait:
                stats.quiet += 1
            elif not stats.internal:
                try:
                    if waited > stats.max_wait_ns:
                        stats.max_wait_ns = waited
                    ref = ref_of(self, semconv.KIND_LOCK)
                    span_wait(
                        self, ref, t0, t1, semconv.OUTCOME_ACQUIRED, ahead, blocker_hid, handoff
                    )
                except Exception as exc:
                    rec.fail(FAMILY_LOCK, exc)
        return result

    def span_wait(
        self: Any,
        ref: Any,
        t0: int,
        t1: int,
        outcome: str,
        ahead: int,
        blocker_hid: int,
        handoff: int | None,
    ) -> None:
        # The blocker's task and site are filled in by the pipeline from the
        # hold span this links to: it is always recorded before this wait.
        links: tuple[tuple[str, Any], ...] = ((semconv.LINK_BLOCKER, blocker_hid),)
        if handoff is not None and handoff != blocker_hid:
            links += ((semconv.LINK_HANDOFF, handoff),)
        _record_linked(self, hold_name, ref, [hid for _, hid in links])
        emit_wait(
            semconv.SPAN_LOCK_ACQUIRE,
            ref,
            t0,
            t1,
            outcome,
            {semconv.ATTR_WAITERS_AHEAD: ahead},
            links,
        )

    def hold_end(self: Any, t0: int, t1: int, owner: Any) -> None:
        hid = self._aiotrace_hid
        self._aiotrace_hid = None
        if hid is not None:
            self._aiotrace_last_hid = hid
        if not enabled[FAMILY_LOCK]:
            return
        try:
            nw = self._aiotrace_nw
            self._aiotrace_nw = 0
            stats = self._aiotrace_stats
            if t0 == 0 or stats.internal:
                return  # acquired before instrumentation, or asyncio's own lock
            stats.holds += 1
            dt = t1 - t0
            caller = getframe(2)
            parent, holder, releaser = _hold_context(owner, caller)
            hold = (
                hid if hid is not None else next_id(),
                t0,
                t1,
                parent,
                holder,
                _site_at_release(self._aiotrace_asite, t0, caller),
                nw,
                releaser,
            )
            if dt < min_hold:
                # Short but waited for: keep it in case a spanned wait links to it.
                stats.quiet += 1
                _remember(self, hold)
                return
            if dt > stats.max_hold_ns:
                stats.max_hold_ns = dt
            _emit_hold(hold_name, ref_of(self, semconv.KIND_LOCK), hold)
        except Exception as exc:
            rec.fail(FAMILY_LOCK, exc)

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        if not live[0]:
            return orig_release(self)  # type: ignore[no-any-return]  # returns None
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
                hold_end(self, t0, t1, owner)
        else:
            raise RuntimeError("Lock is not acquired.")

    @functools.wraps(mixin.__aenter__)
    async def __aenter__(self: Any) -> None:
        waiters = self._waiters
        if (
            type(self) is Lock
            and not self._locked
            and (not waiters or (waiters[0].cancelled() and all(w.cancelled() for w in waiters)))
        ):
            self._locked = True
            self._aiotrace_t0 = pc()
            self._aiotrace_owner = getframe(1)
            return None
        await self.acquire()
        # asyncio's __aenter__ returns None: "async with lock as x" binds None.
        return None

    @functools.wraps(mixin.__aexit__)
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if type(self) is Lock and self._locked and live[0]:
            self._locked = False
            self._wake_up_first()
            t1 = pc()
            t0 = self._aiotrace_t0
            owner = self._aiotrace_owner
            self._aiotrace_owner = None
            if t1 - t0 < min_hold and self._aiotrace_hid is None:
                self._aiotrace_stats.n += 1
            else:
                hold_end(self, t0, t1, owner)
        else:
            self.release()

    via_aenter.add(cast(Any, __aenter__).__code__)
    return [
        Patch(Lock, "_aiotrace_ref", None),
        Patch(Lock, "_aiotrace_stats", preexisting_stats(semconv.KIND_LOCK)),
        Patch(Lock, "_aiotrace_t0", 0),
        Patch(Lock, "_aiotrace_owner", None),
        Patch(Lock, "_aiotrace_hid", None),
        Patch(Lock, "_aiotrace_nw", 0),
        Patch(Lock, "_aiotrace_last_hid", None),
        Patch(Lock, "_aiotrace_asite", None),
        Patch(Lock, "_aiotrace_ring", None),
        Patch(Lock, "__init__", __init__),
        Patch(Lock, "acquire", acquire),
        Patch(Lock, "release", release),
        Patch(Lock, "__aenter__", __aenter__),
        Patch(Lock, "__aexit__", __aexit__),
    ]


# ==========================================================================
# Semaphore and BoundedSemaphore
# ==========================================================================

# A taken permit is a small list, cheaper to build than an object.
_P_T0, _P_OWNER, _P_SITE, _P_HID, _P_NW = range(5)


def semaphore_patches() -> list[Patch]:
    """Patches for ``asyncio.Semaphore``; ``BoundedSemaphore`` inherits them.

    ``BoundedSemaphore.__init__`` and ``.release`` call ``super()``, so patching
    ``Semaphore`` alone sees every operation exactly once. The fast path of
    ``acquire`` is inlined: on 3.10-3.13 it is ``if not self.locked():
    self._value -= 1; return True``.
    """
    Semaphore = asyncio.Semaphore
    Bounded = asyncio.BoundedSemaphore
    live = live_flag()
    orig_init = vars(Semaphore)["__init__"]
    orig_acquire = vars(Semaphore)["acquire"]
    orig_release = vars(Semaphore)["release"]
    rec = RECORDER
    enabled = rec.enabled
    next_id = rec.next_id
    min_hold = rec.min_hold_ns
    min_wait = rec.min_wait_ns
    pc = perf_counter_ns
    getframe = sys._getframe

    def _kind(self: Any) -> str:
        if isinstance(self, Bounded):
            return semconv.KIND_BOUNDED_SEMAPHORE
        return semconv.KIND_SEMAPHORE

    def _names(kind: str) -> tuple[str, str]:
        if kind == semconv.KIND_BOUNDED_SEMAPHORE:
            return semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE, semconv.SPAN_BOUNDED_SEMAPHORE_HOLD
        return semconv.SPAN_SEMAPHORE_ACQUIRE, semconv.SPAN_SEMAPHORE_HOLD

    @functools.wraps(orig_init)
    def __init__(self: Any, value: int = 1, *args: Any, **kwargs: Any) -> None:
        orig_init(self, value, *args, **kwargs)
        if enabled[FAMILY_SEMAPHORE]:
            try:
                on_create(self, _kind(self)).capacity = value
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)

    def take(self: Any, t0: int, frame: Any) -> list[Any]:
        # ``frame`` is the acquirer; for ``async with sem`` it is asyncio's
        # __aenter__, so the user frame is found above it.
        if frame is not None and is_internal_file(frame.f_code.co_filename):
            frame = user_frame(2)
        permit = [t0, frame, None if frame is None else (frame.f_code, frame.f_lasti), None, 0]
        permits = self._aiotrace_permits
        if permits is None:
            self._aiotrace_permits = [permit]
        else:
            permits.append(permit)
        return permit

    @functools.wraps(orig_acquire)
    async def acquire(self: Any) -> bool:
        if not self.locked():
            self._value -= 1
            if live[0]:
                take(self, pc(), getframe(1))
            return True
        # Contended: note what the wait span would need, cheaply, then wait.
        t0 = pc()
        tracing = enabled[FAMILY_SEMAPHORE] and live[0]
        if tracing:
            waiters = self._waiters
            ahead = len(waiters) if waiters else 0
            value = self._value
            permits = list(self._aiotrace_permits or ())
            for permit in permits:
                if permit[_P_HID] is None:
                    permit[_P_HID] = next_id()
                permit[_P_NW] += 1
        try:
            result: bool = await orig_acquire(self)
        except BaseException as exc:
            if tracing:
                try:
                    t1 = pc()
                    ref = ref_of(self, _kind(self))
                    outcome = outcome_of(exc, current_task())
                    if not ref.stats.internal and wait_spanned(ref, t0, t1, outcome):
                        span_wait(self, ref, t0, t1, outcome, ahead, value, permits, None)
                except Exception as inner:
                    rec.fail(FAMILY_SEMAPHORE, inner)
            raise
        t1 = pc()
        if tracing:
            handoffs = self._aiotrace_handoffs
            handoff = handoffs.popleft() if handoffs else None
            stats = self._aiotrace_stats
            waited = t1 - t0
            stats.waits += 1
            stats.wait_ns += waited
            if waited < min_wait:
                stats.quiet += 1
            elif not stats.internal:
                try:
                    if waited > stats.max_wait_ns:
                        stats.max_wait_ns = waited
                    ref = ref_of(self, _kind(self))
                    span_wait(
                        self, ref, t0, t1, semconv.OUTCOME_ACQUIRED, ahead, value, permits, handoff
                    )
                except Exception as exc:
                    rec.fail(FAMILY_SEMAPHORE, exc)
            permit = take(self, t1, getframe(1))
            queued = len(self._waiters)
            if queued:
                permit[_P_HID] = next_id()
                permit[_P_NW] = queued
        return result

    def span_wait(
        self: Any,
        ref: Any,
        t0: int,
        t1: int,
        outcome: str,
        ahead: int,
        value: int,
        holders: list[list[Any]],
        handoff: int | None,
    ) -> None:
        attrs: dict[str, Any] = {
            semconv.ATTR_WAITERS_AHEAD: ahead,
            semconv.ATTR_SEMAPHORE_VALUE: max(value, 0),
        }
        if ref.capacity is not None:
            attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = ref.capacity
        # Name the tasks that held permits when we began: from the holds
        # remembered in the ring, from the frames of those still holding, or
        # (an int) from the hold span already recorded, which the pipeline knows.
        ring = {hold[_H_ID]: _holder_name(hold[4], hold[3]) for hold in self._aiotrace_ring or ()}
        names: list[Any] = []
        for permit in holders:
            name = ring.get(permit[_P_HID]) or task_name(task_of_frame(permit[_P_OWNER]))
            names.append(name if name is not None else permit[_P_HID])
        if names:
            attrs[semconv.ATTR_HOLDERS] = tuple(names)
        blocker_hid = holders[0][_P_HID] if holders else None
        links: tuple[tuple[str, Any], ...] = ()
        if blocker_hid is not None:
            links += ((semconv.LINK_BLOCKER, blocker_hid),)
        if handoff is not None and handoff != blocker_hid:
            links += ((semconv.LINK_HANDOFF, handoff),)
        _record_linked(self, _names(ref.kind)[1], ref, [hid for _, hid in links])
        emit_wait(_names(ref.kind)[0], ref, t0, t1, outcome, attrs, links)

    def released(self: Any, t1: int, woke: bool, permits: list[Any]) -> None:
        caller = getframe(2)
        # The releasing coroutine gives back its own permit if it holds one,
        # else the oldest is taken to be the one released.
        index = 0
        for permit in permits:
            if permit[_P_OWNER] is caller:
                break
            index += 1
        else:
            index = 0
            for permit in permits:
                if permit[_P_OWNER] is not None and in_stack(permit[_P_OWNER], caller):
                    break
                index += 1
            else:
                index = 0
        permit = permits.pop(index)
        hid = permit[_P_HID]
        if woke:
            if hid is None:
                hid = permit[_P_HID] = next_id()
            handoffs = self._aiotrace_handoffs
            if handoffs is None:
                handoffs = self._aiotrace_handoffs = deque(maxlen=4096)
            handoffs.append(hid)
        t0 = permit[_P_T0]
        dt = t1 - t0
        stats = self._aiotrace_stats
        if dt < min_hold and hid is None:
            stats.n += 1
            return
        stats.holds += 1
        if stats.internal:
            return
        parent, holder, releaser = _hold_context(permit[_P_OWNER], caller)
        hold = (
            hid if hid is not None else next_id(),
            t0,
            t1,
            parent,
            holder,
            permit[_P_SITE] if permit[_P_SITE] is not None else capture(),
            permit[_P_NW],
            releaser,
        )
        if dt < min_hold:
            stats.quiet += 1
            _remember(self, hold)
            return
        if dt > stats.max_hold_ns:
            stats.max_hold_ns = dt
        ref = ref_of(self, _kind(self))
        _emit_hold(_names(ref.kind)[1], ref, hold)

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        if not live[0]:
            return orig_release(self)  # type: ignore[no-any-return]  # returns None
        waiters = self._waiters
        woke = bool(waiters) and any(not w.done() for w in waiters)
        orig_release(self)
        permits = self._aiotrace_permits
        if permits and enabled[FAMILY_SEMAPHORE]:
            try:
                released(self, pc(), woke, permits)
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)
        return None

    return [
        Patch(Semaphore, "_aiotrace_ref", None),
        Patch(Semaphore, "_aiotrace_stats", preexisting_stats(semconv.KIND_SEMAPHORE)),
        Patch(Semaphore, "_aiotrace_permits", None),
        Patch(Semaphore, "_aiotrace_handoffs", None),
        Patch(Semaphore, "_aiotrace_ring", None),
        Patch(Semaphore, "__init__", __init__),
        Patch(Semaphore, "acquire", acquire),
        Patch(Semaphore, "release", release),
    ]
