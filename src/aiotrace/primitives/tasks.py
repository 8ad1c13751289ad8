"""Tasks and futures: a span per task that everything it does nests under, and
a span per user future from creation to resolution, with who resolved it.

Tasks
    ``create_task`` is patched on the event loop classes (``BaseEventLoop``, and
    uvloop's ``Loop`` when uvloop is installed), which every way of making a
    task goes through: ``asyncio.create_task``, ``ensure_future``, ``gather``,
    ``TaskGroup``, ``wait_for``, ``asyncio.run``, and a task factory the user
    installed, before or after instrumenting, since ``create_task`` is what
    calls it. The coroutine is never wrapped: the task is the user's, with
    the user's coroutine.

    The task's span is a :class:`TaskSpan`: an OpenTelemetry ``Span`` whose
    ids are chosen at creation and which is made current inside the task by
    setting OpenTelemetry's context variable in the context the task copies.
    So everything the task does (our spans, the user's spans) nests under it
    before it even ends. When the task finishes, a done callback hands the
    TaskSpan to the pipeline, which builds the real span with those ids. The
    callback is hidden from ``repr(task)``.

Futures
    ``loop.create_future()`` called by user code returns a :class:`TracedFuture`,
    a subclass of asyncio's ``Future`` that records its resolution (who, where,
    when) and the tasks that awaited it. ``asyncio.Future`` itself (the name in
    the ``asyncio`` package) is bound to it while instrumented, so that
    ``asyncio.Future()`` in user code is traced too; a metaclass keeps
    ``isinstance(x, asyncio.Future)`` true for every asyncio future, as before.
    Futures asyncio creates for itself (sleep, lock waiters, streams) stay
    plain unless ``internal_futures=True``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import sys
import weakref
from collections import OrderedDict, deque
from random import getrandbits as _getrandbits
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from aiotrace import _leaks, semconv
from aiotrace._context import _CONTEXT_VAR, SPAN_KEY, TASK_SPANS, current_span, ids_of
from aiotrace._loops import coro_of
from aiotrace._patching import Patch
from aiotrace._recorder import LOGGER, R_SPAN, R_TASK, RECORDER
from aiotrace._sites import (
    TASK_ORIGIN,
    RaisedException,
    RawSite,
    as_untraced,
    file_kind,
    is_asyncio_file,
    is_internal_file,
    is_library_file,
    program_site,
    raw_site,
    short_path,
    site_and_via,
    stands_in_for,
    via_site,
)
from aiotrace.primitives._base import (
    PLAIN_CREATE_FUTURE,
    PROGRAM_SITES,
    TASK_SPAN_TYPE,
    WATCH_SWALLOWED,
    CancelledError,
    PrimRef,
    current_task,
    current_task_name,
    emit_wait,
    keep_program_site,
    live_flag,
    mark_point,
    normalized_source,
    note_swallowed,
    outcome_of,
    preexisting_stats,
    source_is,
    stats_for,
    task_name,
    tasks_by_loop,
    wait_spanned,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import CodeType

    from opentelemetry.util import types

FAMILY_TASK: Final = "task"
FAMILY_FUTURE: Final = "future"

_SAMPLED: Final = int(TraceFlags.SAMPLED)
_ROOT_FLAGS: Final = _SAMPLED | int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))


Event = tuple[Any, ...]
"""An event on a task span: ``(name, epoch ns, attributes)``, as the user recorded it, or
raw, as :func:`~aiotrace.primitives._base.mark_point` leaves a waking call: ``(name,
perf_counter ns, attributes with record-time values, task name, raw site, via label)``,
made an event like the first when the span is encoded (``_wire``)."""


class TaskSpanExtras:
    """What a task span rarely has: what the user recorded on it, how it failed, and for a
    task a library made, the program's line behind it.

    Kept apart so that making a task span, once per task, sets fewer slots;
    the pipeline reads one slot to learn there is nothing here.
    """

    __slots__ = (
        "attributes",
        "context",
        "dropped",
        "events",
        "exception",
        "links",
        "name",
        "origin",
        "status",
        "status_description",
    )

    def __init__(self) -> None:
        self.name: str = semconv.SPAN_TASK
        self.context: SpanContext | None = None
        self.attributes: dict[str, Any] | None = None
        self.events: deque[Event] | None = None
        self.links: deque[tuple[int, int, int, dict[str, Any]]] | None = None
        self.status: StatusCode | None = None
        self.status_description: str | None = None
        self.exception: RaisedException | None = None
        self.dropped: list[int] | None = None
        """Attributes, events and links not kept (over ``LIMITS``), as the SDK counts them."""
        self.origin: RawSite | None = None
        """For a task a library made: the program's line that led there (see ``task_origin``)."""

    def drop(self, which: int) -> None:
        """Count one not kept: the exported span says how many went (``dropped*Count``)."""
        dropped = self.dropped
        if dropped is None:
            dropped = self.dropped = [0, 0, 0]
        dropped[which] += 1


LIMITS: Final = [128, 128, 128]
"""Attributes, events and links a task span keeps: the SDK's ``SpanLimits`` (its
``OTEL_SPAN_*_COUNT_LIMIT`` variables), read at ``instrument()``. A long-lived task
(a connection's reader resolving every request's future) records an event per
resolution on its span: kept without a bound, they would grow with the run. As in
the SDK, the latest events and links are kept, the first attributes."""
_ATTRIBUTES, _EVENTS, _LINKS = 0, 1, 2


def read_limits() -> None:
    """Take the SDK's span limits (and the environment's) for task spans."""
    from opentelemetry.sdk.trace import SpanLimits

    try:
        limits = SpanLimits()
    except ValueError as exc:  # a malformed OTEL_*_LIMIT: the SDK's defaults, and a word
        LOGGER.warning("aiotrace: %s; task spans keep 128 of each", exc)
        LIMITS[:] = [128, 128, 128]
        return
    wanted = (limits.max_span_attributes, limits.max_events, limits.max_links)
    for index, value in enumerate(wanted):
        # None: the user asked for no limit (SpanLimits.UNSET).
        LIMITS[index] = value if isinstance(value, int) and value >= 0 else 1 << 62


