"""Where spans go: the user's TracerProvider (SDK path), or aiotrace's own exporters.

**SDK path** (:class:`TracerProviderSink`): used when the user passes a
``TracerProvider`` or has set a global one. Each draft becomes a real SDK span
through that provider, so the user's processors, samplers and exporters see
it. The span ids aiotrace chose on the hot path (needed so that a task's
children can name it as parent before it ends) are handed to the SDK through
its tracer's ``id_generator``: only this tracer is affected, and only for the
duration of one ``start_span`` call.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from aiotrace import semconv
from aiotrace._assemble import STATUS_ERROR, SpanDraft
from aiotrace._recorder import LOGGER, RECORDER
from aiotrace._version import __version__


class _PresetIds(IdGenerator):
    """Hands the SDK the ids aiotrace already chose; otherwise defers to the provider's."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback
        self.span_id: int | None = None
        self.trace_id: int | None = None

    def generate_span_id(self) -> int:
        value = self.span_id
        if value is None:
            return self._fallback.generate_span_id()
        self.span_id = None
        return value

    def generate_trace_id(self) -> int:
        value = self.trace_id
        if value is None:
            return self._fallback.generate_trace_id()
        self.trace_id = None
        return value

    def is_trace_id_random(self) -> bool:
        check = getattr(self._fallback, "is_trace_id_random", None)
        return bool(check()) if check is not None else True


def _span_context(trace_id: int, span_id: int, flags: int, remote: bool = False) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(flags))


class TracerProviderSink:
    """Builds SDK spans through a ``TracerProvider`` (the user's, or the global one).

    The provider's ``BatchSpanProcessor`` drops spans when its queue (2048 by
    default) is full, and aiotrace delivers in bursts. So after every
    ``pace`` spans the sink calls ``provider.force_flush()``: the processor
    exports what it holds, in this (pipeline) thread, before more arrive. A
    slow exporter then slows the pipeline, and through the buffer's
    back-pressure the program, instead of losing spans.
    """

    def __init__(self, provider: trace.TracerProvider | None = None, pace: int = 512) -> None:
        self._explicit = provider
        self._tracer: Any = None
        self._provider: Any = None
        self._ids: _PresetIds | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._warned_raise = False
        self._pace = pace
        self._since_flush = 0

    def _resolve(self) -> Any:
        provider = self._explicit or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return None  # nobody configured OpenTelemetry (yet)
        if provider is not self._provider:
            tracer = provider.get_tracer(semconv.SCOPE_NAME, __version__)
            ids = None
            if hasattr(tracer, "id_generator"):
                ids = _PresetIds(getattr(tracer, "id_generator", None) or RandomIdGenerator())
                tracer.id_generator = ids
            elif not self._warned:
                self._warned = True
                LOGGER.warning(
                    "aiotrace: %s is not the OpenTelemetry SDK's; span ids of tasks and links "
                    "to holds cannot be preserved",
                    type(provider).__name__,
                )
            self._provider, self._tracer, self._ids = provider, tracer, ids
        return self._tracer

    @property
    def provider(self) -> Any:
        """The provider spans currently go to (``None`` if none is configured)."""
        self._resolve()
        return self._provider

    def export(self, drafts: list[SpanDraft]) -> None:
        with self._lock:
            tracer = self._resolve()
            if tracer is None:
                RECORDER.stats.drop(len(drafts), "no TracerProvider configured")
                return
            for draft in drafts:
                try:
                    self._build(tracer, draft)
                except Exception as exc:  # the user's processor or exporter raised
                    RECORDER.stats.drop(1, "TracerProvider raised")
                    if not self._warned_raise:
                        self._warned_raise = True
                        LOGGER.warning("aiotrace: span sink failed: %s", exc, exc_info=exc)
                self._since_flush += 1
                if self._since_flush >= self._pace:
                    self._since_flush = 0
                    self.flush(30.0)

    def _build(self, tracer: Any, draft: SpanDraft) -> None:
        ids = self._ids
        if draft.parent_id:
            parent = trace.set_span_in_context(
                NonRecordingSpan(
                    _span_context(draft.trace_id, draft.parent_id, draft.flags, draft.parent_remote)
                ),
                Context(),
            )
        else:
            parent = Context()
            if ids is not None:
                ids.trace_id = draft.trace_id
        if ids is not None:
            ids.span_id = draft.span_id
        links = [Link(_span_context(t, s, f), attrs) for t, s, f, attrs in draft.links]
        try:
            span = tracer.start_span(
                draft.name,
                context=parent,
                kind=SpanKind.INTERNAL,
                attributes=draft.attributes,
                links=links,
                start_time=draft.start,
                record_exception=False,
                set_status_on_exception=False,
            )
        finally:
            if ids is not None:
                ids.span_id = ids.trace_id = None
        for name, timestamp, attrs in draft.events:
            span.add_event(name, attrs, timestamp)
        if draft.status == STATUS_ERROR:
            span.set_status(Status(StatusCode.ERROR, draft.status_description))
        span.end(end_time=draft.end)
        RECORDER.stats.spans_exported += 1

    def flush(self, timeout: float) -> bool:
        provider = self._provider
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is None:
            return True
        return bool(force_flush(int(timeout * 1000)))

    def shutdown(self) -> None:
        """The provider is the user's: flushed, never shut down."""
