"""The HTML timeline: what it contains, and what a real browser does with it.

Browser tests drive Debian's Chromium through Playwright (``executable_path``,
never ``playwright install``). They are skipped, with the reason, only when
no Chromium is installed here; ``.ci/run`` installs it and sets ``CI``, and
then a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiotrace import semconv
from aiotrace._assemble import SpanDraft
from aiotrace.timeline import TimelineData, render_html, safe_json, write_html
from tests.cli_support import EXAMPLES, Trace, aiotrace

EVIL = "<img src=x onerror=alert(1)>"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------
# Without a browser
# ---------------------------------------------------------------------------


def test_embedded_data_cannot_break_out_of_its_script() -> None:
    text = safe_json({"name": "</script><script>alert(1)</script>", "x": EVIL, "y": "a&b\u2028"})
    for char in ("<", ">", "&", "\u2028"):
        assert char not in text
    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


def test_a_run_writes_a_timeline_of_its_tasks(tmp_path: Path) -> None:
    args = ("run", "--trace-file=t.json", "--html=out/locks.html", EXAMPLES / "locks.py")
    missing = aiotrace(*args, cwd=tmp_path)
    assert missing.returncode == 2  # no such directory: one line, before anything runs
    assert "cannot write the HTML timeline: no directory" in missing.stderr
    (tmp_path / "out").mkdir()
    result = aiotrace(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "out" / "locks.html"
    size = page.stat().st_size
    assert f"HTML timeline: {page} (" in result.stderr
    assert f"{size / 1e3:.0f} kB" in result.stderr
    data = TimelineData(Trace(tmp_path / "t.json").spans)
    labels = [data.strings[lane[0]] for lane in data.lanes]
    assert sorted(label.split()[0] for label in labels) == sorted(
        ["aiotrace.run", "Task-1", "ann", "bob", "cat", "dan"]
    )
    kinds = [bar[3] for bar in data.bars]
    assert kinds.count(2) == 4  # holds
    assert kinds.count(1) == 3  # waits
    again = aiotrace("report", "t.json", "--html=again.html", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _data(tmp_path / "again.html")["bars"] == _data(page)["bars"]  # the same picture


def test_a_task_that_raised_says_what_and_where() -> None:
    task = SpanDraft(semconv.SPAN_TASK, 1, 2, 0, 5_000_000)
    task.attributes = {semconv.ATTR_TASK_NAME: "loader", semconv.ATTR_OUTCOME: "raised"}
    stacktrace = 'Traceback (most recent call last):\n  File "/srv/app.py", line 7, in loader\n'
    task.events = [
        (
            semconv.EVENT_EXCEPTION,
            5_000_000,
            {
                semconv.ATTR_EXCEPTION_TYPE: "KeyError",
                semconv.ATTR_EXCEPTION_MESSAGE: "'config'",
                semconv.ATTR_EXCEPTION_STACKTRACE: stacktrace,
            },
        )
    ]
    data = TimelineData([task])
    ((_, _, _, _, _, _, _, _, details),) = data.bars
    shown = {data.strings[key]: data.strings[value] for key, value in details}
    assert shown["raised"] == "KeyError: 'config' at app.py:7 in loader"


def _data(page: Path) -> Any:
    line = next(x for x in page.read_text().splitlines() if x.startswith("const DATA = "))
    return json.loads(line[len("const DATA = ") : -1])


def test_pytest_writes_one_timeline_per_session(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        test_t="""
import asyncio

def test_one():
    async def main():
        lock = asyncio.Lock()
        async def hold():
            async with lock:
                await asyncio.sleep(0.002)
        await asyncio.gather(hold(), hold())
    asyncio.run(main())
