"""The report: what a run's spans say, condensed to what a person asks first.

:class:`ReportBuilder` consumes span drafts as they are built (or read back
from a trace file) and keeps only aggregates, so a trace of millions of
spans costs a few kilobytes here. :class:`Report` is plain data (it crosses
from the collector process to the CLI as JSON); :func:`render` prints it with
rich. The same report serves ``aiotrace run``, ``aiotrace report`` and the
pytest plugin's summary.

Totals per primitive come from two sources: the spans (waits and holds that
passed their thresholds) and the summary events on the run span, which count
every wait, spanned or not. The summary wins where both exist.

A lock that others queue for is slow for a reason, and the commonest is
that its holder waits on something else meanwhile (a pool's semaphore, a
queue, a future): the builder pairs each contended hold with the same
task's waits inside it, so the report can say "held A while waiting for B"
instead of leaving the user to find the two spans in a timeline.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, TypeVar

from aiotrace import semconv
from aiotrace._sites import is_internal_file, is_library_file, qualname, short_path

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.console import Console

    from aiotrace._assemble import SpanDraft

_WAIT_SPANS: Final = semconv.WAIT_SPANS
_HOLD_SPANS: Final = semconv.HOLD_SPANS
_SEMAPHORES: Final = frozenset({semconv.KIND_SEMAPHORE, semconv.KIND_BOUNDED_SEMAPHORE})
_HOLDERS: Final = frozenset({semconv.KIND_LOCK}) | _SEMAPHORES
"""Kinds whose every release ends a hold."""
_ABANDONED: Final = frozenset({semconv.OUTCOME_CANCELLED, semconv.OUTCOME_TIMEOUT})
_QUEUE_WAITS: Final = semconv.QUEUE_WAIT_OPERATIONS
_OWNED_WAITS: Final = semconv.ACQUIRE_SPANS
"""Waits for a holder: the longest holds say who made them wait."""
_NESTED_WAITS: Final = _WAIT_SPANS | {semconv.SPAN_FUTURE_WAIT}
"""Waits that can hold up a task holding a lock: on primitives and on futures."""


_RowKey = tuple[str, str, "str | None", "str | None"]
"""A report row: kind, creation site, for a library's primitive the program's line, and
the name aiotrace read for it from its line (None when the program named it with
``aiotrace.name()``, or the line gave no name)."""


def _row_key(attrs: dict[str, Any], kind: str, site: str) -> _RowKey:
    """Primitives are counted per creation line (a lock made in a loop is one row), but
    two made on one line and named apart by it (``a, b = Lock(), Lock()``, from 3.11)
    are two rows: one row would show one's name with the other's waits and holds. A name
    given with ``aiotrace.name()`` is shown, not keyed: the row is the line's."""
    via = attrs.get(semconv.ATTR_PRIMITIVE_VIA_SITE)
    via_label = None if via is None else str(via)
    name = str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, site))
    ending = f"({site})" if via_label is None else f"({site}) via {via_label}"
    return kind, site, via_label, name if name.endswith(ending) else None


@dataclass
class PrimitiveRow:
    """Totals for one primitive (all instances created at one site)."""

    name: str
    kind: str
    site: str
    via: str | None = None
    """For a library's primitive: the program's line that made it (see ``semconv``)."""
    operations: int = 0
    waits: int = 0
    wait_ms: float = 0.0
    max_wait_ms: float = 0.0
    holds: int = 0
    """Holds that were waited for or passed ``min_hold``: a contended or long hold."""
    max_hold_ms: float = 0.0
    capacity: int | None = None
    max_waiters: int = 0
    abandoned: int = 0
    by_operation: dict[str, list[float]] = field(default_factory=dict)
    """A queue's spanned waits by operation: get/put/join -> [count, ms]."""
    times_held: int = 0
    """Every hold of a lock or semaphore, the short uncontended ones included."""
    max_wait_under_ms: float | None = None
    """Set when the longest wait is not known exactly, only that it was under this.

    Waits shorter than ``min_wait`` are summed, not timed one by one (the hot
    path keeps no maximum): when no spanned wait reached ``min_wait``, the
    longest of them is only known to have been shorter.
    """
    max_hold_under_ms: float | None = None
    """The same for holds and ``min_hold``."""
    timed_out: int = 0
    """Spanned waits that ended timed out (``asyncio.timeout``, ``wait_for``)."""
    max_timed_out_ms: float = 0.0
    """The longest of them: how long a caller was prepared to wait."""
    held_at: dict[str, int] = field(default_factory=dict)
    """Where holders were, sampled while others waited: line (with its code) -> samples."""
    held_samples: int = 0
    """Every such sample, the lines not in ``held_at`` included."""
    gets_given_back: list[int] = field(default_factory=list)
    """A queue's spanned ``get()`` waits that a put ended: ``[given back, all of them]``.
    Mostly given back: the queue is a pool (asyncpg's connections), whose items are
    taken and given back, not produced and consumed. Given back: by a task that had
    waited to get from it too, or from the program's line the get came from (a
    library's pool, ``async with pool.acquire()``, which asyncpg gives back from a
    task of its own)."""

    def held_at_text(self) -> str | None:
        """``app.py:11 in get: v = await fetch(k) (31 of 33 samples)``: where the holder
        others waited for mostly was; the next lines too when they are common."""
        if not self.held_at or not self.held_samples:
            return None
        ranked = sorted(self.held_at.items(), key=lambda item: -item[1])
        parts = [f"{line} ({count} of {self.held_samples} samples)" for line, count in ranked[:1]]
        parts += [
            f"{line} ({count})"
            for line, count in ranked[1:3]
            if count * 5 >= self.held_samples  # a fifth or more: part of the answer
        ]
        return "; ".join(parts)

    def longest_wait_text(self) -> str:
        """``61 ms``, or ``< 1.0 ms`` when every wait was too short to be timed alone."""
        return _longest_text(self.max_wait_ms, self.max_wait_under_ms)

    def longest_hold_text(self) -> str:
        """As :meth:`longest_wait_text`, for holds."""
        return _longest_text(self.max_hold_ms, self.max_hold_under_ms)


def _longest_text(ms: float, under: float | None) -> str:
    return f"< {duration_text(under)}" if under is not None else duration_text(ms)


def _longest_under(spanned_max: float, spanned: int, total: int, threshold: float) -> float | None:
    """The bound to show instead of the longest, or None when the longest is exact.

    ``total`` operations, ``spanned`` of them as spans; the rest were each
    shorter than ``threshold``. The longest spanned one is the longest of all
    when every one was spanned or it reached the threshold.
    """
    if spanned >= total or spanned_max >= threshold:
        return None
    return threshold


@dataclass
class HoldRow:
    """One long hold: for how long, of what, by whom, from where."""

    ms: float
    primitive: str
    holder: str
    site: str
    waiters: int
    process: int | None = None
    """The holder's process id, when known (shown when the run had several processes)."""
    times: int = 1
    """Spanned holds of this primitive at this line: the row is the longest of them."""
    total_ms: float | None = None
    """Their total, when more than one."""


