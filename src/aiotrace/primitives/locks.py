"""Lock, Semaphore and BoundedSemaphore: wait spans, hold spans, ownership.

The uncontended ``async with lock`` is the hottest path aiotrace touches, so
``Lock.__aenter__``/``__aexit__`` get inlined fast paths: the same state
changes as CPython's ``Lock.acquire``/``release`` (identical from 3.10 to
3.13), plus on entry one clock read and the owner's frame, and on exit one
clock read, a comparison with ``min_hold`` and a counter increment.

Contended operations stay cheap by deciding early what deserves a span:

* a blocked waiter appends its start time to ``_aiotrace_starts`` (FIFO, the
  order asyncio hands the primitive over in);
* a release that wakes a waiter knows how long that waiter waited: it leaves
  a hand-off note for it, naming the waiter by its start time, holding the
  release time and, only if the wait reached ``min_wait``, the id of the
  hold span it records right there. A Lock has one note at a time (its next
  release comes only after the woken waiter took it) and takes the waiter's
  start out of the queue itself: a short wait's note is two attributes,
  ``_aiotrace_handed`` (the start) and ``_aiotrace_handed_at``, a long
  one's is ``_aiotrace_handoff``. A Semaphore wakes several waiters at once
  and keys its notes by start time (a short wait's note is the release time
  alone, a long one's ``(hold, release time)``), also taking the woken
  waiter's start out of the queue, so the next release wakes the queue's
  head;
* the woken waiter ends its wait at the hand-off (resuming afterwards is
  scheduling, not waiting), so it makes the very same decision, and its span
  links to the hold that handed it the primitive.

So the release and the wait agree on what is spanned, links never dangle,
and at default thresholds a contended hand-off records nothing at all.

Ownership: ``_aiotrace_owner`` is the frame of the coroutine holding a Lock
(its task is found from it on demand, see ``_base.task_of_frame``); a
Semaphore keeps a list of taken permits ``(t0, owner frame, site)``, whose
site, for ``async with``, is kept only while diagnosing (otherwise the
release's line is the same).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import operator
import sys
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, cast

from aiotrace import semconv
from aiotrace._context import current_span, task_span_of
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace._sites import (
    first_user_frame,
    is_contextlib,
    is_internal_file,
    is_library_file,
    raw_site,
    site_from,
)
from aiotrace.primitives import _lock_order
from aiotrace.primitives._base import (
    ASYNC_CODE,
    COROUTINE_NOT_GENERATOR,
    ENTER,
    PLAIN_CREATE_FUTURE,
    STACK_ENTER,
    STACK_ENTER_LASTI,
    WAIT_FOR,
    CancelledError,
    adopt_preexisting,
    asyncio_callers_holder,
    current_task,
    current_task_name,
    defaults_setter,
    emit_hold,
    emit_wait,
    held_past_asyncio,
    holding,
    in_stack,
    live_flag,
    on_create,
    outcome_of,
    outliving,
    outliving_and_site,
    preexisting_stats,
    ref_of,
    shared_attrs,
    source_is,
    stack_ids,
    task_name,
    task_of_frame,
    wait_spanned,
    waiter_future,
    with_via,
)
from aiotrace.primitives._lock_order import LOCK_ORDER
from aiotrace.primitives.events import CONDITION_WAIT_CALLERS, start_waiting

if TYPE_CHECKING:
    from collections.abc import Callable

FAMILY_LOCK: Final = "lock"
FAMILY_SEMAPHORE: Final = "semaphore"


def _hold_context(owner: Any, caller: Any, t0: int) -> tuple[Any, str | None, str | None]:
    """(parent span, holder name, releaser name if not the holder) at release time.

    ``caller`` is the frame that called ``release``/``__aexit__``, ``t0``
    when ``owner`` took the lock. When the owner frame is on the running
    stack the holder is releasing its own lock (the usual ``async with``)
    and the parent is the current span. Otherwise another task released it,
    and the hold is parented under the holder's task span, if it has one.
    """
    if (
        owner is None
        or owner is caller
        or in_stack(owner, caller)
        # Taken by a coroutine that returned holding it, to a caller that
        # releases it now (its finished frame names that caller from 3.12).
        or (owner.f_back is not None and holding(owner, stack_ids(caller)) is not None)
        # Entered by an AsyncExitStack, and its exit releasing it: the stack's own
        # task, as a rule (3.10-3.11 keep no caller for the finished frame to name).
        or (owner.f_code is STACK_ENTER and is_contextlib(caller.f_code))
    ):
        return current_span(), current_task_name(), None
    holder = task_of_frame(owner, t0)
    span = task_span_of(holder)
    return (
        span if span is not None else current_span(),
        task_name(holder),
        current_task_name(),
    )


def _site_at_release(asite: Any, t0: int, caller: Any) -> Any:
    """Where a hold began: the explicit ``acquire()`` call if we saw one, else the release.

    For ``async with`` both are the same line: CPython attributes the
    ``__aexit__`` call to the ``async with`` statement. Only if ``caller`` is
    asyncio's own (a Condition's ``__aexit__``) do we walk further, or if it is an
    ``AsyncExitStack`` letting go of what it entered: its ``async with`` (or
    ``aclose()``), which diagnosis, knowing where each was entered, does better.
    """
    if asite is not None and asite[0] == t0:
        return raw_site(asite[1], asite[2])
    code = caller.f_code
    if is_internal_file(code.co_filename) or is_contextlib(code):
        return site_from(caller)
    return raw_site(code, caller.f_lasti)


def _stack_holder(lock: Any, frame: Any, t0: int) -> Any:
    """``lock``'s holder, ``AsyncExitStack.enter_async_context`` (``frame``) having taken it:
    the frame whose ``async with AsyncExitStack()`` releases it (see ``_base.STACK_ENTER``),
    with the line that entered it as the hold's site."""
    try:
        holder = lock._aiotrace_owner = outliving(frame)
        lock._aiotrace_asite = (t0, holder.f_code, holder.f_lasti)
        lock._aiotrace_olasti = holder.f_lasti
        return holder
    except Exception as exc:  # held by the stack's frame, as before
        RECORDER.fail(FAMILY_LOCK, exc)
        return frame


def _waiter_of(frame: Any) -> Any:
    """For asyncio's ``Condition.wait()`` frame, taking its lock again after a notify: the
    frame that waits (the ``async with cond:`` around ``await cond.wait()``), whose hold it
    is. As asyncio's, the hold went without its holder's name, sited in
    ``asyncio/locks.py``, and lock order missed what the waiter took next. A wait with a
    time limit, ``await asyncio.wait_for(cond.wait(), t)``: the frame awaiting
    ``wait_for`` (see ``_base.asyncio_callers_holder``), which holds the lock; None if
    that cannot be told (before, ``wait_for``'s line, or on 3.10-3.11 the loop's)."""
    try:
        ours, wait_for = CONDITION_WAIT_CALLERS  # the frames in between, known by code
        waiter = frame.f_back
        while waiter is not None and (waiter.f_code is ours or waiter.f_code is wait_for):
            waiter = waiter.f_back
        return frame if waiter is None else held_past_asyncio(waiter)
    except Exception:  # the hold stays asyncio's frame's, as before
        return frame