class TaskSpan(trace.Span):
    """The span of a task while it runs: current inside the task, built when it ends.

    Its ids exist from creation, so children can name it as their parent. What
    the user records on it (``trace.get_current_span().set_attribute(...)``
    inside the task) is kept and merged into the built span.
    """

    # Slots, every one set in __init__, none with a class-level default: from
    # Python 3.12 a class attribute named like an instance attribute stops
    # CPython specialising accesses to it, and the pipeline reads them all.
    __slots__ = (
        "coroutine",
        "end_ns",
        "extras",
        "flags",
        "outcome",
        "parent_id",
        "parent_remote",
        "parent_task",
        "site_code",
        "site_lasti",
        "span_id",
        "start_ns",
        "task_name",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        flags: int,
        parent_id: int,
        parent_remote: bool,
        start_ns: int,
        coroutine: str | None,
        site: Any,
        parent_task: str | None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.parent_id = parent_id
        self.parent_remote = parent_remote
        self.start_ns = start_ns
        self.coroutine = coroutine
        # The creation site as two slots, not a (code, lasti) tuple: the
        # task's record copies them (see task_record), and the collector
        # may find a record before the tuple it holds, then keeps both
        # tracked until a later, older generation's collection.
        if site is None:
            self.site_code, self.site_lasti = None, 0
        else:
            self.site_code, self.site_lasti = site
        self.parent_task = parent_task
        self.end_ns = 0
        self.task_name: str | None = None
        self.outcome: str | None = None
        self.extras: TaskSpanExtras | None = None

    def _extras(self) -> TaskSpanExtras:
        extras = self.extras
        if extras is None:
            extras = self.extras = TaskSpanExtras()
        return extras

    # -- opentelemetry.trace.Span --------------------------------------
    def get_span_context(self) -> SpanContext:
        extras = self._extras()
        ctx = extras.context
        if ctx is None:
            ctx = extras.context = SpanContext(
                self.trace_id, self.span_id, is_remote=False, trace_flags=TraceFlags(self.flags)
            )
        return ctx

    def is_recording(self) -> bool:
        return not self.end_ns

    def end(self, end_time: int | None = None) -> None:
        """Ignored: a task span ends when its task does."""

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self.end_ns:
            return
        extras = self._extras()
        attributes = extras.attributes
        if attributes is None:
            attributes = extras.attributes = {}
        if key not in attributes and len(attributes) >= LIMITS[_ATTRIBUTES]:
            extras.drop(_ATTRIBUTES)
            return
        attributes[key] = value

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        if self.end_ns:
            return
        when = timestamp if timestamp is not None else RECORDER.to_epoch(perf_counter_ns())
        self._bounded(_EVENTS).append((name, when, dict(attributes or {})))

    def add_point(
        self,
        name: str,
        t: int,
        attrs: dict[str, Any],
        task: str | None,
        site: Any,
        via: str | None,
    ) -> None:
        """A waking call on this span, kept raw (see :data:`Event`); only while recording.

        A task resolving a future per request (a connection's reader) records
        one per resolution: the common case, an events deque that exists and
        is full or not, is settled here without ``_bounded()``'s calls.
        """
        extras = self.extras
        events = None if extras is None else extras.events
        if events is None:
            events = self._bounded(_EVENTS)
        elif len(events) == events.maxlen:
            extras.drop(_EVENTS)  # type: ignore[union-attr]  # events is extras'
        events.append((name, t, attrs, task, site, via))

    def _bounded(self, which: int) -> deque[Any]:
        """The events (``_EVENTS``) or links (``_LINKS``), with room for one more: when
        full, the oldest goes, and is counted."""
        extras = self._extras()
        slot = "events" if which == _EVENTS else "links"
        kept: deque[Any] | None = getattr(extras, slot)
        if kept is None:
            kept = deque(maxlen=LIMITS[which])
            setattr(extras, slot, kept)
        if len(kept) == kept.maxlen:
            extras.drop(which)
        return kept

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_ns or not context.is_valid:
            return
        self._bounded(_LINKS).append(
            (context.trace_id, context.span_id, int(context.trace_flags), dict(attributes or {}))
        )

    def update_name(self, name: str) -> None:
        if not self.end_ns:
            self._extras().name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_ns:
            return
        extras = self._extras()
        if isinstance(status, Status):
            extras.status, extras.status_description = status.status_code, status.description
        else:
            extras.status, extras.status_description = status, description

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        from aiotrace._wire import exception_attributes  # _wire imports us

        attrs = exception_attributes(exception)
        attrs.update(attributes or {})
        self.add_event(semconv.EVENT_EXCEPTION, attrs, timestamp)

    def __repr__(self) -> str:
        return f"TaskSpan({self.task_name!r}, span_id={self.span_id:016x})"


TASK_SPAN_TYPE[0] = TaskSpan


def task_origin(span: TaskSpan) -> RawSite | None:
    """The program's line that led to a task: where the program made it, or for a task a
    library made, the program's line that led to the library's (``origin``), if any."""
    extras = span.extras
    if extras is not None and extras.origin is not None:
        return extras.origin
    code = span.site_code
    if code is None or is_library_file(code.co_filename):
        return None
    return raw_site(code, span.site_lasti)


def _known_task_origin(task: object) -> tuple[bool, RawSite | None]:
    span = TASK_SPANS.get(id(task))
    if span is None:
        # A task in its eager first step (3.12's eager_task_factory) runs inside
        # create_task, before its span is registered; the span current there is
        # its own. (In a task made some other way, never registered, it is the
        # span of the task that made it: the line behind that task is the answer.)
        current = current_span()
        if type(current) is not TaskSpan or current.end_ns:
            return (False, None)
        span = current
    return (True, task_origin(span))


TASK_ORIGIN[0] = _known_task_origin


def start_task_span(coro: Any, site: Any) -> TaskSpan | None:
    """A span for a task about to be created, child of the current span."""
    parent = current_span()
    if parent is None:
        trace_id, parent_id, flags, remote = _new_trace_id(), 0, _ROOT_FLAGS, False
    elif type(parent) is TaskSpan:
        trace_id, parent_id, flags, remote = parent.trace_id, parent.span_id, parent.flags, False
    else:
        ids = ids_of(parent)
        if ids is None:
            trace_id, parent_id, flags, remote = _new_trace_id(), 0, _ROOT_FLAGS, False
        else:
            trace_id, parent_id, flags, remote = ids
    if not flags & _SAMPLED:
        return None  # the trace is not sampled: let the context flow as it is
    return TaskSpan(
        trace_id,
        RECORDER.next_id(),
        flags,
        parent_id,
        remote,
        perf_counter_ns(),
        getattr(coro, "__qualname__", None),
        site,
        current_task_name(),  # live, so a name set after creation shows
    )


def _new_trace_id() -> int:
    return _getrandbits(128) or 1


_EMPTY_CONTEXT: Final = contextvars.Context()


DIED: Final[deque[tuple[weakref.ref[Any], str]]] = deque(maxlen=32)
"""The latest tasks that ended raising: the task (weakly: its exception is not kept) and
``Type: message (file:line)``, for a hang's report (see ``diagnosis``)."""


GIVEN_EXCEPTION: Final[deque[weakref.ref[Any]]] = deque(maxlen=32)
"""The latest traced futures given an exception (weakly): those still referenced at the
end, their exception unread, a diagnosis reports (asyncio says so only when they are
collected, which may be after the report, or never)."""


ENDED_RAISING: Final[
    OrderedDict[int, tuple[int, int, int, int, int, int, str | None, str | None]]
] = OrderedDict()
"""id(task) -> (when it ended raising (``perf_counter_ns``), its span's trace id, span id
and flags; and, to tell it from a later task given its id, the ids of its coroutine and
its exception, and its name; and its coroutine's qualified name), for the latest 1024
such tasks: whose "exception was never retrieved" a diagnosis reports, linked to that
span (see ``diagnosis``). Read through :func:`ended_raising` and :func:`ended_coroutine`."""
_ENDED_RAISING_KEPT: Final = 1024


def ended_raising(task: Any, pop: bool = False) -> tuple[int, int, int, int] | None:
    """When ``task`` ended raising, and its span's ids, if it is a traced task that did.

    An entry outlives its task when nothing took it out as the task was freed
    (its exception was read, or no diagnosis was listening). A later task
    given the same id is told apart by its coroutine, its exception and its
    name, which the entry notes too: a program that makes the same tasks
    over and over (a test suite) gets the same ids for the first two as
    often as not, since the memory freed is reused for objects of its size.
    ``pop``: take the entry out.
    """
    entry = _ended_entry(task, pop)
    return entry[:4] if entry is not None else None


def ended_coroutine(task: Any) -> str | None:
    """The qualified name of the coroutine of ``task``, a traced task that ended raising.

    For an eager task that raised in its first step, inside ``create_task``:
    asyncio has dropped its coroutine, and a finding would name it by its
    task's name alone.
    """
    entry = _ended_entry(task, False)
    return entry[7] if entry is not None else None


_CANCELLING: Final = hasattr(asyncio.Task, "cancelling")
"""Whether tasks count the cancellations asked of them (3.11+): what :class:`Swallowed` reads."""


class Swallowed(NamedTuple):
    """A traced task that returned after being cancelled (3.11+: ``cancelling()`` still
    above 0), for a diagnosis to report (``_base.SWALLOWED``): it caught its
    ``CancelledError`` and went on, so whatever cancelled it (a ``TaskGroup``,
    ``task.cancel()``, ``asyncio.run``'s shutdown) was told it stopped when it had
    not. asyncio's own ways of cancelling that a task may outlive
    (``asyncio.timeout()``, a ``TaskGroup``'s cancelling of its parent) call
    ``uncancel()`` as they finish with it: those count no more."""

    end_ns: int
    trace_id: int
    span_id: int
    flags: int
    name: str | None
    coroutine: str | None
    site: tuple[Any, int] | None
    cancels: int


def _swallowed(task: Any, span: TaskSpan, cancels: Any) -> None:
    """Note ``task``, which returned, as :class:`Swallowed`: it was cancelled ``cancels`` times
    (``cancelling()``), and did not end cancelled.

    Only a task of the program's own coroutine: a library that cancels by
    scopes (anyio's ``CancelScope``) catches the cancellation at the scope's
    end by design, in its own coroutines. Nor one that raised: a clean-up that
    fails after a cancellation (an ``__aexit__`` raising) loses the
    ``CancelledError`` too, but what it raised is the thing to read, and it
    is reported as raised.
    """
    if type(cancels) is int and cancels > 0:
        coro_code = getattr(task.get_coro(), "cr_code", None)
        if coro_code is None or file_kind(coro_code.co_filename) is not False:
            return  # a library's coroutine (or not a coroutine): its own way of cancelling
        code = span.site_code
        note_swallowed(
            Swallowed(
                span.end_ns,
                span.trace_id,
                span.span_id,
                span.flags,
                span.task_name,
                span.coroutine,
                (code, span.site_lasti) if code is not None else None,
                cancels,
            )
        )


def _ended_entry(
    task: Any, pop: bool
) -> tuple[int, int, int, int, int, int, str | None, str | None] | None:
    """``task``'s :data:`ENDED_RAISING` entry, if it is this task's (see :func:`ended_raising`)."""
    key = id(task)
    entry = ENDED_RAISING.pop(key, None) if pop else ENDED_RAISING.get(key)
    if entry is None:
        return None
    try:
        same = (
            entry[4] == id(coro_of(task))
            and entry[5] == id(getattr(task, "_exception", None))
            and entry[6] == task.get_name()
        )
    except Exception:  # a Task subclass with a broken get_name(): not one to vouch for
        return None
    return entry if same else None


def _died(task: Any, span: TaskSpan, raised: RaisedException, exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" ({short_path(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})" if tb else ""
    message = f"{raised.name}: {raised.message}" if raised.message else raised.name
    with contextlib.suppress(TypeError):  # a task type without weak references
        DIED.append((weakref.ref(task), message + where))
    if len(ENDED_RAISING) >= _ENDED_RAISING_KEPT:
        with contextlib.suppress(KeyError):  # emptied meanwhile, by another thread
            ENDED_RAISING.popitem(last=False)  # the oldest
    ENDED_RAISING[id(task)] = (
        span.end_ns,
        span.trace_id,
        span.span_id,
        span.flags,
        id(coro_of(task)),
        id(exc),
        span.task_name,
        span.coroutine,
    )


def _task_done(task: Any) -> None:
    """Done callback of every traced task: end its span and hand it to the pipeline."""
    span = TASK_SPANS.pop(id(task), None)
    if span is None or span.end_ns:
        return
    try:
        end = span.end_ns = perf_counter_ns()
        name = None
        try:  # noqa: SIM105  # suppress() costs three Python calls per task
            name = span.task_name = task.get_name()
        except Exception:  # a Task subclass with a broken get_name()
            pass
        if task.cancelled():
            outcome = span.outcome = semconv.OUTCOME_CANCELLED
        else:
            # ``_exception``, not ``exception()``: reading it does not mark the
            # exception as retrieved, so "exception was never retrieved" is
            # still logged exactly as without aiotrace.
            exc = getattr(task, "_exception", None)
            if exc is not None:
                outcome = span.outcome = semconv.OUTCOME_RAISED
                raised = span._extras().exception = RaisedException(exc)
                _died(task, span, raised, exc)
            else:
                outcome = span.outcome = semconv.OUTCOME_COMPLETED
                if WATCH_SWALLOWED[0] and _CANCELLING:  # (not cancelled: answered inline)
                    try:
                        cancels = task.cancelling()
                    except AttributeError:  # a task type of its own, without it
                        cancels = 0
                    if cancels:
                        _swallowed(task, span, cancels)
        # Recorder.emit, inline: one call fewer on the commonest record of all.
        rec = RECORDER
        if rec.recording:
            buffer = rec.buffer
            # task_record(), inline: the same tuple, from what is at hand.
            buffer.append(
                (
                    R_TASK,
                    span.start_ns,
                    end,
                    span.span_id,
                    span.trace_id,
                    span.parent_id,
                    span.flags,
                    span.parent_remote,
                    span.site_code,
                    span.site_lasti,
                    name,
                    span.coroutine,
                    span.parent_task,
                    outcome,
                    span.extras,
                )
            )
            if len(buffer) > rec._trigger:
                rec._overflow()
    except Exception as exc:
        RECORDER.fail(FAMILY_TASK, exc)


def task_record(span: TaskSpan) -> tuple[Any, ...]:
    """The record of an ended task span: its fields, not the span.

    A buffered record waits for the pipeline, through the program's garbage
    collections: a tuple of ints, strings and a code site is untracked by
    the first, where a span (or a tuple holding one) would be traversed by
    every one. Tracing tasks set those collections off, and they were an
    eighth of a task's cost and a fifth of gather's.
    """
    return (
        R_TASK,
        span.start_ns,
        span.end_ns,
        span.span_id,
        span.trace_id,
        span.parent_id,
        span.flags,
        span.parent_remote,
        span.site_code,
        span.site_lasti,
        span.task_name,
        span.coroutine,
        span.parent_task,
        span.outcome,
        span.extras,
    )


def _task_done_later(task: Any) -> None:
    """:func:`_task_done` for a task already done when it was made (an eager task,
    3.12+): run as a callback, later, once ``asyncio.create_task()`` has named it.
    A distinct function, so that ``call_soon`` does not run it at once."""
    _task_done(task)


# BaseEventLoop.call_soon, normalised (see _base.source_is): the same from 3.10 to 3.13.
_KNOWN_CALL_SOON: Final = """\
def call_soon(self, callback, *args, context=None):
self._check_closed()
if self._debug:
self._check_thread()
self._check_callback(callback, 'call_soon')
handle = self._call_soon(callback, args, context)
if handle._source_traceback:
del handle._source_traceback[-1]
return handle"""


def _call_soon_patch() -> Patch | None:
    """``BaseEventLoop.call_soon`` that ends a traced task's span as the task completes.

    A task's end is learnt only through a done callback, which asyncio runs
    through ``call_soon``: a ``Handle`` made, queued and run on a later turn
    of the loop. That was a fifth of a bare task's cost, and it put the span's
    end late by whatever the loop ran first (a callback blocking for 100 ms
    made every task that finished before it 100 ms longer). This is
    asyncio's own ``call_soon``, run only if the running Python's is that
    very code (as the Lock's slow path), with one test in front: our
    callback runs here and now, and no Handle is made (asyncio's futures,
    C and Python, ignore what ``call_soon`` returns when they schedule their
    callbacks). Every other call pays that one test.

    Not installed where asyncio's code differs: the callback then runs
    through a Handle, as on uvloop, and as for a task that was traced when it
    started and ends after ``uninstrument()``.
    """
    try:
        orig = vars(asyncio.BaseEventLoop)["call_soon"]
        if not source_is(orig, _KNOWN_CALL_SOON):
            return None
        task_done = _task_done

        @functools.wraps(orig)
        def call_soon(self: Any, callback: Any, *args: Any, context: Any = None) -> Any:
            if callback is task_done:
                try:  # run inside the task's last step: nothing of ours may reach it
                    task_done(*args)
                except Exception as exc:
                    RECORDER.fail(FAMILY_TASK, exc)
                return None
            self._check_closed()
            if self._debug:
                self._check_thread()
                self._check_callback(callback, "call_soon")
            handle = self._call_soon(callback, args, context)
            if handle._source_traceback:
                del handle._source_traceback[-1]
            return handle

        return Patch(asyncio.BaseEventLoop, "call_soon", call_soon)
    except Exception:  # undecided: asyncio's call_soon stays, and the callback a Handle
        return None


# The head of BaseEventLoop.create_task, normalised (see _base.source_is): what
# it does when no task factory is set, from 3.10 (no ``context``) to 3.13.
_KNOWN_CREATE_TASK_HEADS: Final = tuple(
    f"""\
def create_task(self, coro, *, name=None{context}):
self._check_closed()
if self._task_factory is None:
task = tasks.Task(coro, loop=self, name=name{passed})
if task._source_traceback:
del task._source_traceback[-1]
else:
"""
    for context, passed in (("", ""), (", context=None", ", context=context"))
)


def _inlines_create_task(orig: Any) -> bool:
    """Whether our ``create_task`` may run ``orig``'s lines for ``loop.create_task(coro)``
    itself (``asyncio.create_task``'s call): only if ``orig`` is asyncio's
    ``BaseEventLoop.create_task`` and its head is the code we copy."""
    try:
        if orig is not vars(asyncio.BaseEventLoop)["create_task"]:
            return False
        source = normalized_source(orig)
        return source is not None and source.startswith(_KNOWN_CREATE_TASK_HEADS)
    except Exception:  # undecided: the original is called
        return False


_HOUSEKEEPING_NAMES: Final = frozenset({"shutdown_asyncgens", "shutdown_default_executor"})


def _asyncio_housekeeping(coro: Any, code: CodeType) -> bool:
    """Whether a coroutine of asyncio's is asyncio's own work, made a task by asyncio: not a
    task of the program's.

    A private coroutine (a server's ``_accept_connection2``, a subprocess's
    ``_connect_pipes``), a closure (the happy-eyeballs race's ``run_one_coro``),
    or ``asyncio.run``'s clean-up. A public one (``asyncio.sleep``,
    ``ev.wait()``, ``queue.get()``, ``to_thread``) is made a task by the
    program, as in ``asyncio.wait([create_task(queue.get()), create_task(stop.wait())])``:
    its task gets a span as any other (it did not, before 2026-12-05).
    """
    try:  # called before create_task's own guard: nothing of ours may escape
        name = code.co_name
        return (
            name.startswith("_")
            or name in _HOUSEKEEPING_NAMES
            or "<locals>" in getattr(coro, "__qualname__", "")
        )
    except Exception:  # undecided: the task is the program's, and spanned
        return False


def task_patches() -> list[Patch]:
    """Patches that give every task a span, on every event loop class we know."""
    read_limits()
    if _CONTEXT_VAR is None:  # pragma: no cover - a non-contextvars OpenTelemetry runtime
        RECORDER.fail(
            FAMILY_TASK,
            RuntimeError("OpenTelemetry's runtime context is not contextvars-based"),
        )
        return []
    var = _CONTEXT_VAR
    live = live_flag()
    rec = RECORDER
    enabled = rec.enabled
    include_internal = rec.options.internal_tasks
    getframe = sys._getframe
    file_kinds = file_kind
    asyncio_file = is_asyncio_file
    next_id = rec.next_id
    tasks_of = tasks_by_loop
    c_task: Any = getattr(asyncio.tasks, "_CTask", ())  # isinstance(x, ()) is False
    create_task_code = asyncio.tasks.create_task.__code__
    new_span = object.__new__
    housekeeping = _asyncio_housekeeping

    asyncio_tasks: Any = asyncio.tasks

    def make(orig: Any) -> Any:
        inline = _inlines_create_task(orig)

        @functools.wraps(orig)
        def create_task(self: Any, coro: Any, *args: Any, name: Any = None, **kwargs: Any) -> Any:
            # ``name`` apart: asyncio.create_task passes ``name=None`` on 3.13,
            # which is then still the plain call. (Passed on to the original
            # even when not given: None is the default of both we wrap,
            # asyncio's and uvloop's.)
            if not (live[0] and enabled[FAMILY_TASK]):
                return orig(self, coro, *args, name=name, **kwargs)
            code = getattr(coro, "cr_code", None)
            if (
                code is not None
                and not include_internal
                and asyncio_file(code.co_filename)
                and housekeeping(coro, code)
            ):
                # asyncio's own work (asyncio.run's clean-up, a server's accept): not a task of
                # the program's, which a public coroutine of asyncio's (ev.wait()) may be
                return orig(self, coro, *args, name=name, **kwargs)
            current = var.get()
            span: TaskSpan | None
            try:
                # The creation site, cheaply: the first frame above asyncio's
                # (asyncio.create_task's, the commonest, known by its code).
                # (Each read of a frame's f_code is an audit event: once a frame.)
                frame: Any = getframe(1)
                code = frame.f_code
                if code is create_task_code:
                    frame = frame.f_back
                    code = frame.f_code if frame is not None else None
                while code is not None and (internal := file_kinds(code.co_filename)):
                    frame = frame.f_back
                    code = frame.f_code if frame is not None else None
                lasti = frame.f_lasti if code is not None else 0
                parent = current.get(SPAN_KEY)
                if type(parent) is TaskSpan:  # the common case: a task made by a task
                    creator = tasks_of(self)  # self is the running loop
                    # TaskSpan.__init__'s stores, here: calling a class with an
                    # __init__ costs CPython (before 3.13) more than setting
                    # its thirteen slots does. (Every slot set, as there.)
                    span = new_span(TaskSpan)
                    span.trace_id = parent.trace_id
                    span.span_id = next_id()
                    span.flags = parent.flags
                    span.parent_id = parent.span_id
                    span.parent_remote = False
                    span.start_ns = perf_counter_ns()
                    span.coroutine = getattr(coro, "__qualname__", None)
                    span.site_code = code
                    span.site_lasti = lasti
                    span.parent_task = creator.get_name() if creator is not None else None
                    span.end_ns = 0
                    span.task_name = None
                    span.outcome = None
                    span.extras = None
                else:
                    span = start_task_span(coro, (code, lasti) if code is not None else None)
                if code is not None and internal is None and span is not None:
                    # A library's task: the program's line that led to it, for
                    # the primitives it makes (see _sites.program_site).
                    origin = program_site(frame)
                    if origin is not None:
                        span._extras().origin = origin
            except Exception as exc:
                rec.fail(FAMILY_TASK, exc)
                span = None
            if span is None:
                return orig(self, coro, *args, name=name, **kwargs)
            ctx = Context(current)
            dict.__setitem__(ctx, SPAN_KEY, span)
            # With nothing but the coroutine (asyncio.create_task's usual
            # call), a plain call: no argument tuple, list and dict to build.
            context = kwargs.get("context") if kwargs else None
            if context is None:
                token = var.set(ctx)
                try:
                    plain = not (args or kwargs)
                    if plain and inline and self._task_factory is None:
                        # asyncio's own lines for this call, here rather than
                        # called (see _inlines_create_task): a frame fewer.
                        self._check_closed()
                        task = (
                            asyncio_tasks.Task(coro, loop=self)
                            if name is None
                            else asyncio_tasks.Task(coro, loop=self, name=name)
                        )
                        if task._source_traceback:
                            del task._source_traceback[-1]
                    elif plain and name is None:
                        task = orig(self, coro)
                    else:
                        task = orig(self, coro, *args, name=name, **kwargs)
                finally:
                    var.reset(token)
                if not isinstance(task, c_task):
                    # A pure-Python Task may have been handed a context of its
                    # own (the asyncio.Runner backport on 3.10 swaps
                    # copy_context): the span must be current in that one.
                    task_context = getattr(task, "_context", None)
                    if task_context is not None and task_context.get(var) is not ctx:
                        with contextlib.suppress(RuntimeError):
                            task_context.run(var.set, ctx)
            else:
                # If that context is running right now, it cannot be entered:
                # the task then nests under its creator's span instead.
                with contextlib.suppress(RuntimeError):
                    context.run(var.set, ctx)
                task = orig(self, coro, *args, name=name, **kwargs)
            try:
                if getattr(task, "_source_traceback", None):  # asyncio's debug mode
                    as_untraced(task)
                TASK_SPANS[id(task)] = span
                # Run by call_soon as the task completes (see _call_soon_patch),
                # or as a callback where call_soon is not ours, in a fixed
                # empty context: no copy of the current one. An eager task
                # (3.12+) already done gets it later, once asyncio.create_task()
                # has set its name.
                task.add_done_callback(
                    _task_done_later if task.done() else _task_done, context=_EMPTY_CONTEXT
                )
            except Exception as exc:
                rec.fail(FAMILY_TASK, exc)
            return task

        return create_task

    patches = [
        Patch(
            asyncio.BaseEventLoop, "create_task", make(vars(asyncio.BaseEventLoop)["create_task"])
        )
    ]
    uvloop_loop = _uvloop_loop()
    if uvloop_loop is not None:
        patches.append(Patch(uvloop_loop, "create_task", make(uvloop_loop.create_task)))
    call_soon = _call_soon_patch()
    if call_soon is not None:
        patches.append(call_soon)
    patches.append(_repr_patch())
    return patches


def _uvloop_loop() -> Any:
    """uvloop's Python-level ``Loop`` class, if uvloop is installed."""
    import importlib.util

    if "uvloop" not in sys.modules and importlib.util.find_spec("uvloop") is None:
        return None
    try:
        import uvloop
    except Exception:  # a broken install must not break instrumentation
        return None
    loop = getattr(uvloop, "Loop", None)
    return loop if isinstance(loop, type) else None


def _repr_patch() -> Patch:
    """Hide our done callback from ``repr(task)``, which lists callbacks as ``cb=[...]``."""
    base_futures = asyncio.base_futures
    orig = vars(base_futures)["_future_repr_info"]
    format_callbacks = base_futures._format_callbacks

    def ours(callback: object) -> bool:
        # By identity: a program's callback may define __eq__ as it likes.
        return callback is _task_done or callback is _task_done_later

    @functools.wraps(orig)
    def _future_repr_info(future: Any) -> list[str]:
        info: list[str] = orig(future)
        callbacks = future._callbacks
        if callbacks and any(ours(entry[0]) for entry in callbacks):
            shown = format_callbacks(callbacks)
            mine = [entry for entry in callbacks if not ours(entry[0])]
            if shown in info:
                index = info.index(shown)
                if mine:
                    info[index] = format_callbacks(mine)
                else:
                    del info[index]
        return info

    return Patch(base_futures, "_future_repr_info", _future_repr_info)


# ==========================================================================
# Futures
# ==========================================================================

_CFuture: Final[type] = asyncio.futures.Future


class _FutureMeta(type):
    """Keeps ``isinstance(x, asyncio.Future)`` meaning what it meant before."""

    def __instancecheck__(cls, instance: Any) -> bool:
        if cls is TracedFuture:
            return isinstance(instance, _CFuture)
        return type.__instancecheck__(cls, instance)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        if cls is TracedFuture:
            return issubclass(subclass, _CFuture)
        return type.__subclasscheck__(cls, subclass)


class _FutureState:
    """What a traced future remembers until it resolves."""

    __slots__ = ("creator", "creator_id", "parent", "site", "span_id", "t0", "waiters")

    def __init__(
        self,
        t0: int,
        span_id: int,
        parent: Any,
        creator: str | None,
        site: Any,
        creator_id: int = 0,
    ) -> None:
        self.t0 = t0
        self.span_id = span_id
        self.parent = parent
        self.creator = creator
        self.site = site
        self.waiters = 0
        self.creator_id = creator_id
        """``id()`` of the task that created the future (0 outside a task): its likely resolver."""


PENDING: Final[dict[int, tuple[_FutureState, PrimRef]]] = {}
"""Traced futures not resolved yet: ``id(future)`` -> (state, ref). No reference to the future."""

_FUTURE_LIVE: list[bool] = [False]


class TracedFuture(_CFuture, metaclass=_FutureMeta):  # type: ignore[misc]  # _CFuture is a C type
    """An ``asyncio.Future`` that records who resolved it, and who waited for it."""

    __slots__ = ("_aiotrace_ref", "_aiotrace_resolved", "_aiotrace_state", "_aiotrace_stats")

    def __init__(self, *, loop: Any = None) -> None:
        super().__init__(loop=loop)
        if _FUTURE_LIVE[0] and RECORDER.enabled[FAMILY_FUTURE]:
            try:
                if self._source_traceback:  # asyncio's debug mode
                    as_untraced(self)
                _future_created(self)
            except Exception as exc:
                RECORDER.fail(FAMILY_FUTURE, exc)

    def set_result(self, result: Any, /) -> None:
        super().set_result(result)
        _future_resolved(self, semconv.OUTCOME_RESULT)

    def set_exception(self, exception: Any, /) -> None:
        super().set_exception(exception)
        _future_resolved(self, semconv.OUTCOME_EXCEPTION)

    def cancel(self, msg: Any = None) -> bool:
        cancelled: bool = super().cancel(msg)
        if cancelled:
            _future_resolved(self, semconv.OUTCOME_CANCELLED)
        return cancelled

    def __await__(self) -> Any:
        if self.done() or not _FUTURE_LIVE[0]:
            return (yield from super().__await__())
        t0 = perf_counter_ns()
        state = getattr(self, "_aiotrace_state", None)
        if state is not None:
            state.waiters += 1
        try:
            result = yield from super().__await__()
        except BaseException as exc:
            _future_waited(self, t0, exc)
            raise
        _future_waited(self, t0, None)
        return result

    __iter__ = __await__

    def __del__(self) -> None:
        try:
            if _FUTURE_LIVE[0] and not self.done():
                _future_resolved(self, semconv.OUTCOME_COLLECTED)
        except Exception:  # a finaliser never raises
            pass
        super().__del__()


TracedFuture.__name__ = TracedFuture.__qualname__ = "Future"
TracedFuture.__module__ = "asyncio.futures"


_CREATE_FUTURE_CODE: Final[list[CodeType | None]] = [None]
"""The code of the patched ``loop.create_future`` (one for every loop class)."""


def _future_created(fut: TracedFuture) -> None:
    # What made the future: the program's line, or (loop.create_future()) ours below it.
    init = sys._getframe(1)
    frame = init.f_back
    if frame is not None and frame.f_code is _CREATE_FUTURE_CODE[0]:
        frame = frame.f_back
    # A line making a future per request is walked to once (see PROGRAM_SITES).
    stats = (
        None
        if frame is None
        else PROGRAM_SITES.get((id(frame.f_code), frame.f_lasti, semconv.KIND_FUTURE))
    )
    if stats is not None:
        raw = stats.raw
    else:
        raw, via = site_and_via(frame, via_site)  # (init's and ours are aiotrace's)
        stats = stats_for(semconv.KIND_FUTURE, raw, False, via)
        if frame is not None and keep_program_site(frame, semconv.KIND_FUTURE, raw, stats):
            raw = stats.raw
    ref = PrimRef(semconv.KIND_FUTURE, raw, stats)
    fut._aiotrace_ref = ref
    fut._aiotrace_stats = stats
    task = current_task()
    state = _FutureState(
        perf_counter_ns(),
        RECORDER.next_id(),
        current_span(),
        task_name(task),
        raw,
        id(task) if task is not None else 0,
    )
    fut._aiotrace_state = state
    PENDING[id(fut)] = (state, ref)


def _future_resolved(fut: TracedFuture, outcome: str) -> None:
    """Record the future's span: from creation to now, resolved by the calling task."""
    state = getattr(fut, "_aiotrace_state", None)
    if state is None or not RECORDER.enabled[FAMILY_FUTURE]:
        return
    try:
        fut._aiotrace_state = None
        entry = PENDING.get(id(fut))
        if entry is None or entry[0] is not state:
            return  # already reported (pending when a tracing ended): once is enough
        del PENDING[id(fut)]
        ref = entry[1]
        t = perf_counter_ns()
        attrs: dict[str, Any] = {  # and its id: the encoder adds it (_wire)
            semconv.ATTR_FUTURE_TIME_TO_RESOLVE: (t - state.t0) / 1e6,
            semconv.ATTR_FUTURE_WAITERS: state.waiters,
        }
        links: tuple[tuple[str, Any], ...] = ()
        if outcome in (semconv.OUTCOME_COLLECTED, semconv.OUTCOME_PENDING):
            if outcome == semconv.OUTCOME_COLLECTED:
                _leaks.future_collected(state.t0, ref, state.waiters, state.creator)
        else:
            # The resolver's call, as an event on its span; our span links to it.
            # Its line is searched for from what called set_result() (or
            # set_exception(), cancel()): ours, which called us.
            try:
                resolver: Any = sys._getframe(2)
            except ValueError:  # called from C with no Python frame above
                resolver = None
            point = mark_point(
                semconv.SPAN_FUTURE_RESOLVE,
                {
                    semconv.ATTR_PRIMITIVE_KIND: semconv.KIND_FUTURE,
                    semconv.ATTR_FUTURE_ID: ref.pid,
                    semconv.ATTR_OUTCOME: outcome,
                },
                t,
                resolver,
            )
            if point[1] is not None:
                attrs[semconv.ATTR_WAKER_TASK] = point[1]
            if point[2] is not None:
                attrs[semconv.ATTR_WAKER_SITE] = point[2]
            if point[4] is not None:
                attrs[semconv.ATTR_WAKER_VIA_SITE] = point[4]
            if point[0] is not None:
                links = ((semconv.LINK_WAKER, point[0]),)
            fut._aiotrace_resolved = (state.span_id, t, point[1], point[2], point[4])
            if outcome == semconv.OUTCOME_EXCEPTION:
                GIVEN_EXCEPTION.append(weakref.ref(fut))
        stats = ref.stats
        stats.holds += 1
        stats.spanned += 1
        _emit_future(state, ref, t, outcome, attrs, links)
    except Exception as exc:
        RECORDER.fail(FAMILY_FUTURE, exc)


def _emit_future(
    state: _FutureState,
    ref: Any,
    t: int,
    outcome: str,
    attrs: dict[str, Any],
    links: tuple[tuple[str, Any], ...] = (),
) -> None:
    """The future's span record: from its creation (``state``) to ``t``."""
    RECORDER.emit(
        (
            R_SPAN,
            semconv.SPAN_FUTURE,
            state.t0,
            t,
            state.span_id,
            state.parent,
            state.creator,
            state.site,
            ref,
            outcome,
            attrs,
            links,
        )
    )


def _future_waited(fut: TracedFuture, t0: int, exc: BaseException | None) -> None:
    """A task's ``await future`` ended (raising ``exc``, if not ``None``): span it, linked to
    the future's span, if long enough. Guarded whole: it runs in the program's await."""
    try:
        if not RECORDER.enabled[FAMILY_FUTURE]:
            return
        ref = getattr(fut, "_aiotrace_ref", None)
        if ref is None:
            return
        if exc is None:
            outcome = semconv.OUTCOME_RESULT
        elif isinstance(exc, CancelledError):
            outcome = outcome_of(exc, current_task())
        else:
            outcome = semconv.OUTCOME_EXCEPTION
        resolved = getattr(fut, "_aiotrace_resolved", None)
        t1 = resolved[1] if resolved is not None and resolved[1] >= t0 else perf_counter_ns()
        if not wait_spanned(ref, t0, t1, outcome):
            return
        attrs: dict[str, Any] | None = None  # the future's id: the encoder adds it (_wire)
        links: tuple[tuple[str, Any], ...] = ()
        if resolved is not None:
            links = ((semconv.LINK_FUTURE, resolved[0]),)
            attrs = {}
            if resolved[2] is not None:
                attrs[semconv.ATTR_WAKER_TASK] = resolved[2]
            if resolved[3] is not None:
                attrs[semconv.ATTR_WAKER_SITE] = resolved[3]
            if resolved[4] is not None:
                attrs[semconv.ATTR_WAKER_VIA_SITE] = resolved[4]
        # The waiter's line is searched for from what awaited the future
        # (our __await__, which called us, is its generator).
        try:
            awaiter: Any = sys._getframe(2)
        except ValueError:  # nothing above: emit_wait searches from here
            awaiter = None
        emit_wait(semconv.SPAN_FUTURE_WAIT, ref, t0, t1, outcome, attrs, links, frame=awaiter)
    except Exception as exc:
        RECORDER.fail(FAMILY_FUTURE, exc)


def report_pending(since: int = 0) -> int:
    """At shutdown: spans for every traced future and task still pending; returns how many.

    A task still running when the program ends (killed, or a loop stopped
    with tasks left) would otherwise never get its span, and every span
    inside it would name a parent that does not exist. ``since`` (a
    ``perf_counter_ns()``) limits it to those created after that moment: a
    nested instrumentation ends only its own.
    """
    return _report_pending_tasks(since) + _report_pending_futures(since)


def _live_task_names() -> dict[int, str]:
    # asyncio keeps every live task in a weak set (3.12+ splits it in two);
    # asyncio.all_tasks() would need a running loop, which an exit has not.
    names: dict[int, str] = {}
    for attr in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        with contextlib.suppress(Exception):
            for task in list(getattr(asyncio.tasks, attr, None) or ()):
                names[id(task)] = task.get_name()
    return names


def _report_pending_tasks(since: int = 0) -> int:
    if not TASK_SPANS:
        return 0
    names = _live_task_names()
    count = 0
    for key in list(TASK_SPANS):
        span = TASK_SPANS.get(key)
        if span is None or span.start_ns < since:
            continue
        del TASK_SPANS[key]
        if span.end_ns:
            continue
        span.end_ns = perf_counter_ns()
        span.task_name = names.get(key) or span.task_name
        span.outcome = semconv.OUTCOME_PENDING
        RECORDER.emit(task_record(span))
        count += 1
    return count


def _report_pending_futures(since: int = 0) -> int:
    count = 0
    for key in list(PENDING):
        entry = PENDING.get(key)
        if entry is None or entry[0].t0 < since:
            continue
        del PENDING[key]
        state, ref = entry
        _emit_future(
            state,
            ref,
            perf_counter_ns(),
            semconv.OUTCOME_PENDING,
            {semconv.ATTR_FUTURE_WAITERS: state.waiters},
        )
        count += 1
    return count


# BaseEventLoop.create_future, normalised (see _base.source_is).
_KNOWN_CREATE_FUTURE: Final = """\
def create_future(self):
return futures.Future(loop=self)"""


def future_patches() -> list[Patch]:
    """``loop.create_future()`` from user code, and ``asyncio.Future``, give traced futures."""
    enabled = RECORDER.enabled
    include_internal = RECORDER.options.internal_futures
    getframe = sys._getframe
    futures_module = asyncio.futures

    def make(orig: Any, plain: bool) -> Any:
        # Every future asyncio makes for itself (each sleep) comes through
        # here; for the default loop (``plain``) without calling the original.
        @functools.wraps(orig)
        def create_future(self: Any) -> Any:
            if (
                _FUTURE_LIVE[0]
                and enabled[FAMILY_FUTURE]
                and (include_internal or not is_internal_file(getframe(1).f_code.co_filename))
            ):
                return TracedFuture(loop=self)
            if plain:
                future: Any = futures_module.Future(loop=self)
                # Debug mode: a stack recorded, ending in this wrapper. (Future()
                # read loop._debug already: the read cannot fail here.)
                if self._debug:
                    as_untraced(future)
                return future
            return orig(self)

        return create_future

    orig_base = vars(asyncio.BaseEventLoop)["create_future"]
    base_plain = source_is(orig_base, _KNOWN_CREATE_FUTURE)
    base_create_future = make(orig_base, base_plain)
    _CREATE_FUTURE_CODE[0] = base_create_future.__code__  # every make()'s
    if base_plain:
        stands_in_for(base_create_future, orig_base)
        if not include_internal:
            PLAIN_CREATE_FUTURE[0] = base_create_future
    patches = [
        Patch(asyncio.BaseEventLoop, "create_future", base_create_future),
        Patch(asyncio, "Future", TracedFuture),
    ]
    uvloop_loop = _uvloop_loop()
    if uvloop_loop is not None:
        patches.append(Patch(uvloop_loop, "create_future", make(uvloop_loop.create_future, False)))
    _FUTURE_LIVE[0] = True
    return patches


def retire_futures() -> None:
    """After uninstrument(): traced futures still around behave as plain ones."""
    _FUTURE_LIVE[0] = False
    PLAIN_CREATE_FUTURE[0] = None
    PENDING.clear()


__all__ = [
    "PENDING",
    "TaskSpan",
    "TracedFuture",
    "future_patches",
    "preexisting_stats",
    "report_pending",
    "retire_futures",
    "start_task_span",
    "task_patches",
]
