"""The span content is the same on every path: bulk protobuf, SDK spans, the trace file.

aiotrace builds spans three ways: as SDK spans in the traced process (a
``TracerProvider`` of the user's: through its tracer's ``start_span``, or
handed to its processors ready-made where that gives the same span), as
OTLP protobuf bytes written directly from drafts (the collector's export),
and as OTLP JSON (the trace file). These tests pin them to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult

import aiotrace
from aiotrace import _sites, semconv
from aiotrace._assemble import SpanDraft
from aiotrace._otlp import AIOTRACE_SCOPE, draft_to_readable, read_trace_file
from aiotrace._otlp_bulk import BulkEncoder
from aiotrace._recorder import R_SPAN, RECORDER
from aiotrace._sites import raw_site
from aiotrace._wire import Encoder
from aiotrace.primitives._base import PrimRef, SiteStats
from aiotrace.sinks import TracerProviderSink, _Handover
from aiotrace.testing import capture_spans
from tests.cli_support import EXAMPLES, clean_env


def _draft(name: str, span_id: int, **fields: Any) -> SpanDraft:
    draft = SpanDraft(name, 0x0AF7651916CD43DD8448EB211C80319C, span_id, 1_000, 2_500)
    for key, value in fields.items():
        setattr(draft, key, value)
    return draft


def _variety() -> list[SpanDraft]:
    """Drafts with every feature a span can have."""
    return [
        _draft("aiotrace.run", 1, attributes={"process.command_args": ("app.py", "-v")}),
        _draft(
            semconv.SPAN_LOCK_ACQUIRE,
            2,
            parent_id=1,
            attributes={
                semconv.ATTR_PRIMITIVE_NAME: "cache_lock (app.py:3)",
                semconv.ATTR_WAITERS_AHEAD: 0,
                "negative": -5,
                "ratio": 0.25,
                "flag": True,
                "unicode": "ünïcødé ✓",
                "ints": (1, 2, 3),
                "empty": "",
            },
            links=[(0x0AF7651916CD43DD8448EB211C80319C, 3, 1, {semconv.ATTR_LINK_KIND: "handoff"})],
        ),
        _draft(
            semconv.SPAN_TASK,
            3,
            parent_id=0xB7AD6B7169203331,
            parent_remote=True,
            status=2,
            status_description="ValueError: boom",
            events=[
                ("exception", 2_400, {"exception.type": "ValueError", "exception.message": "boom"}),
                ("marker", 2_450, {}),
            ],
            dropped=(1, 7, 2),  # over a task span's limits (a long-lived task's events)
        ),
        _draft("GET /users", 4, parent_id=3, kind=2, scope=("app.http", "1.2")),
        _draft("user.span", 5, parent_id=3, scope=("app", None)),
    ]


def test_bulk_bytes_parse_into_exactly_what_the_sdk_encoder_makes() -> None:
    resource = {"service.name": "svc", "deployment.environment": "ci", "tags": ("a", "b")}
    drafts = _variety()
    ours = ExportTraceServiceRequest.FromString(
        BulkEncoder(resource).request(drafts, AIOTRACE_SCOPE)
    )
    theirs = encode_spans([draft_to_readable(d, Resource(resource)) for d in drafts])
    assert _by_scope(ours) == _by_scope(theirs)
    assert ours.resource_spans[0].resource == theirs.resource_spans[0].resource


def _by_scope(request: ExportTraceServiceRequest) -> dict[tuple[str, str], list[Any]]:
    """Spans per scope: the SDK and we may order the scopes differently."""
    out: dict[tuple[str, str], list[Any]] = {}
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            key = (scope_spans.scope.name, scope_spans.scope.version)
            out.setdefault(key, []).extend(scope_spans.spans)
    return out


def test_the_encoder_reuses_repeated_attributes_without_mixing_them_up() -> None:
    """The same key=value on a span and on an event is encoded under each one's own tag."""
    drafts = [
        _draft(
            "s",
            7,
            attributes={"k": "v"},
            events=[("e", 1_200, {"k": "v"})],
            links=[(1, 2, 1, {"k": "v"})],
        )
    ]
    encoder = BulkEncoder({})
    for _ in range(3):  # the second and third requests come from the cache
        request = ExportTraceServiceRequest.FromString(encoder.request(drafts, AIOTRACE_SCOPE))
        (span,) = request.resource_spans[0].scope_spans[0].spans
        assert [kv.key for kv in span.attributes] == ["k"]
        assert [kv.key for kv in span.events[0].attributes] == ["k"]
        assert [kv.key for kv in span.links[0].attributes] == ["k"]


