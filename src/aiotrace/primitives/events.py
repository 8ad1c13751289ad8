"""Event and Condition: who waited, who set or notified, and whom that woke.

A waking call (``Event.set()``, ``Condition.notify()``) is recorded as a span
event on the waker's current span, and its identity is left on the primitive
so every waiter it woke can link to it. Waking calls with nobody waiting are
counted, not recorded.

Condition waits end when the waiter is notified, not when ``wait()`` returns:
re-acquiring the condition's lock afterwards is a separate wait on that lock
and shows as the lock's own spans. Each ``notify(n)`` queues one "wake" per
waiter it woke; woken waiters take them in FIFO order, the order asyncio wakes
them in.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import deque
from time import perf_counter_ns
from typing import Any, Final

from aiotrace import semconv
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import (
    Wait,
    adopt,
    finish_wait,
    mark_point,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
)

FAMILY_EVENT: Final = "event"
FAMILY_CONDITION: Final = "condition"


def _waiting(waiters: Any) -> int:
    if not waiters:
        return 0
    return sum(1 for w in waiters if not w.done())


def _link_waker(wait: Wait, waker: tuple[Any, str | None, Any, int] | None) -> None:
    """Attach a waker ``(span, task, site, time)`` to a wait that it ended."""
    if waker is None or waker[3] < wait.t0:
        return
    span, task, site, _ = waker
    if span is not None:
        wait.links.append((semconv.LINK_WAKER, span))
    if task is not None:
        wait.attrs[semconv.ATTR_WAKER_TASK] = task
    if site is not None:
        wait.attrs[semconv.ATTR_WAKER_SITE] = site  # resolved to "file:line" by the pipeline


def event_patches() -> list[Patch]:
    """Patches for ``asyncio.Event``."""
    Event = asyncio.Event
    orig_init = vars(Event)["__init__"]
    orig_wait = vars(Event)["wait"]
    orig_set = vars(Event)["set"]
    rec = RECORDER
    enabled = rec.enabled
    pc = perf_counter_ns

    @functools.wraps(orig_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        if enabled[FAMILY_EVENT]:
            try:
                on_create(self, semconv.KIND_EVENT)
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)

    @functools.wraps(orig_wait)
    async def wait(self: Any) -> bool:
        if self._value:
            self._aiotrace_stats.n += 1
            return True
        wait = ref = None
        if enabled[FAMILY_EVENT]:
            try:
                ref = ref_of(self, semconv.KIND_EVENT)
                if not ref.stats.internal:
                    wait = Wait(pc())
                    wait.attrs[semconv.ATTR_WAITERS_AHEAD] = _waiting(self._waiters)
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)
                wait = None
        try:
            result: bool = await orig_wait(self)
        except BaseException as exc:
            if wait is not None and ref is not None:
                try:
                    finish_wait(
                        FAMILY_EVENT,
                        ref,
                        wait,
                        pc(),
                        semconv.SPAN_EVENT_WAIT,
                        outcome_of(exc, wait.task),
                    )
                except Exception as inner:
                    rec.fail(FAMILY_EVENT, inner)
            raise
        if wait is not None and ref is not None:
            try:
                waker = self.__dict__.get("_aiotrace_waker")
                _link_waker(wait, waker)
                # The wait ended when the event was set; resuming is scheduling.
                end = waker[3] if waker is not None and waker[3] >= wait.t0 else pc()
                finish_wait(
                    FAMILY_EVENT, ref, wait, end, semconv.SPAN_EVENT_WAIT, semconv.OUTCOME_SET
                )
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)
        return result

    @functools.wraps(orig_set)
    def set(self: Any) -> None:  # mirrors Event.set
        woken = 0
        if enabled[FAMILY_EVENT] and not self._value:
            try:
                woken = _waiting(self._waiters)
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)
        orig_set(self)
        if woken:
            try:
                ref = ref_of(self, semconv.KIND_EVENT)
                if not ref.stats.internal:
                    self._aiotrace_waker = mark_point(
                        semconv.SPAN_EVENT_SET,
                        {**_prim_attrs(ref), semconv.ATTR_WOKEN: woken},
                    )
            except Exception as exc:
                rec.fail(FAMILY_EVENT, exc)

    return [
        Patch(Event, "_aiotrace_ref", None),
        Patch(Event, "_aiotrace_stats", preexisting_stats(semconv.KIND_EVENT)),
        Patch(Event, "__init__", __init__),
        Patch(Event, "wait", wait),
        Patch(Event, "set", set),
    ]


def _prim_attrs(ref: Any) -> dict[str, Any]:
    """Attributes naming a primitive on a span event (resolved to text by the pipeline)."""
    return {
        semconv.ATTR_PRIMITIVE_KIND: ref.kind,
        semconv.ATTR_PRIMITIVE_ID: ref.pid,
        semconv.ATTR_PRIMITIVE_NAME: ref,
    }


def condition_patches() -> list[Patch]:
    """Patches for ``asyncio.Condition`` (its lock is traced by the lock family)."""
    Condition = asyncio.Condition
    orig_init = vars(Condition)["__init__"]
    orig_wait = vars(Condition)["wait"]
    orig_wait_for = vars(Condition)["wait_for"]
    orig_notify = vars(Condition)["notify"]
    orig_notify_all = vars(Condition)["notify_all"]
    wait_for_code = orig_wait_for.__code__
    rec = RECORDER
    enabled = rec.enabled
    pc = perf_counter_ns
    getframe = sys._getframe

    @functools.wraps(orig_init)
    def __init__(self: Any, lock: Any = None, *args: Any, **kwargs: Any) -> None:
        orig_init(self, lock, *args, **kwargs)
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
        wait = ref = None
        if enabled[FAMILY_CONDITION]:
            try:
                ref = ref_of(self, semconv.KIND_CONDITION)
                if not ref.stats.internal:
                    wait = Wait(pc())
                    wait.attrs[semconv.ATTR_WAITERS_AHEAD] = _waiting(self._waiters)
                    if getframe(1).f_code is wait_for_code:
                        wait.attrs[semconv.ATTR_CONDITION_PREDICATE] = True
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)
                wait = None
        try:
            result: bool = await orig_wait(self)
        except BaseException as exc:
            if wait is not None and ref is not None:
                try:
                    finish_wait(
                        FAMILY_CONDITION,
                        ref,
                        wait,
                        pc(),
                        semconv.SPAN_CONDITION_WAIT,
                        outcome_of(exc, wait.task),
                    )
                except Exception as inner:
                    rec.fail(FAMILY_CONDITION, inner)
            raise
        if wait is not None and ref is not None:
            try:
                wakes = self.__dict__.get("_aiotrace_wakes")
                waker = None
                while wakes:
                    candidate = wakes.popleft()
                    if candidate[3] >= wait.t0:
                        waker = candidate
                        break
                _link_waker(wait, waker)
                end = waker[3] if waker is not None else pc()
                finish_wait(
                    FAMILY_CONDITION,
                    ref,
                    wait,
                    end,
                    semconv.SPAN_CONDITION_WAIT,
                    semconv.OUTCOME_NOTIFIED,
                )
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)
        return result

    def _record_notify(self: Any, n: int | None, woken: int) -> None:
        ref = ref_of(self, semconv.KIND_CONDITION)
        if ref.stats.internal:
            return
        attrs = {**_prim_attrs(ref), semconv.ATTR_WOKEN: woken}
        if n is not None:
            attrs[semconv.ATTR_CONDITION_NOTIFY_N] = n
        waker = mark_point(semconv.SPAN_CONDITION_NOTIFY, attrs)
        wakes = self.__dict__.get("_aiotrace_wakes")
        if wakes is None:
            wakes = self._aiotrace_wakes = deque(maxlen=65536)
        wakes.extend([waker] * woken)

    @functools.wraps(orig_notify)
    def notify(self: Any, n: int = 1) -> None:
        woken = 0
        everyone = self.__dict__.get("_aiotrace_notify_all", False)
        if enabled[FAMILY_CONDITION]:
            try:
                woken = min(n, _waiting(self._waiters))
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)
        orig_notify(self, n)  # raises RuntimeError if the lock is not held
        if woken:
            try:
                _record_notify(self, None if everyone else n, woken)
            except Exception as exc:
                rec.fail(FAMILY_CONDITION, exc)

    @functools.wraps(orig_notify_all)
    def notify_all(self: Any) -> None:
        # notify_all() calls self.notify(len(waiters)); flag it so the event says "all".
        self._aiotrace_notify_all = True
        try:
            orig_notify_all(self)
        finally:
            self._aiotrace_notify_all = False

    return [
        Patch(Condition, "_aiotrace_ref", None),
        Patch(Condition, "_aiotrace_stats", preexisting_stats(semconv.KIND_CONDITION)),
        Patch(Condition, "__init__", __init__),
        Patch(Condition, "wait", wait),
        Patch(Condition, "notify", notify),
        Patch(Condition, "notify_all", notify_all),
    ]