"""
    )
    result = pytester.runpytest_subprocess(
        "--aiotrace", "--aiotrace-trace-file=none", "--aiotrace-html=pages", timeout=120
    )
    result.assert_outcomes(passed=1)
    (page,) = (pytester.path / "pages").glob("aiotrace-*.html")
    assert "HTML timeline: " in result.stdout.str()
    assert "test_t.py::test_one" in page.read_text()


def _evil_drafts() -> list[SpanDraft]:
    task = SpanDraft(semconv.SPAN_TASK, 1, 10, 0, 5_000_000)
    task.attributes = {semconv.ATTR_TASK_NAME: EVIL, semconv.ATTR_TASK_COROUTINE: "</script>"}
    hold = SpanDraft(semconv.SPAN_LOCK_HOLD, 1, 11, 1_000_000, 3_000_000)
    hold.parent_id = 10
    hold.attributes = {semconv.ATTR_PRIMITIVE_NAME: EVIL, semconv.ATTR_TASK_NAME: EVIL}
    finding = SpanDraft(semconv.SPAN_FINDING, 1, 12, 4_000_000, 4_000_000)
    finding.attributes = {
        semconv.ATTR_FINDING_KIND: "leak",
        semconv.ATTR_FINDING_SUMMARY: f"lock held: {EVIL}",
        semconv.ATTR_FINDING_DETAIL: EVIL,
    }
    return [task, hold, finding]


def test_program_strings_never_become_markup() -> None:
    page = render_html(_evil_drafts(), title=EVIL)
    script = page[page.index("const DATA =") :]
    assert EVIL not in page  # only escaped forms
    assert "<img" not in page
    assert "</script>" not in script[: script.index("\n")]


# ---------------------------------------------------------------------------
# In Chromium
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: .ci/run installs Debian's chromium package")
        pytest.skip("no Chromium here (Debian's chromium package); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield instance
        instance.close()


class Page:
    """An opened timeline, every request and dialog recorded."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on(
            "dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss())
        )
        started = time.perf_counter()
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.aiotraceTimeline && window.aiotraceTimeline.ready")
        self.load_seconds = time.perf_counter() - started

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def close(self) -> None:
        self.page.close()


