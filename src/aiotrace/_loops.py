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
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable


def loop_of(task: Any) -> Any:
    return type(task).get_loop(task)


def coro_of(task: Any) -> Any:
    """``task.get_coro()``, without calling it: asyncio's own Task keeps it as ``_coro``.

    On 3.12 (3.12.1 here), ``get_coro()`` of an eager task that finished in
    its first step (``asyncio.eager_task_factory``) dereferences the coroutine
    it dropped, and the interpreter dies of a segmentation fault; ``_coro``
    reads ``None`` there, as ``get_coro()`` does from 3.13. A task of another
    kind, with no ``_coro``, is asked ``get_coro()``; ``None`` if that fails.
    """
    try:
        return task._coro
    except AttributeError:
        pass
    try:
        return task.get_coro()
    except Exception:  # a task type of the program's with a broken get_coro()
        return None


def is_closed(loop: Any) -> bool:
    return bool(type(loop).is_closed(loop))


def is_running(loop: Any) -> bool:
    return bool(type(loop).is_running(loop))


def call_soon_threadsafe(loop: Any, callback: Callable[..., object], *args: Any) -> None:
    """Schedule ``callback`` on ``loop``; RuntimeError when it closed meanwhile."""
    type(loop).call_soon_threadsafe(loop, callback, *args)


INHERITED: dict[int, Any] = {}
"""In the child of a fork: the parent's loops that had tasks pending then (id -> loop).

They never run in the child, and their tasks are the parent's, which the
parent traces and reports: the child's account leaves them out.
"""


def inherit_loops() -> None:
    """In the child of a fork, at once: set the parent's loops aside (:data:`INHERITED`)."""
    INHERITED.update({id(loop_of(task)): loop_of(task) for task in pending_tasks(parents_too=True)})


_TASK_GET_LOOP: Final = asyncio.Task.get_loop


def _task_lists() -> list[list[Any]]:
    """asyncio's sets of tasks, each copied (3.12+ splits them in two), any unreadable left out."""
    lists = []
    for attr in ("_all_tasks", "_scheduled_tasks", "_eager_tasks"):
        with contextlib.suppress(Exception):
            lists.append(list(getattr(asyncio.tasks, attr, None) or ()))
    return lists


def task_loops() -> list[Any]:
    """The loops of the tasks asyncio knows of, each once, none closed or a fork's parent's.

    What the watchdog watches, looked for twenty times a second. A task per
    loop would do, but asyncio keeps no list of loops: every task is read, in
    C (``map`` of ``Task.get_loop``), at about 0.15 µs a task rather than
    0.9 µs through :func:`pending_tasks`, which 10,000 pending tasks made 9 ms
    of the GIL's time every 50 ms. A done task's loop is listed too, which
    the watchdog passes over while it does not run.
    """
    found: dict[int, Any] = {}
    for tasks in _task_lists():
        try:
            loops = list(map(_TASK_GET_LOOP, tasks))
        except Exception:  # a task of another class (Python's own Task, a subclass's)
            loops = []
            for task in tasks:
                with contextlib.suppress(Exception):
                    loops.append(loop_of(task))
        found.update(zip(map(id, loops), loops, strict=True))
    return [loop for key, loop in found.items() if key not in INHERITED and not is_closed(loop)]


def pending_tasks(parents_too: bool = False) -> list[Any]:
    """Every task not done whose loop is not closed, on any loop of any thread.

    In the child of a fork, not the parent's tasks (see :data:`INHERITED`),
    unless ``parents_too``: a lock the parent's task holds is not this
    process's leak.

    asyncio keeps all tasks in weak sets (3.12+ splits them in two);
    ``asyncio.all_tasks()`` would need each loop, and a running one.
    """
    inherited = INHERITED if not parents_too else {}
    tasks = []
    for known in _task_lists():
        with contextlib.suppress(Exception):
            for task in known:
                if task.done():
                    continue
                loop = loop_of(task)
                if not is_closed(loop) and id(loop) not in inherited:
                    tasks.append(task)
    return tasks
