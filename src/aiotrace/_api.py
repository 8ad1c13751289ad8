"""The public functions re-exported by ``aiotrace``: instrument, name, stats, flush."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiotrace._instrumentation import INSTRUMENTATION
from aiotrace._recorder import RECORDER
from aiotrace.exceptions import ConfigurationError
from aiotrace.primitives._base import ref_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.trace import TracerProvider

T = TypeVar("T")


def instrument(tracer_provider: TracerProvider | None = None, **options: Any) -> None:
    """Start tracing asyncio's primitives; a second call warns and does nothing.

    Args:
        tracer_provider: where spans go. By default the global provider
            (``opentelemetry.trace.get_tracer_provider()``) at the time spans
            are built; aiotrace never replaces a provider you set.
        **options: fields of :class:`aiotrace.Options` (``min_wait``,
            ``min_hold``, ``tasks``, ``futures``, ``primitives``, ...).

    Raises:
        ConfigurationError: an unknown option or an invalid value.
    """
    instrumentor = INSTRUMENTATION
    if instrumentor.nestable:
        # Inside ``pytest --aiotrace`` or ``aiotrace run``: this call's own
        # tracing, until its uninstrument(); then the session's again. Its
        # spans reach the session's trace through the global provider, so
        # its counts join the session's totals too; not if they go to a
        # provider of its own.
        from opentelemetry import trace

        global_spans = tracer_provider is None or tracer_provider is trace.get_tracer_provider()
        instrumentor.push(merge_counts=global_spans, tracer_provider=tracer_provider, **options)
        return
    instrumentor.instrument(tracer_provider=tracer_provider, **options)


def uninstrument() -> None:
    """Stop tracing, restore every patched class exactly, deliver what was recorded.

    Inside a session (``pytest --aiotrace``, ``aiotrace run``) it ends the
    instrumentation that the matching :func:`instrument` call started, and
    the session's tracing resumes.
    """
    instrumentor = INSTRUMENTATION
    if instrumentor.depth:
        instrumentor.pop()
        return
    instrumentor.uninstrument()


def is_instrumented() -> bool:
    """Whether :func:`instrument` is in effect."""
    return INSTRUMENTATION.active


@contextlib.contextmanager
def tracing(tracer_provider: TracerProvider | None = None, **options: Any) -> Iterator[None]:
    """Instrument for the duration of a ``with`` block, then uninstrument and flush."""
    instrument(tracer_provider, **options)
    try:
        yield
    finally:
        uninstrument()


def flush(timeout: float = 30.0) -> bool:
    """Build and deliver every span recorded so far; False if the sink timed out."""
    pipeline = INSTRUMENTATION.pipeline
    if pipeline is None:
        return True
    return pipeline.flush(timeout)


_NAMEABLE = (
    "Lock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Barrier",
    "Queue",
    "PriorityQueue",
    "LifoQueue",
    "Future",
)


def name(primitive: T, label: str) -> T:
    """Give a primitive the name its spans and reports show; returns it, for chaining.

    ``lock = aiotrace.name(asyncio.Lock(), "db-pool")``. Without a name, a
    primitive is named after where it was created (``cache_lock (app.py:12)``).

    Raises:
        ConfigurationError: ``primitive`` is not an asyncio primitive or future.
    """
    import asyncio

    kind = next(
        (
            k
            for k in _NAMEABLE
            if hasattr(asyncio, k) and isinstance(primitive, getattr(asyncio, k))
        ),
        None,
    )
    if kind is None or not isinstance(label, str):
        raise ConfigurationError(
            f"aiotrace.name() takes an asyncio primitive or future and a str, "
            f"got {type(primitive).__name__} and {type(label).__name__}"
        )
    ref = ref_of(primitive, kind)
    ref.name = label
    ref.stats.label = label  # the report's totals for its site carry the name too
    return primitive


def ignore_lock_order(primitive: T) -> T:
    """Leave a lock's (or semaphore's) class out of lock-order checking; returns it.

    The class is every primitive created at the same line. Use it where two
    locks are taken in both orders on purpose, with something else
    preventing the deadlock.

    Raises:
        ConfigurationError: ``primitive`` is not an asyncio lock or semaphore.
    """
    import asyncio

    if not isinstance(primitive, (asyncio.Lock, asyncio.Semaphore)):
        raise ConfigurationError(
            f"aiotrace.ignore_lock_order() takes an asyncio Lock or Semaphore, "
            f"got {type(primitive).__name__}"
        )
    kind = "Lock" if isinstance(primitive, asyncio.Lock) else type(primitive).__name__
    ref_of(primitive, kind).stats.no_lock_order = True
    return primitive


@dataclass(frozen=True)
class Stats:
    """A snapshot of aiotrace's own accounting (see :func:`stats`)."""

    operations: int
    """Operations observed on instrumented primitives (fast and slow paths)."""
    below_threshold: int
    """Operations counted but not spanned: shorter than ``min_wait``/``min_hold``."""
    spans_built: int
    """Spans built from records."""
    spans_exported: int
    """Spans delivered: to the exporter (aiotrace's sinks) or to your TracerProvider."""
    spans_dropped: int
    """Spans that will never be delivered; see ``dropped_reasons``."""
    internal_errors: int
    """Errors inside aiotrace; each disabled the family it happened in."""
    buffered: int
    """Records waiting for the pipeline."""
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    pressure_timeouts: int = 0
    """Times the program stopped waiting for a pipeline that stayed behind (back-pressure
    gave way: memory was then bounded only by how fast the pipeline caught up)."""
    shipped: int = 0
    """Records (of operations, tasks and the SDK's own spans) sent to the collector
    process of ``aiotrace run`` or ``pytest --aiotrace``, which builds their spans
    (those over threshold), exports them and counts them in its report.
    ``spans_built`` and ``spans_exported`` count only the spans this process
    built itself."""
    lost: int = 0
    """Records that could not be sent: the collector was gone."""
    holders_unnamed: int = 0
    """Holds released by another task than the one that took them whose task was not
    looked for, so spanned without its name: looking would have taken more than
    aiotrace's share of the program's time (see docs/spans.md, *Parentage*)."""


def stats() -> Stats:
    """Operations recorded, spans built, exported, dropped, internal errors."""
    s = RECORDER.stats
    sites = list(RECORDER.sites)
    pipeline = INSTRUMENTATION.pipeline
    consumer = pipeline.consumer if pipeline is not None else None
    return Stats(
        operations=s.operations + sum(site.operations for site in sites),
        below_threshold=s.below_threshold + sum(site.below_threshold for site in sites),
        spans_built=s.spans_built,
        spans_exported=s.spans_exported,
        spans_dropped=s.spans_dropped,
        internal_errors=s.internal_errors,
        buffered=len(RECORDER.buffer),
        dropped_reasons=dict(s.dropped_reasons),
        pressure_timeouts=s.pressure_timeouts,
        shipped=getattr(consumer, "sent", 0),  # a Shipping's
        lost=getattr(consumer, "lost", 0),
        holders_unnamed=s.holders_unnamed,
    )
