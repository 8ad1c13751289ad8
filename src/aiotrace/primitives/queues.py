"""Queue, PriorityQueue and LifoQueue: blocked gets, blocked puts, joins.

A ``get()`` blocked on an empty queue links to the ``put()`` that woke it; a
``put()`` blocked on a full queue links to the ``get()`` that freed a slot; a
``join()`` links to the ``task_done()`` that finished the last item. The
waking side is recorded only when someone was actually waiting, so an
uncontended producer/consumer pair costs a comparison per operation.

The fast paths of ``get``/``put``/``join`` are inlined: when the queue is not
empty (not full, has no unfinished items) CPython's methods reduce to
``get_nowait()``/``put_nowait()``/``return``, on every version from 3.10 to 3.13.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from time import perf_counter_ns
from typing import Any, Final

from aiotrace import semconv
from aiotrace._context import current_span
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace._sites import capture
from aiotrace.primitives._base import (
    Wait,
    current_task,
    display_name,
    finish_wait,
    mark_point,
    on_create,
    outcome_of,
    preexisting_stats,
    ref_of,
    task_name,
)

FAMILY_QUEUE: Final = "queue"
_SHUTDOWN_ERROR: Final = getattr(asyncio, "QueueShutDown", None)  # added in 3.13

_NAMES: Final = {
    semconv.KIND_QUEUE: (semconv.SPAN_QUEUE_GET, semconv.SPAN_QUEUE_PUT, semconv.SPAN_QUEUE_JOIN),
    semconv.KIND_PRIORITY_QUEUE: (
        semconv.SPAN_PRIORITY_QUEUE_GET,
        semconv.SPAN_PRIORITY_QUEUE_PUT,
        semconv.SPAN_PRIORITY_QUEUE_JOIN,
    ),
    semconv.KIND_LIFO_QUEUE: (
        semconv.SPAN_LIFO_QUEUE_GET,
        semconv.SPAN_LIFO_QUEUE_PUT,
        semconv.SPAN_LIFO_QUEUE_JOIN,
    ),
}


def _kind(queue: Any) -> str:
    if isinstance(queue, asyncio.PriorityQueue):
        return semconv.KIND_PRIORITY_QUEUE
    if isinstance(queue, asyncio.LifoQueue):
        return semconv.KIND_LIFO_QUEUE
    return semconv.KIND_QUEUE


def _waiting(waiters: Any) -> int:
    if not waiters:
        return 0
    return sum(1 for w in waiters if not w.done())


def _outcome(exc: BaseException, wait: Wait) -> str:
    if _SHUTDOWN_ERROR is not None and isinstance(exc, _SHUTDOWN_ERROR):
        return semconv.OUTCOME_SHUTDOWN
    return outcome_of(exc, wait.task)


def _take_waker(queue: Any, attr: str, wait: Wait) -> None:
    """Link ``wait`` to the oldest waker queued under ``attr`` that happened after it began."""
    wakers = queue.__dict__.get(attr)
    while wakers:
        span, task, site, t = wakers.popleft()
        if t >= wait.t0:
            if span is not None:
                wait.links.append((semconv.LINK_WAKER, span))
            if task is not None:
                wait.attrs[semconv.ATTR_WAKER_TASK] = task
            if site is not None:
                wait.attrs[semconv.ATTR_WAKER_SITE] = site
            return


def _push_waker(queue: Any, attr: str, waker: tuple[Any, ...]) -> None:
    wakers = queue.__dict__.get(attr)
    if wakers is None:
        wakers = deque(maxlen=65536)
        setattr(queue, attr, wakers)
    wakers.append(waker)


def queue_patches() -> list[Patch]:
    """Patches for ``asyncio.Queue``; the priority and LIFO queues inherit them."""
    Queue = asyncio.Queue
    orig_init = vars(Queue)["__init__"]
    orig_get = vars(Queue)["get"]
    orig_put = vars(Queue)["put"]
    orig_join = vars(Queue)["join"]
    orig_put_nowait = vars(Queue)["put_nowait"]
    orig_get_nowait = vars(Queue)["get_nowait"]
    orig_task_done = vars(Queue)["task_done"]
    orig_shutdown = vars(Queue).get("shutdown")
    rec = RECORDER
    enabled = rec.enabled
    pc = perf_counter_ns

    @functools.wraps(orig_init)
    def __init__(self: Any, maxsize: int = 0, *args: Any, **kwargs: Any) -> None:
        orig_init(self, maxsize, *args, **kwargs)
        if enabled[FAMILY_QUEUE]:
            try:
                on_create(self, _kind(self))
            except Exception as exc:
                rec.fail(FAMILY_QUEUE, exc)

    def _begin(self: Any, waiters: Any) -> tuple[Wait | None, Any]:
        if not enabled[FAMILY_QUEUE]:
            return None, None
        try:
            ref = ref_of(self, _kind(self))
            if ref.stats.internal:
                return None, None
            wait = Wait(pc())
            wait.attrs[semconv.ATTR_QUEUE_SIZE] = self.qsize()
            wait.attrs[semconv.ATTR_QUEUE_MAXSIZE] = self.maxsize
            wait.attrs[semconv.ATTR_WAITERS_AHEAD] = _waiting(waiters)
            return wait, ref
        except Exception as exc:
            rec.fail(FAMILY_QUEUE, exc)
            return None, None

    def _abort(wait: Wait | None, ref: Any, exc: BaseException, which: int) -> None:
        if wait is not None:
            try:
                finish_wait(
                    FAMILY_QUEUE, ref, wait, pc(), _NAMES[ref.kind][which], _outcome(exc, wait)
                )
            except Exception as inner:
                rec.fail(FAMILY_QUEUE, inner)

    def _done(wait: Wait | None, ref: Any, self: Any, attr: str, which: int, outcome: str) -> None:
        if wait is not None:
            try:
                _take_waker(self, attr, wait)
                finish_wait(FAMILY_QUEUE, ref, wait, pc(), _NAMES[ref.kind][which], outcome)
            except Exception as exc:
                rec.fail(FAMILY_QUEUE, exc)

    @functools.wraps(orig_get)
    async def get(self: Any) -> Any:
        if not self.empty():
            self._aiotrace_stats.n += 1
            return self.get_nowait()
        wait, ref = _begin(self, self._getters)
        try:
            item = await orig_get(self)
        except BaseException as exc:
            _abort(wait, ref, exc, 0)
            raise
        _done(wait, ref, self, "_aiotrace_feeds", 0, semconv.OUTCOME_GOT)
        return item

    @functools.wraps(orig_put)
    async def put(self: Any, item: Any) -> None:
        if not self.full():
            self._aiotrace_stats.n += 1
            self.put_nowait(item)
            return None
        wait, ref = _begin(self, self._putters)
        try:
            await orig_put(self, item)
        except BaseException as exc:
            _abort(wait, ref, exc, 1)
            raise
        _done(wait, ref, self, "_aiotrace_frees", 1, semconv.OUTCOME_PUT)
        return None

    @functools.wraps(orig_join)
    async def join(self: Any) -> None:
        if self._unfinished_tasks <= 0:
            return None
        wait, ref = _begin(self, getattr(self._finished, "_waiters", None))
        if wait is not None:
            wait.attrs[semconv.ATTR_QUEUE_UNFINISHED] = self._unfinished_tasks
        try:
            await orig_join(self)
        except BaseException as exc:
            _abort(wait, ref, exc, 2)
            raise
        _done(wait, ref, self, "_aiotrace_done", 2, semconv.OUTCOME_JOINED)
        return None

    def _wake_point(self: Any, attr: str, name: str | None, woken: int) -> None:
        # Link target for the woken waiter: the waker's current span, or a
        # point span when none is current. No span event: a pipeline's every
        # put would add one.
        try:
            ref = ref_of(self, _kind(self))
            if ref.stats.internal:
                return
            waker: tuple[Any, ...]
            if name is None:
                waker = (current_span(), task_name(current_task()), capture(), pc())
            else:
                waker = mark_point(
                    name,
                    {
                        semconv.ATTR_PRIMITIVE_KIND: ref.kind,
                        semconv.ATTR_PRIMITIVE_ID: ref.pid,
                        semconv.ATTR_PRIMITIVE_NAME: display_name(ref),
                        semconv.ATTR_WOKEN: woken,
                    },
                )
            _push_waker(self, attr, waker)
        except Exception as exc:
            rec.fail(FAMILY_QUEUE, exc)

    @functools.wraps(orig_put_nowait)
    def put_nowait(self: Any, item: Any) -> None:
        getters = self._getters
        woke = bool(getters) and enabled[FAMILY_QUEUE] and _waiting(getters) > 0
        orig_put_nowait(self, item)
        if woke:
            _wake_point(self, "_aiotrace_feeds", None, 1)

    @functools.wraps(orig_get_nowait)
    def get_nowait(self: Any) -> Any:
        putters = self._putters
        woke = bool(putters) and enabled[FAMILY_QUEUE] and _waiting(putters) > 0
        item = orig_get_nowait(self)
        if woke:
            _wake_point(self, "_aiotrace_frees", None, 1)
        return item

    @functools.wraps(orig_task_done)
    def task_done(self: Any) -> None:
        joiners = 0
        if enabled[FAMILY_QUEUE] and self._unfinished_tasks == 1:
            joiners = _waiting(getattr(self._finished, "_waiters", None))
        orig_task_done(self)
        if joiners:
            _wake_point(self, "_aiotrace_done", semconv.SPAN_QUEUE_TASK_DONE, joiners)

    patches = [
        Patch(Queue, "_aiotrace_ref", None),
        Patch(Queue, "_aiotrace_stats", preexisting_stats(semconv.KIND_QUEUE)),
        Patch(Queue, "__init__", __init__),
        Patch(Queue, "get", get),
        Patch(Queue, "put", put),
        Patch(Queue, "join", join),
        Patch(Queue, "put_nowait", put_nowait),
        Patch(Queue, "get_nowait", get_nowait),
        Patch(Queue, "task_done", task_done),
    ]

    if orig_shutdown is not None:

        @functools.wraps(orig_shutdown)
        def shutdown(self: Any, immediate: bool = False) -> None:
            if enabled[FAMILY_QUEUE]:
                try:
                    ref = ref_of(self, _kind(self))
                    if not ref.stats.internal:
                        mark_point(
                            semconv.SPAN_QUEUE_SHUTDOWN,
                            {
                                semconv.ATTR_PRIMITIVE_KIND: ref.kind,
                                semconv.ATTR_PRIMITIVE_ID: ref.pid,
                                semconv.ATTR_PRIMITIVE_NAME: display_name(ref),
                                semconv.ATTR_QUEUE_SIZE: self.qsize(),
                            },
                        )
                except Exception as exc:
                    rec.fail(FAMILY_QUEUE, exc)
            orig_shutdown(self, immediate)

        patches.append(Patch(Queue, "shutdown", shutdown))
    return patches
