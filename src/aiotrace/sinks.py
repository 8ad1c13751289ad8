"""Where spans go: the user's TracerProvider (SDK path), or aiotrace's own exporters.

**Own path** (:class:`OwnedSink`): used by ``aiotrace run`` and the pytest
plugin, which own the whole export: drafts go to the OTLP/JSON trace file,
to OTLP (the official exporters, from a thread of their own) and to the
report, without building SDK span objects on the way.

**SDK path** (:class:`TracerProviderSink`): used when the user passes a
``TracerProvider`` or has set a global one. Each draft becomes a real SDK span
through that provider, so the user's processors, samplers and exporters see
it. The span ids aiotrace chose on the hot path (needed so that a task's
children can name it as parent before it ends) are handed to the SDK through
its tracer's ``id_generator``: only this tracer is affected, and only for the
duration of one ``start_span`` call.

Most providers are the SDK's as configured by default: the default sampler,
the default limits, processors that act only when a span ends
(``BatchSpanProcessor``, ``SimpleSpanProcessor``). For those, ``start_span``
and ``end`` would do nothing with a draft but copy it and check it again,
at about 30 µs a span, so the sink builds the ``ReadableSpan`` they would
have built and hands it to the processors' ``on_end`` itself, in about 9
(:class:`_Handover`). Any
other provider, sampler, limit or processor, or a draft the SDK would
clean or trim, takes ``start_span``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import sys
import threading
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from aiotrace import _threads, semconv
from aiotrace._assemble import RANDOM_TRACE_ID, SAMPLED, STATUS_ERROR, SpanDraft
from aiotrace._recorder import LOGGER, RECORDER, log_failure
from aiotrace._version import __version__
from aiotrace.exceptions import EndpointError

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.sdk.resources import Resource


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


def _add_dropped(span: Any, dropped: tuple[int, int, int]) -> None:
    """Count on an SDK span what the task span it is built from did not keep.

    The SDK's exporters read the counts off the span's bounded containers;
    a provider that is not the SDK's has none, and its spans go without.
    """
    containers = (
        getattr(span, "_attributes", None),
        getattr(span, "_events", None),
        getattr(span, "_links", None),
    )
    for container, count in zip(containers, dropped, strict=True):
        if count and isinstance(getattr(container, "dropped", None), int):
            container.dropped += count  # type: ignore[union-attr]


_PLAIN: Final = frozenset({str, int, float, bool})
"""Attribute value types the SDK keeps exactly as given (see :func:`_kept_as_is`)."""


def _plain_tuple(value: Any) -> bool:
    if type(value) is not tuple or not value:
        return False
    first = type(value[0])
    return first in _PLAIN and all(type(item) is first for item in value)


def _kept_as_is(attributes: dict[str, Any], most: int | None) -> bool:
    """Whether the SDK would keep ``attributes`` unchanged: no more than ``most``, every
    key a non-empty string, every value plain or a tuple of one plain type.

    Users' own values (set on a task's span) can be anything; the SDK turns
    lists into tuples, other objects into strings, and drops empty keys.
    """
    if most is not None and len(attributes) > most:
        return False
    plain = _PLAIN
    for key, value in attributes.items():
        if type(key) is not str or (type(value) not in plain and not _plain_tuple(value)):
            return False
    return "" not in attributes


_UNSET: Final = Status(StatusCode.UNSET)


class _Handover:
    """Builds, for an SDK tracer set up as by default, the ``ReadableSpan`` that
    ``start_span`` and ``end`` would build from a draft, and hands it to the
    provider's processors, for under a third of the cost.

    It applies only where the result is provably the same (pinned by
    ``tests/test_otlp_paths.py`` field for field and byte for byte):

    * the tracer is the SDK's own, enabled, without the SDK's self-metrics;
    * its sampler is ``ALWAYS_ON`` or the default ``ParentBased(ALWAYS_ON)``,
      so every span of a sampled parent (all of aiotrace's) is sampled;
    * no attribute length limit, and the draft within the count limits;
    * every processor's ``on_start`` and ``_on_ending`` are the SDK's no-ops:
      nobody would see the span before it ends, or mutate it as it ends.

    A draft outside that (an unsampled remote parent, a user's list value,
    counts over the limits, dropped counts to carry) takes ``start_span``.
    """

    __slots__ = (
        "info",
        "limits",
        "parent",
        "parent_based",
        "parent_key",
        "processor",
        "resource",
        "roots",
        "scope",
    )

    def __init__(self, tracer: Any, parent_based: bool, roots: int) -> None:
        self.processor = tracer.span_processor
        self.resource = tracer.resource
        self.scope = getattr(tracer, "_instrumentation_scope", None)
        self.info = getattr(tracer, "instrumentation_info", None)
        limits = tracer._span_limits
        self.limits = (
            limits.max_span_attributes,
            limits.max_events,
            limits.max_event_attributes,
            limits.max_links,
            limits.max_link_attributes,
        )
        self.parent_based = parent_based
        self.roots = roots
        self.parent_key: tuple[int, int, int, bool] | None = None
        self.parent: SpanContext | None = None

    @classmethod
    def for_tracer(cls, tracer: Any, ids: _PresetIds | None) -> _Handover | None:
        """The hand-over for ``tracer``, or None where only ``start_span`` is right."""
        try:
            from opentelemetry.sdk import trace as sdk_trace
            from opentelemetry.sdk.trace import sampling
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

            if type(tracer) is not sdk_trace.Tracer or ids is None:
                return None
            enabled = getattr(tracer, "_is_enabled", None)
            if enabled is not None and not enabled():
                return None
            metrics = getattr(tracer, "_tracer_metrics", None)
            if metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics":
                return None
            if tracer.sampler is sampling.ALWAYS_ON:
                parent_based = False
            elif tracer.sampler is sampling.DEFAULT_ON:
                parent_based = True
            else:
                return None
            limits = tracer._span_limits
            if (
                getattr(limits, "max_attribute_length", None) is not None
                or getattr(limits, "max_span_attribute_length", None) is not None
            ):
                return None
            active = tracer.span_processor
            if type(active) not in (
                sdk_trace.SynchronousMultiSpanProcessor,
                sdk_trace.ConcurrentMultiSpanProcessor,
            ):
                return None
            quiet = [sdk_trace.SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor]
            for hook in ("on_start", "_on_ending"):
                if not hasattr(sdk_trace.SpanProcessor, hook):
                    continue  # _on_ending: older SDKs (1.27, say) have no such hook
                allowed = {vars(c)[hook] for c in quiet if hook in vars(c)}
                for processor in active._span_processors:
                    if getattr(type(processor), hook, None) not in allowed:
                        return None
            roots = SAMPLED | (RANDOM_TRACE_ID if ids.is_trace_id_random() else 0)
            return cls(tracer, parent_based, roots)
        except Exception:  # an SDK laid out otherwise: start_span is always right
            return None

    def hand(self, draft: SpanDraft) -> bool:
        """Hand ``draft`` over as a finished span; False where ``start_span`` must build it."""
        if draft.dropped:
            return False
        most_attrs, most_events, most_event_attrs, most_links, most_link_attrs = self.limits
        if not _kept_as_is(draft.attributes, most_attrs):
            return False
        events = draft.events
        if events:
            if most_events is not None and len(events) > most_events:
                return False
            for _, _, attrs in events:
                if not _kept_as_is(attrs, most_event_attrs):
                    return False
        links = draft.links
        if links:
            if most_links is not None and len(links) > most_links:
                return False
            for trace_id, span_id, _, attrs in links:
                if not (trace_id and span_id) or not _kept_as_is(attrs, most_link_attrs):
                    return False
        if draft.parent_id:
            if self.parent_based and not draft.flags & SAMPLED:
                return False
            flags = SAMPLED | (draft.flags & RANDOM_TRACE_ID)
            # Siblings follow each other: their parent's context is made once.
            key = (draft.trace_id, draft.parent_id, draft.flags, draft.parent_remote)
            if key == self.parent_key:
                parent: SpanContext | None = self.parent
            else:
                parent = self.parent = _span_context(*key)
                self.parent_key = key
        else:
            flags = self.roots
            parent = None
        self.processor.on_end(
            ReadableSpan(
                name=draft.name,
                context=_span_context(draft.trace_id, draft.span_id, flags),
                parent=parent,
                resource=self.resource,
                attributes=draft.attributes,
                events=[
                    SdkEvent(name, MappingProxyType(attrs), timestamp)
                    for name, timestamp, attrs in events
                ]
                if events
                else (),
                links=[
                    Link(_span_context(t, s, f), MappingProxyType(attrs))
                    for t, s, f, attrs in links
                ]
                if links
                else (),
                kind=SpanKind.INTERNAL,
                status=Status(StatusCode.ERROR, draft.status_description)
                if draft.status == STATUS_ERROR
                else _UNSET,
                start_time=draft.start,
                end_time=draft.end,
                instrumentation_info=self.info,
                instrumentation_scope=self.scope,
            )
        )
        return True


class TracerProviderSink:
    """Builds SDK spans through a ``TracerProvider`` (the user's, or the global one).

    The provider's ``BatchSpanProcessor`` drops spans when its queue (2048 by
    default) is full, and aiotrace delivers in bursts. So after every
    ``pace`` spans the sink calls ``provider.force_flush()``: the processor
    exports what it holds, in this (pipeline) thread, before more arrive. A
    slow exporter then slows the pipeline, and through the buffer's
    back-pressure the program, instead of losing spans.
    """

    def __init__(
        self, provider: trace.TracerProvider | None = None, pace: int = 512, handover: bool = True
    ) -> None:
        self._explicit = provider
        self._handover = handover
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
            # Looked at per batch: processors can be added to a provider at any time.
            handover = _Handover.for_tracer(tracer, self._ids) if self._handover else None
            for draft in drafts:
                try:
                    if handover is not None and handover.hand(draft):
                        RECORDER.stats.spans_exported += 1
                    else:
                        self._build(tracer, draft)
                except Exception as exc:  # the user's processor or exporter raised
                    RECORDER.stats.drop(1, "TracerProvider raised")
                    if not self._warned_raise:
                        self._warned_raise = True
                        log_failure(LOGGER.warning, "aiotrace: span sink failed: %s", exc, exc=exc)
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
        if draft.dropped:
            _add_dropped(span, draft.dropped)
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


# ===========================================================================
# aiotrace's own exporters: the trace file, OTLP, the report
# ===========================================================================

OTLP_PROTOCOLS: Final = ("grpc", "http/protobuf")
"""The OTLP transports aiotrace exports over."""


def otlp_exporter(endpoint: str | None, protocol: str, timeout: float | None = None) -> Any:
    """The official OTLP span exporter for ``protocol``; ``endpoint`` None means OTEL_* vars.

    Headers, TLS, compression and timeouts come from the standard
    ``OTEL_EXPORTER_OTLP_*`` variables, as the exporters read them.

    Raises:
        EndpointError: an unknown protocol.
    """
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = None
        if endpoint is not None:
            insecure = urlsplit(endpoint).scheme != "https"
        return GrpcExporter(endpoint=endpoint, insecure=insecure, timeout=timeout)
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        if endpoint is not None and not urlsplit(endpoint).path.rstrip("/").endswith("v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        return HttpExporter(endpoint=endpoint, timeout=timeout)
    raise EndpointError(f"unknown OTLP protocol {protocol!r}; valid: {', '.join(OTLP_PROTOCOLS)}")


def check_endpoint(endpoint: str) -> str:
    """Validate an OTLP endpoint URL; returns it.

    Raises:
        EndpointError: not an http(s) URL with a host.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(
            f"invalid OTLP endpoint {endpoint!r}: expected http://host:port or https://host:port"
        )
    try:
        parts.port  # noqa: B018  # raises ValueError for a bad port
    except ValueError:
        raise EndpointError(f"invalid OTLP endpoint {endpoint!r}: bad port") from None
    return endpoint


def reachable(endpoint: str, timeout: float = 1.0) -> str | None:
    """``None`` if something accepts TCP connections at ``endpoint``, else why not."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


class _Capture(logging.Handler):
    """Keeps the exporters' complaints, instead of letting them print tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 5:
            self.messages.append(record.getMessage().splitlines()[0])


def bulk_sender(exporter: Any) -> Callable[[bytes, int], bool] | None:
    """Send ready-made ``ExportTraceServiceRequest`` bytes through an SDK OTLP exporter.

    The exporter keeps doing what it does well (endpoint, headers, TLS,
    compression, timeouts and retries, all from the ``OTEL_*`` variables);
    only the encoding is ours. Its hooks for that are not public API, so
    they are looked for, and ``None`` (use the SDK encoding) is returned
    when an exporter version lacks them.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    client = getattr(exporter, "_client", None)
    if type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.http"):
        if client is not None and callable(getattr(client, "export", None)):

            def send_http(payload: bytes, count: int) -> bool:
                return bool(getattr(client.export(payload), "success", False))

            return send_http
        export = getattr(exporter, "_export", None)
        if callable(export):  # SDK releases before the transport rework

            def send_http_old(payload: bytes, count: int) -> bool:
                return bool(getattr(export(payload), "ok", False))

            return send_http_old
        return None
    if type(exporter).__module__.startswith("opentelemetry.exporter.otlp.proto.grpc"):
        if not callable(getattr(exporter, "_export", None)) or not hasattr(
            exporter, "_translate_data"
        ):
            return None
        # The mixin's _export() does retries and backoff around _translate_data():
        # hand it a request already made.
        exporter._translate_data = lambda data: data
        exporter._count_data = lambda data: sum(
            len(scope.spans) for rs in data.resource_spans for scope in rs.scope_spans
        )

        def send_grpc(payload: bytes, count: int) -> bool:
            result = exporter._export(ExportTraceServiceRequest.FromString(payload))
            return getattr(result, "name", "") == "SUCCESS"

        return send_grpc
    return None


class OtlpForwarder:
    """Exports drafts over OTLP from a thread of its own; stops at the first failure.

    A failed export is reported once, in :attr:`error`; everything after it is
    counted as not exported (it is still in the trace file, for ``aiotrace
    send``). Nothing here ever raises into the pipeline.
    """

    BATCH: Final = 512
    QUEUED: Final = 32

    def __init__(self, exporter: Any, resource: Resource, stats: Any, endpoint: str) -> None:
        self._exporter = exporter
        self._send = bulk_sender(exporter)
        self.path = "bulk" if self._send is not None else "sdk"
        """How spans are encoded: ``bulk`` (straight to protobuf) or ``sdk`` (ReadableSpans)."""
        self._resource = resource
        self._stats = stats
        self.endpoint = endpoint
        self.error: str | None = None
        self.exported = 0
        self.failed = 0
        # Bounded in spans (QUEUED batches of at most BATCH): when export lags,
        # building waits for it instead of piling up drafts (about 600 bytes
        # each) in memory.
        self._queue: queue.Queue[tuple[Resource, list[SpanDraft]] | None] = queue.Queue(
            maxsize=self.QUEUED
        )
        self._thread = _threads.thread(self._run, "aiotrace-otlp")
        self._thread.start()

    def submit(self, drafts: list[SpanDraft], resource: Resource | None = None) -> None:
        """Queue a batch of one process (blocks when far behind: back-pressure, not loss).

        ``resource``: that process's, the forwarder's own if None.
        """
        if self.error is not None:
            self.failed += len(drafts)
            return
        resource = resource if resource is not None else self._resource
        for start in range(0, len(drafts), self.BATCH):
            self._queue.put((resource, drafts[start : start + self.BATCH]))

    def _run(self) -> None:
        from aiotrace._otlp import AIOTRACE_SCOPE, draft_to_readable
        from aiotrace._otlp_bulk import BulkEncoder

        # One encoder per process's resource, which it encodes once.
        encoders: dict[int, tuple[Resource, BulkEncoder]] = {}

        capture = _Capture()
        loggers = [
            logging.getLogger(name) for name in ("opentelemetry.exporter", "opentelemetry.sdk")
        ]
        for logger in loggers:
            logger.addHandler(capture)
            logger.propagate = False
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                resource, batch = item
                if self.error is not None:
                    self.failed += len(batch)
                    continue
                for start in range(0, len(batch), self.BATCH):
                    chunk = batch[start : start + self.BATCH]
                    try:
                        if self._send is not None:
                            known = encoders.get(id(resource))
                            if known is None:
                                encoder = BulkEncoder(dict(resource.attributes))
                                encoders[id(resource)] = (resource, encoder)
                            else:
                                encoder = known[1]
                            ok = self._send(encoder.request(chunk, AIOTRACE_SCOPE), len(chunk))
                        else:
                            spans = [draft_to_readable(d, resource) for d in chunk]
                            result = self._exporter.export(spans)
                            ok = getattr(result, "name", "") == "SUCCESS"
                    except Exception as exc:  # an exporter must not break the run
                        capture.messages.append(f"{type(exc).__name__}: {exc}")
                        ok = False
                    if ok:
                        self.exported += len(chunk)
                    else:
                        self.error = (
                            capture.messages[-1] if capture.messages else "the exporter failed"
                        )
                        self.failed += len(batch) - start
                        break
        finally:
            for logger in loggers:
                logger.removeHandler(capture)
                logger.propagate = True

    def close(self, timeout: float) -> None:
        """Export what is queued (within ``timeout``) and stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.error = self.error or f"export did not finish within {timeout:.0f} s"
        with contextlib.suppress(Exception):
            self._exporter.shutdown()


class ConsoleSink:
    """Spans printed as JSON on stderr, as ``OTEL_TRACES_EXPORTER=console`` asks.

    Uses the SDK's own ``ConsoleSpanExporter``, so the output is what any
    other OpenTelemetry program prints for that setting.
    """

    def __init__(self, resource: Resource, out: Any = None) -> None:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        self._resource = resource
        self._exporter = ConsoleSpanExporter(out=out if out is not None else sys.stderr)

    def export(self, drafts: list[SpanDraft], resource: Resource | None = None) -> None:
        from aiotrace._otlp import draft_to_readable

        resource = resource if resource is not None else self._resource
        with contextlib.suppress(Exception):  # a closed stderr must not break the run
            self._exporter.export([draft_to_readable(d, resource) for d in drafts])


class OwnedSink:
    """aiotrace's own destination: the trace file, OTLP, and the report, fed in one pass."""

    def __init__(
        self,
        resource: Resource,
        trace_file: str | None = None,
        otlp: OtlpForwarder | None = None,
        stats: Any = None,
    ) -> None:
        from aiotrace._otlp import TraceFileWriter
        from aiotrace.report import ReportBuilder

        self.resource = resource
        self.stats = stats if stats is not None else RECORDER.stats
        self.writer = TraceFileWriter(trace_file, dict(resource.attributes)) if trace_file else None
        self.otlp = otlp
        self.report = ReportBuilder()
        self.extra: list[Any] = []
        """More sinks (the console, the HTML timeline): ``export(drafts, resource)``."""

    def export(self, drafts: list[SpanDraft], resource: Resource | None = None) -> None:
        """A batch of one process's spans; ``resource`` is that process's (ours if None)."""
        resource = resource if resource is not None else self.resource
        pid = resource.attributes.get(semconv.ATTR_PID)
        self.report.add(drafts, int(pid) if isinstance(pid, int) else None)
        if self.writer is not None:
            self.writer.write(drafts, resource.attributes)
        if self.otlp is not None:
            self.otlp.submit(drafts, resource)
        for sink in self.extra:
            sink.export(drafts, resource)

    def flush(self, timeout: float) -> bool:
        if self.writer is not None:
            self.writer.flush()
        return True

    def shutdown(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def close(self, timeout: float = 30.0) -> None:
        """Finish everything: the file closed, OTLP flushed, every extra sink shut down."""
        self.shutdown()
        for sink in self.extra:
            try:
                sink.shutdown()
            except Exception as exc:  # one sink failing must not lose the others
                LOGGER.warning("aiotrace: %s failed: %s", type(sink).__name__, exc)
        if self.otlp is not None:
            self.otlp.close(timeout)
