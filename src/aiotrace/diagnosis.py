"""Diagnosis: name the culprit: deadlocks, hangs, leaks, lock-order inversions, loop blocks.

Spans say what happened; this module says what went wrong. Its pieces:

* the **wait-for graph** (:func:`snapshot`): every pending task, what it is
  blocked on (``task._fut_waiter`` mapped back to the lock, semaphore,
  event, condition, queue, task or future behind it), and which tasks could
  end that wait: the holder of a lock, the holders of a semaphore's permits,
  an awaited task, the creator of an awaited future. A set of tasks none of
  which can be released from outside the set is a **deadlock**; cycles are
  found with an AND/OR knot test, so a semaphore wait is stuck only if every
  permit holder is, and a ``gather`` as soon as one child is;
* the **watchdog** (:class:`Watchdog`), a thread that pings every event
  loop it finds: a ping that does not run within ``block_threshold`` means a
  callback or task step is blocking the loop, and the loop thread's stack is
  sampled *while it blocks*; every half second the ping also checks the
  graph for deadlocks, and whether the loop can make progress at all (no
  ready callbacks, no timers, no I/O, no busy executor or other thread): a
  **hang**. ``hang_timeout`` also bounds the whole run;
* **findings** (:class:`Finding`): one per problem, most severe first,
  printed at once when urgent, and emitted as ``aiotrace.finding`` spans
  (linked to the spans of the tasks involved) so Jaeger users see them and
  reports rebuild them from a trace file.

Lock-order checking lives next to the locks (``primitives/_lock_order``);
this module turns its inversions into findings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import selectors
import sys
import sysconfig
import threading
import time
import traceback
import types
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeVar

from aiotrace import _fork, _stderr, _threads, semconv
from aiotrace._context import TASK_SPANS
from aiotrace._loops import (
    call_soon_threadsafe,
    coro_of,
    is_closed,
    is_running,
    loop_of,
    pending_tasks,
    task_loops,
)
from aiotrace._pipeline import Pipeline
from aiotrace._recorder import RECORDER
from aiotrace._sites import (
    _AIOTRACE_DIR,
    SITES,
    RaisedException,
    async_with_around,
    is_asyncio_file,
    is_internal_file,
    is_library_file,
    line_of,
    qualname,
    raw_site,
    short_path,
)
from aiotrace.primitives import _base
from aiotrace.primitives._timeouts import SwallowedTimeout
from aiotrace.primitives.tasks import (
    DIED,
    GIVEN_EXCEPTION,
    Swallowed,
    ended_coroutine,
    ended_raising,
)
from aiotrace.report import STACK_HEADING, counted, one_line, raise_site_of, times, via_text

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import CodeType, FrameType

    from aiotrace.primitives._lock_order import Nesting

_AIOTRACE_PRIMITIVES: Final = os.path.dirname(_base.__file__)
"""The patched waits' directory: their frames keep the wait's start as ``t0``."""
_R = TypeVar("_R")

DEADLOCK: Final = semconv.FINDING_DEADLOCK
HANG: Final = semconv.FINDING_HANG
LEAK: Final = semconv.FINDING_LEAK
LOCK_ORDER: Final = semconv.FINDING_LOCK_ORDER
LOOP_BLOCKED: Final = semconv.FINDING_LOOP_BLOCKED
UNRETRIEVED: Final = semconv.FINDING_UNRETRIEVED
SWALLOWED: Final = semconv.FINDING_SWALLOWED
SEVERITY: Final = semconv.FINDING_SEVERITY

_LABELS: Final = {
    semconv.KIND_LOCK: "lock",
    semconv.KIND_SEMAPHORE: "semaphore",
    semconv.KIND_BOUNDED_SEMAPHORE: "semaphore",
    semconv.KIND_EVENT: "event",
    semconv.KIND_CONDITION: "condition",
    semconv.KIND_BARRIER: "barrier",
    semconv.KIND_QUEUE: "queue",
    semconv.KIND_PRIORITY_QUEUE: "queue",
    semconv.KIND_LIFO_QUEUE: "queue",
    semconv.KIND_FUTURE: "future",
}


# ===========================================================================
# Findings
# ===========================================================================


@dataclass
class Finding:
    """One problem, in words: a one-line summary and the lines that explain it."""

    kind: str
    summary: str
    details: list[str] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    """The live tasks involved (for links to their spans; not serialised)."""
    spans: list[tuple[int, int, int]] = field(default_factory=list)
    """(trace id, span id, flags) of more spans to link to: of tasks no longer live."""

    @property
    def severity(self) -> int:
        """Position in :data:`SEVERITY`: lower is worse."""
        return SEVERITY.index(self.kind) if self.kind in SEVERITY else len(SEVERITY)

    def attributes(self) -> dict[str, Any]:
        """The finding as span attributes."""
        return {
            semconv.ATTR_FINDING_KIND: self.kind,
            semconv.ATTR_FINDING_SUMMARY: self.summary,
            semconv.ATTR_FINDING_DETAIL: "\n".join(self.details),
        }

    def text(self) -> str:
        """Summary and details, as the terminal shows them."""
        return "\n".join(
            [f"{self.kind.upper()}: {self.summary}", *(f"  {d}" for d in self.details)]
        )


def _task_name(task: Any) -> str:
    try:
        return str(task.get_name())
    except Exception:  # a Task subclass with a broken get_name()
        return "?"


def _coroutine_name(task: Any) -> str | None:
    coro = coro_of(task)
    if coro is None:  # an eager task that raised in create_task: its coroutine dropped
        return ended_coroutine(task)
    return getattr(coro, "__qualname__", None)


def _task_label(task: Any) -> str:
    return _named_task(_task_name(task), _coroutine_name(task))


def _named_task(name: str | None, qualname: str | None) -> str:
    """``task "worker-1" (worker)``; the coroutine only where it says more than the name."""
    return f'task "{name}"' + (f" ({qualname})" if qualname and qualname != name else "")


def unread_failures(tasks: list[Any]) -> list[str]:
    """Tasks of these tasks' loops that ended raising an exception nothing has retrieved.

    A likely culprit of a hang: the consumer that crashed, leaving its
    producer waiting on a full queue for ever. asyncio says "Task exception
    was never retrieved" only when the task is collected, which may be never.
    """
    loops = {id(loop_of(task)) for task in tasks}
    lines = []
    for ref, failure in list(DIED):
        task = ref()
        if task is None or id(task.get_loop()) not in loops:
            continue
        if getattr(task, "_log_traceback", False):  # not retrieved: no result(), exception()
            lines.append(
                f"{_task_label(task)} ended raising {failure}, and nothing has retrieved it"
            )
    return lines


# ===========================================================================
# Exceptions nothing retrieved
# ===========================================================================

_NEVER_RETRIEVED: Final = frozenset(
    {"Task exception was never retrieved", "Future exception was never retrieved"}
)
"""asyncio's messages (3.10-3.13) to the loop's exception handler when a task or future
that ended raising is garbage-collected with its exception unread."""
_Ended = tuple[int, int, int, int]
"""See ``tasks.ended_raising``: when a traced task ended raising, and its span's ids."""
_UNRETRIEVED_LISTENERS: Final[list[Callable[[Any, BaseException | None, _Ended | None], None]]] = []
_UNRETRIEVED_PATCH: Final[list[tuple[Any, Any] | None]] = [None]
"""(asyncio's ``call_exception_handler``, ours) while ours is in place."""


def _forget_the_parents_listeners() -> None:
    """A forked child's diagnoses are its own (``_child`` starts one): its parent's,
    copied by the fork, would gather its reports with nothing left to collect them."""
    _UNRETRIEVED_LISTENERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents_listeners)


def _watch_unretrieved(
    listener: Callable[[Any, BaseException | None, _Ended | None], None],
) -> None:
    """Call ``listener(task or future, exception, ended)`` each time asyncio reports one
    unread; ``ended``: a traced task's ``tasks.ended_raising``, else ``None``.

    Through ``BaseEventLoop.call_exception_handler``, wrapped: every report
    asyncio makes passes there, whatever handler the program set, and the
    wrapper passes each on unchanged. uvloop's loop has its own: not seen there.
    """
    _UNRETRIEVED_LISTENERS.append(listener)
    if _UNRETRIEVED_PATCH[0] is not None:
        return
    owner = asyncio.BaseEventLoop
    original = vars(owner)["call_exception_handler"]

    @functools.wraps(original)
    def call_exception_handler(self: Any, context: dict[str, Any]) -> None:
        try:
            if context.get("message") in _NEVER_RETRIEVED:
                unread = context.get("future")
                ended = ended_raising(unread)
                for listener in list(_UNRETRIEVED_LISTENERS):
                    listener(unread, context.get("exception"), ended)
                if ended is not None:  # read once, for every listener (which name it)
                    ended_raising(unread, pop=True)
        except Exception as exc:
            _failed(exc)
        return original(self, context)  # type: ignore[no-any-return]

    owner.call_exception_handler = call_exception_handler  # type: ignore[method-assign]
    _UNRETRIEVED_PATCH[0] = (original, call_exception_handler)


def _unwatch_unretrieved(
    listener: Callable[[Any, BaseException | None, _Ended | None], None],
) -> None:
    with contextlib.suppress(ValueError):
        _UNRETRIEVED_LISTENERS.remove(listener)
    patch = _UNRETRIEVED_PATCH[0]
    if _UNRETRIEVED_LISTENERS or patch is None:
        return
    _UNRETRIEVED_PATCH[0] = None
    original, ours = patch
    owner = asyncio.BaseEventLoop
    # A wrapper the program put over ours since calls ours, which now only
    # passes the call on: it stays.
    if vars(owner).get("call_exception_handler") is ours:
        owner.call_exception_handler = original  # type: ignore[method-assign]


_UNREAD_KEPT: Final = 1000
"""Unread exceptions kept between two :meth:`Diagnoser.collect` calls (the watchdog's
ticks, 10 ms apart): past this many the oldest go, as a repeated finding is one anyway."""


class UnreadFuture(NamedTuple):
    """A future whose exception nothing read, as :func:`unread_label` takes it: from a
    finaliser, so only what names it, and where it was given its exception, as raw
    values (a site is resolved under a lock: later, by :func:`unretrieved_finding`)."""

    ref: Any
    """Its reference (named as the report names it), or None: a future not traced."""
    setter: str | None
    """The task that called ``set_exception()``, where tracing saw it."""
    site: Any
    """Where: a raw site, or None."""
    set_ns: int | None
    """When (``perf_counter_ns``), for a traced future: which diagnosis it belongs to."""


def unread_label(unread: Any) -> str | UnreadFuture:
    """What names a task or future in :func:`unretrieved_finding`: a task's label; a
    future's reference and where its exception was set (see ``Diagnoser._unretrieved``)."""
    if isinstance(unread, asyncio.Task):
        return _task_label(unread)
    ref = getattr(unread, "_aiotrace_ref", None)
    resolved = getattr(unread, "_aiotrace_resolved", None)  # (span, t, task, site, via)
    if resolved is None:
        return UnreadFuture(ref, None, None, None)
    return UnreadFuture(ref, resolved[2], resolved[3], resolved[1])


def unretrieved_finding(
    unread: str | UnreadFuture,
    exc: BaseException | None,
    at_exit: bool = False,
    ended: _Ended | None = None,
) -> Finding:
    """A task or future that ended raising, whose exception nothing read.

    ``unread`` is what :func:`unread_label` gave for it; ``ended``, a traced
    task's end and span, to which the finding links. A task raised its
    exception; a future was given one, by a ``set_exception()`` whose line
    is the one to look at (the exception's own raise site, if it was raised
    at all, is said too).
    """
    raised = "an exception"
    at = None
    if exc is not None:
        recorded = RaisedException(exc)  # as the task's span records it (a str() that fails...)
        message = one_line(recorded.message)
        raised = f"{recorded.name}: {message}" if message else recorded.name
        at = raise_site_of(exc)
    if isinstance(unread, str):
        what = f"{unread} raised {raised}" + (f" at {at}" if at else "")
    else:
        ref, setter, site, _ = unread
        label = f"future {_base.display_name(ref)}" if ref is not None else "a future"
        what = f"{label} got {raised}" + (f" (raised at {at})" if at else "")
        if site is not None:
            resolved = SITES.resolve(site)
            what += f", set at {resolved.label} in {resolved.function}"
            if setter:
                what += f' by task "{setter}"'
    when = "by the end of the program" if at_exit else "before it was garbage-collected"
    return Finding(
        UNRETRIEVED,
        f"{what}, and nothing retrieved it",
        [
            f"nothing awaited it or read its exception() {when}: asyncio logs "
            '"exception was never retrieved" only when it is collected, if ever',
        ],
        spans=[ended[1:]] if ended is not None else [],
    )


def swallowed_finding(task: Swallowed) -> Finding:
    """A task cancelled that returned (``tasks.Swallowed``): it caught the
    ``CancelledError``. Its line is gone with its frame; its name, coroutine and
    creation line are what is left to find it by, and its span, linked."""
    label = _named_task(task.name, task.coroutine)
    times = "" if task.cancels == 1 else f" {task.cancels} times"
    details = []
    if task.site is not None:
        resolved = SITES.resolve(task.site)
        details.append(f"created at {resolved.label} in {resolved.function}")
    details.append(
        "what cancelled it (a TaskGroup, task.cancel(), wait_for, asyncio.run's shutdown)"
        " takes it to have stopped: catch CancelledError only to clean up, and re-raise it"
        " (or call uncancel() where going on is meant)"
    )
    return Finding(
        SWALLOWED,
        f"{label} was cancelled{times}, and returned instead of ending cancelled:"
        " it swallowed the CancelledError",
        details,
        spans=[(task.trace_id, task.span_id, task.flags)],
    )