@dataclass
class WaitRow:
    """A long wait on an event, condition, barrier or queue, and what ended it."""

    ms: float
    primitive: str
    task: str
    at: str
    outcome: str
    by: str | None
    by_at: str | None
    process: int | None = None
    """The waiter's process id (the waker's too: a wake-up never crosses processes)."""
    times: int = 1
    """Such waits (this primitive, at this line, ended this way there): the row is the longest."""
    total_ms: float | None = None
    """Their total, when more than one."""


@dataclass
class FutureRow:
    """A future some task waited for: how long until whom resolved it, where."""

    ms: float
    future: str
    outcome: str
    by: str | None
    at: str | None
    waiters: int
    process: int | None = None
    """The process id of the future, its waiters and its resolver."""
    times: int = 1
    """Futures made at that line and resolved this way there: the row is the slowest."""
    total_ms: float | None = None
    """Their total time to resolve, when more than one."""


@dataclass
class FailedTaskRow:
    """Tasks that ended raising: the first of them, what it raised and where.

    One row per coroutine, exception type and line: a hundred workers
    failing alike are one culprit.
    """

    task: str
    coroutine: str | None
    exception: str
    message: str
    at: str | None
    """The line that raised (``app.py:12 in fetch``): the innermost frame of the program's;
    a library's, then with the program's line that led there (``... via app.py:40 in main``)."""
    process: int | None = None
    times: int = 1
    first_ns: int = 0
    """When the first of them ended: rows are listed first to fail first."""

    def text(self, several: bool = False) -> str:
        """``loader raised KeyError: 'config' at app.py:7 in loader``."""
        who = task_text(self.task, self.process, several)
        if self.coroutine and self.coroutine != self.task:
            who += f" ({self.coroutine})"
        more = f"; {self.times} such tasks" if self.times > 1 else ""
        return f"{who} raised {Raised(self.exception, self.message, self.at).text()}{more}"


_TRACEBACK_LINE: Final = re.compile(r'^  File "(?P<file>.+)", line (?P<line>\d+), in (?P<func>.+)$')
_MESSAGE_SHOWN: Final = 100
_FAILED_SHOWN: Final = 5


_EXITS: Final = frozenset({"SystemExit", "KeyboardInterrupt"})
"""Raised by a task, they end the program as asked: counted as raised, not listed as failures."""


class Raised(NamedTuple):
    """What a span's ``exception`` event says, shortened for a line of text."""

    exception: str
    message: str
    """Its first line, up to 100 characters."""
    at: str | None
    """See :func:`raise_site`."""

    def text(self) -> str:
        """``KeyError: 'config' at app.py:7 in loader``."""
        raised = f"{self.exception}: {self.message}" if self.message else self.exception
        return f"{raised} at {self.at}" if self.at else raised


def counted(n: int, noun: str) -> str:
    """``1 task``, ``3 tasks``: a report reads as prose, not as ``task(s)``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def times(n: int) -> str:
    """``once``, ``3 times``."""
    return "once" if n == 1 else f"{n} times"


def waiting(n: int) -> str:
    """``no task waiting``, ``1 task waiting``, ``3 tasks waiting``."""
    return "no task waiting" if n == 0 else f"{counted(n, 'task')} waiting"


def were_waiting(n: int) -> str:
    """``no task was waiting``, ``1 task was waiting``, ``3 tasks were waiting``."""
    if n == 0:
        return "no task was waiting"
    return f"{counted(n, 'task')} {'was' if n == 1 else 'were'} waiting"


def one_line(message: str) -> str:
    """An exception's message as one line of a report: its first, up to 100 characters."""
    message = message.strip()
    message = message.splitlines()[0] if message else ""
    return message if len(message) <= _MESSAGE_SHOWN else message[: _MESSAGE_SHOWN - 3] + "..."


def raised(draft: SpanDraft) -> Raised | None:
    """The exception ``draft`` recorded (a task's that raised), if it recorded one."""
    attrs = next((a for name, _, a in draft.events if name == semconv.EVENT_EXCEPTION), None)
    if attrs is None:
        return None
    message = one_line(str(attrs.get(semconv.ATTR_EXCEPTION_MESSAGE) or ""))
    stacktrace = attrs.get(semconv.ATTR_EXCEPTION_STACKTRACE)
    return Raised(
        str(attrs.get(semconv.ATTR_EXCEPTION_TYPE) or "an exception"),
        message,
        raise_site(str(stacktrace)) if stacktrace else None,
    )


def raise_site(stacktrace: str) -> str | None:
    """Where an exception was raised, from its standard ``exception.stacktrace``.

    Read from the text, so that a trace file from another machine, or from
    another tool, reads alike; see :func:`innermost_site`.
    """
    frames = []
    for line in stacktrace.splitlines():
        found = _TRACEBACK_LINE.match(line)
        if found is not None:
            frames.append((found["file"], found["line"], found["func"]))
    # Of the last traceback printed: the exception's own, after its causes.
    return innermost_site(frames)


def raise_site_of(exc: BaseException) -> str | None:
    """Where ``exc`` was raised, from its traceback, as :func:`raise_site` reads one printed,
    but naming functions as findings do, by their qualified names (``main.<locals>.fetch``)."""
    frames: list[tuple[str, object, str]] = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, qualname(code)))
        tb = tb.tb_next
    return innermost_site(frames)


def innermost_site(frames: list[tuple[str, object, str]]) -> str | None:
    """``app.py:12 in fetch``: the innermost of (file, line, function) ``frames``, outermost
    first, asyncio's and aiotrace's left out.

    ``TimeoutError`` is raised in asyncio's ``wait_for``, but the line to look
    at is the program's that awaited it (aiotrace's wrappers only pass
    asyncio's exceptions on). When that frame is a library's (an HTTP
    client's), the program's innermost line is added: that is the line its
    author can change.
    """
    frames = [frame for frame in frames if not is_internal_file(frame[0])]
    if not frames:
        return None
    file, line, func = frames[-1]
    at = f"{short_path(file)}:{line} in {func}"
    if not is_library_file(file):
        return at
    for file, line, func in reversed(frames):
        if not is_library_file(file):
            return f"{at} via {short_path(file)}:{line} in {func}"
    return at


@dataclass
class NestedRow:
    """Waits of a holder inside its holds, while others queued for what it held.

    One row per (held primitive, where it was taken, what was waited for,
    where): the line that makes a queue for ``held`` long.
    """

    held: str
    held_at: str
    waited_for: str
    waited_at: str
    times: int = 0
    wait_ms: float = 0.0
    max_queued: int = 0

    def text(self) -> str:
        """One line, for the run report and the pytest summary alike.

        A library's wait names the program's line that led to it twice, once
        in what was waited for and once in where: said once, at the end.
        """
        waited_for = self.waited_for
        via = self.waited_at.rpartition(" via ")[2] if " via " in self.waited_at else None
        if via is not None and waited_for.endswith(f" via {via}"):
            waited_for = waited_for[: -len(f" via {via}")]
        return (
            f"{self.held}, taken at {self.held_at}, was held while waiting "
            f"{duration_text(self.wait_ms)} for {waited_for} at {self.waited_at} "
            f"({self.times} time{'s' if self.times != 1 else ''}; "
            f"up to {self.max_queued} queued behind)"
        )


