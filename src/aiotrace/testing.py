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


@contextlib.contextmanager
def capture_spans(provider: TracerProvider | None = None, **options: Any) -> Iterator[Captured]:
    """Instrument for the block, sending spans to an in-memory exporter.

    Args:
        provider: an SDK provider to add the in-memory exporter to; a fresh one
            by default (nothing is exported anywhere else).
        **options: :class:`aiotrace.Options` fields, e.g. ``min_hold=0``.

    Raises:
        AiotraceError: aiotrace is already instrumented (nesting would mix spans).
    """
    if _api.is_instrumented():
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
