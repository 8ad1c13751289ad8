"""Barrier (Python 3.11+): each party's wait, its arrival order, and who released them.

The arrival that completes the barrier (``wait()`` returning ``parties - 1``)
is the releaser; every other party's span links to the releaser's span as it
was when it arrived. The Condition and Lock a Barrier creates for itself are
asyncio internals and produce no spans of their own.
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter_ns
from typing import Any, Final

from aiotrace import semconv
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import (
    current_task,
    emit_wait,
    live_flag,
    mark_point,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
    task_name,
    wait_spanned,
)
from aiotrace.primitives.events import prim_attrs

FAMILY_BARRIER: Final = "barrier"


def barrier_patches() -> list[Patch]:
    """Patches for ``asyncio.Barrier``; empty before Python 3.11, which has no Barrier."""
    Barrier = getattr(asyncio, "Barrier", None)
    if Barrier is None:
        return []
    broken_error = asyncio.BrokenBarrierError  # type: ignore[attr-defined, unused-ignore]  # 3.11+
    live = live_flag()
    orig_init = vars(Barrier)["__init__"]
    orig_wait = vars(Barrier)["wait"]
    orig_abort = vars(Barrier)["abort"]
    orig_reset = vars(Barrier)["reset"]
    rec = RECORDER
    enabled = rec.enabled
    pc = perf_counter_ns

    @functools.wraps(orig_init)
    def __init__(self: Any, parties: int, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, parties, *args, **kwargs)
        else:  # Barrier(n): nothing to unpack
            orig_init(self, parties)
        if enabled[FAMILY_BARRIER]:
            try:
                on_create(self, semconv.KIND_BARRIER)
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)

    @functools.wraps(orig_wait)
    async def wait(self: Any) -> int:
        t0 = pc()
        tracing = enabled[FAMILY_BARRIER] and live[0]
        if tracing:
            ahead = self._count
        try:
            index: int = await orig_wait(self)
        except BaseException as exc:
            if tracing:
                try:
                    ref = ref_of(self, semconv.KIND_BARRIER)
                    outcome = (
                        semconv.OUTCOME_BROKEN
                        if isinstance(exc, broken_error)
                        else outcome_of(exc, current_task())
                    )
                    t1 = pc()
                    if not ref.stats.internal and wait_spanned(ref, t0, t1, outcome):
                        attrs = {
                            semconv.ATTR_BARRIER_PARTIES: self._parties,
                            semconv.ATTR_WAITERS_AHEAD: ahead,
                        }
                        emit_wait(semconv.SPAN_BARRIER_WAIT, ref, t0, t1, outcome, attrs)
                except Exception as inner:
                    rec.fail(FAMILY_BARRIER, inner)
            raise
        if tracing:
            try:
                ref = ref_of(self, semconv.KIND_BARRIER)
                if not ref.stats.internal:
                    attrs = {
                        semconv.ATTR_BARRIER_PARTIES: self._parties,
                        semconv.ATTR_WAITERS_AHEAD: ahead,
                        semconv.ATTR_BARRIER_INDEX: index,
                    }
                    if index == self._parties - 1:
                        # We released the barrier. This wrapper runs before any
                        # other party resumes (they must re-acquire the Condition
                        # we hold), so they find us here. Our own wait is short:
                        # it becomes a span only if a party links to it.
                        t1 = pc()
                        span_id = rec.next_id()
                        self._aiotrace_releaser = (span_id, task_name(current_task()), t0)
                        spanned = wait_spanned(ref, t0, t1, semconv.OUTCOME_PASSED)
                        emit_wait(
                            semconv.SPAN_BARRIER_WAIT,
                            ref,
                            t0,
                            t1,
                            semconv.OUTCOME_PASSED,
                            attrs,
                            span_id=span_id,
                            optional=not spanned,
                        )
                    else:
                        releaser = self._aiotrace_releaser
                        if releaser is not None and releaser[2] >= t0:
                            t1 = releaser[2]
                        else:
                            releaser, t1 = None, pc()
                        if wait_spanned(ref, t0, t1, semconv.OUTCOME_PASSED):
                            links: tuple[tuple[str, Any], ...] = ()
                            if releaser is not None:
                                links = ((semconv.LINK_RELEASER, releaser[0]),)
                                if releaser[1] is not None:
                                    attrs[semconv.ATTR_WAKER_TASK] = releaser[1]
                            emit_wait(
                                semconv.SPAN_BARRIER_WAIT,
                                ref,
                                t0,
                                t1,
                                semconv.OUTCOME_PASSED,
                                attrs,
                                links,
                            )
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)
        return index

    def _point(self: Any, name: str) -> None:
        ref = ref_of(self, semconv.KIND_BARRIER)
        if not ref.stats.internal:
            mark_point(
                name,
                {**prim_attrs(ref), semconv.ATTR_WAITERS_DURING: self._count},
            )

    @functools.wraps(orig_abort)
    async def abort(self: Any) -> None:
        if enabled[FAMILY_BARRIER]:
            try:
                _point(self, semconv.SPAN_BARRIER_ABORT)
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)
        await orig_abort(self)

    @functools.wraps(orig_reset)
    async def reset(self: Any) -> None:
        if enabled[FAMILY_BARRIER]:
            try:
                _point(self, semconv.SPAN_BARRIER_RESET)
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)
        await orig_reset(self)

    return [
        Patch(Barrier, "_aiotrace_ref", None),
        Patch(Barrier, "_aiotrace_stats", preexisting_stats(semconv.KIND_BARRIER)),
        Patch(Barrier, "_aiotrace_releaser", None),
        Patch(Barrier, "__init__", __init__),
        Patch(Barrier, "wait", wait),
        Patch(Barrier, "abort", abort),
        Patch(Barrier, "reset", reset),
    ]
