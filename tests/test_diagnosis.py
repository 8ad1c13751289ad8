"""Findings: each bug program gets exactly its finding, and its fixed twin none.

The programs are in ``tests/programs/diag/``; each takes a flag that turns
the bug off. They run under ``aiotrace run --hang-timeout 5 --check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from aiotrace import semconv
from aiotrace.cli import EXIT_FINDINGS, EXIT_HANG
from aiotrace.diagnosis import _blocking_line, threads_running
from tests.cli_support import (
    PROGRAMS,
    Trace,
    aiotrace,
    installed_library,
    marker_line,
    started_and_ready,
)
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator

    from aiotrace.testing import Captured

DIAG = PROGRAMS / "diag"


def line(program: str, text: str, occurrence: int = 0) -> int:
    lines = (DIAG / program).read_text().splitlines()
    return [i + 1 for i, source in enumerate(lines) if text in source][occurrence]


def diagnose(
    tmp_path: Path,
    program: str,
    *args: str,
    flags: tuple[str, ...] = (),
    sigint: str | None = None,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]], Trace]:
    result = aiotrace(
        "run",
        "--hang-timeout=5",
        "--check",
        "--trace-file=t.json",
        "--report-json=r.json",
        *flags,
        DIAG / program,
        *args,
        cwd=tmp_path,
        sigint=sigint,
    )
    report = json.loads((tmp_path / "r.json").read_text())
    return result, report["findings"], Trace(tmp_path / "t.json")


def kinds(findings: list[dict[str, Any]]) -> list[str]:
    return [f["kind"] for f in findings]


TWINS = [
    ("deadlock_locks.py", "--ordered"),
    ("deadlock_condition.py", "--ordered"),
    ("deadlock_future.py", "--ordered"),
    ("hang_event.py", "--sets"),
    ("leaks.py", "--tidy"),
    ("lock_order.py", "--consistent"),
    ("loop_blocked.py", "--awaits"),
    ("loop_blocked_elsewhere.py", "--awaits"),
    ("unread.py", "--read"),
]


@pytest.mark.parametrize(("program", "fix"), TWINS)
def test_the_fixed_twin_has_no_finding(tmp_path: Path, program: str, fix: str) -> None:
    result, findings, trace = diagnose(tmp_path, program, fix)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("done")
    assert findings == []
    assert trace.named(semconv.SPAN_FINDING) == []
    assert "Findings" not in result.stderr


def test_deadlock_between_two_locks(tmp_path: Path) -> None:
    result, findings, trace = diagnose(tmp_path, "deadlock_locks.py")
    assert result.returncode == EXIT_HANG
    assert kinds(findings) == ["deadlock", "hang"]
    deadlock = findings[0]
    assert deadlock["summary"] == (
        '2 tasks wait for each other: "to-savings" -> "to-checking" -> "to-savings"'
    )
    taken = line("deadlock_locks.py", "async with first:")
    assert deadlock["details"][:2] == [
        'task "to-savings" (main.<locals>.transfer) waits for lock savings '
        f"(deadlock_locks.py:{line('deadlock_locks.py', 'savings = ')}), held by task "
        '"to-checking" (main.<locals>.transfer) '
        f"(taken at deadlock_locks.py:{taken} in main.<locals>.transfer)",
        'task "to-checking" (main.<locals>.transfer) waits for lock checking '
        f"(deadlock_locks.py:{line('deadlock_locks.py', 'checking = ')}), held by task "
        '"to-savings" (main.<locals>.transfer) '
        f"(taken at deadlock_locks.py:{taken} in main.<locals>.transfer)",
    ]
    # Printed at once (before the hang), and a span linking both tasks' spans.
    assert result.stderr.index("aiotrace: DEADLOCK:") < result.stderr.index("aiotrace: HANG:")
    (span,) = [
        s
        for s in trace.named(semconv.SPAN_FINDING)
        if s.attributes[semconv.ATTR_FINDING_KIND] == "deadlock"
    ]
    tasks = {
        s.span_id: s.attributes[semconv.ATTR_TASK_NAME] for s in trace.named(semconv.SPAN_TASK)
    }
    assert sorted(tasks[link[1]] for link in span.links) == ["to-checking", "to-savings"]
    assert span.parent_id == trace.root.span_id
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == EXIT_HANG


def test_deadlock_through_a_condition(tmp_path: Path) -> None:
    result, findings, _ = diagnose(tmp_path, "deadlock_condition.py")
    assert result.returncode == EXIT_HANG
    assert kinds(findings) == ["deadlock", "hang"]
    details = findings[0]["details"]
    jobs = line("deadlock_condition.py", "jobs = asyncio.Condition()")
    assert findings[0]["summary"] == (
        '2 tasks wait for each other: "scheduler" -> "auditor" -> "scheduler"'
    )
    assert details[0].startswith(
        'task "scheduler" (main.<locals>.scheduler) waits for lock registry'
    )
    assert details[1].startswith(
        f'task "auditor" (main.<locals>.auditor) waits for lock jobs.lock '
        f'(deadlock_condition.py:{jobs}), held by task "scheduler"'
    )


def test_deadlock_through_a_future_awaited_in_a_cycle(tmp_path: Path) -> None:
    result, findings, _ = diagnose(tmp_path, "deadlock_future.py")
    assert result.returncode == EXIT_HANG
    assert kinds(findings) == ["deadlock", "hang"]
    created = line("deadlock_future.py", "loaded = asyncio.get_running_loop()")
    assert findings[0]["details"][:2] == [
        'task "loader" (main.<locals>.loader) waits for lock config_lock '
        f"(deadlock_future.py:{line('deadlock_future.py', 'config_lock = ')}), held by task "
        '"reader" (main.<locals>.reader) '
        f"(taken at deadlock_future.py:{line('deadlock_future.py', 'async with config_lock', 1)} "
        "in main.<locals>.reader)",
        'task "reader" (main.<locals>.reader) waits for future loaded '
        f'(deadlock_future.py:{created}), to be ended by task "loader" (main.<locals>.loader)',
    ]


# With SIGINT ignored (as a background job inherits it), Ctrl-C cannot stop
# the program: aiotrace interrupts it from inside its event loop instead.
@pytest.mark.parametrize("sigint", ["default", "ignore"])
def test_a_hang_without_a_cycle_names_the_wait_nobody_will_end(tmp_path: Path, sigint: str) -> None:
    started = time.monotonic()
    result, findings, _ = diagnose(tmp_path, "hang_event.py", sigint=sigint)
    assert time.monotonic() - started < 5  # detected when stuck, well before the timeout
    assert result.returncode == EXIT_HANG
    assert kinds(findings) == ["hang"]
    hang = findings[0]
    assert hang["summary"].startswith("no task can make progress: 1 pending")
    ready = line("hang_event.py", "ready = asyncio.Event()")
    assert hang["details"] == [
        f'task "Task-1" (main) waits for event ready (hang_event.py:{ready}), '
        "which no pending task can end",
        f"    hang_event.py:{line('hang_event.py', 'await ready.wait()')} in main",
    ]
    assert "aiotrace: stopped: no task can make progress" in result.stderr
    assert "KeyboardInterrupt" not in result.stderr  # our interrupt, not the program's


def test_a_hang_through_a_lock_aiotrace_cannot_see_names_the_async_with_each_task_is_in(
    tmp_path: Path,
) -> None:
    result, findings, _ = diagnose(tmp_path, "hang_own_lock.py")
    assert result.returncode == EXIT_HANG, result.stderr
    (hang,) = findings
    # transfer: accounts, then ledger; audit: ledger, then accounts
    accounts, audit_waits = (line("hang_own_lock.py", "async with accounts:", i) for i in (0, 1))
    transfer_waits, ledger = (line("hang_own_lock.py", "async with ledger:", i) for i in (0, 1))
    assert (
        f"    hang_own_lock.py:{transfer_waits} in transfer, "
        f"inside async with accounts (line {accounts})"
    ) in hang["details"]
    assert (
        f"    hang_own_lock.py:{audit_waits} in audit, inside async with ledger (line {ledger})"
    ) in hang["details"]
    # The lock's own frame is inside none: the line waiting on the future is in no block.
    waiting = line("hang_own_lock.py", "await waiter")
    assert f"    hang_own_lock.py:{waiting} in FutureLock.__aenter__" in hang["details"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup and cancelling() are 3.11+")
def test_a_hang_its_interrupt_cannot_end_is_ended_once_stuck_again(tmp_path: Path) -> None:
    """The swallowed cancellation: the hang names the task and the group waiting for it,
    and, the interrupt having changed nothing, the run ends once stuck again, not 10 s after."""
    started = time.monotonic()
    result, findings, _ = diagnose(
        tmp_path, "hang_swallowed_cancel.py", flags=("--hang-timeout=0.5",)
    )
    assert result.returncode == EXIT_HANG, result.stderr
    assert time.monotonic() - started < 8
    assert "aiotrace: the hung program did not stop; ending it" in result.stderr
    (hang,) = findings
    worker = 'task "worker" (main.<locals>.worker)'
    assert hang["details"][0].startswith(f"{worker} waits for event stop")
    assert hang["details"][0].endswith(
        "; cancelled, yet still running: it caught the CancelledError and went on,"
        " or its clean-up waits"
    )
    assert f'task "Task-1" (main) waits for its TaskGroup\'s tasks ({worker})' in hang["details"]


@pytest.mark.parametrize("retrieved", [False, True])
def test_a_hang_names_a_task_that_died_of_an_exception_nobody_read(
    tmp_path: Path, retrieved: bool
) -> None:
    """The classic: the consumer crashed, asyncio says nothing until it is collected, and its
    producer waits on the full queue. The hang names the failure, unless it was read."""
    args = ("--retrieved",) if retrieved else ()
    result, findings, _ = diagnose(tmp_path, "hang_dead_consumer.py", *args)
    assert result.returncode == EXIT_HANG, result.stderr
    hang = findings[0]
    assert kinds(findings) == ["hang"] if retrieved else ["hang", "exception never retrieved"]
    put = line("hang_dead_consumer.py", "await queue.put(item)")
    assert f"    hang_dead_consumer.py:{put} in main" in hang["details"]
    raised = line("hang_dead_consumer.py", "raise ValueError")
    died = (
        'task "consumer" (consume) ended raising ValueError: cannot handle item 5 '
        f"(hang_dead_consumer.py:{raised}), and nothing has retrieved it"
    )
    assert (died in hang["details"]) is not retrieved
    assert not any("ended raising" in detail for detail in hang["details"] if detail != died)
    if not retrieved:  # and the failure itself is a finding, as for any task
        assert findings[1]["summary"] == (
            'task "consumer" (consume) raised ValueError: cannot handle item 5 at '
            f"hang_dead_consumer.py:{raised} in consume, and nothing retrieved it"
        )


def test_a_program_running_past_the_hang_timeout_is_stopped(tmp_path: Path) -> None:
    program = tmp_path / "slow.py"
    program.write_text(
        "import asyncio\n\nasync def main():\n    await asyncio.sleep(60)\n\nasyncio.run(main())\n"
    )
    result = aiotrace("run", "--hang-timeout=1", "--report-json=r.json", program, cwd=tmp_path)
    assert result.returncode == EXIT_HANG
    (hang,) = json.loads((tmp_path / "r.json").read_text())["findings"]
    assert hang["summary"] == "still running after the hang timeout of 1 s"
    assert re.fullmatch(
        r'task "Task-1" \(main\) waits for asyncio\.sleep\(\), 5[89] s to go', hang["details"][0]
    )


def test_a_wait_on_asyncios_own_futures_says_what_it_waits_for(tmp_path: Path) -> None:
    result = aiotrace(
        "run",
        "--hang-timeout=1",
        "--no-trace-file",
        "--report-json=r.json",
        DIAG / "internal_waits.py",
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_HANG, result.stderr
    (hang,) = json.loads((tmp_path / "r.json").read_text())["findings"]
    waits = {
        match[1]: match[2]
        for detail in hang["details"]
        if (match := re.fullmatch(r'task "(\w+)" \(main\.<locals>\.\w+\) waits for (.*)', detail))
    }
    assert waits.pop("sleeper") in (
        "asyncio.sleep(), 3599 s to go",
        "asyncio.sleep(), 3598 s to go",
    )
    assert waits == {
        "reader": "data on a stream",
        "threader": "a thread (asyncio.to_thread)",
        "executor": "a thread or process (run_in_executor)",
        "subprocess": "a subprocess to exit",
        "waiter": 'asyncio.wait (task "nap" (sleep))',  # the tasks it waits for, named
    }


def test_leaked_ownership_is_reported_with_sites(tmp_path: Path) -> None:
    result, findings, _ = diagnose(tmp_path, "leaks.py")
    assert result.returncode == EXIT_FINDINGS  # --check: the program exited 0, but...
    assert f"--check: 3 findings; exit status {EXIT_FINDINGS}" in result.stderr
    summaries = {f["summary"]: f["details"] for f in findings}
    at = {text: line("leaks.py", text) for text in ("cache_lock =", "pool =", "reply =")}
    assert summaries == {
        f"lock held: cache_lock (leaks.py:{at['cache_lock =']})": [
            f"acquired at leaks.py:{line('leaks.py', 'await cache_lock.acquire()')} in "
            "main.<locals>.refresh, which finished without releasing it"
        ],
        f"permit taken: pool (leaks.py:{at['pool =']})": [
            f"taken at leaks.py:{line('leaks.py', 'await pool.acquire()')} in "
            "main.<locals>.query, which finished without releasing it"
        ],
        f"future unresolved: reply (leaks.py:{at['reply =']})": [
            'created by task "request", garbage-collected unresolved, no task was waiting'
        ],
    }
    assert set(kinds(findings)) == {"leak"}


def test_lock_order_inversion_is_found_though_nothing_hung(tmp_path: Path) -> None:
    result, findings, _ = diagnose(tmp_path, "lock_order.py")
    assert result.returncode == EXIT_FINDINGS
    assert result.stdout.strip() == "done"
    (finding,) = findings
    users = f"users_lock (lock_order.py:{line('lock_order.py', 'users_lock = ')})"
    orders = f"orders_lock (lock_order.py:{line('lock_order.py', 'orders_lock = ')})"
    assert finding["kind"] == "lock order"
    assert (
        finding["summary"] == f"{users} and {orders} are taken in both orders: a possible deadlock"
    )
    at = {
        key: f"lock_order.py:{line('lock_order.py', text, n)} in main.<locals>.{function}"
        for key, text, n, function in (
            ("users 1", "async with users_lock:", 0, "rename_user"),
            ("orders 1", "async with orders_lock:", 0, "rename_user"),
            ("orders 2", "async with orders_lock:", 1, "cancel_order"),
            ("users 2", "async with users_lock:", 1, "cancel_order"),
        )
    }
    assert finding["details"][:2] == [
        f'task "rename-user" took {users} at {at["users 1"]}, then {orders} at {at["orders 1"]}',
        f'task "cancel-order" took {orders} at {at["orders 2"]}, then {users} at {at["users 2"]}',
    ]
    quiet, findings, _ = diagnose(tmp_path, "lock_order.py", flags=("--no-lock-order",))
    assert quiet.returncode == 0
    assert findings == []


def test_where_holders_were_while_others_waited_names_the_line_inside_the_hold(
    tmp_path: Path,
) -> None:
    """A lock is contended because of what its holder does while holding it: the
    report names that line (the slow ``await`` inside the ``async with``), sampled
    while others waited, and its twin, whose holds nobody waits for, names none."""
    result, findings, trace = diagnose(tmp_path, "held_across.py")
    assert result.returncode == 0, result.stderr
    assert findings == []  # slow, not wrong: no finding, no failed --check
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {row["name"].split(" ")[0]: row for row in report["primitives"]}
    fetch = line("held_across.py", "await fetch(key)  # held")
    query = line("held_across.py", "await asyncio.sleep(0.02)")
    for name, where in (
        ("self.lock", f"held_across.py:{fetch} in Cache.get: self.data[key] = await fetch(key)"),
        ("pool", f"held_across.py:{query} in query: await asyncio.sleep(0.02)"),
    ):
        (at, samples), *others = sorted(rows[name]["held_at"].items(), key=lambda kv: -kv[1])
        assert at == where, rows[name]  # the line, without its comment
        # The lock has waiters for about 90 ms, two permits for 60 ms: one
        # sample a holder every 10 ms, on a loaded machine fewer.
        assert samples >= 3, rows[name]
        assert samples >= 4 * sum(count for _, count in others), rows[name]
        assert rows[name]["held_samples"] == samples + sum(count for _, count in others)
        assert f"  {rows[name]['name']}: {where}" in result.stderr
    assert "Where holders were while others waited" in result.stderr
    (summary,) = [
        attrs
        for name, _, attrs in trace.root.events
        if name == semconv.EVENT_PRIMITIVE_SUMMARY
        and str(attrs[semconv.ATTR_PRIMITIVE_NAME]).startswith("self.lock")
    ]
    assert str(summary[semconv.ATTR_SUMMARY_HELD_AT][0]).startswith(f"held_across.py:{fetch}")
    assert summary[semconv.ATTR_SUMMARY_HELD_SAMPLES] >= 3

    twin, _, _ = diagnose(tmp_path, "held_across.py", "--outside")
    assert twin.returncode == 0, twin.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert all(not row["held_at"] for row in report["primitives"])
    assert "Where holders were" not in twin.stderr


@pytest.mark.parametrize("how", ["spawn", "fork"])
def test_a_child_process_is_diagnosed_and_its_findings_say_which(tmp_path: Path, how: str) -> None:
    """A worker process's inverted locks and blocked loop are the run's findings too."""
    result, findings, trace = diagnose(tmp_path, "in_children.py", how)
    assert result.returncode == EXIT_FINDINGS, result.stderr
    assert result.stdout.strip() == "done"
    assert kinds(findings) == ["lock order", "loop blocked"]
    (process,) = trace.named(semconv.SPAN_PROCESS)
    pid = process.attributes[semconv.ATTR_PID]
    assert pid != trace.root.attributes[semconv.ATTR_PID]
    order, block = findings
    users, orders = (
        f"{name} (lock_order.py:{line('lock_order.py', f'{name} = ')})"
        for name in ("users_lock", "orders_lock")
    )
    assert order["summary"] == f"{users} and {orders} are taken in both orders: a possible deadlock"
    sleep = line("in_children.py", "time.sleep(0.3)")
    assert f'at in_children.py:{sleep} in task "compress"' in block["summary"]
    where = (
        f"in child process {pid}: python in_children.py child"
        if how == "spawn"
        else f"in child process {pid}, forked from {trace.root.attributes[semconv.ATTR_PID]}"
    )
    for finding in findings:
        assert finding["details"][-1] == where
    assert {span.parent_id for span in trace.named(semconv.SPAN_FINDING)} == {process.span_id}
    (blocked,) = trace.named(semconv.SPAN_LOOP_BLOCKED)
    (compress,) = [
        s
        for s in trace.named(semconv.SPAN_TASK)
        if s.attributes[semconv.ATTR_TASK_NAME] == "compress"
    ]
    assert blocked.parent_id == compress.span_id
    # Nothing is printed from the child as it happens: its stderr is the program's.
    assert "aiotrace: LOCK ORDER" not in result.stderr

    fixed, findings, _ = diagnose(tmp_path, "in_children.py", how, "--fixed")
    assert fixed.returncode == 0, fixed.stderr
    assert findings == []
    quiet, findings, _ = diagnose(tmp_path, "in_children.py", how, flags=("--no-diagnosis",))
    assert quiet.returncode == 0, quiet.stderr
    assert findings == []


def test_the_watchdog_leaves_a_loop_inherited_from_the_parent_alone() -> None:
    """A forked child's copy of its parent's running loop says it runs, but never will."""
    import asyncio

    from aiotrace import _loops
    from aiotrace.diagnosis import Watchdog

    def blocks_seen(ignore: bool) -> list[float]:
        blocks: list[float] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            if ignore:  # as _child.after_fork sets it aside
                _loops.INHERITED[id(loop)] = loop
            watchdog = Watchdog(
                report=lambda finding: None,
                blocked=lambda start, end, *rest: blocks.append(end - start),
                block_threshold=0.05,
            )
            watchdog.start()
            try:
                await asyncio.sleep(0.15)  # the watchdog finds the loop, or not
                time.sleep(0.1)  # noqa: ASYNC251  # a block
                await asyncio.sleep(0.05)
            finally:
                watchdog.stop()
                _loops.INHERITED.pop(id(loop), None)

        asyncio.run(main())
        return blocks

    assert blocks_seen(ignore=False) != []
    assert blocks_seen(ignore=True) == []


def test_an_idle_loop_is_left_to_sleep_but_a_selector_in_a_callback_is_a_block() -> None:
    """A loop waiting for I/O is pinged only for the graph (twice a second, not 100 times).

    Idle is the loop's own wait: ``select`` called by the program (as
    ``subprocess.run`` calls it) blocks the loop, and is seen to.
    """
    import asyncio
    import selectors

    from aiotrace.diagnosis import Watchdog

    pings: list[float] = []
    blocks: list[float] = []

    class Counting(Watchdog):
        def _ping(self, loop: Any, state: Any) -> None:
            pings.append(time.monotonic())
            super()._ping(loop, state)

    async def main() -> None:
        watchdog = Counting(
            report=lambda finding: None,
            blocked=lambda start, end, *rest: blocks.append(end - start),
            block_threshold=0.05,
        )
        watchdog.start()
        try:
            await asyncio.sleep(0.2)  # found, and seen idle
            pings.clear()
            await asyncio.sleep(1.0)
            idle_pings = len(pings)
            with selectors.DefaultSelector() as selector:
                selector.select(0.2)  # a blocking wait of the program's own
            await asyncio.sleep(0.05)
        finally:
            watchdog.stop()
        assert idle_pings <= 4, pings  # one per graph_interval (0.5 s), not one per 10 ms

    asyncio.run(main())
    assert len(blocks) == 1
    assert 0.15 <= blocks[0] <= 0.5


def test_a_blocked_loop_is_a_span_with_the_blocking_line(tmp_path: Path) -> None:
    result, findings, trace = diagnose(tmp_path, "loop_blocked.py")
    assert result.returncode == EXIT_FINDINGS
    (finding,) = findings
    sleep = line("loop_blocked.py", "time.sleep(0.3)")
    assert finding["kind"] == "loop blocked"
    assert finding["summary"].startswith("the event loop was blocked once, up to ")
    assert (
        f'at loop_blocked.py:{sleep} in task "compress" (main.<locals>.compress)'
        in finding["summary"]
    )
    assert "time.sleep(0.3)" in "\n".join(finding["details"])
    (span,) = trace.named(semconv.SPAN_LOOP_BLOCKED)
    assert span.attributes[semconv.ATTR_TASK_NAME] == "compress"
    assert span.attributes[semconv.ATTR_CODE_LINE_NUMBER] == sleep
    assert "time.sleep(0.3)" in span.attributes[semconv.ATTR_BLOCKED_STACK]
    assert 0.2 <= (span.end - span.start) / 1e9 <= 0.35  # sampled while it blocked
    (task,) = [
        s
        for s in trace.named(semconv.SPAN_TASK)
        if s.attributes[semconv.ATTR_TASK_NAME] == "compress"
    ]
    assert span.parent_id == task.span_id


def test_a_loop_blocked_by_an_import_shows_the_import_line_not_importlibs_frames(
    tmp_path: Path,
) -> None:
    """As Python's tracebacks do, the import machinery's frames are left out of the stack."""
    result, findings, trace = diagnose(tmp_path, "loop_blocked.py", "--imports")
    assert result.returncode == EXIT_FINDINGS
    (finding,) = findings
    assert finding["summary"].endswith(
        'at aiotrace_slow_plugin.py:3 in task "compress" (main.<locals>.compress)'
    )
    details = "\n".join(finding["details"])
    assert "import aiotrace_slow_plugin" in details  # the line that imported, in the program
    assert "time.sleep(0.25)" in details
    assert "importlib" not in details
    (span,) = trace.named(semconv.SPAN_LOOP_BLOCKED)
    assert "importlib" not in span.attributes[semconv.ATTR_BLOCKED_STACK]


def test_a_block_inside_the_import_machinery_is_placed_at_the_line_that_imported() -> None:
    """Found on a real program: a first import searching ``sys.path``, stat by stat."""
    sample = [
        ("/app/prog.py", 12, "main"),
        ("<frozen importlib._bootstrap>", 1176, "_find_and_load"),
        ("<frozen importlib._bootstrap_external>", 147, "_path_stat"),
    ]
    assert _blocking_line(sample) == ("/app/prog.py", 12, None)
    assert _blocking_line(sample[1:]) == ("<frozen importlib._bootstrap_external>", 147, None)


def test_a_block_names_the_callers_line_or_the_callback_not_the_library(tmp_path: Path) -> None:
    """A C callback is named (it has no line); a stdlib call is placed at the line calling it."""
    result, findings, trace = diagnose(tmp_path, "loop_blocked_elsewhere.py")
    assert result.returncode == EXIT_FINDINGS
    summaries = sorted((f["summary"] for f in findings), key=lambda s: "time.sleep" in s)
    assert len(summaries) == 2, summaries
    wait = line("loop_blocked_elsewhere.py", "done.wait()  #")
    assert summaries[0].endswith(
        f'at loop_blocked_elsewhere.py:{wait} in task "waiter" (main.<locals>.wait_for_worker)'
    )
    assert summaries[1].endswith("at time.sleep in a callback")
    by_name = {
        s.attributes.get(semconv.ATTR_BLOCKED_CALLBACK, "task"): s
        for s in trace.named(semconv.SPAN_LOOP_BLOCKED)
    }
    assert set(by_name) == {"task", "time.sleep"}
    callback = by_name["time.sleep"].attributes
    assert semconv.ATTR_CODE_LINE_NUMBER not in callback  # its stack's lines are not its own
    waiter = by_name["task"].attributes
    assert waiter[semconv.ATTR_CODE_LINE_NUMBER] == wait
    assert "threading.py" in waiter[semconv.ATTR_BLOCKED_STACK].splitlines()[-2]  # still shown


def test_aiotraces_own_waits_never_run_a_time_sleep_the_program_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """blockbuster (anyio's and aiohttp's suites use it) makes ``time.sleep`` raise in an
    event loop's thread, where the watchdog reads frames after a fresh turn of the GIL:
    the diagnosis went off for the rest of anyio's suite, logging an error."""
    from aiotrace.diagnosis import _from_frames

    def forbidden(seconds: float) -> None:
        raise AssertionError("blocking call to time.sleep")

    monkeypatch.setattr(time, "sleep", forbidden)
    assert _from_frames(len) is not None


