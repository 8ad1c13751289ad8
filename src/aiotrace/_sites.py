"""Call sites: cheap to capture on the hot path, resolved to file and line later.

Reading ``frame.f_lineno`` costs about 300 ns because CPython decodes the line
table each time; reading ``f_code`` and ``f_lasti`` costs a few nanoseconds. So
the hot path stores ``(code, lasti)`` and the pipeline turns it into a
:class:`Site` once per distinct pair, off the hot path.

Frames that belong to asyncio itself or to aiotrace are skipped, so a site is
always the user's line (``async with lock`` in ``app.py``, not
``asyncio/locks.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import inspect
import io
import keyword
import linecache
import os
import re
import sys
import threading
import time
import tokenize
import traceback
from dataclasses import dataclass
from types import CodeType, FrameType, FunctionType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from aiotrace._loops import coro_of

if TYPE_CHECKING:
    from collections.abc import Callable

_ASYNCIO_DIR: Final = os.path.dirname(asyncio.__file__) + os.sep
_AIOTRACE_DIR: Final = os.path.dirname(__file__) + os.sep

# Python 3.10's code objects have no co_qualname: the qualified name is found
# from the function that owns the code, through the garbage collector, once
# per code object and within a time budget (else the bare name).
_QUALNAMES: dict[int, tuple[CodeType, str]] = {}
_QUALNAME_BUDGET: Final[list[float]] = [0.25, 0.0]
"""Seconds that looking qualified names up on 3.10 may spend now, and when that was
worked out (``perf_counter``). It refills by 1% of the time that passes, up to
0.25 s: a long process (a test session) keeps naming its code, at no more than
that share of its time."""
_QUALNAME_SHARE: Final = 0.01
_QUALNAME_MAX: Final = 0.25


def _qualname_budget() -> float:
    """Seconds the next 3.10 lookups may spend (see ``_QUALNAME_BUDGET``)."""
    now = time.perf_counter()
    left, then = _QUALNAME_BUDGET
    left = min(_QUALNAME_MAX, left + (now - then) * _QUALNAME_SHARE)
    _QUALNAME_BUDGET[:] = [left, now]
    return left


def _qualname_310(code: CodeType) -> str:
    """From the live functions of ``code``'s file, and the code nested in theirs.

    A function defined inside another (``main.<locals>.fetch``) may be gone by
    the time it is named (a finished task's coroutine), but the enclosing
    function usually lives on, and holds the inner code among its constants.
    Every name found on the way is remembered.
    """
    filename = code.co_filename
    found: dict[int, tuple[CodeType, str]] = {}

    def walk(outer: CodeType, outer_name: str, is_function: bool) -> None:
        for const in outer.co_consts:
            if isinstance(const, CodeType) and id(const) not in found:
                sep = ".<locals>." if is_function else "."
                name = f"{outer_name}{sep}{const.co_name}"
                found[id(const)] = (const, name)
                walk(const, name, bool(const.co_flags & inspect.CO_NEWLOCALS))

    for obj in gc.get_objects():
        if isinstance(obj, FunctionType):
            fcode = obj.__code__
            if fcode.co_filename == filename and id(fcode) not in found:
                found[id(fcode)] = (fcode, obj.__qualname__)
                walk(fcode, obj.__qualname__, True)
    _QUALNAMES.update(found)
    hit = found.get(id(code))
    return hit[1] if hit is not None and hit[0] is code else code.co_name


def qualname(code: CodeType) -> str:
    """``code.co_qualname`` (``main.<locals>.fetch``), also on 3.10."""
    name = getattr(code, "co_qualname", None)
    if name is not None:
        return str(name)
    hit = _QUALNAMES.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    name = code.co_name
    if _qualname_budget() > 0:
        started = time.perf_counter()
        try:
            name = _qualname_310(code)
        finally:
            _QUALNAME_BUDGET[0] -= time.perf_counter() - started
    if len(_QUALNAMES) > 10_000:
        _QUALNAMES.clear()
    _QUALNAMES[id(code)] = (code, name)
    return name


_AMBIGUOUS: Final = frozenset({"__init__.py", "__main__.py", "conftest.py"})
_PACKAGES: Final = re.compile(r".*[/\\](?:site|dist)-packages[/\\]")
"""Up to the last ``site-packages`` (``dist-packages``): an installed package's file follows."""
_STDLIB: Final = re.compile(r".*?[/\\]lib[/\\]python3\.\d+t?[/\\]")
"""Up to ``lib/python3.X/``: a standard library module follows."""
_GENERATED: Final = re.compile(r"<(?!string>|stdin>|doctest |ipython-input-).*>\Z", re.DOTALL)
"""A name a library gives code it generates and compiles: ``<sqlalchemy generated
warned() wrapper for ...>``, ``<attrs generated init ...>``, ``<decorator-gen-3>``. Not
the program's ``-c`` or ``exec`` code (``<string>``), what it reads from ``<stdin>``,
a doctest's or an IPython cell's."""
_SCRIPTS: Final = tuple(
    os.path.join(prefix, scripts, "")
    for prefix in dict.fromkeys((sys.prefix, sys.exec_prefix, sys.base_prefix))
    for scripts in ("bin", "Scripts")
)
"""The environment's scripts folders: a console script there (``bin/pytest``) is the
entry point an installed package's installer wrote, not the program."""


@functools.lru_cache(maxsize=4096)
def short_path(path: str) -> str:
    """A file as labels show it: its name, with its directory for ``__init__.py`` and the like.

    A library's file or the standard library's is named from its package,
    ``anyio/_backends/_asyncio.py`` or ``asyncio/locks.py``: a bare
    ``_asyncio.py`` or ``locks.py`` reads as the user's own. Decided from the
    path alone, so that a trace file reads the same on another machine.
    """
    found = _PACKAGES.match(path) or _STDLIB.match(path)
    if found is not None:
        return path[found.end() :].replace("\\", "/")
    name = os.path.basename(path)
    if name in _AMBIGUOUS:
        parent = os.path.basename(os.path.dirname(path))
        return f"{parent}/{name}" if parent else name
    return name


class _FileFlags(dict[str, bool]):
    """Filename -> whether it starts with one of ``prefixes``, worked out once per file.

    A dict that fills itself (``__missing__``): a lookup of a known file is a
    single C call, with no Python frame, which matters on the paths that ask
    it for every task created and every permit taken.
    """

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self._prefixes = prefixes

    def __missing__(self, filename: str) -> bool:
        flag = self[filename] = filename.startswith(self._prefixes)
        return flag


is_internal_file: Final[Callable[[str], bool]] = _FileFlags(_ASYNCIO_DIR, _AIOTRACE_DIR).__getitem__
"""Whether a frame in ``filename`` is asyncio's or aiotrace's, not the user's."""

CONTEXTLIB_FILE: Final = contextlib.AsyncExitStack.enter_async_context.__code__.co_filename
"""``contextlib``'s file. Its frames are the program's for a site's purpose, save one:
``AsyncExitStack`` entering or leaving a primitive for the program (``await
stack.enter_async_context(lock)``), whose line is the program's that called it."""


def is_contextlib(code: CodeType) -> bool:
    """Whether ``code`` is ``contextlib``'s: an ``AsyncExitStack`` entering or leaving."""
    return code.co_filename == CONTEXTLIB_FILE


_LOOP_FILES: Final = ("uvloop/loop.pyx", "winloop/loop.pyx")
"""Event loops written in Cython: their coroutines' code names these files, relative."""

is_asyncio_file: Final[Callable[[str], bool]] = _FileFlags(_ASYNCIO_DIR, *_LOOP_FILES).__getitem__
"""Whether ``filename`` is one of asyncio's own modules, or an event loop's that replaces it
(uvloop's ``Loop.shutdown_asyncgens`` is to ``asyncio.run`` what asyncio's own is)."""


def user_frame(depth: int = 0) -> FrameType | None:
    """The innermost user frame calling into aiotrace, ``depth`` frames above the caller.

    aiotrace's and asyncio's frames are skipped (``async with cond`` goes
    through asyncio's ``__aenter__``). Reaching the event loop's callback
    runner (``Handle._run``) means no user code made the call (a callback
    scheduled with ``call_soon``, or a coroutine run directly as a task by
    asyncio): then there is no user site and ``None`` is returned, rather than
    the unrelated line that started the loop.
    """
    try:
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:
        return None
    return first_user_frame(frame)


class _LibraryFiles(dict[str, bool]):
    """Filename -> whether it is an installed package's or the standard library's."""

    def __missing__(self, filename: str) -> bool:
        flag = self[filename] = bool(
            _PACKAGES.match(filename)
            or _STDLIB.match(filename)
            or filename.startswith(("<frozen ", *_SCRIPTS))
            or _GENERATED.match(filename)
            or _compiled_elsewhere(filename)
        )
        return flag


def _compiled_elsewhere(filename: str) -> bool:
    """Whether ``filename`` is relative and no file from here: the source an extension
    module was compiled from, named as on the machine that built it (Cython's
    ``lib/sqlalchemy/engine/_result_cy.py``, ``asyncpg/protocol/protocol.pyx``).

    The program's own relative names (``PYTHONPATH=src``) are files from the
    working directory, or inside a zip archive that is one (a zipapp's).
    """
    if not filename or filename[0] == "<" or os.path.isabs(filename):
        return False
    try:
        if os.path.exists(filename):
            return False
        head = os.path.dirname(filename)
        while head:
            if os.path.isfile(head):
                return False  # an archive's member
            head = os.path.dirname(head)
    except (OSError, ValueError):  # a name the file system refuses: not a file here either
        pass
    return True


is_library_file: Final[Callable[[str], bool]] = _LibraryFiles().__getitem__
"""Whether ``filename`` is a library's (site-packages, the standard library), not the program's."""


class _FileKinds(dict[str, "bool | None"]):
    """Filename -> ``True`` (asyncio's or aiotrace's), ``False`` (the program's) or ``None``
    (a library's): :func:`is_internal_file`'s answer, truthy exactly when it is, and which
    of the two falsy ones, in the same C call. A walk past asyncio's frames (every task
    created) then knows whose the next frame is without asking again."""

    def __missing__(self, filename: str) -> bool | None:
        kind = self[filename] = (
            True if is_internal_file(filename) else None if is_library_file(filename) else False
        )
        return kind


file_kind: Final[Callable[[str], bool | None]] = _FileKinds().__getitem__
"""Whose ``filename`` is: ``True`` asyncio's or aiotrace's, ``None`` a library's, ``False``
the program's."""

_T = TypeVar("_T")

_PROGRAM_FRAME_STEPS: Final = range(100)
"""The most frames :func:`program_site` walks (a range: its loop's counter costs nothing)."""


TASK_ORIGIN: Final[list[Callable[[object], tuple[bool, RawSite | None]]]] = [
    lambda task: (False, None)
]
"""For a task: whether the task family knows it (it has a span), and the program's line
that led to it if any (set by the task family, which sees each task made): where a walk
for the program's line reaches the task's first frame, that is the line (see
:func:`program_site`)."""


_get_running_loop: Final = asyncio.events._get_running_loop
_BaseEventLoop: Final = asyncio.BaseEventLoop


def _running_task(loop: object) -> tuple[object, FrameType | None]:
    """The running task and its coroutine's outermost frame (``None``, ``None`` outside one)."""
    try:
        task = asyncio.current_task(loop)  # type: ignore[arg-type]
    except Exception:  # a loop of another kind
        return None, None
    coro = coro_of(task) if task is not None else None
    return task, getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)


