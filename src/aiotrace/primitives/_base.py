"""What every primitive family shares: identity, creation sites, wait/hold bookkeeping.

Every traced primitive instance carries three attributes:

``_aiotrace_ref``
    a :class:`PrimRef` (process-unique id, kind, explicit name, creation site);
``_aiotrace_stats``
    the :class:`SiteStats` of its creation site, shared by every instance made
    there, whose ``n`` the fast path increments;
``_aiotrace_t0`` / ``_aiotrace_owner``
    (locks) when the current hold began and which task holds it.

Primitives created before ``instrument()`` have none of them; class-level
defaults installed by the patch layer make reads work, and the slow path
creates a ref lazily. The class defaults are patches like any other, so
``uninstrument()`` removes them.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import weakref
from time import perf_counter_ns
from types import CodeType
from typing import TYPE_CHECKING, Any, Final

from aiotrace import semconv
from aiotrace._context import current_span
from aiotrace._recorder import R_HOLD, R_SPAN, RECORDER
from aiotrace._sites import SITES, RawSite, capture, capture_creation, default_name

if TYPE_CHECKING:
    from collections.abc import Callable

_pid_counter = itertools.count(1)
next_pid: Final[Callable[[], int]] = _pid_counter.__next__

CancelledError: Final = asyncio.CancelledError

if sys.version_info >= (3, 12):  # pragma: no cover - version dependent
    current_task: Callable[[], asyncio.Task[Any] | None] = asyncio.current_task
else:  # pragma: no cover - version dependent
    from asyncio.events import _get_running_loop as _running_loop

    # The C accelerator's own dict of running tasks (3.10-3.11); reading it
    # directly saves the Python-level call asyncio.current_task() makes there.
    _tasks_by_loop: dict[Any, asyncio.Task[Any]] = asyncio.tasks._current_tasks  # type: ignore[attr-defined]  # private

    def current_task() -> asyncio.Task[Any] | None:
        """``asyncio.current_task()`` without raising outside a running loop."""
        return _tasks_by_loop.get(_running_loop())


def task_name(task: asyncio.Task[Any] | None) -> str | None:
    """The task's name, or ``None`` outside any task."""
    if task is None:
        return None
    try:
        return task.get_name()
    except Exception:  # a Task subclass with a broken get_name()
        return None


class SiteStats:
    """Counters for all primitives created at one site; bounded by the program's code size."""

    __slots__ = (
        "holds",
        "internal",
        "kind",
        "max_hold_ns",
        "max_wait_ns",
        "n",
        "raw",
        "wait_ns",
        "waits",
    )

    def __init__(self, kind: str, raw: RawSite | None, internal: bool) -> None:
        self.n = 0
        """Fast-path operations (uncontended, short) at this site."""
        self.kind = kind
        self.raw = raw
        self.internal = internal
        self.waits = 0
        self.wait_ns = 0
        self.max_wait_ns = 0
        self.holds = 0
        self.max_hold_ns = 0


class PrimRef:
    """Identity of one primitive instance, without a reference back to it."""

    __slots__ = ("kind", "name", "pid", "raw", "stats")

    def __init__(self, kind: str, raw: RawSite | None, stats: SiteStats) -> None:
        self.pid = next_pid()
        self.kind = kind
        self.raw = raw
        self.stats = stats
        self.name: str | None = None


_SITE_LIMIT: Final = 50_000
_site_stats: dict[tuple[int, int, str], SiteStats] = {}
_site_lock = threading.Lock()
_overflow: dict[str, SiteStats] = {}
PREEXISTING: Final[dict[str, SiteStats]] = {}
"""Shared stats of primitives created before instrumentation, per kind."""


def preexisting_stats(kind: str) -> SiteStats:
    """The stats bucket for primitives of ``kind`` created before ``instrument()``."""
    stats = PREEXISTING.get(kind)
    if stats is None:
        stats = SiteStats(kind, None, False)
        PREEXISTING[kind] = stats
        RECORDER.sites.append(stats)
    return stats