def test_a_block_in_a_librarys_line_names_the_programs_line_that_called_it() -> None:
    """The same library line blocks for every caller: the program's line says which."""
    import asyncio
    import sysconfig

    from aiotrace.diagnosis import _blocking_line, _innermost

    library = os.path.join(sysconfig.get_paths()["purelib"], "slowlib", "io.py")
    stdlib = os.path.join(sysconfig.get_paths()["stdlib"], "json", "decoder.py")
    program = os.path.join(os.path.dirname(__file__), "app.py")
    loop = os.path.join(os.path.dirname(asyncio.__file__), "events.py")
    stack = [(loop, 80, "_run"), (program, 12, "handler"), (program, 31, "fetch")]
    assert _blocking_line([*stack, (library, 120, "read"), (stdlib, 9, "decode")]) == (
        library,
        120,
        "app.py:31",
    )
    # The program's own line is named alone; a library called from no program line too.
    assert _blocking_line([*stack, (stdlib, 9, "decode")]) == (program, 31, None)
    assert _blocking_line([(loop, 80, "_run"), (library, 120, "read")]) == (library, 120, None)
    # A sample keeps the innermost frames, and the program's line above them if
    # none of them is the program's: a sync client's deep socket read.
    deep = [(program, 31, "fetch"), *[(library, n, "step") for n in range(1, 21)]]
    kept = _innermost([(program, 12, "handler"), *deep])
    assert kept == [(program, 31, "fetch"), *deep[-12:]]
    assert _blocking_line(kept) == (library, 20, "app.py:31")
    assert _innermost(deep[:5]) == deep[:5]