def _lock_handoff(lock: Any, t0: int) -> tuple[Any, int] | None:
    """The Lock's note of a long wait's hand-off, ``(hold, release time)``, if ``t0``'s."""
    note = lock._aiotrace_handoff
    if note is None or note[0] != t0:
        return None
    lock._aiotrace_handoff = None  # it may hold a hold record: let it go
    return note[1], note[2]


def _semaphore_handoff(sem: Any, t0: int) -> tuple[Any, int] | None:
    """A Semaphore's hand-off note for the waiter of ``t0``, taken out of its notes."""
    handoffs = sem._aiotrace_handoffs
    return _semaphore_note(handoffs.pop(t0, None) if handoffs else None)


def _semaphore_note(note: Any) -> tuple[Any, int] | None:
    """A Semaphore's note as ``(hold, release time)``, as :func:`_waited` takes it.

    A short wait's note is the release time alone (no tuple per hand-off);
    a long one's is ``(hold, release time)`` already.
    """
    return (None, note) if type(note) is int else note


def _record_hold(
    name: str,
    ref: Any,
    t0: int,
    t1: int,
    owner: Any,
    caller: Any,
    site: Any,
    waiters: int,
) -> tuple[Any, ...]:
    """Emit a hold span record (at release time, in the releasing task); returns it."""
    parent, holder, releaser = _hold_context(owner, caller, t0)
    attrs: dict[str, Any] | None
    if releaser is None and ref.capacity is None:
        attrs = shared_attrs(semconv.ATTR_WAITERS_DURING, waiters) if waiters else None
    else:
        attrs = {}
        if waiters:
            attrs[semconv.ATTR_WAITERS_DURING] = waiters
        if releaser is not None:
            attrs[semconv.ATTR_RELEASER_TASK] = releaser
        if ref.capacity is not None:
            attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = ref.capacity
    if site is not None and is_library_file(site[0].co_filename):
        # Released where it was taken, as a rule (``async with``): the
        # releaser's way there is the holder's.
        user = first_user_frame(caller)
        if user is not None and is_library_file(user.f_code.co_filename):
            attrs = with_via(attrs, user)
    return emit_hold(name, ref, t0, t1, parent, holder, site, attrs or None)


def _waited(
    prim: Any,
    ref: Any,
    t0: int,
    outcome: str,
    name: str,
    attrs: dict[str, Any],
    frame: Any,
    handoff: tuple[Any, int] | None,
) -> None:
    """A wait that ended: end it at its hand-off, account for it, span it if long.

    ``frame`` called acquire() (the user, or the ``__aenter__`` the user called);
    ``handoff`` is the ``(hold, release time)`` a release left for this waiter.
    """
    # A release that left a note took our start off the queue; anything
    # else (woken otherwise, cancelled while queued) leaves it for us.
    starts = prim._aiotrace_starts if handoff is None else None
    if starts:
        if starts[0] == t0:
            starts.popleft()
        elif t0 in starts:
            starts.remove(t0)
    if handoff is not None and outcome == semconv.OUTCOME_ACQUIRED:
        hold, t1 = handoff
    else:
        hold, t1 = None, perf_counter_ns()
    if ref.stats.internal or not wait_spanned(ref, t0, t1, outcome):
        return
    # The hold record as links: a hand-off link to that hold's span, from
    # which the pipeline names the holder (task, site).
    emit_wait(name, ref, t0, t1, outcome, attrs, () if hold is None else hold, frame=frame)


# ==========================================================================
# Lock
# ==========================================================================

# The middle of CPython's Lock.acquire and Semaphore.acquire, normalised (see
# _base.normalized_source): queue a waiter future, await it, dequeue it.
_ENQUEUE_AND_AWAIT: Final = """\
if self._waiters is None:
self._waiters = collections.deque()
fut = self._get_loop().create_future()
self._waiters.append(fut)
try:
try:
await fut
finally:
self._waiters.remove(fut)
except exceptions.CancelledError:
"""

# CPython's Lock.acquire, without docstring, comments or indentation: the same
# text from 3.10 to 3.13. Our acquire() inlines its slow path only if the
# running Python's is this exact code; otherwise it awaits the original.
_KNOWN_LOCK_ACQUIRE: Final = (
    """\
async def acquire(self):
if (not self._locked and (self._waiters is None or
all(w.cancelled() for w in self._waiters))):
self._locked = True
return True
"""
    + _ENQUEUE_AND_AWAIT
    + """\
if not self._locked:
self._wake_up_first()
raise
self._locked = True
return True"""
)


class _SlowPath:
    """A Lock's or a Semaphore's contended-path helpers and switches, for
    ``__aenter__``, as one closure variable.

    Each variable a closure uses is copied into every call's frame: one
    object, not five, keeps the uncontended ``async with`` from paying for
    the contended path it inlines. ``enabled`` is the recorder's switches
    or, where the running Python's ``acquire()`` is not one we inline,
    switches always off: one test for both. ``v313``: a Semaphore's
    ``acquire()`` is 3.13's text, not 3.10-3.12's.
    """

    __slots__ = ("enabled", "failed", "live", "queue_start", "took", "v313")

    def __init__(
        self,
        enabled: dict[str, bool],
        live: list[bool],
        queue_start: Callable[[Any, int], None],
        took: Callable[..., None],
        failed: Callable[..., None],
        v313: bool = False,
    ) -> None:
        self.enabled = enabled
        self.live = live
        self.queue_start = queue_start
        self.took = took
        self.failed = failed
        self.v313 = v313


