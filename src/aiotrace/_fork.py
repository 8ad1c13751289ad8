"""aiotrace's threads stop for a fork, so that a program without threads forks as one.

Python 3.12+ warns (``DeprecationWarning``, shown under ``-X dev`` and in
pytest's summary) when a process with more than one thread forks: the child
may inherit a lock another thread held. aiotrace's pipeline and watchdog
threads would make every forking program such a process. Before a fork they
stop, so the fork is as safe as the program's own; after it they start
again in the parent (in the child, the pipeline's ``after_fork`` starts the
child's).

Python counts the threads the operating system reports, which include a
just-joined thread for a few microseconds more: when ours were the only
other threads, the hook waits for that count to settle. And 3.13 counts
them after the parent's fork hooks, when ours run again: a fork the hook
found single-threaded then gets a filter, for this process's one message,
that the next fork's hook (or the next turn of the running loop) withdraws.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import warnings
import weakref
from typing import Any, Final, Protocol

from aiotrace._recorder import RECORDER
from aiotrace._threads import sleep


class Pausable(Protocol):
    def pause_for_fork(self) -> bool:
        """Stop the thread; whether it was running (and must be resumed)."""

    def resume_after_fork(self) -> None:
        """Start the thread again, in the parent."""


_OWNERS: Final[weakref.WeakSet[Pausable]] = weakref.WeakSet()
_PAUSED: Final[list[Pausable]] = []
_SINGLE: Final = [False]
"""Whether the fork under way found no thread but the caller's once ours stopped."""
_FILTER: Final[list[Any]] = []
_registered = [False]
SETTLE_SECONDS: Final = 0.05


def pause_for_forks(owner: Pausable) -> None:
    """Have ``owner``'s thread stop for every fork from now on (while it is alive)."""
    _OWNERS.add(owner)
    if not _registered[0] and hasattr(os, "register_at_fork"):
        _registered[0] = True
        os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_child)


_open, _read, _close = os.open, os.read, os.close
"""As they were when aiotrace was imported: a fork inside the event loop runs
:func:`os_threads`, and a test tool that makes blocking calls in the loop raise
(``blockbuster``, in anyio's suite) wraps the module's functions later."""
_NONBLOCKING: Final = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
"""And a non-blocking descriptor, which such tools let through."""


def os_threads() -> int:
    """This process's threads as the operating system counts them (Linux), else -1."""
    try:
        fd = _open("/proc/self/stat", _NONBLOCKING)
        try:
            stat = _read(fd, 4096)
        finally:
            _close(fd)
        fields = stat.rsplit(b")", 1)[1].split()
        return int(fields[17])  # field 20, num_threads; fields after the name start at 3
    except Exception:  # no /proc, or a read something wrapped: unknown
        return -1


def _before() -> None:
    try:
        _withdraw_filter()
        _SINGLE[0] = False
        _PAUSED.clear()
        counted, running = os_threads(), threading.active_count()
        for owner in list(_OWNERS):
            try:
                if owner.pause_for_fork():
                    _PAUSED.append(owner)
            except Exception as exc:  # that owner's thread may run on; the others stop
                RECORDER.fail("fork", exc)
        if not _PAUSED:
            return
        if counted < 0:  # not Linux: Python's own count is all there is
            _SINGLE[0] = threading.active_count() == 1
            return
        # Threads Python does not know of (a C library's) stay in the count:
        # wait only for ours to leave it.
        expected = counted - (running - threading.active_count())
        deadline = time.monotonic() + SETTLE_SECONDS
        while os_threads() > expected and time.monotonic() < deadline:
            sleep(0.0002)
        _SINGLE[0] = expected <= 1 and threading.active_count() == 1
    except Exception as exc:  # a fork must never fail because of us
        RECORDER.fail("fork", exc)


def _after_in_parent() -> None:
    paused = list(_PAUSED)
    _PAUSED.clear()
    if _SINGLE[0]:
        _SINGLE[0] = False
        try:
            _install_filter()
        except Exception as exc:
            RECORDER.fail("fork", exc)
    for owner in paused:
        try:
            owner.resume_after_fork()
        except Exception as exc:  # the program goes on; this owner's thread does not
            RECORDER.fail("fork", exc)


def _child() -> None:
    _PAUSED.clear()
    _SINGLE[0] = False
    _FILTER.clear()  # the child's filters are its own to keep, as the parent's were


def _install_filter() -> None:
    message = (
        rf"This process \(pid={os.getpid()}\) is multi-threaded, "
        r"use of fork\(\) may lead to deadlocks in the child\."
    )
    warnings.filterwarnings("ignore", message, DeprecationWarning)
    _FILTER.append(warnings.filters[0])
    loop = asyncio._get_running_loop()
    if loop is not None:  # withdrawn as soon as the program's code has gone on
        loop.call_soon(_withdraw_filter)


def _withdraw_filter() -> None:
    while _FILTER:
        entry = _FILTER.pop()
        filters: list[Any] = warnings.filters  # type: ignore[assignment]  # a list, typed as Sequence
        try:
            filters.remove(entry)
        except ValueError:  # gone with a catch_warnings() block that ended
            continue
        mutated = getattr(warnings, "_filters_mutated", None)
        if mutated is not None:
            mutated()
