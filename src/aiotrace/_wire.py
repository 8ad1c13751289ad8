"""Records as plain data: what crosses from the traced program to the span builder.

Hot-path records hold live objects (the current span, a code object, the
primitive's ref, a task's extras). :class:`Encoder` turns them, in the traced
process and off the hot path, into tuples of ints, strings, floats, tuples
and dicts only, so the :class:`~aiotrace._assemble.Assembler` can run in
this process or in a collector process (``marshal``-able, no pickling).
Sites and primitives are sent once each, as definitions, and referred to by
number afterwards.

Hot-path records (first element the kind, see ``_recorder``)::

    R_SPAN      (kind, name, t0, t1, span id, parent span, task, raw site, ref,
                 outcome, attrs, links)
    R_HOLD      the same without links (an 11-tuple); R_OPTIONAL likewise
    R_TASK      (kind, t0, t1, span id, trace id, parent id, flags, remote, site's code
                 or None, site's lasti, task name, coroutine, parent task, outcome,
                 TaskSpanExtras or None)
    R_SDK       (kind, ReadableSpan)

A span id of ``0`` is given here: most spans are linked to by nothing, or,
for a hold, through its record (a wait's ``links`` may be the hold record
that handed it the lock). Every buffered record waits in memory until the
pipeline runs, so they share what can be shared: raw sites
(``_sites.raw_site``) and attribute dicts (``_base.intern_attrs``).

Wire records (first element the kind)::

    W_SITE  (kind, site id, path, line, function)
    W_PRIM  (kind, pid, primitive kind, display name, creation site label, capacity,
             the program's line a library's primitive came from, or None)
    W_SPAN  (kind, name, t0, t1, span id, parent, task, site id, pid, outcome, attrs, links)
    W_HOLD  like W_SPAN, with ``optional`` (bool) instead of links
    W_FULL  (kind, name, t0, t1, span id, trace id, parent id, flags, remote,
             attrs, events, links, status, status description, scope, span kind)
    W_TASK  (kind, t0, t1, span id, trace id, parent id, flags, remote, site id,
             task name, coroutine, parent task, outcome, attrs, events, links,
             status, status description, span name, dropped (attributes, events,
             links) or None)

Times are nanoseconds since the Unix epoch. ``parent`` is ``None`` (a root)
or ``(trace id, span id, flags, remote)``. A link target is an int (a span id
aiotrace allocated, whose trace the assembler knows) or ``(trace id, span
id, flags)``. W_FULL carries spans that are complete already: task spans and
spans from the OpenTelemetry SDK.
"""

from __future__ import annotations

from collections import OrderedDict
from types import CodeType
from typing import Any, Final

from aiotrace import semconv
from aiotrace._context import ids_of
from aiotrace._recorder import R_HOLD, R_OPTIONAL, R_SDK, R_SPAN, R_TASK, Recorder
from aiotrace._sites import SITES, RaisedException, default_name
from aiotrace.primitives._base import (
    TASK_SPAN_TYPE,
    PrimRef,
    display_name,
    ref_suffix,
    site_attributes,
    via_label_of,
)

W_SPAN: Final = 0
W_HOLD: Final = 1
W_FULL: Final = 3
W_TASK: Final = 4
W_SITE: Final = 10
W_PRIM: Final = 11

STATUS_UNSET: Final = 0
STATUS_ERROR: Final = 2


class _RecordIds:
    """Span ids given to hold records, found again by the record: bounded, two generations.

    A wait links to the hold that handed it the lock by holding that record,
    which the pipeline encodes first (the release precedes the wake-up). The
    record stays alive while the wait refers to it, so no other live record
    has its ``id``; an entry left by a dead record at the same address (if
    the hold itself was dropped, never encoded) is told apart by its end time.
    """

    LIMIT: Final = 50_000

    def __init__(self) -> None:
        self._new: dict[int, int] = {}
        self._old: dict[int, int] = {}

    def put(self, record: tuple[Any, ...], span_id: int) -> None:
        new = self._new
        if len(new) >= self.LIMIT:
            self._old, self._new = new, {}
            new = self._new
        new[id(record)] = (record[3] << 64) | span_id  # span ids are below 2**64

    def get(self, record: tuple[Any, ...]) -> int | None:
        key = id(record)
        found = self._new.get(key)
        if found is None:
            found = self._old.get(key)
        if found is None or found >> 64 != record[3]:
            return None
        return found & 0xFFFF_FFFF_FFFF_FFFF


