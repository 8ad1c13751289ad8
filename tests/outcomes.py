"""What each test came to, by node id: kept for this session, written to a file for a parent.

The self-traced suite check (``test_suites_traced.py``) compares a traced run
of this suite with an untraced one. The session running that check has, as a
rule, just run the same tests untraced: it keeps their outcomes here, and the
check runs last, so it can compare with them instead of running the whole
suite a second time (about two minutes here). The traced run, a pytest of
its own, writes its outcomes to the file named by :data:`FILE_VARIABLE`.

It also notes which tests ran *out of process*: all they did was start child
processes, each with an environment made by ``clean_env`` (which drops the
variables a traced session exports: ``TRACEPARENT``, ``AIOTRACE_*``,
``PYTHONPATH``...), and they ran no event loop and forked nothing here. A
traced session cannot reach what such a test does, so the check does not
repeat it (most of this suite's time is in such tests).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

FILE_VARIABLE = "AIOTRACE_SUITE_OUTCOMES_FILE"
SELF_TRACED_VARIABLE = "AIOTRACE_SUITE_SELF_TRACED"
"""Set in the self-traced run: tests that draw many examples draw a sample of them there.

The untraced session ran them all; traced, each example costs two to three
times as much (the tests' own tracing runs inside the session's).
"""
SEEN: dict[str, str] = {}
"""node id -> passed / skipped / xfailed / failed / error, for every test this process reported."""
OUT_OF_PROCESS: set[str] = set()
"""Node ids of the tests this process reported as having run only out of process."""

STEERING = ("OTEL_", "AIOTRACE_")
"""Prefixes of the variables that steer tracing, which with :data:`STEERING_KEYS` a traced
session exports to its children."""
STEERING_KEYS = ("TRACEPARENT", "TRACESTATE", "PYTHONPATH")
_PROPERTY = "aiotrace_out_of_process"


class ScrubbedEnv(dict[str, str]):
    """An environment ``clean_env`` made: a child given one inherits nothing of a traced
    session's, so it does the same whether this session is traced or not."""


class _Watch:
    """What the running test has done in this process.

    Seen through three narrow hooks, each installed once for the session:
    ``subprocess.Popen.__init__`` (the child's environment), ``socket.socketpair``
    (which every selector event loop calls for its self-pipe) and a fork
    handler. Not an audit hook: that would be called for every ``id()`` and
    ``sys._getframe()`` aiotrace makes, slowing every traced test.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.children = 0
        self.in_process = False

    def child(self, env: object) -> None:
        self.children += 1
        if not isinstance(env, ScrubbedEnv):
            self.in_process = True  # the child may inherit what a traced session exports

    def here(self) -> None:
        self.in_process = True

    @property
    def out_of_process(self) -> bool:
        return self.children > 0 and not self.in_process


_WATCH = _Watch()
_ORIGINALS: dict[str, Any] = {}
_SESSIONS: list[pytest.Config] = []
_FORK_HANDLER: list[bool] = []
_ENV_POSITION = 10
"""Where ``env`` is among ``subprocess.Popen``'s positional arguments after ``self``."""


def pytest_configure(config: pytest.Config) -> None:
    # Once for nested sessions (an in-process pytester run given this plugin).
    _SESSIONS.append(config)
    if len(_SESSIONS) > 1:
        return
    popen_init = _ORIGINALS["Popen.__init__"] = subprocess.Popen.__init__
    socketpair = _ORIGINALS["socketpair"] = socket.socketpair

    @functools.wraps(popen_init)
    def watched_popen_init(self: Any, *args: Any, **kwargs: Any) -> None:
        env = args[_ENV_POSITION] if len(args) > _ENV_POSITION else kwargs.get("env")
        _WATCH.child(env)
        popen_init(self, *args, **kwargs)

    @functools.wraps(socketpair)
    def watched_socketpair(*args: Any, **kwargs: Any) -> Any:
        _WATCH.here()  # an event loop, as a rule
        return socketpair(*args, **kwargs)

    subprocess.Popen.__init__ = watched_popen_init  # type: ignore[method-assign]
    socket.socketpair = watched_socketpair
    if not _FORK_HANDLER:
        # A fork carries this process's state and environment along; a fork
        # handler cannot be removed, so it is registered once.
        os.register_at_fork(before=_WATCH.here)
        _FORK_HANDLER.append(True)


def pytest_unconfigure(config: pytest.Config) -> None:
    _SESSIONS.remove(config)
    if not _SESSIONS:
        subprocess.Popen.__init__ = _ORIGINALS.pop("Popen.__init__")  # type: ignore[method-assign]
        socket.socketpair = _ORIGINALS.pop("socketpair")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    _WATCH.reset()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    if call.when == "teardown":
        # A user property travels to an xdist controller with the report.
        outcome.get_result().user_properties.append((_PROPERTY, _WATCH.out_of_process))


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
    if (_PROPERTY, True) in report.user_properties:
        OUT_OF_PROCESS.add(report.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(FILE_VARIABLE)
    if path and not hasattr(session.config, "workerinput"):
        seen = {"outcomes": SEEN, "out_of_process": sorted(OUT_OF_PROCESS)}
        Path(path).write_text(json.dumps(seen, indent=1, sort_keys=True), encoding="utf-8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Whole-suite checks last, so the session's own outcomes are all in SEEN
    # when the self-traced check compares with them (a stable sort).
    items.sort(key=lambda item: item.get_closest_marker("suite_check") is not None)
