"""Turn wire records into span drafts: the one place the span model is built.

Both export paths start here. The SDK path feeds drafts to a user's
``TracerProvider``; aiotrace's own sinks turn them into OTLP and the trace
file. Because both consume the same :class:`SpanDraft`, a span has the same
name, ids, parent, links, attributes and timestamps whichever path exported
it. The input is the plain data of ``_wire`` (see there for the layouts), so
this runs in the traced process or in a collector process alike.

Links only ever point backwards in the record stream (a wait ends after the
release that woke it, a future's waiters after its resolution), so one
ordered pass resolves them.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import TraceFlags

from aiotrace import semconv
from aiotrace._sites import short_path
from aiotrace._wire import (
    STATUS_ERROR,
    STATUS_UNSET,
    W_FULL,
    W_HOLD,
    W_PRIM,
    W_SITE,
    W_SPAN,
    W_TASK,
    Encoder,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from aiotrace._recorder import Stats

SAMPLED: Final = int(TraceFlags.SAMPLED)
RANDOM_TRACE_ID: Final = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
ROOT_FLAGS: Final = SAMPLED | RANDOM_TRACE_ID
"""Flags of a root span aiotrace starts: sampled, random trace id (as the SDK sets them)."""

__all__ = ["ROOT_FLAGS", "STATUS_ERROR", "STATUS_UNSET", "Assembler", "SpanDraft", "new_trace_id"]


_NONE: Final[tuple[()]] = ()
"""A draft's events or links when it has none.

