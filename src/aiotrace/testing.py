"""Helpers for testing concurrency with aiotrace: capture the spans a block produced.

::

    from aiotrace.testing import capture_spans

    with capture_spans(min_hold=0) as captured:
        asyncio.run(main())
    holds = captured.named("asyncio.Lock.hold")
    assert max(s.duration for s in holds) < 0.050
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aiotrace import _api, semconv
from aiotrace.exceptions import AiotraceError

_TASK_AND_FUTURE = frozenset({semconv.SPAN_TASK, semconv.SPAN_FUTURE, semconv.SPAN_FUTURE_WAIT})

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence


@dataclass
class CapturedSpan:
    """A finished span with the fields tests ask about, in seconds."""

    span: ReadableSpan

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.span.attributes or {})

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return ((self.span.end_time or 0) - (self.span.start_time or 0)) / 1e9

    @property
    def span_id(self) -> int:
        return self.span.context.span_id if self.span.context else 0

    @property
    def parent_id(self) -> int | None:
        return self.span.parent.span_id if self.span.parent else None

    @property
    def links(self) -> list[tuple[int, dict[str, Any]]]:
        """``(linked span id, link attributes)`` pairs."""
        return [(link.context.span_id, dict(link.attributes or {})) for link in self.span.links]

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, attributes)`` of this span's events, in order."""
        return [(e.name, dict(e.attributes or {})) for e in self.span.events]

    def __getitem__(self, key: str) -> Any:
        return self.attributes[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)

    def __repr__(self) -> str:
        return f"<{self.name} {self.duration * 1000:.1f}ms {self.attributes}>"