def program_site(frame: FrameType | None, past_imports: bool = True) -> RawSite | None:
    """The program's own line at or above ``frame``: ``frame``'s, or the first of its callers'
    that is not a library's, nor a method generated from a string (a dataclass's
    ``__init__`` making a field's default: ``<string>:3`` names no line of anyone's).
    A console script in the environment's scripts folder (``bin/pytest``) is a
    library's, and ``python -c`` code at the bottom of the stack (the bootstrap of
    pytest-xdist's workers, of multiprocessing's spawned children) is nobody's.

    Inside a task whose stack holds nothing of the program's (a task a
    library started, or a library's coroutine the program made a task of),
    the walk stops at the task's first frame: above it is only the loop
    (under uvloop, whatever line started the loop, which is no answer), and
    the answer is the program's line that led to the task, if any
    (:data:`TASK_ORIGIN`). A connection's reader task, which a library
    starts, makes its queue at the library's line for every connection: the
    program's line that opened the connection says which connection. A task
    in its eager first step (3.12+), which runs on its creator's stack before
    its span is registered, is known by the span current in it; one
    aiotrace does not know at all (task spans off) is walked past.

    ``None`` when nothing of the program's is behind it: the walk reached
    the loop outside a task (a protocol callback) or the bottom of the
    stack; or, unless ``past_imports``, a library's module being imported;
    or after ``_PROGRAM_FRAME_STEPS`` frames of libraries (deep recursion:
    the walk's cost stays bounded).
    """
    loop = _get_running_loop()
    # asyncio's own loops step a task from Handle._run, which ends the walk
    # below; others (uvloop) from compiled code, above which the stack goes
    # on to whatever started the loop: there the task's first frame is found.
    task: object = None
    top = None
    if loop is not None and not isinstance(loop, _BaseEventLoop):
        task, top = _running_task(loop)
    # A step costs what a library's frame (the commonest) asks first: it is
    # run once per frame of a library between a creation and the program.
    glet: Any = None
    for _ in _PROGRAM_FRAME_STEPS:
        if frame is None:
            frame, glet = _greenlet_switcher(glet)
            if frame is None:
                break
        code = frame.f_code
        kind = file_kind(code.co_filename)
        if kind is None:  # a library's
            if not past_imports and code.co_name == "<module>":
                return None
        elif kind:  # asyncio's or aiotrace's
            if code.co_name == "_run" and code.co_filename.endswith("events.py"):
                break  # the loop's callback runner
        elif code.co_filename[:1] != "<":  # the program's
            return raw_site(code, frame.f_lasti)
        elif code.co_name[:2] == "__":
            pass  # a method generated from a string (a dataclass's __init__, attrs'
            # "<attrs generated init ...>"): its line (<string>:3) says nothing, its
            # caller's does; walked past, as a library's frame is.
        elif code.co_name == "<module>" and _bootstrap(frame):
            return None
        else:  # the program's, compiled from a string (aiotrace run -c)
            return raw_site(code, frame.f_lasti)
        if frame is top:
            known, origin = TASK_ORIGIN[0](task)
            if known:
                return origin
        frame = frame.f_back
    else:
        if frame is not None:
            return None  # too deep
    if loop is None:
        return None
    if task is None:
        task = _running_task(loop)[0]
    return TASK_ORIGIN[0](task)[1] if task is not None else None


