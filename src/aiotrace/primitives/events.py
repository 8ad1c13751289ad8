"""Event and Condition: who waited, who set or notified, and whom that woke.

A blocked waiter appends its start time to ``_aiotrace_starts`` (a deque in
wait order, which is also wake order). A waking call (``Event.set()``,
``Condition.notify()``) looks at the oldest waiter it wakes: only if that one
waited at least ``min_wait`` will any woken wait become a span, and only then
is the waking call recorded, as a span event on the waker's current span, and
left on the primitive for the woken waiters to link to. So a busy event costs
a clock read and a deque operation per wait, and records nothing, until
somebody actually waits long enough to matter.

A wait ends when it was woken, not when its task next ran: for a Condition,
re-acquiring the lock afterwards is a separate wait on that lock and shows as
the lock's own spans. Each ``notify(n)`` queues one wake per waiter it woke;
woken waiters take them in FIFO order, the order asyncio wakes them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
from collections import deque
from time import perf_counter_ns
from typing import Any, Final, cast

from aiotrace import semconv
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import (
    PLAIN_CREATE_FUTURE,
    Waker,
    adopt,
    adopt_preexisting,
    current_task,
    defaults_setter,
    emit_wait,
    live_flag,
    mark_point,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
    source_is,
    wait_spanned,
    waiter_future,
)

FAMILY_EVENT: Final = "event"
FAMILY_CONDITION: Final = "condition"


def prim_attrs(ref: Any) -> dict[str, Any]:
    """Attributes naming a primitive on a span event.

    The name is the ref itself, made a string where the event is made one
    (at once on a user's span, when encoded on a task's): naming is the
    costly part, and the name then is the one the primitive's spans carry.
    """
    return {
        semconv.ATTR_PRIMITIVE_KIND: ref.kind,
        semconv.ATTR_PRIMITIVE_ID: ref.pid,
        semconv.ATTR_PRIMITIVE_NAME: ref,
    }


def start_waiting(prim: Any, t0: int, attr: str = "_aiotrace_starts") -> None:
    """Note a blocked waiter's start time, in wake order."""
    starts = getattr(prim, attr)
    if starts is None:
        setattr(prim, attr, deque((t0,)))
    else:
        starts.append(t0)


def stop_waiting(prim: Any, t0: int, attr: str = "_aiotrace_starts") -> None:
    """Forget a waiter that left without being woken (cancelled, timed out)."""
    starts = getattr(prim, attr)
    if starts:
        with contextlib.suppress(ValueError):  # already taken by a waking call
            starts.remove(t0)


def oldest_woken(prim: Any, count: int | None, attr: str = "_aiotrace_starts") -> int | None:
    """Pop the start times of the ``count`` waiters a waking call wakes (all if None)."""
    starts = getattr(prim, attr)
    if not starts:
        return None
    if count == 1:  # a put, a get, a notify(): the commonest
        return int(starts.popleft())
    oldest: int = starts[0]
    if count is None or count >= len(starts):
        starts.clear()
    else:
        for _ in range(count):
            starts.popleft()
    return oldest


