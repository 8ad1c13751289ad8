"""OTLP protobuf payloads straight from span drafts: the bulk export path.

The SDK exports a span by building a ``ReadableSpan`` and then a protobuf
``Span`` message, field by field: about 20 µs a span here. Our drafts
already hold plain data, and most of a primitive span's attributes repeat
from span to span (the primitive's kind, name, creation site, file, the
task's name), so this module writes the protobuf wire format directly, with
each distinct ``key=value`` attribute encoded once and reused.

Field numbers are not written down here: they are read from the official
``opentelemetry-proto`` descriptors at import. ``tests/test_otlp_paths.py``
checks that the bytes parse, with those official classes, into exactly the
message the SDK's own encoder makes from the same spans.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

if TYPE_CHECKING:
    from aiotrace._assemble import SpanDraft

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _tag(message: Any, name: str, wire: int) -> bytes:
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | wire)


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf writes it
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


_FIX64: Final = struct.Struct("<Q").pack
_FIX32: Final = struct.Struct("<I").pack
_DOUBLE: Final = struct.Struct("<d").pack

# Tags, from the official descriptors.
_ANY_STRING = _tag(AnyValue, "string_value", _LEN)
_ANY_BOOL = _tag(AnyValue, "bool_value", _VARINT)
_ANY_INT = _tag(AnyValue, "int_value", _VARINT)
_ANY_DOUBLE = _tag(AnyValue, "double_value", _FIXED64)
_ANY_ARRAY = _tag(AnyValue, "array_value", _LEN)
_ANY_KVLIST = _tag(AnyValue, "kvlist_value", _LEN)
_ANY_BYTES = _tag(AnyValue, "bytes_value", _LEN)
_ARRAY_VALUES = _tag(ArrayValue, "values", _LEN)
_KVLIST_VALUES = _tag(KeyValueList, "values", _LEN)
_KV_KEY = _tag(KeyValue, "key", _LEN)
_KV_VALUE = _tag(KeyValue, "value", _LEN)
_SPAN_TRACE_ID = _tag(Span, "trace_id", _LEN)
_SPAN_SPAN_ID = _tag(Span, "span_id", _LEN)
_SPAN_PARENT_ID = _tag(Span, "parent_span_id", _LEN)
_SPAN_NAME = _tag(Span, "name", _LEN)
_SPAN_KIND = _tag(Span, "kind", _VARINT)
_SPAN_START = _tag(Span, "start_time_unix_nano", _FIXED64)
_SPAN_END = _tag(Span, "end_time_unix_nano", _FIXED64)
_SPAN_ATTRIBUTES = _tag(Span, "attributes", _LEN)
_SPAN_DROPPED_ATTRIBUTES = _tag(Span, "dropped_attributes_count", _VARINT)
_SPAN_EVENTS = _tag(Span, "events", _LEN)
_SPAN_DROPPED_EVENTS = _tag(Span, "dropped_events_count", _VARINT)
_SPAN_LINKS = _tag(Span, "links", _LEN)
_SPAN_DROPPED_LINKS = _tag(Span, "dropped_links_count", _VARINT)
_SPAN_STATUS = _tag(Span, "status", _LEN)
_SPAN_FLAGS = _tag(Span, "flags", _FIXED32)
_EVENT_TIME = _tag(Span.Event, "time_unix_nano", _FIXED64)
_EVENT_NAME = _tag(Span.Event, "name", _LEN)
_EVENT_ATTRIBUTES = _tag(Span.Event, "attributes", _LEN)
_LINK_TRACE_ID = _tag(Span.Link, "trace_id", _LEN)
_LINK_SPAN_ID = _tag(Span.Link, "span_id", _LEN)
_LINK_ATTRIBUTES = _tag(Span.Link, "attributes", _LEN)
_LINK_FLAGS = _tag(Span.Link, "flags", _FIXED32)
_STATUS_MESSAGE = _tag(Status, "message", _LEN)
_STATUS_CODE = _tag(Status, "code", _VARINT)
_SCOPE_NAME = _tag(InstrumentationScope, "name", _LEN)
_SCOPE_VERSION = _tag(InstrumentationScope, "version", _LEN)
_SCOPE_SPANS_SCOPE = _tag(ScopeSpans, "scope", _LEN)
_SCOPE_SPANS_SPANS = _tag(ScopeSpans, "spans", _LEN)
_RESOURCE_ATTRIBUTES = _tag(PbResource, "attributes", _LEN)
_RESOURCE_SPANS_RESOURCE = _tag(ResourceSpans, "resource", _LEN)
_RESOURCE_SPANS_SCOPE_SPANS = _tag(ResourceSpans, "scope_spans", _LEN)
_REQUEST_RESOURCE_SPANS = _tag(ExportTraceServiceRequest, "resource_spans", _LEN)

_HAS_IS_REMOTE: Final = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE: Final = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_KINDS: Final = (1, 2, 3, 4, 5)  # our 0..4 (INTERNAL, SERVER, ...) -> SPAN_KIND_*
_EMPTY_STATUS: Final = _ld(_SPAN_STATUS, b"")
_FLAGS_LOCAL: Final = _SPAN_FLAGS + _FIX32(_HAS_IS_REMOTE)
_FLAGS_REMOTE: Final = _SPAN_FLAGS + _FIX32(_HAS_IS_REMOTE | _IS_REMOTE)


def any_value(value: Any) -> bytes:
    """An ``AnyValue`` message, as the SDK's attribute encoder makes it."""
    if isinstance(value, bool):
        return _ANY_BOOL + _varint(int(value))
    if isinstance(value, str):
        return _ld(_ANY_STRING, value.encode())
    if isinstance(value, int):
        return _ANY_INT + _varint(value)
    if isinstance(value, float):
        return _ANY_DOUBLE + _DOUBLE(value)
    if isinstance(value, bytes):
        return _ld(_ANY_BYTES, value)
    if isinstance(value, Mapping):
        return _ld(
            _ANY_KVLIST, b"".join(_ld(_KVLIST_VALUES, key_value(k, v)) for k, v in value.items())
        )
    if isinstance(value, Sequence):
        return _ld(_ANY_ARRAY, b"".join(_ld(_ARRAY_VALUES, any_value(v)) for v in value))
    raise TypeError(f"cannot encode attribute value of type {type(value).__name__}")