def lock_patches() -> list[Patch]:
    """Patches for ``asyncio.Lock`` (also the lock inside every ``Condition``)."""
    Lock: Any = asyncio.Lock
    Condition: Any = asyncio.Condition
    live = live_flag()
    orig_init = vars(Lock)["__init__"]
    orig_acquire = vars(Lock)["acquire"]
    orig_release = vars(Lock)["release"]
    rec = RECORDER
    enabled = rec.enabled
    min_hold = rec.min_hold_ns
    min_wait = rec.min_wait_ns
    pc = perf_counter_ns
    getframe = sys._getframe
    hold_name = semconv.SPAN_LOCK_HOLD
    lock_order = LOCK_ORDER
    diagnosing = _lock_order.DIAGNOSING
    held = _lock_order.HELD
    order_acquired = _lock_order.acquired
    unhold = _lock_order.unhold
    inline_slow_path = source_is(orig_acquire, _KNOWN_LOCK_ACQUIRE)
    mixin = asyncio.locks._ContextManagerMixin
    # acquire() called from an __aenter__ (ours for a Lock, asyncio's for a
    # Condition): the owner is that __aenter__'s caller. (Compared by
    # identity: hashing a code object hashes its bytecode.)
    mixin_code = mixin.__aenter__.__code__
    aenter_code: Any = None
    # acquire() called from asyncio's Condition.wait(), taking the lock again
    # after a notify: the owner is the frame that waits (see _waiter_of).
    condition_wait = vars(asyncio.Condition)["wait"]
    condition_wait_code = getattr(condition_wait, "__wrapped__", condition_wait).__code__
    waiter_of = _waiter_of

    def held_elsewhere(frame: Any, t0: int) -> tuple[Any, Any]:
        """For an explicit acquire() whose caller does not hold what it took: the frame
        that does (None: no frame we can name), and the hold's ``_aiotrace_asite``.
        A Condition's wait() taking the lock again: the frame that waits. A context
        manager of the program's (an ``__aenter__``, an async generator): the frame
        running its ``async with``. Another of asyncio's (``asyncio.wait_for``): see
        ``_base.asyncio_callers_holder``."""
        try:
            if frame.f_code is condition_wait_code:
                holder = waiter_of(frame)
            else:
                holder = held_past_asyncio(frame)
                if holder is not None and holder is frame:  # the program's
                    outer, at = outliving_and_site(holder)
                    return outer, (t0, at.f_code, at.f_lasti)
            if holder is None:  # the site is then the release's
                return None, None
            return holder, (t0, holder.f_code, holder.f_lasti)
        except Exception as exc:  # the lock is the program's: taken, held by its caller
            rec.fail(FAMILY_LOCK, exc)
        return frame, (t0, frame.f_code, frame.f_lasti)

    # Per-instance, never class-level (see _base): t0 and owner are the
    # current hold's start and frame, asite an explicit acquire()'s site.
    defaults: dict[str, Any] = {
        "_aiotrace_ref": None,
        "_aiotrace_stats": preexisting_stats(semconv.KIND_LOCK),
        "_aiotrace_t0": 0,
        "_aiotrace_owner": None,
        "_aiotrace_olasti": 0,
        "_aiotrace_asite": None,
        "_aiotrace_starts": None,
        "_aiotrace_handed": 0,
        "_aiotrace_handed_at": 0,
        "_aiotrace_handoff": None,
    }
    give_defaults = defaults_setter(defaults)

    @functools.wraps(orig_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, *args, **kwargs)
        else:  # Lock(): no argument tuple and dict to unpack
            orig_init(self)
        # Set in __init__, the fast path's attributes join the instance's
        # shared key layout, which keeps every attribute access on the lock
        # (asyncio's own included) on CPython's fast path.
        try:
            give_defaults(self)
            if enabled[FAMILY_LOCK]:
                on_create(self, semconv.KIND_LOCK)
        except Exception as exc:  # left like a primitive made before instrument()
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
                frame: Any = getframe(1)
                code = frame.f_code  # (a frame's attributes take no fast path)
                if code is aenter_code or code is mixin_code:
                    frame = frame.f_back
                    if diagnosing[0] and frame.f_code is STACK_ENTER:  # entered by a stack
                        frame = _stack_holder(self, frame, t0)
                # An explicit acquire() may be released far away: remember
                # where it was taken (``async with`` gets it at release).
                elif (
                    code is condition_wait_code
                    or not code.co_flags & COROUTINE_NOT_GENERATOR  # or the loop's
                    or code.co_name == ENTER
                    or code is WAIT_FOR  # asyncio.wait_for(lock.acquire(), timeout)
                ):
                    frame, self._aiotrace_asite = held_elsewhere(frame, t0)
                    if frame is None:  # held for no frame we can name
                        self._aiotrace_owner = None
                        return True
                else:
                    self._aiotrace_asite = (t0, code, frame.f_lasti)
                self._aiotrace_owner = frame
                if diagnosing[0]:
                    self._aiotrace_olasti = frame.f_lasti
                    if lock_order[0]:
                        if held:
                            order_acquired(self, frame)
                        else:
                            held[frame] = self
            return True
        if not (enabled[FAMILY_LOCK] and live[0]):
            # Retired, or turned off by an internal error: asyncio's own acquire.
            acquired: bool = await orig_acquire(self)
            self._aiotrace_t0 = pc()
            return acquired
        # Contended: queue our start time, then wait.
        t0 = pc()
        ahead = len(waiters) if waiters else 0
        try:
            self._aiotrace_starts.append(t0)
        except AttributeError:  # no queue yet, or made before instrument()
            queue_start(self, t0)
        try:
            if inline_slow_path:
                # CPython's Lock.acquire from here on, verified identical at
                # instrument time (see _base.source_is): one coroutine
                # less per contended acquire than awaiting the original.
                # (__aenter__ has the same lines: a coroutine less again.)
                if self._waiters is None:
                    self._waiters = collections.deque()
                loop = self._get_loop()
                fut = (
                    loop.create_future() if PLAIN_CREATE_FUTURE[0] is None else waiter_future(loop)
                )
                self._waiters.append(fut)
                try:
                    try:
                        await fut
                    finally:
                        self._waiters.remove(fut)
                except CancelledError:
                    if not self._locked:
                        self._wake_up_first()
                    raise
                self._locked = True
                result = True
            else:
                result = await orig_acquire(self)
        except BaseException:
            wait_failed(self, t0, ahead, getframe(1))
            raise
        t1 = self._aiotrace_t0 = pc()
        frame: Any = getframe(1)  # type: ignore[no-redef]  # the same variable
        code = frame.f_code
        if code is aenter_code or code is mixin_code:
            frame = frame.f_back
        elif (
            code is condition_wait_code
            or not code.co_flags & COROUTINE_NOT_GENERATOR  # or the loop's
            or code.co_name == ENTER
            or code is WAIT_FOR  # asyncio.wait_for(lock.acquire(), timeout)
        ):
            frame, self._aiotrace_asite = held_elsewhere(frame, t1)
        else:
            self._aiotrace_asite = (t1, code, frame.f_lasti)
        self._aiotrace_owner = frame
        # The common case inline: handed the lock after a short wait (the
        # release took our start out of the queue); nothing to check.
        if self._aiotrace_handed == t0 and not diagnosing[0]:
            stats = self._aiotrace_stats
            stats.waits += 1
            stats.wait_ns += self._aiotrace_handed_at - t0
        else:
            took_after_wait(self, t0, ahead, frame)
        return result

    def queue_start(self: Any, t0: int) -> None:
        """A blocked acquire's start, queued for the release that hands the lock over."""
        try:
            try:
                start_waiting(self, t0)
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                start_waiting(self, t0)
        except Exception as exc:
            rec.fail(FAMILY_LOCK, exc)

    def took_after_wait(self: Any, t0: int, ahead: int, frame: Any) -> None:
        """The lock taken after waiting since ``t0``: its owner, and the wait counted or spanned.

        ``frame`` is the program's: the caller of ``__aenter__`` or of an
        explicit ``acquire()``. Both inline the commonest case (see acquire()).
        """
        try:
            self._aiotrace_owner = frame
            if diagnosing[0] and frame is not None:
                if frame.f_code is STACK_ENTER:  # as the fast paths have it
                    frame = _stack_holder(self, frame, self._aiotrace_t0)
                self._aiotrace_olasti = frame.f_lasti
                if lock_order[0]:
                    order_acquired(self, frame)
            # We were handed the lock and did not wait long (the release took
            # our start out of the queue). (Only a traced, non-internal lock
            # leaves a note.)
            if self._aiotrace_handed == t0:
                stats = self._aiotrace_stats
                stats.waits += 1
                stats.wait_ns += self._aiotrace_handed_at - t0
                return
            _waited(
                self,
                ref_of(self, semconv.KIND_LOCK),
                t0,
                semconv.OUTCOME_ACQUIRED,
                semconv.SPAN_LOCK_ACQUIRE,
                shared_attrs(semconv.ATTR_WAITERS_AHEAD, ahead),
                frame,
                _lock_handoff(self, t0),
            )
        except Exception as exc:
            rec.fail(FAMILY_LOCK, exc)

    def wait_failed(self: Any, t0: int, ahead: int, frame: Any) -> None:
        """A wait since ``t0`` that ended in the exception being handled (cancelled,
        timed out): spanned if long. (Called from the handler, which so keeps
        no local for it.)"""
        try:
            exc = sys.exc_info()[1]
            assert exc is not None  # called from an ``except`` block
            _waited(
                self,
                ref_of(self, semconv.KIND_LOCK),
                t0,
                outcome_of(exc, current_task()),
                semconv.SPAN_LOCK_ACQUIRE,
                shared_attrs(semconv.ATTR_WAITERS_AHEAD, ahead),
                frame,
                _lock_handoff(self, t0),
            )
        except Exception as inner:
            rec.fail(FAMILY_LOCK, inner)

    def hold_end(self: Any, t0: int, t1: int, owner: Any, starts: Any) -> None:
        """The slow release: the hold was long, or someone is waiting for the lock."""
        try:
            if not enabled[FAMILY_LOCK]:
                return
            stats = self._aiotrace_stats
            if t0 == 0 or stats.internal:
                return  # acquired before instrumentation, or asyncio's own lock
            stats.holds += 1
            dt = t1 - t0
            woken = starts[0] if starts else None  # the one asyncio wakes
            long_wait = woken is not None and t1 - woken >= min_wait
            hold = None
            if dt >= min_hold or long_wait:
                stats.spanned += 1
                if dt > stats.max_hold_ns:
                    stats.max_hold_ns = dt
                caller = getframe(2)
                hold = _record_hold(
                    hold_name,
                    ref_of(self, semconv.KIND_LOCK),
                    t0,
                    t1,
                    owner,
                    caller,
                    _site_at_release(self._aiotrace_asite, t0, caller),
                    len(starts) if starts else 0,
                )
            if woken is not None:  # the note for the woken waiter
                starts.popleft()
                if long_wait:
                    self._aiotrace_handoff = (woken, hold, t1)
                else:
                    self._aiotrace_handed = woken
                    self._aiotrace_handed_at = t1
        except Exception as exc:
            rec.fail(FAMILY_LOCK, exc)

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        if not live[0]:
            return orig_release(self)  # type: ignore[no-any-return]  # returns None
        if self._locked:
            try:
                starts = self._aiotrace_starts
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                starts = None
            self._locked = False
            if self._waiters or type(self) is not Lock:
                # (_wake_up_first's own first test, without the call, unless
                # a subclass may have its own.)
                self._wake_up_first()
            t1 = pc()
            t0 = self._aiotrace_t0
            owner = self._aiotrace_owner
            self._aiotrace_owner = None
            if lock_order[0]:
                # _lock_order.released, its commonest case inline: the
                # owner's frame holds just this lock.
                popped = held.pop(owner, None)
                if popped is not self and popped is not None:
                    unhold(self, owner, popped)
            if t1 - t0 < min_hold and not starts:
                self._aiotrace_stats.n += 1
            else:
                hold_end(self, t0, t1, owner, starts)
        else:
            raise RuntimeError("Lock is not acquired.")

    def exported_lock(cond: Any) -> Any:
        """The plain Lock whose acquire() and release() (ours) ``cond`` exports, else None.

        Found so, the three are remembered on ``cond`` together, and
        ``__aenter__``/``__aexit__`` then know them by identity: the method
        attributes this looks up cost a Condition's ``async with`` a quarter
        of it. A method the program puts in place of either is no longer the
        one remembered, and is called.
        """
        try:
            exported, released = cond.acquire, cond.release
            lock = getattr(exported, "__self__", None)
            if (
                getattr(exported, "__func__", None) is acquire
                and lock.__class__ is Lock
                and getattr(released, "__func__", None) is release
                and getattr(released, "__self__", None) is lock
            ):
                cond._aiotrace_acquire = exported
                cond._aiotrace_release = released
                cond._aiotrace_lock = lock
                return lock
            if "_aiotrace_acquire" not in vars(cond):
                # Looked at (a Lock subclass makes a new method each time):
                # the next look raises no AttributeError. (Not class-level
                # defaults: they would cost every access on 3.12, see _base.)
                # Not None, which a program may have put there: this function.
                cond._aiotrace_acquire = cond._aiotrace_release = exported_lock
        except Exception:  # no __dict__, a property that raises: asyncio's way
            pass
        return None

    slow = _SlowPath(
        enabled if inline_slow_path else {FAMILY_LOCK: False},
        live,
        queue_start,
        took_after_wait,
        wait_failed,
    )

    @functools.wraps(mixin.__aenter__)
    async def __aenter__(self: Any) -> None:
        if type(self) is not Lock:
            # A Condition's: asyncio's __aenter__ awaits the acquire() it
            # exported from its lock. While that is still our acquire() on a
            # plain Lock, the lock is taken here as a Lock's own would be.
            # (No new local: each one costs every ``async with lock``.)
            exported = self.acquire
            try:  # (not there before exported_lock() has looked)
                if exported is self._aiotrace_acquire:
                    exported = exported_lock  # "known plain": no program's value is
            except AttributeError:
                pass
            if exported is exported_lock:
                self = self._aiotrace_lock
            else:
                self = exported_lock(self) or self
                if type(self) is not Lock:
                    await exported()
                    return None
        # Free with nobody queued: taken here.
        if not self._locked and not self._waiters:
            self._locked = True
            self._aiotrace_t0 = pc()
            frame = self._aiotrace_owner = getframe(1)
            if diagnosing[0]:
                # await stack.enter_async_context(lock)? (f_code only if maybe:
                # see _base.STACK_ENTER_LASTI)
                self._aiotrace_olasti = frame.f_lasti
                if self._aiotrace_olasti == STACK_ENTER_LASTI and frame.f_code is STACK_ENTER:
                    frame = _stack_holder(self, frame, self._aiotrace_t0)
                if lock_order[0]:
                    if held:
                        order_acquired(self, frame)
                    else:
                        held[frame] = self
            return None
        if not (slow.enabled[FAMILY_LOCK] and slow.live[0]) or (
            # Free, with only cancelled waiters queued: acquire() takes it at once.
            not self._locked
            and self._waiters[0].cancelled()
            and all(w.cancelled() for w in self._waiters)
        ):
            await self.acquire()
            # asyncio's __aenter__ returns None: "async with lock as x" binds None.
            return None
        # Contended: acquire()'s slow path and its bookkeeping, here rather
        # than awaited: a coroutine less, about 5% of a contended hand-off.
        # (Few locals: each one costs every uncontended ``async with``.)
        t0 = pc()
        try:
            self._aiotrace_starts.append(t0)
        except AttributeError:  # no queue yet, or made before instrument()
            slow.queue_start(self, t0)
        ahead = len(self._waiters) if self._waiters else 0
        try:
            # CPython's Lock.acquire from here on, as in acquire().
            if self._waiters is None:
                self._waiters = collections.deque()
            fut = (
                self._get_loop().create_future()
                if PLAIN_CREATE_FUTURE[0] is None
                else waiter_future(self._get_loop())
            )
            self._waiters.append(fut)
            try:
                try:
                    await fut
                finally:
                    self._waiters.remove(fut)
            except CancelledError:
                if not self._locked:
                    self._wake_up_first()
                raise
            self._locked = True
        except BaseException:
            slow.failed(self, t0, ahead, getframe(1))
            raise
        self._aiotrace_t0 = pc()
        frame = self._aiotrace_owner = getframe(1)
        if self._aiotrace_handed == t0 and not diagnosing[0]:
            stats = self._aiotrace_stats
            stats.waits += 1
            stats.wait_ns += self._aiotrace_handed_at - t0
        else:
            slow.took(self, t0, ahead, frame)
        return None

    @functools.wraps(mixin.__aexit__)
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if type(self) is not Lock:
            # A Condition's, as in __aenter__: its exported release().
            exported = self.release
            try:
                if exported is self._aiotrace_release:
                    exported = exported_lock  # "known plain": no program's value is
            except AttributeError:
                pass
            if exported is exported_lock:
                self = self._aiotrace_lock
            else:
                self = exported_lock(self) or self
                if type(self) is not Lock:
                    exported()
                    return None
        if self._locked and live[0]:
            try:
                starts = self._aiotrace_starts
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                starts = None
            self._locked = False
            if self._waiters:  # _wake_up_first's own first test, without the call
                self._wake_up_first()
            t1 = pc()
            t0 = self._aiotrace_t0
            owner = self._aiotrace_owner
            self._aiotrace_owner = None
            if lock_order[0]:
                # _lock_order.released, its commonest case inline: the
                # owner's frame holds just this lock.
                popped = held.pop(owner, None)
                if popped is not self and popped is not None:
                    unhold(self, owner, popped)
            if t1 - t0 < min_hold:
                if not starts:
                    self._aiotrace_stats.n += 1
                    return
                # Short hold handed to a waiter that has not waited long: the
                # common contended case, settled here without a call.
                head = starts[0]
                if t1 - head < min_wait:
                    stats = self._aiotrace_stats
                    if t0 and enabled[FAMILY_LOCK] and not stats.internal:
                        starts.popleft()
                        self._aiotrace_handed = head
                        self._aiotrace_handed_at = t1
                        stats.holds += 1
                        return
            hold_end(self, t0, t1, owner, starts)
        else:
            self.release()

    aenter_code = cast("Any", __aenter__).__code__
    return [
        Patch(Lock, "__init__", __init__),
        Patch(Lock, "acquire", acquire),
        Patch(Lock, "release", release),
        Patch(Lock, "__aenter__", __aenter__),
        Patch(Lock, "__aexit__", __aexit__),
        Patch(Condition, "__aenter__", __aenter__),
        Patch(Condition, "__aexit__", __aexit__),
    ]


