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
So are the slow paths of ``get`` and ``put``, one coroutine less per blocked
call, but only where the running Python's code is one of the two texts we
know (3.10-3.12's, and 3.13's with its shutdown check); otherwise the
original is awaited. ``put_nowait``, ``get_nowait`` and ``task_done``, run
once per item, are likewise CPython's code with the tracing around it where
the running Python's is the text we know, rather than a wrapper calling it:
as many Python calls per item as untraced. A blocked call reads only numbers
before it waits and settles a short wait on the spot: the attribute dict is
built for a span.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from time import perf_counter_ns
from typing import Any, Final

from aiotrace import semconv
from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import (
    PLAIN_CREATE_FUTURE,
    current_task,
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
    waker_here,
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


def _known_wait(method: str, blocked: str, waiter: str, shutdown: str) -> str:
    """CPython's ``Queue.get``/``put``, normalised (see ``_base.normalized_source``)."""
    head = "async def get(self):" if method == "get" else "async def put(self, item):"
    tail = "return self.get_nowait()" if method == "get" else "return self.put_nowait(item)"
    waiters = f"self._{waiter}s"
    return f"""\
{head}
while self.{blocked}():
{shutdown}{waiter} = self._get_loop().create_future()
{waiters}.append({waiter})
try:
await {waiter}
except:
{waiter}.cancel()
try:
{waiters}.remove({waiter})
except ValueError:
pass
if not self.{blocked}() and not {waiter}.cancelled():
self._wakeup_next({waiters})
raise
{tail}"""


# One text from 3.10 to 3.12; 3.13 adds a shutdown check at the top of the loop.
_KNOWN_GET: Final = (
    _known_wait("get", "empty", "getter", ""),
    _known_wait(
        "get", "empty", "getter", "if self._is_shutdown and self.empty():\nraise QueueShutDown\n"
    ),
)
_KNOWN_PUT: Final = (
    _known_wait("put", "full", "putter", ""),
    _known_wait("put", "full", "putter", "if self._is_shutdown:\nraise QueueShutDown\n"),
)

# CPython's put_nowait/get_nowait, one text from 3.10 to 3.12 and 3.13's with
# its shutdown checks; task_done is one text from 3.10 to 3.13.
_KNOWN_PUT_NOWAIT: Final = tuple(
    f"""\
def put_nowait(self, item):
{shutdown}if self.full():
raise QueueFull
self._put(item)
self._unfinished_tasks += 1
self._finished.clear()
self._wakeup_next(self._getters)"""
    for shutdown in ("", "if self._is_shutdown:\nraise QueueShutDown\n")
)
_KNOWN_GET_NOWAIT: Final = tuple(
    f"""\
def get_nowait(self):
if self.empty():
{shutdown}raise QueueEmpty
item = self._get()
self._wakeup_next(self._putters)
return item"""
    for shutdown in ("", "if self._is_shutdown:\nraise QueueShutDown\n")
)
_KNOWN_TASK_DONE: Final = """\
def task_done(self):
if self._unfinished_tasks <= 0:
raise ValueError('task_done() called too many times')
self._unfinished_tasks -= 1
if self._unfinished_tasks == 0:
self._finished.set()"""


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
    # CPython's slow paths are inlined when the running Python's are the code
    # we know (one coroutine less per blocked call); otherwise awaited.
    shutdown_get = source_is(orig_get, _KNOWN_GET[1])
    inline_get = shutdown_get or source_is(orig_get, _KNOWN_GET[0])
    shutdown_put = source_is(orig_put, _KNOWN_PUT[1])
    inline_put = shutdown_put or source_is(orig_put, _KNOWN_PUT[0])
    shutdown_error: Any = _SHUTDOWN_ERROR
    # put_nowait, get_nowait and task_done run once per item: where they are
    # the code we know, ours is CPython's with the tracing around it, not a
    # wrapper calling it (one Python call less per item, as many as bare).
    shutdown_put_nowait = source_is(orig_put_nowait, _KNOWN_PUT_NOWAIT[1])
    inline_put_nowait = shutdown_put_nowait or source_is(orig_put_nowait, _KNOWN_PUT_NOWAIT[0])
    shutdown_get_nowait = source_is(orig_get_nowait, _KNOWN_GET_NOWAIT[1])
    inline_get_nowait = shutdown_get_nowait or source_is(orig_get_nowait, _KNOWN_GET_NOWAIT[0])
    inline_task_done = source_is(orig_task_done, _KNOWN_TASK_DONE)

    @functools.wraps(orig_init)
    def __init__(self: Any, maxsize: int = 0, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            orig_init(self, maxsize, *args, **kwargs)
        else:  # Queue(n): nothing to unpack
            orig_init(self, maxsize)
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
        try:
            if not (live[0] and enabled[FAMILY_QUEUE]):
                return None
            start_waiting(self, t0, _SLOTS[which][0])
            return (
                self.qsize(),
                len(waiters) if waiters else 0,
                self._unfinished_tasks if which == _JOIN else -1,
            )
        except Exception as exc:
            rec.fail(FAMILY_QUEUE, exc)
            return None

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
        try:
            starts_attr, wakes_attr, ok = _SLOTS[which]
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
            if inline_get:
                while self.empty():
                    if shutdown_get and self._is_shutdown and self.empty():
                        raise shutdown_error
                    loop = self._get_loop()
                    getter = (
                        loop.create_future()
                        if PLAIN_CREATE_FUTURE[0] is None
                        else waiter_future(loop)
                    )
                    self._getters.append(getter)
                    try:
                        await getter
                    except BaseException:
                        getter.cancel()
                        try:  # noqa: SIM105  # CPython's code, as it is
                            self._getters.remove(getter)
                        except ValueError:
                            pass
                        if not self.empty() and not getter.cancelled():
                            self._wakeup_next(self._getters)
                        raise
                item = self.get_nowait()
            else:
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
            if inline_put:
                while self.full():
                    if shutdown_put and self._is_shutdown:
                        raise shutdown_error
                    loop = self._get_loop()
                    putter = (
                        loop.create_future()
                        if PLAIN_CREATE_FUTURE[0] is None
                        else waiter_future(loop)
                    )
                    self._putters.append(putter)
                    try:
                        await putter
                    except BaseException:
                        putter.cancel()
                        try:  # noqa: SIM105  # CPython's code, as it is
                            self._putters.remove(putter)
                        except ValueError:
                            pass
                        if not self.full() and not putter.cancelled():
                            self._wakeup_next(self._putters)
                        raise
                self.put_nowait(item)
            else:
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

    def _noted(starts: deque[int] | None, notes: deque[Any] | None) -> bool:
        """_woke()'s common case for a put or a get, with its two deques read by the
        caller: the one woken waited briefly (or is waiting again, its start taken by
        an earlier wake) and is left the time it was woken. False: _woke()'s to do."""
        try:
            t = pc()
            if notes is None or (starts and t - starts[0] >= min_wait):
                return False
            if starts:
                starts.popleft()
            notes.append((None, t))
        except Exception as exc:  # counted, and the family stops: the put or get stands
            rec.fail(FAMILY_QUEUE, exc)
        return True

    def _woke(self: Any, which: int, count: int | None, point: str | None) -> None:
        """A call woke ``count`` waiters of kind ``which``; record it if they waited long."""
        try:
            starts_attr, wakes_attr, _ = _SLOTS[which]
            t = pc()
            if count is None:  # every waiter of that kind (join)
                count = len(getattr(self, starts_attr) or ())
            if count == 1:  # a put or a get: oldest_woken's first case, without the call
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
                        waker = waker_here(t)
                    else:
                        attrs = {**prim_attrs(ref), semconv.ATTR_WOKEN: count}
                        waker = mark_point(point, attrs, t)
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
            getters  # (an empty deque is as false as False)
            and live[0]
            and enabled[FAMILY_QUEUE]
            and (not getters[0].done() or any(not g.done() for g in getters))
        )
        if inline_put_nowait:
            if shutdown_put_nowait and self._is_shutdown:
                raise shutdown_error
            if self.full():
                raise asyncio.QueueFull
            self._put(item)
            self._unfinished_tasks += 1
            self._finished.clear()
            self._wakeup_next(self._getters)
        else:
            orig_put_nowait(self, item)
        if woke and not _noted(self._aiotrace_gstarts, self._aiotrace_feeds):
            _woke(self, _GET, 1, None)

    @functools.wraps(orig_get_nowait)
    def get_nowait(self: Any) -> Any:
        putters = self._putters
        woke = (
            putters  # (an empty deque is as false as False)
            and live[0]
            and enabled[FAMILY_QUEUE]
            and (not putters[0].done() or any(not p.done() for p in putters))
        )
        if inline_get_nowait:
            if self.empty():
                if shutdown_get_nowait and self._is_shutdown:
                    raise shutdown_error
                raise asyncio.QueueEmpty
            item = self._get()
            self._wakeup_next(self._putters)
        else:
            item = orig_get_nowait(self)
        if woke and not _noted(self._aiotrace_pstarts, self._aiotrace_frees):
            _woke(self, _PUT, 1, None)
        return item

    @functools.wraps(orig_task_done)
    def task_done(self: Any) -> None:
        if inline_task_done:
            # CPython's text, its counter read once: only the last item's
            # task_done sets the event, and only then can a join() be woken.
            unfinished = self._unfinished_tasks
            if unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self._unfinished_tasks = unfinished - 1
            if unfinished == 1:
                finished = self._finished
                joined = live[0] and enabled[FAMILY_QUEUE] and getattr(finished, "_waiters", None)
                finished.set()
                if joined:
                    _woke(self, _JOIN, None, semconv.SPAN_QUEUE_TASK_DONE)
            return
        joiners = 0
        if self._unfinished_tasks == 1 and live[0] and enabled[FAMILY_QUEUE]:
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