def waker_links(waker: Waker | None, attrs: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Link (and name) the recorded waking call that ended a wait."""
    if waker is None:
        return ()
    span, task, site, _, via = waker
    if task is not None:
        attrs[semconv.ATTR_WAKER_TASK] = task
    if site is not None:
        attrs[semconv.ATTR_WAKER_SITE] = site  # resolved to "file:line" by the pipeline
    if via is not None:
        attrs[semconv.ATTR_WAKER_VIA_SITE] = via
    if span is None:
        return ()
    # One set() wakes every waiter: they share one links tuple.
    try:
        links = _WAKER_LINKS.get(span)
    except TypeError:  # an unhashable span
        return ((semconv.LINK_WAKER, span),)
    if links is None:
        if len(_WAKER_LINKS) >= 1024:
            _WAKER_LINKS.clear()
        links = _WAKER_LINKS[span] = ((semconv.LINK_WAKER, span),)
    return links


# waking span (or span id) -> its links tuple; see waker_links.
_WAKER_LINKS: dict[Any, tuple[tuple[str, Any], ...]] = {}


_KNOWN_EVENT_WAIT: Final = """\
async def wait(self):
if self._value:
return True
fut = self._get_loop().create_future()
self._waiters.append(fut)
try:
await fut
return True
finally:
self._waiters.remove(fut)"""
"""CPython's Event.wait, normalized (see ``_base.source_is``): the same 3.10-3.13."""

_KNOWN_EVENT_SET: Final = """\
def set(self):
if not self._value:
self._value = True
for fut in self._waiters:
if not fut.done():
fut.set_result(True)"""
"""CPython's Event.set, the same 3.10-3.13: run as ours, with the tracing around it
(``set()`` then costs one Python call, as untraced; a Queue's ``task_done`` sets one)."""


def event_patches() -> list[Patch]:
    """Patches for ``asyncio.Event``."""
    Event = asyncio.Event
    live = live_flag()
    orig_init = vars(Event)["__init__"]
    orig_wait = vars(Event)["wait"]
    orig_set = vars(Event)["set"]
    rec = RECORDER
    enabled = rec.enabled
    min_wait = rec.min_wait_ns
    pc = perf_counter_ns
    getframe = sys._getframe
    inline_slow_path = source_is(orig_wait, _KNOWN_EVENT_WAIT)
    inline_set = source_is(orig_set, _KNOWN_EVENT_SET)
    # Per-instance, never class-level (see _base): starts are the blocked
    # waiters' start times, set_at and waker the last waking set().
    defaults: dict[str, Any] = {
        "_aiotrace_ref": None,
        "_aiotrace_stats": preexisting_stats(semconv.KIND_EVENT),
        "_aiotrace_starts": None,
        "_aiotrace_set_at": 0,
        "_aiotrace_waker": None,
    }
    give_defaults = defaults_setter(defaults)

    @functools.wraps(orig_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, *args, **kwargs)
        else:  # Event(): no argument tuple and dict to unpack
            orig_init(self)
        try:
            give_defaults(self)
            if enabled[FAMILY_EVENT]:
                on_create(self, semconv.KIND_EVENT)
        except Exception as exc:  # left like a primitive made before instrument()
            rec.fail(FAMILY_EVENT, exc)

    @functools.wraps(orig_wait)
    async def wait(self: Any) -> bool:
        if self._value:
            if live[0]:
                try:
                    self._aiotrace_stats.n += 1
                except AttributeError:  # made before instrument()
                    adopt_preexisting(self, defaults)
            return True
        if not (enabled[FAMILY_EVENT] and live[0]):
            # Retired, or turned off by an internal error: asyncio's own wait.
            return await orig_wait(self)  # type: ignore[no-any-return]  # it returns True
        # Blocked: queue our start time (start_waiting, inline: no call), then wait.
        t0 = pc()
        ahead = len(self._waiters)
        try:
            starts = self._aiotrace_starts
        except AttributeError:  # made before instrument()
            adopt_preexisting(self, defaults)
            starts = None
        if starts is None:
            self._aiotrace_starts = deque((t0,))
        else:
            starts.append(t0)
        try:
            if inline_slow_path:
                # CPython's Event.wait from here on, verified at instrument time.
                loop = self._get_loop()
                fut = (
                    loop.create_future() if PLAIN_CREATE_FUTURE[0] is None else waiter_future(loop)
                )
                self._waiters.append(fut)
                try:
                    await fut
                    result = True
                finally:
                    self._waiters.remove(fut)
            else:
                result = await orig_wait(self)
        except BaseException as exc:
            try:
                stop_waiting(self, t0)
                ref = ref_of(self, semconv.KIND_EVENT)
                outcome = outcome_of(exc, current_task())
                t1 = pc()
                if not ref.stats.internal and wait_spanned(ref, t0, t1, outcome):
                    attrs = {semconv.ATTR_WAITERS_AHEAD: ahead}
                    emit_wait(
                        semconv.SPAN_EVENT_WAIT, ref, t0, t1, outcome, attrs, frame=getframe(1)
                    )
            except Exception as inner:
                rec.fail(FAMILY_EVENT, inner)
            raise
        # The wait ended when the event was set; resuming is scheduling.
        set_at = self._aiotrace_set_at
        stats = self._aiotrace_stats
        waited = set_at - t0
        if 0 <= waited < min_wait and not stats.internal:
            stats.waits += 1
            stats.wait_ns += waited
        else:
            try:
                ref = ref_of(self, semconv.KIND_EVENT)
                t1 = set_at if waited >= 0 else pc()
                if not ref.stats.internal and wait_spanned(ref, t0, t1, semconv.OUTCOME_SET):
                    waker = self._aiotrace_waker
                    if waker is not None and waker[3] != set_at:
                        waker = None
                    attrs = {semconv.ATTR_WAITERS_AHEAD: ahead}
                    links = waker_links(waker, attrs)
                    # (The caller's frame: the search for the user's line starts there.)
                    emit_wait(
                        semconv.SPAN_EVENT_WAIT,
                        ref,
                        t0,
                        t1,
                        semconv.OUTCOME_SET,
                        attrs,
                        links,
                        frame=getframe(1),
                    )
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)
        return result

    @functools.wraps(orig_set)
    def set(self: Any) -> None:  # mirrors Event.set
        if inline_set:
            if self._value:
                return
            self._value = True
            waiters = self._waiters
            if not waiters:
                return  # nobody to wake, nothing to record: as cheap as untraced
            for fut in waiters:
                if not fut.done():
                    fut.set_result(True)
            waking = live[0] and enabled[FAMILY_EVENT]
        else:
            waking = not self._value and self._waiters and live[0] and enabled[FAMILY_EVENT]
            orig_set(self)
        if waking:
            try:
                starts = self._aiotrace_starts
            except AttributeError:  # made before instrument()
                adopt_preexisting(self, defaults)
                starts = None
            t = self._aiotrace_set_at = pc()
            if starts:
                oldest = starts[0]
                starts.clear()  # every waiter is woken
                if t - oldest >= min_wait:
                    try:
                        ref = ref_of(self, semconv.KIND_EVENT)
                        if not ref.stats.internal:
                            self._aiotrace_waker = mark_point(
                                semconv.SPAN_EVENT_SET,
                                {**prim_attrs(ref), semconv.ATTR_WOKEN: len(self._waiters)},
                                t,
                            )
                    except Exception as exc:
                        rec.fail(FAMILY_EVENT, exc)

    return [
        Patch(Event, "__init__", __init__),
        Patch(Event, "wait", wait),
        Patch(Event, "set", set),
    ]