def _greenlet_switcher(glet: Any) -> tuple[FrameType | None, Any]:
    """Past the bottom of a greenlet's stack (of ``glet``, or the current one): the frame
    that switched to it, in its parent, and that parent; ``(None, None)`` if none.

    SQLAlchemy's asyncio layer runs its synchronous code in a greenlet that
    the task's ``await session.execute(...)`` switched to: a lock or a future
    made there (a connection's) is the program's line's that awaited, not
    the bottom of a stack of the library's. The frames of the waiting parent
    do not follow the greenlet's own.
    """
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return None, None
    try:
        parent = (glet if glet is not None else greenlet.getcurrent()).parent
        frame = parent.gr_frame if parent is not None else None
    except Exception:  # not the greenlet we know
        return None, None
    return (frame, parent) if isinstance(frame, FrameType) else (None, None)


def _bootstrap(frame: FrameType) -> bool:
    """Whether ``frame``, module code compiled from a string, is ``python -c`` code at the
    bottom of the stack, or code it ran with ``exec``: the bootstrap a program is run
    under (pytest-xdist's worker, multiprocessing's spawned child), not the program.
    (``aiotrace run -c`` code runs under aiotrace's own frames: it is the program.)"""
    back = frame.f_back
    while back is not None:
        if back.f_code.co_name != "<module>" or back.f_code.co_filename[:1] != "<":
            return False
        back = back.f_back
    return True


def via_label(frame: FrameType) -> str | None:
    """The program's own line that a library's call at ``frame`` came from: ``app.py:40``.

    A lock inside aiohttp is taken at aiohttp's line, the same for every
    request: the line of the program's that led there says which request.
    ``None`` when nothing of the program's is on the way (a protocol
    callback run by the loop). Walks the stack: only for spans, never for
    the operations below the thresholds. Callers check
    :func:`is_library_file` first, so that the program's own sites cost
    no call.
    """
    site = program_site(frame)
    return None if site is None else SITES.resolve(site).label


def first_user_frame(frame: FrameType | None) -> FrameType | None:
    """``frame`` or the first of its callers that is the user's (see :func:`user_frame`).

    For a caller that holds a frame near the user's already: the walk then
    starts there, not from aiotrace's innermost frame. ``contextlib``'s frames
    are passed too: an ``AsyncExitStack`` waiting for a primitive, or letting it
    go, for the program's line that entered it or closes the stack.
    """
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        if not is_internal_file(filename) and filename != CONTEXTLIB_FILE:
            return frame
        if code.co_name == "_run" and filename.endswith("events.py"):
            return None
        frame = frame.f_back
    return None


RawSite = tuple[CodeType, int]
"""``(code, lasti)`` as captured on the hot path; see :func:`SiteTable.resolve`."""


# id(code) -> lasti -> the one (code, lasti) tuple of that site. An entry keeps
# its code object alive, so its id cannot be reused while it is here.
_RAW_SITES: dict[int, dict[int, RawSite]] = {}
_RAW_SITES_LIMIT: Final = 50_000


_RUNNER_FILE: Final = _AIOTRACE_DIR + "cli.py"
_STAND_INS: Final[dict[tuple[str, str], traceback.FrameSummary]] = {}
"""(file, name) of a wrapper of ours -> the frame of the function it stands in for."""


def stands_in_for(wrapper: Callable[..., object], original: Callable[..., object]) -> None:
    """In creation stacks, ``wrapper``'s frame reads as ``original``'s last line.

    For a wrapper that does what ``original`` would have done without
    calling it (``loop.create_future``): untraced, the stack ends there.
    """
    code, replaced = wrapper.__code__, original.__code__
    last = max(line for _, _, line in replaced.co_lines() if line is not None)
    _STAND_INS[code.co_filename, code.co_name] = traceback.FrameSummary(
        replaced.co_filename, last, replaced.co_name, lookup_line=False
    )


