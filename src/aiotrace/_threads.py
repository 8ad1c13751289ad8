"""aiotrace's own threads, and a program's ``gc.collect()`` kept whole beside them.

CPython runs one garbage collection at a time: ``gc.collect()`` called while
another thread is collecting returns 0 at once, collecting nothing. A thread
of aiotrace's that allocates (the pipeline building spans, the exporter, the
watchdog) may be the one the interpreter picks to collect, and a collection
that finds a program's garbage runs that garbage's finalizers, which may run
long enough to let the program's thread take the GIL back. The program's
``gc.collect()`` then finds nothing freed where, without aiotrace, it would
have freed everything: CPython's own ``test_log_destroyed_pending_task`` failed
so about one run in five on 3.12.

So every thread of aiotrace's is made by :func:`thread`, and while one runs
``gc.collect`` is a wrapper that first waits, GIL released, for a collection
running in one of aiotrace's threads to end, then calls what ``gc.collect``
was (CPython's, or a wrapper the program put there first). A collection in a
thread of the program's own is left as it is: that is the program's
behaviour, not ours.
"""

from __future__ import annotations

import functools
import gc
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

sleep: Final = time.sleep
"""``time.sleep`` as it was when aiotrace was imported. aiotrace's own short waits,
some in a program's thread (the watchdog's fresh turn of the GIL, taken on the
event loop's thread; a fork settling; a collection ending), never run what a
program put there since: blockbuster's, which raises in an event loop's thread,
turned the diagnosis off for the rest of anyio's test suite."""


def wait_ended(thread: threading.Thread, timeout: float) -> None:
    """Wait at most ``timeout`` for ``thread`` to end, polling: ``join()`` blocks on a lock,
    and before a fork this runs in the program's thread, maybe inside its event loop,
    where blockbuster (anyio's suite) makes a blocking acquire raise. That stopped
    aiotrace's fork handling for the rest of the run, and the watchdog for good."""
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        sleep(0.0002)


_real_collect: Final = gc.collect
_wrapped = [_real_collect]
"""CPython's ``gc.collect``, then what ``gc.collect`` was each time our wrapper went in
and has not yet come out, latest last: what the wrapper calls, and what comes back.

Two or more over CPython's when a program wrapped ours (its wrapper calling
ours, so ours could not come out) and ours went in again over that wrapper:
ours then calls the program's, whose call of ours goes to the one below (see
:func:`_collect`) rather than round again.
"""
_depth = threading.local()
"""Per thread: how many calls of our wrapper are running in it, each nested in the last."""
_ours: set[int] = set()
"""Idents of aiotrace's running threads."""
_collecting = [0]
"""The number of the collection one of aiotrace's threads is in now, 0 if none."""
_started = [0]
"""Collections aiotrace's threads have started."""
_gave_up = [0]
"""The collection a program's call stopped waiting for: not waited for again."""
_lock = threading.Lock()

PATIENCE = 2.0
"""Seconds a program's ``gc.collect()`` waits for aiotrace's collection.

A finalizer running in that collection could wait for something the program's
thread holds: past this, the program's call goes on as it would have without
the wrapper (and may collect nothing), and no later call waits for that
collection.
"""


def _watch(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` entry: note when aiotrace's threads collect (never raises)."""
    if threading.get_ident() in _ours:
        if phase == "start":
            _started[0] += 1
            _collecting[0] = _started[0]
        else:
            _collecting[0] = 0


@functools.wraps(_real_collect)
def _collect(*args: Any, **kwargs: Any) -> Any:
    # Arguments passed on as given: a wrong one fails as it would untraced.
    # Reached again from inside what it called (a program's wrapper of ours,
    # wrapped again by ours), the call goes one level down, never round again.
    depth = getattr(_depth, "n", 0)
    layers = _wrapped[:]  # (one read: another thread may take one out)
    target = layers[-1 - depth] if depth < len(layers) else _real_collect
    if not depth and _collecting[0] and threading.get_ident() not in _ours:
        deadline = time.monotonic() + PATIENCE
        while True:
            running = _collecting[0]
            if not running or running == _gave_up[0]:
                break
            if time.monotonic() >= deadline:
                # Stuck (a finalizer waiting for this thread?): the program's
                # later calls do not wait for this collection again.
                _gave_up[0] = running
                break
            sleep(0.0005)
    _depth.n = depth + 1
    try:
        return target(*args, **kwargs)
    finally:
        _depth.n = depth


def _enter() -> None:
    with _lock:
        if not _ours:
            if _watch not in gc.callbacks:
                gc.callbacks.append(_watch)
            if gc.collect is not _collect:
                _wrapped.append(gc.collect)
                gc.collect = _collect
        _ours.add(threading.get_ident())


def _leave(ident: int) -> None:
    with _lock:
        _ours.discard(ident)
        if not _ours:
            _restore()


def _restore() -> None:
    # A wrapper the program put over ours stays, and ours in it: with no
    # thread of ours running it calls what it wrapped at once.
    if gc.collect is _collect:
        gc.collect = _wrapped.pop() if len(_wrapped) > 1 else _wrapped[0]
    if _watch in gc.callbacks:
        gc.callbacks.remove(_watch)


def _after_fork_in_child() -> None:
    # Only the forking thread lives on in a child, and it is never one of
    # ours; a collection one of ours was in (GIL released) never ends here.
    global _lock
    _lock = threading.Lock()
    _ours.clear()
    _collecting[0] = 0
    _restore()


def thread(target: Callable[..., object], name: str, *args: Any) -> threading.Thread:
    """A daemon thread of aiotrace's (never keeping a program alive), not started."""

    def run() -> None:
        _enter()
        ident = threading.get_ident()
        try:
            target(*args)
        finally:
            _leave(ident)

    return threading.Thread(target=run, name=name, daemon=True)


def guarding() -> bool:
    """Whether ``gc.collect`` is aiotrace's wrapper now."""
    return gc.collect is _collect


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