def key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message."""
    return _ld(_KV_KEY, key.encode()) + _ld(_KV_VALUE, any_value(value))


class BulkEncoder:
    """Encodes drafts into ``ExportTraceServiceRequest`` bytes, remembering repeated parts."""

    CACHE: Final = 50_000
    """Distinct attributes remembered (encoded); beyond that the memory starts over."""

    def __init__(self, resource: Mapping[str, Any]) -> None:
        self._resource = _ld(
            _RESOURCE_SPANS_RESOURCE,
            b"".join(_ld(_RESOURCE_ATTRIBUTES, key_value(k, v)) for k, v in resource.items()),
        )
        self._attributes: dict[tuple[bytes, str, Any, type], bytes] = {}
        self._scopes: dict[Any, bytes] = {}
        self._names: dict[str, bytes] = {}

    def _attribute(self, key: str, value: Any, tag: bytes) -> bytes:
        try:
            cache_key = (tag, key, value, type(value))
            hit = self._attributes.get(cache_key)
        except TypeError:  # an unhashable value (a list): encode every time
            return _ld(tag, key_value(key, value))
        if hit is None:
            if len(self._attributes) >= self.CACHE:
                self._attributes.clear()
            hit = self._attributes[cache_key] = _ld(tag, key_value(key, value))
        return hit

    def _attrs(self, attributes: Mapping[str, Any], tag: bytes) -> bytes:
        attribute = self._attribute
        return b"".join([attribute(k, v, tag) for k, v in attributes.items()])

    def span(self, draft: SpanDraft) -> bytes:
        """One ``Span`` message."""
        name = self._names.get(draft.name)
        if name is None:
            name = self._names[draft.name] = _ld(_SPAN_NAME, draft.name.encode())
        parts = [
            _SPAN_TRACE_ID + b"\x10" + draft.trace_id.to_bytes(16, "big"),
            _SPAN_SPAN_ID + b"\x08" + draft.span_id.to_bytes(8, "big"),
        ]
        if draft.parent_id:
            parts.append(_SPAN_PARENT_ID + b"\x08" + draft.parent_id.to_bytes(8, "big"))
        parts.append(name)
        parts.append(_SPAN_KIND + _varint(_KINDS[draft.kind] if 0 <= draft.kind < 5 else 1))
        parts.append(_SPAN_START + _FIX64(draft.start))
        parts.append(_SPAN_END + _FIX64(draft.end))
        if draft.attributes:
            parts.append(self._attrs(draft.attributes, _SPAN_ATTRIBUTES))
        dropped = draft.dropped or (0, 0, 0)
        if dropped[0]:
            parts.append(_SPAN_DROPPED_ATTRIBUTES + _varint(dropped[0]))
        for event_name, timestamp, attributes in draft.events:
            body = _EVENT_TIME + _FIX64(timestamp) + _ld(_EVENT_NAME, event_name.encode())
            if attributes:
                body += self._attrs(attributes, _EVENT_ATTRIBUTES)
            parts.append(_ld(_SPAN_EVENTS, body))
        if dropped[1]:
            parts.append(_SPAN_DROPPED_EVENTS + _varint(dropped[1]))
        for trace_id, span_id, _flags, attributes in draft.links:
            body = (
                _LINK_TRACE_ID
                + b"\x10"
                + trace_id.to_bytes(16, "big")
                + _LINK_SPAN_ID
                + b"\x08"
                + span_id.to_bytes(8, "big")
            )
            if attributes:
                body += self._attrs(attributes, _LINK_ATTRIBUTES)
            parts.append(_ld(_SPAN_LINKS, body + _LINK_FLAGS + _FIX32(_HAS_IS_REMOTE)))
        if dropped[2]:
            parts.append(_SPAN_DROPPED_LINKS + _varint(dropped[2]))
        if draft.status or draft.status_description:
            status = b""
            if draft.status_description:
                status += _ld(_STATUS_MESSAGE, draft.status_description.encode())
            if draft.status:
                status += _STATUS_CODE + _varint(draft.status)
            parts.append(_ld(_SPAN_STATUS, status))
        else:
            parts.append(_EMPTY_STATUS)
        parts.append(_FLAGS_REMOTE if draft.parent_id and draft.parent_remote else _FLAGS_LOCAL)
        return b"".join(parts)

    def _scope(self, scope: tuple[str, str | None]) -> bytes:
        hit = self._scopes.get(scope)
        if hit is None:
            name, version = scope
            body = _ld(_SCOPE_NAME, name.encode())
            if version:
                body += _ld(_SCOPE_VERSION, version.encode())
            hit = self._scopes[scope] = _ld(_SCOPE_SPANS_SCOPE, body)
        return hit

    def request(self, drafts: Iterable[SpanDraft], default_scope: tuple[str, str | None]) -> bytes:
        """An ``ExportTraceServiceRequest``: one resource, the spans grouped by scope."""
        by_scope: dict[tuple[str, str | None], list[bytes]] = {}
        span = self.span
        for draft in drafts:
            scope = draft.scope if draft.scope is not None else default_scope
            spans = by_scope.get(scope)
            if spans is None:
                spans = by_scope[scope] = []
            spans.append(_ld(_SCOPE_SPANS_SPANS, span(draft)))
        scope_spans = b"".join(
            _ld(_RESOURCE_SPANS_SCOPE_SPANS, self._scope(scope) + b"".join(spans))
            for scope, spans in by_scope.items()
        )
        return _ld(_REQUEST_RESOURCE_SPANS, self._resource + scope_spans)


__all__ = ["BulkEncoder", "any_value", "key_value"]