def as_untraced(obj: object) -> None:
    """Give a task or future made through our patches the creation stack it would have untraced.

    In asyncio's debug mode a future records the stack it was made on, and
    its repr and asyncio's warnings ("Task was destroyed but it is
    pending!", "Executing <Task ...> took 0.2 seconds") say it was "created
    at" the innermost line: our wrapper's, untouched. Under ``aiotrace run``
    the stack also starts in the runner, below the program's first frame.
    Both go, in place (the list is asyncio's own), so the stack reads as
    under ``python``. Outside debug mode there is no stack and nothing to do.
    """
    stack = getattr(obj, "_source_traceback", None)
    if not stack:
        return
    start = 0
    for index, frame in enumerate(stack):
        if frame.filename == _RUNNER_FILE:  # what ran the program: all below it is start-up
            start = index + 1
    kept = [
        _STAND_INS.get((frame.filename, frame.name), frame)
        for frame in stack[start:]
        if not frame.filename.startswith(_AIOTRACE_DIR)
        or (frame.filename, frame.name) in _STAND_INS
    ]
    stack[:] = kept


def raw_site(code: CodeType, lasti: int) -> RawSite:
    """``(code, lasti)``, one shared tuple per call site.

    Records wait in the buffer until the pipeline runs (longer under
    back-pressure): a shared site costs each of them a pointer instead of a
    tuple and an int. Bounded for programs that compile code as they go.
    """
    by_lasti = _RAW_SITES.get(id(code))
    if by_lasti is None:
        if len(_RAW_SITES) >= _RAW_SITES_LIMIT:
            _RAW_SITES.clear()
        by_lasti = _RAW_SITES[id(code)] = {}
    site = by_lasti.get(lasti)
    if site is None:
        site = by_lasti[lasti] = (code, lasti)
    return site


def capture(depth: int = 0) -> RawSite | None:
    """The user's call site, as a cheap raw ``(code, lasti)`` pair."""
    try:
        frame = sys._getframe(depth + 1)
    except ValueError:
        return None
    return site_from(frame)


def site_from(frame: FrameType | None) -> RawSite | None:
    """:func:`capture` from ``frame`` up: the user's call site at or above it."""
    frame = first_user_frame(frame)
    if frame is None:
        return None
    return raw_site(frame.f_code, frame.f_lasti)


def site_and_via(
    frame: FrameType | None, via: Callable[[FrameType], _T | None]
) -> tuple[RawSite | None, _T | None]:
    """The user's site at or above ``frame`` and, if that is a library's line,
    ``via(its frame)``: the program's line that led there, as a label
    (:func:`via_label`, for a call) or a raw site (:func:`via_site`, for a
    creation). The program's own sites cost no walk."""
    user = first_user_frame(frame)
    if user is None:
        # Nothing above but asyncio: a task of the program's made of asyncio's own
        # coroutine (``create_task(ev.wait())``) waits with no caller. The
        # program's line that made the task is where that wait began.
        return program_site(frame), None
    code = user.f_code
    return raw_site(code, user.f_lasti), via(user) if is_library_file(code.co_filename) else None


def capture_creation(
    frame: FrameType | None, obj: object
) -> tuple[RawSite | None, bool, RawSite | None]:
    """Where ``obj`` was created, whether asyncio itself created it, and the "via" site.

    Walks from ``frame`` (what called aiotrace's ``__init__``; ``None`` when
    nothing of Python's did) past aiotrace's frames and past ``__init__``
    frames of ``obj`` itself (``BoundedSemaphore.__init__`` calling
    ``Semaphore.__init__``, a user's ``Lock`` subclass calling
    ``super().__init__()``), so the site is the line that instantiated the
    class. If that line is inside asyncio (the Lock a
    ``Condition`` makes, the Condition a ``Barrier`` makes) the primitive is
    asyncio's implementation detail and is reported as internal.

    If the line is a library's (``self._lock = asyncio.Lock()`` in a
    connection pool), every instance the library makes shares it; the third
    value is then the program's own line that led there (``users =
    Pool(1)``), which tells the users' pool from the orders' (see
    :func:`via_site`), else ``None``.
    """
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(_AIOTRACE_DIR):
            frame = frame.f_back
            continue
        if code.co_name == "__init__":
            if code.co_filename == "<string>":  # perhaps a dataclass's
                made = _field_default(frame)
                if made is not None:
                    return made
            if frame.f_locals.get("self") is obj:
                frame = frame.f_back
                continue
        break
    while frame is not None and frame.f_code.co_name in _WRAPPING_NAMES and _wraps(frame.f_code):
        frame = frame.f_back
    if frame is None:
        return None, False, None
    internal = is_asyncio_file(frame.f_code.co_filename)
    while frame is not None and is_internal_file(frame.f_code.co_filename):
        if frame.f_code.co_name == "_run" and frame.f_code.co_filename.endswith("events.py"):
            return None, internal, None
        frame = frame.f_back
    if frame is None:
        return None, internal, None
    code = frame.f_code
    via = via_site(frame) if not internal and is_library_file(code.co_filename) else None
    return (code, frame.f_lasti), internal, via


_WRAPPING: Final = frozenset(
    {
        ("anyio/_backends/_asyncio.py", "Event.__init__"),
        ("anyio/_backends/_asyncio.py", "AsyncIOBackend.create_event"),
        ("anyio/_core/_synchronization.py", "Event.__new__"),
    }
)
"""A library's constructors that make one asyncio primitive to wrap it: the wrapper's
creation is the primitive's. ``anyio.Event()`` on asyncio is ``self._event =
asyncio.Event()``, two factories down, for every Event of anyio's, starlette's,
httpx's and the program's own: named ``self._event (anyio/_backends/_asyncio.py:1997)``
each, until the line that called ``anyio.Event()`` named it (``receive_event =
Event()`` in anyio's memory streams, ``done = anyio.Event()`` in the program)."""
_WRAPPING_NAMES: Final = frozenset(name.rsplit(".", 1)[1] for _, name in _WRAPPING)


class _Wraps(dict[CodeType, bool]):
    def __missing__(self, code: CodeType) -> bool:
        flag = self[code] = (short_path(code.co_filename), qualname(code)) in _WRAPPING
        return flag


_wraps: Final[Callable[[CodeType], bool]] = _Wraps().__getitem__


_FIELD_NAMES: dict[tuple[int, int], tuple[CodeType, str | None]] = {}
"""(id(code), lasti) of a creation in an ``__init__`` compiled from a string -> that
code (kept, so that its id stays its) and, in a dataclass's, the ``Class.field``
whose default it makes."""
_FIELD_NAMES_LIMIT: Final = 10_000