Drafts wait in batches of thousands, long enough for the garbage collector
to move them to its oldest generation; every tracked object there makes
full collections come sooner, in the user's threads as well as ours.
"""


class SpanDraft:
    """A finished span in neutral form: what every sink is fed."""

    __slots__ = (
        "attributes",
        "dropped",
        "end",
        "events",
        "flags",
        "kind",
        "links",
        "name",
        "parent_id",
        "parent_remote",
        "scope",
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
        # Most spans have neither: one shared empty tuple instead of two lists
        # apiece, which the garbage collector would track (see _NONE).
        self.events: Sequence[tuple[str, int, dict[str, Any]]] = _NONE
        self.links: Sequence[tuple[int, int, int, dict[str, Any]]] = _NONE
        self.status = STATUS_UNSET
        self.status_description: str | None = None
        self.scope: tuple[str, str | None] | None = None  # None: aiotrace's own
        self.kind = 0  # SpanKind.INTERNAL
        self.dropped: tuple[int, int, int] | None = None
        """Attributes, events and links recorded but not kept (span limits), if any."""

    def add_link(self, link: tuple[int, int, int, dict[str, Any]]) -> None:
        """Links start as the shared empty tuple (see ``_NONE``): the first makes a list."""
        links = self.links
        if isinstance(links, list):
            links.append(link)
        else:
            self.links = [*links, link]

    def __repr__(self) -> str:
        return (
            f"SpanDraft({self.name!r}, span_id={self.span_id:016x}, parent={self.parent_id:016x})"
        )


def new_trace_id() -> int:
    """A random 128-bit trace id, never 0."""
    return random.getrandbits(128) or 1


class Assembler:
    """Stateful converter from wire records to drafts (keeps recent ids for links)."""

    def __init__(self, stats: Stats, memory: int = 20_000) -> None:
        self.stats = stats
        self._memory = memory
        self._sites: dict[int, tuple[str, int, str, str]] = {}  # id -> path, line, func, label
        # pid -> kind, name, site label; least recently used forgotten, at twice
        # the encoder's bound, so whatever it does not define again is here.
        self._prims: OrderedDict[int, tuple[str, str, str, str | None]] = OrderedDict()
        # span id -> (trace id, flags, task name, site label) of recent spans
        # aiotrace allocated ids for (holds, waits, points, tasks, futures)
        self._known: OrderedDict[int, tuple[int, int, Any, Any]] = OrderedDict()
        # optional records not built (yet): span id -> draft
        self._pending: OrderedDict[int, SpanDraft] = OrderedDict()
        self._wanted: set[int] = set()

    # ------------------------------------------------------------------
    def process(self, records: Iterable[tuple[Any, ...]]) -> list[SpanDraft]:
        """Convert records in order; returns the drafts to export."""
        out: list[SpanDraft] = []
        for record in records:
            kind = record[0]
            try:
                if kind == W_SPAN:
                    draft = self._span(record, out)
                    if draft is not None:
                        out.append(draft)
                elif kind == W_HOLD:
                    self._hold(record, out)
                elif kind == W_TASK:
                    out.append(self._task(record))
                elif kind == W_FULL:
                    out.append(self._full(record))
                elif kind == W_SITE:
                    path, line, function = record[2], record[3], record[4]
                    label = f"{short_path(path)}:{line}"
                    self._sites[record[1]] = (path, line, function, label)
                elif kind == W_PRIM:
                    prims = self._prims
                    prims[record[1]] = (record[2], record[3], record[4], record[6])
                    prims.move_to_end(record[1])
                    if len(prims) > 2 * Encoder.PRIMS:
                        prims.popitem(last=False)
            except Exception:
                self.stats.internal_errors += 1
                self.stats.drop(1, "internal error while building")
        return out

    def finish(self) -> None:
        """At shutdown: optional records nobody linked to stay unbuilt; forget them."""
        self._pending.clear()
        self._wanted.clear()

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

    def site_label(self, site_id: int) -> str | None:
        """``file.py:12`` for a site number, if defined."""
        site = self._sites.get(site_id)
        return site[3] if site is not None else None

    def _start(self, record: tuple[Any, ...]) -> SpanDraft | None:
        draft = SpanDraft(record[1], 0, record[4], record[2], record[3])
        parent = record[5]
        if parent is None:
            draft.trace_id = new_trace_id()
        else:
            draft.trace_id, draft.parent_id, draft.flags, draft.parent_remote = parent
            if not draft.flags & SAMPLED:
                self.stats.drop(1, "parent not sampled")
                return None
        attrs = draft.attributes
        prim = self._prims.get(record[8]) if record[8] else None
        if prim is not None:
            self._prims.move_to_end(record[8])
            attrs[semconv.ATTR_PRIMITIVE_KIND] = prim[0]
            attrs[semconv.ATTR_PRIMITIVE_ID] = record[8]
            attrs[semconv.ATTR_PRIMITIVE_NAME] = prim[1]
            attrs[semconv.ATTR_PRIMITIVE_SITE] = prim[2]
            if prim[3] is not None:
                attrs[semconv.ATTR_PRIMITIVE_VIA_SITE] = prim[3]
        if record[6] is not None:
            attrs[semconv.ATTR_TASK_NAME] = record[6]
        site = self._sites.get(record[7]) if record[7] else None
        label = None
        if site is not None:
            attrs[semconv.ATTR_CODE_FUNCTION_NAME] = site[2]
            attrs[semconv.ATTR_CODE_FILE_PATH] = site[0]
            attrs[semconv.ATTR_CODE_LINE_NUMBER] = site[1]
            label = site[3]
        if record[9] is not None:
            attrs[semconv.ATTR_OUTCOME] = record[9]
            if record[9] == semconv.OUTCOME_ERROR:
                draft.status = STATUS_ERROR
        if record[10]:
            attrs.update(record[10])
        self.remember(draft.span_id, draft.trace_id, draft.flags, record[6], label)
        return draft

    def _span(self, record: tuple[Any, ...], out: list[SpanDraft]) -> SpanDraft | None:
        draft = self._start(record)
        if draft is None:
            return None
        for link_kind, target in record[11]:
            self._link(draft, link_kind, target, out)
        self.stats.spans_built += 1
        return draft

    def _link(self, draft: SpanDraft, link_kind: str, target: Any, out: list[SpanDraft]) -> None:
        attrs = {semconv.ATTR_LINK_KIND: link_kind}
        if not isinstance(target, int):
            trace_id, span_id, flags = target
            draft.add_link((trace_id, span_id, flags, attrs))
            return
        pending = self._pending.pop(target, None)
        if pending is not None:
            out.append(pending)  # an optional span that this one makes worth showing
            self.stats.spans_built += 1
            self.stats.below_threshold -= 1
        known = self._known.get(target)
        if known is None:
            # Not seen yet: build it when it comes.
            self._wanted.add(target)
            if len(self._wanted) > self._memory:
                self._wanted.clear()
            draft.add_link((draft.trace_id, target, draft.flags, attrs))
            return
        draft.add_link((known[0], target, known[1], attrs))
        if link_kind in (semconv.LINK_HANDOFF, semconv.LINK_BLOCKER):
            # Name the holder from its hold span: "who blocked me?"
            if known[2] is not None:
                draft.attributes.setdefault(semconv.ATTR_BLOCKER_TASK, known[2])
            if known[3] is not None:
                draft.attributes.setdefault(semconv.ATTR_BLOCKER_SITE, known[3])

    def _hold(self, record: tuple[Any, ...], out: list[SpanDraft]) -> None:
        draft = self._start(record)
        if draft is None:
            return
        if record[11] and record[4] not in self._wanted:
            pending = self._pending
            pending[record[4]] = draft
            self.stats.below_threshold += 1
            if len(pending) > self._memory:
                pending.popitem(last=False)
            return
        self._wanted.discard(record[4])
        self.stats.spans_built += 1
        out.append(draft)

    def _task(self, record: tuple[Any, ...]) -> SpanDraft:
        draft = SpanDraft(record[18], record[4], record[3], record[1], record[2])
        draft.parent_id = record[5]
        draft.flags = record[6]
        draft.parent_remote = record[7]
        attrs: dict[str, Any] = {}
        task_name = record[9]
        if task_name is not None:
            attrs[semconv.ATTR_TASK_NAME] = task_name
        if record[10] is not None:
            attrs[semconv.ATTR_TASK_COROUTINE] = record[10]
        if record[11] is not None:
            attrs[semconv.ATTR_TASK_PARENT] = record[11]
        site = self._sites.get(record[8]) if record[8] else None
        label = None
        if site is not None:
            path, line, function, label = site
            attrs[semconv.ATTR_CODE_FUNCTION_NAME] = function
            attrs[semconv.ATTR_CODE_FILE_PATH] = path
            attrs[semconv.ATTR_CODE_LINE_NUMBER] = line
        if record[12] is not None:
            attrs[semconv.ATTR_OUTCOME] = record[12]
        if record[13]:
            attrs.update(record[13])
        draft.attributes = attrs
        if record[14]:
            draft.events = list(record[14])
        if record[15]:
            draft.links = list(record[15])
        draft.status = record[16]
        draft.status_description = record[17]
        draft.dropped = record[19]
        self.stats.spans_built += 1
        self.remember(draft.span_id, draft.trace_id, draft.flags, task_name, label)
        return draft

    def _full(self, record: tuple[Any, ...]) -> SpanDraft:
        draft = SpanDraft(record[1], record[5], record[4], record[2], record[3])
        draft.parent_id = record[6]
        draft.flags = record[7]
        draft.parent_remote = record[8]
        draft.attributes = record[9]
        draft.events = list(record[10])
        draft.links = list(record[11])
        draft.status = record[12]
        draft.status_description = record[13]
        draft.scope = record[14]
        draft.kind = record[15]
        self.stats.spans_built += 1
        if draft.scope is None:
            # One of ours (a task span): later links may point at it.
            attrs = draft.attributes
            label = None
            if semconv.ATTR_CODE_LINE_NUMBER in attrs:
                path = str(attrs.get(semconv.ATTR_CODE_FILE_PATH, ""))
                label = f"{short_path(path)}:{attrs[semconv.ATTR_CODE_LINE_NUMBER]}"
            self.remember(
                draft.span_id, draft.trace_id, draft.flags, attrs.get(semconv.ATTR_TASK_NAME), label
            )
        return draft
