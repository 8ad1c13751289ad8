"""Spans as OTLP: the JSON trace file (written as it goes, read back), and SDK spans.

The trace file is one OTLP/JSON ``ExportTraceServiceRequest`` object: the
format OpenTelemetry collectors and Jaeger's UI ("Upload" / "JSON File")
accept. Ids are hex strings, 64-bit integers decimal strings, enums numbers,
as the OTLP/JSON encoding specifies. It is written incrementally, one
``scopeSpans`` entry per batch, so memory does not grow with the trace and a
file interrupted by a crash is still closed properly by whoever finishes it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from typing import IO, TYPE_CHECKING, Any, Final

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from aiotrace import semconv
from aiotrace._assemble import SpanDraft
from aiotrace._version import __version__
from aiotrace.exceptions import TraceFileError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from opentelemetry.sdk.resources import Resource

AIOTRACE_SCOPE: Final = (semconv.SCOPE_NAME, __version__)

# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def value_to_json(value: Any) -> dict[str, Any]:
    """An ``AnyValue`` in OTLP/JSON."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [value_to_json(v) for v in value]}}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode()}
    return {"stringValue": str(value)}


def attributes_to_json(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``KeyValue`` list in OTLP/JSON."""
    if not attributes:
        return []
    return [{"key": key, "value": value_to_json(value)} for key, value in attributes.items()]


_DROPPED_KEYS: Final = ("droppedAttributesCount", "droppedEventsCount", "droppedLinksCount")


def draft_to_json(draft: SpanDraft) -> dict[str, Any]:
    """One OTLP/JSON ``Span``."""
    span: dict[str, Any] = {
        "traceId": f"{draft.trace_id:032x}",
        "spanId": f"{draft.span_id:016x}",
        "name": draft.name,
        "kind": draft.kind + 1,  # SDK SpanKind.INTERNAL is 0, OTLP's is 1
        "startTimeUnixNano": str(draft.start),
        "endTimeUnixNano": str(draft.end),
        "attributes": attributes_to_json(draft.attributes),
        "flags": draft.flags | 0x100 | (0x200 if draft.parent_remote else 0),
    }
    if draft.parent_id:
        span["parentSpanId"] = f"{draft.parent_id:016x}"
    if draft.events:
        span["events"] = [
            {"timeUnixNano": str(ts), "name": name, "attributes": attributes_to_json(attrs)}
            for name, ts, attrs in draft.events
        ]
    if draft.links:
        span["links"] = [
            {
                "traceId": f"{trace_id:032x}",
                "spanId": f"{span_id:016x}",
                "attributes": attributes_to_json(attrs),
                "flags": flags | 0x100,
            }
            for trace_id, span_id, flags, attrs in draft.links
        ]
    if draft.dropped:
        for key, count in zip(_DROPPED_KEYS, draft.dropped, strict=True):
            if count:
                span[key] = count
    if draft.status:
        status: dict[str, Any] = {"code": draft.status}
        if draft.status_description:
            status["message"] = draft.status_description
        span["status"] = status
    else:
        span["status"] = {}
    return span


def scope_to_json(scope: tuple[str, str | None] | None) -> dict[str, Any]:
    """An ``InstrumentationScope``; ``None`` is aiotrace's own."""
    name, version = scope if scope is not None else AIOTRACE_SCOPE
    return {"name": name, "version": version} if version else {"name": name}


def new_trace_file(directory: str, label: str, now: datetime.datetime | None = None) -> str:
    """A trace file of a run's own: ``aiotrace-<label>-<time>.json`` in ``directory``, created.

    Two runs started in the same second (a program run twice, a CI matrix
    sharing a workspace) would otherwise write one file, the later
    truncating the earlier's spans: the name is taken by creating the file
    (empty, until the run writes it), with ``-2``, ``-3``... added until one
    is free. Where nothing can be created the plain name is returned, and
    writing it fails as it would have.
    """
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^\w.-]", "_", label) or "program"
    base = os.path.join(os.path.abspath(directory), f"aiotrace-{safe}-{stamp}")
    number = 1
    while True:
        path = f"{base}.json" if number == 1 else f"{base}-{number}.json"
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            number += 1
            continue
        except OSError:
            return f"{base}.json"
        return path