def swallowed_timeout_finding(
    task: str | None, site: Any, what: str = "asyncio.timeout()"
) -> Finding:
    """An ``asyncio.timeout()`` (or 3.12+ ``wait_for``) that expired and ended without an
    exception (``_timeouts.SwallowedTimeout``): its body caught the cancellation."""
    where = what
    if site is not None:
        resolved = SITES.resolve(site)
        where += f" at {resolved.label} in {resolved.function}"
    by = f' in task "{task}"' if task else ""
    return Finding(
        SWALLOWED,
        f"{where}{by} expired, and "
        + ("what it awaited" if what == "asyncio.wait_for()" else "its body")
        + " went on: it swallowed the CancelledError",
        [
            "the timeout cancels the task, and only the CancelledError that reaches the"
            " timeout becomes TimeoutError: caught before, no TimeoutError is raised, and"
            " what follows runs as if it had been in time",
        ],
    )


def _where(code: Any, line: int | None) -> str:
    return f"{short_path(code.co_filename)}:{line} in {qualname(code)}"


def _entered_text(owner: FrameType | None) -> str:
    """``, entered at app.py:18 in audit`` for what an ``@asynccontextmanager``'s
    generator took: the line it names is the context manager's, the same for
    every caller; this one says which caller."""
    from aiotrace.primitives import _lock_order

    via = _lock_order.entered_at(owner)
    if via is None:
        return ""
    code, lasti = via
    return f", entered at {_where(code, line_of(code, lasti))}"


def _stack_lines(task: Any, frames: list[FrameType] | None = None) -> list[str]:
    """``task``'s await stack (``frames``, if read already) as report lines, aiotrace's
    and asyncio's frames left out.

    A frame inside ``async with`` blocks says what they entered: in a hang
    through a lock aiotrace cannot see into (aiorwlock's, made of futures),
    that is what each stuck task holds.
    """
    lines = []
    library: list[tuple[str, str]] = []  # the run of library frames now: (package, line)
    for frame in await_frames(task) if frames is None else frames:
        code = frame.f_code
        if is_internal_file(code.co_filename):
            continue
        line = frame.f_lineno
        text = f"    {_where(code, line)}"
        if line is not None:
            around = async_with_around(code.co_filename, code.co_firstlineno, line)
            if around:
                text += ", inside async with " + ", ".join(
                    f"{what} (line {header})" for what, header in around
                )
        if is_library_file(code.co_filename):
            library.append((_package(code.co_filename), text))
            continue
        lines.extend(_library_run(library))
        library.clear()
        lines.append(text)
    lines.extend(_library_run(library))
    return lines


LIBRARY_FRAMES_KEPT: Final = (1, 2)
"""Of a longer run of library frames in a stack, the first and last kept (the rest
counted): where the program called in, and where inside it is now."""


def _library_run(run: list[tuple[str, str]]) -> list[str]:
    """A run of library frames, its middle told as a count: a web framework's dozen
    middleware frames are not what a stuck request's reader is looking for."""
    first, last = LIBRARY_FRAMES_KEPT
    if len(run) <= first + last + 1:
        return [text for _, text in run]
    middle = run[first:-last]
    packages = ", ".join(dict.fromkeys(package for package, _ in middle))
    return [
        *(text for _, text in run[:first]),
        f"    ... {len(middle)} frames in {packages} ...",
        *(text for _, text in run[-last:]),
    ]


def _package(path: str) -> str:
    """``starlette`` for ``.../site-packages/starlette/routing.py``; ``contextlib`` for
    the standard library's ``contextlib.py``."""
    head = short_path(path).split("/", 1)[0]
    return head[:-3] if head.endswith(".py") else head


# ===========================================================================
# The wait-for graph
# ===========================================================================


@dataclass
class Wait:
    """What one pending task is blocked on, and who could end that."""

    task: Any
    what: str
    """In words: ``lock cache_lock (app.py:3)``, ``task "fetch"``, ``a sleep``."""
    releasers: list[Any] | None
    """Tasks that could end the wait; ``[]`` none left; ``None`` unknown (anyone, a timer)."""
    mode: str = "any"
    """``any``: one releaser is enough (lock, semaphore); ``all``: each must finish (gather)."""
    held_at: dict[int, str] = field(default_factory=dict)
    """id(releaser) -> where it took what it holds (``bank.py:14 in transfer``)."""
    named: bool = False
    """``what`` names every releaser (an awaited task, a gather's children),
    so that they are not listed twice."""
    left_at: list[str] = field(default_factory=list)
    """Where what it waits for was taken by coroutines that finished holding it, one entry
    a hold (``leak.py:9 in query``): a lock or permits never given back (a leak)."""
    primitive: Any = None
    """The lock or semaphore, for those: who else has it at hand (see ``_at_hand``)."""
    internal: Any = None
    """A future of asyncio's own that it waits on: put in words only when shown
    (:func:`_internal_wait` reads the loop's timers; the watchdog takes a
    snapshot every half second)."""
    future: Any = None
    """A program's future it waits on, its creator taken to be what resolves it:
    who else could is looked for only when that would make a deadlock
    (:meth:`Graph.deadlocked`)."""


def await_frames(task: Any) -> list[FrameType]:
    """The frames of ``task``'s await chain, outermost first (like a call stack)."""
    frames = list(_base.chain_frames(task))
    if not frames or task is _current_task_here():
        # A running task's suspended chain stops at the running coroutine;
        # its callers are on this thread's stack.
        # Only those below its innermost frame: the ones above are the loop's and
        # what ran the loop (asyncio.run, a CLI's main, runpy), not the task's.
        innermost = frames[-1] if frames else None
        stack: list[FrameType] = []
        frame: FrameType | None = sys._getframe(1)
        while frame is not None and frame is not innermost:
            stack.append(frame)
            frame = frame.f_back
        if frame is None:  # not on this thread's stack after all: as it was
            stack = []
        frames.extend(reversed(stack))
    return frames


def _cancelled_text(task: Any) -> str:
    """``; cancelled, yet still running ...`` for a pending task whose cancellation
    was delivered (3.11+: ``cancelling()``) and that has not ended, else ``""``.

    A task that caught its ``CancelledError`` and went on (or whose clean-up
    hangs) keeps the ``TaskGroup``, ``asyncio.timeout()`` or shutdown that
    cancelled it waiting for ever: the usual cause of a hang at the end.
    """
    try:
        cancelling = task.cancelling() if hasattr(task, "cancelling") else 0
    except Exception:  # a Task subclass's own cancelling()
        return ""
    if not cancelling or getattr(task, "_must_cancel", False):
        return ""  # not cancelled, or its cancellation not delivered yet
    times = "" if cancelling == 1 else f" {cancelling} times"
    return (
        f"; cancelled{times}, yet still running: it caught the CancelledError and went on,"
        " or its clean-up waits"
    )


def _in_program(frames: list[FrameType]) -> bool:
    """Whether a task whose await stack is ``frames`` is stuck in the program's own code,
    not only a library's: of the tasks a hang lists, those come first (a request's
    handler waiting on the program's event, before the test client's portal waiting to
    be stopped)."""
    return any(
        not is_internal_file(f.f_code.co_filename) and not is_library_file(f.f_code.co_filename)
        for f in frames
    )


def _creation_order(task: Any) -> tuple[float, str]:
    """Older tasks first (by their span's start), then by name."""
    from aiotrace._context import TASK_SPANS

    span = TASK_SPANS.get(id(task))
    started = float(span.start_ns) if span is not None else float("inf")
    try:
        name = str(task.get_name())
    except Exception:  # a Task subclass with a broken get_name()
        name = ""
    return started, name


def _current_task_here() -> Any:
    loop = _base.running_loop()
    return _base.tasks_by_loop(loop) if loop is not None else None


class Graph:
    """The wait-for graph of every pending task, at one moment."""

    def __init__(self, tasks: list[Any], waits: dict[int, Wait | None]) -> None:
        self.tasks = tasks
        self.waits = waits
        self._timers: dict[int, dict[int, Any]] = {}
        """id(loop) -> id(future) -> the timer that will resolve it (a sleep's): built once."""

    def _what(self, wait: Wait) -> str:
        """What ``wait`` is for, in words."""
        if wait.internal is None:
            return wait.what
        loop = loop_of(wait.internal)
        timers = self._timers.get(id(loop))
        if timers is None:
            timers = self._timers[id(loop)] = {
                id(handle._args[0]): handle
                for handle in list(getattr(loop, "_scheduled", ()))
                if getattr(handle, "_args", None) and not handle.cancelled()
            }
        return _internal_wait(wait.task, wait.internal, timers.get(id(wait.internal)))

    def wait_of(self, task: Any) -> Wait | None:
        """What ``task`` waits on (None: it is runnable, or waits on nothing we know)."""
        return self.waits.get(id(task))

    def deadlocked(self) -> list[Any]:
        """Tasks that can never proceed: every way out leads back into the set.

        A future's creator is only the likely one to resolve it: when one
        would close a cycle, every task that refers to the future, and every
        callback the loop has scheduled with it, is counted too (a test
        gives its future to a task that sets it 10 ms later: no deadlock).
        """
        stuck = self._stuck()
        unsure = [w for w in stuck if w.future is not None]
        if not unsure:
            return [w.task for w in stuck]
        creators = {}
        for wait in unsure:
            creators[id(wait)] = wait.releasers
            wait.releasers = _could_resolve(wait, self.tasks)
            wait.future = None
        stuck = self._stuck()
        for wait in stuck:
            # Deadlocked all the same: every task that could resolve it is stuck
            # too. The creator is the one to name (the others only refer to it).
            wait.releasers = creators.get(id(wait), wait.releasers)
        return [w.task for w in stuck]

    def _stuck(self) -> list[Wait]:
        blocked = {id(w.task): w for w in self.waits.values() if w is not None and w.releasers}
        changed = True
        while changed:
            changed = False
            for key, wait in list(blocked.items()):
                inside = [id(r) in blocked for r in wait.releasers or ()]
                stuck = all(inside) if wait.mode == "any" else any(inside)
                if not stuck:
                    del blocked[key]
                    changed = True
        return list(blocked.values())

    def cycles(self) -> list[list[Any]]:
        """The deadlocked tasks as cycles (each task once), for a readable chain."""
        stuck = {id(t): t for t in self.deadlocked()}
        seen: set[int] = set()
        cycles: list[list[Any]] = []
        for start in list(stuck.values()):
            if id(start) in seen:
                continue
            path: list[Any] = []
            index: dict[int, int] = {}
            task = start
            while id(task) not in index and id(task) not in seen:
                index[id(task)] = len(path)
                path.append(task)
                wait = self.waits.get(id(task))
                nxt = (
                    next((r for r in (wait.releasers or ()) if id(r) in stuck), None)
                    if wait
                    else None
                )
                if nxt is None:
                    break
                task = nxt
            if id(task) in index:
                cycle = path[index[id(task)] :]
                first = min(range(len(cycle)), key=lambda i: _creation_order(cycle[i]))
                cycles.append(cycle[first:] + cycle[:first])  # the same chain every time
            seen.update(id(t) for t in path)
        return cycles

    def describe_wait(self, task: Any, stuck: bool = False) -> str:
        """One line: the task, what it waits on, who holds it and since where.

        ``stuck``: nothing in the program can make progress, so a wait with
        no known releaser (an event, a queue) will never end either.
        """
        return _task_label(task) + self._waits_for(task, stuck)

    def _waits_for(self, task: Any, stuck: bool) -> str:
        """:meth:`describe_wait` after the task's label: `` waits for ...``."""
        return self._wait_text(task, stuck) + _cancelled_text(task)

    def _wait_text(self, task: Any, stuck: bool) -> str:
        wait = self.waits.get(id(task))
        if wait is None:
            if task is _current_task_here():  # what asked runs in it (a Ctrl-C handler)
                return " is running: this was taken from inside it"
            return " is not waiting on anything aiotrace knows"
        what = self._what(wait)
        line = f" waits for {what}"
        if wait.releasers and wait.named:
            return line  # the awaited tasks are named in ``what``
        if wait.releasers:
            shown = wait.releasers[:RELEASERS_SHOWN]
            holders = ", ".join(
                _task_label(r)
                + (f" (taken at {wait.held_at[id(r)]})" if id(r) in wait.held_at else "")
                for r in shown
            )
            if len(wait.releasers) > len(shown):
                holders += f" and {len(wait.releasers) - len(shown)} more"
            verb = "held by" if what.split(" ")[0] in ("lock", "semaphore") else "to be ended by"
            line += f", {verb} {holders}"
        elif wait.releasers == [] or stuck:
            line += ", which no pending task can end"
        if wait.left_at and not wait.releasers:
            line += ": " + _left_text(wait.left_at, permits=what.startswith("semaphore"))
        return line

    def format(self, stuck: bool = False, since: int = 0) -> list[str]:
        """Every pending task, its wait and its await stack (like ``python -m asyncio pstree``).

        The tasks most waited on come first: the holder that a queue of others
        waits behind is the one to look at; then those stuck in the program's
        own code before those only in a library's; but tasks begun before
        ``since`` (``perf_counter_ns``; a test's start) come last, whatever
        waits on them: a session's server idling in its own thread is not what
        a hung test is stuck on, unless the test's own tasks say so. Tasks of
        one coroutine waiting alike (the same wait, the same stack), from
        :data:`GROUP_FROM` of them on, are shown once: 5,000 requests queued on
        one lock are one entry, not 10,000 lines in front of the holder's.
        """
        waited_on: dict[int, int] = {}
        for wait in self.waits.values():
            for releaser in (wait.releasers or ()) if wait is not None else ():
                waited_on[id(releaser)] = waited_on.get(id(releaser), 0) + 1

        chains = {id(task): await_frames(task) for task in self.tasks}  # each read once

        def order(task: Any) -> tuple[bool, int, bool, tuple[float, str]]:
            began = _creation_order(task)
            in_program = _in_program(chains[id(task)])
            return began[0] < since, -waited_on.get(id(task), 0), not in_program, began

        ordered = sorted(self.tasks, key=order)
        alike: dict[tuple[str | None, str, tuple[str, ...]], list[Any]] = {}
        for task in ordered:
            stack = tuple(_stack_lines(task, chains[id(task)]))
            key = (_coroutine_name(task), self._waits_for(task, stuck), stack)
            alike.setdefault(key, []).append(task)
        lines: list[str] = []
        for (coroutine, waits_for, stack), tasks in alike.items():
            if len(tasks) < GROUP_FROM:
                for task in tasks:
                    lines.append(_task_label(task) + waits_for)
                    lines.extend(stack)
                continue
            names = ", ".join(f'"{_task_name(task)}"' for task in tasks[:3])
            lines.append(
                f"{len(tasks)} tasks ({coroutine or '?'}: {names} and {len(tasks) - 3} more)"
                + waits_for.replace(" waits for ", " wait for ", 1).replace(
                    " is not waiting ", " are not waiting ", 1
                )
            )
            lines.extend(stack)
        return lines