# ==========================================================================
# Semaphore and BoundedSemaphore
# ==========================================================================

# A taken permit: (t0, owner frame, site).
_P_T0, _P_OWNER, _P_SITE = range(3)
_permit_owner: Final = operator.itemgetter(_P_OWNER)


def _first_held_up_the_stack(permits: list[Any], frame: Any) -> int:
    """Index of the first permit held by a caller of ``frame`` (else 0: the oldest).

    The stack is walked once and the permits compared in C: asking
    ``in_stack`` of each permit walked the stack once per permit, 40 µs at
    each release of one of 150 permits by a task that held none.
    """
    on_stack = set()
    for _ in range(64):
        if frame is None:
            break
        on_stack.add(id(frame))
        frame = frame.f_back
    held = map(on_stack.__contains__, map(id, map(_permit_owner, permits)))
    return next(itertools.compress(itertools.count(), held), 0)


# CPython's Semaphore.acquire, normalised as for the Lock: one text from 3.10
# to 3.12, another since 3.13 (which re-wakes in a ``finally``). Our acquire()
# inlines the slow path of whichever the running Python has, else awaits it.
_SEMAPHORE_ACQUIRE_HEAD: Final = (
    """\
async def acquire(self):
if not self.locked():
self._value -= 1
return True
"""
    + _ENQUEUE_AND_AWAIT
)
_KNOWN_SEMAPHORE_ACQUIRE_310: Final = (
    _SEMAPHORE_ACQUIRE_HEAD
    + """\
if not fut.cancelled():
self._value += 1
self._wake_up_next()
raise
if self._value > 0:
self._wake_up_next()
return True"""
)
_KNOWN_SEMAPHORE_ACQUIRE_313: Final = (
    _SEMAPHORE_ACQUIRE_HEAD
    + """\
if fut.done() and not fut.cancelled():
self._value += 1
raise
finally:
while self._value > 0:
if not self._wake_up_next():
break
return True"""
)


