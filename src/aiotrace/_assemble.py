"""Turn hot-path records into span drafts: the one place the span model is built.

Both export paths start here. The SDK path feeds drafts to a user's
``TracerProvider``; aiotrace's own sinks turn them into ``ReadableSpan``s for
OTLP and the trace file. Because both consume the same :class:`SpanDraft`, a
span has the same name, ids, parent, links, attributes and timestamps
whichever path exported it.

Record layouts (tuples, first element the kind from ``_recorder``)::

    R_SPAN  (kind, name, t0, t1, span_id, parent, task, site, ref, outcome, attrs, links)
    R_HOLD  (kind, name, t0, t1, span_id, parent, task, site, ref, outcome, attrs, optional)
    R_TASK  (kind, task_span)                       -- see primitives/tasks.py
    R_SDK   (kind, readable_span)                   -- SDK spans forwarded to our sinks

``parent`` is the OpenTelemetry span that was current (or ``None``); ``site``
a raw ``(code, lasti)``; ``ref`` a ``PrimRef``; link targets are either span
objects or ints, the ids aiotrace gave to holds and point spans. Links only
ever point backwards in the record stream (a wait ends after the release that
woke it), so one ordered pass resolves them.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import TraceFlags

from aiotrace import semconv
from aiotrace._context import ids_of
from aiotrace._recorder import R_HOLD, R_SDK, R_SPAN, R_TASK, RECORDER, Recorder
from aiotrace._sites import SITES
from aiotrace.primitives._base import PrimRef, display_name, resolve_value

if TYPE_CHECKING:
    from collections.abc import Iterable

SAMPLED: Final = int(TraceFlags.SAMPLED)
RANDOM_TRACE_ID: Final = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
ROOT_FLAGS: Final = SAMPLED | RANDOM_TRACE_ID
"""Flags of a root span aiotrace starts: sampled, random trace id (as the SDK sets them)."""

STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2


class SpanDraft:
    """A finished span in neutral form: what every sink is fed."""

    __slots__ = (
        "attributes",
        "end",
        "events",
        "flags",
        "links",
        "name",
        "parent_id",
        "parent_remote",
        "source",
        "span_id",
        "start",
        "status",
        "status_description",
        "trace_id",
    )

    def __init__(self, name: str, trace_id: int, span_id: int, start: int, end: int) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = 0
        self.parent_remote = False
        self.flags = ROOT_FLAGS
        self.start = start
        self.end = end
        self.attributes: dict[str, Any] = {}
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.links: list[tuple[int, int, int, dict[str, Any]]] = []
        self.status = STATUS_UNSET
        self.status_description: str | None = None
        self.source: Any = None  # an SDK ReadableSpan forwarded as-is (R_SDK)

    def __repr__(self) -> str:
        return (
            f"SpanDraft({self.name!r}, span_id={self.span_id:016x}, parent={self.parent_id:016x})"
        )


def new_trace_id() -> int:
    """A random 128-bit trace id, never 0."""
    return random.getrandbits(128) or 1


class Assembler:
    """Stateful converter from records to drafts (keeps recent ids for links)."""

    def __init__(self, recorder: Recorder = RECORDER, memory: int = 20_000) -> None:
        self._recorder = recorder
        self._memory = memory
        # span id -> (trace id, flags, task name, site label) of recent spans
        # aiotrace allocated ids for (holds, waits, points, tasks)
        self._known: OrderedDict[int, tuple[int, int, Any, Any]] = OrderedDict()
        # optional holds not built (yet): span id -> draft
        self._pending: OrderedDict[int, SpanDraft] = OrderedDict()
        self._wanted: set[int] = set()

    # ------------------------------------------------------------------
    def process(self, records: Iterable[tuple[Any, ...]]) -> list[SpanDraft]:
        """Convert records in order; returns the drafts to export."""
        out: list[SpanDraft] = []
        stats = self._recorder.stats
        for record in records:
            kind = record[0]
            try:
                if kind == R_SPAN:
                    draft = self._span(record, out)
                    if draft is not None:
                        out.append(draft)
                elif kind == R_HOLD:
                    self._hold(record, out)
                elif kind == R_TASK:
                    draft = record[1].to_draft(self)
                    if draft is not None:
                        out.append(draft)
                elif kind == R_SDK:
                    out.append(self.from_sdk(record[1]))
            except Exception as exc:
                self._recorder.fail("pipeline", exc)
                stats.drop(1, "internal error while building")
        return out

    def finish(self) -> list[SpanDraft]:
        """At shutdown: pending optional holds are below threshold; forget them."""
        self._pending.clear()
        self._wanted.clear()
        return []

    # ------------------------------------------------------------------
    def remember(
        self, span_id: int, trace_id: int, flags: int, task: Any = None, site: Any = None
    ) -> None:
        """Note an id aiotrace allocated so later links can find its trace (and holder)."""
        known = self._known
        known[span_id] = (trace_id, flags, task, site)
        if len(known) > self._memory:
            known.popitem(last=False)

    def lookup(self, span_id: int) -> tuple[int, int, Any, Any] | None:
        """Trace id, flags, task name and site of a recent span aiotrace allocated."""
        return self._known.get(span_id)

    def start_draft(
        self, name: str, span_id: int, parent: Any, t0: int, t1: int
    ) -> SpanDraft | None:
        """A draft with ids, parent and times; ``None`` if the parent is not sampled."""
        rec = self._recorder
        draft = SpanDraft(name, 0, span_id, rec.to_epoch(t0), rec.to_epoch(t1))
        ids = ids_of(parent) if parent is not None else None
        if ids is None:
            draft.trace_id = new_trace_id()
        else:
            draft.trace_id, draft.parent_id, draft.flags, draft.parent_remote = ids
            if not draft.flags & SAMPLED:
                rec.stats.drop(1, "parent not sampled")
                return None
        self.remember(span_id, draft.trace_id, draft.flags)
        return draft

    def _common(self, draft: SpanDraft, record: tuple[Any, ...]) -> None:
        """Attributes every record kind shares; remembers the holder for links."""
        attrs = draft.attributes
        ref: PrimRef | None = record[8]
        if ref is not None:
            attrs[semconv.ATTR_PRIMITIVE_KIND] = ref.kind
            attrs[semconv.ATTR_PRIMITIVE_ID] = ref.pid
            attrs[semconv.ATTR_PRIMITIVE_NAME] = display_name(ref)
            attrs[semconv.ATTR_PRIMITIVE_SITE] = (
                SITES.resolve(ref.raw).label if ref.raw is not None else semconv.UNKNOWN_SITE
            )
        if record[6] is not None:
            attrs[semconv.ATTR_TASK_NAME] = record[6]
        site = record[7]
        label = None
        if site is not None:
            resolved = SITES.resolve(site)
            label = resolved.label
            attrs[semconv.ATTR_CODE_FUNCTION_NAME] = resolved.function
            attrs[semconv.ATTR_CODE_FILE_PATH] = resolved.path
            attrs[semconv.ATTR_CODE_LINE_NUMBER] = resolved.line
        self.remember(draft.span_id, draft.trace_id, draft.flags, record[6], label)
        if record[9] is not None:
            attrs[semconv.ATTR_OUTCOME] = record[9]
            if record[9] == semconv.OUTCOME_ERROR:
                draft.status = STATUS_ERROR
        extra = record[10]
        if extra:
            for key, value in extra.items():
                attrs[key] = resolve_value(value)

    def _span(self, record: tuple[Any, ...], out: list[SpanDraft]) -> SpanDraft | None:
        draft = self.start_draft(record[1], record[4], record[5], record[2], record[3])
        if draft is None:
            return None
        self._common(draft, record)
        for link_kind, target in record[11]:
            self._link(draft, link_kind, target, out)
        self._recorder.stats.spans_built += 1
        return draft

    def _link(self, draft: SpanDraft, link_kind: str, target: Any, out: list[SpanDraft]) -> None:
        attrs = {semconv.ATTR_LINK_KIND: link_kind}
        if isinstance(target, int):
            pending = self._pending.pop(target, None)
            if pending is not None:
                out.append(pending)  # a short hold that this wait makes worth showing
                self._recorder.stats.spans_built += 1
                self._recorder.stats.below_threshold -= 1
            known = self._known.get(target)
            if known is None:
                # Not seen yet (a semaphore permit still held): build it when it comes.
                self._wanted.add(target)
                if len(self._wanted) > self._memory:
                    self._wanted.clear()
                draft.links.append((draft.trace_id, target, draft.flags, attrs))
                return
            draft.links.append((known[0], target, known[1], attrs))
            if link_kind in (semconv.LINK_HANDOFF, semconv.LINK_BLOCKER):
                # Name the holder from its hold span: "who blocked me?"
                if known[2] is not None:
                    draft.attributes.setdefault(semconv.ATTR_BLOCKER_TASK, known[2])
                if known[3] is not None:
                    draft.attributes.setdefault(semconv.ATTR_BLOCKER_SITE, known[3])
            return
        ids = ids_of(target)
        if ids is None:
            self._recorder.stats.links_unresolved += 1
            return
        draft.links.append((ids[0], ids[1], ids[2], attrs))

    def _hold(self, record: tuple[Any, ...], out: list[SpanDraft]) -> None:
        draft = self.start_draft(record[1], record[4], record[5], record[2], record[3])
        if draft is None:
            return
        self._common(draft, record)
        optional = record[11]
        if optional and record[4] not in self._wanted:
            pending = self._pending
            pending[record[4]] = draft
            self._recorder.stats.below_threshold += 1
            if len(pending) > self._memory:
                pending.popitem(last=False)
            return
        self._wanted.discard(record[4])
        self._recorder.stats.spans_built += 1
        out.append(draft)

    # ------------------------------------------------------------------
    def from_sdk(self, span: Any) -> SpanDraft:
        """A draft that carries an SDK span through aiotrace's own sinks unchanged."""
        ctx = span.context
        draft = SpanDraft(span.name, ctx.trace_id, ctx.span_id, span.start_time, span.end_time)
        draft.source = span
        return draft