CONDITION_WAIT_CALLERS: Final[list[Any]] = [None, None]
"""The code of aiotrace's ``Condition.wait`` and of asyncio's ``Condition.wait_for``: the
frames between asyncio's ``Condition.wait``, which takes its lock again after a notify,
and the frame that waits, whose hold that is (see ``locks._waiter_of``)."""


def condition_patches() -> list[Patch]:
    """Patches for ``asyncio.Condition`` (its lock is traced by the lock family)."""
    Condition = asyncio.Condition
    live = live_flag()
    orig_init = vars(Condition)["__init__"]
    orig_wait = vars(Condition)["wait"]
    orig_wait_for = vars(Condition)["wait_for"]
    orig_notify = vars(Condition)["notify"]
    orig_notify_all = vars(Condition)["notify_all"]
    wait_for_code = orig_wait_for.__code__
    rec = RECORDER
    enabled = rec.enabled
    min_wait = int(rec.options.min_wait * 1e9)
    pc = perf_counter_ns
    getframe = sys._getframe

    @functools.wraps(orig_init)
    def __init__(self: Any, lock: Any = None, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, lock, *args, **kwargs)
        else:  # Condition() or Condition(lock): nothing to unpack
            orig_init(self, lock)
        if enabled[FAMILY_CONDITION]:
            try:
                ref = on_create(self, semconv.KIND_CONDITION)
                if lock is None:
                    # The Lock asyncio made for us is the condition's own lock:
                    # name it after the condition, not after asyncio/locks.py.
                    adopt(self._lock, ref, ".lock")
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)

    @functools.wraps(orig_wait)
    async def wait(self: Any) -> bool:
        t0 = pc()
        tracing = enabled[FAMILY_CONDITION] and live[0]
        if tracing:
            try:
                ahead = len(self._waiters)
                predicate = getframe(1).f_code is wait_for_code
                start_waiting(self, t0)
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)
                tracing = False
        try:
            result: bool = await orig_wait(self)
        except BaseException as exc:
            if tracing:
                try:
                    stop_waiting(self, t0)
                    ref = ref_of(self, semconv.KIND_CONDITION)
                    outcome = outcome_of(exc, current_task())
                    t1 = pc()
                    if not ref.stats.internal and wait_spanned(ref, t0, t1, outcome):
                        attrs: dict[str, Any] = {semconv.ATTR_WAITERS_AHEAD: ahead}
                        if predicate:
                            attrs[semconv.ATTR_CONDITION_PREDICATE] = True
                        emit_wait(semconv.SPAN_CONDITION_WAIT, ref, t0, t1, outcome, attrs)
                except Exception as inner:
                    rec.fail(FAMILY_CONDITION, inner)
            raise
        if tracing:
            try:
                wakes = self._aiotrace_wakes
                wake = None
                while wakes:
                    candidate = wakes.popleft()
                    if candidate[1] >= t0:
                        wake = candidate
                        break
                t1 = wake[1] if wake is not None else pc()
                stats = self._aiotrace_stats
                if 0 <= t1 - t0 < min_wait and not stats.internal:
                    # wait_spanned()'s commonest case inline: a short wait, only counted.
                    stats.waits += 1
                    stats.wait_ns += t1 - t0
                    return result
                ref = ref_of(self, semconv.KIND_CONDITION)
                if not ref.stats.internal and wait_spanned(ref, t0, t1, semconv.OUTCOME_NOTIFIED):
                    attrs = {semconv.ATTR_WAITERS_AHEAD: ahead}
                    if predicate:
                        attrs[semconv.ATTR_CONDITION_PREDICATE] = True
                    links = waker_links(wake[0] if wake is not None else None, attrs)
                    emit_wait(
                        semconv.SPAN_CONDITION_WAIT,
                        ref,
                        t0,
                        t1,
                        semconv.OUTCOME_NOTIFIED,
                        attrs,
                        links,
                    )
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)
        return result

    CONDITION_WAIT_CALLERS[:] = [cast("Any", wait).__code__, wait_for_code]

    def _notified(self: Any, n: int | None, woken: int) -> None:
        t = pc()
        starts = self._aiotrace_starts
        # oldest_woken()'s commonest case inline: one waiter woken.
        if woken == 1 and starts:
            oldest: int | None = starts.popleft()
        else:
            oldest = oldest_woken(self, woken)
        waker = None
        if oldest is not None and t - oldest >= min_wait:
            ref = ref_of(self, semconv.KIND_CONDITION)
            if not ref.stats.internal:
                attrs = {**prim_attrs(ref), semconv.ATTR_WOKEN: woken}
                if n is not None:
                    attrs[semconv.ATTR_CONDITION_NOTIFY_N] = n
                waker = mark_point(semconv.SPAN_CONDITION_NOTIFY, attrs, t)
        wakes = self._aiotrace_wakes
        if wakes is None:
            wakes = self._aiotrace_wakes = deque(maxlen=65536)
        if woken == 1:
            wakes.append((waker, t))
        else:
            wakes.extend([(waker, t)] * woken)

    @functools.wraps(orig_notify)
    def notify(self: Any, n: int = 1) -> None:
        woken = 0
        if live[0] and enabled[FAMILY_CONDITION] and self._waiters:
            # Those asyncio's notify() wakes: the first n not done. Counted
            # up to n, not over every waiter: notify() in a loop, with
            # 1,000 waiting, cost 160 µs a call.
            for waiter in self._waiters:
                if woken >= n:
                    break
                if not waiter.done():
                    woken += 1
        orig_notify(self, n)  # raises RuntimeError if the lock is not held
        if woken:
            try:
                everyone = self._aiotrace_notify_all
                _notified(self, None if everyone else n, woken)
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)

    @functools.wraps(orig_notify_all)
    def notify_all(self: Any) -> None:
        # notify_all() calls self.notify(len(waiters)); flag it so the event says "all".
        if not live[0]:
            return orig_notify_all(self)  # type: ignore[no-any-return]  # returns None
        self._aiotrace_notify_all = True
        try:
            orig_notify_all(self)
        finally:
            self._aiotrace_notify_all = False
        return None

    return [
        Patch(Condition, "_aiotrace_ref", None),
        Patch(Condition, "_aiotrace_stats", preexisting_stats(semconv.KIND_CONDITION)),
        Patch(Condition, "_aiotrace_starts", None),
        Patch(Condition, "_aiotrace_wakes", None),
        Patch(Condition, "_aiotrace_notify_all", False),
        Patch(Condition, "__init__", __init__),
        Patch(Condition, "wait", wait),
        Patch(Condition, "notify", notify),
        Patch(Condition, "notify_all", notify_all),
    ]
