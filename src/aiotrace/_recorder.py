"""The hot path's shared state: options, clock, ids, the record buffer and counters.

Patched methods never build spans. They append small tuples ("records") to
:attr:`Recorder.buffer`, a ``deque`` whose ``append`` is atomic under the GIL,
and a pipeline thread turns records into spans in bulk. This module is the
only thing both sides share.

It also owns failure handling: if aiotrace's own bookkeeping raises, the error
is counted, logged once per family on the ``aiotrace`` logger, and the family
stops recording. The user's call proceeds as if aiotrace were not there.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Final

from aiotrace.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

LOGGER: Final = logging.getLogger("aiotrace")

# Record kinds (first element of every record tuple); layouts in _wire.py.
R_SPAN: Final = 0
"""A finished operation that becomes a span if it passed its threshold."""
R_HOLD: Final = 1
"""A finished hold (or wait) that becomes a span: a span record without links."""
R_TASK: Final = 3
"""A finished task: its span's fields (see ``tasks.task_record``)."""
R_SDK: Final = 4
"""A finished span from the OpenTelemetry SDK, forwarded into aiotrace's own sinks."""
R_OPTIONAL: Final = 5
"""Like ``R_HOLD``, but spanned only if a later record links to it (a short hold
that handed a lock to a long wait, a barrier's releasing arrival)."""

PRIMITIVE_FAMILIES: Final = ("lock", "semaphore", "event", "condition", "barrier", "queue")
"""Synchronisation primitives that the ``primitives`` option selects from."""
FAMILIES: Final = (*PRIMITIVE_FAMILIES, "task", "future")
"""Groups of patches that are enabled, and disabled on internal error, together."""


@dataclass(frozen=True)
class Options:
    """What to trace and when an operation is worth a span.

    Thresholds are in seconds. An operation shorter than its threshold is
    counted (see :func:`aiotrace.stats`) and summarised in reports, not spanned.
    A hold that a spanned wait links to is always spanned, so "who blocked
    me?" always has an answer.
    """

    min_wait: float = 0.001
    """Shortest wait (lock, semaphore, event, condition, barrier, queue) that becomes a span."""
    min_hold: float = 0.001
    """Shortest lock or semaphore hold that becomes a span (unless a spanned wait links to it)."""
    tasks: bool = True
    """A span per task, current inside the task, so everything it does nests under it."""
    futures: bool = True
    """Spans for futures created by user code, and for tasks awaiting them."""
    internal_futures: bool = False
    """Also trace futures created inside asyncio itself (sleep, lock waiters, streams)."""
    internal_tasks: bool = False
    """Also give a span to the tasks asyncio makes of its own work (``asyncio.run``'s
    clean-up, a server's accept, a subprocess's pipes). A task the program makes of one of
    asyncio's public coroutines (``asyncio.sleep``, ``ev.wait()``, ``to_thread``) has one anyway."""
    internal_primitives: bool = False
    """Also trace primitives asyncio creates for itself (a Barrier's Condition, ...)."""
    primitives: tuple[str, ...] = PRIMITIVE_FAMILIES
    """Primitive families to patch; any subset of ``PRIMITIVE_FAMILIES``."""
    max_buffered: int | None = None
    """Bound on unprocessed records. ``None``: never drop, apply back-pressure instead."""
    flush_interval: float = 0.2
    """Seconds between pipeline runs."""

    def __post_init__(self) -> None:
        for name in ("min_wait", "min_hold", "flush_interval"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
        unknown = set(self.primitives) - set(PRIMITIVE_FAMILIES)
        if unknown:
            raise ConfigurationError(
                f"unknown primitive families {sorted(unknown)}; "
                f"valid: {', '.join(PRIMITIVE_FAMILIES)}"
            )
        if self.max_buffered is not None and self.max_buffered < 1:
            raise ConfigurationError("max_buffered must be a positive number of records or None")

    @classmethod
    def from_kwargs(cls, base: Options | None = None, **kwargs: Any) -> Options:
        """Build options from keyword arguments, naming the valid ones on a typo.

        Raises:
            ConfigurationError: an unknown option or an invalid value.
        """
        valid = {f.name for f in fields(cls)}
        unknown = set(kwargs) - valid
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)}; valid options: {', '.join(sorted(valid))}"
            )
        if "primitives" in kwargs:
            kwargs["primitives"] = tuple(kwargs["primitives"])
        return replace(base or cls(), **kwargs)