class _RunningLoop:
    """A loop as the watchdog asks it: running, not closed."""

    def is_closed(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True


def _watching_a_blocked_loop(thread_id: int | None) -> tuple[Any, Any]:
    """A watchdog whose loop (run by ``thread_id``) has not answered its ping for a second."""
    from aiotrace.diagnosis import Watchdog, _LoopState

    watchdog = Watchdog(report=lambda f: None, blocked=lambda *a: None, block_threshold=0.05)
    state = _LoopState(sent=time.monotonic() - 1.0, pending=True, thread_id=thread_id)
    watchdog._loops[1] = (_RunningLoop(), state)
    return watchdog, state


def test_a_stack_is_published_before_the_block_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop reports a block the moment it answers: the sample must be there by then.

    The loop may end its block and run the watchdog's ping while the
    watchdog is still sampling; it reports what it finds. Published after the
    ``blocked`` flag, the stack was empty (or the previous block's).
    """
    import threading

    from aiotrace.primitives import _base

    seen: list[tuple[bool, int]] = []

    def tasks_by_loop(loop: Any) -> None:  # called while sampling, after the stack is taken
        seen.append((state.blocked, len(state.sample)))

    monkeypatch.setattr(_base, "tasks_by_loop", tasks_by_loop)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, args=(10,))
    thread.start()
    try:
        watchdog, state = _watching_a_blocked_loop(thread.ident)
        watchdog._tick()
    finally:
        release.set()
        thread.join(10)
    assert state.blocked
    (before,) = seen
    assert before[0] is False  # not yet blocked ...
    assert before[1] > 0  # ... and the stack already there


def test_waiting_for_a_signal_the_loop_handles_is_not_a_hang(tmp_path: Path) -> None:
    """``loop.add_signal_handler`` can wake a task: an idle service is not stuck."""
    result, findings, _ = diagnose(tmp_path, "waits_for_a_signal.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert findings == []
    # The same wait with the signal ignored: nothing can end it.
    stuck, findings, _ = diagnose(tmp_path, "waits_for_a_signal.py", "--no-handler")
    assert stuck.returncode == EXIT_HANG
    assert kinds(findings) == ["hang"]
    stop = line("waits_for_a_signal.py", "stop = asyncio.Event()")
    assert f"waits for event stop (waits_for_a_signal.py:{stop})" in findings[0]["details"][0]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="per-interpreter allocators: 3.12+")
def test_a_program_running_a_subinterpreter_is_watched_without_crashing(tmp_path: Path) -> None:
    """The watchdog does not ask for every thread's frames while a subinterpreter runs.

    CPython 3.12/3.13 abort in ``sys._current_frames()`` then; the program
    died of being traced.
    """
    result, findings, _ = diagnose(tmp_path, "subinterpreter.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert findings == []


def test_while_another_interpreter_exists_no_frames_are_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other threads then count as busy (no false hang), and a block has no stack, not a crash."""
    import threading

    from aiotrace import diagnosis

    def forbidden() -> None:
        raise AssertionError("sys._current_frames() with a subinterpreter alive")

    fake = types.SimpleNamespace(list_all=lambda: [0, 1])  # the main one and another
    monkeypatch.setitem(sys.modules, "_interpreters", fake)
    monkeypatch.setattr(sys, "_current_frames", forbidden)
    assert diagnosis._current_frames() is None
    assert diagnosis._other_threads_busy()

    watchdog, state = _watching_a_blocked_loop(threading.get_ident())
    watchdog._tick()
    assert state.blocked
    assert state.sample == []


def test_every_block_over_the_threshold_is_seen_and_timed_within_an_interval() -> None:
    """Blocks just over the threshold, each starting anywhere between two pings.

    A block begins between the loop's last answer and the next ping; timed
    from the ping alone, each looked up to a ping interval shorter, and one
    under threshold + interval was not seen at all. The ones under the
    threshold must stay unseen.
    """
    import asyncio

    from aiotrace.diagnosis import Watchdog

    blocks: list[float] = []
    watchdog = Watchdog(
        report=lambda finding: None,
        blocked=lambda start, end, *rest: blocks.append(end - start),
        block_threshold=0.1,
    )

    actual: list[float] = []

    async def program() -> None:
        for seconds in (0.13, 0.07, 0.13, 0.09, 0.13, 0.13, 0.13):
            await asyncio.sleep(0.013)  # a block starts anywhere between two pings
            start = time.perf_counter()
            time.sleep(seconds)  # noqa: ASYNC251  # the block under test
            actual.append(time.perf_counter() - start)  # a loaded machine oversleeps

    async def main() -> None:
        watchdog.start()
        await asyncio.sleep(0.1)  # the watchdog finds the loop
        await asyncio.create_task(program())

    try:
        asyncio.run(main())
    finally:
        watchdog.stop()
    # Each block as long as it really was: those over 0.1 s seen, each timed to
    # within 15 ms below (where it began between two pings) to 20 ms above;
    # those under it (0.07 s and 0.09 s, unless the sleep overran) not seen.
    # Within 5 ms below to 10 ms above the threshold, either.
    unmatched = list(blocks)
    for seconds in actual:
        if seconds <= 0.095:
            continue
        if unmatched and seconds - 0.015 <= unmatched[0] <= seconds + 0.02:
            unmatched.pop(0)
            continue
        assert seconds < 0.11, f"a {seconds:.3f} s block was not seen as such: {blocks}"
    assert unmatched == [], (blocks, actual)
    assert len(blocks) >= 5, (blocks, actual)


def test_the_watchdog_asks_a_loop_past_the_programs_own_replacements() -> None:
    """A test that patches ``loop.is_closed`` counts the calls and picks the answer.

    janus's suite asserts its patched ``is_closed`` is called exactly once;
    the watchdog's calls, many a second, were counted too. Told "closed",
    the watchdog also stopped watching a loop still running.
    """
    import asyncio
    from unittest import mock

    from aiotrace.diagnosis import Watchdog

    blocks: list[float] = []
    watchdog = Watchdog(
        report=lambda finding: None,
        blocked=lambda start, end, *rest: blocks.append(end - start),
        block_threshold=0.05,
    )

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        watchdog.start()
        with (
            mock.patch.object(loop, "is_closed", return_value=True) as is_closed,
            mock.patch.object(loop, "is_running", wraps=loop.is_running) as is_running,
            mock.patch.object(
                loop, "call_soon_threadsafe", wraps=loop.call_soon_threadsafe
            ) as call_soon_threadsafe,
        ):
            await asyncio.sleep(0.2)  # the watchdog finds the loop and pings it
            time.sleep(0.1)  # noqa: ASYNC251  # a block it must still see
            await asyncio.sleep(0.02)
            calls = [is_closed.call_count, is_running.call_count]
            return [*calls, call_soon_threadsafe.call_count]

    try:
        counts = asyncio.run(main())
    finally:
        watchdog.stop()
    assert counts == [0, 0, 0]
    assert max(blocks, default=0.0) >= 0.09, blocks  # still watched, though "closed"


def test_exceptions_nothing_retrieved_name_the_task_the_exception_and_the_line(
    tmp_path: Path,
) -> None:
    """A task dropped (collected as it ends), one kept to the end in a list, a future
    in a dict, one given an exception raised elsewhere: each ended raising, and nothing
    read it (the twin reads them). A future's finding says where it was given it."""
    result, findings, trace = diagnose(tmp_path, "unread.py")
    assert result.returncode == EXIT_FINDINGS, result.stderr
    assert result.stdout.strip() == "done"
    assert kinds(findings) == ["exception never retrieved"] * 4
    refresh = line("unread.py", "REFRESH_RAISES")
    audit = line("unread.py", "AUDIT_RAISES")
    future = line("unread.py", "replies = ")
    parsed = line("unread.py", "parsed = ")
    assert sorted(f["summary"] for f in findings) == [
        f"future parsed (unread.py:{parsed}) got ValueError: invalid literal for int() with "
        f"base 10: 'twelve' (raised at unread.py:{line('unread.py', 'PARSE_RAISES')} in parse), "
        f"set at unread.py:{line('unread.py', 'PARSE_SETS')} in parse, "  # (a callback's: no task)
        "and nothing retrieved it",
        f"future replies (unread.py:{future}) got TimeoutError: no reply, set at "
        f'unread.py:{line("unread.py", "REPLY_SETS")} in main by task "Task-1", '
        "and nothing retrieved it",
        f'task "auditor" (audit) raised PermissionError: audit log is read-only at '
        f"unread.py:{audit} in audit, and nothing retrieved it",
        f'task "refresher" (refresh) raised ConnectionError: backend down at '
        f"unread.py:{refresh} in refresh, and nothing retrieved it",
    ]
    for finding in findings:  # collected during the run, or still there at its end
        assert finding["details"][0].startswith("nothing awaited it or read its exception() ")
    # Each task's finding links to its span (the span records the exception too)
    tasks = {
        s.attributes[semconv.ATTR_TASK_NAME]: s.span_id for s in trace.named(semconv.SPAN_TASK)
    }
    spans = trace.named(semconv.SPAN_FINDING)
    assert len(spans) == 4
    for span in spans:
        summary = str(span.attributes[semconv.ATTR_FINDING_SUMMARY])
        named = [tasks[name] for name in ("refresher", "auditor") if f'"{name}"' in summary]
        assert [link[1] for link in span.links] == named


def test_an_exception_still_unread_at_the_end_is_found_then() -> None:
    """A task kept referenced: asyncio reports it when it is collected, maybe never."""
    from aiotrace.diagnosis import UNRETRIEVED, Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    diagnoser = Diagnoser(config, None)
    diagnoser.start()
    kept: list[asyncio.Task[None]] = []

    async def fails() -> None:
        raise KeyError("kept-unread")

    async def main() -> None:
        kept.append(asyncio.create_task(fails(), name="kept-unread"))
        read = asyncio.create_task(fails(), name="kept-read")
        kept.append(read)
        await asyncio.sleep(0)
        read.exception()

    try:
        with capture_spans():  # tasks are known as they end when traced
            asyncio.run(main())
        diagnoser._unretrieved_at_exit()  # what finish() does at exit (ended here unreported)
    finally:
        found = diagnoser.finish(at_exit=False)
    ours = [f for f in found if f.kind == UNRETRIEVED and '"kept-' in f.summary]
    assert [f.summary.split(" at ")[0] for f in ours] == [
        f"task \"kept-unread\" ({fails.__qualname__}) raised KeyError: 'kept-unread'"
    ]
    assert ours[0].details[0].startswith("nothing awaited it or read its exception() by the end")
    assert kept[0]._log_traceback  # type: ignore[attr-defined]  # asyncio's own: still unread
    kept[0].exception()  # read now, not reported by asyncio when collected


def _installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str
) -> types.ModuleType:
    """``source`` imported as ``name`` from a ``site-packages`` folder: a library's code."""
    site_packages = tmp_path / "lib" / "python3.99" / "site-packages"
    site_packages.mkdir(parents=True)
    (site_packages / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site_packages))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


SCOPED_LIBRARY = """
import asyncio


async def scoped():  # cancels by scopes, as anyio does: the scope's end takes it
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "scope ended"
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is 3.11+")
def test_a_task_that_swallows_its_cancellation_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task cancelled that returns caught its CancelledError and went on: whatever
    cancelled it takes it to have stopped. One that raises something else instead is
    reported as raising that (a clean-up that fails loses the cancellation as surely,
    and its error is the thing to read). Its twins end cancelled,
    were cancelled once done, or went on with asyncio's own say-so (``asyncio.timeout()``,
    a ``TaskGroup`` cancelling its parent, ``uncancel()``): none is a finding. An
    ``asyncio.timeout()`` whose body swallows its cancellation raises no TimeoutError:
    a finding at its line (the task, uncancelled by the timeout, is not one). A
    library's coroutine is its own business (anyio catches cancellations at the end of
    its cancel scopes, in its own tasks)."""
    from aiotrace.diagnosis import SWALLOWED, Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    scopedlib = _installed(tmp_path, monkeypatch, "scopedlib", SCOPED_LIBRARY)

    async def swallows() -> str:
        try:  # noqa: SIM105  # the bug, spelt as programs spell it
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass
        return "went on"

    async def raises_instead() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise KeyError("not a cancellation") from None

    async def reraises() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise

    async def uncancels() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]

    async def times_out() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.001):  # type: ignore[attr-defined]
                await asyncio.sleep(10)

    async def timeout_swallowed() -> None:
        async with asyncio.timeout(0.001):  # type: ignore[attr-defined]  # TIMEOUT_SWALLOWED
            try:  # noqa: SIM105  # the bug, spelt as programs spell it
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass

    async def group_fails() -> None:
        async def fail() -> None:
            raise KeyError("child")

        with contextlib.suppress(BaseException):
            async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
                group.create_task(fail())
                await asyncio.sleep(10)  # this task is cancelled, and uncancelled

    async def main() -> None:
        done = asyncio.create_task(asyncio.sleep(0), name="done-first")
        await done
        tasks = [
            asyncio.create_task(swallows(), name="swallows"),  # SWALLOWS_CREATED
            asyncio.create_task(raises_instead(), name="raises-instead"),
            asyncio.create_task(reraises(), name="reraises"),
            asyncio.create_task(uncancels(), name="uncancels"),
            asyncio.create_task(scopedlib.scoped(), name="a-librarys"),
        ]
        others = [
            asyncio.create_task(times_out(), name="times-out"),
            asyncio.create_task(timeout_swallowed(), name="timeout-swallowed"),
            asyncio.create_task(group_fails(), name="group-fails"),
        ]
        await asyncio.sleep(0.01)
        for task in [*tasks, done]:
            task.cancel()
        await asyncio.gather(*tasks, *others, return_exceptions=True)

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    diagnoser = Diagnoser(config, None)
    diagnoser.start()
    try:
        with capture_spans():  # tasks are known as they end when traced
            asyncio.run(main())
    finally:
        found = [f for f in diagnoser.finish(at_exit=False) if f.kind == SWALLOWED]
    timeouts = [f for f in found if f.summary.startswith("asyncio.timeout()")]
    found = [f for f in found if f not in timeouts]
    assert [f.summary.split(" in ")[0] for f in timeouts] == [
        f"asyncio.timeout() at test_diagnosis.py:{line_of('TIMEOUT_SWALLOWED')}"
    ]
    assert timeouts[0].summary.endswith(
        ' in task "timeout-swallowed" expired, and its body went on:'
        " it swallowed the CancelledError"
    )
    assert [f.summary for f in found] == [
        f'task "swallows" ({swallows.__qualname__}) was cancelled, and returned instead of'
        " ending cancelled: it swallowed the CancelledError",
    ]
    assert (
        found[0]
        .details[0]
        .startswith(f"created at test_diagnosis.py:{line_of('SWALLOWS_CREATED')} in ")
    )
    assert all(len(f.spans) == 1 for f in found)  # linked to the task's span


@pytest.mark.skipif(sys.version_info < (3, 12), reason="wait_for is a timeout from 3.12")
def test_a_wait_for_whose_awaitable_swallows_its_cancellation_is_found_at_its_call() -> None:
    """``wait_for`` returns what its awaitable returned after swallowing the timeout's
    cancellation: no TimeoutError. Found at the program's call, not asyncio's line."""
    from aiotrace.diagnosis import SWALLOWED, Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    async def stale() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "stale"
        return "fresh"

    async def main() -> str:
        return await asyncio.wait_for(stale(), 0.001)  # WAIT_FOR_SWALLOWED

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    diagnoser = Diagnoser(config, None)
    diagnoser.start()
    try:
        with capture_spans():
            assert asyncio.run(main()) == "stale"
    finally:
        found = [f for f in diagnoser.finish(at_exit=False) if f.kind == SWALLOWED]
    assert [f.summary.split(" in ")[0] for f in found] == [
        f"asyncio.wait_for() at test_diagnosis.py:{line_of('WAIT_FOR_SWALLOWED')}"
    ]
    assert "expired, and what it awaited went on" in found[0].summary


def _free_the_last(held: list[Any]) -> None:
    """Drop the last task; it is freed now, or (another thread's look at the tasks
    holding it a moment) soon after: asyncio reports it then (and logs it)."""
    freed = weakref.ref(held.pop())
    for _ in range(200):
        if freed() is None:
            return
        gc.collect()
        time.sleep(0.01)
    raise AssertionError("the task was not freed")


@pytest.mark.pristine  # untraced tasks: under pytest --aiotrace every task is traced
def test_an_untraced_tasks_unread_exception_is_found_while_its_loop_is_open() -> None:
    """Untraced, when a task failed is not known: one freed while its loop runs is the
    diagnosis's, one whose loop is closed is not. A message whose str() fails is named as
    a traceback names it."""
    from aiotrace.diagnosis import UNRETRIEVED, Diagnoser, DiagnosisConfig

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str()")

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    held: list[asyncio.Task[None]] = []

    async def fails() -> None:
        raise Unprintable

    async def fail(name: str, free: bool) -> None:
        held.append(asyncio.create_task(fails(), name=name))
        await asyncio.sleep(0)
        if free:
            _free_the_last(held)

    diagnoser = Diagnoser(config, None)
    diagnoser.start()
    try:
        asyncio.run(fail("loop-closed", free=False))
        _free_the_last(held)
        asyncio.run(fail("loop-open", free=True))
    finally:
        found = diagnoser.finish(at_exit=False)
    assert [f.summary.split(" at ")[0] for f in found if f.kind == UNRETRIEVED] == [
        f'task "loop-open" ({fails.__qualname__}) raised Unprintable: <exception str() failed>'
    ]


def test_an_unread_exception_is_found_only_by_the_diagnosis_it_happened_under() -> None:
    """A task that failed before the diagnosis started (an earlier test's, under pytest),
    collected during it, is not its finding; one that failed during it is."""
    from aiotrace.diagnosis import UNRETRIEVED, Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    held: list[asyncio.Task[None]] = []

    async def fails() -> None:
        raise KeyError("unread")

    def failed_task(name: str) -> None:
        async def main() -> None:
            held.append(asyncio.create_task(fails(), name=name))
            await asyncio.sleep(0)

        asyncio.run(main())

    with capture_spans():
        failed_task("before")
        diagnoser = Diagnoser(config, None)
        diagnoser.start()
        try:
            _free_the_last(held)
            failed_task("during")
            _free_the_last(held)
        finally:
            found = diagnoser.finish(at_exit=False)
    names = [f.summary.split('"')[1] for f in found if f.kind == UNRETRIEVED]
    assert names == ["during"]


def test_a_pending_futures_leak_names_the_task_that_made_it() -> None:
    from aiotrace import _leaks
    from aiotrace.testing import capture_spans

    kept: list[asyncio.Future[None]] = []

    async def make() -> None:
        kept.append(asyncio.get_running_loop().create_future())  # MADE_BY_MAKER

    async def main() -> None:
        await asyncio.create_task(make(), name="maker")

    with capture_spans():
        since = time.perf_counter_ns()
        asyncio.run(main())
        found = [leak for leak in _leaks.find(since) if leak.kind == _leaks.FUTURE_UNRESOLVED]
    assert [leak.detail for leak in found] == [
        f'created at test_diagnosis.py:{line_of("MADE_BY_MAKER")} by task "maker", '
        "still pending, no task waiting"
    ]