def _field_default(frame: FrameType) -> tuple[RawSite, bool, RawSite | None] | None:
    """:func:`capture_creation`'s answer if ``frame``, an ``__init__`` compiled from a
    string, is a dataclass's making a field's default, else ``None``.

    Its line says nothing (``<string>:3``), and its source cannot be read: the
    name is the field's, the same at every call for one line of that
    ``__init__`` (worked out once), and the program's line that made the
    instance tells one instance's from another's, as for a library's line.
    """
    code = frame.f_code
    lasti = frame.f_lasti
    known = _FIELD_NAMES.get((id(code), lasti))
    if known is None or known[0] is not code:
        if len(_FIELD_NAMES) >= _FIELD_NAMES_LIMIT:
            _FIELD_NAMES.clear()
        known = _FIELD_NAMES[(id(code), lasti)] = (code, _dataclass_field(frame))
    if known[1] is None:
        return None
    caller = frame.f_back
    return (code, lasti), False, None if caller is None else program_site(caller, False)


def _dataclass_field(frame: FrameType) -> str | None:
    """``Pool.lock`` when ``frame`` is a dataclass's generated ``__init__`` making the
    default of that field (``lock: asyncio.Lock = field(default_factory=asyncio.Lock)``).

    It sets the fields in their order, so the field being made is the first with a
    ``default_factory`` that the instance has no value for yet. Looked up in the
    instance's ``__dict__`` or its slots, never with ``getattr``: a property of the
    user's is not ours to run.
    """
    code = frame.f_code
    if not code.co_varnames:
        return None
    obj = frame.f_locals.get(code.co_varnames[0])
    cls = type(obj)
    fields = inspect.getattr_static(cls, "__dataclass_fields__", None)
    if not isinstance(fields, dict):
        return None
    try:
        values = object.__getattribute__(obj, "__dict__")
    except AttributeError:  # slots only
        values = None
    for name, spec in fields.items():
        if getattr(spec, "default_factory", dataclasses.MISSING) is dataclasses.MISSING:
            continue
        if isinstance(values, dict):
            if name in values:
                continue
        else:
            slot = inspect.getattr_static(cls, name, None)
            if type(slot).__name__ != "member_descriptor":
                return None
            try:
                slot.__get__(obj, cls)
                continue
            except AttributeError:
                pass
        return f"{cls.__qualname__}.{name}"
    return None


def field_name(raw: RawSite) -> str | None:
    """``Pool.lock`` for a site in a dataclass's generated ``__init__`` (see
    :func:`capture_creation`), else ``None``."""
    known = _FIELD_NAMES.get((id(raw[0]), raw[1]))
    return known[1] if known is not None and known[0] is raw[0] else None


def via_site(frame: FrameType) -> RawSite | None:
    """The program's own line that the library's line at ``frame`` was reached from.

    For a primitive or future a library creates: its creation line is the
    same for every instance the library makes, the program's line is not.
    A library's import makes its module-level primitives once, whichever line
    of the program imported it first: those have no such line.
    """
    if frame.f_code.co_name == "<module>":
        return None
    return program_site(frame, past_imports=False)


@dataclass(frozen=True)
class Site:
    """A resolved call site."""

    path: str
    line: int
    function: str
    column: int | None = None
    """Where on the line (UTF-8 byte offset), from Python 3.11: ``a, b = Lock(), Lock()``."""

    @functools.cached_property
    def label(self) -> str:
        """``file.py:12``: short enough for span attributes and reports.

        Kept once made: a site's label is asked for per span and per report
        line, and a site never changes.
        """
        return f"{short_path(self.path)}:{self.line}"

    @functools.cached_property
    def named(self) -> str:
        """``cache_lock (app.py:12)``: see :func:`default_name`; kept, as :attr:`label` is.

        A library's local (``fut``, ``waiter``, ``event``) says little alone; the
        method that made it says what it is for: ``fut in Lock.acquire
        (anyio/_backends/_asyncio.py:2046)``, anyio's Lock on asyncio. An
        attribute (``self._lock``) and what a constructor makes are named as
        they are.
        """
        return self.named_with("")

    def named_with(self, suffix: str) -> str:
        """:attr:`named` with ``suffix`` after the variable: ``cond.lock (app.py:12)``
        names the Lock asyncio made for the Condition ``cond``."""
        var = variable_name(self)
        if not var:
            return self.label + suffix
        var += suffix
        function = self.function
        if (
            "." not in var
            and is_library_file(self.path)
            and function != "<module>"
            and not function.endswith("__init__")
        ):
            return f"{var} in {function} ({self.label})"
        return f"{var} ({self.label})"

    def __str__(self) -> str:
        return self.label


def line_of(code: CodeType, lasti: int) -> int:
    """The source line of instruction offset ``lasti`` in ``code``."""
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def column_of(code: CodeType, lasti: int) -> int | None:
    """The column instruction offset ``lasti`` starts at in ``code``, where Python knows it."""
    if sys.version_info < (3, 11):
        return None
    for index, position in enumerate(code.co_positions()):  # one per 2-byte code unit
        if index == lasti // 2:
            return position[2]
    return None


class SiteTable:
    """Resolves raw sites, once per distinct ``(code, lasti)``.

    Keys use ``id(code)`` (hashing a code object hashes its bytecode) and keep
    the code object alive so the id cannot be reused while cached.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], tuple[CodeType, Site]] = {}
        self._lock = threading.Lock()

    def resolve(self, raw: RawSite) -> Site:
        """The :class:`Site` for a raw ``(code, lasti)``."""
        code, lasti = raw
        key = (id(code), lasti)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        site = Site(code.co_filename, line_of(code, lasti), qualname(code), column_of(code, lasti))
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = (code, site)
        return site


SITES: Final = SiteTable()
"""The process-wide site cache."""

_ASSIGN = re.compile(r"^\s*(?P<target>[A-Za-z_][\w.]*)\s*(?::[^=]+)?=(?!=)")
_OPENS_ASSIGNMENT = re.compile(
    r"^\s*(?P<target>[A-Za-z_][\w.]*)\s*(?::[^=]+)?=\s*[(\\]?\s*(?:#.*)?$"
)
_SOURCES: Final[dict[str, list[str]]] = {}
"""Source of code with no file, by the name it was compiled under: ``aiotrace run -c``'s
program (``<string>``), registered here rather than in ``linecache``, which before 3.13
would make the program's own tracebacks show lines ``python -c`` does not."""