GROUP_FROM: Final = 4
"""Tasks waiting alike shown once, from this many on (see :meth:`Graph.format`)."""
RELEASERS_SHOWN: Final = 5
"""Tasks named as able to end a wait; the rest are counted (a gather of 10,000)."""


def _waiter_index() -> dict[int, tuple[Any, str, str]]:
    """id(waiter future) -> (primitive, kind, role) for every watched primitive.

    Built on the loop's thread every half second (see ``Watchdog._pinged``),
    over every live primitive: one with nobody waiting, nearly all of them,
    costs three C calls and no Python one. (Each cost a ``suppress()`` and its
    kind before: 25,000 live primitives held the loop 24 ms each time, now 6.5.)
    """
    index: dict[int, tuple[Any, str, str]] = {}
    watched = _base.WATCHED[0]
    if not watched:
        return index
    queue_type, condition_type = asyncio.Queue, asyncio.Condition
    for prim in list(watched):
        try:
            if isinstance(prim, queue_type):
                roles = (
                    (getattr(prim, "_getters", None), "get"),
                    (getattr(prim, "_putters", None), "put"),
                    (getattr(getattr(prim, "_finished", None), "_waiters", None), "join"),
                )
                if any(futures for futures, _ in roles):
                    kind = _kind(prim)
                    for futures, role in roles:
                        for fut in futures or ():
                            index[id(fut)] = (prim, kind, role)
                continue
            barrier_cond = getattr(prim, "_cond", None)
            if barrier_cond is not None and not isinstance(prim, condition_type):
                futures = getattr(barrier_cond, "_waiters", None)
                if futures:
                    kind = _kind(prim)
                    for fut in futures:
                        index[id(fut)] = (prim, kind, "wait")
                continue
            futures = getattr(prim, "_waiters", None)
            if futures:
                kind = _kind(prim)
                for fut in futures:
                    index.setdefault(id(fut), (prim, kind, "wait"))
        except Exception:  # a primitive in a state we do not know: left out
            continue
    return index


def _kind(prim: Any) -> str:
    ref = getattr(prim, "_aiotrace_ref", None)
    return ref.kind if ref is not None else type(prim).__name__


def _name(prim: Any, kind: str) -> str:
    ref = getattr(prim, "_aiotrace_ref", None)
    return _base.display_name(ref) if ref is not None else f"{kind} (created before tracing)"


def _tasks_by_frame(tasks: list[Any]) -> dict[int, Any]:
    """id(frame) -> the task running it: who holds what a frame took.

    With the generators of the ``@asynccontextmanager`` contexts the tasks are
    inside (``_lock_order.ENTERED``): suspended at their ``yield``, they are in
    no await chain, yet they hold what they took for the task.
    """
    from aiotrace.primitives import _lock_order

    by_frame = _base.tasks_by_frame(tasks, sys._getframe(1))
    for gen_frame, frame in _lock_order.entering_frames():
        holder = _base.holding(frame, by_frame)
        if holder is not None:
            by_frame.setdefault(id(gen_frame), by_frame[id(holder)])
    return by_frame


def snapshot(tasks: Iterable[Any] | None = None) -> Graph:
    """The wait-for graph now. Safe from the loop's thread; best effort from another."""
    pending = list(tasks) if tasks is not None else pending_tasks()
    by_frame = _tasks_by_frame(pending)
    live = {id(t): t for t in pending}
    waiters = _waiter_index()
    waits: dict[int, Wait | None] = {}
    for task in pending:
        try:
            waits[id(task)] = _classify(task, by_frame, live, waiters)
        except Exception:  # a task in a state we do not know: leave it out
            waits[id(task)] = None
    return Graph(pending, waits)


_NOT_AWAITING_TASKS: dict[int, weakref.ref[Any]] = {}
"""id(future) -> the future, weakly: asyncio's own futures that no TaskGroup's end
or ``asyncio.wait()`` waits on (see :func:`_tasks_awaited`). A task waits on one
future for as long as it waits (an idle connection's read, a long sleep): its
await chain is walked once for it, not at every graph check."""
_NOT_AWAITING_KEPT: Final = 100_000


def _classify(
    task: Any,
    by_frame: dict[int, Any],
    live: dict[int, Any],
    waiters: dict[int, tuple[Any, str, str]],
) -> Wait | None:
    fut = getattr(task, "_fut_waiter", None)
    if fut is None:
        return None
    if isinstance(fut, asyncio.Task):
        return Wait(task, _task_label(fut), [fut] if not fut.done() else None, named=True)
    children = getattr(fut, "_children", None)
    if children is not None:  # gather()
        pending = [c for c in children if not c.done()]
        if pending and all(isinstance(c, asyncio.Task) for c in pending):
            return Wait(task, f"gather({_named(pending)})", pending, mode="all", named=True)
        return Wait(task, "gather(...)", None)
    entry = waiters.get(id(fut))
    if entry is not None:
        prim, kind, role = entry
        what = f"{_LABELS.get(kind, kind.lower())} {_name(prim, kind)}"
        unfinished = getattr(prim, "_unfinished_tasks", None) if role == "join" else None
        if isinstance(unfinished, int):
            # What join() waits for: items taken but never marked done, as a
            # rule by a consumer that died holding one.
            what = f"{what} (join: {counted(unfinished, 'item')} not marked task_done())"
        elif role != "wait":
            what = f"{what} ({role})"
        if isinstance(prim, asyncio.Lock):
            return _lock_wait(task, prim, what, by_frame)
        if isinstance(prim, asyncio.Semaphore):
            return _semaphore_wait(task, prim, what, by_frame)
        return Wait(task, what, None)
    state = getattr(fut, "_aiotrace_state", None)
    if state is not None:
        ref = getattr(fut, "_aiotrace_ref", None)
        what = f"future {_base.display_name(ref)}" if ref is not None else "a future"
        creator = live.get(state.creator_id) if state.creator_id else None
        if creator is not None and creator is not task:
            return Wait(task, what, [creator], future=fut)
        if state.creator_id and creator is None:
            return Wait(task, what, [])  # its creator is gone: who else would resolve it?
        # Its own: anyio's TaskGroup makes the future its end waits on.
        return _tasks_awaited(task, fut) or Wait(task, what, None)
    return _tasks_awaited(task, fut) or Wait(task, "an asyncio internal future", None, internal=fut)


def _could_resolve(wait: Wait, tasks: list[Any]) -> list[Any] | None:
    """``wait.releasers`` and every other task whose await chain refers to the future
    ``wait`` waits on; None (anyone) if a callback the loop has scheduled does."""
    return _at_hand(wait.future, wait, tasks)


def _at_hand(fut: Any, wait: Wait, tasks: list[Any]) -> list[Any] | None:
    """:func:`_could_resolve` for ``fut``, or a lock or semaphore: ``wait.releasers``
    and the other tasks that have it at hand, or None if a scheduled callback does
    (``loop.call_later(1, sem.release)``, a rate limiter's)."""
    loop = loop_of(wait.task)
    handles = [*getattr(loop, "_ready", ()), *getattr(loop, "_scheduled", ())]
    for handle in handles:
        callback = getattr(handle, "_callback", None)
        if _refers(callback, fut) or any(_refers(a, fut) for a in getattr(handle, "_args", ())):
            return None
    releasers = list(wait.releasers or ())
    known = {id(t) for t in releasers} | {id(wait.task)}
    for task in tasks:
        if id(task) in known:
            continue
        for frame in _base.chain_frames(task):
            if frame.f_code.co_filename.startswith(_AIOTRACE_DIR):
                continue  # ours (a patched acquire's closure has every hold at hand)
            if any(_refers(value, fut) for value in list(frame.f_locals.values())):
                releasers.append(task)
                break
    return releasers


def _refers(value: Any, fut: Any) -> bool:
    """Whether ``value`` is ``fut``, one of its methods, or holds it directly (an
    attribute, an item): what a task that will resolve it has at hand.

    By exact types and ``object.__getattribute__``: the program's own
    ``__getattr__``, ``__class__`` or ``__eq__`` is never run.
    """
    kind = type(value)
    if value is fut:
        return True
    if kind in _METHOD_TYPES:
        return value.__self__ is fut
    if kind in _SEQUENCE_TYPES:
        return any(v is fut for v in list(value)[:_REFERS_ITEMS])
    if kind in _MAPPING_TYPES:
        return any(v is fut for v in list(value.values())[:_REFERS_ITEMS])
    if kind.__module__ == "builtins":
        return False
    try:
        attributes = object.__getattribute__(value, "__dict__")
    except Exception:  # slots, or no instance dict
        return False
    if type(attributes) is not dict:
        return False
    return any(v is fut for v in list(attributes.values())[:_REFERS_ITEMS])


_METHOD_TYPES: Final = (types.MethodType, types.BuiltinMethodType)
_SEQUENCE_TYPES: Final = (list, tuple, set, frozenset, deque)
_MAPPING_TYPES: Final = (dict, collections.OrderedDict, collections.defaultdict)


_REFERS_ITEMS: Final = 1000
"""Items of one container or object looked through for a future, at most."""


def _tasks_awaited(task: Any, fut: Any) -> Wait | None:
    """A wait in asyncio's own code for tasks to end, ``fut`` its future: at the end of a
    ``TaskGroup``'s ``async with`` (every task of the group), or in ``asyncio.wait()``
    (every one, or the first). None for any other wait, or one a timeout ends.

    The tasks are what can end the wait: a child that never ends (one that
    swallowed its cancellation, one in a cycle) is the culprit. anyio's task
    group, which keeps its tasks and its future as asyncio's does, too. A
    future no such wait is on is remembered (:data:`_NOT_AWAITING_TASKS`): the
    answer for a future does not change.
    """
    known = _NOT_AWAITING_TASKS.get(id(fut))
    if known is not None and known() is fut:
        return None
    awaiting = _awaiting_tasks(task, fut)
    if awaiting is None:
        if len(_NOT_AWAITING_TASKS) >= _NOT_AWAITING_KEPT:
            _NOT_AWAITING_TASKS.clear()
        with contextlib.suppress(TypeError):  # a future that takes no weak reference
            _NOT_AWAITING_TASKS[id(fut)] = weakref.ref(fut)
        return None
    awaited, mode, what = awaiting
    pending = [t for t in awaited if not t.done()]
    if not pending or not all(isinstance(t, asyncio.Task) for t in pending):
        return None
    first = "" if mode == "all" else "; the first to end"
    return Wait(task, f"{what} ({_named(pending)}{first})", pending, mode=mode, named=True)


def _named(tasks: list[Any]) -> str:
    """``task "a" (fetch), task "b" (fetch) and 12 more``: the tasks a wait is for."""
    names = ", ".join(_task_label(c) for c in tasks[:RELEASERS_SHOWN])
    if len(tasks) > RELEASERS_SHOWN:
        names += f" and {len(tasks) - RELEASERS_SHOWN} more"
    return names


def _shield_outer_done() -> types.CodeType | None:
    """The code of the callback ``asyncio.shield()`` gives the future it returns."""
    shield = getattr(asyncio.tasks.shield, "__code__", None)
    for const in shield.co_consts if shield is not None else ():
        if isinstance(const, types.CodeType) and const.co_name == "_outer_done_callback":
            return const
    return None