def stats_for(kind: str, raw: RawSite | None, internal: bool) -> SiteStats:
    """The shared :class:`SiteStats` of a creation site."""
    if raw is None:
        return preexisting_stats(kind)
    key = (id(raw[0]), raw[1], kind)
    stats = _site_stats.get(key)
    if stats is None:
        with _site_lock:
            stats = _site_stats.get(key)
            if stats is None:
                if len(_site_stats) >= _SITE_LIMIT:
                    stats = _overflow.get(kind)
                    if stats is None:
                        stats = _overflow[kind] = SiteStats(kind, None, internal)
                        RECORDER.sites.append(stats)
                    return stats
                stats = SiteStats(kind, raw, internal)
                _site_stats[key] = stats
                RECORDER.sites.append(stats)
    return stats


def on_create(prim: Any, kind: str) -> PrimRef:
    """Give a new primitive its identity; called from patched ``__init__``."""
    raw, internal = capture_creation(0, prim)
    if internal and RECORDER.options.internal_primitives:
        internal = False
    stats = stats_for(kind, raw, internal)
    ref = PrimRef(kind, raw, stats)
    prim._aiotrace_ref = ref
    prim._aiotrace_stats = stats
    return ref


def ref_of(prim: Any, kind: str) -> PrimRef:
    """The primitive's ref, creating one for a primitive made before instrumentation."""
    ref: PrimRef | None = getattr(prim, "_aiotrace_ref", None)
    if ref is None:
        stats = preexisting_stats(kind)
        ref = PrimRef(kind, None, stats)
        prim._aiotrace_ref = ref
        prim._aiotrace_stats = stats
    return ref


def adopt(child: Any, parent_ref: PrimRef, suffix: str) -> None:
    """Make an asyncio-created helper (a Condition's own Lock) a named part of ``parent``."""
    ref = ref_of(child, semconv.KIND_LOCK)
    ref.raw = parent_ref.raw
    ref.stats = stats_for(ref.kind, parent_ref.raw, parent_ref.stats.internal)
    child._aiotrace_stats = ref.stats
    ref.name = None if parent_ref.name is None else parent_ref.name + suffix
    ref_suffix[ref.pid] = (parent_ref, suffix)


ref_suffix: Final[dict[int, tuple[PrimRef, str]]] = {}
"""Helper primitives named after their owner: pid -> (owner ref, suffix)."""


# --------------------------------------------------------------------------
# Cancellation that was really a timeout
# --------------------------------------------------------------------------

TIMED_OUT: Final[weakref.WeakKeyDictionary[Any, Any]] = weakref.WeakKeyDictionary()
"""Task -> the timeout that cancelled it (see ``primitives/_timeouts.py``)."""


def is_timeout(task: asyncio.Task[Any] | None) -> bool:
    """Whether ``task`` is being cancelled because a timeout expired."""
    if task is None or not TIMED_OUT:
        return False
    try:
        marker = TIMED_OUT.get(task)
    except TypeError:
        return False
    if marker is None:
        return False
    if marker is True:
        return True
    # asyncio.Timeout (3.11+): expiring until its __aexit__ turns the
    # CancelledError into TimeoutError.
    state = getattr(marker, "_state", None)
    return getattr(state, "name", None) == "EXPIRING"


def outcome_of(exc: BaseException, task: asyncio.Task[Any] | None) -> str:
    """The ``aiotrace.outcome`` for a wait ended by ``exc``."""
    if isinstance(exc, CancelledError):
        return semconv.OUTCOME_TIMEOUT if is_timeout(task) else semconv.OUTCOME_CANCELLED
    if isinstance(exc, asyncio.TimeoutError):
        return semconv.OUTCOME_TIMEOUT
    return semconv.OUTCOME_ERROR


# --------------------------------------------------------------------------
# Waits
# --------------------------------------------------------------------------


class Wait:
    """What a slow path captures when a task starts to wait.

    Built only when the operation would block, so its cost (a frame walk, a
    context read) is paid by contended operations alone.
    """

    __slots__ = ("attrs", "links", "parent", "site", "t0", "task", "task_name")

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.task = current_task()
        self.task_name = task_name(self.task)
        self.parent = current_span()
        self.site: RawSite | None = capture()
        self.attrs: dict[str, Any] = {}
        self.links: list[tuple[str, Any]] = []


