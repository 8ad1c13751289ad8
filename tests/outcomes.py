"""What each test came to, by node id: kept for this session, written to a file for a parent.

The self-traced suite check (``test_suites_traced.py``) compares a traced run
of this suite with an untraced one. The session running that check has, as a
rule, just run the same tests untraced: it keeps their outcomes here, and the
check runs last, so it can compare with them instead of running the whole
suite a second time (about two minutes here). The traced run, a pytest of
its own, writes its outcomes to the file named by :data:`FILE_VARIABLE`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

FILE_VARIABLE = "AIOTRACE_SUITE_OUTCOMES_FILE"
SEEN: dict[str, str] = {}
"""node id -> passed / skipped / xfailed / failed / error, for every test this process reported."""


def outcome(report: pytest.TestReport) -> str:
    """One phase's outcome, named as JUnit would count it."""
    if report.passed:
        return "passed"
    if hasattr(report, "wasxfail"):
        return "xfailed"
    if report.skipped:
        return "skipped"
    return "failed" if report.when == "call" else "error"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test's outcome is its first phase that did not pass. Under xdist the
    # controller is called with every worker's reports.
    if SEEN.get(report.nodeid, "passed") == "passed":
        SEEN[report.nodeid] = outcome(report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(FILE_VARIABLE)
    if path and not hasattr(session.config, "workerinput"):
        Path(path).write_text(json.dumps(SEEN, indent=1, sort_keys=True), encoding="utf-8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whole-suite checks last, so the session's own outcomes are all in SEEN
    # when the self-traced check compares with them (a stable sort).
    items.sort(key=lambda item: item.get_closest_marker("suite_check") is not None)