_SHIELD_OUTER_DONE: Final[types.CodeType | None] = _shield_outer_done()


def _shielded(fut: Any) -> Any:
    """What ``asyncio.shield()`` guards, if ``fut`` is the future it returned: the
    ``inner`` its callback holds (None otherwise)."""
    outer_done = _SHIELD_OUTER_DONE
    if outer_done is None:
        return None
    names = outer_done.co_freevars
    for callback, _ in getattr(fut, "_callbacks", None) or ():
        if getattr(callback, "__code__", None) is outer_done:
            for name, cell in zip(names, callback.__closure__ or (), strict=False):
                if name == "inner":
                    return cell.cell_contents
    return None


def _awaiting_tasks(task: Any, fut: Any) -> tuple[list[Any], str, str] | None:
    """For :func:`_tasks_awaited`: (the tasks awaited, ``all`` or ``any``, in words), from
    the innermost frame of ``task``'s await chain (not a traced future's ``__await__``),
    or for ``asyncio.shield()``'s future, from its callback: the task it guards."""
    shielded = _shielded(fut)
    if isinstance(shielded, asyncio.Task):
        return [shielded], "all", "asyncio.shield()"
    inner = None
    for frame in _base.chain_frames(task):
        if _AIOTRACE_PRIMITIVES not in frame.f_code.co_filename:
            inner = frame
    if inner is None:
        return None
    code = inner.f_code
    if code.co_name in ("__aexit__", "_aexit"):
        try:  # the program's __getattr__ is never run
            group = object.__getattribute__(inner.f_locals.get("self"), "__dict__")
        except Exception:
            return None
        tasks = group.get("_tasks") if type(group) is dict else None
        if group.get("_on_completed_fut") is not fut or type(tasks) not in (set, list):
            return None
        return list(tasks or ()), "all", "its TaskGroup's tasks"
    if code.co_name == "wait_for" and is_asyncio_file(code.co_filename):
        # 3.10-3.11: wait_for runs what it is given as a task of its own, and
        # awaits a future of its own that the task's end resolves.
        local = inner.f_locals
        awaited = local.get("fut")
        if local.get("waiter") is not fut or not isinstance(awaited, asyncio.Task):
            return None
        return [awaited], "all", "asyncio.wait_for()"
    if code.co_name == "_wait" and is_asyncio_file(code.co_filename):
        local = inner.f_locals
        if local.get("waiter") is not fut or local.get("timeout") is not None:
            return None
        # FIRST_EXCEPTION ends at the first to raise, which any of them may:
        # stuck only if all are, as FIRST_COMPLETED.
        mode = "all" if local.get("return_when") == asyncio.ALL_COMPLETED else "any"
        return list(local.get("fs") or ()), mode, "asyncio.wait"
    return None


# asyncio's coroutines that await a future of their own, by qualified name:
# what a waiting task is doing, in words (see _internal_wait).
_INTERNAL_WAITS: Final = {
    "sleep": "asyncio.sleep()",
    "to_thread": "a thread (asyncio.to_thread)",
    "StreamReader._wait_for_data": "data on a stream",
    "FlowControlMixin._drain_helper": "a stream to drain (writer.drain)",
    "Process.wait": "a subprocess to exit",
    "BaseSubprocessTransport._wait": "a subprocess to exit",
    "Process.communicate": "a subprocess's output",
    "_wait": "asyncio.wait()",
    "wait_for": "asyncio.wait_for()",
    "Server.serve_forever": "a server to be closed (serve_forever)",
    "Server.wait_closed": "a server to close",
}


def _internal_wait(task: Any, fut: Any, timer: Any) -> str:
    """What a task waiting on one of asyncio's own futures waits for, as best it can be told.

    By the innermost coroutine of its await chain (``sleep``, a stream's
    read), by what resolves the future (``timer``, the loop's timer that
    will: how long is left; another thread: ``run_in_executor``), else by
    asyncio's function that waits.
    """
    frames = await_frames(task)
    inner = frames[-1].f_code if frames else None
    name = qualname(inner) if inner is not None and is_asyncio_file(inner.co_filename) else None
    what = _INTERNAL_WAITS.get(name or "")
    if name == "sleep" and timer is not None:
        left = max(0.0, float(timer.when()) - float(loop_of(fut).time()))
        what = f"asyncio.sleep(), {left:.0f} s to go" if left >= 1 else "asyncio.sleep()"
    if what is None:
        callbacks = getattr(fut, "_callbacks", None) or ()
        if any("_chain_future" in getattr(cb[0], "__qualname__", "") for cb in callbacks):
            what = "a thread or process (run_in_executor)"
        elif name is not None:
            what = f"asyncio's {name}"
        else:
            what = "an asyncio internal future"
    return what


def _left_text(left_at: list[str], permits: bool = False) -> str:
    """``taken at leak.py:9 in query by a task that finished without releasing it``; for a
    semaphore, ``2 permits taken at ... by tasks that ...`` (each place counted)."""
    counts = dict.fromkeys(left_at, 0)
    for site in left_at:
        counts[site] += 1

    def taken(n: int) -> str:
        return f"{n} permits taken" if n > 1 else "a permit taken" if permits else "taken"

    places = ", ".join(f"{taken(n)} at {site}" for site, n in counts.items())
    if len(left_at) == 1:
        return f"{places} by a task that finished without releasing it"
    return f"{places} by tasks that finished without releasing them"


def _lock_wait(task: Any, lock: Any, what: str, by_frame: dict[int, Any]) -> Wait:
    owner = getattr(lock, "_aiotrace_owner", None)
    if owner is None or not lock.locked():
        return Wait(task, what, None)  # released just now, or taken before tracing
    frame = _base.holding(owner, by_frame)  # the owner, or its caller it returned to
    holder = by_frame.get(id(frame)) if frame is not None else None
    lasti = getattr(lock, "_aiotrace_olasti", owner.f_lasti)
    site = _where(owner.f_code, line_of(owner.f_code, lasti)) + _entered_text(owner)
    if holder is None:
        if _suspended_elsewhere(owner):
            return Wait(task, what, None)
        # held by a coroutine that is no task's any more
        return Wait(task, what, [], left_at=[site], primitive=lock)
    return Wait(task, what, [holder], held_at={id(holder): site})


def _suspended_elsewhere(owner: FrameType) -> bool:
    """Whether ``owner``, no pending task's frame, may yet be live: an async generator's
    (``async with lock: yield`` in an ``@asynccontextmanager``) is suspended at its
    ``yield``, out of every await chain, while the ``async with`` around it runs. Its
    holder is then unknown, not gone: a frame does not tell whether its generator
    finished."""
    return bool(owner.f_code.co_flags & _base.ASYNC_GENERATOR)


def _semaphore_wait(task: Any, sem: Any, what: str, by_frame: dict[int, Any]) -> Wait:
    permits = getattr(sem, "_aiotrace_permits", None) or []
    holders: list[Any] = []
    held_at: dict[int, str] = {}
    left_at: list[str] = []
    unknown = False
    for _, owner, site in list(permits):
        frame = _base.holding(owner, by_frame) if owner is not None else None
        holder = by_frame.get(id(frame)) if frame is not None else None
        where = None
        if site is not None:
            resolved = SITES.resolve(site)
            where = f"{resolved.label} in {resolved.function}{_entered_text(owner)}"
        if holder is None:
            unknown = unknown or owner is None or _suspended_elsewhere(owner)
            if owner is not None and where is not None:
                left_at.append(where)
            continue
        if holder not in holders:
            holders.append(holder)
            if where is not None:
                held_at[id(holder)] = where
    if unknown or (not holders and not permits):
        return Wait(task, what, None)
    return Wait(task, what, holders, held_at=held_at, left_at=left_at, primitive=sem)


# ===========================================================================
# Waits and holds that never ended
# ===========================================================================


def report_unfinished() -> int:
    """At exit: a span for every wait still waiting and every hold still held.

    A program stopped while stuck (SIGTERM from a CI timeout, a supervisor)
    never ends those waits and holds, and they are the ones that explain
    it: without them its report would say that no wait passed its
    threshold. Each ends now, with outcome ``pending``; a wait for a lock
    or a semaphore names the task holding it. Only the primitives that
    diagnosis watches are known here (``aiotrace run`` watches them unless
    ``--no-diagnosis``). A primitive held by a task that has finished is a
    leak, reported as such, not here. Returns how many spans.
    """
    from time import perf_counter_ns

    watched = _base.WATCHED[0]
    if watched is None:
        return 0
    now = perf_counter_ns()
    pending = pending_tasks()
    by_frame = _tasks_by_frame(pending)
    count = 0
    holders: dict[int, str] = {}  # id(primitive) -> a pending task holding it
    for prim in list(watched):
        with contextlib.suppress(Exception):
            count += _unfinished_holds(prim, by_frame, now, holders)
    waiters = _waiter_index()
    for task in pending:
        with contextlib.suppress(Exception):
            count += _unfinished_wait(task, waiters, now, holders)
    return count


def _parent_of(task: Any) -> Any:
    from aiotrace._context import current_span, task_span_of

    span = task_span_of(task)
    return span if span is not None else current_span()


def _unfinished_holds(
    prim: Any, by_frame: dict[int, Any], now: int, holders: dict[int, str]
) -> int:
    ref: Any = getattr(prim, "_aiotrace_ref", None)
    name = semconv.HOLD_SPAN_OF.get(ref.kind) if ref is not None else None
    if name is None or ref.stats.internal:
        return 0
    if isinstance(prim, asyncio.Lock):
        owner = getattr(prim, "_aiotrace_owner", None)
        if owner is None or not prim.locked():
            return 0
        olasti = getattr(prim, "_aiotrace_olasti", 0)  # where it was taken (diagnosis keeps it)
        entries = [(getattr(prim, "_aiotrace_t0", 0), owner, (owner.f_code, olasti))]
    else:  # a Semaphore's permits: (t0, owner frame, site)
        entries = list(getattr(prim, "_aiotrace_permits", None) or ())
    queued = len(getattr(prim, "_waiters", None) or ())
    attrs: dict[str, Any] = {}
    if queued:
        attrs[semconv.ATTR_WAITERS_DURING] = queued
    if ref.capacity is not None:
        attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = ref.capacity
    count = 0
    for t0, owner, site in entries:
        frame = _base.holding(owner, by_frame) if owner is not None else None
        holder = by_frame.get(id(frame)) if frame is not None else None
        if holder is None or not t0:
            continue  # held by a task that finished: a leak, reported as one
        holder_name = _base.task_name(holder)
        _base.emit_hold(
            name,
            ref,
            t0,
            now,
            _parent_of(holder),
            holder_name,
            raw_site(site[0], site[1]) if site is not None else None,
            attrs or None,
            semconv.OUTCOME_PENDING,
        )
        holders.setdefault(id(prim), holder_name or "?")
        count += 1
    return count


def _unfinished_wait(
    task: Any, waiters: dict[int, tuple[Any, str, str]], now: int, holders: dict[int, str]
) -> int:
    fut = getattr(task, "_fut_waiter", None)
    entry = waiters.get(id(fut)) if fut is not None else None
    if entry is None:
        return 0  # not on a primitive: a sleep, I/O, a future (futures end their own spans)
    prim, _, role = entry
    ref: Any = getattr(prim, "_aiotrace_ref", None)
    name = semconv.WAIT_SPAN_OF.get((ref.kind, role)) if ref is not None else None
    if name is None or ref.stats.internal:
        return 0
    # When it began: the start our patched wait keeps in its frame (t0);
    # where: the first of the program's frames outside it.
    t0 = None
    user = None
    for frame in reversed(await_frames(task)):
        if t0 is None:
            if _AIOTRACE_PRIMITIVES in frame.f_code.co_filename:
                value = frame.f_locals.get("t0")
                if type(value) is int:
                    t0 = value
        elif not is_internal_file(frame.f_code.co_filename):
            user = frame
            break
    if t0 is None:
        return 0
    holder = holders.get(id(prim))
    _base.emit_wait(
        name,
        ref,
        t0,
        now,
        semconv.OUTCOME_PENDING,
        {semconv.ATTR_BLOCKER_TASK: holder} if holder is not None else None,
        frame=user,
        task=task,
        parent=_parent_of(task),
    )
    return 1


# ===========================================================================
# Findings from the graph
# ===========================================================================


def deadlock_findings(graph: Graph) -> list[Finding]:
    """A finding per cycle of tasks waiting for each other."""
    findings = []
    for cycle in graph.cycles():
        names = " -> ".join(f'"{t.get_name()}"' for t in [*cycle, cycle[0]])
        details = [graph.describe_wait(t) for t in cycle]
        for task in cycle:
            details.append(f"{_task_label(task)}, stack:")
            details.extend(_stack_lines(task))
        if len(cycle) == 1:  # a lock taken again by its holder (not re-entrant), say
            summary = f"{_task_label(cycle[0])} waits for what it holds itself"
        else:
            summary = f"{len(cycle)} tasks wait for each other: {names}"
        findings.append(Finding(DEADLOCK, summary, details, cycle))
    return findings


