"""The process's event loops and their tasks, read from any thread, unseen by the program.

The watchdog, the hang handling and Ctrl-C under ``aiotrace run`` ask loops
questions from another thread, many times a second. A program may have
replaced a loop's method on the instance (a test's
``patch.object(loop, "is_closed")`` counts its calls and picks its answers):
each question goes to the loop's class, so the program's replacement sees
only the program's calls, and aiotrace sees the loop's true state.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def loop_of(task: Any) -> Any:
    return type(task).get_loop(task)


def is_closed(loop: Any) -> bool:
    return bool(type(loop).is_closed(loop))


def is_running(loop: Any) -> bool:
    return bool(type(loop).is_running(loop))


def call_soon_threadsafe(loop: Any, callback: Callable[..., object], *args: Any) -> None:
    """Schedule ``callback`` on ``loop``; RuntimeError when it closed meanwhile."""
    type(loop).call_soon_threadsafe(loop, callback, *args)


def pending_tasks() -> list[Any]:
    """Every task not done whose loop is not closed, on any loop of any thread.

    asyncio keeps all tasks in weak sets (3.12+ splits them in two);
    ``asyncio.all_tasks()`` would need each loop, and a running one.
    """
    tasks = []
    for attr in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        with contextlib.suppress(Exception):
            for task in list(getattr(asyncio.tasks, attr, None) or ()):
                if not task.done() and not is_closed(loop_of(task)):
                    tasks.append(task)
    return tasks