@dataclass
class Stats:
    """Counters behind :func:`aiotrace.stats`; ints only, updated under the GIL."""

    operations: int = 0
    """Operations observed on the slow path (fast-path ones are summed from sites)."""
    spans_built: int = 0
    spans_exported: int = 0
    spans_dropped: int = 0
    internal_errors: int = 0
    below_threshold: int = 0
    records_dropped: int = 0
    export_failures: int = 0
    links_unresolved: int = 0
    pressure_timeouts: int = 0
    """Times the program stopped waiting for a pipeline that stayed behind."""
    holders_unnamed: int = 0
    """Holds released by another task, spanned without their holder's task (see
    ``primitives._base.HolderLookups``)."""
    dropped_reasons: dict[str, int] = field(default_factory=dict)

    def drop(self, count: int, reason: str) -> None:
        """Count spans that will never reach a sink, and why."""
        self.spans_dropped += count
        self.dropped_reasons[reason] = self.dropped_reasons.get(reason, 0) + count


def _random_id_start() -> int:
    # Span ids are a counter from a random 59-bit start: unique within a
    # process, distinct between processes (xdist workers, children) sharing a
    # trace, never 0, and below 2**60 for the first 2**59 ids, where CPython
    # stores an int in 32 bytes instead of 36 (every buffered record has one).
    return random.SystemRandom().getrandbits(59) | 1


def log_failure(log: Callable[..., None], message: str, *args: object, exc: BaseException) -> None:
    """``log(message, *args)`` with ``exc``'s traceback, as ``exc_info=exc`` would add it.

    Except where building a syntax tree can break the program's
    (``aiotrace._sites.SHARED_SYNTAX_TREE_DEPTH``): logging's own formatting
    of ``exc_info`` builds one to place its carets, and a failure may be
    logged from a finaliser or from aiotrace's threads, in the middle of the
    program's ``ast.parse``. There the traceback is added to the message,
    formatted without its carets.
    """
    from aiotrace._sites import SHARED_SYNTAX_TREE_DEPTH, RaisedException

    if not SHARED_SYNTAX_TREE_DEPTH:
        log(message, *args, exc_info=exc)
        return
    try:
        text = RaisedException(exc).stacktrace().rstrip("\n")
    except Exception as failed:  # a failure is logged from an ``except``: it never raises
        text = f"(its traceback could not be formatted: {failed!r})"
    log(message + "\n%s", *args, text)