def lock_order_finding(earlier: Nesting, now: Nesting) -> Finding:
    """The finding for two nestings of the same two primitive classes in opposite orders."""

    def name(stats: Any) -> str:
        return str(stats.display_name())

    def at(site: tuple[Any, int] | None, via: tuple[Any, int] | None = None) -> str:
        if site is None:
            return "?"
        resolved = SITES.resolve(site)
        text = f"{resolved.label} in {resolved.function}"
        if via is not None:  # inside an @asynccontextmanager: where it was entered
            entered = SITES.resolve(via)
            text += f" (entered at {entered.label} in {entered.function})"
        return text

    a, b = name(earlier.first), name(earlier.second)
    return Finding(
        LOCK_ORDER,
        f"{a} and {b} are taken in both orders: a possible deadlock",
        [
            f'task "{earlier.task}" took {a} at {at(earlier.first_site, earlier.first_via)}, '
            f"then {b} at {at(earlier.second_site, earlier.second_via)}",
            f'task "{now.task}" took {b} at {at(now.first_site, now.first_via)}, '
            f"then {a} at {at(now.second_site, now.second_via)}",
            "if both run at once, each can hold one and wait forever for the other",
        ],
    )


# ===========================================================================
# The watchdog
# ===========================================================================


SampledFrame = tuple[str, int, str]
"""A sampled frame: file, line, function."""


@dataclass
class _LoopState:
    sent: float = 0.0
    """When the ping in flight was sent (the loop was busy then, if it has not run it)."""
    alive: float = 0.0
    """When the loop last ran a ping: a block since then began after it."""
    pending: bool = False
    thread_id: int | None = None
    blocked: bool = False
    sample: list[SampledFrame] = field(default_factory=list)
    """The blocked thread's stack, outermost first: (file, line, function)."""
    sample_callback: str | None = None
    sample_task: str | None = None
    sample_coro: str | None = None
    sample_task_span: Any = None
    """The sampled task's span, taken while it runs: a task that ends with its block
    has handed its span on by the time the block is reported."""
    last_graph: float = 0.0
    graph_every: float = 0.0
    """Seconds from one graph check to the next: the watchdog's interval, or more
    for a program whose checks cost more (see ``Watchdog.graph_share``)."""
    stuck_since: float | None = None


class HangStopped(SystemExit):
    """Raised by a hung test's event loop, from a callback of its own, when cancelling its
    tasks could not end it: the test fails with it, and the session goes on. A
    ``SystemExit``: the one exception besides ``KeyboardInterrupt`` (which would end
    pytest's session) that an event loop lets out of a callback, and that a task's
    ``except Exception`` does not take."""


def raise_hang_stopped() -> None:
    """The callback that makes a loop raise :class:`HangStopped`."""
    raise HangStopped("aiotrace: the hung test did not stop when its tasks were cancelled")


GRAPH_SHARE: Final = 0.02
"""The share of a loop's time the graph checks may take (``math.inf``: no bound).

A check costs about 3.5 ms per 1,000 pending tasks: every half second up to
about 3,000 tasks, further apart beyond. 10,000 tasks: 37.5 ms, which every
half second took 7.5% of the loop's time; every 1.9 s instead."""


class Watchdog:
    """Pings event loops from a thread: blocked loops, deadlocks, hangs.

    ``report(finding)`` receives every finding (from any thread);
    ``blocked(...)`` every loop block as it ends; ``hung(finding)`` once, when
    a hang is established: what to do then (interrupt, exit) is the caller's.
    """

    def __init__(
        self,
        report: Callable[[Finding], None],
        blocked: Callable[
            [float, float, str | None, str | None, list[SampledFrame], Any, str | None], None
        ],
        hung: Callable[[Finding], None] | None = None,
        hang_timeout: float | None = None,
        block_threshold: float = 0.1,
        interval: float = 0.01,
        graph_interval: float = 0.5,
        discover_interval: float = 0.05,
    ) -> None:
        self._report = report
        self._blocked = blocked
        self._hung = hung
        self.hang_timeout = hang_timeout
        self.block_threshold = block_threshold
        # A block began between the loop's last answer and the next ping, at
        # most one interval apart: the interval is the error of a block's
        # start, and of which blocks near the threshold are seen at all.
        self.interval = min(interval, block_threshold / 10)
        self.graph_interval = graph_interval
        self.graph_share = GRAPH_SHARE
        """At most this share of the loop's time goes to the graph checks: a check
        that took longer puts the next one further off than ``graph_interval``."""
        self.forget_interval = 5.0
        """Seconds between lock-order checking's clean-ups (``_forget_finished_holds``):
        a walk of every pending task's await chain, about 3 ms per 1,000 tasks."""
        self._forgot = 0.0
        self._held_sampled = 0.0
        self._sample_every = 0.0
        """Seconds between samples of where holders are: every tick, or more apart
        when a sample costs more (see ``_sample_holders``)."""
        self.discover_interval = discover_interval
        self._discover_every = discover_interval
        self._discovered = 0.0
        self.started = time.monotonic()
        self.since_ns = 0
        """A hang lists the tasks begun since then (``perf_counter_ns``) first (see
        :meth:`Graph.format`): from when the clock last started over, or when the
        pytest plugin says (the hung phase of a test: not a session fixture's tasks)."""
        self._loops: dict[int, tuple[Any, _LoopState]] = {}
        self._stop = threading.Event()
        self._reported: set[frozenset[int]] = set()
        self.stranded_after = STRANDED_AFTER
        self._stranded: dict[tuple[int, int], float] = {}
        """(id(task), id(primitive)) -> since when (monotonic) the task waits on a lock
        or permits only finished tasks took (see :meth:`_check_stranded`)."""
        self.stranded_told: set[tuple[int, int]] = set()
        """Those reported as the program ran: not again at its end while still stranded."""
        self._hang_reported = False
        self.deadline: float | None = (
            self.started + hang_timeout if hang_timeout is not None else None
        )
        self.thread = self._new_thread()
        self._fork_paused = False
        self.on_tick: Callable[[], None] | None = None
        """Called first at each tick, on the watchdog's thread."""

    def _new_thread(self) -> threading.Thread:
        return _threads.thread(self._run, "aiotrace-watchdog")

    def start(self) -> None:
        self.thread.start()
        _fork.pause_for_forks(self)

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(2.0)

    def pause_for_fork(self) -> bool:
        """Stop the thread for a fork (see ``_fork``); only the parent's starts again."""
        thread = self.thread
        if self._stop.is_set() or not thread.is_alive() or thread is threading.current_thread():
            return False  # stopped, or a finding's handler forking on this very thread
        self._fork_paused = True  # resumed after, whatever the wait below meets
        self._stop.set()
        _threads.wait_ended(thread, Pipeline.FORK_PATIENCE)
        return True

    def resume_after_fork(self) -> None:
        if self._fork_paused:
            self._fork_paused = False
            self._stop = threading.Event()
            self.thread = self._new_thread()
            self.thread.start()

    def restart_clock(self, hang_timeout: float | None) -> None:
        """A new deadline from now (the pytest plugin: per test)."""
        self.hang_timeout = hang_timeout
        self.deadline = time.monotonic() + hang_timeout if hang_timeout is not None else None
        self.since_ns = time.perf_counter_ns()
        self._hang_reported = False
        for _, state in self._loops.values():
            state.stuck_since = None

    # -- the thread --------------------------------------------------------
    def _run(self) -> None:
        stop = self._stop  # this thread's own: after a fork, the next thread has another
        while not stop.wait(self.interval):
            with contextlib.suppress(Exception):  # the watchdog must outlive anything
                if self.on_tick is not None:
                    self.on_tick()
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._discovered >= self._discover_every:  # every task: not every tick
            self._discovered = now
            # Not a fork's copies of its parent's loops (see _loops.INHERITED):
            # they say they are running, but never will be here.
            for loop in task_loops():
                if id(loop) not in self._loops:
                    self._loops[id(loop)] = (loop, _LoopState())
            # It reads every task, holding the GIL the program's thread wants:
            # with many tasks, less often (as the graph checks).
            cost = time.monotonic() - now
            self._discover_every = max(self.discover_interval, cost / self.graph_share)
        waiting_for_io: set[int] | None = None  # thread ids
        for key, (loop, state) in list(self._loops.items()):
            if is_closed(loop):
                del self._loops[key]
                continue
            if state.pending:
                # Sampled an interval early: a block just over the threshold
                # may end before the next tick. Reported only if it was over.
                began = self._block_start(state)
                if now - began >= self.block_threshold - self.interval and is_running(loop):
                    self._sample(loop, state)
                continue
            if not is_running(loop):
                continue
            thread_id = state.thread_id or getattr(loop, "_thread_id", None)
            if thread_id is not None and now - state.last_graph < self._graph_every(state):
                # A loop waiting for I/O is blocked by nothing: seen so, it
                # needs no ping but the graph's. An idle program's loop then
                # wakes twice a second for us, not a hundred times.
                if waiting_for_io is None:
                    waiting_for_io = _from_frames(_threads_waiting_for_io) or set()
                if thread_id in waiting_for_io:
                    state.alive = now  # as good as an answer to a ping
                    continue
            state.pending = True
            state.sent = now
            try:
                call_soon_threadsafe(loop, self._ping, loop, state)
            except RuntimeError:  # closed in between
                state.pending = False
        if now - self._held_sampled >= self._sample_every:
            self._held_sampled = now
            self._sample_holders()
        if self.deadline is not None and now >= self.deadline and not self._hang_reported:
            self._timeout()

    def _sample_holders(self) -> None:
        """Where the holders others wait for are (see ``_lock_order.sample_holders``).

        Every tick while it is cheap; with thousands of holds at once, spaced
        by its cost as the graph checks are, for it holds the GIL the
        program's thread wants.
        """
        from aiotrace.primitives import _lock_order

        if not _lock_order.HELD:
            return
        began = time.monotonic()
        try:
            _lock_order.sample_holders(threads_running)
        except Exception as exc:  # a bug of ours: counted, and sampling stops
            self._sample_every = math.inf
            _failed(exc)
            return
        self._sample_every = max(self.interval, (time.monotonic() - began) / self.graph_share)

    def _sample(self, loop: Any, state: _LoopState) -> None:
        """The loop has not run our ping: sample its thread's stack, while it blocks."""
        thread_id = state.thread_id or getattr(loop, "_thread_id", None)
        if state.blocked or thread_id is None:
            return
        read = _from_frames(functools.partial(_stack_of, thread_id))
        if read is None:  # not safe to look: a block without a stack
            read = [], None
        stack, callback = read
        if callback is _NO_THREAD:
            return
        if any(code is _PIPELINE_DRAIN for code, _ in stack):
            # aiotrace's own back-pressure (the buffer is full and the program
            # waits for the pipeline): not the program's doing, not reported.
            # Should the program go on blocking after it, that block counts
            # from here: sampled once the drain is over, the time spent in it
            # would otherwise be charged to the program's line.
            state.sent = state.alive = time.monotonic()
            return
        # Taken raw (file, line, function: no source lines read) and published
        # before ``blocked``: the loop may answer the ping the moment the block
        # ends, and it reports what it finds here. Lines are read then.
        # Under ``aiotrace run`` the program's outermost frame is called by
        # aiotrace's launcher: what is above it is not the program's.
        cli = sys.modules.get("aiotrace.cli")
        launchers = {
            getattr(getattr(cli, name, None), "__code__", None)
            for name in ("_run_script", "_run_module")
        }
        for index, (code, _) in enumerate(stack):
            if code in launchers:
                del stack[: index + 1]
                break
        raw = [(code.co_filename, line, code.co_name) for code, line in stack]
        state.sample = (
            _innermost(
                [
                    entry
                    for entry in raw
                    if not is_internal_file(entry[0]) and "runpy" not in entry[0]
                ]
            )
            or [
                # Nothing of the program's on the stack (a callback of asyncio's
                # own, a thread starting): asyncio's frames, rather than none.
                entry
                for entry in raw
                if "/aiotrace/" not in entry[0]
            ][-_SAMPLED_FRAMES:]
        )
        state.sample_callback = callback
        task = _base.tasks_by_loop(loop)
        state.sample_task_span = TASK_SPANS.get(id(task)) if task is not None else None
        state.sample_task = task.get_name() if task is not None else None
        state.sample_coro = getattr(coro_of(task), "__qualname__", None)
        state.blocked = True

    def _block_start(self, state: _LoopState) -> float:
        """When the loop's block began, within half an interval.

        Between its last answer (``alive``) and the ping it has not answered
        (``sent``): the middle of the two. The ping alone would make every
        block look shorter by up to an interval, and miss some just over
        the threshold. A longer gap (the loop was not running, or this
        thread did not get to run) says nothing of when the block began:
        then the ping's time, the latest it can have begun.
        """
        gap = state.sent - state.alive
        return state.sent - gap / 2 if 0.0 <= gap <= 3 * self.interval else state.sent

    def _ping(self, loop: Any, state: _LoopState) -> None:
        """In the loop's thread: the loop is alive. Ends a block; checks the graph.

        It runs as a callback of the program's loop, where an exception goes
        to the program's exception handler (a service may treat that as
        fatal): a bug of ours is counted instead, and the graph checks stop.
        """
        try:
            self._pinged(loop, state)
        except Exception as exc:
            self.graph_interval = math.inf  # blocks are still timed, by the code above it
            _failed(exc)
        finally:
            state.pending = False  # only now: no second ping while this one runs

    def _pinged(self, loop: Any, state: _LoopState) -> None:
        now = time.monotonic()
        state.thread_id = threading.get_ident()
        if state.blocked:
            # What the watchdog sampled, read before it may sample again.
            sample, task, coroutine = state.sample, state.sample_task, state.sample_coro
            task_span, callback = state.sample_task_span, state.sample_callback
            state.blocked = False
            start = self._block_start(state)
            if now - start >= self.block_threshold:
                with contextlib.suppress(Exception):
                    self._blocked(start, now, task, coroutine, sample, task_span, callback)
            state.sample_task_span = None
        state.alive = now
        if now - state.last_graph < self._graph_every(state):
            return
        state.last_graph = now
        try:
            self._check_graph(loop, state, now)
        finally:
            cost = time.monotonic() - now
            state.graph_every = cost / self.graph_share

    def _graph_every(self, state: _LoopState) -> float:
        return max(self.graph_interval, state.graph_every)

    def _check_graph(self, loop: Any, state: _LoopState, now: float) -> None:
        every = pending_tasks()
        if now - self._forgot >= self.forget_interval:
            self._forgot = now
            _forget_finished_holds(every)
        tasks = [t for t in every if loop_of(t) is loop]
        if not tasks:
            state.stuck_since = None
            return
        graph = snapshot(tasks)
        for finding in deadlock_findings(graph):
            key = frozenset(id(t) for t in finding.tasks)
            if key not in self._reported:
                self._reported.add(key)
                self._report(finding)
        self._check_stranded(graph, now)
        if _can_progress(loop):
            state.stuck_since = None
            return
        if state.stuck_since is None:
            state.stuck_since = now
        elif now - state.stuck_since >= self._stuck_grace() and not self._hang_reported:
            self._hang(
                graph,
                f"no task can make progress: {len(tasks)} pending, every one waiting, "
                "no callback, timer, I/O, signal handler or thread that could wake them",
                stuck=True,
            )

    def _check_stranded(self, graph: Graph, now: float) -> None:
        """A task waiting on a lock, or permits, that only finished tasks took and never
        gave back (a request behind the permit an earlier request's error path kept):
        reported as the program runs on, once so for :attr:`stranded_after` seconds, not
        only at its end, which a server may never reach. Not while a scheduled callback
        or another pending task has the primitive at hand: a rate limiter's
        ``loop.call_later(1, sem.release)``, a hand-off to another task."""
        seen: dict[tuple[int, int], float] = {}
        for task in graph.tasks:
            wait = graph.waits.get(id(task))
            if wait is None or wait.releasers != [] or not wait.left_at:
                continue
            key = (id(task), id(wait.primitive))
            since = seen[key] = self._stranded.get(key, now)
            if now - since < self.stranded_after or key in self.stranded_told:
                continue
            if _at_hand(wait.primitive, wait, graph.tasks) != []:
                continue
            self.stranded_told.add(key)
            self._report(stranded_finding(graph, task))
        self._stranded = seen
        self.stranded_told = self.stranded_told & set(seen)

    def stuck_for(self, thread_id: int | None = None) -> float:
        """Seconds the longest-stuck loop (of those ``thread_id`` runs, if given) has been
        unable to make progress; 0 if none is (or none has been since :meth:`forget_stuck`)."""
        now = time.monotonic()
        since = [
            s.stuck_since
            for _, s in list(self._loops.values())
            if s.stuck_since and (thread_id is None or s.thread_id == thread_id)
        ]
        return now - min(since) if since else 0.0

    def forget_stuck(self) -> None:
        """Count a loop stuck only from its next graph check on (a hang's interrupt)."""
        for _, state in list(self._loops.values()):
            state.stuck_since = None

    def stuck_again(self, thread_id: int | None = None) -> bool:
        """After :meth:`forget_stuck` (a hang's interrupt): whether a loop has since been
        stuck, no task able to progress, as long as a hang takes to be found (its clock
        then starts over). A hung program or test then is stopped harder: ended, or its
        loop made to raise :class:`HangStopped`. A task that swallows every
        cancellation (a ``TaskGroup``, already cancelling its tasks, does not cancel
        them twice) is never ended by one: it would never be. ``thread_id``: only the
        loops that thread runs (the program's main thread: not a helper loop of its
        own, idle in a thread of its own, or a test session's server)."""
        if self.stuck_for(thread_id) < self._stuck_grace():
            return False
        self.forget_stuck()
        return True

    def _stuck_grace(self) -> float:
        limit = 1.0
        return min(limit, self.hang_timeout) if self.hang_timeout is not None else limit

    def _timeout(self) -> None:
        limit = self.hang_timeout or 0.0
        graph = self._graph_from_any_thread()
        self._hang(graph, f"still running after the hang timeout of {limit:g} s")

    def _graph_from_any_thread(self) -> Graph:
        for loop, _ in list(self._loops.values()):
            if not is_running(loop):
                continue
            done = threading.Event()
            box: list[Graph] = []

            def build(box: list[Graph] = box, done: threading.Event = done) -> None:
                # A callback on the program's loop: nothing of ours may reach its handler.
                try:
                    box.append(snapshot())
                except Exception as exc:
                    _failed(exc)
                finally:
                    done.set()

            with contextlib.suppress(RuntimeError):
                call_soon_threadsafe(loop, build)
                if done.wait(1.0) and box:
                    return box[0]
        return snapshot()  # the loop is blocked: read it from here, best effort

    def _hang(self, graph: Graph, why: str, stuck: bool = False) -> None:
        self._hang_reported = True
        deadlocks = deadlock_findings(graph)
        details = []
        if deadlocks:
            details.append("deadlocked: " + deadlocks[0].summary)
        details.extend(graph.format(stuck, self.since_ns))
        details.extend(unread_failures(graph.tasks))
        finding = Finding(HANG, why, details, list(graph.tasks))
        self._report(finding)
        if self._hung is not None:
            self._hung(finding)


