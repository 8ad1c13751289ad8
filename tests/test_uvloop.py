"""The same scenarios under uvloop: primitives, task spans and future spans all work."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from aiotrace import semconv
from aiotrace.testing import Captured
from tests.cli_support import marker_line
from tests.conftest import line_of
from tests.test_diagnosis import _check_taken_in_time, _in_time, _invert, _two_of
from tests.test_events_and_conditions import _producer_consumer, _two_waiters_one_setter
from tests.test_futures import _tutorial
from tests.test_lock_contention import _three_contenders
from tests.test_semaphores import _throttled

uvloop = pytest.importorskip("uvloop", reason="uvloop is a test dependency")


def test_uvloop_is_the_loop_in_use(traced: Captured) -> None:
    """Sanity: these tests really run on uvloop's loop."""

    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert uvloop.run(main()).startswith("uvloop")


def test_lock_contention_on_uvloop(traced: Captured) -> None:
    """Waits, holds, hand-off links and task parentage under uvloop."""
    assert uvloop.run(_three_contenders()) == ["w1", "w2", "w3"]
    holds = traced.named(semconv.SPAN_LOCK_HOLD)
    waits = traced.named(semconv.SPAN_LOCK_ACQUIRE)
    tasks = {s[semconv.ATTR_TASK_NAME]: s for s in traced.task_spans}
    assert [h[semconv.ATTR_TASK_NAME] for h in holds] == ["w1", "w2", "w3"]
    assert [w[semconv.ATTR_TASK_NAME] for w in waits] == ["w2", "w3"]
    by_id = {h.span_id: h for h in holds}
    for wait, giver in zip(waits, ("w1", "w2"), strict=True):
        ((target, _),) = wait.links
        assert by_id[target][semconv.ATTR_TASK_NAME] == giver
        assert wait.parent_id == tasks[wait[semconv.ATTR_TASK_NAME]].span_id


def test_semaphore_event_condition_on_uvloop(traced: Captured) -> None:
    """Semaphore saturation, event wake-ups and condition notifications under uvloop."""
    assert uvloop.run(_throttled(asyncio.Semaphore(2), 4)) == 2
    uvloop.run(_two_waiters_one_setter())
    assert uvloop.run(_producer_consumer()) == [1, 2]
    assert len(traced.named(semconv.SPAN_SEMAPHORE_ACQUIRE)) == 2
    assert len(traced.named(semconv.SPAN_EVENT_WAIT)) == 2
    assert len(traced.events(semconv.SPAN_EVENT_SET)) == 1
    waits = traced.named(semconv.SPAN_CONDITION_WAIT)
    assert [w[semconv.ATTR_WAKER_TASK] for w in waits] == ["producer", "producer"]


def test_futures_on_uvloop(traced: Captured) -> None:
    """loop.create_future() on uvloop's loop gives a traced future with its resolver."""
    assert uvloop.run(_tutorial()) == "... world"
    (future,) = traced.named(semconv.SPAN_FUTURE)
    assert future[semconv.ATTR_WAKER_TASK] == "setter"
    (wait,) = traced.named(semconv.SPAN_FUTURE_WAIT)
    assert wait.links[0][0] == future.span_id


def test_the_loops_own_coroutines_are_not_the_programs_tasks(traced: Captured) -> None:
    """uvloop's ``Loop.shutdown_asyncgens`` is asyncio's clean-up: no task span, as asyncio's."""

    async def main() -> None:
        await asyncio.sleep(0)

    uvloop.run(main())
    asyncio.run(main())
    coroutines = [s[semconv.ATTR_TASK_COROUTINE] for s in traced.task_spans]
    # uvloop.run's main task runs its own wrapper of main(); asyncio.run's, main() itself
    assert coroutines == ["run.<locals>.wrapper", main.__qualname__]


_WORKER_LIBRARY = """\
import asyncio


async def worker():
    done = asyncio.Event()  # LIB_EVENT
    asyncio.get_running_loop().call_later(0.01, done.set)
    await done.wait()
"""


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_a_librarys_coroutine_made_a_task_names_the_programs_line(
    traced: Captured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    """A library's coroutine made a task by the program has nothing of the program's on
    its stack up to the task's first frame. Above that, asyncio has its loop's callback
    runner; uvloop, compiled, has nothing, and the stack goes on to the line that started
    the loop (``run(main())``), which is no answer. What the task makes names the
    program's line that made the task, under both."""
    package = tmp_path / "site-packages" / "uvworker"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_WORKER_LIBRARY)
    monkeypatch.syspath_prepend(str(tmp_path / "site-packages"))
    uvworker = importlib.import_module("uvworker")

    async def main() -> None:
        await asyncio.create_task(uvworker.worker())  # made-the-task

    try:
        run(main())
    finally:
        del sys.modules["uvworker"]  # each run imports its own, from its own folder
    (wait,) = traced.named(semconv.SPAN_EVENT_WAIT)
    made = f"{os.path.basename(__file__)}:{line_of('# made-the-task')}"
    assert wait[semconv.ATTR_PRIMITIVE_SITE] == (
        f"uvworker/__init__.py:{marker_line(_WORKER_LIBRARY, 'LIB_EVENT')}"
    )
    assert wait[semconv.ATTR_PRIMITIVE_VIA_SITE] == made
    assert wait[semconv.ATTR_VIA_SITE] == made


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_what_wait_for_takes_on_uvloop_is_held_by_the_frame_awaiting_it(kind: str) -> None:
    """As under asyncio's loop. uvloop's runs a task's first coroutine with no frame
    of its own below it: on 3.10-3.11 the acquire that ``wait_for`` runs as a task
    found ``asyncio.run()``'s caller there, a frame of the program's but no coroutine,
    and its holder went unknown (a hang, not the deadlock it is)."""
    _check_taken_in_time(_invert(_in_time, lambda: _two_of(kind), run=uvloop.run))