@dataclass
class Report:
    """Plain data; see :func:`render`."""

    title: str = ""
    duration_s: float | None = None
    exit_code: int | None = None
    trace_id: str | None = None
    spans: int = 0
    primitives: list[PrimitiveRow] = field(default_factory=list)
    uncontended: int = 0
    """Primitives used only briefly and never waited on: not in ``primitives``."""
    uncontended_operations: int = 0
    longest_holds: list[HoldRow] = field(default_factory=list)
    longest_waits: list[WaitRow] = field(default_factory=list)
    """On events, conditions, barriers and queues (a lock's are answered by its holds)."""
    waits_while_holding: list[NestedRow] = field(default_factory=list)
    """Most waited first: see :class:`NestedRow`."""
    futures: dict[str, int] = field(default_factory=dict)
    future_p50_ms: float | None = None
    future_max_ms: float | None = None
    slowest_futures: list[FutureRow] = field(default_factory=list)
    """Futures that were waited for, longest to resolve first."""
    unresolved_futures: list[tuple[str, str, int, int]] = field(default_factory=list)
    """Name, outcome (pending or collected), waiters in all and how many such futures."""
    tasks: dict[str, int] = field(default_factory=dict)
    failed_tasks: list[FailedTaskRow] = field(default_factory=list)
    """Tasks that ended raising, grouped (see :class:`FailedTaskRow`), first to fail first."""
    failed_tasks_unlisted: int = 0
    """Tasks that raised past the groups kept: counted, not listed."""
    processes: int = 0
    """Traced processes whose spans are in the report (those whose process is known)."""
    stats: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)
    """Most severe first, one per kind and summary: ``kind``, ``summary``, the first
    occurrence's ``details``, and ``count`` (one leak made in a loop is one culprit)."""
    findings_unlisted: int = 0
    """Findings past the distinct ones kept: counted, not listed."""
    trace_file: str | None = None
    html_file: str | None = None
    html_bytes: int | None = None
    otlp_endpoint: str | None = None
    jaeger_url: str | None = None
    export_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A dict of plain types (for the collector to hand the report over)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The inverse of :meth:`to_json`."""
        rows = (
            "primitives",
            "longest_holds",
            "longest_waits",
            "waits_while_holding",
            "slowest_futures",
            "failed_tasks",
        )
        report = cls(**{k: v for k, v in data.items() if k not in rows})
        report.longest_waits = [WaitRow(**row) for row in data.get("longest_waits", ())]
        report.slowest_futures = [FutureRow(**row) for row in data.get("slowest_futures", ())]
        report.failed_tasks = [FailedTaskRow(**row) for row in data.get("failed_tasks", ())]
        report.primitives = [PrimitiveRow(**row) for row in data.get("primitives", ())]
        report.longest_holds = [HoldRow(**row) for row in data.get("longest_holds", ())]
        report.waits_while_holding = [
            NestedRow(**row) for row in data.get("waits_while_holding", ())
        ]
        report.unresolved_futures = [tuple(f) for f in report.unresolved_futures]  # type: ignore[misc]
        return report

    @property
    def findings_total(self) -> int:
        """Every finding, repeats and unlisted ones included."""
        return self.findings_after(0)

    def findings_after(self, listed: int) -> int:
        """How many findings a listing of the first ``listed`` distinct ones leaves out."""
        return sum(int(f["count"]) for f in self.findings[listed:]) + self.findings_unlisted


def _ms(draft: SpanDraft) -> float:
    return (draft.end - draft.start) / 1e6


def _code_site(attrs: dict[str, Any]) -> str:
    """``app.py:12``; a library's line with the program's that led there:
    ``aiohttp/streams.py:716 via app.py:40``."""
    path = attrs.get(semconv.ATTR_CODE_FILE_PATH)
    line = attrs.get(semconv.ATTR_CODE_LINE_NUMBER)
    site = f"{short_path(str(path))}:{line}" if path and line else "?"
    return via_text(site, attrs.get(semconv.ATTR_VIA_SITE))


def _waker_site(attrs: dict[str, Any]) -> str | None:
    """Where the waking call was (``set()``, ``set_result()``); ``via`` as in :func:`_code_site`."""
    at = attrs.get(semconv.ATTR_WAKER_SITE)
    return None if at is None else via_text(str(at), attrs.get(semconv.ATTR_WAKER_VIA_SITE))


def via_text(site: str, via: Any) -> str:
    """``aiohttp/streams.py:716 via app.py:40``: a library's line and the program's."""
    return f"{site} via {via}" if via else site


# What the pairing of holds and waits keeps per task, most recent last:
# a wait (start, end, what, where); a contended hold (start, end, what,
# where, how many queued).
_Wait = tuple[int, int, str, str]
_Hold = tuple[int, int, str, str, int]
_TaskKey = tuple[int | None, int, int, str]
"""A task, for pairing its waits with its holds: process, trace, parent span, name."""


_Row = TypeVar("_Row", HoldRow, WaitRow, FutureRow)


class _Longest(Generic[_Row]):
    """The longest row of each group (one primitive, one line), with how many and how long in all.

    Ten tasks holding one lock at one line are one culprit: listed once,
    the list has room for the next one. Groups are lines of code, so few;
    past :attr:`KEEP_GROUPS` a new group is not kept.
    """

    KEEP_GROUPS: Final = 4096

    def __init__(self) -> None:
        self._groups: dict[tuple[str, ...], list[Any]] = {}
        """Key -> [longest ms, order of arrival, its row, how many, total ms]."""

    def add(self, key: tuple[str, ...], ms: float, row: _Row) -> None:
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) < self.KEEP_GROUPS:
                self._groups[key] = [ms, len(self._groups), row, 1, ms]
            return
        group[3] += 1
        group[4] += ms
        if ms > group[0]:  # ties: the earlier stays
            group[0], group[2] = ms, row

    def top(self, size: int) -> list[_Row]:
        """The ``size`` longest groups' rows, longest first, each with its count and total."""
        ranked = sorted(self._groups.values(), key=lambda g: (-g[0], g[1]))[:size]
        rows = []
        for _, _, row, times, total in ranked:
            if times > 1:
                row = replace(row, times=times, total_ms=round(total, 3))
            rows.append(row)
        return rows