class Recorder:
    """Process-wide recording state shared by every patch and the pipeline."""

    def __init__(self) -> None:
        self.options = Options()
        self.min_wait_ns = int(self.options.min_wait * 1e9)
        self.min_hold_ns = int(self.options.min_hold * 1e9)
        self.buffer: deque[tuple[Any, ...]] = deque()
        self.stats = Stats()
        self.enabled: dict[str, bool] = dict.fromkeys(FAMILIES, False)
        self.recording = False
        """Between :meth:`configure` and :meth:`disable_all`: see :meth:`emit`."""
        self._ids = itertools.count(_random_id_start())
        self.next_id: Callable[[], int] = self._ids.__next__
        self.epoch_offset = time.time_ns() - time.perf_counter_ns()
        self._logged: set[str] = set()
        self._pressure: Callable[[], None] | None = None
        self.high_water = 50_000
        self._trigger = self.high_water
        self.after_exit = False
        """Set by the flush at the interpreter's exit: see :meth:`exit_flushed`."""
        self.sites: list[Any] = []  # primitives._base.SiteStats, for operation totals
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # A forked child shares the trace but must not reuse the parent's ids,
        # re-send the parent's buffered records, or report the parent's counts
        # as its own (the collector adds up every process's).
        self._ids = itertools.count(_random_id_start())
        self.next_id = self._ids.__next__
        self.buffer.clear()
        self._lock = threading.Lock()
        self.stats.__init__()  # type: ignore[misc]  # in place: sinks hold this object
        self._reset_sites()

    def _reset_sites(self) -> None:
        for site in list(self.sites):
            site.n = site.spanned = site.waits = site.holds = 0
            site.wait_ns = site.max_wait_ns = site.max_hold_ns = 0
            site.held_at = None

    def configure(self, options: Options) -> None:
        """Install options, start counting from zero, enable the families selected."""
        self.options = options
        self.min_wait_ns = int(options.min_wait * 1e9)
        self.min_hold_ns = int(options.min_hold * 1e9)
        self.stats = Stats()
        self._logged.clear()
        self._trigger = -1 if self.after_exit else self._configured_trigger()
        self._reset_sites()
        self.epoch_offset = time.time_ns() - time.perf_counter_ns()
        self.recording = True
        for family in PRIMITIVE_FAMILIES:
            self.enabled[family] = family in options.primitives
        self.enabled["task"] = options.tasks
        self.enabled["future"] = options.futures
        # What failed outside the families last time (a fork's hooks, noting
        # timeouts: see fail()) is tried again.
        for helper in [key for key in self.enabled if key not in FAMILIES]:
            del self.enabled[helper]

    def _configured_trigger(self) -> int:
        """The buffer's length past which :meth:`_overflow` is called."""
        limit = self.options.max_buffered
        return self.high_water if limit is None else min(self.high_water, limit)

    def exit_flushed(self) -> None:
        """The flush at the interpreter's exit is done: say so if anything is recorded after.

        An ``atexit`` handler registered before ``instrument()`` runs after
        ours (last in, first out): what asyncio does there is recorded and
        never delivered. The next record reaches :meth:`_overflow` (its
        trigger is set below any length), which warns once: the hot path pays
        nothing for it.
        """
        self.after_exit = True
        self._trigger = -1

    def disable_all(self) -> None:
        """Stop recording everywhere (used when uninstrumenting)."""
        self.recording = False
        for family in FAMILIES:
            self.enabled[family] = False

    def set_pressure_handler(self, handler: Callable[[], None] | None) -> None:
        """Called when the buffer passes its high-water mark (the pipeline drains)."""
        self._pressure = handler

    def emit(self, record: tuple[Any, ...]) -> None:
        """Queue one record; never raises into the caller.

        Not while stopped: a wait begun traced can end after ``uninstrument()``
        (its coroutine runs our retired code to the end), and its record, left
        in the buffer, went to the next instrumentation's trace, a wait that
        trace never saw begin.
        """
        if not self.recording:
            return
        buffer = self.buffer
        buffer.append(record)
        if len(buffer) > self._trigger:
            self._overflow()

    def _overflow(self) -> None:
        buffer = self.buffer
        if self._trigger < 0:
            self._trigger = self._configured_trigger()
            LOGGER.warning(
                "aiotrace: asyncio ran after aiotrace's last flush, in an atexit handler "
                "registered before aiotrace.instrument(): what it records is not delivered; "
                "call instrument() before registering that handler"
            )
            if len(buffer) <= self._trigger:
                return
        limit = self.options.max_buffered
        if limit is not None and len(buffer) > limit:
            try:
                buffer.pop()  # the newest: what is already buffered keeps its order
            except IndexError:
                return
            self.stats.records_dropped += 1
            self.stats.drop(1, "buffer full (max_buffered)")
            return
        handler = self._pressure
        if handler is not None:
            handler()

    def fail(self, family: str, exc: BaseException) -> None:
        """Record an internal error: count it, log once, stop tracing ``family``."""
        self.stats.internal_errors += 1
        self.enabled[family] = False
        if family not in self._logged:
            self._logged.add(family)
            log_failure(
                LOGGER.error,
                "aiotrace: internal error while tracing %s; tracing of %s has been disabled "
                "(the program is unaffected)",
                family,
                family,
                exc=exc,
            )

    def to_epoch(self, perf_ns: int) -> int:
        """Convert a ``perf_counter_ns`` reading to nanoseconds since the Unix epoch."""
        return perf_ns + self.epoch_offset


RECORDER: Final = Recorder()
"""The one recorder of this process."""