class TraceFileWriter:
    """Writes the trace file incrementally; :meth:`close` makes it one valid JSON object.

    Spans go under the resource of the process that made them: one
    ``resourceSpans`` entry per run of consecutive batches from one process
    (OTLP allows a resource to appear in several entries), so the file is
    written as spans come, whichever process they come from.
    """

    def __init__(self, path: str, resource: Mapping[str, Any]) -> None:
        self.path = path
        self.spans_written = 0
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._fh: IO[str] | None = open(path, "w", encoding="utf-8")  # noqa: SIM115  # closed in close()
        self._default = resource
        self._resource: Mapping[str, Any] | None = None
        """The resource of the entry open now; None before the first."""
        self._first = True
        self._fh.write('{"resourceSpans":[')

    def _open_entry(self, resource: Mapping[str, Any]) -> None:
        fh = self._fh
        assert fh is not None
        if self._resource is not None:
            fh.write("]},")  # the open entry's scopeSpans array, then the entry
        head = {"resource": {"attributes": attributes_to_json(resource)}}
        # The head with its closing brace cut off, then the scopeSpans array.
        fh.write(json.dumps(head)[:-1] + ',"scopeSpans":[')
        self._resource = resource
        self._first = True

    def write(self, drafts: Iterable[SpanDraft], resource: Mapping[str, Any] | None = None) -> None:
        """Append a batch of one process (``resource``, the file's own if None),
        one ``scopeSpans`` entry per instrumentation scope."""
        fh = self._fh
        if fh is None:
            return
        by_scope: dict[Any, list[dict[str, Any]]] = {}
        for draft in drafts:
            by_scope.setdefault(draft.scope, []).append(draft_to_json(draft))
        if not by_scope:
            return
        resource = resource if resource is not None else self._default
        if self._resource is None or (
            resource is not self._resource and resource != self._resource
        ):
            self._open_entry(resource)
        for scope, spans in by_scope.items():
            entry = json.dumps(
                {"scope": scope_to_json(scope), "spans": spans}, separators=(",", ":")
            )
            fh.write(entry if self._first else "," + entry)
            self._first = False
            self.spans_written += len(spans)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        """Finish the JSON object and close the file (idempotent)."""
        fh = self._fh
        if fh is None:
            return
        if self._resource is None:  # no span: the resource alone, for the title
            self._open_entry(self._default)
        self._fh = None
        fh.write("]}]}\n")
        fh.close()


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _value_from_json(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return tuple(_value_from_json(v) for v in value["arrayValue"].get("values", []))
    if "bytesValue" in value:
        import base64

        return base64.b64decode(value["bytesValue"])
    return None


def attributes_from_json(items: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """A ``KeyValue`` list back to a dict."""
    return {item["key"]: _value_from_json(item.get("value", {})) for item in items or ()}


def _hex(value: Any, width: int) -> int:
    if not isinstance(value, str) or len(value) != width:
        raise ValueError(f"expected {width} hex digits, got {value!r}")
    return int(value, 16)


def draft_from_json(span: Mapping[str, Any], scope: tuple[str, str | None] | None) -> SpanDraft:
    """One OTLP/JSON span back to a draft."""
    draft = SpanDraft(
        str(span["name"]),
        _hex(span["traceId"], 32),
        _hex(span["spanId"], 16),
        int(span.get("startTimeUnixNano", 0)),
        int(span.get("endTimeUnixNano", 0)),
    )
    parent = span.get("parentSpanId") or ""
    draft.parent_id = _hex(parent, 16) if parent else 0
    flags = int(span.get("flags", 0x101))
    draft.flags = flags & 0xFF
    draft.parent_remote = bool(flags & 0x200)
    draft.kind = max(int(span.get("kind", 1)) - 1, 0)
    draft.attributes = attributes_from_json(span.get("attributes"))
    draft.events = [
        (
            str(e.get("name", "")),
            int(e.get("timeUnixNano", 0)),
            attributes_from_json(e.get("attributes")),
        )
        for e in span.get("events", ())
    ]
    draft.links = [
        (
            _hex(link["traceId"], 32),
            _hex(link["spanId"], 16),
            int(link.get("flags", 1)) & 0xFF,
            attributes_from_json(link.get("attributes")),
        )
        for link in span.get("links", ())
    ]
    dropped = tuple(int(span.get(key, 0)) for key in _DROPPED_KEYS)
    if any(dropped):
        draft.dropped = (dropped[0], dropped[1], dropped[2])
    status = span.get("status") or {}
    draft.status = int(status.get("code", 0))
    draft.status_description = status.get("message")
    draft.scope = (
        None if scope == AIOTRACE_SCOPE or (scope and scope[0] == semconv.SCOPE_NAME) else scope
    )
    return draft


class TraceData:
    """The content of a trace file: its spans, by the resource (the process) that made them."""

    def __init__(self, groups: list[tuple[dict[str, Any], list[SpanDraft]]]) -> None:
        self.groups = groups
        """``(resource attributes, spans)`` per ``resourceSpans`` entry, in file order."""
        self.resource: dict[str, Any] = next((r for r, _ in groups if r), {})
        """The first entry's: the service, and whatever else every process shares."""
        self.drafts = [draft for _, drafts in groups for draft in drafts]

    def by_process(self) -> list[tuple[int | None, list[SpanDraft]]]:
        """The spans in file order, grouped as they were written, each with its ``process.pid``."""
        out: list[tuple[int | None, list[SpanDraft]]] = []
        for resource, drafts in self.groups:
            pid = resource.get(semconv.ATTR_PID)
            out.append((pid if isinstance(pid, int) else None, drafts))
        return out


def read_trace_file(path: str) -> TraceData:
    """Read an OTLP/JSON trace file (ours, or any collector's).

    Raises:
        TraceFileError: the file is missing, unreadable, not JSON, or not OTLP.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise TraceFileError(f"trace file not found: {path}") from None
    except OSError as exc:
        raise TraceFileError(f"cannot read trace file {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TraceFileError(f"{path} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceSpans"), list):
        raise TraceFileError(f"{path} is not an OTLP JSON trace (no resourceSpans)")
    groups: list[tuple[dict[str, Any], list[SpanDraft]]] = []
    try:
        for resource_spans in data["resourceSpans"]:
            attrs = attributes_from_json((resource_spans.get("resource") or {}).get("attributes"))
            drafts: list[SpanDraft] = []
            for scope_spans in resource_spans.get("scopeSpans", ()):
                scope_json = scope_spans.get("scope") or {}
                scope = (str(scope_json.get("name", "")), scope_json.get("version"))
                for span in scope_spans.get("spans", ()):
                    drafts.append(draft_from_json(span, scope))
            groups.append((attrs, drafts))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TraceFileError(f"{path} is not a valid OTLP JSON trace: {exc}") from None
    return TraceData(groups)


# ---------------------------------------------------------------------------
# SDK spans
# ---------------------------------------------------------------------------

_KINDS: Final = list(SpanKind)


def draft_to_readable(draft: SpanDraft, resource: Resource) -> ReadableSpan:
    """A draft as the SDK's ``ReadableSpan``, for the OTLP exporters."""
    parent = (
        SpanContext(
            draft.trace_id,
            draft.parent_id,
            is_remote=draft.parent_remote,
            trace_flags=TraceFlags(draft.flags),
        )
        if draft.parent_id
        else None
    )
    name, version = draft.scope if draft.scope is not None else AIOTRACE_SCOPE
    attributes: Any = draft.attributes
    events: Any = [Event(name, attrs, ts) for name, ts, attrs in draft.events]
    links: Any = [
        Link(SpanContext(t, s, is_remote=False, trace_flags=TraceFlags(f)), attrs)
        for t, s, f, attrs in draft.links
    ]
    if draft.dropped:
        # The SDK's exporters read dropped counts off its bounded containers.
        attributes = BoundedAttributes(None, attributes, immutable=True)
        events, links = BoundedList.from_seq(None, events), BoundedList.from_seq(None, links)
        attributes.dropped, events.dropped, links.dropped = draft.dropped
    return ReadableSpan(
        name=draft.name,
        context=SpanContext(
            draft.trace_id, draft.span_id, is_remote=False, trace_flags=TraceFlags(draft.flags)
        ),
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=_KINDS[draft.kind] if 0 <= draft.kind < len(_KINDS) else SpanKind.INTERNAL,
        status=Status(StatusCode(draft.status), draft.status_description)
        if draft.status
        else Status(StatusCode.UNSET),
        start_time=draft.start,
        end_time=draft.end,
        instrumentation_scope=InstrumentationScope(name, version),
    )
