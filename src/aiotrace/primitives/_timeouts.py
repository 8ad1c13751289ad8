"""Tell a cancellation caused by a timeout from any other cancellation.

A wait cut short by ``asyncio.timeout()`` or ``asyncio.wait_for()`` sees a plain
``CancelledError``; only later does asyncio turn it into ``TimeoutError``. To
give such waits the outcome "timeout", we note which task a timeout is
cancelling, in a weak dictionary that the waits consult:

* 3.11+: ``asyncio.Timeout._on_timeout`` cancels ``self._task``; we remember
  the Timeout object, which stays "expiring" until its ``__aexit__``, by a
  weak reference: the Timeout refers to its task, and a value that refers
  to its own key keeps the entry, the task, its exception and every frame
  of its traceback alive for good.
* 3.10-3.11 ``wait_for`` cancels its inner task through
  ``tasks._cancel_and_wait``. It also does so when the *outer* task is
  cancelled, but then it runs inside an ``except CancelledError`` block, so a
  call with no exception being handled is a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import weakref
from typing import Any

from aiotrace._patching import Patch
from aiotrace.primitives._base import TIMED_OUT


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
            if task is not None:
                with contextlib.suppress(TypeError):  # a task or Timeout type without weakrefs
                    TIMED_OUT[task] = weakref.ref(self)
            orig_on_timeout(self)

        patches.append(Patch(timeout_cls, "_on_timeout", _on_timeout))

    tasks_module = asyncio.tasks
    orig_cancel_and_wait = vars(tasks_module).get("_cancel_and_wait")
    if orig_cancel_and_wait is not None and sys.version_info < (3, 12):

        @functools.wraps(orig_cancel_and_wait)
        async def _cancel_and_wait(fut: Any, *args: Any, **kwargs: Any) -> None:
            if sys.exc_info()[1] is None:
                with contextlib.suppress(TypeError):  # a plain Future: nothing waits inside
                    TIMED_OUT[fut] = True
            await orig_cancel_and_wait(fut, *args, **kwargs)

        patches.append(Patch(tasks_module, "_cancel_and_wait", _cancel_and_wait))
    return patches
