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
    Wait,
    display_name,
    finish_wait,
    mark_point,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
)

FAMILY_BARRIER: Final = "barrier"


def barrier_patches() -> list[Patch]:
    """Patches for ``asyncio.Barrier``; empty before Python 3.11, which has no Barrier."""
    Barrier = getattr(asyncio, "Barrier", None)
    if Barrier is None:
        return []
    broken_error = asyncio.BrokenBarrierError
    orig_init = vars(Barrier)["__init__"]
    orig_wait = vars(Barrier)["wait"]
    orig_abort = vars(Barrier)["abort"]
    orig_reset = vars(Barrier)["reset"]
    rec = RECORDER
    enabled = rec.enabled
    pc = perf_counter_ns

    @functools.wraps(orig_init)
    def __init__(self: Any, parties: int, *args: Any, **kwargs: Any) -> None:
        orig_init(self, parties, *args, **kwargs)
        if enabled[FAMILY_BARRIER]:
            try:
                on_create(self, semconv.KIND_BARRIER)
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)

    @functools.wraps(orig_wait)
    async def wait(self: Any) -> int:
        wait = ref = None
        if enabled[FAMILY_BARRIER]:
            try:
                ref = ref_of(self, semconv.KIND_BARRIER)
                if not ref.stats.internal:
                    wait = Wait(pc())
                    wait.attrs[semconv.ATTR_BARRIER_PARTIES] = self._parties
                    wait.attrs[semconv.ATTR_WAITERS_AHEAD] = self._count
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)
                wait = None
        try:
            index: int = await orig_wait(self)
        except BaseException as exc:
            if wait is not None and ref is not None:
                try:
                    outcome = (
                        semconv.OUTCOME_BROKEN
                        if isinstance(exc, broken_error)
                        else outcome_of(exc, wait.task)
                    )
                    finish_wait(FAMILY_BARRIER, ref, wait, pc(), semconv.SPAN_BARRIER_WAIT, outcome)
                except Exception as inner:
                    rec.fail(FAMILY_BARRIER, inner)
            raise
        if wait is not None and ref is not None:
            try:
                wait.attrs[semconv.ATTR_BARRIER_INDEX] = index
                if index == self._parties - 1:
                    # We released the barrier. Our wrapper runs before any other
                    # party resumes: they must re-acquire the Condition we hold.
                    self._aiotrace_releaser = (wait.parent, wait.task_name, wait.site, wait.t0)
                    end = pc()
                else:
                    releaser = self.__dict__.get("_aiotrace_releaser")
                    end = pc()
                    if releaser is not None and releaser[3] >= wait.t0:
                        end = max(releaser[3], wait.t0)
                        if releaser[0] is not None:
                            wait.links.append((semconv.LINK_RELEASER, releaser[0]))
                        if releaser[1] is not None:
                            wait.attrs[semconv.ATTR_WAKER_TASK] = releaser[1]
                        if releaser[2] is not None:
                            wait.attrs[semconv.ATTR_WAKER_SITE] = releaser[2]
                finish_wait(
                    FAMILY_BARRIER,
                    ref,
                    wait,
                    end,
                    semconv.SPAN_BARRIER_WAIT,
                    semconv.OUTCOME_PASSED,
                )
            except Exception as exc:
                rec.fail(FAMILY_BARRIER, exc)
        return index

    def _point(self: Any, name: str) -> None:
        ref = ref_of(self, semconv.KIND_BARRIER)
        if not ref.stats.internal:
            mark_point(
                name,
                {
                    semconv.ATTR_PRIMITIVE_KIND: ref.kind,
                    semconv.ATTR_PRIMITIVE_ID: ref.pid,
                    semconv.ATTR_PRIMITIVE_NAME: display_name(ref),
                    semconv.ATTR_WAITERS_DURING: self._count,
                },
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
        Patch(Barrier, "__init__", __init__),
        Patch(Barrier, "wait", wait),
        Patch(Barrier, "abort", abort),
        Patch(Barrier, "reset", reset),
    ]