def register_source(path: str, source: str) -> None:
    """Make ``source`` the text of ``path`` for naming and reports (see :data:`_SOURCES`)."""
    _SOURCES[path] = source.splitlines(keepends=True)


def source_line(path: str, line: int) -> str:
    """Line ``line`` of ``path``: ``linecache``'s, else a registered source's, else ``""``."""
    text = linecache.getline(path, line)
    if not text and path in _SOURCES:
        lines = _SOURCES[path]
        text = lines[line - 1] if 0 < line <= len(lines) else ""
    return text


_NAME_CACHE: dict[tuple[str, int, int | None], str | None] = {}


def variable_name(site: Site) -> str | None:
    """The variable or attribute the object created at ``site`` was assigned to, if obvious.

    Reads the source line (``cache_lock = asyncio.Lock()`` gives ``cache_lock``,
    ``self._lock: asyncio.Lock = asyncio.Lock()`` gives ``self._lock``; with
    the site's column, ``users, orders = asyncio.Lock(), asyncio.Lock()``
    gives each its own). A value alone on the line after ``name = (`` or
    ``name = \\`` (formatters wrap long annotated assignments so) takes that
    name; a dict's item it was stored in (``app["db_pool"] =
    asyncio.Semaphore(3)``) or a dict's lookup that made it (``async with
    self._locks[key]:``, a ``defaultdict(asyncio.Lock)``) gives
    ``app["db_pool"]`` or ``self._locks[…]``: a literal key as written, any
    other as ``…``. Cached; ``None`` when the line is none of these.
    """
    key = (site.path, site.line, site.column)
    if key in _NAME_CACHE:
        return _NAME_CACHE[key]
    text = source_line(site.path, site.line)
    if ";" in text:
        text = _statement_at(text, site.column)
    name: str | None = None
    match = _ASSIGN.match(text)
    if match and not keyword.iskeyword(match.group("target")):  # not ``else: x = ...``
        name = match.group("target")
    elif site.column is not None and "," in text:
        name = _unpacked_name(text, site.column)
    if name is None and "[" in text:
        name = _subscript_target(text, site.column)
        if name is None and site.column is not None:
            name = _subscripted_name(text, site.column)
    if name is None and site.line > 1 and _is_the_lines_call(text, site.column):
        match = _OPENS_ASSIGNMENT.match(source_line(site.path, site.line - 1))
        if match and not keyword.iskeyword(match.group("target")):
            name = match.group("target")
    if len(_NAME_CACHE) > 10_000:
        _NAME_CACHE.clear()
    _NAME_CACHE[key] = name
    return name


# The two readings below use ``tokenize``, never ``ast``: on 3.11.0-3.11.7 and 3.12.0-3.12.1 an
# ``ast.parse`` made while another is building its tree (ours from a garbage
# collection's finaliser, or from the pipeline's thread while a finaliser
# holds up the program's) breaks the other one with ``SystemError: AST
# constructor recursion depth mismatch`` (CPython gh-106905). pytest parses
# source to show every failure: a traced test suite failed so.
_SKIPPED_TOKENS: Final = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.ENDMARKER,
        tokenize.INDENT,
        tokenize.DEDENT,
    }
)
_CLOSERS: Final = {"(": ")", "[": "]", "{": "}"}


def _tokens(line: str) -> tuple[list[tokenize.TokenInfo], bool]:
    """The line's tokens that mean something, and whether the line ended complete.

    Incomplete: the statement goes on past the line (a bracket left open),
    or the line is not Python on its own; the tokens are those read so far.
    """
    tokens: list[tokenize.TokenInfo] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(line).readline):
            if token.type == tokenize.ERRORTOKEN:
                return tokens, False
            if token.type not in _SKIPPED_TOKENS:
                tokens.append(token)
    except (tokenize.TokenError, SyntaxError):
        return tokens, False
    return tokens, True


def code_text(path: str, line: int, width: int = 100) -> str:
    """The code on a line of a file, its comment left out, at most ``width`` characters."""
    text = source_line(path, line)
    with contextlib.suppress(tokenize.TokenError, SyntaxError):  # a line not Python alone
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT and token.start[0] == 1:
                text = text[: token.start[1]]
                break
    text = text.strip()
    return text if len(text) <= width else text[: width - 3] + "..."


_AROUND_LINES: Final = 400
"""At most this many lines of a function are read back by :func:`async_with_around`."""


@functools.lru_cache(maxsize=1024)
def async_with_around(path: str, first: int, line: int) -> tuple[tuple[str, int], ...]:
    """The ``async with`` blocks that ``line`` of a function (starting at ``first``) is
    inside, outermost first: what each entered (``accounts.writer_lock``) and its line.

    A hang through a lock aiotrace does not know (aiorwlock's, a library's own
    made of futures) has no holder to name; the ``async with`` a stuck task
    is inside is where it took what it holds (``pool.acquire() as conn``),
    and names it as written. Read with ``tokenize`` (see :data:`SHARED_SYNTAX_TREE_DEPTH`),
    from the source lines: an unreadable one gives nothing.
    """
    start = max(first, line - _AROUND_LINES)
    try:
        text = "".join(source_line(path, number) for number in range(start, line + 1))
    except Exception:  # unreadable here (a program's blockbuster forbids reading files)
        return ()
    lines = text.split("\n")  # as tokenize counts rows
    stack: list[tuple[int, str, int]] = []  # (indent, what, header line)
    inside: list[tuple[int, str, int]] = []
    statement: list[tokenize.TokenInfo] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                entered = _entered(statement, lines, start)
                if entered is not None:
                    stack.append(entered)
                statement = []
                continue
            if token.type in _SKIPPED_TOKENS:
                continue
            if not statement:  # a statement begins: the blocks it is not in end
                row, column = token.start
                if row > line - start + 1:
                    break
                stack = [block for block in stack if block[0] < column]
                inside = list(stack)
            statement.append(token)
    except (tokenize.TokenError, SyntaxError):  # the line's statement goes on past it
        pass
    return tuple((what, header) for _, what, header in inside)