class Encoder:
    """Stateful: remembers which sites and primitives the receiver already knows."""

    PRIMS: Final = 10_000
    """Primitives whose definition the receiver is sure to still have (LRU on use)."""
    CONVERTED: Final = 256
    """Shared attribute dicts whose conversion is kept (see :meth:`attributes`)."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder
        self._sites: dict[tuple[int, int], tuple[CodeType, int]] = {}
        # pid -> (explicit name then, display name sent). Futures are
        # primitives of their own, so a long run makes millions: bounded,
        # least recently used forgotten (and defined again if used again; the
        # receiver keeps twice as many).
        self._prims: OrderedDict[int, tuple[str | None, str]] = OrderedDict()
        self._next_site = 1
        self._hold_ids = _RecordIds()
        # id(a future's SiteStats) -> (it, its futures' names): see _future_names().
        self._futures: dict[int, tuple[Any, dict[str, str]]] = {}
        # id(attrs) -> (attrs, converted): see attributes().
        self._converted: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def reset(self) -> None:
        """Forget what was sent (a new receiver, e.g. after a fork)."""
        self._sites.clear()
        self._prims.clear()

    # ------------------------------------------------------------------
    def encode(self, records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Wire records for ``records``, definitions first where needed."""
        out: list[tuple[Any, ...]] = []
        offset = self._recorder.epoch_offset
        for record in records:
            kind = record[0]
            try:
                if kind == R_TASK:  # the commonest record: tested first
                    out.append(self._task(record, out, offset))
                elif kind in (R_SPAN, R_HOLD, R_OPTIONAL):
                    out.append(self._span(record, out, offset))
                elif kind == R_SDK:
                    out.append(full_from_sdk(record[1]))
            except Exception as exc:
                self._recorder.fail("pipeline", exc)
                self._recorder.stats.drop(1, "internal error while encoding")
        return out

    def site(self, raw: Any, out: list[tuple[Any, ...]]) -> int:
        """The number of a raw ``(code, lasti)`` site, defining it on first use."""
        if raw is None:
            return 0
        code, lasti = raw
        key = (id(code), lasti)
        entry = self._sites.get(key)
        if entry is not None:
            return entry[1]
        number = self._next_site
        self._next_site += 1
        self._sites[key] = (code, number)  # keeps the code alive: its id stays unique
        site = SITES.resolve(raw)
        out.append((W_SITE, number, site.path, site.line, site.function))
        return number

    def prim(self, ref: PrimRef | None, out: list[tuple[Any, ...]]) -> int:
        """The pid of a primitive, (re)defining it when new or renamed."""
        if ref is None:
            return 0
        prims = self._prims
        pid = ref.pid
        sent = prims.get(pid)
        # A display name changes only with the explicit name (aiotrace.name)
        # or, for a primitive named after its owner, with the owner's: it is
        # worked out again only then (it formats the creation site).
        if sent is None or sent[0] is not ref.name or pid in ref_suffix:
            name = display_name(ref)
            if sent is None or sent[1] != name:
                label = (
                    SITES.resolve(ref.raw).label if ref.raw is not None else semconv.UNKNOWN_SITE
                )
                out.append(
                    (W_PRIM, pid, ref.kind, name, label, ref.capacity, via_label_of(ref.stats))
                )
            prims[pid] = (ref.name, name)
            if len(prims) > self.PRIMS:
                prims.popitem(last=False)
        prims.move_to_end(pid)
        return pid

    def attributes(self, attrs: dict[str, Any], keep: bool = True) -> dict[str, Any]:
        """``attrs`` with every value as OpenTelemetry accepts it (see :meth:`converted`).

        Most have nothing to convert (counts, names) and are returned as they
        are: record attributes are never mutated (many records share one
        dict), and whatever receives wire records copies them. A dict naming
        a call site is shared by many records (``_base.intern_attrs``: every
        waiter an event's ``set()`` woke carries its line), so its conversion
        is kept (with the dict, whose id then cannot be reused) unless the
        caller knows the dict is its record's own (``keep=False``) or it
        names a primitive, whose name can change (``aiotrace.name``).
        """
        for v in attrs.values():
            if isinstance(v, (PrimRef, tuple)):
                break
        else:
            return attrs
        converted_by_id = self._converted
        if keep:  # else the dict is new: nothing kept can have its id
            known = converted_by_id.get(id(attrs))
            if known is not None and known[0] is attrs:
                return known[1]
        converted = self.converted(attrs)
        if keep and not any(isinstance(v, PrimRef) for v in attrs.values()):
            if len(converted_by_id) >= self.CONVERTED:
                converted_by_id.clear()
            converted_by_id[id(attrs)] = (attrs, converted)
        return converted

    def _future_names(self, ref: PrimRef) -> dict[str, str]:
        """A future's name, creation site and the program's line, as attributes.

        The same for every future made at one site (from one line of the
        program, see ``SiteStats.via``) and not named otherwise, which is
        almost all of them: worked out once per site.
        """
        stats = ref.stats
        plain = not ref.name and ref.raw is not None and ref.pid not in ref_suffix
        if plain:
            known = self._futures.get(id(stats))
            if known is not None and known[0] is stats:
                return known[1]
        names = {
            semconv.ATTR_PRIMITIVE_NAME: display_name(ref),
            semconv.ATTR_PRIMITIVE_SITE: (
                SITES.resolve(ref.raw).label if ref.raw is not None else semconv.UNKNOWN_SITE
            ),
        }
        via = via_label_of(stats)
        if via is not None:
            names[semconv.ATTR_PRIMITIVE_VIA_SITE] = via
        if plain:
            if len(self._futures) >= self.PRIMS:
                self._futures.clear()
            self._futures[id(stats)] = (stats, names)  # keeps stats: its id stays unique
        return names

    @staticmethod
    def converted(attrs: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``attrs`` with every value as OpenTelemetry accepts it: a primitive
        by its name, a raw ``(code, lasti)`` site as ``file:line``, the rest as it is.

        A copy, then the few values to convert replaced: a future's span has
        attributes of its own, converted once each, and a comprehension
        calling a method per value cost it a third more.
        """
        converted = dict(attrs)
        for key, value in attrs.items():
            if isinstance(value, tuple):
                if len(value) == 2 and isinstance(value[0], CodeType):
                    converted[key] = SITES.resolve(value).label
            elif isinstance(value, PrimRef):
                converted[key] = display_name(value)
        return converted

    def _span(
        self, record: tuple[Any, ...], out: list[tuple[Any, ...]], offset: int
    ) -> tuple[Any, ...]:
        parent = record[5]
        if parent is None:
            parent_ids = None
        elif type(parent) is TASK_SPAN_TYPE[0]:
            parent_ids = (parent.trace_id, parent.span_id, parent.flags, False)
        else:
            parent_ids = ids_of(parent)
        attrs = record[10]
        ref = record[8]
        if ref is not None and ref.kind == semconv.KIND_FUTURE:
            # A future is a primitive of its own: millions in a long run. Its
            # identity travels as attributes, not as a definition to remember.
            # Its id is added here, not when recorded: a wait's attributes (who
            # resolved it, where) are then the same for many, shared, and their
            # conversion is kept; the future's own (its time to resolve) are not.
            future = {semconv.ATTR_FUTURE_ID: ref.pid}
            if attrs:
                future.update(self.attributes(attrs, keep=record[1] != semconv.SPAN_FUTURE))
            future[semconv.ATTR_PRIMITIVE_KIND] = ref.kind
            future[semconv.ATTR_PRIMITIVE_ID] = ref.pid
            future.update(self._future_names(ref))
            attrs, ref = future, None
        elif attrs:
            attrs = self.attributes(attrs)
        span_id = record[4]
        kind = record[0]
        tail: Any
        if kind != R_SPAN:
            if not span_id:  # given here, and kept for the waits that link to it
                span_id = self._recorder.next_id()
                self._hold_ids.put(record, span_id)
            wire_kind = W_HOLD
            tail = kind == R_OPTIONAL  # holds carry no links: the wire says if optional
        else:
            if not span_id:  # given here: a wait nothing links to
                span_id = self._recorder.next_id()
            wire_kind = W_SPAN
            tail = record[11]
            if tail and type(tail[0]) is int:
                # The hold record that handed the lock over, encoded before this.
                target = self._hold_ids.get(tail)
                if target is None:
                    self._recorder.stats.links_unresolved += 1
                    tail = ()
                else:
                    tail = ((semconv.LINK_HANDOFF, target),)
            elif tail:
                links: list[tuple[str, Any]] = []
                for link_kind, target in tail:
                    if isinstance(target, int):
                        links.append((link_kind, target))
                    elif type(target) is TASK_SPAN_TYPE[0]:  # a resolver's task span
                        links.append((link_kind, (target.trace_id, target.span_id, target.flags)))
                    else:
                        ids = ids_of(target)
                        if ids is not None:
                            links.append((link_kind, (ids[0], ids[1], ids[2])))
                tail = tuple(links)
        return (
            wire_kind,
            record[1],
            record[2] + offset,
            record[3] + offset,
            span_id,
            parent_ids,
            record[6],
            self.site(record[7], out),
            self.prim(ref, out),
            record[9],
            attrs,
            tail,
        )

    def _task(self, record: Any, out: list[tuple[Any, ...]], offset: int) -> tuple[Any, ...]:
        # Compact: a task is the commonest span of all, so no attribute dict
        # and no site lookup here; the receiver expands it (Assembler._task).
        code = record[8]
        sent = None if code is None else self._sites.get((id(code), record[9]))
        if sent is not None and record[14] is None:
            # The commonest task of all: a site sent before, no extras.
            return (
                W_TASK,
                record[1] + offset,
                record[2] + offset,
                record[3],
                record[4],
                record[5],
                record[6],
                record[7],
                sent[1],
                record[10],
                record[11],
                record[12],
                record[13],
                None,
                None,
                None,
                STATUS_UNSET,
                None,
                semconv.SPAN_TASK,
                None,
            )
        (
            _,
            start,
            end,
            span_id,
            trace_id,
            parent_id,
            flags,
            remote,
            code,
            lasti,
            task_name,
            coroutine,
            parent_task,
            outcome,
            extras,
        ) = record
        end += offset
        status, description = STATUS_UNSET, None
        dropped = None
        if extras is None:
            name, attributes, events, links = semconv.SPAN_TASK, None, None, None
        else:
            name, attributes, dropped = extras.name, extras.attributes, extras.dropped
            if extras.origin is not None:  # a library's task: the program's line behind it
                via = SITES.resolve(extras.origin).label
                attributes = {semconv.ATTR_VIA_SITE: via, **(attributes or {})}
            events, links = extras.events, extras.links
            if events:
                events = [e if len(e) == 3 else self._point(e, offset) for e in events]
            exception = extras.exception
            if exception is not None:
                events = [
                    *(events or ()),
                    (semconv.EVENT_EXCEPTION, end, exception_attributes(exception)),
                ]
                status = STATUS_ERROR
                description = f"{exception.name}: {exception.message}"
            if extras.status is not None and int(extras.status.value) == STATUS_ERROR:
                status, description = STATUS_ERROR, extras.status_description
        return (
            W_TASK,
            start + offset,
            end,
            span_id,
            trace_id,
            parent_id,
            flags,
            remote,
            sent[1]
            if sent is not None
            else self.site(None if code is None else (code, lasti), out),
            task_name,
            coroutine,
            parent_task,
            outcome,
            attributes,
            tuple(events) if events else None,
            tuple(links) if links else None,
            status,
            description,
            name,
            tuple(dropped) if dropped else None,
        )

    def _point(self, event: tuple[Any, ...], offset: int) -> tuple[str, int, dict[str, Any]]:
        """A waking call kept raw on a task span (``tasks.Event``), as the event it is."""
        name, t, raw, task, site, via = event
        attrs = self.converted(raw)
        if task is not None:
            attrs[semconv.ATTR_TASK_NAME] = task
        if via is not None:
            attrs[semconv.ATTR_VIA_SITE] = via
        if site is not None:
            attrs.update(site_attributes(site))
        return name, t + offset, attrs


def exception_attributes(exc: BaseException | RaisedException) -> dict[str, Any]:
    """The semantic-convention attributes of an ``exception`` span event."""
    raised = exc if isinstance(exc, RaisedException) else RaisedException(exc)
    return {
        semconv.ATTR_EXCEPTION_TYPE: raised.qualified_type,
        semconv.ATTR_EXCEPTION_MESSAGE: raised.message,
        semconv.ATTR_EXCEPTION_STACKTRACE: raised.stacktrace(),
    }


def full_from_sdk(span: Any) -> tuple[Any, ...]:
    """A W_FULL record from an SDK ``ReadableSpan`` (the user's own spans)."""
    ctx = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    return (
        W_FULL,
        span.name,
        span.start_time,
        span.end_time,
        ctx.span_id,
        ctx.trace_id,
        parent.span_id if parent is not None else 0,
        int(ctx.trace_flags),
        bool(parent.is_remote) if parent is not None else False,
        dict(span.attributes or {}),
        tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events),
        tuple(
            (
                link.context.trace_id,
                link.context.span_id,
                int(link.context.trace_flags),
                dict(link.attributes or {}),
            )
            for link in span.links
        ),
        int(span.status.status_code.value),
        span.status.description,
        (scope.name, scope.version) if scope is not None else None,
        int(span.kind.value),
    )


__all__ = ["Encoder", "default_name", "exception_attributes", "full_from_sdk"]