def test_a_task_that_ended_raising_is_not_taken_for_a_later_one_given_its_id() -> None:
    """The entry a traced task leaves as it ends raising outlives it when its exception
    was read: a later task at the same address, whose coroutine may be at the same
    address too (as a test suite's repeated tasks often are), is told apart by its
    exception and its name."""
    from aiotrace.primitives import tasks

    async def fails() -> None:
        raise KeyError("later")

    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(fails(), name="later")
        await asyncio.sleep(0)
        return task

    task = asyncio.run(main())
    coro, exc = id(task.get_coro()), id(task._exception)  # type: ignore[attr-defined]
    try:
        tasks.ENDED_RAISING[id(task)] = (1, 2, 3, 1, coro, exc, "later")
        assert tasks.ended_raising(task) == (1, 2, 3, 1)
        for stale in ((coro + 1, exc, "later"), (coro, exc + 1, "later"), (coro, exc, "earlier")):
            tasks.ENDED_RAISING[id(task)] = (1, 2, 3, 1, *stale)
            assert tasks.ended_raising(task) is None, stale
    finally:
        tasks.ENDED_RAISING.pop(id(task), None)
        task.exception()


def test_a_futures_unread_exception_is_the_diagnosis_it_was_set_under() -> None:
    """A traced future is told by when it was given its exception, not by its loop: one
    given it before the diagnosis started is not its finding; one given it during is,
    though its loop closed before it was freed (as one kept by its traceback's reference
    cycle is, at a collection after the program's loop closed)."""
    from aiotrace.diagnosis import UNRETRIEVED, Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    config = DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    held: list[asyncio.Future[None]] = []

    def given(loop: asyncio.AbstractEventLoop, name: str) -> None:
        future = loop.create_future()  # GIVEN_MADE
        future.set_exception(KeyError(name))  # GIVEN_SET
        held.append(future)

    with capture_spans():
        loop = asyncio.new_event_loop()
        given(loop, "before")
        diagnoser = Diagnoser(config, None)
        diagnoser.start()
        try:
            given(loop, "during")
            loop.close()
            while held:
                _free_the_last(held)
            diagnoser.collect()
        finally:
            found = diagnoser.finish(at_exit=False)
    assert [f.summary for f in found if f.kind == UNRETRIEVED] == [
        f"future future (test_diagnosis.py:{line_of('GIVEN_MADE')}) got KeyError: 'during', "
        f"set at test_diagnosis.py:{line_of('GIVEN_SET')} in {given.__qualname__}, "
        "and nothing retrieved it"
    ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_gather_its_parents_unread_exceptions() -> None:
    """The parent's diagnosis, copied by the fork, is never collected in the child: its
    reports would pile up there, each holding its traceback's frames."""
    from aiotrace import diagnosis

    config = diagnosis.DiagnosisConfig(
        deadlocks=False, block_threshold=None, dump_signals=False, lock_order=False
    )
    diagnoser = diagnosis.Diagnoser(config, None)
    diagnoser.start()
    try:
        assert diagnosis._UNRETRIEVED_LISTENERS
        pid = os.fork()
        if pid == 0:  # the child: its status says whether it still has the parent's listener
            os._exit(1 if diagnosis._UNRETRIEVED_LISTENERS else 0)
        _, status = os.waitpid(pid, 0)
    finally:
        diagnoser.finish(at_exit=False)
    assert os.waitstatus_to_exitcode(status) == 0


def test_findings_lead_the_report_most_severe_first(tmp_path: Path) -> None:
    result, _, _ = diagnose(tmp_path, "deadlock_locks.py")
    report = result.stderr[result.stderr.index("─ aiotrace:") :]
    assert report.index("Findings (2), most severe first") < report.index("Primitives, by total")
    assert report.index("DEADLOCK:") < report.index("HANG:")
    again = aiotrace("report", "t.json", cwd=tmp_path)  # rebuilt from the spans
    assert again.stdout.index("DEADLOCK:") < again.stdout.index("HANG:")


def test_sigusr1_dumps_every_task_and_its_wait(tmp_path: Path) -> None:
    program = tmp_path / "waits.py"
    program.write_text(
        "import asyncio\n\n"
        "async def main():\n"
        "    gate = asyncio.Event()\n"
        "    async def fail(): raise RuntimeError('lost')\n"
        "    failed = asyncio.create_task(fail(), name='worker')\n"
        "    await asyncio.sleep(0)\n"
        "    print('ready', flush=True)\n"
        "    await gate.wait()\n\n"
        "asyncio.run(main())\n"
    )
    process = started_and_ready(
        [sys.executable, "-m", "aiotrace", "run", "--no-trace-file", "-q", str(program)], tmp_path
    )
    process.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert "aiotrace: SIGUSR1: 1 pending task\n" in stderr
    assert 'task "Task-1" (main) waits for event gate (waits.py:4)' in stderr
    assert "waits.py:9 in main" in stderr
    assert (  # a task that failed, its exception unread: a likely culprit
        'task "worker" (main.<locals>.fail) ended raising RuntimeError: lost (waits.py:5), '
        "and nothing has retrieved it"
    ) in stderr
    assert "aiotrace: interrupted (Ctrl-C): 1 pending task\n" in stderr


FORK_SIGNALS = """\
import asyncio
import os
import signal
import sys
import threading
import time


async def main():
    pid = os.fork()
    if pid == 0:  # the child, forked from inside the running loop
        os.kill(os.getpid(), signal.SIGUSR1)  # its default action: the end of the child
        time.sleep(2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("ended by SIGUSR1" if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGUSR1
          else f"status {status}")


asyncio.run(main())
"""


@contextlib.contextmanager
def _diagnosed(futures: bool = False, **config: Any) -> Iterator[Any]:
    """aiotrace instrumented (primitives only, unless ``futures``: tasks and futures too)
    and a diagnosis running, as ``aiotrace run`` has them; the watchdog, if any, forgets
    finished holds at every graph check."""
    import aiotrace
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    aiotrace.instrument(tasks=futures, futures=futures)
    diagnoser = Diagnoser(DiagnosisConfig(block_threshold=None, dump_signals=False, **config), None)
    try:
        diagnoser.start()
        if diagnoser.watchdog is not None:
            diagnoser.watchdog.forget_interval = 0.0  # every half second, not every five
        yield diagnoser
    finally:
        diagnoser.finish(at_exit=False)
        aiotrace.uninstrument()


def test_a_holder_is_sampled_only_while_others_wait_for_what_it_holds() -> None:
    """One sample per holder that others queue for, at the line it is suspended at;
    nothing for a hold nobody waits for, or once it is released."""
    import asyncio

    from aiotrace.primitives import _lock_order

    def held_at(prim: Any) -> dict[int, int]:
        counts = prim._aiotrace_stats.held_at or {}
        return {line: n for (code, line), n in counts.items() if code.co_name == "hold"}

    async def main() -> list[dict[int, int]]:
        lock, pool = asyncio.Lock(), asyncio.Semaphore(1)
        go = asyncio.Event()

        async def hold(prim: Any) -> None:
            async with prim:
                await go.wait()  # HOLDING

        async def want(prim: Any) -> None:
            async with prim:
                pass

        holders = [asyncio.create_task(hold(p)) for p in (lock, pool)]
        await asyncio.sleep(0)
        _lock_order.sample_holders(threads_running)  # held, nobody waiting
        seen = [held_at(lock), held_at(pool)]
        wanting = [asyncio.create_task(want(p)) for p in (lock, pool)]
        await asyncio.sleep(0)
        _lock_order.sample_holders(threads_running)
        _lock_order.sample_holders(threads_running)
        seen += [held_at(lock), held_at(pool)]
        go.set()
        await asyncio.gather(*holders, *wanting)
        _lock_order.sample_holders(threads_running)  # released
        return [*seen, held_at(lock), held_at(pool)]

    with _diagnosed():
        seen = asyncio.run(main())
    here = marker_line(Path(__file__).read_text(), "HOLDING")
    assert seen == [{}, {}, {here: 2}, {here: 2}, {here: 2}, {here: 2}]


def _sampled_while_waited_for(
    make: Callable[[], Any], hold: Callable[[Any, asyncio.Event], Awaitable[None]]
) -> dict[tuple[str, int], int]:
    """Where one sample (``sample_holders``) finds ``hold(prim, go)`` holding ``make()``'s
    primitive, while another task waits for it: (function, line) -> samples."""
    from aiotrace.primitives import _lock_order

    async def main() -> dict[tuple[str, int], int]:
        prim, go = make(), asyncio.Event()

        async def want() -> None:
            async with prim:
                pass

        tasks = [asyncio.create_task(hold(prim, go))]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(want()))
        await asyncio.sleep(0)
        _lock_order.sample_holders(threads_running)
        counts = dict(prim._aiotrace_stats.held_at or {})
        go.set()
        await asyncio.gather(*tasks)
        return {(code.co_name, line): n for (code, line), n in counts.items()}

    with _diagnosed():
        return asyncio.run(main())


def test_a_holder_inside_an_asynccontextmanager_is_sampled_where_its_task_is() -> None:
    """A lock an ``@asynccontextmanager`` took is held by its generator, suspended at its
    ``yield`` for as long as the ``async with`` body runs: every sample read that
    ``yield``. It is the body's line that says what the holder is doing."""

    async def hold(lock: Any, go: asyncio.Event) -> None:
        async with _holding(lock):
            await go.wait()  # HOLDING_THROUGH_A_GENERATOR

    got = _sampled_while_waited_for(asyncio.Lock, hold)
    assert got == {("hold", line_of("HOLDING_THROUGH_A_GENERATOR")): 1}


def test_a_holder_whose_helper_returned_holding_is_sampled_where_its_caller_is() -> None:
    """A pool's ``acquire()`` takes a permit and returns holding it: its finished frame
    sat at its ``return`` in every sample. From 3.12 that frame names the caller it
    returned to, whose line is where the holder is; 3.10 and 3.11 name none."""

    async def take(sem: Any) -> None:
        await sem.acquire()
        return  # RETURNS_HOLDING

    async def hold(sem: Any, go: asyncio.Event) -> None:
        await take(sem)
        await go.wait()  # THE_CALLER_WAITS
        sem.release()

    got = set(_sampled_while_waited_for(lambda: asyncio.Semaphore(1), hold))
    if sys.version_info >= (3, 12):
        assert got == {("hold", line_of("THE_CALLER_WAITS"))}
    else:
        assert got == {("take", line_of("RETURNS_HOLDING"))}


def test_a_generators_hold_is_kept_while_its_task_is_inside_and_forgotten_after() -> None:
    """Lock-order checking forgets the holds of frames that run nowhere (twice missed).
    A generator suspended at its ``yield`` is in no await chain, but runs for the task
    inside its ``async with``: its hold is kept, or a lock taken after the watchdog's
    second look would not be seen nested in it. A context entered and never left, by
    a task that has ended, is forgotten as a finished frame's hold is."""
    import asyncio

    from aiotrace import diagnosis
    from aiotrace.primitives import _lock_order

    def forget() -> None:
        for _ in range(2):
            diagnosis._forget_finished_holds(list(asyncio.all_tasks()))

    async def main() -> list[object]:
        lock = asyncio.Lock()  # a line each: lock order is per line
        second = asyncio.Lock()
        other = asyncio.Lock()
        abandoned, go = asyncio.Lock(), asyncio.Event()

        async def hold() -> None:
            async with _holding(lock), _holding(second):  # one frame enters both
                await go.wait()
                async with other:
                    pass

        async def enter_and_leave_it() -> None:
            await _holding(abandoned).__aenter__()  # never left

        task = asyncio.create_task(hold())
        await asyncio.create_task(enter_and_leave_it())
        await asyncio.sleep(0)
        entered = len(_lock_order.ENTERED_BY)
        forget()
        held = list(_lock_order.HELD.values())
        seen: list[object] = [entered, lock in held, second in held, len(_lock_order.ENTERED)]
        go.set()
        await task
        return [*seen, len(_lock_order.ENTERED_BY), len(_lock_order.ENTERED)]

    with _diagnosed():
        seen = asyncio.run(main())
        nested = sorted(
            (edge.first.display_name().split()[0], edge.second.display_name().split()[0])
            for edge in _lock_order._EDGES.values()
        )
    assert seen == [3, True, True, 1, 0, 0]
    assert nested == [("lock", "other"), ("lock", "second"), ("second", "other")]


def test_contexts_whose_entering_failed_are_forgotten_without_a_watchdog() -> None:
    """A generator that raises before its ``yield`` (a connection that cannot be made)
    is entered but never left: where no watchdog forgets it (a leak watcher alone, as
    ``pytest --aiotrace`` without the diagnosis), each would be kept, and its caller's
    frame with it, for as long as the run."""
    from aiotrace import _leaks
    from aiotrace.primitives import _lock_order

    @contextlib.asynccontextmanager
    async def connect() -> Any:
        raise ConnectionError("refused")
        yield  # pragma: no cover

    async def request() -> None:
        with contextlib.suppress(ConnectionError):
            async with connect():
                pass  # pragma: no cover

    async def main() -> int:
        for _ in range(5000):
            await request()
        return len(_lock_order.ENTERED_BY)

    _leaks.watch()
    try:
        kept = asyncio.run(main())
    finally:
        _leaks.unwatch()
    assert kept <= 1024


def test_sampling_holders_is_not_upset_by_the_program_changing_what_is_held() -> None:
    """The watchdog's thread reads what the program's thread changes. Building a
    tuple per held item could start a collection, whose finalisers let the program's
    thread run: "dictionary changed size during iteration", an internal error, and
    no more sampling. Here a finaliser changes it as that thread would."""
    import gc

    from aiotrace.primitives import _lock_order

    held = _lock_order.HELD
    keys = [object() for _ in range(50)]

    class Cycle:
        """Garbage whose finaliser takes a lock (as the program's thread would, let
        run meanwhile) and leaves garbage of its kind for the next collection."""

        left = 200

        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            key = object()
            keys.append(key)
            held[key] = object()
            if Cycle.left:
                Cycle.left -= 1
                Cycle()

    thresholds = gc.get_threshold()
    try:
        for key in keys:
            held[key] = object()
        gc.collect()
        gc.set_threshold(1)  # each allocation of a tracked object collects
        Cycle()
        for _ in range(20):
            _lock_order.sample_holders(threads_running)
    finally:
        Cycle.left = 0  # the chain ends, and its last finaliser runs now, not in a later test
        gc.set_threshold(*thresholds)
        gc.collect()
        for key in keys:
            held.pop(key, None)
    gc.collect()
    assert all(key not in held for key in keys)  # nothing of this test's left behind


def test_what_a_finished_task_left_held_is_not_kept_alive_by_the_diagnosis() -> None:
    """Lock-order checking notes each hold's frame; a coroutine that finished holding
    a lock left it there for the whole run, and the frame kept its locals alive. The
    watchdog forgets such frames, and the program's objects go when the program
    drops them."""
    import asyncio
    import gc
    import weakref

    from aiotrace.primitives import _lock_order

    class Payload:
        pass

    refs: list[weakref.ref[Any]] = []

    async def leaks() -> None:
        lock = asyncio.Lock()
        payload = Payload()
        refs.extend((weakref.ref(lock), weakref.ref(payload)))
        await lock.acquire()  # and returns holding it

    async def main() -> bool:
        await asyncio.create_task(leaks())
        deadline = time.monotonic() + 10
        while any(ref() is not None for ref in refs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            gc.collect()
        return all(ref() is None for ref in refs)

    with _diagnosed() as diagnoser:
        assert _lock_order.LOCK_ORDER[0]
        assert diagnoser.watchdog is not None
        assert asyncio.run(main())


def test_the_watchdog_finds_every_loop_that_has_tasks() -> None:
    """The watchdog looks for loops through their tasks, read in C; a task of another
    class (Python's own Task) is read one by one. A closed loop is not listed."""
    import asyncio
    import threading

    from aiotrace._loops import task_loops

    found: list[bool] = []
    other = asyncio.new_event_loop()
    started, stop = threading.Event(), threading.Event()

    def python_tasks() -> None:  # a loop whose tasks are asyncio's pure-Python Task
        other.set_task_factory(lambda loop, coro: asyncio.tasks._PyTask(coro, loop=loop))  # type: ignore[attr-defined]

        async def waits() -> None:
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.005)

        other.run_until_complete(waits())

    thread = threading.Thread(target=python_tasks)
    thread.start()
    started.wait(10)

    async def main() -> None:
        loops = task_loops()
        found.extend([asyncio.get_running_loop() in loops, other in loops])

    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join(10)
    other.close()
    assert found == [True, True]
    assert other not in task_loops()


