"""Queue, PriorityQueue and LifoQueue: blocked gets, blocked puts, joins.

A ``get()`` blocked on an empty queue links to the ``put()`` that woke it; a
``put()`` blocked on a full queue links to the ``get()`` that freed a slot; a
``join()`` links to the ``task_done()`` that finished the last item. As for
events, the waking side is recorded only when the waiter it wakes waited at
least ``min_wait``, so a busy pipeline costs a clock read and a deque
operation per blocked call.

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
from aiotrace.primitives.events import (
    oldest_woken,
    prim_attrs,
    start_waiting,
    stop_waiting,
    waker_links,
)

FAMILY_QUEUE: Final = "queue"
_SHUTDOWN_ERROR: Final = getattr(asyncio, "QueueShutDown", None)  # added in 3.13

_GET, _PUT, _JOIN = 0, 1, 2
# Per kind of wait: start-times attribute, wakes attribute, outcome.
_SLOTS: Final = (
    ("_aiotrace_gstarts", "_aiotrace_feeds", semconv.OUTCOME_GOT),
    ("_aiotrace_pstarts", "_aiotrace_frees", semconv.OUTCOME_PUT),
    ("_aiotrace_jstarts", "_aiotrace_done", semconv.OUTCOME_JOINED),
)
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


def _outcome(exc: BaseException) -> str:
    if _SHUTDOWN_ERROR is not None and isinstance(exc, _SHUTDOWN_ERROR):
        return semconv.OUTCOME_SHUTDOWN
    return outcome_of(exc, current_task())


def queue_patches() -> list[Patch]:
    """Patches for ``asyncio.Queue``; the priority and LIFO queues inherit them."""
    Queue = asyncio.Queue
    live = live_flag()
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
    min_wait = int(rec.options.min_wait * 1e9)
    pc = perf_counter_ns

    @functools.wraps(orig_init)
    def __init__(self: Any, maxsize: int = 0, *args: Any, **kwargs: Any) -> None:
        orig_init(self, maxsize, *args, **kwargs)
        if enabled[FAMILY_QUEUE]:
            try:
                on_create(self, _kind(self))
            except Exception as exc:
                rec.fail(FAMILY_QUEUE, exc)

    def _begin(self: Any, which: int, t0: int, waiters: Any) -> tuple[int, int, int] | None:
        """Start of a blocked call: note its start, read what must be read before waiting.

        Only numbers: the attribute dict is built in :func:`_end`, and only
        for a wait that becomes a span.
        """
        if not (live[0] and enabled[FAMILY_QUEUE]):
            return None
        start_waiting(self, t0, _SLOTS[which][0])
        return (
            self.qsize(),
            len(waiters) if waiters else 0,
            self._unfinished_tasks if which == _JOIN else -1,
        )

    def _attrs(self: Any, entry: tuple[int, int, int]) -> dict[str, Any]:
        size, ahead, unfinished = entry
        attrs = {
            semconv.ATTR_QUEUE_SIZE: size,
            semconv.ATTR_QUEUE_MAXSIZE: self.maxsize,
            semconv.ATTR_WAITERS_AHEAD: ahead,
        }
        if unfinished >= 0:
            attrs[semconv.ATTR_QUEUE_UNFINISHED] = unfinished
        return attrs

    def _end(
        self: Any, which: int, t0: int, entry: tuple[int, int, int], exc: BaseException | None
    ) -> None:
        starts_attr, wakes_attr, ok = _SLOTS[which]
        try:
            if exc is not None:
                stop_waiting(self, t0, starts_attr)
                outcome, t1, wake = _outcome(exc), pc(), None
            else:
                outcome, wake = ok, None
                wakes = getattr(self, wakes_attr)
                while wakes:
                    candidate = wakes.popleft() if which != _JOIN else wakes[-1]
                    if candidate[1] >= t0:
                        wake = candidate
                        break
                    if which == _JOIN:
                        break
                t1 = wake[1] if wake is not None else pc()
                stats = self._aiotrace_stats
                if t1 - t0 < min_wait and not stats.internal:
                    # The common case, settled here: a short wait (wait_spanned's quiet branch).
                    stats.waits += 1
                    stats.wait_ns += t1 - t0
                    stats.quiet += 1
                    return
            ref = ref_of(self, _kind(self))
            if ref.stats.internal or not wait_spanned(ref, t0, t1, outcome):
                return
            attrs = _attrs(self, entry)
            links = waker_links(wake[0] if wake is not None else None, attrs)
            emit_wait(_NAMES[ref.kind][which], ref, t0, t1, outcome, attrs, links)
        except Exception as inner:
            rec.fail(FAMILY_QUEUE, inner)

    @functools.wraps(orig_get)
    async def get(self: Any) -> Any:
        if not self.empty():
            if live[0]:
                self._aiotrace_stats.n += 1
            return self.get_nowait()
        t0 = pc()
        entry = _begin(self, _GET, t0, self._getters)
        try:
            item = await orig_get(self)
        except BaseException as exc:
            if entry is not None:
                _end(self, _GET, t0, entry, exc)
            raise
        if entry is not None:
            _end(self, _GET, t0, entry, None)
        return item

    @functools.wraps(orig_put)
    async def put(self: Any, item: Any) -> None:
        if not self.full():
            if live[0]:
                self._aiotrace_stats.n += 1
            self.put_nowait(item)
            return None
        t0 = pc()
        entry = _begin(self, _PUT, t0, self._putters)
        try:
            await orig_put(self, item)
        except BaseException as exc:
            if entry is not None:
                _end(self, _PUT, t0, entry, exc)
            raise
        if entry is not None:
            _end(self, _PUT, t0, entry, None)
        return None

    @functools.wraps(orig_join)
    async def join(self: Any) -> None:
        if self._unfinished_tasks <= 0:
            return None
        t0 = pc()
        entry = _begin(self, _JOIN, t0, getattr(self._finished, "_waiters", None))
        try:
            await orig_join(self)
        except BaseException as exc:
            if entry is not None:
                _end(self, _JOIN, t0, entry, exc)
            raise
        if entry is not None:
            _end(self, _JOIN, t0, entry, None)
        return None

    def _woke(self: Any, which: int, count: int | None, point: str | None) -> None:
        """A call woke ``count`` waiters of kind ``which``; record it if they waited long."""
        starts_attr, wakes_attr, _ = _SLOTS[which]
        try:
            t = pc()
            if count is None:  # every waiter of that kind (join)
                count = len(getattr(self, starts_attr) or ())
            if count == 1:  # a put or a get: oldest_woken's commonest case, inline
                starts = getattr(self, starts_attr)
                oldest = starts.popleft() if starts else None
            else:
                oldest = oldest_woken(self, count, starts_attr)
            waker = None
            if oldest is not None and t - oldest >= min_wait:
                ref = ref_of(self, _kind(self))
                if not ref.stats.internal:
                    if point is None:
                        # No span event for a put or get: a pipeline would add one per item.
                        waker = (current_span(), task_name(current_task()), capture(), t)
                    else:
                        attrs = {**prim_attrs(ref), semconv.ATTR_WOKEN: count}
                        waker = (*mark_point(point, attrs, t)[:3], t)
            wakes = getattr(self, wakes_attr)
            if wakes is None:
                wakes = deque(maxlen=65536)
                setattr(self, wakes_attr, wakes)
            wakes.append((waker, t))
        except Exception as exc:
            rec.fail(FAMILY_QUEUE, exc)

    @functools.wraps(orig_put_nowait)
    def put_nowait(self: Any, item: Any) -> None:
        getters = self._getters
        woke = (
            bool(getters)
            and live[0]
            and enabled[FAMILY_QUEUE]
            and (not getters[0].done() or any(not g.done() for g in getters))
        )
        orig_put_nowait(self, item)
        if woke:
            _woke(self, _GET, 1, None)

    @functools.wraps(orig_get_nowait)
    def get_nowait(self: Any) -> Any:
        putters = self._putters
        woke = (
            bool(putters)
            and live[0]
            and enabled[FAMILY_QUEUE]
            and (not putters[0].done() or any(not p.done() for p in putters))
        )
        item = orig_get_nowait(self)
        if woke:
            _woke(self, _PUT, 1, None)
        return item

    @functools.wraps(orig_task_done)
    def task_done(self: Any) -> None:
        joiners = 0
        if live[0] and enabled[FAMILY_QUEUE] and self._unfinished_tasks == 1:
            joiners = len(getattr(self._finished, "_waiters", None) or ())
        orig_task_done(self)
        if joiners:
            _woke(self, _JOIN, None, semconv.SPAN_QUEUE_TASK_DONE)

    patches = [
        Patch(Queue, "_aiotrace_ref", None),
        Patch(Queue, "_aiotrace_stats", preexisting_stats(semconv.KIND_QUEUE)),
        *(Patch(Queue, attr, None) for slot in _SLOTS for attr in slot[:2]),
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
            if live[0] and enabled[FAMILY_QUEUE]:
                try:
                    ref = ref_of(self, _kind(self))
                    if not ref.stats.internal:
                        mark_point(
                            semconv.SPAN_QUEUE_SHUTDOWN,
                            {**prim_attrs(ref), semconv.ATTR_QUEUE_SIZE: self.qsize()},
                        )
                except Exception as exc:
                    rec.fail(FAMILY_QUEUE, exc)
            orig_shutdown(self, immediate)

        patches.append(Patch(Queue, "shutdown", shutdown))
    return patches
