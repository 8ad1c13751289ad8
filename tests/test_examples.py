"""Every tutorial example, run under ``aiotrace run``, shows in its trace what it teaches.

Each example also runs under plain ``python`` with the same output, and the
line numbers its docstring quotes are the ones in its code.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiotrace import semconv
from aiotrace._assemble import SpanDraft
from tests.cli_support import EXAMPLES, Trace, aiotrace, python

MS = 1_000_000


def line_in(name: str, text: str, occurrence: int = 0) -> int:
    source = (EXAMPLES / name).read_text().splitlines()
    return [i + 1 for i, line in enumerate(source) if text in line][occurrence]


def ms(span: SpanDraft) -> float:
    return (span.end - span.start) / MS


def task_names(trace: Trace) -> dict[int, str]:
    return {
        s.span_id: str(s.attributes[semconv.ATTR_TASK_NAME]) for s in trace.named(semconv.SPAN_TASK)
    }


def link_targets(span: SpanDraft, kind: str) -> list[int]:
    return [s for _, s, _, attrs in span.links if attrs.get(semconv.ATTR_LINK_KIND) == kind]


def check_futures(trace: Trace, report: dict[str, Any]) -> None:
    future = trace.one(semconv.SPAN_FUTURE)
    created = line_in("futures.py", "fut = loop.create_future()")
    resolved = line_in("futures.py", "fut.set_result(value)")
    assert future.attributes[semconv.ATTR_PRIMITIVE_NAME] == f"fut (futures.py:{created})"
    assert future.attributes[semconv.ATTR_WAKER_TASK] == "setter"
    assert future.attributes[semconv.ATTR_WAKER_SITE] == f"futures.py:{resolved}"
    assert future.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_RESULT
    assert ms(future) >= 190
    wait = trace.one(semconv.SPAN_FUTURE_WAIT)
    assert wait.attributes[semconv.ATTR_TASK_NAME] == "Task-1"
    assert link_targets(wait, semconv.LINK_FUTURE) == [future.span_id]
    assert ms(wait) >= 190
    setter = trace.one(semconv.SPAN_TASK, aiotrace__task__name="setter")
    assert [e[0] for e in setter.events] == [semconv.SPAN_FUTURE_RESOLVE]
    assert link_targets(future, semconv.LINK_WAKER) == [setter.span_id]
    assert report["futures"] == {"result": 1}
    (slowest,) = report["slowest_futures"]  # the report says who kept main waiting, and where
    assert slowest["ms"] >= 190
    assert slowest["process"] == trace.root.attributes[semconv.ATTR_PID]
    assert {k: v for k, v in slowest.items() if k not in ("ms", "process")} == {
        "future": f"fut (futures.py:{created})",
        "outcome": "result",
        "by": "setter",
        "at": f"futures.py:{resolved}",
        "waiters": 1,
        "times": 1,
        "total_ms": None,
    }


def check_locks(trace: Trace, report: dict[str, Any]) -> None:
    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    waits = trace.named(semconv.SPAN_LOCK_ACQUIRE)
    assert sorted(h.attributes[semconv.ATTR_TASK_NAME] for h in holds) == [
        "ann",
        "bob",
        "cat",
        "dan",
    ]
    assert all(ms(h) >= 45 for h in holds)
    assert len(waits) == 3
    hold_of = {h.span_id: h for h in holds}
    for wait in waits:
        (handoff,) = link_targets(wait, semconv.LINK_HANDOFF)
        blocker = hold_of[handoff]
        assert (
            wait.attributes[semconv.ATTR_BLOCKER_TASK] == blocker.attributes[semconv.ATTR_TASK_NAME]
        )
        assert abs(wait.end - blocker.end) < 5 * MS  # it got in when that hold ended
    assert max(ms(w) for w in waits) >= 140
    with_lock = line_in("locks.py", "async with stock_lock:")
    name = f"stock_lock (locks.py:{line_in('locks.py', 'stock_lock = asyncio.Lock()')})"
    top = report["primitives"][0]
    assert (top["name"], top["waits"], top["holds"]) == (name, 3, 4)
    assert all(h["site"] == f"locks.py:{with_lock}" for h in report["longest_holds"])


def _max_overlap(spans: list[SpanDraft]) -> int:
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def check_semaphores(trace: Trace, report: dict[str, Any]) -> None:
    holds = trace.named(semconv.SPAN_SEMAPHORE_HOLD)
    waits = trace.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert len(holds) == 6
    assert _max_overlap(holds) == 2  # the throttle: never more than two calls at once
    assert {h.attributes[semconv.ATTR_SEMAPHORE_CAPACITY] for h in holds} == {2}
    assert len(waits) == 4
    hold_ids = {h.span_id for h in holds}
    for wait in waits:
        assert wait.attributes[semconv.ATTR_SEMAPHORE_VALUE] == 0
        assert [h in hold_ids for h in link_targets(wait, semconv.LINK_HANDOFF)] == [True]
    (row,) = report["primitives"]
    assert (row["capacity"], row["waits"], row["holds"]) == (2, 4, 6)


def check_events(trace: Trace, report: dict[str, Any]) -> None:
    waits = trace.named(semconv.SPAN_EVENT_WAIT)
    assert len(waits) == 3
    assert max(w.end for w in waits) - min(w.end for w in waits) < 5 * MS  # all at once
    loader = trace.one(semconv.SPAN_TASK, aiotrace__task__name="loader")
    ((name, _, attrs),) = loader.events
    assert name == semconv.SPAN_EVENT_SET
    assert attrs[semconv.ATTR_WOKEN] == 3
    assert attrs[semconv.ATTR_CODE_LINE_NUMBER] == line_in("events.py", "ready.set()")
    for wait in waits:
        assert wait.attributes[semconv.ATTR_WAKER_TASK] == "loader"
        assert link_targets(wait, semconv.LINK_WAKER) == [loader.span_id]
        assert ms(wait) >= 90
    # The report: each worker's wait, and who set the event where
    name = f"ready (events.py:{line_in('events.py', 'ready = asyncio.Event()')})"
    waited_at = f"events.py:{line_in('events.py', 'await ready.wait()')}"
    set_at = f"events.py:{line_in('events.py', 'ready.set()')}"
    (wait,) = report["longest_waits"]  # the three waits, one line and one waker: one row
    assert wait["task"] in ("worker-0", "worker-1", "worker-2")
    assert wait["ms"] >= 90
    assert wait["total_ms"] >= 3 * 90
    assert wait["process"] == trace.root.attributes[semconv.ATTR_PID]
    assert {k: v for k, v in wait.items() if k not in ("ms", "task", "process", "total_ms")} == {
        "primitive": name,
        "at": waited_at,
        "outcome": "set",
        "by": "loader",
        "by_at": set_at,
        "times": 3,
    }


def check_conditions(trace: Trace, report: dict[str, Any]) -> None:
    waits = trace.named(semconv.SPAN_CONDITION_WAIT)
    producer = trace.one(semconv.SPAN_TASK, aiotrace__task__name="producer")
    assert len(waits) >= 4  # each item, and the final notify_all, ended some wait
    for wait in waits:
        assert wait.attributes[semconv.ATTR_TASK_NAME] in ("consumer-a", "consumer-b")
        assert wait.attributes[semconv.ATTR_CONDITION_PREDICATE] is True
        assert wait.attributes[semconv.ATTR_WAKER_TASK] == "producer"
        assert link_targets(wait, semconv.LINK_WAKER) == [producer.span_id]
    notifies = [e for e in producer.events if e[0] == semconv.SPAN_CONDITION_NOTIFY]
    assert len(notifies) >= 4
    created = line_in("conditions.py", "items_changed = asyncio.Condition()")
    name = f"items_changed (conditions.py:{created})"
    rows = {row["name"]: row for row in report["primitives"]}
    assert rows[name]["waits"] == len(waits)
    # Its own lock, held far below 1 ms each time: counted, under its own name.
    # (A busy machine may stretch one hold past 1 ms: the lock then has a row.)
    lock_name = name.replace(" (", ".lock (", 1)
    if lock_name in rows:
        assert set(rows) == {name, lock_name}
        assert rows[lock_name]["kind"] == semconv.KIND_LOCK
        assert rows[lock_name]["operations"] >= 10
        return
    assert set(rows) == {name}
    (summary,) = [
        attrs
        for event, _, attrs in trace.root.events
        if attrs.get(semconv.ATTR_PRIMITIVE_NAME) == lock_name
    ]
    assert summary[semconv.ATTR_PRIMITIVE_KIND] == semconv.KIND_LOCK
    assert summary[semconv.ATTR_OPERATIONS] >= 10
    assert report["uncontended"] == 1
    assert report["uncontended_operations"] == summary[semconv.ATTR_OPERATIONS]


def check_queue_pipeline(trace: Trace, report: dict[str, Any]) -> None:
    tasks = task_names(trace)
    puts = trace.named(semconv.SPAN_QUEUE_PUT)
    assert puts, "the producer must have blocked on the full queue"
    for put in puts:
        assert put.attributes[semconv.ATTR_TASK_NAME] == "producer"
        assert put.attributes[semconv.ATTR_QUEUE_SIZE] == 2
        waker = put.attributes[semconv.ATTR_WAKER_TASK]
        assert waker in ("worker-0", "worker-1")
        assert [tasks[t] for t in link_targets(put, semconv.LINK_WAKER)] == [waker]
    join = trace.one(semconv.SPAN_QUEUE_JOIN)
    assert join.attributes[semconv.ATTR_TASK_NAME] == "Task-1"
    (last,) = link_targets(join, semconv.LINK_WAKER)
    assert tasks[last] == join.attributes[semconv.ATTR_WAKER_TASK]
    done = [
        attrs
        for s in trace.named(semconv.SPAN_TASK)
        for name, _, attrs in s.events
        if name == semconv.SPAN_QUEUE_TASK_DONE
    ]
    assert [d[semconv.ATTR_WOKEN] for d in done] == [1]
    assert report["tasks"] == {"completed": 2, "cancelled": 2}
    (row,) = [r for r in report["primitives"] if r["kind"] == "Queue"]
    assert row["by_operation"]["put"][0] == len(puts)  # the producer waited: workers are slow
    assert row["by_operation"]["join"][0] == 1


def check_tasks_gather(trace: Trace, report: dict[str, Any]) -> None:
    main = trace.one(semconv.SPAN_TASK, aiotrace__task__name="Task-1")
    fetches = [
        s
        for s in trace.named(semconv.SPAN_TASK)
        if s.attributes[semconv.ATTR_TASK_COROUTINE] == "fetch"
    ]
    assert len(fetches) == 3
    assert {f.parent_id for f in fetches} == {main.span_id}
    outcomes = Counter(f.attributes[semconv.ATTR_OUTCOME] for f in fetches)
    assert outcomes == {semconv.OUTCOME_COMPLETED: 2, semconv.OUTCOME_RAISED: 1}
    (failed,) = [f for f in fetches if f.attributes[semconv.ATTR_OUTCOME] == "raised"]
    assert failed.status == 2  # ERROR
    ((name, _, attrs),) = failed.events
    assert name == semconv.EVENT_EXCEPTION
    assert attrs[semconv.ATTR_EXCEPTION_TYPE] == "ConnectionError"
    assert "connection reset" in attrs[semconv.ATTR_EXCEPTION_STACKTRACE]
    fetch_ids = {f.span_id for f in fetches}
    semaphore_spans = trace.named(semconv.SPAN_SEMAPHORE_HOLD) + trace.named(
        semconv.SPAN_SEMAPHORE_ACQUIRE
    )
    assert semaphore_spans
    assert {s.parent_id for s in semaphore_spans} <= fetch_ids  # nested in their tasks
    assert report["tasks"] == {"completed": 3, "raised": 1}


CHECKS: dict[str, Callable[[Trace, dict[str, Any]], None]] = {
    "futures.py": check_futures,
    "locks.py": check_locks,
    "semaphores.py": check_semaphores,
    "events.py": check_events,
    "conditions.py": check_conditions,
    "queue_pipeline.py": check_queue_pipeline,
    "tasks_gather.py": check_tasks_gather,
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CHECKS)


@pytest.mark.parametrize("example", sorted(CHECKS))
def test_example_shows_what_it_teaches(tmp_path: Path, example: str) -> None:
    path = EXAMPLES / example
    plain = python(path, cwd=tmp_path)
    traced = aiotrace("run", "--trace-file=t.json", "--report-json=r.json", path, cwd=tmp_path)
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert sorted(traced.stdout.splitlines()) == sorted(plain.stdout.splitlines())
    assert plain.stderr == ""
    trace = Trace(tmp_path / "t.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["stats"]["spans_dropped"] == 0
    assert report["stats"]["internal_errors"] == 0
    CHECKS[example](trace, report)


@pytest.mark.parametrize("example", sorted(CHECKS))
def test_docstring_line_numbers_are_the_codes(example: str) -> None:
    """A docstring that says ``locks.py:24`` must mean the line that creates the lock."""
    source = (EXAMPLES / example).read_text()
    lines = source.splitlines()
    for match in re.finditer(rf"{re.escape(example)}:(\d+)|line (\d+)", source):
        number = int(match.group(1) or match.group(2))
        code = lines[number - 1]
        assert re.search(r"asyncio\.\w+\(|create_future\(|set_result\(", code), (example, code)