class Captured:
    """The spans produced inside :func:`capture_spans`, in end order."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    @property
    def spans(self) -> list[CapturedSpan]:
        """Every finished span so far (flushes aiotrace's pipeline first)."""
        _api.flush()
        return [CapturedSpan(s) for s in self._exporter.get_finished_spans()]

    @property
    def primitive_spans(self) -> list[CapturedSpan]:
        """Spans of locks, semaphores, events, conditions, barriers and queues only."""
        return [s for s in self.spans if s.name not in _TASK_AND_FUTURE]

    @property
    def task_spans(self) -> list[CapturedSpan]:
        """The ``asyncio.Task`` spans."""
        return self.named(semconv.SPAN_TASK)

    def named(self, *names: str) -> list[CapturedSpan]:
        """Spans with one of ``names``."""
        return [s for s in self.spans if s.name in names]

    def events(self, name: str) -> list[tuple[CapturedSpan, dict[str, Any]]]:
        """Every span event called ``name`` (a ``set()``, a ``notify()``), with its span."""
        return [(s, attrs) for s in self.spans for event, attrs in s.events if event == name]

    def by_id(self) -> dict[int, CapturedSpan]:
        """Spans keyed by span id."""
        return {s.span_id: s for s in self.spans}

    def where(self, **attributes: Any) -> list[CapturedSpan]:
        """Spans whose attributes include these (``aiotrace.`` keys with dots as ``__``)."""
        wanted = {k.replace("__", "."): v for k, v in attributes.items()}
        return [s for s in self.spans if all(s.get(k) == v for k, v in wanted.items())]

    def clear(self) -> None:
        """Forget the spans captured so far."""
        _api.flush()
        self._exporter.clear()

    def primitives(self) -> dict[str, PrimitiveStats]:
        """Statistics per primitive (by name), from the wait and hold spans captured."""
        by_name: dict[str, list[CapturedSpan]] = {}
        for span in self.primitive_spans:
            name = span.get(semconv.ATTR_PRIMITIVE_NAME)
            if name is not None:
                by_name.setdefault(str(name), []).append(span)
        return {name: PrimitiveStats.of(name, spans) for name, spans in by_name.items()}

    def primitive(self, name: str) -> PrimitiveStats:
        """Statistics of one primitive, by its name (``aiotrace.name()``, or ``var (file:line)``).

        Raises:
            KeyError: no span of that primitive; the message lists the names seen.
        """
        stats = self.primitives()
        if name not in stats:
            raise KeyError(f"no spans of primitive {name!r}; seen: {sorted(stats) or 'none'}")
        return stats[name]


@dataclass(frozen=True)
class PrimitiveStats:
    """What one primitive did, from its spans; durations in seconds.

    Complete when every wait and hold was spanned (``min_wait=0``,
    ``min_hold=0``, as the ``aiotrace_spans`` pytest fixture traces).
    """

    name: str
    kind: str
    waits: int
    """Waits that blocked (acquire on a held lock, wait on an unset event...)."""
    holds: int
    """Holds (a lock held, a semaphore permit taken)."""
    total_wait: float
    max_wait: float
    max_hold: float
    max_concurrent_holds: int
    """The most holds at the same time: at most the capacity of a semaphore."""
    max_waiting: int
    """The most waits in progress at the same time."""

    @classmethod
    def of(cls, name: str, spans: Sequence[CapturedSpan]) -> PrimitiveStats:
        """Statistics from one primitive's spans."""
        waits = [
            s for s in spans if s.name.endswith((".acquire", ".wait", ".get", ".put", ".join"))
        ]
        holds = [s for s in spans if s.name.endswith(".hold")]
        return cls(
            name=name,
            kind=str(spans[0].get(semconv.ATTR_PRIMITIVE_KIND, "?")) if spans else "?",
            waits=len(waits),
            holds=len(holds),
            total_wait=sum(s.duration for s in waits),
            max_wait=max((s.duration for s in waits), default=0.0),
            max_hold=max((s.duration for s in holds), default=0.0),
            max_concurrent_holds=_max_overlap(holds),
            max_waiting=_max_overlap(waits),
        )


def _max_overlap(spans: Sequence[CapturedSpan]) -> int:
    """The most of ``spans`` in progress at one instant (an end before a start at a tie)."""
    edges = sorted(
        [(s.span.start_time or 0, 1) for s in spans] + [(s.span.end_time or 0, -1) for s in spans]
    )
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


class SpanLog(Captured):
    """Spans built from raw records tapped off a pipeline (the pytest fixture's store).

    Records are kept raw, as cheap as a list append, and built into spans
    (with an encoder and assembler of its own) only when asked for.
    """

    def __init__(self) -> None:
        from opentelemetry.sdk.resources import Resource

        from aiotrace._assemble import Assembler
        from aiotrace._recorder import RECORDER, Stats
        from aiotrace._wire import Encoder

        self._raw: list[tuple[Any, ...]] = []
        self._encoder = Encoder(RECORDER)
        self._assembler = Assembler(Stats())
        self._resource = Resource.get_empty()
        self._built: list[CapturedSpan] = []

    def tap(self, records: list[tuple[Any, ...]]) -> None:
        """A pipeline tap: keep a batch of raw records."""
        self._raw.extend(records)

    @property
    def spans(self) -> list[CapturedSpan]:
        """Every finished span so far (flushes aiotrace's pipeline first)."""
        from aiotrace._otlp import draft_to_readable

        _api.flush()
        raw, self._raw = self._raw, []
        if raw:
            drafts = self._assembler.process(self._encoder.encode(raw))
            self._built.extend(CapturedSpan(draft_to_readable(d, self._resource)) for d in drafts)
        return list(self._built)

    def clear(self) -> None:
        """Forget the spans captured so far."""
        _api.flush()
        self._raw.clear()
        self._built.clear()


@contextlib.contextmanager
def capture_spans(provider: TracerProvider | None = None, **options: Any) -> Iterator[Captured]:
    """Instrument for the block, sending spans to an in-memory exporter.

    Args:
        provider: an SDK provider to add the in-memory exporter to; a fresh one
            by default (nothing is exported anywhere else).
        **options: :class:`aiotrace.Options` fields, e.g. ``min_hold=0``.

    Under ``pytest --aiotrace`` or ``aiotrace run`` this nests: the block is
    traced with these options into this capture only, then the session's
    tracing resumes.

    Raises:
        AiotraceError: aiotrace is already instrumented by your own
            ``instrument()`` call (nesting would mix spans).
    """
    from aiotrace._instrumentation import INSTRUMENTATION

    if _api.is_instrumented() and not INSTRUMENTATION.nestable:
        raise AiotraceError("capture_spans() needs aiotrace not to be instrumented already")
    exporter = InMemorySpanExporter()
    provider = provider or TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _api.instrument(provider, **options)
    try:
        yield Captured(exporter)
    finally:
        _api.uninstrument()


def span_names(spans: Sequence[CapturedSpan]) -> list[str]:
    """Names of ``spans`` in order: handy for exact-sequence assertions."""
    return [s.name for s in spans]