def _can_progress(loop: Any) -> bool:
    """Whether anything could still wake a task: callbacks, timers, I/O, signals, threads."""
    ready = getattr(loop, "_ready", None)
    if ready and any(not _ours(handle) for handle in list(ready)):
        return True
    if getattr(loop, "_scheduled", None):
        return True
    selector = getattr(loop, "_selector", None)
    if selector is not None:
        own = {getattr(loop, "_ssock", None), getattr(loop, "_csock", None)}
        own_fds = {s.fileno() for s in own if s is not None}
        with contextlib.suppress(Exception):
            if any(key.fd not in own_fds for key in selector.get_map().values()):
                return True
    elif not hasattr(loop, "_ready"):
        return True  # a loop we cannot see into (uvloop): assume it can
    if getattr(loop, "_signal_handlers", None):
        # loop.add_signal_handler(): a signal may come, from anywhere. The
        # service that waits for SIGTERM to stop is idle, not stuck.
        return True
    return _other_threads_busy()


def _ours(handle: Any) -> bool:
    """Our ping, or the loop reading its self-pipe because we pinged: not the program's work."""
    callback = getattr(handle, "_callback", None)
    return isinstance(getattr(callback, "__self__", None), Watchdog) or (
        getattr(callback, "__name__", None) == "_read_from_self"
    )


def _other_threads_busy() -> bool:
    """A thread other than ours and idle pool workers: it may call back into the loop."""
    others = [
        thread.ident or -1
        for thread in threading.enumerate()
        if thread is not threading.current_thread()
        and not thread.name.startswith("aiotrace-")
        and thread is not threading.main_thread()  # the loop's own, usually: judged already
    ]

    def busy(frames: dict[int, FrameType]) -> bool:
        tops = [frames.get(thread) for thread in others]
        return any(top is not None and not _idle_pool_worker(top) for top in tops)

    found = _from_frames(busy)
    return True if found is None else found  # cannot look: assume they may


_SELECTS: Final = frozenset(
    vars(cls)["select"].__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and hasattr(vars(cls).get("select"), "__code__")
)
"""The code of every ``select`` in :mod:`selectors`: where asyncio's own loops wait."""
_RUN_ONCE: Final = asyncio.base_events.BaseEventLoop._run_once.__code__  # type: ignore[attr-defined]


def _waiting_for_io(frame: FrameType | None) -> bool:
    """Whether a loop's thread, at ``frame``, is in the loop's own wait for I/O.

    The loop's: a callback that calls a selector (``subprocess.run`` does)
    blocks the loop, and its ``select`` is called from elsewhere. A loop
    whose wait has no Python frame (uvloop) is never seen waiting.
    """
    if frame is None or frame.f_code not in _SELECTS:
        return False
    caller = frame.f_back
    return caller is not None and caller.f_code is _RUN_ONCE


def _frame_ids(frames: dict[int, FrameType]) -> set[int]:
    """The ids of every frame on the stacks of ``frames``' threads."""
    return {id(frame) for top in frames.values() for frame in _stack_frames(top)}


def _threads_waiting_for_io(frames: dict[int, FrameType]) -> set[int]:
    """The threads of ``frames`` that are in a loop's own wait for I/O (see
    :func:`_waiting_for_io`)."""
    return {thread for thread, frame in frames.items() if _waiting_for_io(frame)}


_NO_THREAD: Final = "no such thread"
"""What :func:`_stack_of` gives as the callback of a thread that has no frame (it ended)."""


def _stack_of(
    thread: int, frames: dict[int, FrameType]
) -> tuple[list[tuple[CodeType, int]], str | None]:
    """``thread``'s stack as (code, line) pairs, outermost first, and the callback its
    loop runs (see :func:`_running_callback`); :data:`_NO_THREAD` if it has no frame."""
    top = frames.get(thread)
    if top is None:
        return [], _NO_THREAD
    stack = _stack_frames(top)
    return [(frame.f_code, frame.f_lineno) for frame in stack], _running_callback(top)


def _forget_finished_holds(pending: list[Any]) -> None:
    """Lock-order checking forgets what coroutines that have finished still held
    (see ``_lock_order.forget_finished``): every frame a pending task awaits in,
    or a thread runs now, is still running."""
    from aiotrace.primitives import _lock_order

    if not (_lock_order.HELD or _lock_order.ENTERED):
        return
    try:  # run in the loop's callback: nothing of ours may reach the program's handler
        threads_run = threads_running()
        if threads_run is None:  # other threads' stacks unseen: nothing is known to be gone
            return
        running = set(_tasks_by_frame(pending)) | threads_run
        _lock_order.forget_finished(running)
    except Exception as exc:  # a bug of ours: counted, and lock-order checking stops
        _lock_order._failed(exc)


def threads_running() -> set[int] | None:
    """The ids of the frames every thread runs now (see :func:`_from_frames`); None if
    they cannot be read."""
    return _from_frames(_frame_ids)


def _current_frames() -> dict[int, FrameType] | None:
    """``sys._current_frames()``, or ``None`` while another interpreter exists.

    On 3.12 and 3.13 it walks the threads of every interpreter and makes
    frame objects, in ours, for a subinterpreter's running frames: memory
    is corrupted and the process aborts (``free(): invalid pointer``). A
    program that runs code in a subinterpreter (``anyio.to_interpreter``)
    would die of being watched. Such a program has imported the module
    that makes them, which lists them.
    """
    for name in ("_interpreters", "_xxsubinterpreters"):
        module = sys.modules.get(name)
        if module is not None:
            try:
                if len(module.list_all()) > 1:
                    return None
            except Exception:
                return None
    return _all_frames()


def _from_frames(read: Callable[[dict[int, FrameType]], _R]) -> _R | None:
    """``read(frames)`` of every thread's current frame, those frames held no longer than
    ``read`` takes, and never while another thread runs; ``None`` if they cannot be read.

    A frame held when its thread returns from it outlives the call, with its
    locals: held across a switch of the GIL, what a callback had just finished
    with stayed alive until the watchdog let go of it (CPython's ``test_ssl``
    checks that an SSL context is freed the moment its loop stops, and failed
    so about one run in two under the diagnosis). A thread that waits for the
    GIL takes it from its holder only after the switch interval (5 ms): a fresh
    turn, taken by ``time.sleep(0)`` (:data:`_threads.sleep`) just before,
    leaves ``read`` that long. It must take far less, and keep no frame in what
    it returns.
    """
    _threads.sleep(0)
    frames = _current_frames()
    return read(frames) if frames is not None else None


def _failed(exc: Exception) -> None:
    """A bug of the diagnosis's own, met in the program's thread: counted and logged
    once (``stats().internal_errors``), never raised there."""
    RECORDER.fail("diagnosis", exc)


def _all_frames() -> dict[int, FrameType]:
    """``sys._current_frames()``; on 3.11, with no garbage collection inside it.

    On 3.11 it makes the frame objects it returns while it holds the lock
    on the interpreter's threads. A collection started by one of them
    that frees a ``threading.local`` takes that lock again, and the process
    hangs for good, every thread of it, since it holds the GIL too
    (CPython gh-106883, not fixed in 3.11; 3.10 makes no frame objects
    there, 3.12 collects only between bytecodes). The diagnosis's
    fault-injection test hung so on 3.11, about one run in six.

    So the collector is off for the call, and back on after it, if it was
    on. Between a program's thread and ours, the GIL changes hands only
    between bytecodes: the three calls are made from C (``deque`` over
    ``map`` over built-ins), with no bytecode between them, so no thread
    of the program can see the collector off, or turn it off meanwhile
    and find it on again. (A Python audit hook of the program's on
    ``sys._current_frames`` runs in between, collector off.)
    """
    if sys.version_info >= (3, 11) and sys.version_info < (3, 12):
        import gc
        from collections import deque
        from itertools import chain, compress
        from operator import call

        enabled: list[bool] = []
        frames: list[dict[int, FrameType]] = []
        try:
            deque(
                chain(
                    map(enabled.append, map(call, [gc.isenabled])),
                    map(call, [gc.disable]),
                    map(frames.append, map(call, [sys._current_frames])),
                    # Read as it is reached: [gc.enable] if it was on, else nothing.
                    map(call, compress([gc.enable], enabled)),
                ),
                maxlen=0,
            )
        finally:
            if enabled == [True] and not frames:  # sys._current_frames() raised
                gc.enable()
        return frames[0]
    return sys._current_frames()


