"""The report's "Waited while holding": a holder that waits makes its queue long.

A program with the bug (a lock held across waits for a semaphore and for a
future) and a twin without it (the same waits, and the same long hold with
the same queue, but the waits happen before the lock is taken) run under
``aiotrace run``; the report must name the first exactly and say nothing of
the second.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from aiotrace import semconv
from aiotrace._assemble import SpanDraft
from aiotrace._sites import is_library_file
from aiotrace.cli import EXIT_FINDINGS
from aiotrace.report import (
    HoldRow,
    NestedRow,
    PrimitiveRow,
    Report,
    ReportBuilder,
    counted,
    queue_text,
    render,
    times,
    were_waiting,
)
from tests.cli_support import (
    Trace,
    aiotrace,
    clean_env,
    installed_library,
    marker_line,
    python,
    report_lines,
)

PROGRAM = """\
import asyncio
import sys


async def main(bug: bool) -> None:
    lock = asyncio.Lock()
    slots = asyncio.Semaphore(1)
    reply = asyncio.get_running_loop().create_future()

    async def busy() -> None:
        async with slots:
            await asyncio.sleep(0.05)

    async def waits() -> None:
        async with slots:  # SLOT
            pass
        await reply  # REPLY

    async def holder() -> None:
        if bug:
            async with lock:  # HOLD
                await waits()
        else:
            await waits()
            async with lock:
                await asyncio.sleep(0.1)  # as long a hold, with as long a queue

    async def queued() -> None:
        async with lock:
            pass

    async def answer() -> None:
        await asyncio.sleep(0.2)
        reply.set_result(1)

    answered = asyncio.create_task(answer())
    first = asyncio.create_task(busy())
    await asyncio.sleep(0)
    second = asyncio.create_task(holder())
    await asyncio.sleep(0)
    if not bug:
        await asyncio.sleep(0.25)  # the holder has waited and taken the lock
    others = [asyncio.create_task(queued()) for _ in range(3)]
    await asyncio.gather(answered, first, second, *others)


asyncio.run(main(sys.argv[1] == "bug"))
"""


def _line(marker: str) -> int:
    return next(n for n, text in enumerate(PROGRAM.splitlines(), 1) if f"# {marker}" in text)


def _run(tmp_path: Path, which: str) -> tuple[dict[str, Any], list[str]]:
    (tmp_path / "prog.py").write_text(PROGRAM)
    result = aiotrace(
        "run",
        "--trace-file=t.json",
        "--report-json=r.json",
        "prog.py",
        which,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    return json.loads((tmp_path / "r.json").read_text()), report_lines(result.stderr)


def test_counts_read_as_prose() -> None:
    assert [counted(n, "finding") for n in (0, 1, 2)] == ["0 findings", "1 finding", "2 findings"]
    assert [times(n) for n in (1, 40)] == ["once", "40 times"]
    assert [were_waiting(n) for n in (0, 1, 3)] == [
        "no task was waiting",
        "1 task was waiting",
        "3 tasks were waiting",
    ]


def test_a_lock_held_across_waits_names_each_wait_and_its_line(tmp_path: Path) -> None:
    report, lines = _run(tmp_path, "bug")
    rows = {row["waited_for"]: row for row in report["waits_while_holding"]}
    assert set(rows) == {"slots (prog.py:7)", "reply (prog.py:8)"}, rows
    slot, reply = rows["slots (prog.py:7)"], rows["reply (prog.py:8)"]
    for row, line in ((slot, _line("SLOT")), (reply, _line("REPLY"))):
        assert row["held"] == "lock (prog.py:6)"
        assert row["held_at"] == f"prog.py:{_line('HOLD')}"
        assert row["waited_at"] == f"prog.py:{line}"
        assert row["times"] == 1
        assert row["max_queued"] == 3
    # busy() kept the slot 50 ms; answer() set the reply 200 ms in
    assert 30 < slot["wait_ms"] < reply["wait_ms"] - 50
    assert report["waits_while_holding"][0]["waited_for"] == "reply (prog.py:8)"
    assert (
        f"  lock (prog.py:6), taken at prog.py:{_line('HOLD')}, was held while waiting "
        in "\n".join(lines)
    )

    # The saved trace says the same, whatever order its spans are read in.
    replayed = aiotrace("report", "t.json", "--json", cwd=tmp_path)
    assert json.loads(replayed.stdout)["waits_while_holding"] == report["waits_while_holding"]
    for order in (list, lambda spans: list(reversed(spans))):
        builder = ReportBuilder()
        builder.add(order(Trace(tmp_path / "t.json").spans))
        assert [(row.waited_for, row.times) for row in builder.build().waits_while_holding] == [
            ("reply (prog.py:8)", 1),
            ("slots (prog.py:7)", 1),
        ]


def test_the_same_waits_before_the_lock_are_not_reported(tmp_path: Path) -> None:
    report, lines = _run(tmp_path, "twin")
    assert report["waits_while_holding"] == []
    assert not any(line.startswith("Waited while holding") for line in lines)
    # ... though the hold was as long, with as many queued, and the waits happened
    holds = report["longest_holds"]
    assert any(h["waiters"] == 3 and h["ms"] >= 90 for h in holds), holds
    waited = {row["name"] for row in report["primitives"]}
    assert {"slots (prog.py:7)", "lock (prog.py:6)"} <= waited


def _draft(name: str, start: int, end: int, parent: int = 3, **attrs: object) -> SpanDraft:
    draft = SpanDraft(name, 1, start + 1, start * 1_000_000, end * 1_000_000)
    draft.parent_id = parent
    draft.attributes = {key.replace("__", "."): value for key, value in attrs.items()}
    return draft


def test_only_a_wait_of_the_holder_inside_a_hold_others_queued_for_is_paired() -> None:
    lock = {"aiotrace.primitive.kind": "Lock", "aiotrace.primitive.site": "a.py:1"}
    sem = {"aiotrace.primitive.kind": "Semaphore", "aiotrace.primitive.site": "a.py:2"}
    drafts = [
        # t1 holds the lock 0-100 ms, two queued; t2 holds it 200-300 ms, none queued
        _draft(
            semconv.SPAN_LOCK_HOLD, 0, 100, aiotrace__task__name="t1", aiotrace__waiters=2, **lock
        ),
        _draft(semconv.SPAN_LOCK_HOLD, 200, 300, aiotrace__task__name="t2", **lock),
        # inside t1's hold: t1's wait (paired), t3's (another task's)
        _draft(semconv.SPAN_SEMAPHORE_ACQUIRE, 10, 40, aiotrace__task__name="t1", **sem),
        _draft(semconv.SPAN_SEMAPHORE_ACQUIRE, 10, 40, aiotrace__task__name="t3", **sem),
        # another process's t1 (another parent), inside t1's hold
        _draft(semconv.SPAN_SEMAPHORE_ACQUIRE, 20, 30, aiotrace__task__name="t1", parent=7, **sem),
        # t1's wait that outlasts its hold, and t2's inside a hold nobody queued for
        _draft(semconv.SPAN_SEMAPHORE_ACQUIRE, 90, 150, aiotrace__task__name="t1", **sem),
        _draft(semconv.SPAN_SEMAPHORE_ACQUIRE, 210, 290, aiotrace__task__name="t2", **sem),
    ]
    builder = ReportBuilder()
    builder.add(drafts)
    (row,) = builder.build().waits_while_holding
    assert (row.held, row.waited_for, row.times, row.wait_ms, row.max_queued) == (
        "a.py:1",
        "a.py:2",
        1,
        30.0,
        2,
    )


def test_a_librarys_wait_names_the_programs_line_behind_it_once() -> None:
    """An aiohttp call under a lock: what was waited for and where both end
    ``via app.py:16``; the row says it once, at the end."""
    row = NestedRow(
        held="TokenCache.lock (app.py:47)",
        held_at="app.py:14",
        waited_for="self._waiter (aiohttp/streams.py:714) via app.py:16",
        waited_at="aiohttp/streams.py:716 via app.py:16",
        times=29,
        wait_ms=632.0,
        max_queued=29,
    )
    assert row.text() == (
        "TokenCache.lock (app.py:47), taken at app.py:14, was held while waiting 632 ms "
        "for self._waiter (aiohttp/streams.py:714) at aiohttp/streams.py:716 via app.py:16 "
        "(29 times; up to 29 queued behind)"
    )
    # Different lines behind each: both said.
    row.waited_for = "self._waiter (aiohttp/streams.py:714) via app.py:30"
    assert "(aiohttp/streams.py:714) via app.py:30 at aiohttp/streams.py:716 via app.py:16" in (
        row.text()
    )


TWO_ON_ONE_LINE = """\
import asyncio


