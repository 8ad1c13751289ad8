"""Tell a cancellation caused by a timeout from any other cancellation.

A wait cut short by ``asyncio.timeout()`` or ``asyncio.wait_for()`` sees a plain
``CancelledError``; only later does asyncio turn it into ``TimeoutError``. To
give such waits the outcome "timeout", we note which task a timeout is
cancelling, in a weak dictionary that the waits consult:

* 3.11+: ``asyncio.Timeout._on_timeout`` cancels ``self._task``; we remember
  the Timeout object, which stays "expiring" until its ``__aexit__``, by a
  weak reference: the Timeout refers to its task, and a value that refers
  to its own key keeps the entry, the task, its exception and every frame
  of its traceback alive for good. The tasks the cancellation reaches
  through that task (one it awaits, a ``gather``'s children) are noted too.
* 3.10-3.11 ``wait_for`` cancels its inner task through
  ``tasks._cancel_and_wait``. It also does so when the *outer* task is
  cancelled, but then it runs inside an ``except CancelledError`` block, so a
  call with no exception being handled is a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import weakref
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace._sites import RawSite, file_kind, raw_site
from aiotrace.primitives._base import (
    TIMED_OUT,
    WATCH_SWALLOWED,
    as_coroutine_function,
    current_task_name,
    note_swallowed,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

FAMILY_TIMEOUT: Final = "timeout"
"""Whose failures :meth:`Recorder.fail` counts: noting timeouts stops, the program goes on."""


class SwallowedTimeout(NamedTuple):
    """An ``asyncio.timeout()`` block that expired and ended without an exception, for a
    diagnosis to report (``_base.SWALLOWED``). The timeout cancelled the task, and
    its body caught the ``CancelledError`` and went on: no ``TimeoutError`` is
    raised, and the code after the block runs as if it had been in time."""

    when_ns: int
    """``perf_counter_ns`` as the block ended."""
    task: str | None
    site: RawSite
    """The program's ``async with``, or its call of ``wait_for``."""
    what: str
    """``asyncio.timeout()`` or ``asyncio.wait_for()`` (3.12+, itself a timeout)."""


def _swallowed_timeout(frame: Any, wait_for_code: Any) -> None:
    """Note the timeout whose ``__aexit__`` ``frame`` calls as a :class:`SwallowedTimeout`,
    if that frame is the program's: a library's own timeouts are its business."""
    what = "asyncio.timeout()"
    if frame.f_code is wait_for_code:
        what, frame = "asyncio.wait_for()", frame.f_back
    code = frame.f_code if frame is not None else None
    if code is not None and file_kind(code.co_filename) is False:
        note_swallowed(
            SwallowedTimeout(
                perf_counter_ns(), current_task_name(), raw_site(code, frame.f_lasti), what
            )
        )


def cancelled_with(task: Any, limit: int = 1000) -> Iterator[Any]:
    """The tasks among ``task`` and what cancelling it now cancels too.

    ``Task.cancel()`` passes the cancellation on to what the task awaits:
    a task it awaits (``await task``, ``wait_for`` of a task on 3.12+), the
    children of a ``gather``, and so on down. A wait cut short there is a
    timeout as much as one in ``task``. A ``shield()`` passes nothing on,
    so the chain stops at it.
    """
    stack = [task]
    while stack and limit > 0:
        limit -= 1
        current = stack.pop()
        if current.done():
            continue
        waiter = getattr(current, "_fut_waiter", None)
        if hasattr(current, "_fut_waiter"):  # a task (C or Python): its waits are noted
            yield current
        if waiter is not None:
            stack.append(waiter)
        children = getattr(current, "_children", None)  # a gather's
        if isinstance(children, list):
            stack.extend(children)


def timeout_patches() -> list[Patch]:
    """Patches that mark tasks being cancelled by a timeout."""
    patches: list[Patch] = []
    timeouts = getattr(asyncio, "timeouts", None)
    timeout_cls = getattr(timeouts, "Timeout", None)
    if timeout_cls is not None and "_on_timeout" in vars(timeout_cls):
        orig_on_timeout = vars(timeout_cls)["_on_timeout"]

        @functools.wraps(orig_on_timeout)
        def _on_timeout(self: Any) -> None:
            task = getattr(self, "_task", None)
            if task is not None and RECORDER.enabled.get(FAMILY_TIMEOUT, True):
                try:
                    note = weakref.ref(self)
                    for cancelled in cancelled_with(task):
                        TIMED_OUT[cancelled] = note
                except TypeError:  # a task or Timeout type without weakrefs
                    pass
                except Exception as exc:  # asyncio's timer callback: the timeout must still fire
                    RECORDER.fail(FAMILY_TIMEOUT, exc)
            orig_on_timeout(self)

        patches.append(Patch(timeout_cls, "_on_timeout", _on_timeout))
        orig_aexit = vars(timeout_cls).get("__aexit__")
        wait_for_code = getattr(asyncio.tasks.wait_for, "__code__", None)  # 3.12+: a timeout's
        if orig_aexit is not None:

            @functools.wraps(orig_aexit)
            def __aexit__(self: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
                # (Plain, handing back asyncio's coroutine: no frame of ours in the
                # TimeoutError's traceback.)
                if exc_type is None and WATCH_SWALLOWED[0]:
                    try:
                        if self.expired():  # fired, and the body ended all the same
                            _swallowed_timeout(sys._getframe(1), wait_for_code)
                    except Exception as exc:
                        RECORDER.fail(FAMILY_TIMEOUT, exc)
                return orig_aexit(self, exc_type, exc_val, exc_tb)

            as_coroutine_function(__aexit__)
            patches.append(Patch(timeout_cls, "__aexit__", __aexit__))

    tasks_module = asyncio.tasks
    orig_cancel_and_wait = vars(tasks_module).get("_cancel_and_wait")
    if orig_cancel_and_wait is not None and sys.version_info < (3, 12):

        @functools.wraps(orig_cancel_and_wait)
        async def _cancel_and_wait(fut: Any, *args: Any, **kwargs: Any) -> None:
            if sys.exc_info()[1] is None and RECORDER.enabled.get(FAMILY_TIMEOUT, True):
                try:
                    for cancelled in cancelled_with(fut):
                        TIMED_OUT[cancelled] = True
                except TypeError:  # a task type without weakrefs
                    pass
                except Exception as exc:  # inside wait_for: it must still cancel and raise
                    RECORDER.fail(FAMILY_TIMEOUT, exc)
            await orig_cancel_and_wait(fut, *args, **kwargs)

        patches.append(Patch(tasks_module, "_cancel_and_wait", _cancel_and_wait))
    return patches