def test_graph_checks_that_cost_more_come_further_apart() -> None:
    """The graph checks run on the program's loop; in a program with many pending
    tasks each costs more (37.5 ms at 10,000 tasks), and at a fixed interval they
    took a growing share of its time. A check's cost puts the next one off, so that
    they take at most ``GRAPH_SHARE`` of it."""
    import asyncio

    from aiotrace import diagnosis

    checks: list[float] = []

    async def main() -> None:
        sleeper = asyncio.create_task(asyncio.sleep(10))  # a pending task: a graph to build
        await asyncio.sleep(2.0)
        sleeper.cancel()

    with _diagnosed() as diagnoser:
        watchdog = diagnoser.watchdog
        assert watchdog is not None
        check = watchdog._check_graph

        def costly(*args: Any) -> None:  # this watchdog's only (a traced session has one too)
            checks.append(time.monotonic())
            time.sleep(0.03)  # as 8,000 tasks or so would cost
            check(*args)

        watchdog._check_graph = costly  # type: ignore[method-assign]
        watchdog.graph_interval = 0.1  # every tenth of a second, were it cheap
        asyncio.run(main())
    gaps = [later - earlier for earlier, later in itertools.pairwise(checks)]
    assert 1 <= len(checks) <= 2, gaps  # 0.03 s / 0.02: 1.5 s apart, not 0.1 s
    assert all(gap >= 1.5 for gap in gaps), gaps
    assert diagnosis.GRAPH_SHARE == 0.02


def test_samples_of_where_holders_are_that_cost_more_come_further_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sampling holds the GIL the program's thread wants: every tick (10 ms) while
    cheap, and with thousands of holds at once at most ``GRAPH_SHARE`` of the time."""
    import asyncio

    from aiotrace.primitives import _lock_order

    samples: list[tuple[threading.Thread, float]] = []

    def costly(threads_running: object) -> int:
        samples.append((threading.current_thread(), time.monotonic()))
        time.sleep(0.01)  # as 13,000 contended holds or so would cost
        return 0

    async def main() -> None:
        lock = asyncio.Lock()
        async with lock:  # something held: there is something to sample
            await asyncio.sleep(1.0)

    monkeypatch.setattr(_lock_order, "sample_holders", costly)
    with _diagnosed() as diagnoser:
        assert diagnoser.watchdog is not None
        ours = diagnoser.watchdog.thread  # (a traced session's watchdog samples too)
        asyncio.run(main())
    times = [at for thread, at in samples if thread is ours]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert 1 <= len(times) <= 3, gaps  # 0.01 s / 0.02: 0.5 s apart, not 0.01 s
    assert all(gap >= 0.5 for gap in gaps), gaps


@pytest.mark.pristine  # turns lock-order checking off: a traced session's too
def test_a_failing_clean_up_of_lock_order_checking_never_reaches_the_program(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clean-up runs in a callback on the program's loop: a bug in it is counted,
    and lock-order checking stops; the loop's exception handler never hears of it."""
    import asyncio

    import aiotrace
    from aiotrace.primitives import _lock_order

    def broken(running: set[int]) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(_lock_order, "forget_finished", broken)
    handled: list[dict[str, Any]] = []

    async def main() -> bool:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: handled.append(context))
        lock = asyncio.Lock()
        await lock.acquire()  # something held: the clean-up has work
        deadline = time.monotonic() + 10
        while _lock_order.LOCK_ORDER[0] and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        lock.release()
        return _lock_order.LOCK_ORDER[0]

    with _diagnosed() as diagnoser:
        assert diagnoser.watchdog is not None
        errors = aiotrace.stats().internal_errors
        still_checking = asyncio.run(main())
        counted = aiotrace.stats().internal_errors - errors
    assert handled == []
    assert not still_checking
    assert counted == 1


def test_a_wait_on_each_kind_of_primitive_is_named_with_its_role() -> None:
    """The wait-for graph tells what each task waits on: a lock, a semaphore, an event,
    a condition, a queue's get, put or join, a barrier (3.11+)."""
    import asyncio

    import aiotrace
    from aiotrace.diagnosis import snapshot

    async def main() -> list[str]:
        lock = aiotrace.name(asyncio.Lock(), "gate")
        sem = aiotrace.name(asyncio.Semaphore(1), "pool")
        event = aiotrace.name(asyncio.Event(), "ready")
        cond = aiotrace.name(asyncio.Condition(), "changed")
        inbox: asyncio.Queue[int] = aiotrace.name(asyncio.Queue(), "inbox")
        outbox: asyncio.Queue[int] = aiotrace.name(asyncio.Queue(1), "outbox")
        jobs: asyncio.Queue[int] = aiotrace.name(asyncio.Queue(), "jobs")
        await lock.acquire()  # main-takes-gate
        await sem.acquire()  # main-takes-pool
        outbox.put_nowait(0)
        jobs.put_nowait(0)

        async def notified() -> None:
            async with cond:
                await cond.wait()

        waits: dict[str, Any] = {
            "locker": lock.acquire(),
            "permit": sem.acquire(),
            "waiter": event.wait(),
            "notified": notified(),
            "getter": inbox.get(),
            "putter": outbox.put(1),
            "joiner": jobs.join(),
        }
        if sys.version_info >= (3, 11):
            waits["party"] = aiotrace.name(asyncio.Barrier(2), "start").wait()  # type: ignore[attr-defined]
        tasks = [asyncio.create_task(coro, name=name) for name, coro in waits.items()]
        await asyncio.sleep(0.01)
        main_task = asyncio.current_task()
        assert main_task is not None
        main_task.set_name("main")
        graph = snapshot([*tasks, main_task])  # main: what holds the lock and the permit
        lines = [graph.describe_wait(task) for task in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return lines

    with _diagnosed(deadlocks=False, lock_order=False):
        lines = asyncio.run(main())
    main = "test_a_wait_on_each_kind_of_primitive_is_named_with_its_role.<locals>.main"
    here = os.path.basename(__file__)
    expected = [
        f'task "locker" (Lock.acquire) waits for lock gate, held by task "main" ({main})'
        f" (taken at {here}:{line_of('# main-takes-gate')} in {main})",
        f'task "permit" (Semaphore.acquire) waits for semaphore pool, held by task "main"'
        f" ({main}) (taken at {here}:{line_of('# main-takes-pool')} in {main})",
        'task "waiter" (Event.wait) waits for event ready',
        'task "notified" (test_a_wait_on_each_kind_of_primitive_is_named_with_its_role'
        ".<locals>.main.<locals>.notified) waits for condition changed",
        'task "getter" (Queue.get) waits for queue inbox (get)',
        'task "putter" (Queue.put) waits for queue outbox (put)',
        'task "joiner" (Queue.join) waits for queue jobs (join: 1 item not marked task_done())',
    ]
    if sys.version_info >= (3, 11):
        expected.append('task "party" (Barrier.wait) waits for barrier start')
    assert lines == expected


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_a_sigusr1_handler_the_program_installs_meanwhile_stays() -> None:
    """At its end the diagnosis takes its SIGUSR1 handler out, but only its own:
    one the program installed since (its own "dump on SIGUSR1") is the program's."""
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    def programs(signum: int, frame: Any) -> None:
        pass

    config = DiagnosisConfig(block_threshold=None, deadlocks=False, lock_order=False)
    previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        for program_installs, left in ((False, signal.SIG_DFL), (True, programs)):
            diagnoser = Diagnoser(config, None)
            diagnoser.start()
            assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, programs)
            if program_installs:
                signal.signal(signal.SIGUSR1, programs)
            diagnoser.finish(at_exit=False)
            assert signal.getsignal(signal.SIGUSR1) is left
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_wrapper_the_program_puts_over_our_ctrl_c_handling_stays() -> None:
    """The diagnosis wraps asyncio's Ctrl-C handling to dump; at its end it puts back
    asyncio's only if ours is still there. A wrapper the program put over ours since
    stays, and ours inside it passes the call on, dumping nothing."""
    import asyncio

    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

    owner: Any = asyncio.runners
    name = "_cancel_all_tasks"
    runner = getattr(asyncio.runners, "Runner", None)
    if runner is not None:  # 3.11+
        owner, name = runner, "_on_sigint"
    asyncios = vars(owner)[name]

    async def interrupted() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)

    config = DiagnosisConfig(block_threshold=None, deadlocks=False, lock_order=False)
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)  # not a shell's ignore
    try:
        for program_wraps in (False, True):
            echoed: list[str] = []
            diagnoser = Diagnoser(config, None, echo=echoed.append)
            diagnoser.start()
            ours = vars(owner)[name]
            assert ours is not asyncios
            calls: list[str] = []

            def programs(*args: Any, _inner: Any = ours, _calls: Any = calls, **kwargs: Any) -> Any:
                _calls.append("program's")
                return _inner(*args, **kwargs)

            if program_wraps:
                setattr(owner, name, programs)
            diagnoser.finish(at_exit=False)
            assert vars(owner)[name] is (programs if program_wraps else asyncios)
            if program_wraps:  # the call goes through, ours inert: no dump
                with pytest.raises(KeyboardInterrupt):
                    asyncio.run(interrupted())
                diagnoser.flush_dump()  # what a dump of ours would have left to print
                assert calls == ["program's"]
                assert echoed == []
    finally:
        setattr(owner, name, asyncios)
        signal.signal(signal.SIGINT, interrupt)