def _wire_attrs(encoder: Encoder, attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes ``encoder`` gives a lock-wait record carrying ``attrs``."""
    record = (R_SPAN, semconv.SPAN_LOCK_ACQUIRE, 1, 2, 0, None, "t", None, None, "ok", attrs, ())
    (wire,) = encoder.encode([record])
    return wire[10]  # type: ignore[no-any-return]


def test_attributes_many_records_share_are_converted_once_and_stay_right() -> None:
    """An event's woken waiters share the setter's line: resolved once, still exact.

    A primitive named in attributes is converted afresh each time: it may
    have been renamed (``aiotrace.name``) since.
    """
    here = sys._getframe()
    site = raw_site(here.f_code, here.f_lasti)
    label = f"test_otlp_paths.py:{here.f_lineno - 1}"
    shared = {semconv.ATTR_WAKER_TASK: "setter", semconv.ATTR_WAKER_SITE: site}
    encoder = Encoder(RECORDER)
    first = _wire_attrs(encoder, shared)
    assert first == {semconv.ATTR_WAKER_TASK: "setter", semconv.ATTR_WAKER_SITE: label}
    assert _wire_attrs(encoder, shared) is first  # converted once
    other = {semconv.ATTR_WAKER_TASK: "another", semconv.ATTR_WAKER_SITE: site}
    assert _wire_attrs(encoder, other) == {
        semconv.ATTR_WAKER_TASK: "another",
        semconv.ATTR_WAKER_SITE: label,
    }
    assert _wire_attrs(encoder, shared) is first
    assert _wire_attrs(encoder, {"n": 1}) == {"n": 1}  # nothing to convert

    ref = PrimRef(semconv.KIND_LOCK, site, SiteStats(semconv.KIND_LOCK, None, False))
    ref.name = "before"
    naming = {"aiotrace.test.lock": ref}
    assert _wire_attrs(encoder, naming) == {"aiotrace.test.lock": "before"}
    ref.name = "after"
    assert _wire_attrs(encoder, naming) == {"aiotrace.test.lock": "after"}


def test_the_trace_file_round_trips_every_field(tmp_path: Path) -> None:
    from aiotrace._otlp import TraceFileWriter

    drafts = _variety()
    writer = TraceFileWriter(str(tmp_path / "t.json"), {"service.name": "svc"})
    writer.write(drafts)
    writer.close()
    back = read_trace_file(str(tmp_path / "t.json")).drafts
    resource = Resource({"service.name": "svc"})
    assert _by_scope(encode_spans([draft_to_readable(d, resource) for d in back])) == _by_scope(
        encode_spans([draft_to_readable(d, resource) for d in drafts])
    )


VOLATILE = frozenset(
    {
        semconv.ATTR_PID,
        semconv.ATTR_FUTURE_TIME_TO_RESOLVE,
        semconv.ATTR_ARGV,
        semconv.ATTR_CODE_FILE_PATH,  # run through a copied path below: compare basenames
    }
)


def _shape(spans: list[tuple[str, int, int, dict[str, Any], list[int]]]) -> list[Any]:
    """Spans without ids or times: name, parent's name, attributes, linked spans' names."""
    names = {span_id: name for name, span_id, _, _, _ in spans}

    # Primitive ids and asyncio's default task names ("Task-7") count from process start,
    # so they depend on what ran before in this process. Both grow in creation order:
    # replace each by its rank, which is the same in both runs.
    def counter(key: str, value: Any) -> tuple[str, int] | None:
        if key == semconv.ATTR_PRIMITIVE_ID:
            return ("primitive", int(value))
        match = re.fullmatch(r"Task-(\d+)", value) if isinstance(value, str) else None
        return ("task", int(match.group(1))) if match else None

    seen = {counter(k, v) for _, _, _, attributes, _ in spans for k, v in attributes.items()}
    rank = {c: f"{c[0]}#{i}" for i, c in enumerate(sorted(c for c in seen if c is not None))}

    def stable(key: str, value: Any) -> Any:
        c = counter(key, value)
        return value if c is None else rank[c]

    shape = []
    for name, _, parent, attributes, links in spans:
        attrs = {k: stable(k, v) for k, v in attributes.items() if k not in VOLATILE}
        if semconv.ATTR_CODE_FILE_PATH in attributes:
            attrs["file"] = Path(str(attributes[semconv.ATTR_CODE_FILE_PATH])).name
        if name == semconv.SPAN_TASK and parent not in names:
            # The main task: asyncio.run() was called from this test in one case,
            # from the example's last line in the other.
            attrs = {k: v for k, v in attrs.items() if not k.startswith("code.") and k != "file"}
        shape.append(
            (
                name,
                names.get(parent) or "",
                json.dumps(attrs, sort_keys=True, default=list),
                sorted(names.get(link, "?") for link in links),
            )
        )
    return sorted(shape)


def test_sdk_spans_in_process_and_the_collectors_spans_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/locks.py traced into a user's TracerProvider, and under `aiotrace run`."""
    # On 3.10, qualified names are looked up within a time budget per process:
    # this one gets a fresh process's, as `aiotrace run` does.
    monkeypatch.setattr(_sites, "_QUALNAME_BUDGET", [0.25, 0.0])
    source = EXAMPLES / "locks.py"
    namespace: dict[str, Any] = {"__name__": "locks_example"}
    exec(compile(source.read_text(), str(source), "exec"), namespace)
    with capture_spans() as captured:
        asyncio.run(namespace["main"]())
        in_process = [
            (s.name, s.span_id, s.parent_id or 0, s.attributes, [link for link, _ in s.links])
            for s in captured.spans
        ]
    subprocess.run(
        [sys.executable, "-m", "aiotrace", "run", "-q", "--trace-file=t.json", str(source)],
        cwd=tmp_path,
        env=clean_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    collected = [
        (d.name, d.span_id, d.parent_id, d.attributes, [link[1] for link in d.links])
        for d in read_trace_file(str(tmp_path / "t.json")).drafts
        if d.name != semconv.SPAN_RUN  # the run's own root: only `aiotrace run` has one
    ]
    assert _shape(in_process) == _shape(collected)


# ---------------------------------------------------------------------------
# A user's TracerProvider: spans handed to its processors ready-made
# ---------------------------------------------------------------------------

_RESOURCE = Resource({"service.name": "handover"})


class _Keep:
    """A sink that keeps every draft, to feed the same drafts to two sinks."""

    def __init__(self) -> None:
        self.drafts: list[SpanDraft] = []

    def export(self, drafts: list[SpanDraft]) -> None:
        self.drafts.extend(drafts)

    def flush(self, timeout: float) -> bool:
        return True

    def shutdown(self) -> None:
        pass


async def _everything() -> None:
    """Tasks, a failing one, a lock handed over, an event, a future, user values."""
    lock, event = asyncio.Lock(), asyncio.Event()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def holder(n: int) -> None:
        async with lock:
            await asyncio.sleep(0.01)
        if n == 1:
            from opentelemetry import trace

            span = trace.get_current_span()
            span.set_attribute("user.tags", ["a", "b"])  # a list: the SDK makes it a tuple
            span.set_attribute("user.count", 3)
            span.add_event("user.event", {"k": "v"})

    async def fail() -> None:
        await event.wait()
        fut.set_result(7)
        raise ValueError("boom")

    failing = asyncio.create_task(fail())
    await asyncio.gather(*(holder(n) for n in range(3)))
    event.set()
    assert await fut == 7
    with contextlib.suppress(ValueError):
        await failing


def _program_drafts() -> list[SpanDraft]:
    keep = _Keep()
    aiotrace.instrument(sink=keep, min_wait=0, min_hold=0)
    try:
        asyncio.run(_everything())
    finally:
        aiotrace.uninstrument()
    return keep.drafts


def _through(
    drafts: list[SpanDraft], handover: bool, processor: SpanProcessor | None = None, **kw: Any
) -> list[ReadableSpan]:
    """What a user's provider exports of ``drafts``, built by ``start_span`` or handed over."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=_RESOURCE, **kw)
    if processor is not None:
        provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    TracerProviderSink(provider, handover=handover).export(drafts)
    return list(exporter.get_finished_spans())


def _content(span: ReadableSpan) -> tuple[Any, ...]:
    """Everything a processor or exporter can read off a span, values with their types."""

    def typed(attrs: Any) -> list[tuple[str, type, Any]]:
        return [(k, type(v), v) for k, v in (attrs or {}).items()]

    return (
        span.name,
        span.context,
        span.context.trace_flags,
        span.parent,
        span.kind,
        typed(span.attributes),
        [(e.name, e.timestamp, typed(e.attributes), e.dropped_attributes) for e in span.events],
        [(link.context, typed(link.attributes), link.dropped_attributes) for link in span.links],
        span.status.status_code,
        span.status.description,
        span.start_time,
        span.end_time,
        span.resource,
        span.instrumentation_scope,
        (span.dropped_attributes, span.dropped_events, span.dropped_links),
        span.to_json(),
    )


def _count_handed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the drafts handed over from now on."""
    handed: list[str] = []
    hand = _Handover.hand

    def counting(self: _Handover, draft: SpanDraft) -> bool:
        done = hand(self, draft)
        if done:
            handed.append(draft.name)
        return done

    monkeypatch.setattr(_Handover, "hand", counting)
    return handed


def test_a_span_handed_to_the_processors_is_the_one_start_span_would_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Field for field and byte for byte, on a program's spans and on every feature."""
    unsampled = _draft("unsampled", 21, parent_id=9, parent_remote=True, flags=0)
    root = _draft("root", 22)
    drafts = [*_program_drafts(), *_variety(), unsampled, root]
    handed = _count_handed(monkeypatch)
    built = _through(drafts, handover=False)
    assert not handed
    ready = _through(drafts, handover=True)
    assert [_content(s) for s in ready] == [_content(s) for s in built]
    assert encode_spans(ready).SerializeToString() == encode_spans(built).SerializeToString()
    # Most went the short way; what the SDK would change took start_span: the
    # user's list value, the dropped counts, the unsampled parent (not exported).
    assert "unsampled" not in [s.name for s in built]
    assert len(handed) >= len(drafts) - 3
    tasks = [s for s in ready if s.name == semconv.SPAN_TASK and "user.tags" in s.attributes]
    assert [s.attributes["user.tags"] for s in tasks] == [("a", "b")]
    assert {semconv.SPAN_LOCK_HOLD, semconv.SPAN_TASK, "root"} <= set(handed)


class _Starts(SpanProcessor):
    """A processor that looks at spans as they start, and as they end (the SDK's hook)."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ending: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)

    def _on_ending(self, span: Any) -> None:
        self.ending.append(span.name)


class _DropHolds(Sampler):
    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kw: Any
    ) -> SamplingResult:
        if name == semconv.SPAN_LOCK_HOLD:
            return SamplingResult(Decision.DROP)
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, *args, **kw)

    def get_description(self) -> str:
        return "drop holds"


@pytest.mark.parametrize("setup", ["on_start", "sampler", "limits", "batch"])
def test_a_provider_set_up_otherwise_gets_what_start_span_gives_it(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A processor that watches spans start, a sampler, a limit: each is honoured."""
    drafts = _program_drafts()
    handed = _count_handed(monkeypatch)
    kw: dict[str, Any] = {}
    processor: SpanProcessor | None = None
    if setup == "on_start":
        processor = _Starts()
    elif setup == "sampler":
        kw["sampler"] = _DropHolds()
    elif setup == "limits":
        kw["span_limits"] = SpanLimits(max_span_attribute_length=5)
    else:  # the SDK's batching processor: still handed over
        processor = BatchSpanProcessor(InMemorySpanExporter())
    built = _through(drafts, False, processor, **kw)
    ending = len(drafts) if hasattr(SpanProcessor, "_on_ending") else 0  # newer SDKs only
    if isinstance(processor, _Starts):
        assert (len(processor.started), len(processor.ending)) == (len(drafts), ending)
        processor.started.clear()
        processor.ending.clear()
    ready = _through(drafts, True, processor, **kw)
    assert [_content(s) for s in ready] == [_content(s) for s in built]
    assert bool(handed) == (setup == "batch")
    if isinstance(processor, _Starts):
        assert (len(processor.started), len(processor.ending)) == (len(drafts), ending)
    elif setup == "sampler":
        assert semconv.SPAN_LOCK_HOLD not in {s.name for s in ready}
        assert semconv.SPAN_TASK in {s.name for s in ready}
    elif setup == "limits":
        assert all(len(v) <= 5 for s in ready for v in s.attributes.values() if isinstance(v, str))


def test_a_processor_added_later_sees_the_spans_start_from_then_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether spans may be handed over is looked at again for every batch."""
    drafts = _program_drafts()
    handed = _count_handed(monkeypatch)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=_RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = TracerProviderSink(provider)
    sink.export(drafts)
    first = len(handed)
    assert first >= len(drafts) - 1  # all but the task with the user's list value
    watcher = _Starts()
    provider.add_span_processor(watcher)
    sink.export(drafts)
    assert len(handed) == first  # none more
    assert len(watcher.started) == len(drafts)
    assert len(exporter.get_finished_spans()) == 2 * len(drafts)