_ENTERED_WIDTH: Final = 80


def _entered(
    statement: list[tokenize.TokenInfo], lines: list[str], start: int
) -> tuple[int, str, int] | None:
    """``(indent, what, line)`` for an ``async with`` statement (what it enters, as
    written), else None (see :func:`async_with_around`)."""
    if len(statement) < 3 or [t.string for t in statement[:2]] != ["async", "with"]:
        return None
    parts = _split(statement[2:], ":")  # the items, then the body if on the same line
    if len(parts) < 2 or not parts[0]:
        return None
    first, last = parts[0][0], parts[0][-1]
    text = lines[first.start[0] - 1]
    if first.start[0] == last.end[0]:
        what = text[first.start[1] : last.end[1]]
    else:
        what = text[first.start[1] :].rstrip() + " ..."
    if len(what) > _ENTERED_WIDTH:
        what = what[: _ENTERED_WIDTH - 4] + " ..."
    row, column = statement[0].start
    return column, what, start + row - 1


def _bracketed(tokens: list[tokenize.TokenInfo], start: int) -> int | None:
    """The index just past the bracket opened at ``start`` and its match; None if unclosed."""
    depth = 0
    for index in range(start, len(tokens)):
        text = tokens[index].string
        if tokens[index].type != tokenize.OP:
            continue
        if text in _CLOSERS:
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _primary(tokens: list[tokenize.TokenInfo], start: int) -> tuple[int, str, bool] | None:
    """``name(.name | (...) | [...])*`` from ``start``: where it ends, how it ends, complete.

    How it ends: ``"("`` for a call, ``"["`` for a subscript, ``"."`` for a
    dotted name (or a bare name). Not complete: a bracket of it is still open
    at the end of the tokens.
    """
    if start >= len(tokens):
        return None
    first = tokens[start]
    if first.type != tokenize.NAME or keyword.iskeyword(first.string):
        return None
    index, last = start + 1, "."
    while index < len(tokens) and tokens[index].type == tokenize.OP:
        text = tokens[index].string
        if text == ".":
            if index + 1 >= len(tokens) or tokens[index + 1].type != tokenize.NAME:
                return None
            index, last = index + 2, "."
        elif text in ("(", "["):
            end = _bracketed(tokens, index)
            if end is None:
                return len(tokens), text, False
            index, last = end, text
        else:
            break
    return index, last, True


def _statement_at(text: str, column: int | None) -> str:
    """Of a line of several statements (``lock = Lock(); ready = Event()``), the one at
    ``column``, at its place in the line, the others blanked: each has its own name.

    Without a column (3.10) there is no telling which made the object: an empty
    line, which names nothing, rather than another statement's name.
    """
    tokens, complete = _tokens(text.strip())
    statements = [part for part in _split(tokens, ";") if part]
    if not complete or len(statements) < 2:
        return text
    if column is None:
        return ""
    encoded = text.encode()
    for statement in reversed(statements):
        start = _byte_column(text, statement[0])
        if start <= column:
            end = _byte_column(text, statement[-1]) + len(statement[-1].string.encode())
            return " " * start + encoded[start:end].decode(errors="replace")
    return ""


def _is_the_lines_call(text: str, column: int | None) -> bool:
    """Whether the call at ``column`` is the whole line (or starts it and goes on)."""
    stripped = text.strip()
    if column is not None and column != len(text) - len(text.lstrip()):
        return False
    tokens, _ = _tokens(stripped)
    primary = _primary(tokens, 0)
    if primary is None:
        return False
    end, last, complete = primary
    if not complete:
        return last == "("  # ``asyncio.Queue(`` with its arguments on the next lines
    # What follows may only close brackets opened on earlier lines: ``X())``.
    rest = tokens[end:]
    return last == "(" and all(t.string in (")", "]", "}") for t in rest)


def _split(tokens: list[tokenize.TokenInfo], separator: str) -> list[list[tokenize.TokenInfo]]:
    """``tokens`` split at each ``separator`` outside brackets."""
    parts: list[list[tokenize.TokenInfo]] = [[]]
    depth = 0
    for token in tokens:
        if token.type == tokenize.OP:
            if token.string in _CLOSERS:
                depth += 1
            elif token.string in (")", "]", "}"):
                depth -= 1
            elif token.string == separator and depth == 0:
                parts.append([])
                continue
        parts[-1].append(token)
    return parts


def _elements(side: list[tokenize.TokenInfo]) -> list[list[tokenize.TokenInfo]] | None:
    """The elements of a tuple or list display (``a, b``, ``(a, b)``, ``[a, b]``), or None."""
    if len(side) >= 2 and side[0].string in ("(", "[") and _bracketed(side, 0) == len(side):
        inner = side[1:-1]
        bracketed = True
    else:
        inner, bracketed = side, False
    elements = _split(inner, ",")
    if elements and not elements[-1] and len(elements) > 1:
        elements.pop()  # a trailing comma
    if not bracketed and len(elements) < 2 and not (inner and inner[-1].string == ","):
        return None  # one value, no tuple
    if any(not element for element in elements):
        return None
    return elements


def _byte_column(text: str, token: tokenize.TokenInfo) -> int:
    """Where ``token``, read from ``text.strip()``, starts in ``text``, counted in
    bytes as CPython's columns are."""
    indent = len(text.encode()) - len(text.lstrip().encode())
    return indent + len(text.strip()[: token.start[1]].encode())


def _unpacked_name(text: str, column: int) -> str | None:
    """In ``a, b = X(), Y()``, the target of the value starting at ``column``."""
    stripped = text.strip()
    tokens, complete = _tokens(stripped)
    if not complete:  # a line of a longer statement
        return None
    sides = _split(tokens, "=")
    if len(sides) != 2:  # no assignment, or a chained one
        return None
    targets, values = _elements(sides[0]), _elements(sides[1])
    if targets is None or values is None or len(targets) != len(values):
        return None
    for target, value in zip(targets, values, strict=True):
        if _byte_column(text, value[0]) != column:
            continue
        dotted = _primary(target, 0)
        if dotted is None or dotted[0] != len(target) or dotted[1] != ".":
            return None  # ``*rest`` or ``items[0]``: not a name
        return "".join(token.string for token in target)
    return None