def finish_wait(
    family: str,
    ref: PrimRef,
    wait: Wait,
    t1: int,
    name: str,
    outcome: str,
) -> None:
    """Account for a finished wait and emit its span record if it passed ``min_wait``."""
    duration = t1 - wait.t0
    stats = ref.stats
    stats.waits += 1
    stats.wait_ns += duration
    if duration > stats.max_wait_ns:
        stats.max_wait_ns = duration
    RECORDER.stats.operations += 1
    if duration < RECORDER.options.min_wait * 1e9 and outcome_is_normal(outcome):
        RECORDER.stats.below_threshold += 1
        return
    RECORDER.emit(
        (
            R_SPAN,
            name,
            wait.t0,
            t1,
            RECORDER.next_id(),
            wait.parent,
            wait.task_name,
            wait.site,
            ref,
            outcome,
            wait.attrs,
            tuple(wait.links),
        )
    )


_NORMAL: Final = frozenset(
    {
        semconv.OUTCOME_ACQUIRED,
        semconv.OUTCOME_SET,
        semconv.OUTCOME_NOTIFIED,
        semconv.OUTCOME_PASSED,
        semconv.OUTCOME_GOT,
        semconv.OUTCOME_PUT,
        semconv.OUTCOME_JOINED,
    }
)


def outcome_is_normal(outcome: str) -> bool:
    """Whether ``outcome`` is a success (thresholds apply) rather than an abandonment."""
    return outcome in _NORMAL


def emit_hold(
    name: str,
    ref: PrimRef,
    span_id: int,
    t0: int,
    t1: int,
    parent: Any,
    holder: str | None,
    site: RawSite | None,
    attrs: dict[str, Any] | None,
    optional: bool,
) -> None:
    """Emit a hold record; ``optional`` holds are spanned only if a spanned wait links them."""
    RECORDER.emit(
        (
            R_HOLD,
            name,
            t0,
            t1,
            span_id,
            parent,
            holder,
            site,
            ref,
            semconv.OUTCOME_RELEASED,
            attrs,
            optional,
        )
    )


def mark_point(name: str, attrs: dict[str, Any]) -> tuple[Any, str | None, RawSite | None, int]:
    """Record a waking call (``set()``, ``notify()``) as an event on the current span.

    Returns ``(span, task name, site, time)`` so woken waiters can link to it.
    With a recording span current (the user's, or a task span) the event goes
    on it at once, because that span may end before the pipeline runs; with no
    span current a zero-length span of that name is emitted instead, and
    returned as the link target.
    """
    t = perf_counter_ns()
    task = current_task()
    tname = task_name(task)
    site = capture()
    span = current_span()
    full = dict(attrs)
    if tname is not None:
        full[semconv.ATTR_TASK_NAME] = tname
    if span is not None and span.is_recording():
        if site is not None:
            full.update(site_attributes(site))
        span.add_event(
            name,
            attributes={k: resolve_value(v) for k, v in full.items()},
            timestamp=RECORDER.to_epoch(t),
        )
        return span, tname, site, t
    point_id = RECORDER.next_id()
    RECORDER.emit((R_SPAN, name, t, t, point_id, span, tname, site, None, None, full, ()))
    return point_id, tname, site, t


def site_attributes(raw: RawSite) -> dict[str, Any]:
    """``code.*`` attributes of a raw site (resolves it now; used off the fast path)."""
    site = SITES.resolve(raw)
    return {
        semconv.ATTR_CODE_FILE_PATH: site.path,
        semconv.ATTR_CODE_LINE_NUMBER: site.line,
        semconv.ATTR_CODE_FUNCTION_NAME: site.function,
    }


def display_name(ref: PrimRef) -> str:
    """The name a primitive is shown by: explicit, derived from its owner, or from its site."""
    if ref.name:
        return ref.name
    owned = ref_suffix.get(ref.pid)
    if owned is not None:
        return display_name(owned[0]) + owned[1]
    if ref.raw is None:
        return f"{ref.kind} #{ref.pid} {semconv.UNKNOWN_SITE}"
    return default_name(SITES.resolve(ref.raw))


def resolve_value(value: Any) -> Any:
    """Turn record-time attribute values (refs, raw sites) into OpenTelemetry values."""
    if isinstance(value, PrimRef):
        return display_name(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], CodeType):
        return SITES.resolve(value).label
    return value