class ReportBuilder:
    """Aggregates drafts into a :class:`Report`, keeping only bounded state."""

    KEEP_HOLDS: Final = 5
    KEEP_FINDINGS: Final = 200
    KEEP_FUTURES: Final = 20
    KEEP_TTR: Final = 100_000
    KEEP_SLOW_FUTURES: Final = 5
    KEEP_FAILED_TASKS: Final = 200
    """Groups of tasks that raised (coroutine, exception, line) kept; the rest are counted."""
    KEEP_RECENT: Final = 16
    """Waits and contended holds kept per task for pairing (a wait ends inside its hold)."""
    KEEP_TASKS: Final = 4096
    """Tasks whose recent waits and holds are kept; the oldest is forgotten first."""
    KEEP_NESTED: Final = 1000

    def __init__(self) -> None:
        self._rows: dict[_RowKey, PrimitiveRow] = {}
        self._summary: dict[_RowKey, PrimitiveRow] = {}
        self._thresholds: dict[_RowKey, list[float]] = {}
        """Per summary row: the largest ``min_wait`` and ``min_hold`` (ms) it was counted under."""
        self._named: dict[_RowKey, str] = {}
        self._holds: _Longest[HoldRow] = _Longest()
        self._waits: _Longest[WaitRow] = _Longest()
        self._futures: dict[str, int] = {}
        self._ttr: list[float] = []
        self._slow_futures: _Longest[FutureRow] = _Longest()
        self._unresolved: dict[tuple[str, str], list[int]] = {}
        self._tasks: dict[str, int] = {}
        self._failed: dict[tuple[str | None, str, str | None, int | None], FailedTaskRow] = {}
        self._failed_unlisted = 0
        self._spans = 0
        self._run: SpanDraft | None = None
        self._findings: dict[tuple[str, str], dict[str, Any]] = {}
        self._findings_unlisted = 0
        self._trace_ids: dict[int, int] = {}
        self._recent: dict[_TaskKey, tuple[deque[_Wait], deque[_Hold]]] = {}
        self._nested: dict[tuple[str, str, str, str], NestedRow] = {}
        self._getters: dict[int, set[tuple[int | None, str]]] = {}
        """id(queue row) -> the tasks seen waiting to get from it (see ``gets_given_back``)."""
        self._pids: set[int] = set()
        self._pid: int | None = None
        """The process of the batch being added."""

    def add(self, drafts: Iterable[SpanDraft], process: int | None = None) -> None:
        """Take a batch of finished spans, all from ``process`` (its pid) if given.

        Tasks are named per process ("Task-3" in every worker of a pool):
        with several processes, the rows that name tasks say whose.
        """
        self._pid = process
        if process is not None:
            self._pids.add(process)
        for draft in drafts:
            self._spans += 1
            name = draft.name
            attrs = draft.attributes
            if len(self._trace_ids) < 64 or draft.trace_id in self._trace_ids:
                self._trace_ids[draft.trace_id] = self._trace_ids.get(draft.trace_id, 0) + 1
            if name in _WAIT_SPANS:
                row = self._row(attrs)
                if row is not None:
                    ms = _ms(draft)
                    row.waits += 1
                    row.wait_ms += ms
                    row.max_wait_ms = max(row.max_wait_ms, ms)
                    row.max_waiters = max(
                        row.max_waiters, int(attrs.get(semconv.ATTR_WAITERS_AHEAD, 0)) + 1
                    )
                    outcome = attrs.get(semconv.ATTR_OUTCOME)
                    if outcome in _ABANDONED:
                        row.abandoned += 1
                        if outcome == semconv.OUTCOME_TIMEOUT:
                            row.timed_out += 1
                            row.max_timed_out_ms = max(row.max_timed_out_ms, ms)
                    capacity = attrs.get(semconv.ATTR_SEMAPHORE_CAPACITY)
                    if capacity is not None:
                        row.capacity = int(capacity)
                    if (
                        name not in _OWNED_WAITS
                        and attrs.get(semconv.ATTR_OUTCOME) != semconv.OUTCOME_CANCELLED
                    ):  # a cancelled wait was ended by no one: a worker stopped, as a rule
                        self._long_wait(ms, row, attrs)
                    operation = _QUEUE_WAITS.get(name)
                    if operation is not None:
                        counts = row.by_operation.setdefault(operation, [0, 0.0])
                        counts[0] += 1
                        counts[1] += ms
                        maxsize = attrs.get(semconv.ATTR_QUEUE_MAXSIZE)
                        if maxsize is not None:
                            row.capacity = int(maxsize)
                        if operation == "get":
                            self._get_waited(row, attrs)
                    self._pair_wait(draft, row.name)
            elif name in _HOLD_SPANS:
                row = self._row(attrs)
                if row is not None:
                    ms = _ms(draft)
                    row.holds += 1
                    row.max_hold_ms = max(row.max_hold_ms, ms)
                    self._hold(ms, row, attrs)
                    self._pair_hold(draft, row.name)
            elif name == semconv.SPAN_FUTURE_WAIT:
                self._pair_wait(draft, str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, "a future")))
            elif name == semconv.SPAN_FUTURE:
                self._future(draft)
            elif name == semconv.SPAN_TASK:
                outcome = str(attrs.get(semconv.ATTR_OUTCOME, "unknown"))
                self._tasks[outcome] = self._tasks.get(outcome, 0) + 1
                if outcome == semconv.OUTCOME_RAISED:
                    failure = raised(draft)
                    if failure is not None and failure.exception not in _EXITS:
                        self._failed_task(draft, failure)
            elif name == semconv.SPAN_FINDING:
                self._finding(attrs)
            elif name in (semconv.SPAN_RUN, semconv.SPAN_PROCESS, semconv.SPAN_TEST_SESSION):
                if name == semconv.SPAN_RUN:
                    self._run = draft
                self._summaries(draft)

    _GETTERS_KEPT: Final = 10_000

    def _get_waited(self, row: PrimitiveRow, attrs: dict[str, Any]) -> None:
        """Count, for a queue, whether the put that ended a get's wait was a getter's."""
        getters = self._getters.get(id(row))
        if getters is None:
            getters = self._getters[id(row)] = set()
        putter = attrs.get(semconv.ATTR_WAKER_TASK)
        if putter is not None and attrs.get(semconv.ATTR_OUTCOME) == semconv.OUTCOME_GOT:
            if not row.gets_given_back:
                row.gets_given_back = [0, 0]
            via = attrs.get(semconv.ATTR_VIA_SITE)
            row.gets_given_back[0] += (self._pid, str(putter)) in getters or (
                via is not None and via == attrs.get(semconv.ATTR_WAKER_VIA_SITE)
            )
            row.gets_given_back[1] += 1
        task = attrs.get(semconv.ATTR_TASK_NAME)
        if task is not None and len(getters) < self._GETTERS_KEPT:
            getters.add((self._pid, str(task)))

    def _row(self, attrs: dict[str, Any]) -> PrimitiveRow | None:
        site = attrs.get(semconv.ATTR_PRIMITIVE_SITE)
        kind = attrs.get(semconv.ATTR_PRIMITIVE_KIND)
        if site is None or kind is None:
            return None
        key = _row_key(attrs, str(kind), str(site))
        row = self._rows.get(key)
        name = str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, site))
        if row is None:
            row = self._rows[key] = PrimitiveRow(name=name, kind=key[0], site=key[1], via=key[2])
        if key[3] is None and name != site:
            self._named[key] = name  # an explicit aiotrace.name(): show it
        return row

    def _hold(self, ms: float, row: PrimitiveRow, attrs: dict[str, Any]) -> None:
        entry = HoldRow(
            ms=round(ms, 3),
            primitive=row.name,
            holder=str(attrs.get(semconv.ATTR_TASK_NAME, "?")),
            site=_code_site(attrs),
            waiters=int(attrs.get(semconv.ATTR_WAITERS_DURING, 0)),
            process=self._pid,
        )
        self._holds.add((entry.primitive, entry.site), ms, entry)

    def _long_wait(self, ms: float, row: PrimitiveRow, attrs: dict[str, Any]) -> None:
        by = attrs.get(semconv.ATTR_WAKER_TASK)
        by_at = _waker_site(attrs)
        entry = WaitRow(
            ms=round(ms, 3),
            primitive=row.name,
            task=str(attrs.get(semconv.ATTR_TASK_NAME, "?")),
            at=_code_site(attrs),
            outcome=str(attrs.get(semconv.ATTR_OUTCOME, "?")),
            by=str(by) if by is not None else None,
            by_at=by_at,
            process=self._pid,
        )
        self._waits.add((entry.primitive, entry.at, entry.outcome, entry.by_at or ""), ms, entry)

    def _recent_of(self, draft: SpanDraft) -> tuple[deque[_Wait], deque[_Hold]] | None:
        task = draft.attributes.get(semconv.ATTR_TASK_NAME)
        if task is None:
            return None
        # The parent tells tasks of one name apart: its task's span, or with
        # no task spans its process's (xdist workers each have a "Task-3").
        key = (self._pid, draft.trace_id, draft.parent_id, str(task))
        recent = self._recent.get(key)
        if recent is None:
            if len(self._recent) >= self.KEEP_TASKS:
                del self._recent[next(iter(self._recent))]
            recent = self._recent[key] = (
                deque(maxlen=self.KEEP_RECENT),
                deque(maxlen=self.KEEP_RECENT),
            )
        return recent

    def _pair_wait(self, draft: SpanDraft, what: str) -> None:
        # Spans arrive as they end, a wait before the hold around it as a
        # rule; a trace file read back may order them otherwise, so each
        # side looks for the other and whichever comes second pairs them.
        recent = self._recent_of(draft)
        if recent is None:
            return
        wait = (draft.start, draft.end, what, _code_site(draft.attributes))
        recent[0].append(wait)
        for hold in recent[1]:
            if hold[0] <= wait[0] and wait[1] <= hold[1]:
                self._nest(hold, wait)

    def _pair_hold(self, draft: SpanDraft, what: str) -> None:
        queued = int(draft.attributes.get(semconv.ATTR_WAITERS_DURING, 0))
        if not queued:
            return  # nobody waited for it: whatever its holder did cost no one
        recent = self._recent_of(draft)
        if recent is None:
            return
        hold = (draft.start, draft.end, what, _code_site(draft.attributes), queued)
        recent[1].append(hold)
        for wait in recent[0]:
            if hold[0] <= wait[0] and wait[1] <= hold[1]:
                self._nest(hold, wait)

    def _nest(self, hold: _Hold, wait: _Wait) -> None:
        key = (hold[2], hold[3], wait[2], wait[3])
        row = self._nested.get(key)
        if row is None:
            if len(self._nested) >= self.KEEP_NESTED:
                return
            row = self._nested[key] = NestedRow(
                held=hold[2], held_at=hold[3], waited_for=wait[2], waited_at=wait[3]
            )
        row.times += 1
        row.wait_ms += (wait[1] - wait[0]) / 1e6
        row.max_queued = max(row.max_queued, hold[4])

    def _finding(self, attrs: dict[str, Any]) -> None:
        kind = str(attrs.get(semconv.ATTR_FINDING_KIND, "?"))
        summary = str(attrs.get(semconv.ATTR_FINDING_SUMMARY, ""))
        same = self._findings.get((kind, summary))
        if same is not None:
            same["count"] += 1
        elif len(self._findings) < self.KEEP_FINDINGS:
            self._findings[kind, summary] = {
                "kind": kind,
                "summary": summary,
                "details": str(attrs.get(semconv.ATTR_FINDING_DETAIL, "")).split("\n"),
                "count": 1,
            }
        else:
            self._findings_unlisted += 1

    def _future(self, draft: SpanDraft) -> None:
        attrs = draft.attributes
        outcome = str(attrs.get(semconv.ATTR_OUTCOME, "unknown"))
        self._futures[outcome] = self._futures.get(outcome, 0) + 1
        if outcome in (semconv.OUTCOME_PENDING, semconv.OUTCOME_COLLECTED):
            key = (str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, "?")), outcome)
            same = self._unresolved.get(key)
            if same is None and len(self._unresolved) < self.KEEP_FUTURES:
                same = self._unresolved[key] = [0, 0]
            if same is not None:
                same[0] += int(attrs.get(semconv.ATTR_FUTURE_WAITERS, 0))
                same[1] += 1
            return
        ttr = attrs.get(semconv.ATTR_FUTURE_TIME_TO_RESOLVE)
        if ttr is None:
            return
        if len(self._ttr) < self.KEEP_TTR:
            self._ttr.append(float(ttr))
        waiters = int(attrs.get(semconv.ATTR_FUTURE_WAITERS, 0))
        if not waiters:
            return  # nobody waited: its time cost no one
        by = attrs.get(semconv.ATTR_WAKER_TASK)
        at = _waker_site(attrs)
        entry = FutureRow(
            ms=round(float(ttr), 3),
            future=str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, "?")),
            outcome=outcome,
            by=str(by) if by is not None else None,
            at=at,
            waiters=waiters,
            process=self._pid,
        )
        self._slow_futures.add((entry.future, entry.outcome, entry.at or ""), float(ttr), entry)

    def _failed_task(self, draft: SpanDraft, failure: Raised) -> None:
        coroutine = draft.attributes.get(semconv.ATTR_TASK_COROUTINE)
        coroutine = str(coroutine) if coroutine is not None else None
        key = (coroutine, failure.exception, failure.at, self._pid)
        row = self._failed.get(key)
        if row is not None:
            row.times += 1
            if draft.end < row.first_ns:  # batches need not arrive in order
                self._failed[key] = self._failed_row(draft, coroutine, failure, row.times)
            return
        if len(self._failed) >= self.KEEP_FAILED_TASKS:
            self._failed_unlisted += 1
            return
        self._failed[key] = self._failed_row(draft, coroutine, failure, 1)

    def _failed_row(
        self, draft: SpanDraft, coroutine: str | None, failure: Raised, times: int
    ) -> FailedTaskRow:
        return FailedTaskRow(
            task=str(draft.attributes.get(semconv.ATTR_TASK_NAME, "?")),
            coroutine=coroutine,
            exception=failure.exception,
            message=failure.message,
            at=failure.at,
            process=self._pid,
            times=times,
            first_ns=draft.end,
        )

    def _summaries(self, draft: SpanDraft) -> None:
        for name, _, attrs in draft.events:
            if name != semconv.EVENT_PRIMITIVE_SUMMARY:
                continue
            kind = str(attrs.get(semconv.ATTR_PRIMITIVE_KIND, "?"))
            site = str(attrs.get(semconv.ATTR_PRIMITIVE_SITE, "?"))
            key = _row_key(attrs, kind, site)
            row = self._summary.get(key)
            if row is None:
                row = self._summary[key] = PrimitiveRow(
                    name=str(attrs.get(semconv.ATTR_PRIMITIVE_NAME, site)),
                    kind=kind,
                    site=site,
                    via=key[2],
                )
            row.operations += int(attrs.get(semconv.ATTR_OPERATIONS, 0))
            row.waits += int(attrs.get(semconv.ATTR_SUMMARY_WAITS, 0))
            row.wait_ms += float(attrs.get(semconv.ATTR_SUMMARY_WAIT_MS, 0.0))
            row.max_wait_ms = max(
                row.max_wait_ms, float(attrs.get(semconv.ATTR_SUMMARY_MAX_WAIT_MS, 0.0))
            )
            row.holds += int(attrs.get(semconv.ATTR_SUMMARY_HOLDS, 0))
            row.max_hold_ms = max(
                row.max_hold_ms, float(attrs.get(semconv.ATTR_SUMMARY_MAX_HOLD_MS, 0.0))
            )
            capacity = attrs.get(semconv.ATTR_SEMAPHORE_CAPACITY)
            if capacity is not None:
                row.capacity = int(capacity)
            held_at = attrs.get(semconv.ATTR_SUMMARY_HELD_AT) or ()
            samples = attrs.get(semconv.ATTR_SUMMARY_HELD_AT_SAMPLES) or ()
            for line, count in zip(held_at, samples, strict=False):
                row.held_at[str(line)] = row.held_at.get(str(line), 0) + int(count)
            row.held_samples += int(attrs.get(semconv.ATTR_SUMMARY_HELD_SAMPLES, 0))
            # Children of one run may differ; the largest bounds them all.
            bounds = self._thresholds.setdefault(key, [0.0, 0.0])
            bounds[0] = max(bounds[0], float(attrs.get(semconv.ATTR_SUMMARY_MIN_WAIT_MS, 0.0)))
            bounds[1] = max(bounds[1], float(attrs.get(semconv.ATTR_SUMMARY_MIN_HOLD_MS, 0.0)))

    def build(self, **extra: Any) -> Report:
        """The report so far; ``extra`` sets fields such as ``trace_file`` or ``stats``."""
        rows: dict[_RowKey, PrimitiveRow] = {}
        for key, row in self._rows.items():
            rows[key] = PrimitiveRow(**asdict(row))
        for row in rows.values():  # spans alone: every wait and hold counted was spanned
            if row.kind in _HOLDERS:
                row.times_held = row.holds
        for key, total in self._summary.items():
            spanned = rows.get(key)
            merged = PrimitiveRow(**asdict(total))
            if merged.kind in _HOLDERS:
                # Each release is one operation: a short uncontended hold is counted there.
                merged.times_held = max(merged.operations, merged.holds)
            if spanned is not None:
                # The summary counts every wait; spans add queue depth and abandonment.
                merged.max_waiters = spanned.max_waiters
                merged.abandoned = spanned.abandoned
                merged.timed_out = spanned.timed_out
                merged.max_timed_out_ms = spanned.max_timed_out_ms
                merged.max_wait_ms = max(merged.max_wait_ms, spanned.max_wait_ms)
                merged.max_hold_ms = max(merged.max_hold_ms, spanned.max_hold_ms)
                merged.capacity = merged.capacity or spanned.capacity
                merged.by_operation = spanned.by_operation
                merged.gets_given_back = spanned.gets_given_back
            min_wait, min_hold = self._thresholds.get(key, (0.0, 0.0))
            merged.max_wait_under_ms = _longest_under(
                merged.max_wait_ms, spanned.waits if spanned else 0, merged.waits, min_wait
            )
            merged.max_hold_under_ms = _longest_under(
                merged.max_hold_ms, spanned.holds if spanned else 0, merged.times_held, min_hold
            )
            rows[key] = merged
        for key, name in self._named.items():
            if key in rows:
                rows[key].name = name
        ranked = sorted(
            (r for r in rows.values() if r.waits or r.holds),
            key=lambda r: (r.wait_ms, r.max_hold_ms),
            reverse=True,
        )
        for row in ranked:
            for counts in row.by_operation.values():
                counts[1] = round(counts[1], 3)
            row.wait_ms = round(row.wait_ms, 3)
            row.max_wait_ms = round(row.max_wait_ms, 3)
            row.max_hold_ms = round(row.max_hold_ms, 3)
            row.max_timed_out_ms = round(row.max_timed_out_ms, 3)
        quiet = [r for r in rows.values() if not (r.waits or r.holds) and r.operations]
        report = Report(
            spans=self._spans,
            primitives=ranked,
            uncontended=len(quiet),
            uncontended_operations=sum(r.operations for r in quiet),
            longest_holds=self._holds.top(self.KEEP_HOLDS),
            longest_waits=self._waits.top(self.KEEP_HOLDS),
            waits_while_holding=sorted(
                (
                    NestedRow(**{**asdict(row), "wait_ms": round(row.wait_ms, 3)})
                    for row in self._nested.values()
                ),
                key=lambda row: row.wait_ms,
                reverse=True,
            ),
            futures=dict(self._futures),
            unresolved_futures=[
                (name, outcome, waiters, count)
                for (name, outcome), (waiters, count) in self._unresolved.items()
            ],
            slowest_futures=self._slow_futures.top(self.KEEP_SLOW_FUTURES),
            tasks=dict(self._tasks),
            failed_tasks=sorted(self._failed.values(), key=lambda row: row.first_ns),
            failed_tasks_unlisted=self._failed_unlisted,
            processes=len(self._pids),
            findings=_by_severity(list(self._findings.values())),
            findings_unlisted=self._findings_unlisted,
        )
        if self._ttr:
            ordered = sorted(self._ttr)
            report.future_p50_ms = round(ordered[len(ordered) // 2], 3)
            report.future_max_ms = round(ordered[-1], 3)
        run = self._run
        if run is not None:
            report.duration_s = round((run.end - run.start) / 1e9, 3)
            report.trace_id = f"{run.trace_id:032x}"
            code = run.attributes.get(semconv.ATTR_EXIT_CODE)
            report.exit_code = int(code) if code is not None else None
            report.title = str(
                run.attributes.get("service.name") or run.attributes.get("aiotrace.program", "")
            )
        elif self._trace_ids:
            busiest = max(self._trace_ids.items(), key=lambda item: item[1])[0]
            report.trace_id = f"{busiest:032x}"
        for field_name, value in extra.items():
            setattr(report, field_name, value)
        return report


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


_URGENT: Final = frozenset({semconv.FINDING_DEADLOCK, semconv.FINDING_HANG})


def _by_severity(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = semconv.FINDING_SEVERITY

    def rank(finding: dict[str, Any]) -> int:
        kind = finding.get("kind")
        return order.index(kind) if kind in order else len(order)

    return sorted(findings, key=rank)


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def task_text(task: str, process: int | None, several: bool) -> str:
    """``Task-3``, or ``Task-3 in process 4242`` when ``several`` processes share task names."""
    return f"{task} in process {process}" if several and process is not None else task


def wait_text(row: WaitRow, several: bool = False) -> str:
    """Who waited where, for what, and who ended the wait (the setter, the notifier).

    ``several``: the run had several processes (see :func:`task_text`).
    """
    ended = row.outcome
    if row.by:
        ended += f", woken by {row.by}" + (f" at {row.by_at}" if row.by_at else "")
    task = task_text(row.task, row.process, several)
    return (
        f"{duration_text(row.ms):>8}  {task} at {row.at}, for {row.primitive}: {ended}"
        + times_text(row, "such waits")
    )


def times_text(row: HoldRow | WaitRow | FutureRow, what: str) -> str:
    """``; 4 holds there, 200 ms in all`` for a row that stands for several, else nothing."""
    if row.times <= 1 or row.total_ms is None:
        return ""
    return f"; {row.times} {what} there, {duration_text(row.total_ms)} in all"


_RESOLVED: Final = {
    semconv.OUTCOME_RESULT: "its result set",
    semconv.OUTCOME_EXCEPTION: "its exception set",
    semconv.OUTCOME_CANCELLED: "cancelled",
}


def future_text(row: FutureRow, several: bool = False) -> str:
    """Who kept a waited-for future's waiters waiting: the task that resolved it, and where."""
    what = _RESOLVED.get(row.outcome, row.outcome)
    by = f" by {task_text(row.by, row.process, several)}" if row.by else ""
    at = f" at {row.at}" if row.at else ""
    waited = f"{row.waiters} task{'s' if row.waiters != 1 else ''} waited"
    return f"{duration_text(row.ms):>8}  {row.future}: {what}{by}{at}; {waited}" + times_text(
        row, "such futures"
    )


def semaphore_text(row: PrimitiveRow) -> str:
    """A semaphore's line: how often all its permits were taken, and for how long."""
    if row.capacity == semconv.CAPACITIES_VARY:
        capacity = "capacities vary"
    else:
        capacity = f"capacity {row.capacity}" if row.capacity is not None else "capacity ?"
    acquisitions = row.operations or row.holds
    if not row.waits:
        return f"{row.name}: {capacity}; never waited on in {acquisitions} acquisitions"
    # A wait given up (cancelled, timed out) is no acquisition: "18 of 14 waited" before.
    waited = max(0, row.waits - row.abandoned)
    share = f" ({100 * waited / acquisitions:.0f}%)" if acquisitions else ""
    gave_up = (
        f"; {row.abandoned} more wait{'s' if row.abandoned != 1 else ''} given up "
        "(cancelled or timed out)"
        if row.abandoned
        else ""
    )
    return (
        f"{row.name}: {capacity}; {waited} of {acquisitions or '?'} acquisitions "
        f"waited{share}{gave_up}, {duration_text(row.wait_ms)} in total, "
        f"up to {row.max_waiters} queued"
    )


def timed_out_text(row: PrimitiveRow) -> str:
    """``5 of 6 waits timed out, after up to 51 ms``: callers that gave up on a lock."""
    of = f" of {row.waits}" if row.waits > row.timed_out else ""
    waits = f"{row.timed_out}{of} wait{'s' if row.waits != 1 else ''}"
    return f"{waits} timed out, after up to {duration_text(row.max_timed_out_ms)}"


POOL_EVIDENCE: Final = 3
"""Gets woken by a put, at least, before a queue is called a pool. A library's tasks all
trace back to one program line (``uvicorn.run(app)``): uvicorn's lifespan queue, one get
woken by its server's put, both "via" that line, read as a borrower giving back."""


def queue_text(row: PrimitiveRow) -> str:
    """Which side of a queue waited: the answer to "who is too slow?"."""
    size = f"maxsize {row.capacity}" if row.capacity else "unbounded"
    parts = []
    for operation in ("put", "get", "join"):
        count, ms = row.by_operation.get(operation, (0, 0.0))
        if count:
            parts.append(f"{operation} waited {times(int(count))}, {duration_text(ms)}")
    puts = row.by_operation.get("put", (0, 0.0))[1]
    gets = row.by_operation.get("get", (0, 0.0))[1]
    verdict = ""
    given_back, woken = row.gets_given_back or (0, 0)
    if gets > puts and woken >= POOL_EVIDENCE and given_back * 2 > woken:
        verdict = (
            f" (a pool: {given_back} of {woken} gets waited for an item a borrower gave back:"
            " too few items, or each held too long)"
        )
    elif puts > gets:
        verdict = " (full more than empty: its consumers fall behind)"
    elif gets > puts and not row.capacity:
        # Never full: its consumers waiting says only that they had nothing to do
        # (a server's queue of requests, a lifespan's of events), or a slow feed.
        verdict = " (its consumers waited for items: idle, or fed by a slow producer)"
    elif gets > puts:
        verdict = " (empty more than full: its producers fall behind)"
    return f"{row.name}: {size}; {'; '.join(parts)}{verdict}"


STACK_HEADING: Final = "stack while it blocked:"
"""The line a loop block's details begin its stack with."""


def detail_lines(finding: dict[str, Any], budget: int) -> list[str]:
    """At most ``budget`` of a finding's detail lines, the ones that say most.

    A loop block's details end with a stack, outermost first: where it blocked
    is at the end, so a short listing keeps what comes before the stack (under
    pytest, during which tests), its heading, and its last lines. Anything
    else leads with what matters (who waits on what).
    """
    lines = [line for line in finding.get("details", []) if line]
    if len(lines) <= budget:
        return lines
    if finding.get("kind") == semconv.FINDING_LOOP_BLOCKED:
        head = next((n + 1 for n, line in enumerate(lines) if line == STACK_HEADING), 1)
        if budget > head:
            return [*lines[:head], *lines[len(lines) - budget + head :]]
    return lines[:budget]


def repeats_text(finding: dict[str, Any]) -> str:
    """`` (200 times; the first shown)`` for a finding made more than once, else nothing."""
    count = finding["count"]
    return f"  ({count} times; the first shown)" if count > 1 else ""


def duration_text(ms: float) -> str:
    """Milliseconds as people read them: ``3.2 ms``, ``45 ms``, ``1.20 s``."""
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    if ms >= 10:
        return f"{ms:.0f} ms"
    return f"{ms:.1f} ms"


def jaeger_link(base: str, trace_id: str) -> str:
    """Where Jaeger's UI shows a trace."""
    return f"{base.rstrip('/')}/trace/{trace_id}"


def console_for(stderr: bool = True) -> Console:
    """A console at least 100 columns wide: reports go to CI logs as often as terminals."""
    import shutil

    from rich.console import Console

    from aiotrace._stderr import STDERR

    width = max(shutil.get_terminal_size((120, 24)).columns, 100)
    if stderr:  # aiotrace's own stderr: whatever the program did to sys.stderr
        return Console(file=STDERR, highlight=False, width=width)  # type: ignore[arg-type]
    return Console(highlight=False, width=width)


def print_plain(console: Console, text: str, style: str | None = None) -> None:
    """A line users copy (paths, URLs, commands): never wrapped, never read as markup."""
    console.print(text, style=style, soft_wrap=True, markup=False, highlight=False)


def render(report: Report, console: Console, limit: int = 10) -> None:
    """Print the report: findings first, then contention, futures, tasks, delivery."""
    from rich import box  # rich is imported only to print
    from rich.table import Table

    title = report.title or "aiotrace"
    head = f"aiotrace: {title}"
    if report.duration_s is not None:
        head += f" ran {report.duration_s:.2f} s"
    if report.exit_code not in (None, 0):
        head += f", exit status {report.exit_code}"
    console.rule(f"[bold]{head}")

    if report.findings:
        console.print(f"[bold red]Findings ({report.findings_total}), most severe first")
        for finding in report.findings[: limit * 3]:
            style = "bold red" if finding["kind"] in _URGENT else "bold yellow"
            console.print(f"[{style}]{finding['kind'].upper()}[/]: ", end="")
            print_plain(console, finding["summary"] + repeats_text(finding))
            for line in detail_lines(finding, 40):
                print_plain(console, f"    {line}")
        unlisted = report.findings_after(limit * 3)
        if unlisted:
            console.print(f"  ... and {counted(unlisted, 'more finding')}")

    if report.primitives:
        table = Table(
            title="Primitives, by total time waited", box=box.SIMPLE_HEAD, title_justify="left"
        )
        for column in (
            "primitive",
            "kind",
            "waits",
            "waited",
            "longest wait",
            "holds",
            "longest hold",
        ):
            table.add_column(column, justify="left" if column in ("primitive", "kind") else "right")
        for row in report.primitives[:limit]:
            table.add_row(
                row.name,
                row.kind,
                str(row.waits),
                duration_text(row.wait_ms) if row.waits else "-",
                row.longest_wait_text() if row.waits else "-",
                str(row.times_held) if row.times_held else "-",
                row.longest_hold_text() if row.times_held else "-",
            )
        console.print(table)
        if len(report.primitives) > limit:
            console.print(f"  ... and {len(report.primitives) - limit} more")
    else:
        console.print("No contention: no wait or hold passed its threshold.")
    if report.uncontended:
        kind = "other primitive" if report.primitives else "primitive"
        console.print(
            f"  {counted(report.uncontended, kind)} used {times(report.uncontended_operations)}, "
            "never waited on and never held long"
        )

    several = report.processes > 1  # then task names need their process
    if report.longest_holds:
        console.print("[bold]Longest holds")
        for hold in report.longest_holds:
            waiting = f" ({hold.waiters} waiting)" if hold.waiters else ""
            # Unknown: taken by a coroutine that returned holding it, released elsewhere.
            holder = (
                f" by {task_text(hold.holder, hold.process, several)}" if hold.holder != "?" else ""
            )
            print_plain(
                console,
                f"  {duration_text(hold.ms):>8}  {hold.primitive} held{holder} "
                f"at {hold.site}{waiting}{times_text(hold, 'holds')}",
            )

    held = [(row, text) for row in report.primitives[:limit] if (text := row.held_at_text())]
    if held:
        console.print("[bold]Where holders were[/] while others waited (sampled every 10 ms)")
        for row, text in held:
            print_plain(console, f"  {row.name}: {text}")

    timed_out = [row for row in report.primitives if row.kind in _HOLDERS and row.timed_out]
    if timed_out:
        console.print("[bold]Waits that timed out[/] on locks and semaphores")
        for row in timed_out[:limit]:
            print_plain(console, f"  {row.name}: {timed_out_text(row)}")

    if report.longest_waits:
        console.print("[bold]Longest waits[/] on events, conditions, barriers and queues")
        for wait in report.longest_waits:
            print_plain(console, f"  {wait_text(wait, several)}")

    if report.waits_while_holding:
        console.print("[bold]Waited while holding[/] (others queued for what was held)")
        for nested in report.waits_while_holding[:5]:
            print_plain(console, f"  {nested.text()}")

    semaphores = [r for r in report.primitives if r.kind in _SEMAPHORES]
    if semaphores:
        console.print("[bold]Semaphores")
        for row in semaphores:
            print_plain(console, f"  {semaphore_text(row)}")

    queues = [r for r in report.primitives if r.by_operation]
    if queues:
        console.print("[bold]Queues[/] (waits that became spans)")
        for row in queues[:limit]:
            print_plain(console, f"  {queue_text(row)}")

    if report.futures:
        total = sum(report.futures.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(report.futures.items()))
        line = f"[bold]Futures[/]: {total} ({parts})"
        if report.future_p50_ms is not None and report.future_max_ms is not None:
            line += (
                f"; time to resolve p50 {duration_text(report.future_p50_ms)}, "
                f"max {duration_text(report.future_max_ms)}"
            )
        if report.slowest_futures:
            # The max can be a future nobody awaited, which the list leaves out.
            line += "; waited for longest:"
        console.print(line)
        for slow in report.slowest_futures[:3]:
            print_plain(console, f"  {future_text(slow, several)}")
        for name, outcome, waiters, count in report.unresolved_futures:
            what = (
                "never resolved"
                if outcome == semconv.OUTCOME_PENDING
                else "garbage-collected unresolved"
            )
            made = f" ({count} futures made there)" if count > 1 else ""
            console.print(f"  [yellow]{name}[/]: {what}{made}, {were_waiting(waiters)}")

    if report.tasks:
        total = sum(report.tasks.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(report.tasks.items()))
        console.print(f"[bold]Tasks[/]: {total} ({parts})")
        failed = report.failed_tasks
        shown = min(limit, _FAILED_SHOWN)
        for failure in failed[:shown]:
            print_plain(console, f"  {failure.text(several)}")
        more = sum(failure.times for failure in failed[shown:]) + report.failed_tasks_unlisted
        if more:
            console.print(f"  and {more} more that raised")

    stats = report.stats
    if stats:
        counts = [f"{stats.get('spans_built', report.spans)} built"]
        if "spans_written" in stats:
            counts.append(f"{stats['spans_written']} written to the trace file")
        if "spans_exported" in stats:
            counts.append(f"{stats['spans_exported']} exported over OTLP")
        if stats.get("spans_not_exported"):
            counts.append(f"[red]{stats['spans_not_exported']} not exported[/]")
        dropped = stats.get("spans_dropped", 0)
        counts.append(f"[red]{dropped} dropped[/]" if dropped else "0 dropped")
        line = f"[bold]Spans[/]: {', '.join(counts)}; "
        line += f"{counted(stats.get('below_threshold', 0), 'operation')} below threshold"
        if stats.get("internal_errors"):
            line += f"; [red]{stats['internal_errors']} internal errors[/]"
        if stats.get("pressure_timeouts"):
            line += (
                f"; [yellow]the program stopped waiting for the span pipeline "
                f"{stats['pressure_timeouts']} times (memory grew meanwhile)[/]"
            )
        if stats.get("holders_unnamed"):
            line += (
                f"; [yellow]{stats['holders_unnamed']} holds released by another task "
                "went without their holder's name (the lookup's time budget was spent)[/]"
            )
        console.print(line)
    for note in report.notes:
        console.print(f"[yellow]{note}")
    if report.trace_file:
        print_plain(console, f"Trace file: {report.trace_file}")
    if report.html_file:
        print_plain(console, f"HTML timeline: {report.html_file} ({_size(report.html_bytes or 0)})")
    if report.export_error:
        print_plain(console, f"OTLP export failed: {report.export_error}", "red")
    elif report.otlp_endpoint:
        print_plain(console, f"Exported over OTLP to {report.otlp_endpoint}")
    if report.jaeger_url and report.trace_id and not report.export_error:
        print_plain(console, f"Jaeger: {jaeger_link(report.jaeger_url, report.trace_id)}")