def _idle_pool_worker(frame: FrameType) -> bool:
    """A ThreadPoolExecutor worker waiting for work (not running any)."""
    names = []
    f: FrameType | None = frame
    while f is not None:
        names.append(f.f_code.co_name)
        f = f.f_back
    return "_worker" in names and "run" not in names[: names.index("_worker")]


def leak_findings(since_ns: int = 0) -> list[Finding]:
    """Locks held, permits taken and futures pending that nobody will ever release."""
    from aiotrace import _leaks

    findings = []
    for leak in _leaks.find(since_ns):
        findings.append(Finding(LEAK, f"{leak.kind}: {leak.primitive}", [leak.detail]))
    return findings


def stranded_findings(graph: Graph, told: set[tuple[int, int]] | None = None) -> list[Finding]:
    """Pending tasks waiting on something no pending task can end (a finished holder);
    not those ``told`` as the program ran (see ``Watchdog._check_stranded``)."""
    findings = []
    for task in graph.tasks:
        wait = graph.wait_of(task)
        if wait is not None and wait.releasers == []:
            if told and (id(task), id(wait.primitive)) in told:
                continue
            findings.append(stranded_finding(graph, task))
    return findings


def stranded_finding(graph: Graph, task: Any) -> Finding:
    return Finding(LEAK, f"{_task_label(task)} is stranded", [graph.describe_wait(task)], [task])


STRANDED_AFTER: Final = 1.0
"""Seconds a task waits behind a lock or permits that finished tasks never gave back
before it is reported as stranded while the program runs (see ``Watchdog``)."""


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then in the order found."""
    return sorted(findings, key=lambda f: f.severity)


# ===========================================================================
# Diagnosing a traced process: what aiotrace run and pytest --aiotrace use
# ===========================================================================


@dataclass
class DiagnosisConfig:
    """What to watch for."""

    hang_timeout: float | None = None
    """Seconds: a hang is declared past this (and as soon as no task can progress)."""
    block_threshold: float | None = 0.1
    """Seconds a callback may block the loop before it is a finding; None: not watched."""
    lock_order: bool = True
    deadlocks: bool = True
    dump_signals: bool = True
    """SIGUSR1 (and SIGINT) print the wait-for graph and every task's stack."""
    leaks_at_exit: bool = True
    """Report what is still held at the end (the pytest plugin checks after each test)."""

    def for_children(self) -> DiagnosisConfig:
        """What a child process of the run watches: the same, but no hang and no signals.

        The hang timeout is the run's (the run stops, children and all), and
        Ctrl-C and SIGUSR1 dump the run's process: a child's signals stay
        the program's. Leaks are checked at the child's exit, which is its
        end, even where the run checks after each test instead (pytest).
        """
        return replace(self, hang_timeout=None, dump_signals=False, leaks_at_exit=True)


class Diagnoser:
    """Runs every check for one traced process and turns results into findings and spans.

    ``parent`` is the OpenTelemetry context finding spans go under (the run's
    or the session's span); ``on_hang`` decides what a hang does to the
    program. Findings are also kept in :attr:`findings`, most severe first
    when read through :meth:`sorted`.
    """

    def __init__(
        self,
        config: DiagnosisConfig,
        parent: Any,
        on_hang: Callable[[Finding], None] | None = None,
        echo: Callable[[str], None] | None = None,
        process: str | None = None,
    ) -> None:
        self.config = config
        self.parent = parent
        self.process = process
        """Which process, said in each finding, for a child of the run: its tasks'
        names (``Task-1``) and lines alone could be any process's."""
        self.on_hang = on_hang
        self.echo = echo if echo is not None else _stderr.line
        self.findings: list[Finding] = []
        self._lock = threading.Lock()
        self._blocks: dict[str, list[Any]] = {}
        self.scope: Callable[[], str | None] | None = None
        """What the program is doing now, for a finding made of many moments at the end
        (a blocked loop's): the pytest plugin's running test. Called from the watchdog."""
        self.watchdog: Watchdog | None = None
        self._saved_signals: list[tuple[int, Any, Any]] = []
        """(signal, its handler before ours, ours)."""
        self._ctrl_c_patch: tuple[Any, str, Any, Any] | None = None
        """(asyncio's Ctrl-C handling we wrap, its name, the original, ours)."""
        self._pending_dump: str | None = None
        self.hung: Finding | None = None
        self._watching = False
        self._started_ns = 0
        self._unread: deque[tuple[Any, BaseException | None, _Ended | None]] = deque(
            maxlen=_UNREAD_KEPT
        )
        """Exceptions reported in finalisers, waiting for :meth:`collect` (each holds its
        traceback's frames: bounded, for a program that fails faster than collect() runs)."""
        self._collecting = threading.Lock()
        self._swallowed_seen = 0
        """The number of the last swallowed cancellation read (see ``_base.SWALLOWED``)."""
        self._outer_checker: Any = None
        """Lock-order checking's reporter before start(), if it was checking already."""

    def start(self) -> None:
        from aiotrace import _leaks
        from aiotrace.primitives import _lock_order

        _leaks.watch(every_kind=True)
        self._watching = True
        self._started_ns = time.perf_counter_ns()
        _watch_unretrieved(self._unretrieved)
        _base.WATCH_SWALLOWED[0] += 1
        if self.config.lock_order:
            self._outer_checker = _lock_order.enable(
                lambda a, b: self.report(lock_order_finding(a, b))
            )
        if self.config.deadlocks or self.config.hang_timeout or self.config.block_threshold:
            self.watchdog = Watchdog(
                self.report,
                self._loop_blocked,
                self._hung,
                hang_timeout=self.config.hang_timeout,
                block_threshold=self.config.block_threshold or 3600.0,
            )
            self.watchdog.on_tick = self.collect
            self.watchdog.start()
        if self.config.dump_signals:
            self._install_dumps()

    def finish(self, at_exit: bool = True) -> list[Finding]:
        """Stop watching; leaks left at the end become findings. Returns them all, sorted.

        At exit (``aiotrace run``'s, a child's, a pytest session's), every wait
        still waiting and hold still held becomes a span first
        (:func:`report_unfinished`).
        """
        from aiotrace.primitives import _lock_order

        if self.watchdog is not None:
            self.watchdog.stop()
        self.flush_dump()
        if self.config.lock_order:
            _lock_order.disable(self._outer_checker)
        self._restore_dumps()
        if at_exit and self.config.leaks_at_exit:
            with contextlib.suppress(Exception):
                graph = snapshot()
                told = self.watchdog.stranded_told if self.watchdog is not None else None
                for finding in stranded_findings(graph, told):
                    self.report(finding, echo=False)
            with contextlib.suppress(Exception):
                for finding in leak_findings():
                    self.report(finding, echo=False)
        if at_exit:
            with contextlib.suppress(Exception):
                report_unfinished()  # while watched, and before report_pending() ends the tasks
        if self._watching:  # what start() began, ended: a program traced later is not watched
            self._watching = False
            from aiotrace import _leaks

            _leaks.unwatch(every_kind=True)
            _unwatch_unretrieved(self._unretrieved)
            _base.WATCH_SWALLOWED[0] = max(0, _base.WATCH_SWALLOWED[0] - 1)
            if at_exit:
                with contextlib.suppress(Exception):
                    self._unretrieved_at_exit()
        self.collect()
        self._report_blocks()
        return self.sorted()

    def sorted(self) -> list[Finding]:
        with self._lock:
            return sort_findings(self.findings)

    # -- findings --------------------------------------------------------
    def report(self, finding: Finding, echo: bool = True) -> None:
        """Keep a finding, emit its span, and print it now if it is urgent."""
        if self.process is not None:
            finding.details.append(f"in {self.process}")
        with self._lock:
            self.findings.append(finding)
        with contextlib.suppress(Exception):
            self._span(finding)
        if echo and finding.kind in (DEADLOCK, HANG, LOCK_ORDER, LEAK):
            # (A leak reported as the program runs is a task stranded behind one:
            # those found at the end are reported without.)
            with contextlib.suppress(Exception):
                self.echo(f"aiotrace: {finding.text()}")

    def _unretrieved(self, unread: Any, exc: BaseException | None, ended: _Ended | None) -> None:
        """asyncio reports a task or future collected with its exception unread.

        From a finaliser: inside a garbage collection, on any thread, maybe
        while that thread holds a lock of ours (``report``'s, the span
        pipeline's, the site table's). So only what names the task or future
        is taken here (never the object itself, which is being freed), and
        appended (a deque's append takes no lock); :meth:`collect` makes the
        finding and reports it.

        Only this diagnosis's: a task that ended raising, or a traced future
        given its exception, before it started (an earlier test's, collected
        only now), or an untraced one whose loop is closed, is left to
        asyncio's own report. A traced future is told by when it was given its
        exception, not by its loop: one its exception's traceback keeps in a
        reference cycle (the frame that set it holds it) is freed by a
        collection, often after its loop closed.
        """
        label = unread_label(unread)
        when = ended[0] if ended is not None else getattr(label, "set_ns", None)
        if when is not None:
            if when < self._started_ns:
                return  # not this diagnosis's: an earlier test's, freed only now
        else:  # not traced: one whose loop is gone is not ours either
            loop = getattr(unread, "get_loop", None)
            if loop is not None and loop().is_closed():
                return
        self._unread.append((label, exc, ended))

    def collect(self) -> None:
        """Report the findings made where nothing may be locked (see :meth:`_unretrieved`).

        The watchdog calls it at each tick, :meth:`finish` at the end, and a
        caller that reads :attr:`findings` (the pytest plugin, per test) first.
        """
        unread = self._unread
        while unread:
            try:
                label, exc, ended = unread.popleft()
            except IndexError:  # another thread took the last one
                break
            try:
                self.report(unretrieved_finding(label, exc, ended=ended), echo=False)
            except Exception as error:  # finish() must end, whatever the program raised
                _failed(error)
        self._collect_swallowed()

    def _collect_swallowed(self) -> None:
        """Report the swallowed cancellations noted since the last look (``_base.SWALLOWED``,
        read, not emptied: a diagnosis nested in another sees them too)."""
        noted = _base.SWALLOWED
        if not noted or noted[-1][0] <= self._swallowed_seen:
            return
        with self._collecting:  # the watchdog's tick and the plugin's look, one at a time
            for number, record in list(noted):  # a copy: another thread may append
                if number <= self._swallowed_seen:
                    continue
                self._swallowed_seen = number
                try:
                    if isinstance(record, SwallowedTimeout):
                        if record.when_ns >= self._started_ns:
                            finding = swallowed_timeout_finding(
                                record.task, record.site, record.what
                            )
                            self.report(finding, echo=False)
                    elif record.end_ns >= self._started_ns:
                        self.report(swallowed_finding(record), echo=False)
                except Exception as error:
                    _failed(error)

    def _unretrieved_at_exit(self) -> None:
        """Tasks that ended raising and futures given an exception, still referenced,
        their exception unread: asyncio would say so only when they are collected, which
        may be never, or after the report (a future its exception's traceback keeps in a
        reference cycle waits for a collection)."""
        for ref, _ in list(DIED):
            task = ref()
            ended = ended_raising(task) if task is not None else None
            if (
                ended is not None
                and ended[0] >= self._started_ns
                and getattr(task, "_log_traceback", False)
            ):
                # Read as asyncio's own __del__ does: exception() would mark it read.
                exc = getattr(task, "_exception", None)
                finding = unretrieved_finding(unread_label(task), exc, True, ended)
                self.report(finding, echo=False)
        for ref in list(GIVEN_EXCEPTION):
            future = ref()
            if future is None or not getattr(future, "_log_traceback", False):
                continue
            label = unread_label(future)
            if isinstance(label, UnreadFuture) and (label.set_ns or 0) >= self._started_ns:
                exc = getattr(future, "_exception", None)
                self.report(unretrieved_finding(label, exc, True), echo=False)

    def _span(self, finding: Finding) -> None:
        from opentelemetry.trace import Link, SpanContext, TraceFlags

        from aiotrace._context import TASK_SPANS

        ids = [
            (span.trace_id, span.span_id, span.flags)
            for span in map(TASK_SPANS.get, map(id, finding.tasks))
            if span is not None
        ]
        links = [
            Link(
                SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(flags)),
                {semconv.ATTR_LINK_KIND: semconv.LINK_BLOCKER},
            )
            for trace_id, span_id, flags in [*ids, *finding.spans]
        ]
        from aiotrace._session import aiotrace_tracer

        tracer = aiotrace_tracer()
        span = tracer.start_span(
            semconv.SPAN_FINDING, context=self.parent, attributes=finding.attributes(), links=links
        )
        span.end()

    # -- loop blocks -------------------------------------------------------
    def _loop_blocked(
        self,
        start: float,
        end: float,
        task: str | None,
        coroutine: str | None,
        sample: list[SampledFrame],
        task_span: Any,
        callback: str | None = None,
    ) -> None:
        from opentelemetry import trace

        epoch = time.time_ns() - time.monotonic_ns()
        start_ns, end_ns = int(start * 1e9) + epoch, int(end * 1e9) + epoch
        parent = self.parent
        if task_span is not None:
            parent = trace.set_span_in_context(task_span)
        stack = format_stack(_shown(sample))
        attributes: dict[str, Any] = {semconv.ATTR_BLOCKED_STACK: "\n".join(stack)}
        if task is not None:
            attributes[semconv.ATTR_TASK_NAME] = task
        if coroutine is not None:
            attributes[semconv.ATTR_TASK_COROUTINE] = coroutine
        if callback is not None:
            attributes[semconv.ATTR_BLOCKED_CALLBACK] = callback
        # A callback written in C has no frame: the stack's lines are its caller's.
        where = _blocking_line(sample) if callback is None else None
        if where is not None:
            attributes[semconv.ATTR_CODE_FILE_PATH] = where[0]
            attributes[semconv.ATTR_CODE_LINE_NUMBER] = where[1]
            if where[2] is not None:
                attributes[semconv.ATTR_VIA_SITE] = where[2]
        from aiotrace._session import aiotrace_tracer

        tracer = aiotrace_tracer()
        span = tracer.start_span(
            semconv.SPAN_LOOP_BLOCKED, context=parent, attributes=attributes, start_time=start_ns
        )
        span.end(end_time=end_ns)
        label = (
            via_text(f"{short_path(where[0])}:{where[1]}", where[2])
            if where is not None
            else callback or "?"
        )
        during = None
        if self.scope is not None:
            with contextlib.suppress(Exception):
                during = self.scope()
        with self._lock:
            self._blocks.setdefault(label, []).append(
                (end - start, task, coroutine, stack, callback, during)
            )

    def _report_blocks(self) -> None:
        with self._lock:
            blocks, self._blocks = self._blocks, {}
        for label, items in sorted(blocks.items(), key=lambda kv: -max(i[0] for i in kv[1])):
            longest = max(items, key=lambda i: i[0])
            seconds, task, coroutine, stack, callback, during = longest
            # Where the program was (under pytest, which tests), the longest block's first.
            scopes = [scope for scope in dict.fromkeys([during, *(i[5] for i in items)]) if scope]
            where = (
                [f"during {scopes[0]}" + (f" (and {len(scopes) - 1} more)" if scopes[1:] else "")]
                if scopes
                else []
            )
            if task:
                who = f'task "{task}"' + (f" ({coroutine})" if coroutine else "")
            else:
                who = "a callback" + (f" ({callback})" if callback and callback != label else "")
            self.report(
                Finding(
                    LOOP_BLOCKED,
                    f"the event loop was blocked {times(len(items))}, up to "
                    f"{seconds * 1000:.0f} ms, at {label} in {who}",
                    where
                    + (
                        [STACK_HEADING, *stack[-6:]]
                        if stack
                        else ["no stack: not sampled (subinterpreters were running)"]
                    ),
                ),
                echo=False,
            )

    # -- hangs and dumps -------------------------------------------------------
    def _hung(self, finding: Finding) -> None:
        # Without a hang timeout a stuck program is reported, not stopped.
        self.hung = finding
        if self.on_hang is not None and self.config.hang_timeout is not None:
            self.on_hang(finding)

    def dump(self, why: str) -> None:
        """Print the wait-for graph and every pending task's stack (SIGUSR1).

        Run by a signal handler, between two of the program's bytecodes: what
        it raised would be raised there, so a failure is counted instead.
        """
        try:
            text = self._dump_text(why)
            if text:
                self.echo(text)
        except Exception as exc:
            _failed(exc)

    def dump_later(self, why: str) -> None:
        """On Ctrl-C: the graph as it is now, printed once the program has printed its own
        traceback (:meth:`flush_dump`), or in 2 s if the program does not stop.

        Run inside asyncio's own Ctrl-C handling: a failure is counted, never raised.
        """
        try:
            text = self._dump_text(why)
            if not text:
                return
            self._pending_dump = text
            timer = threading.Timer(2.0, self.flush_dump)
            timer.daemon = True
            timer.name = "aiotrace-dump"
            timer.start()
        except Exception as exc:
            _failed(exc)

    def flush_dump(self) -> None:
        """Print a deferred Ctrl-C dump, if any (once)."""
        with self._lock:
            text, self._pending_dump = self._pending_dump, None
        if text:
            self.echo(text)

    def _dump_text(self, why: str) -> str | None:
        graph = snapshot()
        if not graph.tasks:
            return None
        lines = [f"aiotrace: {why}: {counted(len(graph.tasks), 'pending task')}"]
        for finding in deadlock_findings(graph):
            lines.append(f"  DEADLOCK: {finding.summary}")
        lines.extend(f"  {line}" for line in graph.format())
        lines.extend(f"  {line}" for line in unread_failures(graph.tasks))
        return "\n".join(lines)

    def _install_dumps(self) -> None:
        import signal

        if threading.current_thread() is not threading.main_thread():
            return
        # A fork inherits these: there they are the process's own again
        # (SIGUSR1 ends it, Ctrl-C is the program's), and dump nothing.
        pid = os.getpid()

        def on_usr1(signum: int, frame: Any) -> None:
            # Run between two of the program's bytecodes: nothing may raise there.
            try:
                if os.getpid() != pid:
                    signal.signal(signum, signal.SIG_DFL)
                    os.kill(os.getpid(), signum)
                    return
                self.dump("SIGUSR1")
            except Exception as exc:
                _failed(exc)

        usr1 = getattr(signal, "SIGUSR1", None)
        with contextlib.suppress(ValueError, OSError, TypeError):
            if usr1 is not None and signal.getsignal(usr1) is signal.SIG_DFL:
                self._saved_signals.append((usr1, signal.SIG_DFL, on_usr1))
                signal.signal(usr1, on_usr1)
        # Ctrl-C: asyncio.run() of 3.11+ handles SIGINT itself (cancelling the
        # main task); we dump first by wrapping that handler. Before 3.11 the
        # default handler raises KeyboardInterrupt, and a handler of ours would
        # show in the program's traceback: instead asyncio.run's clean-up,
        # which runs while the KeyboardInterrupt propagates and before it
        # cancels the tasks, takes the dump.
        runner = getattr(asyncio.runners, "Runner", None)
        if runner is not None and hasattr(runner, "_on_sigint"):
            original = runner._on_sigint

            def _on_sigint(self_: Any, signum: int, frame: Any, main_task: Any) -> Any:
                try:
                    if (
                        self._ctrl_c_patch is not None
                        and getattr(self_, "_interrupt_count", 0) == 0
                        and self.hung is None
                        and os.getpid() == pid
                    ):
                        self.dump_later("interrupted (Ctrl-C)")
                except Exception as exc:
                    _failed(exc)
                return original(self_, signum, frame, main_task)

            runner._on_sigint = _on_sigint
            self._ctrl_c_patch = (runner, "_on_sigint", original, _on_sigint)
        elif hasattr(asyncio.runners, "_cancel_all_tasks"):
            runners: Any = asyncio.runners
            cancel_all = runners._cancel_all_tasks

            def _cancel_all_tasks(loop: Any) -> Any:
                try:
                    if (
                        self._ctrl_c_patch is not None
                        and isinstance(sys.exc_info()[1], KeyboardInterrupt)
                        and self.hung is None
                        and os.getpid() == pid
                    ):
                        self.dump_later("interrupted (Ctrl-C)")
                except Exception as exc:
                    _failed(exc)
                return cancel_all(loop)

            runners._cancel_all_tasks = _cancel_all_tasks
            self._ctrl_c_patch = (runners, "_cancel_all_tasks", cancel_all, _cancel_all_tasks)

    def _restore_dumps(self) -> None:
        import signal

        for signum, handler, ours in self._saved_signals:
            # A handler the program installed since is the program's: it stays.
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(signum) is ours:
                    signal.signal(signum, handler)
        self._saved_signals.clear()
        if self._ctrl_c_patch is not None:
            owner, name, original, ours = self._ctrl_c_patch
            self._ctrl_c_patch = None  # ours, if it stays, only passes the call on
            # A wrapper the program put over ours since calls ours: it stays.
            if vars(owner).get(name) is ours:
                setattr(owner, name, original)