def _trace(tmp_path: Path, example: str, *flags: str) -> Path:
    result = aiotrace(
        "run",
        "--trace-file=t.json",
        f"--html={tmp_path / 'page.html'}",
        *flags,
        EXAMPLES / example,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / "page.html"


def test_lanes_and_bars_match_the_trace(browser: Any, tmp_path: Path) -> None:
    page = Page(browser, _trace(tmp_path, "semaphores.py"))
    try:
        trace = Trace(tmp_path / "t.json")
        lanes = page.js("aiotraceTimeline.lanes()")
        assert len(lanes) == len(trace.named(semconv.SPAN_TASK)) + 1  # + the run
        bars = page.js("aiotraceTimeline.bars()")
        kinds = [bar["kind"] for bar in bars]
        assert kinds.count("hold") == len(trace.named(semconv.SPAN_SEMAPHORE_HOLD)) == 6
        assert kinds.count("wait") == len(trace.named(semconv.SPAN_SEMAPHORE_ACQUIRE)) == 4
        assert page.requests == [page.page.url]  # nothing but the file itself
        assert page.dialogs == []
    finally:
        page.close()


def test_clicking_a_wait_highlights_the_hold_that_blocked_it(browser: Any, tmp_path: Path) -> None:
    page = Page(browser, _trace(tmp_path, "locks.py"))
    try:
        trace = Trace(tmp_path / "t.json")
        wait = max(trace.named(semconv.SPAN_LOCK_ACQUIRE), key=lambda s: s.end - s.start)
        (hold_id,) = [f"{link[1]:016x}" for link in wait.links]
        holder = trace.by_id(int(hold_id, 16)).attributes[semconv.ATTR_TASK_NAME]
        wait_id = f"{wait.span_id:016x}"
        page.js("id => aiotraceTimeline.show(id)", wait_id)
        where = page.js("id => aiotraceTimeline.barRect(id)", wait_id)
        page.page.mouse.click(where["x"], where["y"])  # a real click on the bar
        assert set(page.js("aiotraceTimeline.highlighted()")) == {wait_id, hold_id}
        assert [lane.split()[0] for lane in page.js("aiotraceTimeline.highlightedLanes()")] == [
            holder
        ]
        details = page.page.text_content("#selected") or ""
        assert "asyncio.Lock.acquire" in details
        assert f"blocked by: {holder}" in details
    finally:
        page.close()


def test_findings_are_listed_and_jump_to_their_tasks(browser: Any, tmp_path: Path) -> None:
    program = Path(__file__).parent / "programs" / "diag" / "deadlock_locks.py"
    result = aiotrace(
        "run",
        "--hang-timeout=5",
        f"--html={tmp_path / 'page.html'}",
        "--no-trace-file",
        program,
        cwd=tmp_path,
    )
    assert result.returncode == 124
    page = Page(browser, tmp_path / "page.html")
    try:
        items = page.page.locator("#findings li")
        assert items.count() == 2
        assert (items.nth(0).text_content() or "").startswith("deadlock2 tasks wait for each other")
        items.nth(0).click()
        lanes = sorted(lane.split()[0] for lane in page.js("aiotraceTimeline.highlightedLanes()"))
        assert lanes == ["to-checking", "to-savings"]
    finally:
        page.close()


def test_names_from_the_program_are_shown_as_text(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "evil.html"
    write_html(_evil_drafts(), str(path), title=EVIL)
    page = Page(browser, path)
    try:
        assert page.dialogs == []
        assert page.js("document.querySelectorAll('img, script[src], iframe').length") == 0
        assert page.page.text_content("#title") == EVIL
        assert any(EVIL in lane for lane in page.js("aiotraceTimeline.lanes()"))
        assert page.js("aiotraceTimeline.findings()") == [f"leak: lock held: {EVIL}"]
        assert EVIL in (page.page.text_content("#findings") or "")
    finally:
        page.close()


def _big_trace(spans: int) -> list[SpanDraft]:
    rng = random.Random(7)
    tasks = 200
    drafts = []
    for t in range(tasks):
        task = SpanDraft(semconv.SPAN_TASK, 1, 1 + t, 0, 10_000_000_000)
        task.attributes = {semconv.ATTR_TASK_NAME: f"worker-{t}"}
        drafts.append(task)
    for i in range(spans - tasks):
        start = rng.randrange(0, 9_990_000_000)
        draft = SpanDraft(
            semconv.SPAN_LOCK_HOLD if i % 2 else semconv.SPAN_LOCK_ACQUIRE,
            1,
            10_000 + i,
            start,
            start + rng.randrange(1_000, 5_000_000),
        )
        draft.parent_id = 1 + i % tasks
        draft.attributes = {semconv.ATTR_PRIMITIVE_NAME: f"lock-{i % 50}"}
        if not i % 2:
            draft.links = [(1, 10_000 + i + 1, 1, {semconv.ATTR_LINK_KIND: "handoff"})]
        drafts.append(draft)
    return drafts


def test_a_100k_span_timeline_loads_and_pans_smoothly(browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "big.html"
    size = write_html(_big_trace(100_000), str(path), title="100k")
    assert size < 30e6
    page = Page(browser, path)
    try:
        assert page.load_seconds < 15, f"loaded in {page.load_seconds:.1f} s"
        assert len(page.js("aiotraceTimeline.bars()")) == 100_000
        page.js("aiotraceTimeline.zoom(0.05)")
        for _ in range(20):
            page.js("aiotraceTimeline.pan(40)")
        times = page.js("aiotraceTimeline.drawTimes()")[-20:]
        assert sorted(times)[len(times) // 2] < 50, f"median redraw {sorted(times)[10]:.0f} ms"
        page.js("aiotraceTimeline.zoom(20)")  # all of it at once, the worst case
        assert page.js("aiotraceTimeline.drawTimes()")[-1] < 500
    finally:
        page.close()