def test_a_fork_keeps_no_dump_signal_of_the_run(tmp_path: Path) -> None:
    """SIGUSR1 ends a forked child, as untraced: the run's dump is the run's process's."""
    (tmp_path / "forks.py").write_text(FORK_SIGNALS)
    untraced = subprocess.run(
        [sys.executable, "forks.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    traced = aiotrace("run", "--no-trace-file", "-q", "forks.py", cwd=tmp_path)
    assert untraced.stdout == traced.stdout == "ended by SIGUSR1\n", traced.stderr
    assert "SIGUSR1" not in traced.stderr


def test_a_class_left_out_of_lock_order_checking(tmp_path: Path) -> None:
    source = (DIAG / "lock_order.py").read_text()
    marked = source.replace(
        "    users_lock = asyncio.Lock()",
        "    import aiotrace\n\n    users_lock = aiotrace.ignore_lock_order(asyncio.Lock())",
    )
    (tmp_path / "lock_order.py").write_text(marked)
    result = aiotrace(
        "run", "--check", "--report-json=r.json", tmp_path / "lock_order.py", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["findings"] == []


BANK_LIBRARY = """\
import asyncio


class Account:
    def __init__(self):
        self._lock = asyncio.Lock()  # LIB_LOCK


async def transfer(source, target):
    async with source._lock:  # LIB_FIRST
        async with target._lock:  # LIB_SECOND
            await asyncio.sleep(0)
"""

USES_BANK = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import bank


async def main():
    checking = bank.Account()  # CHECKING
    savings = bank.Account()  # SAVINGS
    second = [bank.Account() for _ in range(2)]  # SAME_LINE
    await bank.transfer(checking, savings)
    await bank.transfer(*second)
    if "--bug" in sys.argv:
        await bank.transfer(savings, checking)
    else:
        await bank.transfer(checking, savings)
    await bank.transfer(*reversed(second))


asyncio.run(main())
"""


def test_a_librarys_locks_made_from_two_lines_of_the_program_are_two_classes(
    tmp_path: Path,
) -> None:
    """Two accounts of a library, made at two lines of the program, locked in both orders.

    Every account's lock is made at one line of the library: by that line alone
    they would be one class, and taking two in both orders would go unseen.
    """
    installed_library(tmp_path, "bank", BANK_LIBRARY, USES_BANK)

    lock = f"self._lock (bank/__init__.py:{marker_line(BANK_LIBRARY, 'LIB_LOCK')})"
    checking, savings = (
        f"{lock} via prog.py:{marker_line(USES_BANK, m)}" for m in ("CHECKING", "SAVINGS")
    )
    first, second = (
        f"bank/__init__.py:{marker_line(BANK_LIBRARY, m)} in transfer"
        for m in ("LIB_FIRST", "LIB_SECOND")
    )
    result = aiotrace("run", "--check", "--report-json=r.json", "prog.py", "--bug", cwd=tmp_path)
    assert result.returncode == EXIT_FINDINGS, result.stderr
    (finding,) = json.loads((tmp_path / "r.json").read_text())["findings"]
    assert finding["kind"] == "lock order"
    assert finding["summary"] == (
        f"{checking} and {savings} are taken in both orders: a possible deadlock"
    )
    assert finding["details"][:2] == [
        f'task "Task-1" took {checking} at {first}, then {savings} at {second}',
        f'task "Task-1" took {savings} at {first}, then {checking} at {second}',
    ]
    # Two accounts made at one line of the program stay one class: taking
    # them in both orders is not told (as for the program's own locks).
    result = aiotrace("run", "--check", "--report-json=r.json", "prog.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["findings"] == []


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.parametrize("how", ["spawn", "fork"])
def test_a_hang_stops_the_child_processes_too_and_keeps_their_spans(
    tmp_path: Path, how: str
) -> None:
    """Stopped at the hang timeout, a program waiting for a deadlocked child takes it along.

    As Ctrl-C in the terminal would, the interrupt reaches the child too
    (spawn); a child deaf to it (fork, on 3.11+) is ended with the program. Either
    way its spans and findings are in the report, and it does not outlive
    the run, deadlocked, holding the run's stderr open.
    """
    try:
        result = aiotrace(
            "run",
            "--hang-timeout=2",
            "--trace-file=t.json",
            "--report-json=r.json",
            DIAG / "hung_child.py",
            how,
            cwd=tmp_path,
            timeout=60,
            sigint="default",  # as in a terminal, also when this suite runs in the background
        )
        pid = int((tmp_path / "child.pid").read_text())
        assert result.returncode == EXIT_HANG, result.stderr
        assert not _alive(pid)
        # The interrupt stopped the spawned child; only the fork, deaf to it
        # on 3.11+ (asyncio.run's SIGINT handler, inherited), waited for the
        # last resort.
        deaf = how == "fork" and sys.version_info >= (3, 11)
        assert ("did not stop" in result.stderr) == deaf, result.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        deadlock = report["findings"][0]
        assert deadlock["kind"] == "deadlock"
        assert deadlock["summary"] == (
            '2 tasks wait for each other: "to-savings" -> "to-checking" -> "to-savings"'
        )
        assert deadlock["details"][-1].startswith(f"in child process {pid}")
        assert report["notes"] == []  # no process still running, none killed unfinished
        assert "lost" not in result.stderr
        assert "interrupted (Ctrl-C)" not in result.stderr  # a fork's inherited dump
        trace = Trace(tmp_path / "t.json")
        (process,) = trace.named(semconv.SPAN_PROCESS)
        assert process.attributes[semconv.ATTR_PID] == pid
        holders = {
            span.attributes[semconv.ATTR_TASK_NAME]
            for span in trace.named(semconv.SPAN_LOCK_HOLD)
            if trace.resources[span.span_id][semconv.ATTR_PID] == pid
        }
        assert holders == {"to-savings", "to-checking"}
    finally:
        with contextlib.suppress(Exception):  # never leave a deadlocked process behind
            os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)


def test_a_hang_stops_a_child_that_is_not_traced_yet(tmp_path: Path) -> None:
    """A child that never imported asyncio is no traced process, but Ctrl-C would reach it.

    The program waits for it: left running, it would keep the program
    waiting until the last resort (SIGTERM, 10 s on) and outlive the run.
    """
    try:
        started = time.monotonic()
        result = aiotrace(
            "run",
            "--hang-timeout=2",
            "--no-trace-file",
            DIAG / "hung_child.py",
            "sleeper",
            cwd=tmp_path,
            timeout=60,
            sigint="default",  # as in a terminal, also when this suite runs in the background
        )
        elapsed = time.monotonic() - started
        pid = int((tmp_path / "child.pid").read_text())
        assert result.returncode == EXIT_HANG, result.stderr
        assert not _alive(pid)
        assert elapsed < 10, elapsed  # the interrupt did it, not the last resort
        assert "KeyboardInterrupt" in result.stderr  # the child's own, as in a terminal
    finally:
        with contextlib.suppress(Exception):
            os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)


def test_a_hang_leaves_a_child_in_a_session_of_its_own_alone(tmp_path: Path) -> None:
    """A daemon (``start_new_session``) is out of Ctrl-C's reach, so out of the hang's.

    It is traced and connected (its deadlock is found and shipped), so the
    collector knows it; it still runs after the run, which says so.
    """
    try:
        result = aiotrace(
            "run",
            "--hang-timeout=2",
            "--no-trace-file",
            "--report-json=r.json",
            DIAG / "hung_child.py",
            "daemon",
            cwd=tmp_path,
            timeout=60,
        )
        pid = int((tmp_path / "child.pid").read_text())
        assert result.returncode == EXIT_HANG, result.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        kinds = [finding["kind"] for finding in report["findings"]]
        assert kinds == ["deadlock", "hang", "hang"]  # the child's two, then the program's
        assert report["findings"][0]["details"][-1].startswith(f"in child process {pid}")
        assert report["notes"] == [
            "1 traced process(es) still running when the report was made: "
            "their later spans are not in it"
        ]
        assert _alive(pid)
    finally:
        with contextlib.suppress(Exception):
            os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)


def _diagnosis_switches() -> tuple[bool, bool, bool]:
    from aiotrace.primitives import _lock_order
    from aiotrace.primitives._base import WATCHED

    return WATCHED[0] is not None, _lock_order.DIAGNOSING[0], _lock_order.LOCK_ORDER[0]


def test_a_diagnosis_ended_leaves_nothing_on_and_an_outer_one_running() -> None:
    """A test diagnosed inside a diagnosed session (``pytest --aiotrace`` running a
    test that makes a ``Diagnoser``) hands lock-order checking and leak watching back
    to the session when it ends; the session, ending, turns them off (or hands them
    back in turn), and a program traced later in the process pays for neither."""
    import asyncio

    import aiotrace
    from aiotrace import _leaks
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig
    from aiotrace.primitives._base import _WATCHED_KINDS

    kinds = set(_WATCHED_KINDS)
    before = _diagnosis_switches()  # all off; under ``pytest --aiotrace``, the run's on
    config = DiagnosisConfig(block_threshold=None, dump_signals=False, deadlocks=False)

    async def inverted() -> None:
        a, b = asyncio.Lock(), asyncio.Lock()
        async with a, b:
            pass
        async with b, a:
            pass

    aiotrace.instrument(tasks=False, futures=False)
    session, plugin, session_on = Diagnoser(config, None), False, False
    try:
        session.start()
        session_on = True
        _leaks.watch()  # as the pytest plugin does, after each test
        plugin = True
        test = Diagnoser(config, None)
        test.start()
        test.finish(at_exit=False)
        assert _diagnosis_switches() == (True, True, True)
        asyncio.run(inverted())  # found by the session, whose checking goes on
        assert [f.kind for f in session.findings] == [semconv.FINDING_LOCK_ORDER]
        assert test.findings == []
        _leaks.unwatch()
        plugin = False
        assert _diagnosis_switches() == (True, True, True)  # the session still watches
        session.finish(at_exit=False)
        session_on = False
        assert _diagnosis_switches() == before
        assert set(_WATCHED_KINDS) == kinds
    finally:  # what an assertion above left on
        if plugin:
            _leaks.unwatch()
        if session_on:
            session.finish(at_exit=False)
        aiotrace.uninstrument()


class _Box:
    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock


_SHARED: dict[str, Any] = {}
"""The stranded test's primitives, as a program's module-level ones: no task's local."""


def test_a_task_stranded_behind_a_leaked_permit_is_reported_as_the_program_runs() -> None:
    """A request waiting behind permits that earlier requests' error path kept is found
    while the program runs (a server may never reach its end), with where they were
    taken; not a wait that a scheduled callback (a rate limiter's ``call_later(...,
    sem.release)``) or another task with the lock at hand will end, nor one for a lock
    an ``@asynccontextmanager``'s generator holds, suspended at its ``yield``."""
    from aiotrace.diagnosis import LEAK

    told: list[str] = []

    async def query() -> None:
        await _SHARED["slots"].acquire()  # leaked-here
        raise RuntimeError("bad query")

    async def limited() -> None:
        await _SHARED["limiter"].acquire()
        asyncio.get_running_loop().call_later(0.6, _SHARED["limiter"].release)

    async def take() -> None:
        await _SHARED["handed"].acquire()

    async def release_later(box: _Box) -> None:
        await asyncio.sleep(0.6)
        box.lock.release()

    @contextlib.asynccontextmanager
    async def guarded() -> Any:
        async with _SHARED["guard"]:
            yield  # suspended here, in no task's await chain, holding the lock

    async def hold_guarded() -> None:
        async with guarded():
            await asyncio.sleep(0.6)

    async def main(diagnoser: Any) -> None:
        _SHARED["slots"] = asyncio.Semaphore(2)  # slots-made
        _SHARED["limiter"] = asyncio.Semaphore(1)
        _SHARED["handed"] = asyncio.Lock()
        _SHARED["guard"] = asyncio.Lock()
        for made in (query, query, limited, take):
            with contextlib.suppress(RuntimeError):
                await asyncio.create_task(made())
        later = asyncio.gather(release_later(_Box(_SHARED["handed"])), hold_guarded())
        await asyncio.sleep(0)
        waiting = [
            asyncio.create_task(_SHARED["slots"].acquire(), name="stranded"),
            asyncio.create_task(_SHARED["limiter"].acquire(), name="rate-limited"),
            asyncio.create_task(_SHARED["handed"].acquire(), name="handed-over"),
            asyncio.create_task(_SHARED["guard"].acquire(), name="guarded"),
        ]
        await asyncio.sleep(0.45)  # several graph checks
        told.extend(f.text() for f in diagnoser.findings if f.kind == LEAK)
        await later
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    try:
        with _diagnosed() as diagnoser:
            diagnoser.watchdog.graph_interval = 0.05
            diagnoser.watchdog.stranded_after = 0.1
            asyncio.run(main(diagnoser))
    finally:
        _SHARED.clear()
    here = os.path.basename(__file__)
    assert told == [
        'LEAK: task "stranded" (Semaphore.acquire) is stranded\n'
        '  task "stranded" (Semaphore.acquire) waits for semaphore _SHARED["slots"]'
        f" ({here}:{line_of('# slots-made')}), which no pending task can"
        f" end: 2 permits taken at {here}:{line_of('# leaked-here')} in"
        f" {_qualified('query')} by tasks that finished without releasing them",
    ], told


def _qualified(name: str) -> str:
    return (
        "test_a_task_stranded_behind_a_leaked_permit_is_reported_as_the_program_runs"
        f".<locals>.{name}"
    )


def test_a_permit_given_back_before_it_was_taken_is_no_leak() -> None:
    """A task that took a permit and ended leaked it, while the semaphore is short of
    it. A plain Semaphore has no bound: a ``release()`` that matched no ``acquire()``,
    made before, gave a permit in advance, and nothing is stranded until a second
    task keeps one too."""
    import asyncio
    import time

    import aiotrace
    from aiotrace import _leaks
    from aiotrace.testing import capture_spans

    async def main() -> list[int]:
        sem = aiotrace.name(asyncio.Semaphore(2), "given-back")
        since = time.perf_counter_ns()

        async def take() -> None:
            await sem.acquire()  # never released

        sem.release()  # by no one who took one: the value is 3
        counts = []
        for _ in range(2):
            await asyncio.create_task(take())
            # (Under pytest --aiotrace an earlier test's leaked lock may still be alive.)
            counts.append(sum(leak.primitive == "given-back" for leak in _leaks.find(since)))
        return counts

    with capture_spans():
        _leaks.watch()
        try:
            assert asyncio.run(main()) == [0, 1]
        finally:
            _leaks.unwatch()


def test_leaks_read_each_pending_task_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock is leaked when no pending task's await chain holds the frame that took
    it. With 50 locks held by live tasks, 50 left held by finished ones and 200 tasks
    beside, the chains are read once for all 100 locks, not once per lock."""
    import asyncio
    import time

    import aiotrace
    from aiotrace import _leaks
    from aiotrace.primitives import _base
    from aiotrace.testing import capture_spans

    reads = [0]
    chain_frames = _base.chain_frames

    def counted(task: Any) -> Any:
        reads[0] += 1
        return chain_frames(task)

    monkeypatch.setattr(_base, "chain_frames", counted)

    async def main() -> tuple[set[str], int]:
        since = time.perf_counter_ns()
        done = asyncio.Event()
        beside = [asyncio.create_task(done.wait()) for _ in range(200)]

        async def hold(lock: asyncio.Lock, until: asyncio.Event | None) -> None:
            await lock.acquire()
            if until is not None:
                await until.wait()

        live = [asyncio.Lock() for _ in range(50)]
        left = [asyncio.Lock() for _ in range(50)]
        for i, lock in enumerate(live):
            aiotrace.name(lock, f"live-{i}")
        for i, lock in enumerate(left):
            aiotrace.name(lock, f"left-{i}")
        holders = [asyncio.create_task(hold(lock, done)) for lock in live]
        await asyncio.gather(*(hold(lock, None) for lock in left))
        await asyncio.sleep(0)
        pending = len(asyncio.all_tasks())
        reads[0] = 0
        leaked = {
            leak.primitive
            for leak in _leaks.find(since)
            if leak.kind == _leaks.LOCK_HELD
            and leak.primitive.startswith(("live-", "left-"))  # not an earlier test's
        }
        done.set()
        await asyncio.gather(*beside, *holders)
        return leaked, pending

    with capture_spans():
        _leaks.watch()
        try:
            leaked, pending = asyncio.run(main())
        finally:
            _leaks.unwatch()
    assert leaked == {f"left-{i}" for i in range(50)}
    assert pending <= reads[0] <= pending + 5  # (a loop of the outer session's, if traced)


def test_a_hang_dump_leads_with_the_task_most_waited_on_and_shows_alike_waits_once() -> None:
    """A dump of many pending tasks names the one the others queue behind first, and
    tasks of one coroutine waiting alike (the same wait and stack), four or more, once:
    twelve requests queued on a lock are one entry, behind the holder's. A wait that
    many tasks can end names five of them and counts the rest; a wait for tasks (a
    gather, an awaited task) names them once, as what it waits for."""
    import asyncio

    from aiotrace import diagnosis

    lines: list[str] = []
    qualnames: dict[str, str] = {}

    async def main() -> None:
        gate = asyncio.Event()
        lock = asyncio.Lock()

        async def holder() -> None:
            async with lock:
                await gate.wait()

        async def request() -> None:
            async with lock:
                pass

        async def watcher() -> None:
            await gate.wait()

        qualnames.update(holder=holder.__qualname__, request=request.__qualname__)
        tasks = [asyncio.create_task(holder(), name="holder")]
        await asyncio.sleep(0)  # the holder has the lock
        tasks += [asyncio.create_task(request(), name=f"early-{i}") for i in range(2)]
        tasks += [asyncio.create_task(request(), name=f"r{i}") for i in range(10)]
        tasks += [asyncio.create_task(watcher(), name=f"watcher{i}") for i in range(2)]

        async def look() -> None:
            await asyncio.sleep(0)  # every request queued, main in gather()
            lines.extend(diagnosis.snapshot().format())
            gate.set()

        async def awaiter(task: asyncio.Task[None]) -> None:
            await task

        qualnames["awaiter"] = awaiter.__qualname__
        awaiting = asyncio.create_task(awaiter(tasks[0]), name="awaiter")
        looking = asyncio.create_task(look(), name="look")
        await asyncio.gather(*tasks)
        await looking
        await awaiting

    with _diagnosed():
        asyncio.run(main())
    entries = [line for line in lines if not line.startswith(" ")]
    assert entries[0].startswith(f'task "holder" ({qualnames["holder"]}) waits for event gate')
    queued = [line for line in entries if "request" in line and "gather" not in line]
    (queue,) = queued
    assert queue.startswith(
        f'12 tasks ({qualnames["request"]}: "early-0", "early-1", "r0" and 9 more) '
        "wait for lock lock"
    )
    assert 'held by task "holder"' in queue
    watchers = [line for line in entries if "watcher" in line and "gather" not in line]
    assert [line.split(" (", 1)[0] for line in watchers] == ['task "watcher0"', 'task "watcher1"']
    (gathering,) = [line for line in entries if "gather(" in line]
    assert gathering.startswith('task "Task-')
    # The 15 it gathers, five named; they alone can end it, which goes unsaid.
    assert gathering.endswith(" and 10 more)")
    holder = f'task "holder" ({qualnames["holder"]})'
    assert f'task "awaiter" ({qualnames["awaiter"]}) waits for {holder}' in entries


class _Awaiting:
    """An awaitable whose ``__await__`` is a coroutine's, as aiohttp's ``session.get()`` is."""

    def __init__(self, coro: Any) -> None:
        self.coro = coro

    def __await__(self) -> Any:
        return self.coro.__await__()


def test_a_stuck_tasks_stack_goes_on_into_the_async_generator_it_iterates() -> None:
    """``async for`` over an async generator awaits an ``async_generator_asend``, an
    awaitable whose ``__await__`` is a coroutine's a ``coroutine_wrapper``: neither
    names the next link, yet the task is stuck in what they step. Its stack shows
    it, and a lock the generator took while it waits is that task's."""
    import asyncio

    from aiotrace import diagnosis

    lines: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()
        lock = asyncio.Lock()

        async def rows() -> Any:
            async with lock:
                yield 1
                await gate.wait()  # rows-waits
                yield 2

        async def reader() -> None:
            async for _ in rows():
                pass

        async def fetch() -> None:
            await gate.wait()  # fetch-waits

        async def client() -> None:
            await _Awaiting(fetch())

        async def request() -> None:
            async with lock:
                pass

        tasks = [asyncio.create_task(reader(), name="reader")]
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(request(), name="request")]
        tasks += [asyncio.create_task(client(), name="client")]
        await asyncio.sleep(0)
        lines.extend(diagnosis.snapshot(tasks).format())
        gate.set()
        await asyncio.gather(*tasks)

    with _diagnosed():
        asyncio.run(main())
    here = os.path.basename(__file__)
    assert any(
        line.startswith('task "request"') and 'held by task "reader"' in line for line in lines
    ), lines
    rows_waits = f"    {here}:{line_of('# rows-waits')} in "
    fetch_waits = f"    {here}:{line_of('# fetch-waits')} in "
    assert any(line.startswith(rows_waits) and "inside async with lock" in line for line in lines)
    assert any(line.startswith(fetch_waits) for line in lines), lines


_MIDDLEWARE = """
async def layer(app, depth):
    if depth:
        return await layer(app, depth - 1)
    return await app()
"""


def _library_layer() -> Any:
    """``layer(app, depth)``: ``depth`` + 1 frames of a library's (an installed package's
    file, as its path says) around awaiting ``app()``, as a web framework's middleware."""
    namespace: dict[str, Any] = {}
    site = "/venv/lib/python3.11/site-packages"
    exec(compile(_MIDDLEWARE, f"{site}/webframe/middleware.py", "exec"), namespace)
    return namespace["layer"]


def test_a_long_run_of_library_frames_is_told_by_its_ends_and_a_count() -> None:
    """A request stuck under a web framework's middleware: the framework's dozen
    frames are its first (where the program called in), a count with the
    packages, and its last two; the program's frames are all there."""
    import asyncio

    from aiotrace import diagnosis

    layer = _library_layer()
    lines: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def handler() -> None:
            await gate.wait()  # handler-waits

        async def endpoint() -> None:
            await layer(handler, 1)  # short: shown whole

        task = asyncio.create_task(layer(endpoint, 7), name="request")
        await asyncio.sleep(0)
        lines.extend(diagnosis.snapshot([task]).format())
        gate.set()
        await task

    with _diagnosed():
        asyncio.run(main())
    here = os.path.basename(__file__)
    calls, last = "    webframe/middleware.py:4 in layer", "    webframe/middleware.py:5 in layer"
    assert lines[0].startswith('task "request" (layer) waits for event gate ('), lines
    assert lines[1:] == [
        calls,
        "    ... 5 frames in webframe ...",
        calls,
        last,
        f"    {here}:{line_of('await layer(handler, 1)')} in {endpoint_name()}",
        calls,
        last,
        f"    {here}:{line_of('# handler-waits')} in {endpoint_name('handler')}",
    ], lines


def test_a_task_stuck_in_the_programs_code_is_listed_before_those_only_in_a_librarys() -> None:
    """A test client's portal waiting to be stopped was listed first, before the request
    handler waiting on the program's event: older, as it is."""
    import asyncio

    from aiotrace import diagnosis

    layer = _library_layer()
    lines: list[str] = []

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()

        async def handler() -> None:
            await ready.wait()

        tasks = [
            asyncio.create_task(layer(stop.wait, 0), name="portal"),
            asyncio.create_task(layer(handler, 0), name="request"),
        ]
        await asyncio.sleep(0)
        lines.extend(diagnosis.snapshot(tasks).format())
        stop.set()
        ready.set()
        await asyncio.gather(*tasks)

    with _diagnosed():
        asyncio.run(main())
    heads = [line.split(" (")[0] for line in lines if line.startswith("task ")]
    assert heads == ['task "request"', 'task "portal"'], lines


def endpoint_name(name: str = "endpoint") -> str:
    return (
        "test_a_long_run_of_library_frames_is_told_by_its_ends_and_a_count"
        f".<locals>.main.<locals>.{name}"
    )


def test_the_running_tasks_stack_is_its_own_not_what_ran_the_loop() -> None:
    """The task that asks (a Ctrl-C handler runs inside it) is shown down to where it
    is; not the frames above its coroutine: the loop, asyncio.run, pytest."""
    import asyncio

    from aiotrace import diagnosis

    lines: list[str] = []

    def look() -> None:
        lines.extend(diagnosis.snapshot().format())  # looks

    async def main() -> None:
        look()  # calls-look

    with _diagnosed():
        asyncio.run(main())
    here = os.path.basename(__file__)
    name = "test_the_running_tasks_stack_is_its_own_not_what_ran_the_loop.<locals>"
    assert lines[0].startswith('task "Task-')  # asyncio.run's main task
    assert lines[0].endswith(f'" ({name}.main) is running: this was taken from inside it')
    assert lines[1:] == [
        f"    {here}:{line_of('# calls-look')} in {name}.main",
        f"    {here}:{line_of('# looks')} in {name}.look",
    ], lines


def test_an_anyio_task_group_waits_for_its_tasks() -> None:
    """anyio's task group keeps its tasks and the future its end waits on as asyncio's
    does: the wait names them (the future is anyio's, made by the waiting task)."""
    import anyio

    from aiotrace import diagnosis

    lines: list[str] = []

    async def main() -> None:
        done = anyio.Event()

        async def child() -> None:
            await done.wait()

        async def look() -> None:
            await anyio.sleep(0.01)
            lines.extend(diagnosis.snapshot().format())
            done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(child, name="child")
            group.start_soon(look, name="look")

    with _diagnosed(futures=True):
        anyio.run(main)
    (waiting,) = [line for line in lines if " waits for its TaskGroup's tasks (" in line]
    assert waiting.startswith('task "')
    assert 'task "child"' in waiting
    assert 'task "look"' in waiting


@pytest.mark.parametrize("return_when", ["ALL_COMPLETED", "FIRST_COMPLETED"])
def test_asyncio_wait_waits_for_its_tasks_and_a_cycle_through_it_is_a_deadlock(
    return_when: str,
) -> None:
    """``asyncio.wait()`` on a task that awaits the waiter's future is a cycle; with a
    second task, which ends, FIRST_COMPLETED is not stuck and ALL_COMPLETED is."""
    import asyncio

    from aiotrace import diagnosis

    seen: list[tuple[list[str], list[str]]] = []
    seen_main: list[str] = []

    async def main() -> None:
        fut = asyncio.get_running_loop().create_future()

        async def child() -> None:
            await fut

        async def other() -> None:
            await asyncio.sleep(10)

        async def look(task: asyncio.Task[Any]) -> None:  # it must not refer to the future
            await asyncio.sleep(0.01)
            graph = diagnosis.snapshot()
            seen.append(
                (sorted(t.get_name() for t in graph.deadlocked()), [graph.describe_wait(task)])
            )
            for t in asyncio.all_tasks():
                if t.get_name() in ("child", "other"):
                    t.cancel()

        me = asyncio.current_task()
        assert me is not None
        seen_main.append(me.get_name())
        looking = asyncio.create_task(look(me), name="look")
        tasks = [asyncio.create_task(child(), name="child")]
        if return_when == "FIRST_COMPLETED":
            tasks.append(asyncio.create_task(other(), name="other"))
        await asyncio.wait(tasks, return_when=getattr(asyncio, return_when))
        await asyncio.gather(*tasks, looking, return_exceptions=True)

    with _diagnosed(futures=True):
        asyncio.run(main())
    ((stuck, (line,)),) = seen
    if return_when == "ALL_COMPLETED":
        assert line.endswith(
            'waits for asyncio.wait (task "child" ('
            + (
                "test_asyncio_wait_waits_for_its_tasks_and_a_cycle_through_it_is_a_deadlock"
                ".<locals>.main.<locals>.child))"
            )
        )
        assert stuck == sorted(["child", seen_main[0]])
    else:
        assert "; the first to end)" in line
        assert stuck == []  # "other" may end it


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup and cancelling() are 3.11+")
def test_a_task_group_waits_for_its_tasks_and_one_that_swallowed_its_cancellation_says_so() -> None:
    """The classic hang at the end: a TaskGroup's body fails, and a task of the group
    catches the cancellation the group sends and goes on waiting. The group's owner
    waits for that task, which is named, and the task is shown cancelled yet running."""
    import asyncio

    from aiotrace import diagnosis

    lines: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def worker() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await stop.wait()  # swallowed: the bug

        async def look() -> None:
            await asyncio.sleep(0.01)  # the group has cancelled the worker, which waits
            lines.extend(diagnosis.snapshot().format())
            stop.set()

        looking = asyncio.create_task(look(), name="look")
        with contextlib.suppress(Exception):  # the group's ExceptionGroup
            async with asyncio.TaskGroup() as group:
                group.create_task(worker(), name="worker")
                await asyncio.sleep(0)
                raise RuntimeError("shutting down")
        await looking

    with _diagnosed():
        asyncio.run(main())
    entries = [line for line in lines if not line.startswith(" ")]
    worker = next(line for line in entries if line.startswith('task "worker"'))
    assert worker.endswith(
        "; cancelled, yet still running: it caught the CancelledError and went on,"
        " or its clean-up waits"
    )
    main_line = next(line for line in entries if line.startswith('task "Task-'))
    assert main_line.endswith(
        'waits for its TaskGroup\'s tasks (task "worker" ('
        + (
            "test_a_task_group_waits_for_its_tasks_and_one_that_swallowed_its_cancellation_says_so"
            ".<locals>.main.<locals>.worker))"
        )
    )
    # The other tasks were never cancelled: no such note.
    assert "cancelled" not in main_line
    assert entries.index(worker) < entries.index(main_line)  # the one waited for first


@pytest.mark.parametrize("resolver", ["none", "task", "holder", "callback"])
def test_a_future_another_task_or_a_callback_will_resolve_makes_no_deadlock(
    resolver: str,
) -> None:
    """The main task awaits a task that awaits the main task's future: a cycle, if the
    creator were all that could resolve it. A task that has the future at hand (in
    its locals, or an object's attribute), or a callback the loop has scheduled with
    it, can too (aiohttp's test_data_stream_exc gives it to a task that sets it 10 ms
    later): no deadlock then."""
    import asyncio

    from aiotrace import diagnosis

    seen: list[list[str]] = []
    main_name: list[str] = []

    class Box:
        def __init__(self, fut: asyncio.Future[int]) -> None:
            self.fut = fut

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        main_name.append(asyncio.current_task().get_name())  # type: ignore[union-attr]

        async def waiter() -> int:
            return await fut

        async def setter() -> None:
            await asyncio.sleep(0.05)
            fut.set_result(1)

        async def boxed(box: Box) -> None:
            await asyncio.sleep(0.05)
            box.fut.set_result(1)

        if resolver == "task":
            helper = asyncio.create_task(setter(), name="setter")
        elif resolver == "holder":
            helper = asyncio.create_task(boxed(Box(fut)), name="setter")
        elif resolver == "callback":
            loop.call_later(0.05, fut.set_result, 1)

        async def look() -> None:  # it must not refer to the future itself
            await asyncio.sleep(0.01)
            seen.append([t.get_name() for t in diagnosis.snapshot().deadlocked()])
            if resolver == "none":
                waiting.cancel()

        looking = asyncio.create_task(look(), name="look")
        waiting = asyncio.create_task(waiter(), name="waiter")
        with contextlib.suppress(asyncio.CancelledError):
            assert await waiting == 1
        await looking
        if resolver in ("task", "holder"):
            await helper

    with _diagnosed(futures=True):
        asyncio.run(main())
    if resolver == "none":
        assert sorted(seen[0]) == sorted([main_name[0], "waiter"])
    else:
        assert seen == [[]]


class _Guard:
    """A context manager of the program's own around a lock or semaphore: an explicit
    ``acquire()`` in ``__aenter__``, which returns holding it."""

    def __init__(self, prim: asyncio.Lock | asyncio.Semaphore) -> None:
        self.prim = prim

    async def __aenter__(self) -> None:
        await self.prim.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.prim.release()


@contextlib.asynccontextmanager
async def _guard(prim: asyncio.Lock | asyncio.Semaphore) -> Any:
    """The same as a generator, suspended at its ``yield`` while the body runs."""
    await prim.acquire()
    try:
        yield
    finally:
        prim.release()


@contextlib.asynccontextmanager
async def _stacked(prim: asyncio.Lock | asyncio.Semaphore) -> Any:
    """A guard entered through an ``AsyncExitStack``, as a server's set-up enters many."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_Guard(prim))
        yield


@contextlib.asynccontextmanager
async def _holding(prim: asyncio.Lock | asyncio.Semaphore) -> Any:
    """``async with`` inside the generator: a Lock's owner is then the generator's frame,
    which the ``async with`` entering it leads to (``_lock_order.ENTERED``)."""
    async with prim:  # HELD_INSIDE_THE_GENERATOR
        yield


_GUARDED = {  # each guard's pair made at a line of its own: lock order is per line, and
    # an inversion is reported once a process (a traced session runs them all in one)
    "__aenter__": (_Guard, lambda: (asyncio.Lock(), asyncio.Semaphore(1))),
    "asynccontextmanager": (_guard, lambda: (asyncio.Lock(), asyncio.Semaphore(1))),
    "exit stack": (_stacked, lambda: (asyncio.Lock(), asyncio.Semaphore(1))),
    "async with inside": (_holding, lambda: (asyncio.Lock(), asyncio.Semaphore(1))),
}


async def _flush(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def _save(lock: asyncio.Lock) -> None:
    async with lock:  # TAKEN_BY_THE_CALLER
        await _flush(lock)


def test_a_task_taking_again_a_lock_it_holds_waits_for_itself() -> None:
    """asyncio's Lock is not re-entrant: ``async with lock`` in a call made inside
    ``async with lock`` waits for its own task, forever. The finding says so, where it
    said "1 tasks wait for each other"."""
    from aiotrace import diagnosis

    found: list[Any] = []

    async def main() -> None:
        task = asyncio.create_task(_save(asyncio.Lock()), name="saver")
        for _ in range(3):
            await asyncio.sleep(0)
        found.extend(diagnosis.deadlock_findings(diagnosis.snapshot([task])))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with _diagnosed():
        asyncio.run(main())
    assert [f.summary for f in found] == ['task "saver" (_save) waits for what it holds itself']
    line = line_of("TAKEN_BY_THE_CALLER")
    held = f'held by task "saver" (_save) (taken at test_diagnosis.py:{line} in _save)'
    assert held in found[0].details[0], found[0].details


async def _shielding(lock: asyncio.Lock, child: Coroutine[Any, Any, None]) -> None:
    async with lock:
        await asyncio.shield(asyncio.create_task(child, name="child"))


def test_a_task_awaiting_what_it_shields_waits_for_that_task() -> None:
    """``await asyncio.shield(task)`` waits for a future of shield()'s own, which only the
    task's end resolves: the wait is for that task, and a deadlock through it (the
    child wants the lock its shielding parent holds) is found. Before, it read "waits
    for an asyncio internal future, which no pending task can end"."""
    from aiotrace import diagnosis

    found: list[Any] = []

    async def main() -> None:
        lock = asyncio.Lock()
        parent = asyncio.create_task(_shielding(lock, _flush(lock)), name="parent")
        for _ in range(5):
            await asyncio.sleep(0)
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        found.extend(diagnosis.deadlock_findings(diagnosis.snapshot(others)))
        parent.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    with _diagnosed():
        asyncio.run(main())
    (deadlock,) = found
    assert deadlock.summary.startswith("2 tasks wait for each other: ")
    assert sorted(task.get_name() for task in deadlock.tasks) == ["child", "parent"]
    shielding = 'task "parent" (_shielding) waits for asyncio.shield() (task "child" (_flush))'
    assert shielding in deadlock.details, deadlock.details


class _Inversion:
    """What :func:`_invert` saw: the wait-for graph's cycles (task names), each task's
    wait in words, the findings, and where the first primitive's holder was sampled."""

    def __init__(self) -> None:
        self.cycles: list[list[str]] = []
        self.waits: dict[str, str] = {}
        self.findings: list[Any] = []
        self.held_at: set[tuple[str, int]] = set()

    def held(self, waiter: str) -> str:
        """What ``waiter``'s wait says of the primitive's holder."""
        return self.waits[waiter].split(", held by ", 1)[1]

    def kinds(self) -> list[str]:
        """The findings' kinds; a deadlock, if the watchdog looked while it lasted, aside."""
        return [f.kind for f in self.findings if f.kind != "deadlock"]


def _invert(
    transfer: Callable[[Any, Any], Awaitable[None]],
    make: Callable[[], Any],
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run,
) -> _Inversion:
    """``transfer(a, b)`` and ``transfer(b, a)`` in two tasks at once, "a-then-b" and
    "b-then-a": a deadlock, read while it lasts; then one after the other in a task
    "in-turn": no deadlock, but lock order's finding. Under a diagnosis, each ``run``
    (``uvloop.run``, say)."""
    from aiotrace import diagnosis
    from aiotrace.primitives import _lock_order

    got = _Inversion()

    async def deadlock() -> None:
        a, b = make()
        tasks = [
            asyncio.create_task(transfer(a, b), name="a-then-b"),
            asyncio.create_task(transfer(b, a), name="b-then-a"),
        ]
        for _ in range(20):  # (on 3.10-3.11 each wait_for is a task's round trip)
            await asyncio.sleep(0)  # both hold one, and wait for the other
        everyone = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        graph = diagnosis.snapshot(everyone)
        got.cycles.extend([task.get_name() for task in cycle] for cycle in graph.cycles())
        got.waits.update({task.get_name(): graph.describe_wait(task) for task in everyone})
        _lock_order.sample_holders(threads_running)
        stats = getattr(a, "_lock", a)._aiotrace_stats
        got.held_at.update((code.co_name, line) for code, line in stats.held_at or {})
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def in_turn() -> None:
        asyncio.current_task().set_name("in-turn")  # type: ignore[union-attr]
        a, b = make()
        await transfer(a, b)
        await transfer(b, a)

    with _diagnosed() as diagnoser:
        run(deadlock())
        run(in_turn())
        got.findings.extend(diagnoser.findings)
    return got


@pytest.mark.parametrize("kind", list(_GUARDED))
def test_locks_taken_through_a_programs_own_context_manager_are_its_tasks(kind: str) -> None:
    """The frame that took the lock returns (``__aenter__``) or is suspended out of the
    task's await chain (an ``@asynccontextmanager`` generator) while its task holds it:
    the holder is the frame running the ``async with``. Before, a deadlock through two
    such guards was a hang "which no pending task can end", and lock order never saw
    their nesting, for locks and semaphores alike."""
    guard, make = _GUARDED[kind]

    async def transfer(first: Any, second: Any) -> None:
        async with guard(first):  # TAKEN_THROUGH_A_GUARD
            await asyncio.sleep(0)
            async with guard(second):
                pass

    got = _invert(transfer, make)
    assert got.cycles == [["a-then-b", "b-then-a"]]
    line = line_of("TAKEN_THROUGH_A_GUARD")
    for waiter, holder in (("a-then-b", "b-then-a"), ("b-then-a", "a-then-b")):
        held = got.held(waiter)
        assert held.startswith(f'task "{holder}" ('), got.waits
        if kind == "async with inside" and "waits for lock" in got.waits[waiter]:
            # the generator's line, and which async with entered it
            inside = line_of("HELD_INSIDE_THE_GENERATOR")
            assert (
                f"taken at test_diagnosis.py:{inside} in _holding, "
                f"entered at test_diagnosis.py:{line} in " in held
            ), got.waits
        else:
            assert f"taken at test_diagnosis.py:{line} in " in held, got.waits
    assert got.kinds() == ["lock order"]


_STACKED = {  # each kind's pair made at a line of its own, as in _GUARDED
    "lock": lambda: (asyncio.Lock(), asyncio.Lock()),
    "semaphore": lambda: (asyncio.Semaphore(1), asyncio.Semaphore(1)),
    "condition": lambda: (asyncio.Condition(), asyncio.Condition()),
}


async def _stack_transfer(first: Any, second: Any) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(first)  # ENTERED_BY_A_STACK
        await asyncio.sleep(0)
        await stack.enter_async_context(second)  # THEN_THE_SECOND


@pytest.mark.parametrize("kind", list(_STACKED))
def test_what_an_exit_stack_enters_is_held_by_the_frame_running_it(kind: str) -> None:
    """``await stack.enter_async_context(lock)`` takes the lock in contextlib's
    ``enter_async_context``, which returns at once: the holder is the frame running
    ``async with AsyncExitStack()``. Before, the finished ``enter_async_context`` was
    the owner. On 3.10-3.11 a deadlock through two stacks read as two tasks stranded by
    locks "taken by a task that finished"; on every Python lock order never saw the
    second lock nested in the first, and holders were sampled at contextlib's
    ``return``."""
    got = _invert(_stack_transfer, _STACKED[kind])
    assert got.cycles == [["a-then-b", "b-then-a"]]
    line = line_of("ENTERED_BY_A_STACK")
    for waiter, holder in (("a-then-b", "b-then-a"), ("b-then-a", "a-then-b")):
        held = got.held(waiter)
        assert held.startswith(f'task "{holder}" ('), got.waits
        assert f"taken at test_diagnosis.py:{line} in _stack_transfer" in held, got.waits
    assert got.held_at == {("_stack_transfer", line_of("THEN_THE_SECOND"))}
    assert got.kinds() == ["lock order"]


@pytest.mark.parametrize("diagnosing", [False, True], ids=["traced", "diagnosed"])
@pytest.mark.parametrize("kind", ["lock", "semaphore"])
@pytest.mark.parametrize("how", ["exit stack", "wait_for"])
def test_a_hold_taken_for_the_program_is_its_tasks_at_the_programs_line(
    how: str, kind: str, diagnosing: bool
) -> None:
    """Released by an ``AsyncExitStack``'s exit, in contextlib, a hold was sited there
    (``contextlib.py:728``) and, on 3.10-3.11, said to be released by another task: its
    own. Its site is the program's: where it was entered when diagnosis knows it, else
    the ``async with`` of the stack; contended or not alike. A Lock taken through
    ``asyncio.wait_for(lock.acquire(), t)`` was sited in ``asyncio/tasks.py`` (3.12+) or
    at the loop's ``Handle._run`` (3.10-3.11): it is the ``wait_for`` call's."""
    from aiotrace.primitives import _lock_order
    from aiotrace.testing import capture_spans

    tracked: list[bool] = []  # (a session traced with --aiotrace tracks ownership itself)

    async def main() -> None:
        tracked.append(_lock_order.DIAGNOSING[0])
        prim = asyncio.Lock() if kind == "lock" else asyncio.Semaphore(1)

        async def hold() -> None:
            if how == "wait_for":
                await asyncio.wait_for(prim.acquire(), 10)  # ACQUIRED_WITH_A_LIMIT
                await asyncio.sleep(0.01)
                prim.release()
                return
            async with contextlib.AsyncExitStack() as stack:  # THE_STACK
                await stack.enter_async_context(prim)  # ENTERS_IT
                await asyncio.sleep(0.01)

        await asyncio.gather(
            asyncio.create_task(hold(), name="first"), asyncio.create_task(hold(), name="second")
        )

    if diagnosing:
        captured = _captured_and_diagnosed(main)
    else:
        with capture_spans(min_hold=0, min_wait=0) as captured:
            asyncio.run(main())
    holds = [s for s in captured.primitive_spans if s.name.endswith(".hold")]
    waits = [s for s in captured.primitive_spans if s.name.endswith(".acquire")]
    taken = line_of("ACQUIRED_WITH_A_LIMIT") if how == "wait_for" else line_of("ENTERS_IT")
    line = taken if tracked[0] or how == "wait_for" else line_of("THE_STACK")
    assert [s.get(semconv.ATTR_CODE_LINE_NUMBER) for s in holds] == [line, line]
    assert [s.get(semconv.ATTR_TASK_NAME) for s in holds] == ["first", "second"]
    assert [s.get(semconv.ATTR_RELEASER_TASK) for s in holds] == [None, None]
    assert [s.get(semconv.ATTR_CODE_LINE_NUMBER) for s in waits] == [taken]


async def _in_time(first: Any, second: Any) -> None:
    await asyncio.wait_for(first.acquire(), 10)  # TAKEN_WITHIN_A_TIME_LIMIT
    try:
        await asyncio.sleep(0)
        await asyncio.wait_for(second.acquire(), 10)  # THE_SECOND_IN_TIME
        second.release()
    finally:
        first.release()


def _two_of(kind: str) -> tuple[Any, Any]:
    if kind == "lock":
        return asyncio.Lock(), asyncio.Lock()
    return asyncio.Semaphore(1), asyncio.Semaphore(1)


def _check_taken_in_time(got: _Inversion) -> None:
    """What :func:`_invert` of :func:`_in_time` must find."""
    # (on 3.10-3.11 the cycle goes through wait_for's own tasks too)
    assert len(got.cycles) == 1, got.cycles
    assert {"a-then-b", "b-then-a"} <= set(got.cycles[0]), got.cycles
    line = line_of("TAKEN_WITHIN_A_TIME_LIMIT")
    holds = sorted(w.split(", held by ", 1)[1] for w in got.waits.values() if ", held by " in w)
    assert holds == [
        f'task "{holder}" (_in_time) (taken at test_diagnosis.py:{line} in _in_time)'
        for holder in ("a-then-b", "b-then-a")
    ], got.waits
    assert got.held_at == {("_in_time", line_of("THE_SECOND_IN_TIME"))}
    assert got.kinds() == ["lock order"]
    nesting = next(f.text() for f in got.findings if f.kind == "lock order")
    assert 'task "in-turn" took ' in nesting, nesting
    assert f"at test_diagnosis.py:{line_of('THE_SECOND_IN_TIME')} in _in_time" in nesting


@pytest.mark.parametrize("kind", ["lock", "semaphore"])
def test_what_wait_for_takes_is_held_by_the_frame_awaiting_it(kind: str) -> None:
    """``await asyncio.wait_for(lock.acquire(), timeout)``, the way to take a lock with a
    time limit. From 3.12 ``wait_for`` awaits the acquire in the caller's task; on
    3.10-3.11 in a task of its own, which ends holding the lock. Either way the holder
    is the frame awaiting ``wait_for``. Before, a Lock's holder was ``wait_for``'s frame
    (``asyncio/tasks.py``) or, on 3.10-3.11, the loop's ``Handle._run``: a deadlock
    through two such locks read as two leaks there, and lock order never saw them
    nested (a semaphore's, on 3.10-3.11, as a hang)."""
    _check_taken_in_time(_invert(_in_time, lambda: _two_of(kind)))


def _captured_and_diagnosed(main: Callable[[], Coroutine[Any, Any, None]]) -> Captured:
    """``asyncio.run(main())`` with every hold a span, captured, and a diagnosis of its
    own inside the capture (``_diagnosed()`` instruments too, which under ``pytest
    --aiotrace`` would nest past the capture)."""
    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig
    from aiotrace.testing import capture_spans

    with capture_spans(min_hold=0) as captured:
        diagnoser = Diagnoser(DiagnosisConfig(block_threshold=None, dump_signals=False), None)
        diagnoser.start()
        try:
            asyncio.run(main())
        finally:
            diagnoser.finish(at_exit=False)
    return captured


FRAMEWORK = """
import contextlib


async def solve(dependency, body):
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(contextlib.asynccontextmanager(dependency)())
        await body
"""

_DEPENDENCY: dict[str, Any] = {}


async def _with_lock() -> Any:
    await _DEPENDENCY["lock"].acquire()  # dependency-takes-lock
    try:
        yield
    finally:
        _DEPENDENCY["lock"].release()


async def _with_semaphore() -> Any:
    async with _DEPENDENCY["sem"]:  # dependency-takes-semaphore
        yield


def test_a_dependency_a_framework_enters_is_held_at_the_programs_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A framework enters the program's generator through an ``AsyncExitStack`` (FastAPI's
    ``Depends``): the hold's site was the framework's line, which enters every
    dependency (``fastapi/dependencies/utils.py:659``), for the holds that never waited.
    It is the program's line that took the lock or the permit; the holder is still the
    frame that runs the framework's ``async with``."""

    fakefw = _installed(tmp_path, monkeypatch, "fakefw", FRAMEWORK)

    async def main() -> None:
        _DEPENDENCY.update(lock=asyncio.Lock(), sem=asyncio.Semaphore(1))
        await fakefw.solve(_with_lock, asyncio.sleep(0.002))
        await fakefw.solve(_with_semaphore, asyncio.sleep(0.002))

    try:
        captured = _captured_and_diagnosed(main)
    finally:
        _DEPENDENCY.clear()
    (lock_hold,) = captured.named(semconv.SPAN_LOCK_HOLD)
    (permit_hold,) = captured.named(semconv.SPAN_SEMAPHORE_HOLD)
    assert lock_hold[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# dependency-takes-lock")
    assert permit_hold[semconv.ATTR_CODE_LINE_NUMBER] == line_of("# dependency-takes-semaphore")
    assert lock_hold[semconv.ATTR_CODE_FILE_PATH].endswith("test_diagnosis.py")


def test_an_aenter_run_as_a_task_of_its_own_holds_what_it_took() -> None:
    """The frame that holds what a context manager took is found up the ``async with``'s
    coroutines, never past a task's first one into the loop's own frames."""
    owners: list[Any] = []

    async def main() -> None:
        lock = asyncio.Lock()
        await asyncio.create_task(_Guard(lock).__aenter__())  # no async with: a task's
        owners.append(lock._aiotrace_owner)  # type: ignore[attr-defined]
        lock.release()

    with _diagnosed():
        asyncio.run(main())
    assert [owner.f_code.co_name for owner in owners] == ["__aenter__"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.10, 3.11 drop a finished frame's caller")
def test_a_lock_a_helper_returned_holding_is_its_callers_task() -> None:
    """``connect()`` takes the lock that ``close()`` gives back, and returns holding it:
    its caller's task holds it. From 3.12 the helper's finished frame still names its
    caller, so the waiters' wait, a leak check and the hold's span all name that task."""
    from aiotrace import _leaks, diagnosis

    described: list[str] = []
    leaks: list[Any] = []

    class Client:
        def __init__(self) -> None:
            self.lock = asyncio.Lock()

        async def connect(self) -> None:
            await self.lock.acquire()

        def close(self) -> None:
            self.lock.release()

    async def session(client: Client, gate: asyncio.Event) -> None:
        await client.connect()
        await gate.wait()
        await asyncio.sleep(0.002)  # a hold spanned at any threshold (a traced session's)
        client.close()

    async def main() -> None:
        client, gate = Client(), asyncio.Event()
        holder = asyncio.create_task(session(client, gate), name="session")
        await asyncio.sleep(0)
        waiter = asyncio.create_task(client.connect(), name="second")
        await asyncio.sleep(0)
        described.append(diagnosis.snapshot().describe_wait(waiter))
        leaks.extend(_leaks.find(0))
        gate.set()
        await holder
        await waiter
        client.close()

    traced = _captured_and_diagnosed(main)
    assert 'held by task "session"' in described[0], described
    assert [leak for leak in leaks if leak.kind == _leaks.LOCK_HELD] == []
    holds = traced.named(semconv.SPAN_LOCK_HOLD)
    assert [hold.get(semconv.ATTR_TASK_NAME) for hold in holds][:1] == ["session"]


def test_what_the_watchdog_reads_from_other_threads_frames_keeps_no_frame() -> None:
    """A frame held while its thread returns from it keeps that call's locals alive:
    what the watchdog reads from other threads' frames (a blocked loop's stack, the
    threads waiting for I/O, every running frame's id) holds none of them."""
    import functools

    from aiotrace import diagnosis

    def frames_in(value: Any) -> list[Any]:
        if isinstance(value, types.FrameType):
            return [value]
        if isinstance(value, (list, tuple, set)):
            return [frame for item in value for frame in frames_in(item)]
        return []

    stop = threading.Event()

    def parked() -> None:
        stop.wait(10)

    thread = threading.Thread(target=parked)
    thread.start()
    try:
        assert thread.ident is not None
        read = [
            diagnosis._from_frames(functools.partial(diagnosis._stack_of, thread.ident)),
            diagnosis._from_frames(diagnosis._threads_waiting_for_io),
            diagnosis._from_frames(diagnosis._frame_ids),
        ]
    finally:
        stop.set()
        thread.join()
    stack, callback = read[0]  # type: ignore[misc]
    assert "parked" in [code.co_name for code, _ in stack]
    assert callback is None  # no loop's callback runs there
    assert frames_in(read) == []