async def main():
    a, b = asyncio.Lock(), asyncio.Lock()

    async def one():
        async with a:  # TAKES_A
            await asyncio.sleep(0.05)

    async def two():
        async with b:  # TAKES_B
            await asyncio.sleep(0.02)

    await asyncio.gather(one(), one(), two(), two())


asyncio.run(main())
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 keeps no columns to name them by")
def test_two_primitives_made_on_one_line_are_two_rows(tmp_path: Path) -> None:
    # Counted per line, they were one row, named after one of them, with the
    # other's holds listed under its name: the report pointed at the wrong lock.
    (tmp_path / "prog.py").write_text(TWO_ON_ONE_LINE)
    result = aiotrace("run", "--report-json=r.json", "prog.py", cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    made = marker_line(TWO_ON_ONE_LINE, "TAKES_A") - 3
    assert sorted((r["name"], r["waits"], r["times_held"]) for r in report["primitives"]) == [
        (f"a (prog.py:{made})", 1, 2),
        (f"b (prog.py:{made})", 1, 2),
    ]
    held = {(h["primitive"], h["site"]) for h in report["longest_holds"]}
    assert held == {
        (f"a (prog.py:{made})", f"prog.py:{marker_line(TWO_ON_ONE_LINE, 'TAKES_A')}"),
        (f"b (prog.py:{made})", f"prog.py:{marker_line(TWO_ON_ONE_LINE, 'TAKES_B')}"),
    }


def test_the_longest_lists_give_one_row_per_primitive_and_line_with_its_count() -> None:
    """Ten tasks holding one lock at one line are one culprit, listed once: room for the next."""

    def hold(start: int, end: int, task: str, kind: str, line: int, at: int) -> SpanDraft:
        return _draft(
            semconv.SPAN_LOCK_HOLD if kind == "Lock" else semconv.SPAN_SEMAPHORE_HOLD,
            start,
            end,
            aiotrace__task__name=task,
            aiotrace__primitive__kind=kind,
            aiotrace__primitive__site=f"a.py:{line}",
            code__file__path="a.py",
            code__line__number=at,
        )

    event = {"aiotrace.primitive.kind": "Event", "aiotrace.primitive.site": "a.py:3"}
    waits = [  # three woken at one line by the setter at line 40, one timed out there
        _draft(
            semconv.SPAN_EVENT_WAIT,
            0,
            end,
            aiotrace__task__name=task,
            aiotrace__outcome=outcome,
            aiotrace__waker__task="setter" if outcome == "set" else None,
            aiotrace__waker__site="a.py:40" if outcome == "set" else None,
            code__file__path="a.py",
            code__line__number=30,
            **event,
        )
        for task, end, outcome in [
            ("w1", 80, "set"),
            ("w2", 90, "set"),
            ("w3", 70, "set"),
            ("w4", 50, "timed_out"),
        ]
    ]
    for draft in waits:  # no waker attribute at all where nobody woke it
        draft.attributes = {k: v for k, v in draft.attributes.items() if v is not None}
    builder = ReportBuilder()
    builder.add(
        [
            *(hold(0, ms, f"t{ms}", "Lock", 1, 10) for ms in (50, 60, 40)),  # lock 1, line 10
            hold(0, 30, "t30", "Lock", 1, 11),  # the same lock at another line
            *(hold(0, ms, f"s{ms}", "Semaphore", 2, 20) for ms in (55, 5)),
            *(hold(0, ms, f"x{ms}", "Lock", line, 50) for line, ms in [(5, 9), (6, 8), (7, 7)]),
            *waits,
        ]
    )
    report = builder.build()
    assert [
        (h.primitive, h.site, h.ms, h.holder, h.times, h.total_ms) for h in report.longest_holds
    ] == [
        ("a.py:1", "a.py:10", 60.0, "t60", 3, 150.0),
        ("a.py:2", "a.py:20", 55.0, "s55", 2, 60.0),
        ("a.py:1", "a.py:11", 30.0, "t30", 1, None),
        ("a.py:5", "a.py:50", 9.0, "x9", 1, None),
        ("a.py:6", "a.py:50", 8.0, "x8", 1, None),
    ]
    assert [(w.task, w.outcome, w.times, w.total_ms) for w in report.longest_waits] == [
        ("w2", "set", 3, 240.0),
        ("w4", "timed_out", 1, None),
    ]
    console = Console(file=io.StringIO(), width=300)
    render(report, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "60 ms  a.py:1 held by t60 at a.py:10; 3 holds there, 150 ms in all\n" in text
    assert "30 ms  a.py:1 held by t30 at a.py:11\n" in text
    # Taken by a coroutine that returned holding it, released elsewhere: no holder known.
    unknown = Report(longest_holds=[HoldRow(12.0, "a.py:7", "?", "a.py:70", 0)])
    console = Console(file=io.StringIO(), width=300)
    render(unknown, console)
    assert "12 ms  a.py:7 held at a.py:70\n" in console.file.getvalue()  # type: ignore[attr-defined]
    assert (
        "90 ms  w2 at a.py:30, for a.py:3: set, woken by setter at a.py:40; "
        "3 such waits there, 240 ms in all\n"
    ) in text
    assert Report.from_json(json.loads(json.dumps(report.to_json()))) == report


QUEUE = """\
import asyncio
import sys

SLOW_CONSUMER = sys.argv[1] == "slow-consumer"


async def main() -> None:
    jobs = asyncio.Queue(maxsize=2)

    async def producer() -> None:
        for item in range(10):
            if not SLOW_CONSUMER:
                await asyncio.sleep(0.01)
            await jobs.put(item)
        await jobs.put(None)

    async def consumer() -> None:
        while await jobs.get() is not None:
            if SLOW_CONSUMER:
                await asyncio.sleep(0.01)

    async def borrower() -> None:  # the queue as a pool: take an item, give it back
        item = await jobs.get()
        await asyncio.sleep(0.01)
        jobs.put_nowait(item)

    if sys.argv[1] == "pool":
        jobs.put_nowait("a")
        jobs.put_nowait("b")
        await asyncio.gather(*(borrower() for _ in range(12)))
    else:
        await asyncio.gather(producer(), consumer())


asyncio.run(main())
"""


def _queue_run(tmp_path: Path, mode: str) -> tuple[dict[str, Any], str]:
    """The pipeline's queue: its report row, and its line under "Queues"."""
    (tmp_path / "pipeline.py").write_text(QUEUE)
    result = aiotrace(
        "run", "--no-trace-file", "--report-json=r.json", "pipeline.py", mode, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "r.json").read_text())["primitives"]
    assert row["name"] == "jobs (pipeline.py:8)"
    assert row["capacity"] == 2
    lines = report_lines(result.stderr)
    return row, lines[lines.index("Queues (waits that became spans)") + 1]


def test_a_queue_says_which_side_waited(tmp_path: Path) -> None:
    texts = {}
    for which, operation, other in (
        ("slow-consumer", "put", "get"),
        ("slow-producer", "get", "put"),
    ):
        row, texts[which] = _queue_run(tmp_path, which)
        count, ms = row["by_operation"][operation]
        assert count >= 7  # ten items, each waited for about 10 ms
        assert ms >= 7 * 5
        assert other not in row["by_operation"]
    assert texts["slow-consumer"].startswith("  jobs (pipeline.py:8): maxsize 2; put waited ")
    assert texts["slow-consumer"].endswith("(full more than empty: its consumers fall behind)")
    assert texts["slow-producer"].startswith("  jobs (pipeline.py:8): maxsize 2; get waited ")
    assert texts["slow-producer"].endswith("(empty more than full: its producers fall behind)")


def test_a_queue_used_as_a_pool_says_its_items_are_too_few_or_held_too_long(
    tmp_path: Path,
) -> None:
    row, text = _queue_run(tmp_path, "pool")
    given_back, woken = row["gets_given_back"]
    # 12 borrowers of 2 items: 10 gets wait; the first 2 are woken by borrowers that
    # never waited, the rest by ones that did.
    assert woken == row["by_operation"]["get"][0] == 10
    assert given_back == 8
    assert "put" not in row["by_operation"]
    assert text.startswith("  jobs (pipeline.py:8): maxsize 2; get waited ")
    assert text.endswith(
        f"(a pool: {given_back} of {woken} gets waited for an item a borrower gave back:"
        " too few items, or each held too long)"
    )


def test_an_unbounded_queues_consumers_waiting_is_not_called_a_slow_producer() -> None:
    """An unbounded queue is never full: that its gets waited is all a report can say."""
    row = PrimitiveRow(name="q (app.py:3)", kind="Queue", site="app.py:3", capacity=0)
    row.by_operation = {"get": [1, 1300.0]}
    idle = (
        "q (app.py:3): unbounded; get waited once, 1.30 s"
        " (its consumers waited for items: idle, or fed by a slow producer)"
    )
    assert queue_text(row) == idle
    # One get woken by a put "via" the same program line (a server's lifespan queue,
    # every task of uvicorn's via uvicorn.run's line) is no evidence of a pool.
    row.gets_given_back = [1, 1]
    assert queue_text(row) == idle


def test_a_queue_line_counts_a_single_wait_as_once() -> None:
    row = PrimitiveRow(name="q (app.py:3)", kind="Queue", site="app.py:3", capacity=2)
    row.by_operation = {"put": [1, 11.0], "get": [2, 0.0]}
    assert queue_text(row) == (
        "q (app.py:3): maxsize 2; put waited once, 11 ms; get waited 2 times, 0.0 ms"
        " (full more than empty: its consumers fall behind)"
    )


POOLS = """
import asyncio


async def main() -> None:
    quiet = asyncio.Semaphore(4)
    pools = [asyncio.Semaphore(size) for size in (1, 3)]

    async def use(sem: asyncio.Semaphore) -> None:
        async with sem:
            await asyncio.sleep(0.003)

    await asyncio.gather(*(use(quiet) for _ in range(3)))  # never all four taken
    await asyncio.gather(*(use(pool) for pool in pools for _ in range(4)))


asyncio.run(main())
"""


def test_a_semaphore_line_gives_its_capacity_even_if_it_never_waited(tmp_path: Path) -> None:
    """Its capacity comes from its creation, not from a wait span it may never have had."""
    (tmp_path / "pools.py").write_text(POOLS)
    result = aiotrace("run", "--no-trace-file", "--report-json=r.json", "pools.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["primitives"]}
    assert rows["quiet (pools.py:6)"]["capacity"] == 4
    assert rows["pools (pools.py:7)"]["capacity"] == semconv.CAPACITIES_VARY
    lines = [line.strip() for line in report_lines(result.stderr)]
    semaphores = lines[lines.index("Semaphores") + 1 :]
    assert "quiet (pools.py:6): capacity 4; never waited on in 3 acquisitions" in semaphores
    (pools,) = [line for line in semaphores if line.startswith("pools (pools.py:7)")]
    assert pools.startswith(
        "pools (pools.py:7): capacities vary; 4 of 8 acquisitions waited (50%), "
    )


GIVING_UP = """
import asyncio


async def main() -> None:
    pool = asyncio.Semaphore(2)
    done = asyncio.Event()

    async def use() -> None:
        async with pool:
            await done.wait()

    users = [asyncio.create_task(use()) for _ in range(6)]
    await asyncio.sleep(0)  # two hold, four wait
    users[-1].cancel()  # gives up waiting
    try:
        await asyncio.wait_for(pool.acquire(), 0.005)  # gives up too
    except asyncio.TimeoutError:
        pass
    done.set()
    await asyncio.gather(*users, return_exceptions=True)


asyncio.run(main())
"""


def test_a_semaphore_line_counts_waits_given_up_apart(tmp_path: Path) -> None:
    """Waits that were cancelled or timed out acquired nothing: they were counted
    as acquisitions that waited, "18 of 14 acquisitions waited (129%)"."""
    (tmp_path / "giving_up.py").write_text(GIVING_UP)
    result = aiotrace("run", "--no-trace-file", "--min-wait=0", "giving_up.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in report_lines(result.stderr)]
    (line,) = lines[lines.index("Semaphores") + 1 : lines.index("Semaphores") + 2]
    assert line.startswith(
        "pool (giving_up.py:6): capacity 2; 3 of 5 acquisitions waited (60%); "
        "2 more waits given up (cancelled or timed out), "
    )


TIMING_OUT = """
import asyncio


async def main() -> None:
    lock = asyncio.Lock()
    stop = asyncio.Event()

    async def slow() -> None:
        async with lock:
            await asyncio.sleep(0.05)

    async def impatient() -> str:
        try:
            await asyncio.wait_for(lock.acquire(), 0.01)
        except asyncio.TimeoutError:
            return "gave up"
        lock.release()
        return "got it"

    holder = asyncio.create_task(slow())
    await asyncio.sleep(0)
    print(await asyncio.gather(impatient(), impatient()))
    await holder
    try:  # a poll: an event's wait that times out is the idiom, not a symptom
        await asyncio.wait_for(stop.wait(), 0.01)
    except asyncio.TimeoutError:
        pass


asyncio.run(main())
"""


def test_waits_on_a_lock_that_timed_out_are_listed(tmp_path: Path) -> None:
    """Requests that time out waiting for a lock: the report says how many and after
    how long, and leaves out an event's wait polled with a timeout."""
    (tmp_path / "timing_out.py").write_text(TIMING_OUT)
    result = aiotrace("run", "--no-trace-file", "timing_out.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['gave up', 'gave up']"
    lines = [line.strip() for line in report_lines(result.stderr)]
    start = lines.index("Waits that timed out on locks and semaphores")
    (line,) = [text for text in lines[start + 1 :] if text.startswith("lock ")]
    assert re.fullmatch(
        r"lock \(timing_out.py:6\): 2 waits timed out, after up to \d+(\.\d+)? ms", line
    )
    assert not [text for text in lines[start + 1 :] if text.startswith("stop ")]


FORGETFUL = """
import asyncio


async def dial(i: int) -> int:
    start_next = asyncio.get_running_loop().create_future()  # never set: the winner came first
    await asyncio.sleep(0)
    return i


async def main() -> None:
    for i in range(250):
        await dial(i)
    pool_lock = asyncio.Lock()

    async def grab() -> None:
        await pool_lock.acquire()

    await asyncio.create_task(grab())


asyncio.run(main())
"""


def test_one_leak_made_in_a_loop_is_one_finding_counted_not_a_page_of_copies(
    tmp_path: Path,
) -> None:
    """Every finding is counted, none lost past a cap; repeats of one are listed once."""
    (tmp_path / "forgetful.py").write_text(FORGETFUL)
    result = aiotrace(
        "run", "--check", "--no-trace-file", "--report-json=r.json", "forgetful.py", cwd=tmp_path
    )
    assert result.returncode == EXIT_FINDINGS, result.stderr
    assert f"aiotrace: --check: 251 findings; exit status {EXIT_FINDINGS}" in result.stderr
    lines = report_lines(result.stderr)
    start = lines.index("Findings (251), most severe first")
    assert lines[start + 1 : start + 5] == [
        "LEAK: lock held: pool_lock (forgetful.py:14)",
        "    acquired at forgetful.py:17 in main.<locals>.grab, "
        "which finished without releasing it",
        "LEAK: future unresolved: start_next (forgetful.py:6)  (250 times; the first shown)",
        '    created by task "Task-1", garbage-collected unresolved, no task was waiting',
    ]
    assert lines[start + 5].startswith("No contention")
    futures = lines[lines.index("Futures: 250 (collected 250)") + 1 :]
    assert futures[0] == (
        "  start_next (forgetful.py:6): garbage-collected unresolved (250 futures made there), "
        "no task was waiting"
    )
    assert futures[1].startswith("Tasks: ")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [(f["summary"], f["count"]) for f in report["findings"]] == [
        ("lock held: pool_lock (forgetful.py:14)", 1),
        ("future unresolved: start_next (forgetful.py:6)", 250),
    ]


SHORT = """
import asyncio


async def main() -> None:
    lock = asyncio.Lock()

    async def use() -> None:
        async with lock:
            await asyncio.sleep(0)

    await asyncio.gather(*(use() for _ in range(5)))


asyncio.run(main())
"""


def test_short_waits_give_the_longest_as_a_bound_and_every_hold_is_counted(
    tmp_path: Path,
) -> None:
    """Waits and holds under the thresholds are summed, not timed: no "longest 0.0 ms"."""
    (tmp_path / "short.py").write_text(SHORT)
    rows = {}
    for thresholds in ((), ("--min-wait=0", "--min-hold=0")):
        result = aiotrace(
            "run", "--no-trace-file", "--report-json=r.json", *thresholds, "short.py", cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        (row,) = json.loads((tmp_path / "r.json").read_text())["primitives"]
        assert (row["name"], row["waits"], row["times_held"]) == ("lock (short.py:6)", 4, 5)
        line = next(line for line in report_lines(result.stderr) if "lock (short.py:6)" in line)
        # waits, (waited and longest wait), holds, longest hold
        cells = re.fullmatch(r"\s*lock \(short.py:6\)\s+Lock\s+4\s+(.+ ms)\s+5\s+(.+ ms)\s*", line)
        assert cells is not None, line
        rows[thresholds] = row, cells.groups()
    # Each hold lasts a loop turn: under 1 ms, unless this machine stalled just then.
    row, cells = rows[()]
    for key, cell in zip(("wait", "hold"), cells, strict=True):
        if row[f"max_{key}_under_ms"] is not None:
            assert row[f"max_{key}_under_ms"] == 1.0
            assert row[f"max_{key}_ms"] < 1.0
            assert cell.endswith("< 1.0 ms")
        else:
            assert row[f"max_{key}_ms"] >= 1.0
            assert "<" not in cell
    # Every wait and hold spanned: the longest is known.
    row, cells = rows[("--min-wait=0", "--min-hold=0")]
    assert (row["max_wait_under_ms"], row["max_hold_under_ms"]) == (None, None)
    assert min(row["max_wait_ms"], row["max_hold_ms"]) > 0
    assert "<" not in "".join(cells)


def _summary(kind: str, min_wait_ms: float, **totals: float) -> SpanDraft:
    run = _draft(semconv.SPAN_PROCESS, 0, 1000)
    attrs = {
        semconv.ATTR_PRIMITIVE_KIND: kind,
        semconv.ATTR_PRIMITIVE_SITE: "a.py:1",
        semconv.ATTR_PRIMITIVE_NAME: "lock (a.py:1)",
        semconv.ATTR_SUMMARY_MIN_WAIT_MS: min_wait_ms,
        semconv.ATTR_SUMMARY_MIN_HOLD_MS: 1.0,
        **{f"aiotrace.{key}": value for key, value in totals.items()},
    }
    run.events = [(semconv.EVENT_PRIMITIVE_SUMMARY, 0, attrs)]
    return run


def test_the_longest_wait_is_exact_when_a_span_reached_the_threshold_or_all_were_spans() -> None:
    lock = {
        "aiotrace.primitive.kind": "Lock",
        "aiotrace.primitive.site": "a.py:1",
        "aiotrace.primitive.name": "lock (a.py:1)",  # as every span and summary of it says
    }
    cases = [
        # (spans, summaries) -> (longest wait, longest hold)
        ([], [_summary("Lock", 1.0, waits=3, wait_ms=0.9, operations=4, holds=3)]),
        (
            [_draft(semconv.SPAN_LOCK_ACQUIRE, 0, 5, **lock)],
            [_summary("Lock", 1.0, waits=3, wait_ms=5.5, max_wait_ms=5.0, operations=4, holds=3)],
        ),
        (  # spanned at zero thresholds in one process, counted under 2 ms in another
            [_draft(semconv.SPAN_LOCK_ACQUIRE, 0, 0, **lock)],
            [
                _summary("Lock", 0.0, waits=1, operations=1, holds=1),
                _summary("Lock", 2.0, waits=1, wait_ms=1.5, operations=1, holds=1),
            ],
        ),
        (  # every wait and hold a span: exact, however short
            [_draft(semconv.SPAN_LOCK_ACQUIRE, 0, 0, **lock)]
            + [_draft(semconv.SPAN_LOCK_HOLD, 0, 0, **lock)] * 2,
            [_summary("Lock", 1.0, waits=1, operations=2, holds=2)],
        ),
    ]
    found = []
    for spans, summaries in cases:
        builder = ReportBuilder()
        builder.add([*spans, *summaries])
        (row,) = builder.build().primitives
        found.append((row.times_held, row.longest_wait_text(), row.longest_hold_text()))
    assert found == [
        (4, "< 1.0 ms", "< 1.0 ms"),
        (4, "5.0 ms", "< 1.0 ms"),
        (2, "< 2.0 ms", "< 1.0 ms"),
        (2, "0.0 ms", "0.0 ms"),
    ]


SAME_NAMES = """\
import asyncio
import multiprocessing
import sys


async def contend(hold_s):
    lock = asyncio.Lock()

    async def use():
        async with lock:
            await asyncio.sleep(hold_s)

    await asyncio.gather(
        asyncio.create_task(use(), name="first"), asyncio.create_task(use(), name="second")
    )


def run(hold_s):
    asyncio.run(contend(hold_s))


if __name__ == "__main__":
    if sys.argv[1] == "alone":
        run(0.06)
    else:
        spawn = multiprocessing.get_context("spawn")
        workers = [spawn.Process(target=run, args=(s,)) for s in (0.06, 0.09)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
"""


def test_tasks_of_one_name_in_several_processes_are_told_apart_by_process(
    tmp_path: Path,
) -> None:
    # Every worker of a pool has its "Task-2": with several processes, a
    # holder named alone could be any of them.
    (tmp_path / "prog.py").write_text(SAME_NAMES)
    lines: dict[str, list[str]] = {}
    for which in ("alone", "workers"):
        result = aiotrace(
            "run",
            f"--trace-file={which}.json",
            f"--report-json={which}.json.r",
            "prog.py",
            which,
            cwd=tmp_path,
            env=clean_env(),
        )
        assert result.returncode == 0, result.stderr
        lines[which] = [line for line in report_lines(result.stderr) if " held by " in line]
        replayed = aiotrace("report", f"{which}.json", cwd=tmp_path, env=clean_env())
        assert replayed.returncode == 0, replayed.stderr
        again = [line for line in report_lines(replayed.stdout) if " held by " in line]
        assert again == lines[which]  # the trace file keeps each span's process

    # One lock at one line: one row, the longest hold, standing for both
    (alone,) = lines["alone"]
    assert re.fullmatch(
        r" +\d+ ms  lock \(prog\.py:\d+\) held by (first|second) at prog\.py:\d+( \(1 waiting\))?; "
        r"2 holds there, \d+ ms in all",
        alone,
    ), alone

    trace = Trace(tmp_path / "workers.json")
    workers = {int(p.attributes[semconv.ATTR_PID]) for p in trace.named(semconv.SPAN_PROCESS)}
    assert len(workers) == 2
    (slow,) = {  # the worker whose holds were 90 ms
        trace.resources[hold.span_id][semconv.ATTR_PID]
        for hold in trace.named(semconv.SPAN_LOCK_HOLD)
        if hold.end - hold.start > 80_000_000
    }
    report = json.loads((tmp_path / "workers.json.r").read_text())
    assert report["processes"] == 3  # the program and its two workers
    (top,) = report["longest_holds"]
    assert (top["process"], top["times"]) == (slow, 4)
    assert top["holder"] in ("first", "second")
    waiting = " (1 waiting)" if top["waiters"] else ""
    assert lines["workers"] == [
        f"{top['ms']:>7.0f} ms  lock (prog.py:7) held by {top['holder']} in process {slow} "
        f"at prog.py:10{waiting}; 4 holds there, {top['total_ms']:.0f} ms in all"
    ]


LIBRARY = """\
import asyncio

_connection = asyncio.Lock()


async def query(seconds):
    async with _connection:  # LIB_HOLD
        await asyncio.sleep(seconds)
"""

USES_LIBRARY = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import slowdb


async def report():
    await slowdb.query(0.06)  # VIA_REPORT


async def index():
    await slowdb.query(0.06)  # VIA_INDEX


async def main():
    mine = asyncio.Lock()

    async def own():
        async with mine:  # OWN
            await asyncio.sleep(0.03)

    await asyncio.gather(report(), index(), own(), own())


asyncio.run(main())
"""


WAKING_LIBRARY = """\
import asyncio

_ready = asyncio.Event()


async def connect(seconds):
    await asyncio.sleep(seconds)
    _ready.set()  # LIB_SET


async def ready():
    await _ready.wait()


def deliver(future, value):
    future.set_result(value)  # LIB_RESOLVE
"""

WAKES_THROUGH_LIBRARY = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import wakedb


async def main():
    fut = asyncio.get_running_loop().create_future()

    async def answer():
        await asyncio.sleep(0.06)
        wakedb.deliver(fut, 42)  # VIA_DELIVER

    async def start():
        await wakedb.connect(0.06)  # VIA_CONNECT

    async def use():
        return await fut

    await asyncio.gather(wakedb.ready(), start(), answer(), use())


asyncio.run(main())
"""


def _run_with_library(
    tmp_path: Path, package: str, library: str, program: str
) -> subprocess.CompletedProcess[str]:
    """``aiotrace run`` of ``program`` beside ``library`` installed as ``package``; the trace
    goes to ``t.json`` and the report to ``r.json``."""
    installed_library(tmp_path, package, library, program)
    result = aiotrace(
        "run",
        "--trace-file=t.json",
        "--report-json=r.json",
        "prog.py",
        cwd=tmp_path,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stderr
    return result


def test_a_wake_at_a_library_line_says_which_line_of_the_program_led_to_it(
    tmp_path: Path,
) -> None:
    # A library sets its event, resolves the program's future: at its own
    # line, the same for every caller; the program's line says which call.
    result = _run_with_library(tmp_path, "wakedb", WAKING_LIBRARY, WAKES_THROUGH_LIBRARY)

    set_at = f"wakedb/__init__.py:{marker_line(WAKING_LIBRARY, 'LIB_SET')}"
    resolved_at = f"wakedb/__init__.py:{marker_line(WAKING_LIBRARY, 'LIB_RESOLVE')}"
    connect = f"prog.py:{marker_line(WAKES_THROUGH_LIBRARY, 'VIA_CONNECT')}"
    deliver = f"prog.py:{marker_line(WAKES_THROUGH_LIBRARY, 'VIA_DELIVER')}"
    trace = Trace(tmp_path / "t.json")
    wait = trace.one(semconv.SPAN_EVENT_WAIT)
    assert str(wait.attributes[semconv.ATTR_WAKER_SITE]).endswith(set_at)
    assert wait.attributes[semconv.ATTR_WAKER_VIA_SITE] == connect
    future = trace.one(semconv.SPAN_FUTURE)
    assert str(future.attributes[semconv.ATTR_WAKER_SITE]).endswith(resolved_at)
    assert future.attributes[semconv.ATTR_WAKER_VIA_SITE] == deliver
    future_wait = trace.one(semconv.SPAN_FUTURE_WAIT)
    assert future_wait.attributes[semconv.ATTR_WAKER_VIA_SITE] == deliver
    # The span events of the waking calls say it too
    (event_set,) = [e for s in trace.spans for e in s.events if e[0] == semconv.SPAN_EVENT_SET]
    assert event_set[2][semconv.ATTR_VIA_SITE] == connect

    report = json.loads((tmp_path / "r.json").read_text())
    (long_wait,) = report["longest_waits"]
    assert long_wait["by_at"] == f"{set_at} via {connect}"
    (slowest,) = report["slowest_futures"]
    assert slowest["at"] == f"{resolved_at} via {deliver}"
    text = "\n".join(report_lines(result.stderr))
    assert f"woken by Task-3 at {set_at} via {connect}" in text
    assert f"its result set by Task-4 at {resolved_at} via {deliver}" in text
    assert re.search(r"^Futures: .*; waited for longest:$", text, re.M)


def test_a_library_primitive_says_which_line_of_the_program_led_to_it(tmp_path: Path) -> None:
    # Every request takes an installed library's lock at the library's line:
    # the program's line that called it is what tells the waits apart.
    installed_library(tmp_path, "slowdb", LIBRARY, USES_LIBRARY)
    result = aiotrace(
        "run", "--min-hold=0", "--trace-file=t.json", "prog.py", cwd=tmp_path, env=clean_env()
    )
    assert result.returncode == 0, result.stderr

    lib_line = marker_line(LIBRARY, "LIB_HOLD")
    callers = {f"prog.py:{marker_line(USES_LIBRARY, m)}" for m in ("VIA_REPORT", "VIA_INDEX")}
    trace = Trace(tmp_path / "t.json")
    theirs = [
        s
        for s in trace.spans
        if s.name in (semconv.SPAN_LOCK_HOLD, semconv.SPAN_LOCK_ACQUIRE)
        and str(s.attributes[semconv.ATTR_CODE_FILE_PATH]).endswith("slowdb/__init__.py")
    ]
    holds = [s for s in theirs if s.name == semconv.SPAN_LOCK_HOLD]
    (wait,) = [s for s in theirs if s.name == semconv.SPAN_LOCK_ACQUIRE]
    assert {s.attributes[semconv.ATTR_CODE_LINE_NUMBER] for s in theirs} == {lib_line}
    assert {s.attributes[semconv.ATTR_VIA_SITE] for s in holds} == callers
    # The wait is the second caller's: the hold it waited for is the other one's.
    (first,) = [s for s in holds if s.end <= wait.end]
    assert wait.attributes[semconv.ATTR_VIA_SITE] in callers - {
        first.attributes[semconv.ATTR_VIA_SITE]
    }
    own = [
        s
        for s in trace.spans
        if s.name in (semconv.SPAN_LOCK_HOLD, semconv.SPAN_LOCK_ACQUIRE) and s not in theirs
    ]
    assert len(own) == 3  # two holds, one wait, at the program's own line: no "via"
    assert all(semconv.ATTR_VIA_SITE not in s.attributes for s in own)
    held = [line for line in report_lines(result.stderr) if "held by" in line]
    for caller in callers:
        assert sum(f"at slowdb/__init__.py:{lib_line} via {caller}" in line for line in held) == 1


POOL_LIBRARY = """\
import asyncio

_stats_lock = asyncio.Lock()  # LIB_MODULE_LOCK


class Pool:
    def __init__(self, size):
        self._sem = asyncio.Semaphore(size)  # LIB_SEM
        self.ready = asyncio.get_running_loop().create_future()  # LIB_FUTURE

    async def query(self, seconds):
        async with _stats_lock:
            pass
        async with self._sem:
            await asyncio.sleep(seconds)


def make_pool(into):
    into.set_result(Pool(1))
"""

USES_POOLS = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import aiotrace
import minipool


async def main():
    users = minipool.Pool(1)  # USERS
    orders = minipool.Pool(1)  # ORDERS
    aiotrace.name(users._sem, "users-sem")
    made = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(minipool.make_pool, made)
    background = await made
    mine = asyncio.Lock()
    async with mine:
        await background.query(0)
    await asyncio.gather(
        *(users.query(0.01) for _ in range(3)), *(orders.query(0.04) for _ in range(3))
    )
    for pool in (users, orders, background):
        pool.ready.set_result(None)


asyncio.run(main())
"""


CHANNEL_LIBRARY = """\
import asyncio
from dataclasses import dataclass, field


class Signal:
    def __init__(self):
        self.event = asyncio.Event()  # LIB_EVENT


@dataclass
class Channel:
    ready: Signal = field(default_factory=Signal)


def open_channel():
    return Channel()
"""

OPENS_CHANNEL = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import minichan


async def main():
    channel = minichan.open_channel()  # VIA_OPEN
    asyncio.get_running_loop().call_later(0.02, channel.ready.event.set)
    await channel.ready.event.wait()


asyncio.run(main())
"""


def test_a_librarys_dataclass_default_is_placed_at_the_program_line_past_its_init(
    tmp_path: Path,
) -> None:
    # The library's dataclass makes the event in its generated __init__, whose
    # line (<string>:3) names nothing: the program's line that led there does.
    _run_with_library(tmp_path, "minichan", CHANNEL_LIBRARY, OPENS_CHANNEL)
    report = json.loads((tmp_path / "r.json").read_text())
    site = f"minichan/__init__.py:{marker_line(CHANNEL_LIBRARY, 'LIB_EVENT')}"
    via = f"prog.py:{marker_line(OPENS_CHANNEL, 'VIA_OPEN')}"
    assert [(r["name"], r["site"], r["via"]) for r in report["primitives"]] == [
        (f"self.event ({site}) via {via}", site, via)
    ]


RUNNER_LIBRARY = """\
import asyncio


def run():
    event = asyncio.Event()  # made outside any task, under nothing of the program's

    async def main():
        asyncio.get_running_loop().call_later(0.02, event.set)
        await event.wait()

    asyncio.run(main())
"""

# As pytest-xdist starts a worker: `python -c` code that execs more code from a string,
# which runs the library.
BOOTSTRAP = """\
import json, sys
sys.path.insert(0, "site-packages")
from aiotrace import semconv
from aiotrace.testing import capture_spans
with capture_spans() as captured:
    exec(compile("import minirun\\nminirun.run()", "<string>", "exec"))
(wait,) = [s for s in captured.spans if s.name == semconv.SPAN_EVENT_WAIT]
print(json.dumps(dict(wait.attributes)))
"""


def test_a_bootstrap_and_a_console_script_are_not_the_program_line_behind_a_library(
    tmp_path: Path,
) -> None:
    # What runs a library's code is not the program when it is a `python -c`
    # bootstrap (a pytest-xdist worker's) or the environment's console script
    # (bin/pytest): a primitive the library made names no line of theirs.
    installed_library(tmp_path, "minirun", RUNNER_LIBRARY, "")
    result = python("-c", BOOTSTRAP, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    attributes = json.loads(result.stdout)
    assert str(attributes[semconv.ATTR_CODE_FILE_PATH]).endswith("minirun/__init__.py")
    assert semconv.ATTR_PRIMITIVE_VIA_SITE not in attributes
    assert is_library_file(os.path.join(sys.prefix, "bin", "pytest"))
    assert not is_library_file(str(tmp_path / "pytest"))


def test_a_librarys_primitives_are_counted_apart_by_the_program_line_that_made_them(
    tmp_path: Path,
) -> None:
    # Every pool's semaphore is made at one line of the library: the line of
    # the program that made the pool says which pool waited.
    result = _run_with_library(tmp_path, "minipool", POOL_LIBRARY, USES_POOLS)

    sem_site = f"minipool/__init__.py:{marker_line(POOL_LIBRARY, 'LIB_SEM')}"
    future_site = f"minipool/__init__.py:{marker_line(POOL_LIBRARY, 'LIB_FUTURE')}"
    module_site = f"minipool/__init__.py:{marker_line(POOL_LIBRARY, 'LIB_MODULE_LOCK')}"
    users, orders = (f"prog.py:{marker_line(USES_POOLS, m)}" for m in ("USERS", "ORDERS"))
    orders_sem = f"self._sem ({sem_site}) via {orders}"

    report = json.loads((tmp_path / "r.json").read_text())
    rows = [(r["name"], r["site"], r["via"], r["waits"]) for r in report["primitives"]]
    # Two rows, not one: the orders' pool waited longest (40 ms queries), first.
    assert rows == [(orders_sem, sem_site, orders, 2), ("users-sem", sem_site, users, 2)], rows
    assert report["primitives"][0]["wait_ms"] > report["primitives"][1]["wait_ms"]
    assert f"  {orders_sem}: capacity 1; 2 of 3 acquisitions waited" in "\n".join(
        report_lines(result.stderr)
    )

    trace = Trace(tmp_path / "t.json")
    waits = trace.named(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert sorted(str(w.attributes[semconv.ATTR_PRIMITIVE_VIA_SITE]) for w in waits) == sorted(
        [users, users, orders, orders]
    )
    assert {w.attributes[semconv.ATTR_PRIMITIVE_SITE] for w in waits} == {sem_site}
    # A pool made by a loop callback has no line of the program's behind it;
    # a module-level lock is made by the library's import, once: neither has one.
    summaries = {
        (attrs[semconv.ATTR_PRIMITIVE_SITE], attrs.get(semconv.ATTR_PRIMITIVE_VIA_SITE)): attrs
        for span in trace.spans
        for name, _, attrs in span.events
        if name == semconv.EVENT_PRIMITIVE_SUMMARY
    }
    assert set(summaries) == {
        (sem_site, users),
        (sem_site, orders),
        (sem_site, None),
        (module_site, None),
        (f"prog.py:{marker_line(USES_POOLS, 'USERS') + 6}", None),  # the program's own lock
    }, set(summaries)
    assert summaries[(sem_site, None)][semconv.ATTR_PRIMITIVE_NAME] == f"self._sem ({sem_site})"
    assert summaries[(module_site, None)][semconv.ATTR_PRIMITIVE_NAME] == (
        f"_stats_lock ({module_site})"
    )
    # The library's futures, likewise.
    futures = {
        s.attributes.get(semconv.ATTR_PRIMITIVE_VIA_SITE): s.attributes[semconv.ATTR_PRIMITIVE_NAME]
        for s in trace.named(semconv.SPAN_FUTURE)
        if s.attributes[semconv.ATTR_PRIMITIVE_SITE] == future_site
    }
    assert futures == {
        users: f"self.ready ({future_site}) via {users}",
        orders: f"self.ready ({future_site}) via {orders}",
        None: f"self.ready ({future_site})",
    }

    # The trace file alone gives the same rows.
    replayed = aiotrace("report", "t.json", "--json", cwd=tmp_path)
    assert json.loads(replayed.stdout)["primitives"] == report["primitives"]


CONN_LIBRARY = """\
import asyncio


class Connection:
    def __init__(self):
        self.inbox = None
        self.reader = asyncio.get_running_loop().create_task(self._start())  # LIB_TASK

    async def _start(self):
        # The reader task starts one more: the chain still leads to the program.
        await asyncio.sleep(0)  # from here on, nothing of the program's is on the stack
        await asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        self.inbox = asyncio.Queue()  # LIB_QUEUE
        return await self.inbox.get()  # LIB_GET


async def worker():
    done = asyncio.Event()  # LIB_EVENT
    asyncio.get_running_loop().call_later(0.03, done.set)
    await done.wait()  # LIB_WAIT
"""

USES_CONNECTIONS = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import miniconn


async def main():
    users = miniconn.Connection()  # USERS
    orders = miniconn.Connection()  # ORDERS
    await asyncio.sleep(0.03)
    users.inbox.put_nowait(1)
    orders.inbox.put_nowait(2)
    await asyncio.gather(users.reader, orders.reader)
    await asyncio.create_task(miniconn.worker())  # WORKER


asyncio.run(main())
"""


_MAIN = "async def main():\n"
USES_EAGER_CONNECTIONS = USES_CONNECTIONS.replace(
    _MAIN, _MAIN + "    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)\n"
)


@pytest.mark.parametrize(
    "program",
    [
        pytest.param(USES_CONNECTIONS, id="tasks"),
        pytest.param(
            USES_EAGER_CONNECTIONS,
            id="eager-tasks",
            marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+"),
        ),
    ],
)
def test_what_a_librarys_task_makes_is_told_apart_by_the_program_line_behind_the_task(
    tmp_path: Path, program: str
) -> None:
    # A library's reader task makes each connection's queue at one line of the
    # library, with no line of the program's on its stack: the program's line
    # that led to the task (two tasks deep here) says which connection. An
    # eager task's first step (asyncio.eager_task_factory) runs inside
    # create_task, before aiotrace has registered the task: the same.
    _run_with_library(tmp_path, "miniconn", CONN_LIBRARY, program)
    queue_site, get_site, event_site, wait_site = (
        f"miniconn/__init__.py:{marker_line(CONN_LIBRARY, m)}"
        for m in ("LIB_QUEUE", "LIB_GET", "LIB_EVENT", "LIB_WAIT")
    )
    users, orders, worker = (
        f"prog.py:{marker_line(program, m)}" for m in ("USERS", "ORDERS", "WORKER")
    )
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["site"], r["via"]): r["name"] for r in report["primitives"]}
    assert rows == {
        (queue_site, users): f"self.inbox ({queue_site}) via {users}",
        (queue_site, orders): f"self.inbox ({queue_site}) via {orders}",
        # A library's coroutine made a task by the program: the task's line.
        (event_site, worker): f"done in worker ({event_site}) via {worker}",
    }, rows

    trace = Trace(tmp_path / "t.json")
    gets = trace.named(semconv.SPAN_QUEUE_GET)
    assert sorted(
        (
            str(g.attributes[semconv.ATTR_PRIMITIVE_VIA_SITE]),
            str(g.attributes[semconv.ATTR_VIA_SITE]),
        )
        for g in gets
    ) == sorted([(users, users), (orders, orders)])
    assert {g.attributes[semconv.ATTR_CODE_LINE_NUMBER] for g in gets} == {
        int(get_site.rsplit(":", 1)[1])
    }
    (wait,) = trace.named(semconv.SPAN_EVENT_WAIT)
    assert wait.attributes[semconv.ATTR_VIA_SITE] == worker
    # The library's tasks themselves say which of the program's lines they are for;
    # the program's own tasks need not.
    vias = sorted(
        (str(t.attributes[semconv.ATTR_TASK_COROUTINE]), t.attributes.get(semconv.ATTR_VIA_SITE))
        for t in trace.named(semconv.SPAN_TASK)
    )
    assert vias == sorted(
        [
            ("Connection._read", orders),
            ("Connection._read", users),
            ("Connection._start", orders),
            ("Connection._start", users),
            ("main", None),
            ("worker", None),
        ]
    ), vias
    assert wait.attributes[semconv.ATTR_CODE_LINE_NUMBER] == int(wait_site.rsplit(":", 1)[1])


FAILING_LIBRARY = """\
async def fetch(key):
    raise LookupError(f"no {key}")  # LIB_RAISE
"""

FAILING_TASKS = """\
import asyncio
import sys

sys.path.insert(0, "site-packages")
import kvstore

ready = asyncio.Event()


async def loader():
    await asyncio.sleep(0.01)
    config = {}["config"]  # LOADER
    ready.set()


async def worker(n):
    await kvstore.fetch(n)  # VIA_FETCH


async def handler():
    await asyncio.wait_for(ready.wait(), 0.02)  # WAIT_FOR


async def main():
    tasks = [asyncio.create_task(loader(), name="loader")]
    await asyncio.sleep(0.03)  # the loader fails first
    tasks += [asyncio.create_task(worker(n), name=f"worker-{n}") for n in range(3)]
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    tasks.append(asyncio.create_task(handler(), name="handler"))
    await asyncio.gather(tasks[-1], return_exceptions=True)
    sys.exit(0)  # an exit: raised, not a failure


asyncio.run(main())
"""

TIMEOUT_ERROR = "TimeoutError" if sys.version_info >= (3, 11) else "asyncio.exceptions.TimeoutError"


def test_tasks_that_raised_are_listed_first_to_fail_first_with_the_line(tmp_path: Path) -> None:
    """A background task dying is asyncio's quiet failure: Python says so only when the
    task is collected, if ever. The report names it, what it raised, and the line."""
    result = _run_with_library(tmp_path, "kvstore", FAILING_LIBRARY, FAILING_TASKS)
    loader = f"prog.py:{marker_line(FAILING_TASKS, 'LOADER')} in loader"
    fetch = f"kvstore/__init__.py:{marker_line(FAILING_LIBRARY, 'LIB_RAISE')} in fetch"
    via = f"prog.py:{marker_line(FAILING_TASKS, 'VIA_FETCH')} in worker"
    wait_for = f"prog.py:{marker_line(FAILING_TASKS, 'WAIT_FOR')} in handler"
    report = json.loads((tmp_path / "r.json").read_text())
    # The main task's SystemExit is counted too; before 3.12, wait_for's inner task is cancelled.
    assert report["tasks"]["raised"] == 6
    rows = [
        (row["task"], row["coroutine"], row["exception"], row["message"], row["at"], row["times"])
        for row in report["failed_tasks"]
    ]
    assert rows == [
        ("loader", "loader", "KeyError", "'config'", loader, 1),
        ("worker-0", "worker", "LookupError", "no 0", f"{fetch} via {via}", 3),
        # Raised in asyncio's wait_for: the line is the program's that awaited it.
        ("handler", "handler", TIMEOUT_ERROR, "", wait_for, 1),
    ]
    lines = report_lines(result.stderr)
    at = next(n for n, line in enumerate(lines) if line.startswith("Tasks: "))
    assert lines[at + 1 : at + 4] == [
        f"  loader raised KeyError: 'config' at {loader}",
        f"  worker-0 (worker) raised LookupError: no 0 at {fetch} via {via}; 3 such tasks",
        f"  handler raised {TIMEOUT_ERROR} at {wait_for}",
    ]
    assert lines[at + 4].startswith("Spans: ")
    # Read back from the trace file, the same.
    again = aiotrace("report", "t.json", "--json", cwd=tmp_path)
    assert json.loads(again.stdout)["failed_tasks"] == report["failed_tasks"]


def test_a_raise_site_is_read_from_the_standard_stacktrace() -> None:
    from aiotrace.report import raise_site

    asyncio_dir = Path(asyncio.__file__).parent
    chained = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/db.py", line 3, in connect\n'
        "    raise OSError\n"
        "OSError\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/srv/app/main.py", line 40, in handle\n'
        "    await client.get(url)\n"
        '  File "<decorator generated wrapper for get>", line 2, in get\n'
        '  File "/venv/lib/python3.12/site-packages/httpx/_client.py", line 1700, in get\n'
        "    raise ConnectError\n"
        f'  File "{asyncio_dir / "tasks.py"}", line 500, in wait_for\n'
        "httpx.ConnectError\n"
    )
    assert raise_site(chained) == "httpx/_client.py:1700 in get via main.py:40 in handle"
    assert raise_site("ValueError: no frames\n") is None
    # Code a library generated is the library's; the program's own strings are not.
    assert is_library_file("<sqlalchemy generated warned() wrapper for create_engine>")
    assert is_library_file("<attrs generated init app.Pool>")
    for program in ("<string>", "<stdin>", "<doctest app.rst[3]>", "<ipython-input-4-ab>"):
        assert not is_library_file(program)


def test_a_relative_name_that_is_no_file_here_is_a_compiled_librarys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cython names a frame by the source it compiled, as on the machine that built it:
    that is no line of the program's, whose relative names are files from here."""
    from aiotrace.report import raise_site

    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib").mkdir()  # a folder of that name here changes nothing
    (tmp_path / "src" / "shop").mkdir(parents=True)
    (tmp_path / "src" / "shop" / "orders.py").write_text("")
    (tmp_path / "shop.pyz").write_bytes(b"")
    assert is_library_file("lib/sqlalchemy/engine/_result_ct.py")
    assert is_library_file("asyncpg/protocol/protocol_t.pyx")
    assert not is_library_file("src/shop/orders.py")  # PYTHONPATH=src
    assert not is_library_file("shop.pyz/shop/main.py")  # a zipapp's
    trace = (
        "Traceback (most recent call last):\n"
        '  File "src/shop/orders.py", line 20, in worker\n'
        "    return r.scalar_one().id\n"
        '  File "lib/sqlalchemy/engine/_result_ct.py", line 539, in _only_one_row\n'
        "sqlalchemy.exc.NoResultFound\n"
    )
    assert raise_site(trace) == "_result_ct.py:539 in _only_one_row via orders.py:20 in worker"


def test_tasks_that_raised_past_five_kinds_are_counted_not_listed() -> None:
    builder = ReportBuilder()
    drafts = []
    for n in range(9):  # seven kinds of failure, the last kind three times
        kind = min(n, 6)
        draft = _draft(
            semconv.SPAN_TASK,
            n,
            100 - n,  # ended last to first: listed first to fail first
            aiotrace__task__name=f"t{n}",
            aiotrace__task__coroutine=f"job{kind}",
            aiotrace__outcome=semconv.OUTCOME_RAISED,
        )
        draft.events = [
            (
                semconv.EVENT_EXCEPTION,
                0,
                {
                    semconv.ATTR_EXCEPTION_TYPE: "ValueError",
                    semconv.ATTR_EXCEPTION_MESSAGE: f"bad {kind}",
                    semconv.ATTR_EXCEPTION_STACKTRACE: (
                        f'  File "/srv/jobs.py", line {kind + 10}, in job{kind}\n'
                    ),
                },
            )
        ]
        drafts.append(draft)
    builder.add(drafts)
    report = builder.build()
    assert [(row.task, row.times) for row in report.failed_tasks] == [
        ("t8", 3),  # the first of its kind to end: t8 ended before t7 and t6
        ("t5", 1),
        ("t4", 1),
        ("t3", 1),
        ("t2", 1),
        ("t1", 1),
        ("t0", 1),
    ]
    console = Console(file=io.StringIO(), width=300)
    render(report, console)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    at = lines.index("Tasks: 9 (raised 9)")
    assert lines[at + 1 : at + 7] == [
        "  t8 (job6) raised ValueError: bad 6 at jobs.py:16 in job6; 3 such tasks",
        "  t5 (job5) raised ValueError: bad 5 at jobs.py:15 in job5",
        "  t4 (job4) raised ValueError: bad 4 at jobs.py:14 in job4",
        "  t3 (job3) raised ValueError: bad 3 at jobs.py:13 in job3",
        "  t2 (job2) raised ValueError: bad 2 at jobs.py:12 in job2",
        "  and 2 more that raised",
    ]
    assert Report.from_json(json.loads(json.dumps(report.to_json()))) == report
