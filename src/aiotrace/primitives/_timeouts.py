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
from typing import TYPE_CHECKING, Any, Final

from aiotrace._patching import Patch
from aiotrace._recorder import RECORDER
from aiotrace.primitives._base import TIMED_OUT

if TYPE_CHECKING:
    from collections.abc import Iterator

FAMILY_TIMEOUT: Final = "timeout"
"""Whose failures :meth:`Recorder.fail` counts: noting timeouts stops, the program goes on."""


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