def _key_text(inside: list[tokenize.TokenInfo]) -> str:
    """A subscript's key as the name shows it: a literal as written, anything else ``…``.

    A literal key is the same on every run of the line; a variable's is not,
    and the line's one name stands for every key it makes.
    """
    if len(inside) == 1 and inside[0].type in (tokenize.STRING, tokenize.NUMBER):
        literal = inside[0].string
        if len(literal) <= 40:
            return literal
    return "…"


def _subscript_target(text: str, column: int | None) -> str | None:
    """In ``app["db_pool"] = asyncio.Semaphore(3)``, the target of the value at ``column``.

    A dotted name subscripted once: ``app["db_pool"]``, ``self._locks[…]``
    for a key that is not a literal (see :func:`_key_text`). Where Python
    keeps no columns (3.10), the value must be one call, the line's only
    way to make the primitive.
    """
    stripped = text.strip()
    tokens, complete = _tokens(stripped)
    if not complete:
        return None
    sides = _split(tokens, "=")
    if len(sides) != 2 or not sides[0] or not sides[1]:
        return None  # no assignment, or a chained one
    target, value = sides
    if column is None:
        call = _primary(value, 0)
        if call is None or call[:2] != (len(value), "("):
            return None
    else:
        if _byte_column(text, value[0]) != column:
            return None  # the value made here is not the whole right-hand side
    opening = _dotted_end(target, 0)
    if opening is None or opening >= len(target) or target[opening].string != "[":
        return None
    if _bracketed(target, opening) != len(target):
        return None  # ``d[a][b]``, ``d[a].b``: not a name subscripted once
    head = "".join(t.string for t in target[:opening])
    return f"{head}[{_key_text(target[opening + 1 : -1])}]"


def _dotted_end(tokens: list[tokenize.TokenInfo], start: int) -> int | None:
    """The index just past ``name(.name)*`` from ``start``; None if no name starts there."""
    first = tokens[start] if start < len(tokens) else None
    if first is None or first.type != tokenize.NAME or keyword.iskeyword(first.string):
        return None
    end = start + 1
    while end + 1 < len(tokens) and tokens[end].string == ".":
        if tokens[end + 1].type != tokenize.NAME:
            break
        end += 2
    return end


def _subscripted_name(text: str, column: int) -> str | None:
    """``self._locks[…]`` when the expression at ``column`` is a dotted name subscripted
    once: a ``defaultdict(asyncio.Lock)`` (or a dict with a ``__missing__``) made the
    primitive there, a lock per key, in ``async with self._locks[key]:`` (a
    literal key shows as written: see :func:`_key_text`)."""
    tokens, _ = _tokens(text.strip())
    for index, token in enumerate(tokens):
        if _byte_column(text, token) != column:
            continue
        opening = _dotted_end(tokens, index)
        if opening is None or opening >= len(tokens) or tokens[opening].string != "[":
            return None
        end = _bracketed(tokens, opening)
        if end is None or (end < len(tokens) and tokens[end].string in ("[", "(", ".")):
            return None  # ``locks[a][b]``, ``locks[a].b``: not a name subscripted once
        head = "".join(t.string for t in tokens[index:opening])
        return f"{head}[{_key_text(tokens[opening + 1 : end - 1])}]"
    return None


def default_name(site: Site | None) -> str:
    """``cache_lock (app.py:12)``, or ``app.py:12`` when no variable is obvious."""
    return "<unknown>" if site is None else site.named


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # the user's __str__ failed: as traceback prints it
        return "<exception str() failed>"


class RaisedException:
    """An exception as a span records it, taken when its task ends, without keeping it.

    A task's span outlives the task: it waits in the buffer for the pipeline,
    and stays current in the task's context for as long as anything holds
    that. Holding the exception there would keep it, its traceback and every
    frame's locals alive past what the program itself holds, which a program
    can see (``gc.get_referrers``, weak references: anyio's tests check it).
    So the traceback is taken as a ``TracebackException`` that does not read
    source lines (a walk of the frames, cheap), and is formatted, lines
    read, by the pipeline. Its text is then exactly
    ``traceback.format_exception``'s.
    """

    __slots__ = ("message", "name", "qualified_type", "traceback")

    def __init__(self, exc: BaseException) -> None:
        cls = type(exc)
        module = cls.__module__
        self.name = cls.__name__
        qualname = cls.__qualname__
        self.qualified_type = (
            qualname if module in ("builtins", "__main__") else f"{module}.{qualname}"
        )
        self.message = _safe_str(exc)
        tb = exc.__traceback__
        if sys.version_info >= (3, 13):  # which would keep the class otherwise
            self.traceback = traceback.TracebackException(
                cls, exc, tb, lookup_lines=False, compact=True, save_exc_type=False
            )
        else:
            self.traceback = traceback.TracebackException(
                cls, exc, tb, lookup_lines=False, compact=True
            )

    def stacktrace(self) -> str:
        """What ``traceback.format_exception`` gives for the exception.

        Less the ``^^^^`` lines where building a syntax tree here could break
        one the program is building (:data:`SHARED_SYNTAX_TREE_DEPTH`):
        ``traceback`` parses each frame's line to place them.
        """
        if SHARED_SYNTAX_TREE_DEPTH:
            _drop_carets(self.traceback)
        return "".join(self.traceback.format())


SHARED_SYNTAX_TREE_DEPTH: Final = any(
    low <= sys.version_info < high for low, high in (((3, 11), (3, 11, 8)), ((3, 12), (3, 12, 2)))
)
"""Whether every syntax tree this Python builds counts its depth in one shared place.

On these versions (CPython gh-106905) an ``ast.parse`` that runs while
another is building its tree breaks that one with ``SystemError: AST
constructor recursion depth mismatch``. aiotrace's pipeline thread runs
when the program's thread lets it, which a finaliser run by the garbage
collector in the middle of the program's ``ast.parse`` does: pytest's
parse of a failing test's source stopped a traced session so. aiotrace
therefore never builds a syntax tree on them (see :func:`variable_name`).
"""


def _drop_carets(exception: traceback.TracebackException) -> None:
    """Forget the columns of every frame of ``exception`` and its chain: no carets to place."""
    seen: set[int] = set()
    todo = [exception]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            frame.colno = None  # type: ignore[attr-defined,unused-ignore]
        todo.extend(x for x in (current.__cause__, current.__context__) if x is not None)
        todo.extend(getattr(current, "exceptions", None) or ())