_PIPELINE_DRAIN: Final = Pipeline.drain.__code__


def _stack_frames(frame: Any) -> list[Any]:
    """``frame`` and its callers, outermost first (as ``traceback.format_stack`` lists them)."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames[::-1]


_SAMPLED_FRAMES: Final = 12


def _innermost(entries: list[SampledFrame]) -> list[SampledFrame]:
    """The innermost :data:`_SAMPLED_FRAMES` of a sampled stack, and the program's
    innermost frame before them if none of them is the program's: a library's
    deep stack (a sync database client's socket read) still says which line of
    the program called it (see :func:`_blocking_line`)."""
    kept = entries[-_SAMPLED_FRAMES:]
    if len(entries) > len(kept) and all(is_library_file(entry[0]) for entry in kept):
        dropped = entries[:-_SAMPLED_FRAMES]
        caller = next((e for e in reversed(dropped) if not is_library_file(e[0])), None)
        if caller is not None:
            kept.insert(0, caller)
    return kept


def format_stack(sample: list[SampledFrame]) -> list[str]:
    """A sampled stack as ``traceback.format_stack`` prints it, source lines read now."""
    return [
        entry.rstrip()
        for entry in traceback.StackSummary.from_list(
            [(path, line, name, None) for path, line, name in sample]
        ).format()
    ]


def _blocking_line(sample: list[SampledFrame]) -> tuple[str, int, str | None] | None:
    """Where a sampled stack blocked: (path, line, the program's line that led there).

    The innermost frame that is neither asyncio's nor aiotrace's nor the
    standard library's: the line that called ``json.loads`` or
    ``thread.join()``, rather than the library's own line where it spent
    the time (which the stack shows). Only the standard library on the
    stack: its innermost frame. A third-party library's line comes with the
    program's innermost line that called into it (``app.py:12``), as a
    library's primitive does: the same library line blocks for every caller.
    """
    outside = [entry for entry in sample if not is_internal_file(entry[0])]
    for index in range(len(outside) - 1, -1, -1):
        path, line, _ = outside[index]
        if _is_stdlib_file(path):
            continue
        via = None
        if is_library_file(path):
            via = next(
                (
                    f"{short_path(p)}:{n}"
                    for p, n, _ in reversed(outside[:index])
                    if not is_library_file(p)
                ),
                None,
            )
        return path, line, via
    return (outside[-1][0], outside[-1][1], None) if outside else None


_STDLIB_DIRS: Final = tuple(
    {
        os.path.join(path, "")
        for key in ("stdlib", "platstdlib")
        for path in (sysconfig.get_paths()[key], os.path.realpath(sysconfig.get_paths()[key]))
    }
)
_SITE_PACKAGES: Final = f"{os.sep}site-packages{os.sep}"


_STDLIB_PREFIXES: Final = (*_STDLIB_DIRS, "<frozen ")
"""The frozen modules (importlib's, runpy, zipimport) are the standard library too."""


def _is_stdlib_file(path: str) -> bool:
    return path.startswith(_STDLIB_PREFIXES) and _SITE_PACKAGES not in path


_IMPORT_MACHINERY: Final = (
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
)


def _shown(sample: list[SampledFrame]) -> list[SampledFrame]:
    """A sampled stack without the import machinery's frames, as Python's tracebacks show it.

    A loop blocked by an import (a module's slow top-level code, a search
    of a long ``sys.path``) is otherwise a screen of importlib's frames
    that hides the ``import`` line that did it.
    """
    return [entry for entry in sample if entry[0] not in _IMPORT_MACHINERY]


def _running_callback(frame: Any) -> str | None:
    """The callback a loop thread runs, if it is one asyncio's ``Handle`` runs itself.

    A callback written in C (``time.sleep`` passed to ``call_soon``) has no
    frame of its own: the innermost is ``Handle._run``, whose handle names it.
    """
    code = frame.f_code
    if code.co_name != "_run" or not is_asyncio_file(code.co_filename):
        return None
    handle = frame.f_locals.get("self")
    callback = getattr(handle, "_callback", None)
    if callback is None:
        return None
    name = getattr(callback, "__qualname__", None) or type(callback).__qualname__
    module = getattr(callback, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


__all__ = [
    "DEADLOCK",
    "HANG",
    "LEAK",
    "LOCK_ORDER",
    "LOOP_BLOCKED",
    "SWALLOWED",
    "UNRETRIEVED",
    "Diagnoser",
    "DiagnosisConfig",
    "Finding",
    "Graph",
    "HangStopped",
    "Wait",
    "Watchdog",
    "await_frames",
    "deadlock_findings",
    "leak_findings",
    "lock_order_finding",
    "snapshot",
    "sort_findings",
    "stranded_findings",
]