# CPython's Semaphore.release, the same text from 3.10 to 3.13: our
# __aexit__ runs it inline, and its _wake_up_next() only when someone waits
# (that method's own first test).
_KNOWN_SEMAPHORE_RELEASE: Final = """\
def release(self):
self._value += 1
self._wake_up_next()"""

# BoundedSemaphore.release, the same from 3.10 to 3.13: past its check, the
# above. An ``async with`` on one runs both inline, as on a Semaphore.
_KNOWN_BOUNDED_RELEASE: Final = """\
def release(self):
if self._value >= self._bound_value:
raise ValueError('BoundedSemaphore released too many times')
super().release()"""


def semaphore_patches() -> list[Patch]:
    """Patches for ``asyncio.Semaphore``; ``BoundedSemaphore`` inherits them.

    ``BoundedSemaphore.__init__`` and ``.release`` call ``super()``, so patching
    ``Semaphore`` alone sees every operation exactly once. The fast path of
    ``acquire`` is inlined: on 3.10-3.13 it is ``if not self.locked():
    self._value -= 1; return True``. ``async with`` gets its own
    ``__aenter__``/``__aexit__``, as the Lock does: most operations on a
    semaphore are that, and asyncio's go through a coroutine and a call
    each way.
    """
    Semaphore: Any = asyncio.Semaphore
    Bounded = asyncio.BoundedSemaphore
    live = live_flag()
    orig_init = vars(Semaphore)["__init__"]
    orig_acquire = vars(Semaphore)["acquire"]
    orig_release = vars(Semaphore)["release"]
    rec = RECORDER
    enabled = rec.enabled
    min_hold = rec.min_hold_ns
    min_wait = rec.min_wait_ns
    pc = perf_counter_ns
    getframe = sys._getframe
    mixin = asyncio.locks._ContextManagerMixin
    # Frames between the user and our acquire()/release(), compared by
    # identity (code equality compares bytecode); ours are set below.
    mixin_aenter_code = mixin.__aenter__.__code__
    mixin_aexit_code = mixin.__aexit__.__code__
    bounded_release_code = vars(Bounded)["release"].__code__
    aenter_code: Any = None
    aexit_code: Any = None
    inline_310 = source_is(orig_acquire, _KNOWN_SEMAPHORE_ACQUIRE_310)
    inline_313 = source_is(orig_acquire, _KNOWN_SEMAPHORE_ACQUIRE_313)
    inline_release = source_is(orig_release, _KNOWN_SEMAPHORE_RELEASE)
    inline_bounded = inline_release and source_is(vars(Bounded)["release"], _KNOWN_BOUNDED_RELEASE)
    lock_order = LOCK_ORDER
    diagnosing = _lock_order.DIAGNOSING
    held = _lock_order.HELD
    unhold = _lock_order.unhold
    # Per-instance, never class-level (see _base): permits are the taken
    # permits, starts the blocked waiters' start times, oldest first.
    defaults: dict[str, Any] = {
        "_aiotrace_ref": None,
        "_aiotrace_stats": preexisting_stats(semconv.KIND_SEMAPHORE),
        "_aiotrace_permits": None,
        "_aiotrace_starts": None,
        "_aiotrace_handoffs": None,
    }
    give_defaults = defaults_setter(defaults)

    def _kind(self: Any) -> str:
        if isinstance(self, Bounded):
            return semconv.KIND_BOUNDED_SEMAPHORE
        return semconv.KIND_SEMAPHORE

    def _ref(self: Any) -> Any:
        ref = self._aiotrace_ref
        return ref if ref is not None else ref_of(self, _kind(self))

    # Primitive kind -> (wait span name, hold span name).
    names = {
        semconv.KIND_SEMAPHORE: (semconv.SPAN_SEMAPHORE_ACQUIRE, semconv.SPAN_SEMAPHORE_HOLD),
        semconv.KIND_BOUNDED_SEMAPHORE: (
            semconv.SPAN_BOUNDED_SEMAPHORE_ACQUIRE,
            semconv.SPAN_BOUNDED_SEMAPHORE_HOLD,
        ),
    }

    @functools.wraps(orig_init)
    def __init__(self: Any, value: int = 1, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, value, *args, **kwargs)
        else:  # Semaphore(n): no argument tuple and dict to unpack
            orig_init(self, value)
        try:
            give_defaults(self)
            if enabled[FAMILY_SEMAPHORE]:
                ref = on_create(self, _kind(self))
                ref.capacity = value
                site = ref.stats
                if site.capacity is None:
                    site.capacity = value
                elif site.capacity != value:
                    site.capacity = semconv.CAPACITIES_VARY
        except Exception as exc:  # left like a primitive made before instrument()
            rec.fail(FAMILY_SEMAPHORE, exc)

    def take(self: Any, t0: int, frame: Any, entered: bool = False) -> None:
        # ``frame`` called acquire(): the user, or asyncio's __aenter__ for
        # ``async with sem``, whose caller is then the user; or, ``entered``,
        # the caller of our __aenter__, which waited itself. Either may be an
        # AsyncExitStack's enter_async_context, whose caller holds the permit
        # (see _base.STACK_ENTER). The site of an
        # ``async with`` is its release's (see released()): kept here only
        # for diagnosis, which may need it while the permit is held.
        try:
            code = frame.f_code
            site: tuple[Any, int] | None
            if entered or code is aenter_code or code is mixin_aenter_code or code is STACK_ENTER:
                if not (entered or code is STACK_ENTER):
                    frame = frame.f_back
                if frame.f_code is STACK_ENTER:  # await stack.enter_async_context(sem)
                    frame = outliving(frame)  # (see _base.STACK_ENTER)
                site = (frame.f_code, frame.f_lasti) if diagnosing[0] else None
            elif is_internal_file(code.co_filename):  # asyncio.wait_for(sem.acquire(), t)
                frame = asyncio_callers_holder(frame)
                site = None if frame is None else (frame.f_code, frame.f_lasti)
            elif not code.co_flags & COROUTINE_NOT_GENERATOR or code.co_name == ENTER:
                if not code.co_flags & ASYNC_CODE:  # a task made of the acquire(), run
                    # by uvloop's loop, with the program's frame below: as above
                    frame = asyncio_callers_holder(frame)
                    site = None if frame is None else (frame.f_code, frame.f_lasti)
                else:  # a context manager of the program's
                    frame, at = outliving_and_site(frame)
                    site = (at.f_code, at.f_lasti)
            else:  # (a frame's attributes take no fast path: f_code once)
                site = (code, frame.f_lasti)
            permit = (t0, frame, site)
            try:
                permits = self._aiotrace_permits
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                permits = None
            if permits is None:
                self._aiotrace_permits = [permit]
            else:
                permits.append(permit)
            if LOCK_ORDER[0]:
                _lock_order.acquired(self, frame)
        except Exception as exc:  # the permit is the program's: taken all the same
            rec.fail(FAMILY_SEMAPHORE, exc)

    @functools.wraps(orig_acquire)
    async def acquire(self: Any) -> bool:
        if not self.locked():
            self._value -= 1
            if live[0]:
                take(self, pc(), getframe(1))
            return True
        if not (enabled[FAMILY_SEMAPHORE] and live[0]):
            # Retired, or turned off by an internal error: asyncio's own acquire.
            return await orig_acquire(self)  # type: ignore[no-any-return]  # it returns True
        # Contended: queue our start time, then wait.
        t0 = pc()
        waiters = self._waiters
        ahead = len(waiters) if waiters else 0
        value = self._value
        try:
            self._aiotrace_starts.append(t0)
        except AttributeError:  # no queue yet, or made before instrument()
            queue_start(self, t0)
        try:
            # CPython's slow path from here on, verified at instrument time
            # (see _base.source_is): no second coroutine per contended acquire.
            if inline_310 or inline_313:
                if self._waiters is None:
                    self._waiters = collections.deque()
                loop = self._get_loop()
                fut = (
                    loop.create_future() if PLAIN_CREATE_FUTURE[0] is None else waiter_future(loop)
                )
                self._waiters.append(fut)
                # The two texts differ only in what a cancelled waiter gives
                # back and in how the next waiters are woken.
                try:
                    try:
                        await fut
                    finally:
                        self._waiters.remove(fut)
                except CancelledError:
                    if inline_313:
                        if fut.done() and not fut.cancelled():
                            self._value += 1
                    elif not fut.cancelled():
                        self._value += 1
                        self._wake_up_next()
                    raise
                finally:
                    if inline_313:
                        while self._value > 0:
                            if not self._wake_up_next():
                                break
                if not inline_313 and self._value > 0:
                    self._wake_up_next()
                result = True
            else:
                result = await orig_acquire(self)
        except BaseException:
            wait_failed(self, t0, ahead, value, getframe(1))
            raise
        t1 = pc()
        frame = getframe(1)
        # (The release that left the note took our start out of the queue.)
        handoffs = self._aiotrace_handoffs
        handoff = handoffs.pop(t0, None) if handoffs else None
        stats = self._aiotrace_stats
        if type(handoff) is int and not stats.internal:  # a short wait's note
            stats.waits += 1
            stats.wait_ns += handoff - t0
        else:
            # ``async with``: its line's search starts at the user's frame
            long_wait(
                self,
                t0,
                ahead,
                value,
                frame.f_back if frame.f_code is aenter_code else frame,
                handoff,
            )
        if frame.f_code is aenter_code and not diagnosing[0] and not lock_order[0]:
            # take()'s common case, without the call: ``async with``, whose
            # site is its release's (the permits list exists: adopted above)
            permits = self._aiotrace_permits
            if permits is None:
                self._aiotrace_permits = [(t1, frame.f_back, None)]
            else:
                permits.append((t1, frame.f_back, None))
        else:
            take(self, t1, frame)
        return result

    def queue_start(self: Any, t0: int) -> None:
        """A blocked acquire's start, queued for the release that hands a permit over
        (the first, or on a semaphore made before instrument())."""
        try:
            try:
                start_waiting(self, t0)
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                start_waiting(self, t0)
        except Exception as exc:
            rec.fail(FAMILY_SEMAPHORE, exc)

    def wait_failed(self: Any, t0: int, ahead: int, value: int, frame: Any) -> None:
        """A wait since ``t0`` that ended in the exception being handled (cancelled,
        timed out): spanned if long. (Called from the handler, which so keeps
        no local for it.)"""
        try:
            exc = sys.exc_info()[1]
            assert exc is not None  # called from an ``except`` block
            ref = _ref(self)
            _waited(
                self,
                ref,
                t0,
                outcome_of(exc, current_task()),
                names[ref.kind][0],
                wait_attrs(ref, ahead, value),
                frame,
                _semaphore_handoff(self, t0),
            )
        except Exception as exc:
            rec.fail(FAMILY_SEMAPHORE, exc)

    def long_wait(self: Any, t0: int, ahead: int, value: int, frame: Any, handoff: Any) -> None:
        """A permit taken after a wait with no short wait's note: counted or spanned."""
        try:
            ref = _ref(self)
            _waited(
                self,
                ref,
                t0,
                semconv.OUTCOME_ACQUIRED,
                names[ref.kind][0],
                wait_attrs(ref, ahead, value),
                frame,
                _semaphore_note(handoff),
            )
        except Exception as exc:
            rec.fail(FAMILY_SEMAPHORE, exc)

    def wait_attrs(ref: Any, ahead: int, value: int) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            semconv.ATTR_WAITERS_AHEAD: ahead,
            semconv.ATTR_SEMAPHORE_VALUE: max(value, 0),
        }
        if ref.capacity is not None:
            attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = ref.capacity
        return attrs

    def released(self: Any, t1: int, woke: bool, permits: list[Any], caller: Any) -> None:
        # ``caller`` called release(), or __aexit__ for ``async with``.
        # The releasing coroutine gives back its own permit if it holds one,
        # else the oldest is taken to be the one released.
        index = 0
        for permit in permits:
            if permit[_P_OWNER] is caller:
                break
            index += 1
        else:
            index = _first_held_up_the_stack(permits, caller)
        t0, owner, site = permits.pop(index)
        if LOCK_ORDER[0]:
            _lock_order.released(self, owner)
        dt = t1 - t0
        stats = self._aiotrace_stats
        woken = None
        long_wait = False
        if woke:
            handoffs = self._aiotrace_handoffs
            if handoffs is None:
                handoffs = self._aiotrace_handoffs = {}
            starts = self._aiotrace_starts
            if starts:
                woken = starts.popleft()  # the one asyncio woke
                long_wait = t1 - woken >= min_wait
        if dt < min_hold and not long_wait:
            if woken is not None:
                handoffs[woken] = t1
                stats.holds += 1
            else:
                stats.n += 1
            return
        stats.holds += 1
        stats.spanned += 1
        if stats.internal:
            return
        if dt > stats.max_hold_ns:
            stats.max_hold_ns = dt
        ref = _ref(self)
        starts = self._aiotrace_starts
        hold = _record_hold(
            names[ref.kind][1],
            ref,
            t0,
            t1,
            owner,
            caller,
            # ``async with`` keeps no site: it is the release's, as for a Lock.
            raw_site(site[0], site[1]) if site is not None else _site_at_release(None, 0, caller),
            (len(starts) if starts else 0) + (woken is not None),  # the woken one too
        )
        if woken is not None:
            handoffs[woken] = (hold, t1) if long_wait else t1

    @functools.wraps(orig_release)
    def release(self: Any) -> None:
        if not live[0]:
            return orig_release(self)  # type: ignore[no-any-return]  # returns None
        value = self._value
        if inline_release:  # asyncio's release(), and _wake_up_next() as in __aexit__
            self._value += 1
            if self._waiters or (type(self) is not Semaphore and type(self) is not Bounded):
                self._wake_up_next()  # someone waits, or a subclass may have its own
        else:
            orig_release(self)
        try:
            permits = self._aiotrace_permits
        except AttributeError:  # made before instrument()
            adopt_preexisting(self, defaults)
            return None
        if permits and enabled[FAMILY_SEMAPHORE]:
            try:
                t1 = pc()
                # Through ``async with`` or BoundedSemaphore.release: the
                # user's frame is above.
                caller: Any = getframe(1)
                while caller is not None:
                    code = caller.f_code  # (no fast path for a frame's: once)
                    if (
                        code is not aexit_code
                        and code is not mixin_aexit_code
                        and code is not bounded_release_code
                    ):
                        break
                    caller = caller.f_back
                permit = permits[0]
                # asyncio adds the permit back, and takes it again for the
                # waiter it wakes: an unchanged value means one was woken.
                if (
                    self._value != value
                    and permit[_P_OWNER] is caller
                    and t1 - permit[_P_T0] < min_hold
                    and not lock_order[0]
                ):  # the commonest case, without the call: see released()
                    del permits[0]
                    self._aiotrace_stats.n += 1
                    return None
                released(self, t1, self._value == value, permits, caller)
            except Exception as exc:
                rec.fail(FAMILY_SEMAPHORE, exc)
        return None

    slow = _SlowPath(
        enabled if inline_310 or inline_313 else {FAMILY_SEMAPHORE: False},
        live,
        queue_start,
        long_wait,
        wait_failed,
        inline_313,
    )

    @functools.wraps(mixin.__aenter__)
    async def __aenter__(self: Any) -> None:
        # Neither class overrides acquire() or locked(): a permit free with
        # nobody queued (so not locked()) is taken here, without the
        # coroutine asyncio's __aenter__ makes to call acquire(). Anything
        # else is acquire()'s to decide, as it would be untraced.
        if (
            (type(self) is Semaphore or type(self) is Bounded)
            and self._value > 0
            and not self._waiters
        ):
            self._value -= 1
            if live[0]:
                t0 = pc()
                try:
                    permits = self._aiotrace_permits
                except AttributeError:  # made before instrument(): take() adopts it
                    permits = take
                if permits is take or diagnosing[0] or lock_order[0]:
                    take(self, t0, getframe(1))
                # take()'s common case, without the call: an ``async with``'s
                # permit, whose site is its release's (see take()).
                elif permits is None:
                    self._aiotrace_permits = [(t0, getframe(1), None)]
                else:
                    permits.append((t0, getframe(1), None))
            return None
        if not (
            (type(self) is Semaphore or type(self) is Bounded)
            and slow.enabled[FAMILY_SEMAPHORE]
            and slow.live[0]
            and self.locked()
        ):
            # A subclass's acquire(), one asyncio's acquire() takes at once,
            # or not traced: acquire()'s to decide.
            await self.acquire()
            return None  # asyncio's __aenter__ returns None
        # Contended: acquire()'s slow path and its bookkeeping, here rather
        # than awaited, as the Lock's __aenter__ has them: a coroutine less.
        # (Few locals, one closure variable: each costs every uncontended
        # ``async with``.)
        t0 = pc()
        ahead = len(self._waiters) if self._waiters else 0
        value = self._value
        try:
            self._aiotrace_starts.append(t0)
        except AttributeError:  # no queue yet, or made before instrument()
            slow.queue_start(self, t0)
        try:
            # CPython's Semaphore.acquire from here on, as in acquire().
            if self._waiters is None:
                self._waiters = collections.deque()
            fut = (
                self._get_loop().create_future()
                if PLAIN_CREATE_FUTURE[0] is None
                else waiter_future(self._get_loop())
            )
            self._waiters.append(fut)
            try:
                try:
                    await fut
                finally:
                    self._waiters.remove(fut)
            except CancelledError:
                if slow.v313:
                    if fut.done() and not fut.cancelled():
                        self._value += 1
                elif not fut.cancelled():
                    self._value += 1
                    self._wake_up_next()
                raise
            finally:
                if slow.v313:
                    while self._value > 0:
                        if not self._wake_up_next():
                            break
            if not slow.v313 and self._value > 0:
                self._wake_up_next()
        except BaseException:
            slow.failed(self, t0, ahead, value, getframe(1))
            raise
        t1 = pc()
        frame = getframe(1)
        # As in acquire(): a short wait's note, else the wait counted or spanned.
        handoffs = self._aiotrace_handoffs
        handoff = handoffs.pop(t0, None) if handoffs else None
        stats = self._aiotrace_stats
        if type(handoff) is int and not stats.internal:
            stats.waits += 1
            stats.wait_ns += handoff - t0
        else:
            slow.took(self, t0, ahead, value, frame, handoff)
        if diagnosing[0] or lock_order[0]:
            take(self, t1, frame, True)
        else:  # take()'s common case, as above
            permits = self._aiotrace_permits
            if permits is None:
                self._aiotrace_permits = [(t1, frame, None)]
            else:
                permits.append((t1, frame, None))
        return None

    @functools.wraps(mixin.__aexit__)
    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        if not live[0] or (
            type(self) is not Semaphore
            and not (type(self) is Bounded and inline_bounded and self._value < self._bound_value)  # type: ignore[attr-defined]
        ):
            # A subclass's release, or a BoundedSemaphore's refusing to pass its bound.
            self.release()
            return None
        value = self._value
        self._value += 1
        if self._waiters:  # _wake_up_next's own first test, without the call
            self._wake_up_next()
        try:
            permits = self._aiotrace_permits
        except AttributeError:  # made before instrument()
            adopt_preexisting(self, defaults)
            return None
        if not permits or not enabled[FAMILY_SEMAPHORE]:
            return None
        try:
            t1 = pc()
            caller = getframe(1)
            permit = permits[0]
            # The common case, settled here without a call: the releaser's
            # own permit, held briefly, handed (if at all) to a waiter that
            # has not waited long. Anything else is released()'s.
            if permit[_P_OWNER] is caller and t1 - permit[_P_T0] < min_hold:
                woken = None
                if self._value == value:  # one was woken
                    starts = self._aiotrace_starts
                    handoffs = self._aiotrace_handoffs
                    if starts and handoffs is not None:
                        woken = starts[0]
                    if woken is None or t1 - woken >= min_wait:
                        released(self, t1, True, permits, caller)
                        return None
                    starts.popleft()
                del permits[0]
                if lock_order[0]:  # _lock_order.released, inline as in Lock.__aexit__
                    popped = held.pop(caller, None)
                    if popped is not self and popped is not None:
                        unhold(self, caller, popped)
                stats = self._aiotrace_stats
                if woken is None:
                    stats.n += 1
                else:
                    handoffs[woken] = t1
                    stats.holds += 1
                return None
            released(self, t1, self._value == value, permits, caller)
        except Exception as exc:
            rec.fail(FAMILY_SEMAPHORE, exc)
        return None

    aenter_code = cast("Any", __aenter__).__code__
    aexit_code = cast("Any", __aexit__).__code__
    patches = [
        Patch(Semaphore, "__init__", __init__),
        Patch(Semaphore, "acquire", acquire),
        Patch(Semaphore, "release", release),
        Patch(Semaphore, "__aenter__", __aenter__),
    ]
    if inline_release:  # else asyncio's __aexit__ calls our release()
        patches.append(Patch(Semaphore, "__aexit__", __aexit__))
    return patches
