"""``pytest --aiotrace``: one trace per test session, a span per test, contention per test.

Registered through the ``pytest11`` entry point and inert unless enabled
(``--aiotrace``, or ``aiotrace = true`` in the ini file): importing this
module patches nothing and imports nothing heavy. ``-p no:aiotrace`` removes
it entirely.

Enabled, it starts the same collector as ``aiotrace run`` (trace file, OTLP,
report), opens a ``pytest.session`` span (a child of ``TRACEPARENT`` or
``--aiotrace-traceparent``), and gives every test a ``pytest.test`` span with
``pytest.setup``/``pytest.call``/``pytest.teardown`` children, current while
they run, so the primitives' and tasks' spans nest under the test that made
them. pytest-xdist workers join the controller's collector and trace. After
the run, a terminal section ranks the tests by time spent waiting and lists
the most contended primitives and anything a test left behind (a lock held,
a permit taken, a future unresolved), which ``--aiotrace-strict`` (or the
``aiotrace_strict`` marker) turns into test errors.

The ``aiotrace_spans`` fixture gives a test its own spans and per-primitive
statistics, with or without ``--aiotrace``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from aiotrace._leaks import Leak
    from aiotrace._session import TraceSession
    from aiotrace.report import Report
    from aiotrace.testing import SpanLog

PLUGIN_NAME: Final = "aiotrace-session"
"""Name of the registered plugin object, while enabled."""

STRICT_MARKER: Final = "aiotrace_strict"
_PROTOCOLS: Final = ("grpc", "http/protobuf")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_WORKER_KEY: Final = "aiotrace"


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options under an ``aiotrace`` group, each with an ini fallback."""
    group = parser.getgroup("aiotrace", "aiotrace: trace asyncio primitives, tasks and futures")

    def option(
        name: str, ini_type: str, help_text: str, default: Any = None, **kwargs: Any
    ) -> None:
        ini = name.replace("-", "_")
        group.addoption(
            f"--{name}", dest=ini, default=None, help=f"{help_text} (ini: {ini})", **kwargs
        )
        parser.addini(ini, help_text, type=ini_type, default=default)  # type: ignore[arg-type]

    option(
        "aiotrace",
        "string",
        "trace the session: a span per test, primitives nested in it",
        default=False,
        action="store_const",
        const=True,
    )
    option(
        "aiotrace-trace-file",
        "string",
        "OTLP JSON trace file, or 'none' "
        "(default: aiotrace-<project>-<time>.json in the current directory)",
        metavar="PATH",
    )
    option(
        "aiotrace-otlp",
        "string",
        "export over OTLP: an endpoint, or 'true' for the "
        "OTEL_EXPORTER_OTLP_* endpoint (else localhost)",
        metavar="ENDPOINT",
        nargs="?",
        const="true",
    )
    option(
        "aiotrace-protocol", "string", "OTLP transport: grpc or http/protobuf", metavar="PROTOCOL"
    )
    option(
        "aiotrace-jaeger-url",
        "string",
        "Jaeger UI to link the trace to (default http://localhost:16686)",
        metavar="URL",
    )
    option(
        "aiotrace-service-name",
        "string",
        "service.name (default: OTEL_SERVICE_NAME, else the project's directory name)",
        metavar="NAME",
    )
    option(
        "aiotrace-traceparent",
        "string",
        "W3C traceparent of an outer trace to join (default: TRACEPARENT)",
        metavar="TRACEPARENT",
    )
    option(
        "aiotrace-min-wait",
        "string",
        "shortest wait that becomes a span, in seconds (default 0.001)",
        metavar="SECONDS",
    )
    option(
        "aiotrace-min-hold",
        "string",
        "shortest hold that becomes a span, in seconds (default 0.001)",
        metavar="SECONDS",
    )
    option(
        "aiotrace-strict",
        "string",
        "fail (as a teardown error) every test that leaves a "
        "lock held, a permit taken or a future unresolved; else they are reported",
        default=False,
        action="store_const",
        const=True,
    )
    option(
        "aiotrace-summary",
        "string",
        "how many tests and primitives the terminal summary lists; 0 for none (default 10)",
        metavar="N",
    )
    option(
        "aiotrace-html",
        "string",
        "write the session's HTML timeline (a lane per task, tests as groups) into this "
        "directory, as aiotrace-<project>.html",
        metavar="DIR",
    )
    option(
        "aiotrace-hang-timeout",
        "string",
        "fail a test that runs past this many seconds, or whose tasks can no longer make "
        "progress, with every task's wait and stack (default: no limit)",
        metavar="SECONDS",
    )
    option(
        "aiotrace-block-threshold",
        "string",
        "report callbacks that block the event loop longer than this; 0: do not watch "
        "(default 0.1)",
        metavar="SECONDS",
    )
    option(
        "aiotrace-no-lock-order",
        "string",
        "do not check the order locks are taken in",
        default=False,
        action="store_const",
        const=True,
    )
    option(
        "aiotrace-children",
        "string",
        "also trace child Python processes the tests start",
        default=False,
        action="store_const",
        const=True,
    )


def _raw(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    return value if value is not None else config.getini(name)


@dataclass
class Settings:
    """The plugin's options, validated."""

    enabled: bool = False
    trace_file: str | None = None
    trace_file_in: str | None = None
    """The directory of a trace file named by default (``trace_file`` is then None)."""
    otlp: str | None = None
    protocol: str | None = None
    jaeger_url: str = "http://localhost:16686"
    service_name: str | None = None
    traceparent: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    summary: int = 10
    children: bool = False
    hang_timeout: float | None = None
    block_threshold: float | None = 0.1
    lock_order: bool = True
    html: str | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read and check every option; a bad value is a ``pytest.UsageError`` naming valid ones."""
        settings = cls(enabled=_flag(config, "aiotrace"))
        settings.strict = _flag(config, "aiotrace_strict")
        settings.children = _flag(config, "aiotrace_children")
        trace_file = _text(config, "aiotrace_trace_file")
        if trace_file is None:
            # Named when the session starts (see new_trace_file), not here:
            # xdist workers read these settings too, and write no file.
            settings.trace_file_in = str(config.invocation_params.dir)
        elif trace_file.lower() == "none":
            trace_file = None
        else:
            trace_file = os.path.abspath(trace_file)
            if not os.path.isdir(os.path.dirname(trace_file)):
                raise pytest.UsageError(
                    f"aiotrace_trace_file: no directory {os.path.dirname(trace_file)!r}"
                )
        settings.trace_file = trace_file
        otlp = _text(config, "aiotrace_otlp")
        if otlp is not None and otlp.lower() not in _FALSE:
            settings.otlp = "" if otlp.lower() in _TRUE else otlp
        protocol = _text(config, "aiotrace_protocol")
        if protocol is not None and protocol not in _PROTOCOLS:
            raise pytest.UsageError(
                f"aiotrace_protocol: {protocol!r} is not valid; valid values: grpc, http/protobuf"
            )
        settings.protocol = protocol
        settings.jaeger_url = _text(config, "aiotrace_jaeger_url") or settings.jaeger_url
        settings.service_name = _text(config, "aiotrace_service_name")
        traceparent = _text(config, "aiotrace_traceparent")
        if traceparent is not None and not _TRACEPARENT.match(traceparent):
            raise pytest.UsageError(
                f"aiotrace_traceparent: {traceparent!r} is not a W3C traceparent "
                "(valid: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>)"
            )
        settings.traceparent = traceparent
        for name in ("min_wait", "min_hold"):
            number = _seconds(config, f"aiotrace_{name}")
            if number is not None:
                settings.options[name] = number
        hang = _seconds(config, "aiotrace_hang_timeout")
        settings.hang_timeout = hang if hang else None
        block = _seconds(config, "aiotrace_block_threshold")
        if block is not None:
            settings.block_threshold = block or None
        settings.lock_order = not _flag(config, "aiotrace_no_lock_order")
        html_dir = _text(config, "aiotrace_html")
        if html_dir is not None:
            directory = os.path.abspath(html_dir)
            if os.path.exists(directory) and not os.path.isdir(directory):
                raise pytest.UsageError(f"aiotrace_html: {html_dir!r} is a file, not a directory")
            name = re.sub(r"[^\w.-]", "_", config.rootpath.name) or "pytest"
            settings.html = os.path.join(directory, f"aiotrace-{name}.html")
        summary = _text(config, "aiotrace_summary")
        if summary is not None:
            if not summary.isdigit():
                raise pytest.UsageError(
                    f"aiotrace_summary: {summary!r} is not valid; valid values: 0, 1, 2, ..."
                )
            settings.summary = int(summary)
        return settings


def _seconds(config: pytest.Config, name: str) -> float | None:
    value = _text(config, name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise pytest.UsageError(
            f"{name}: {value!r} is not valid; valid values: a number of seconds, 0 or more"
        )
    return number


def _flag(config: pytest.Config, name: str) -> bool:
    value = _raw(config, name)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE or text == "":
        return False
    raise pytest.UsageError(f"{name}: {value!r} is not valid; valid values: true, false")


def _text(config: pytest.Config, name: str) -> str | None:
    value = _raw(config, name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------------------
# Enabling
# ---------------------------------------------------------------------------


def _runs_no_tests(config: pytest.Config) -> bool:
    """``--collect-only``, ``--fixtures``, ``--markers``: nothing to trace, and no trace
    file to leave behind (an editor's test discovery runs ``--collect-only`` with the
    project's ``addopts``, ``--aiotrace`` included, again and again)."""
    option = config.option
    return any(
        getattr(option, name, False)
        for name in ("collectonly", "showfixtures", "show_fixtures_per_test", "markers")
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; if enabled, start tracing (a session, or an xdist worker's part)."""
    config.addinivalue_line(
        "markers",
        f"{STRICT_MARKER}: fail this test (teardown error) if it leaves a lock held, a "
        "semaphore permit taken, or a future unresolved (needs --aiotrace)",
    )
    settings = Settings.from_config(config)
    if not settings.enabled or _runs_no_tests(config):
        return
    plugin = AiotracePlugin(config, settings)
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    plugin.start()


# ---------------------------------------------------------------------------
# Per-test data
# ---------------------------------------------------------------------------


@dataclass
class TestRecord:
    """What one test did, as the summary shows it (travels from xdist workers as JSON)."""

    nodeid: str
    outcome: str = ""
    wait_ms: float = 0.0
    waits: int = 0
    top: list[tuple[str, float]] = field(default_factory=list)
    leaks: list[tuple[str, str, str]] = field(default_factory=list)
    """What the test left behind: kind, primitive and detail of each (see ``_leaks.Leak``)."""
    findings: list[str] = field(default_factory=list)
    """Summaries of the findings made while the test ran (deadlocks, hangs, lock order...)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "wait_ms": self.wait_ms,
            "waits": self.waits,
            "top": [list(t) for t in self.top],
            "leaks": [list(leak) for leak in self.leaks],
            "findings": list(self.findings),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TestRecord:
        return cls(
            nodeid=str(data["nodeid"]),
            outcome=str(data.get("outcome", "")),
            wait_ms=float(data.get("wait_ms", 0.0)),
            waits=int(data.get("waits", 0)),
            top=[(str(n), float(ms)) for n, ms in data.get("top", ())],
            leaks=[(str(k), str(p), str(d)) for k, p, d in data.get("leaks", ())],
            findings=[str(f) for f in data.get("findings", ())],
        )


@dataclass
class _Running:
    """A test in progress: its spans and what the counters said when it began."""

    span: Any
    token: object
    started: int
    counters: dict[int, tuple[int, int]]
    reports: dict[str, pytest.TestReport] = field(default_factory=dict)
    phase: Any = None
    unreported: _Phase | None = None
    """The phase that ended and waits for its report to end its span (see ``_Phase``)."""
    record: TestRecord | None = None
    findings_before: int = 0
    nodeid: str = ""
    phase_started: int = 0
    """When (``perf_counter_ns``) the phase now running (setup, call, teardown) began:
    the tasks begun since are what a hang then cancels (see ``_the_tests``)."""

    def end_unreported(self) -> None:
        """End the waiting phase's span without its report, which never came (an
        interrupt, ``os._exit``, a signal): from what the phase raised."""
        phase, self.unreported = self.unreported, None
        if phase is not None:
            phase.finish(None, None)


def _the_tests(task: Any, started: int) -> bool:
    """Whether a hung test's cancellation is for ``task``: not for a session's server.

    A task begun during the phase that hung (``started``: the test's call,
    or the setup or teardown it is in) is: the test's own, what it awaits,
    the request it made of another thread's loop. One begun before (a
    session fixture's server or background task, though set up for this
    very test) is not: it serves the tests still to come, and the test's
    loop, closing, cancels what of the test's own is left. A task with no
    span (never traced) is, if the tests' thread runs its loop now.
    """
    from aiotrace._context import TASK_SPANS
    from aiotrace._loops import is_running, loop_of

    span = TASK_SPANS.get(id(task))
    if span is not None:
        return bool(span.start_ns >= started)
    loop = loop_of(task)
    return is_running(loop) and getattr(loop, "_thread_id", None) == threading.main_thread().ident


def _wait_counters() -> dict[int, tuple[int, int]]:
    from aiotrace._recorder import RECORDER

    return {id(site): (site.waits, site.wait_ns) for site in RECORDER.sites if site.waits}


def _outcome(reports: dict[str, pytest.TestReport]) -> str:
    setup, call, teardown = (reports.get(w) for w in ("setup", "call", "teardown"))
    if setup is not None and setup.failed:
        return "error"
    if setup is not None and setup.skipped:
        return "xfailed" if hasattr(setup, "wasxfail") else "skipped"
    outcome = "passed"
    if call is not None:
        if hasattr(call, "wasxfail"):
            outcome = "xfailed" if call.skipped else "xpassed" if call.passed else "failed"
        else:
            outcome = call.outcome
    if teardown is not None and teardown.failed and outcome == "passed":
        return "error"
    return outcome


# ---------------------------------------------------------------------------
# The plugin
# ---------------------------------------------------------------------------


class AiotracePlugin:
    """Everything ``--aiotrace`` does, for one pytest process (controller, worker or both)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.session: TraceSession | None = None
        self.report: Report | None = None
        self.worker_id: str | None = None
        self.parent: Any = None  # the OpenTelemetry context tests nest under
        self.records: list[TestRecord] = []
        self.reported_leaks: set[tuple[int, int]] = set()
        self.error: str | None = None
        self.attached = False
        self._finished = False
        self.worker_diagnoser: Any = None
        self.hung: Any = None  # the hang finding of the test running now
        self._current: _Running | None = None  # the test running now
        self._cut_short = False  # os._exit() during a test
        self.guarded = False  # os._exit and SIGTERM deliver (see start)

    # -- start and finish ----------------------------------------------
    def start(self) -> None:
        """Start tracing this process; a failure warns and leaves the session untraced."""
        from opentelemetry import context as otel_context

        from aiotrace import _api, _leaks

        try:
            workerinput = getattr(self.config, "workerinput", None)
            if workerinput is not None:
                self._start_worker(workerinput)
            elif _api.is_instrumented():
                # Under ``aiotrace run -m pytest``: its collector, its trace.
                self.attached = True
                self.parent = otel_context.get_current()
            else:
                self._start_session()
            self._hang_clock(None)  # until the first test starts
            if self.diagnoser is not None:
                self.diagnoser.scope = self._running_test  # a blocked loop names its tests
            _leaks.watch()
            from aiotrace._session import EXIT_DELIVERY, SIGTERM_DELIVERY

            # Under `aiotrace run` too, the run's own delivery after ours.
            EXIT_DELIVERY.install(self._exiting)
            SIGTERM_DELIVERY.install(self._killed)
            self.guarded = True
        except pytest.UsageError:
            raise
        except Exception as exc:  # tracing must never stop the test run
            self.error = f"{type(exc).__name__}: {exc}"
            sys.stderr.write(f"aiotrace: could not start tracing ({self.error}); untraced\n")

    def _start_session(self) -> None:
        from opentelemetry import trace

        from aiotrace import semconv
        from aiotrace._otlp import new_trace_file
        from aiotrace._session import SessionConfig, TraceSession
        from aiotrace.cli import UsageError, _otlp_settings, traces_exporters

        settings = self.settings
        exporters = traces_exporters()
        import argparse

        try:
            otlp = _otlp_settings(
                argparse.Namespace(otlp=settings.otlp, protocol=settings.protocol), exporters
            )
        except UsageError as exc:
            raise pytest.UsageError(f"aiotrace_otlp: {exc}") from None
        project = self.config.rootpath.name or "pytest"
        trace_file = settings.trace_file
        if settings.trace_file_in is not None:
            trace_file = new_trace_file(settings.trace_file_in, project)
        self.session = TraceSession(
            SessionConfig(
                service_name=project,
                service_override=settings.service_name,
                root_name=semconv.SPAN_TEST_SESSION,
                root_attributes={
                    semconv.ATTR_TEST_SUITE_NAME: project,
                    semconv.ATTR_ARGV: [*sys.argv],
                },
                trace_file=trace_file,
                otlp=otlp,
                console="console" in exporters,
                jaeger_url=settings.jaeger_url,
                options={"flush_interval": 0.1, **settings.options},
                trace_children=settings.children,
                traceparent=settings.traceparent,
                diagnosis=self._diagnosis_config(),
                html=settings.html,
            ),
            on_hang=self._on_hang,
            echo=self._echo,
        )
        self.parent = trace.set_span_in_context(self.session.root)

    def _start_worker(self, workerinput: dict[str, Any]) -> None:
        from opentelemetry import trace

        from aiotrace import _child, semconv

        info = workerinput.get(_WORKER_KEY)
        if info is None:
            raise RuntimeError("the xdist controller is not tracing")
        self.worker_id = str(workerinput.get("workerid", "gw?"))
        _child.begin(
            info["collector"],
            info["resource"],
            info["options"],
            info["traceparent"],
            semconv.SPAN_TEST_WORKER,
            {semconv.ATTR_XDIST_WORKER: self.worker_id},
        )
        self.parent = trace.set_span_in_context(_child.current_span())
        from aiotrace.diagnosis import Diagnoser

        self.worker_diagnoser = Diagnoser(
            self._diagnosis_config(), self.parent, on_hang=self._on_hang, echo=self._echo
        )
        self.worker_diagnoser.start()

    def _diagnosis_config(self) -> Any:
        from aiotrace.diagnosis import DiagnosisConfig

        settings = self.settings
        return DiagnosisConfig(
            hang_timeout=settings.hang_timeout,
            block_threshold=settings.block_threshold,
            lock_order=settings.lock_order,
            leaks_at_exit=False,  # checked after every test instead
        )

    @property
    def diagnoser(self) -> Any:
        """This process's diagnoser (the session's, or an xdist worker's own)."""
        if self.session is not None:
            return self.session.diagnoser
        return self.worker_diagnoser

    def _echo(self, text: str) -> None:
        """An urgent finding (a deadlock, a lock-order inversion), shown as it is found.

        On the terminal, past pytest's capture, as pytest's live logging
        writes: never into the test's own captured output, where ``capsys``
        and ``capfd`` assertions would see it. A worker has no terminal: its
        findings reach the summary.
        """
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with contextlib.suppress(Exception):
            if capture is None:
                reporter.write_line(text)
                return
            with capture.global_and_fixture_disabled():
                reporter.write_line(text)

    def _exiting(self, status: int) -> None:
        """``os._exit()`` during the run (a test's, or the code under test's): deliver first.

        pytest's own end never comes, nor its summary: the running test's
        spans end, marked, the trace is finished and written, and one line
        says where. (A forked child's ``os._exit`` is its own: see
        ``ExitDelivery``.)
        """
        from aiotrace import semconv

        self._cut_short_by(f"os._exit({status})", semconv.TEST_OUTCOME_EXITED, status)

    def _killed(self, signum: int) -> None:
        """SIGTERM or SIGHUP (a CI job's timeout, a closed terminal): as ``os._exit``, the
        trace finished first, the test it cut short marked, which is the one a
        timeout wants to know about; then the process dies by the signal (see
        ``SigtermDelivery``)."""
        import signal

        from aiotrace import semconv

        what = f"killed by {signal.Signals(signum).name}"
        self._cut_short_by(what, semconv.TEST_OUTCOME_KILLED, 128 + signum)

    def _cut_short_by(self, what: str, outcome: str, status: int) -> None:
        from opentelemetry.trace import Status, StatusCode

        from aiotrace import semconv

        running, where = self._current, ""
        if running is not None:
            self._cut_short = True
            where = f" during {running.span.attributes.get(semconv.ATTR_TEST_CASE_NAME)}"
            with contextlib.suppress(Exception):
                status_of = Status(StatusCode.ERROR, f"{what} during the test")
                running.end_unreported()
                if running.phase is not None:
                    running.phase.set_status(status_of)
                    running.phase.end()
                running.span.set_attribute(semconv.ATTR_TEST_OUTCOME, outcome)
                running.span.set_attribute(semconv.ATTR_TEST_CASE_RESULT, "fail")
                running.span.set_status(status_of)
                running.span.end()
        self.finish(status)
        if self.worker_id is not None:
            return
        report = self.report
        text = f"aiotrace: {what}{where}: the trace was finished first"
        if report is not None and report.trace_file:
            text += f"; trace file: {report.trace_file}"
        self._echo(text)

    def _on_hang(self, finding: Any) -> None:
        """From the watchdog: the running test hung. Cancel its tasks; the test fails.

        Should that not end it (a task swallowing every cancellation, which
        also hangs ``asyncio.run``'s own clean-up), its loop raises
        :class:`~aiotrace.diagnosis.HangStopped` each time it is stuck again,
        until the test is over: the session goes on.
        """
        self.hung = finding
        from aiotrace import _threads
        from aiotrace._loops import call_soon_threadsafe, loop_of, pending_tasks

        diagnoser = self.diagnoser
        watchdog = diagnoser.watchdog if diagnoser is not None else None
        if watchdog is not None:
            watchdog.forget_stuck()
        running = self._current
        for task in pending_tasks():
            if running is None or _the_tests(task, running.phase_started or running.started):
                with contextlib.suppress(RuntimeError):
                    call_soon_threadsafe(loop_of(task), task.cancel)
        if watchdog is not None and running is not None:
            _threads.thread(self._stop_if_stuck, "aiotrace-hang-stop", running, watchdog).start()

    def _stop_if_stuck(self, running: _Running, watchdog: Any) -> None:
        """While the hung test runs (its teardown too: pytest-asyncio's loop, closing,
        cancels and awaits what is left): each time its loop is stuck again, make it raise."""
        from aiotrace import _threads
        from aiotrace._loops import call_soon_threadsafe, is_running, loop_of, pending_tasks
        from aiotrace.diagnosis import raise_hang_stopped

        main = threading.main_thread().ident  # the tests' thread: not a server's loop
        while self._current is running and not self._finished:
            _threads.sleep(0.25)
            if not watchdog.stuck_again(main):
                continue
            loops = {id(loop_of(task)): loop_of(task) for task in pending_tasks()}
            for loop in loops.values():
                if is_running(loop) and getattr(loop, "_thread_id", main) == main:
                    with contextlib.suppress(RuntimeError):  # closed meanwhile
                        call_soon_threadsafe(loop, raise_hang_stopped)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: tell each worker where the collector is and which trace to join."""
        from aiotrace._recorder import RECORDER
        from aiotrace._session import resource_json

        session = self.session
        if session is None:
            return
        options = {
            "min_wait": RECORDER.options.min_wait,
            "min_hold": RECORDER.options.min_hold,
            "flush_interval": RECORDER.options.flush_interval,
        }
        node.workerinput[_WORKER_KEY] = {
            "collector": session.collector.address,
            "traceparent": session.traceparent(),
            "resource": resource_json(session.resource),
            "options": options,
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Deliver everything (after xdist's workers are done) and make the report."""
        self.finish(int(exitstatus))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.finish(None)

    def finish(self, exitstatus: int | None) -> None:
        """End the session's (or worker's) tracing; idempotent."""
        if self._finished:
            return
        self._finished = True
        from aiotrace import _child, _leaks, semconv
        from aiotrace._session import EXIT_DELIVERY, SIGTERM_DELIVERY

        if self.guarded:
            EXIT_DELIVERY.restore(self._exiting)
            SIGTERM_DELIVERY.restore(self._killed)
        if self._cut_short and self.worker_id is not None:
            # The waits and holds the test was stuck in, as spans, while still watched
            # (the controller's session does it in its own finish).
            from aiotrace.diagnosis import report_unfinished

            with contextlib.suppress(Exception):
                report_unfinished()
        _leaks.unwatch()
        try:
            if self.session is not None:
                root = self.session.root
                if exitstatus is not None:
                    root.set_attribute(
                        semconv.ATTR_TEST_SUITE_RUN_STATUS,
                        "success" if exitstatus == 0 and not self._cut_short else "failure",
                    )
                self.report = self.session.finish(exit_code=exitstatus)
            elif self.worker_id is not None:
                if self.worker_diagnoser is not None:
                    self.worker_diagnoser.finish(at_exit=False)
                _child.finish()
        except Exception as exc:  # the run's outcome is the tests', not ours
            self.error = f"{type(exc).__name__}: {exc}"

    # -- tests -----------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        running = self._begin_test(item)
        try:
            return (yield)
        finally:
            if running is not None:
                # pytest keeps every item to the end of the session: the test's
                # span and counters must not stay with it.
                with contextlib.suppress(KeyError):
                    del item.stash[_RUNNING]
                self._end_test(item, running)

    def _begin_test(self, item: pytest.Item) -> _Running | None:
        if self.parent is None or self._finished:
            return None
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        from aiotrace import semconv
        from aiotrace._session import aiotrace_tracer

        tracer = aiotrace_tracer()
        _, line, function = item.location
        attributes: dict[str, Any] = {
            semconv.ATTR_TEST_CASE_NAME: item.nodeid,
            semconv.ATTR_CODE_FILE_PATH: str(item.path),
            semconv.ATTR_CODE_FUNCTION_NAME: function,
        }
        if line is not None:
            attributes[semconv.ATTR_CODE_LINE_NUMBER] = line + 1
        if self.worker_id is not None:
            attributes[semconv.ATTR_XDIST_WORKER] = self.worker_id
        span = tracer.start_span(semconv.SPAN_TEST, context=self.parent, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span, otel_context.Context()))
        running = _Running(span, token, time.perf_counter_ns(), _wait_counters())
        running.nodeid = item.nodeid
        diagnoser = self.diagnoser
        if diagnoser is not None:
            self.hung = None
            running.findings_before = len(diagnoser.findings)
            self._hang_clock(self.settings.hang_timeout)
        item.stash[_RUNNING] = running
        self._current = running
        return running

    def _hang_clock(self, seconds: float | None) -> None:
        """``--aiotrace-hang-timeout`` is per test: its clock runs while a test does, not
        while pytest collects, between tests, after the last, nor in pytest-xdist's
        controller, which runs none (where a session longer than the timeout was a hang)."""
        diagnoser = self.diagnoser
        if diagnoser is not None and diagnoser.watchdog is not None:
            diagnoser.watchdog.restart_clock(seconds)

    def _running_test(self) -> str | None:
        """The test running now, if any (asked from the diagnosis's watchdog thread)."""
        running = self._current
        return running.nodeid if running is not None else None

    def _end_test(self, item: pytest.Item, running: _Running) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        from aiotrace import semconv

        self._current = None
        with contextlib.suppress(Exception):
            self._hang_clock(None)
        span = running.span
        running.end_unreported()
        record = running.record or self._measure(item, running)
        record.outcome = _outcome(running.reports)
        span.set_attribute(semconv.ATTR_TEST_OUTCOME, record.outcome)
        if record.outcome in ("passed", "xfailed", "xpassed"):
            span.set_attribute(semconv.ATTR_TEST_CASE_RESULT, "pass")
        elif record.outcome in ("failed", "error"):
            span.set_attribute(semconv.ATTR_TEST_CASE_RESULT, "fail")
            span.set_status(Status(StatusCode.ERROR, f"test {record.outcome}"))
        span.set_attribute(semconv.ATTR_TEST_WAIT_MS, record.wait_ms)
        span.set_attribute(semconv.ATTR_TEST_WAITS, record.waits)
        with contextlib.suppress(Exception):  # a test that detached our context itself
            otel_context.detach(running.token)  # type: ignore[arg-type]
        span.end()
        if self.worker_id is None:
            self.records.append(record)

    def _measure(self, item: pytest.Item, running: _Running) -> TestRecord:
        """Waits since the test began (every wait, spanned or not, on primitives made on
        the test's thread), and what it left behind."""
        from aiotrace import _leaks, semconv
        from aiotrace._recorder import RECORDER

        before = running.counters
        waits = wait_ns = 0
        per_site: list[tuple[float, str]] = []
        here = threading.get_ident()  # the test's thread
        for site in list(RECORDER.sites):
            if not site.waits or site.internal or site.kind == semconv.KIND_FUTURE:
                continue  # awaiting a future is not waiting on a primitive
            if site.thread and site.thread != here:
                continue  # made by another thread alone: a session's server, say
            w0, ns0 = before.get(id(site), (0, 0))
            if site.waits > w0:
                waits += site.waits - w0
                wait_ns += site.wait_ns - ns0
                per_site.append(((site.wait_ns - ns0) / 1e6, site.display_name()))
        per_site.sort(reverse=True)
        record = TestRecord(
            nodeid=item.nodeid,
            wait_ms=round(wait_ns / 1e6, 3),
            waits=waits,
            top=[(name, round(ms, 3)) for ms, name in per_site[:3]],
        )
        leaks: list[Leak] = []
        try:
            leaks = [
                leak for leak in _leaks.find(running.started) if leak.key not in self.reported_leaks
            ]
        except Exception:  # never let the check itself fail a test
            leaks = []
        for leak in leaks:
            self.reported_leaks.add(leak.key)
            record.leaks.append((leak.kind, leak.primitive, leak.detail))
            running.span.add_event(
                semconv.EVENT_LEAK,
                {
                    semconv.ATTR_LEAK_KIND: leak.kind,
                    semconv.ATTR_PRIMITIVE_NAME: leak.primitive,
                    semconv.ATTR_LEAK_DETAIL: leak.detail,
                },
            )
        diagnoser = self.diagnoser
        if diagnoser is not None:
            with contextlib.suppress(Exception):
                diagnoser.collect()  # what asyncio reported while the test's objects were freed
            for finding in list(diagnoser.findings)[running.findings_before :]:
                record.findings.append(f"{finding.kind}: {finding.summary}")
                running.span.add_event(semconv.SPAN_FINDING, finding.attributes())
            running.findings_before = len(diagnoser.findings)
        running.record = record
        return record

    # -- phases -----------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        with self._phase(item, "setup"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        with self._phase(item, "call"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        with self._phase(item, "teardown"):
            result = yield
            # After every fixture's teardown: what is still held now stays held.
            running = item.stash.get(_RUNNING, None)
            if running is not None:
                record = self._measure(item, running)
                strict = self.settings.strict or item.get_closest_marker(STRICT_MARKER) is not None
                if strict and record.leaks:
                    left = (": ".join(leak) for leak in record.leaks)
                    pytest.fail(
                        "aiotrace: the test left behind:\n  " + "\n  ".join(left), pytrace=False
                    )
        return result

    def _phase(self, item: pytest.Item, when: str) -> _Phase:
        watchdog = self.diagnoser.watchdog if self.diagnoser is not None else None
        return _Phase(item.stash.get(_RUNNING, None), when, watchdog)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        running = item.stash.get(_RUNNING, None)
        if running is not None and report.when == "call" and self.hung is not None:
            report.outcome = "failed"
            report.longrepr = f"aiotrace: {self.hung.text()}"
            self.hung = None
        if running is not None:
            running.reports[report.when] = report
            phase = running.unreported
            if phase is not None and phase.when == report.when:
                running.unreported = None
                phase.finish(report, call.excinfo)
            if report.when == "teardown" and running.record is not None:
                record = running.record
                record.outcome = _outcome(running.reports)
                # Travels with the report from an xdist worker to the controller.
                report.aiotrace = record.to_json()  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Controller: collect the per-test records xdist workers send with their reports."""
        if self.worker_id is not None or report.when != "teardown":
            return
        data = getattr(report, "aiotrace", None)
        if isinstance(data, dict) and getattr(report, "node", None) is not None:
            self.records.append(TestRecord.from_json(data))

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, object, object]:
        """An ``async def`` test run by a long-lived runner task (anyio) nests under the test.

        anyio runs every test coroutine inside one task created at the first
        test; without this the test's spans would nest under that first test.
        """
        running = pyfuncitem.stash.get(_RUNNING, None)
        original = pyfuncitem.obj
        if running is None or not inspect.iscoroutinefunction(original):
            return (yield)
        context = _current_context()
        pyfuncitem.obj = _in_context(original, context)
        try:
            return (yield)
        finally:
            pyfuncitem.obj = original

    # -- the summary --------------------------------------------------------
    def _write_findings(self, write: Callable[[str], None], limit: int) -> None:
        """Findings first, most severe first: from the collector, so every worker's."""
        from aiotrace.report import counted, detail_lines, repeats_text

        report = self.report
        if report is None or not report.findings:
            return
        where: dict[str, str] = {}
        for record in self.records:
            for text in record.findings:
                where.setdefault(text, record.nodeid)
        write(f"Findings ({report.findings_total}), most severe first:")
        listed = max(limit, 1) * 3
        for finding in report.findings[:listed]:
            text = f"{finding['kind']}: {finding['summary']}"
            test = where.get(text)
            write(
                f"  {finding['kind'].upper()}: {finding['summary']}{repeats_text(finding)}"
                + (f"  [{test}]" if test else "")
            )
            for line in detail_lines(finding, 7):
                write(f"      {line}")
        unlisted = report.findings_after(listed)
        if unlisted:
            write(f"  ... and {counted(unlisted, 'more finding')}")

    def _write_leaks(self, write: Callable[[str], None], limit: int) -> None:
        """What tests left behind, grouped by primitive.

        A library's one forgotten future, left by fifty tests, is one culprit:
        named once with a few of its tests, not in fifty lines.
        """
        from aiotrace import _leaks
        from aiotrace.report import counted

        by_primitive: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for record in self.records:
            for kind, primitive, detail in record.leaks:
                by_primitive.setdefault((kind, primitive), []).append((record.nodeid, detail))
        if not by_primitive:
            return
        verdict = (
            "each failed the test"
            if self.settings.strict
            else "failed where strict, else reported; --aiotrace-strict fails them all"
        )
        write(f"Left behind by tests ({verdict}):")
        severity = {kind: rank for rank, kind in enumerate(_leaks.KINDS)}
        groups = sorted(
            by_primitive.items(),
            key=lambda group: (severity.get(group[0][0], len(severity)), -len(group[1])),
        )
        shown = max(limit, 1)
        for (kind, primitive), tests in groups[:shown]:
            write(f"  {kind}: {primitive}, by {counted(len(tests), 'test')}:")
            for nodeid, detail in tests[:3]:
                write(f"    {nodeid}: {detail}")
            if len(tests) > 3:
                write(f"    ... and {counted(len(tests) - 3, 'more test')}")
        if len(groups) > shown:
            write(f"  ... and {counted(len(groups) - shown, 'more primitive')} left behind")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.worker_id is not None:
            return
        from aiotrace.report import counted, duration_text, jaeger_link

        limit = self.settings.summary
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "aiotrace")
        if self.error is not None:
            write(f"tracing failed: {self.error}")
        self._write_findings(write, limit)
        waiting = sorted((r for r in self.records if r.waits), key=lambda r: -r.wait_ms)
        if limit and waiting:
            write("Tests by time spent waiting on asyncio primitives:")
            for record in waiting[:limit]:
                top = ", ".join(f"{name} {duration_text(ms)}" for name, ms in record.top)
                waits = counted(record.waits, "wait")
                write(f"  {duration_text(record.wait_ms):>9}  {record.nodeid}  ({waits}: {top})")
            if len(waiting) > limit:
                write(f"  ... and {counted(len(waiting) - limit, 'more test')} that waited")
        elif limit:
            write("No test waited on an asyncio primitive.")
        report = self.report
        if report is not None and limit and report.primitives:
            write("Most contended primitives:")
            for row in report.primitives[:limit]:
                if row.waits:
                    waits = f"{row.waits} wait{'s' if row.waits != 1 else ''}"
                    line = (
                        f"{waits}, {duration_text(row.wait_ms)} in total, "
                        f"longest {row.longest_wait_text()}"
                    )
                    if row.timed_out:
                        line += f" ({row.timed_out} timed out)"
                    if row.times_held:
                        line += f"; longest hold {row.longest_hold_text()}"
                else:
                    line = f"never waited on; longest hold {row.longest_hold_text()}"
                write(f"  {row.name}  {row.kind}: {line}")
                held_at = row.held_at_text()
                if held_at is not None:
                    write(f"    while others waited, its holder was at {held_at}")
        if report is not None and limit and report.waits_while_holding:
            write("Waited while holding (others queued for what was held):")
            for nested in report.waits_while_holding[:limit]:
                write(f"  {nested.text()}")
        self._write_leaks(write, limit)
        if report is not None:
            stats = report.stats
            dropped = stats.get("spans_dropped", 0)
            write(
                f"Spans: {stats.get('spans_built', report.spans)} built, {dropped} dropped"
                + (
                    f", {stats['spans_not_exported']} not exported"
                    if stats.get("spans_not_exported")
                    else ""
                )
                + (
                    f"; {stats['holders_unnamed']} holds released by another task went "
                    "without their holder's name (the lookup's time budget was spent)"
                    if stats.get("holders_unnamed")
                    else ""
                )
            )
            if report.trace_id:
                write(f"Trace id: {report.trace_id}")
            if report.trace_file:
                write(f"Trace file: {report.trace_file}")
            if report.html_file:
                write(
                    f"HTML timeline: {report.html_file} ({(report.html_bytes or 0) / 1e6:.1f} MB)"
                )
            if report.export_error:
                write(f"OTLP export failed: {report.export_error}")
                if report.trace_file:
                    endpoint = (
                        (self.session.config.otlp or {}).get("endpoint") if self.session else ""
                    )
                    write(f"  send it later: aiotrace send {report.trace_file} --otlp {endpoint}")
            elif report.otlp_endpoint and report.jaeger_url and report.trace_id:
                write(f"Exported over OTLP to {report.otlp_endpoint}")
                write(f"Jaeger: {jaeger_link(report.jaeger_url, report.trace_id)}")
        elif self.attached:
            write("Traced by the enclosing `aiotrace run`: see its report.")


_RUNNING: Final = pytest.StashKey[_Running]()


class _Phase:
    """A phase span (setup, call, teardown), current while the phase runs.

    Its outcome is the phase's report's, so it is ended when pytest makes that
    report, with the time the phase ended: what the phase raised is not the
    outcome. A unittest test's failure is caught by unittest and reaches
    pytest only in the report; an ``xfail`` test's AssertionError is an
    expected failure, not an error.
    """

    def __init__(self, running: _Running | None, when: str, watchdog: Any = None) -> None:
        self.running = running
        self.when = when
        self.watchdog = watchdog
        self.span: Any = None
        self.token: object = None
        self.ambient: Any = None
        self.raised: BaseException | None = None
        self.end_ns = 0

    def __enter__(self) -> _Phase:
        running = self.running
        if running is None:
            return self
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        from aiotrace import semconv
        from aiotrace._context import AMBIENT
        from aiotrace._session import aiotrace_tracer

        name = {
            "setup": semconv.SPAN_TEST_SETUP,
            "call": semconv.SPAN_TEST_CALL,
            "teardown": semconv.SPAN_TEST_TEARDOWN,
        }[self.when]
        tracer = aiotrace_tracer()
        parent = trace.set_span_in_context(running.span, otel_context.Context())
        self.span = tracer.start_span(name, context=parent)
        self.token = otel_context.attach(trace.set_span_in_context(self.span, parent))
        # Threads the test starts (a blocking portal, a server) nest in it too.
        self.ambient, AMBIENT[0] = AMBIENT[0], self.span
        running.phase = self.span
        running.phase_started = time.perf_counter_ns()
        if self.watchdog is not None:  # a hang lists the phase's tasks first
            self.watchdog.since_ns = running.phase_started
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self.span is None or self.running is None:
            return
        from opentelemetry import context as otel_context

        from aiotrace._context import AMBIENT

        self.end_ns = time.time_ns()
        self.raised = exc
        with contextlib.suppress(Exception):  # a test that detached our context itself
            otel_context.detach(self.token)  # type: ignore[arg-type]
        AMBIENT[0] = self.ambient
        self.running.phase = None
        self.running.end_unreported()
        self.running.unreported = self

    def finish(self, report: pytest.TestReport | None, excinfo: Any) -> None:
        """End the span with the outcome of ``report`` (without one, of what the phase raised)."""
        from opentelemetry.trace import Status, StatusCode

        from aiotrace import semconv

        try:  # run inside pytest's hooks: nothing of ours may reach the test run
            exc = excinfo.value if excinfo is not None else self.raised
            if report is not None:
                outcome = _phase_outcome(report)
            elif exc is None:
                outcome = "passed"
            else:
                outcome = "skipped" if type(exc).__name__ in ("Skipped", "XFailed") else "failed"
            self.span.set_attribute(semconv.ATTR_TEST_PHASE_OUTCOME, outcome)
            if outcome == "failed":
                if isinstance(exc, BaseException):
                    self.span.record_exception(exc)
                    self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                else:  # failed without an exception: a strict xpass, a hang's report
                    text = report.longreprtext.strip() if report is not None else ""
                    first = text.splitlines()[0] if text else f"{self.when} failed"
                    self.span.set_status(Status(StatusCode.ERROR, first))
        except Exception:  # the span ends anyway, its outcome unsaid
            pass
        finally:
            self.span.end(end_time=self.end_ns)


def _phase_outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed" if report.passed else "failed"
    return report.outcome


def _current_context() -> Any:
    from opentelemetry import context as otel_context

    return otel_context.get_current()


def _in_context(function: Callable[..., Any], context: Any) -> Callable[..., Any]:
    """``function`` (a coroutine function) running with ``context`` current inside."""
    import functools

    @functools.wraps(function)
    async def traced_test(*args: Any, **kwargs: Any) -> Any:
        from opentelemetry import context as otel_context

        token = otel_context.attach(context)
        try:
            return await function(*args, **kwargs)
        finally:
            with contextlib.suppress(Exception):  # the test moved between contexts
                otel_context.detach(token)

    return traced_test


# ---------------------------------------------------------------------------
# The fixture
# ---------------------------------------------------------------------------


@pytest.fixture
def aiotrace_spans() -> Iterator[SpanLog]:
    """This test's spans, every wait and hold spanned, with per-primitive statistics.

    Works with and without ``--aiotrace``; under it, the spans also go to the
    session's trace as usual::

        async def test_cache_lock_is_short(aiotrace_spans):
            await warm_cache()
            assert aiotrace_spans.primitive("cache_lock").max_hold < 0.050

        def test_at_most_two_requests(aiotrace_spans):
            asyncio.run(fetch_all())
            assert aiotrace_spans.primitive("api").max_concurrent_holds <= 2
    """
    from dataclasses import fields

    from aiotrace import _api
    from aiotrace._instrumentation import INSTRUMENTATION
    from aiotrace._pipeline import Discard
    from aiotrace._recorder import RECORDER
    from aiotrace.testing import SpanLog

    log = SpanLog()
    instrumentor = INSTRUMENTATION
    if instrumentor.nestable:
        pipeline = instrumentor.pipeline
        assert pipeline is not None
        options = {f.name: getattr(RECORDER.options, f.name) for f in fields(RECORDER.options)}
        options.update(min_wait=0, min_hold=0)
        instrumentor.push(
            merge_counts=True,
            consumer=_Borrowed(pipeline.consumer),
            encoder=pipeline.encoder,
            taps=[log.tap],
            **options,
        )
    elif _api.is_instrumented():
        pytest.fail(
            "aiotrace_spans: aiotrace is already instrumented by this test's own "
            "aiotrace.instrument(); use one or the other",
            pytrace=False,
        )
    else:
        _api.instrument(consumer=Discard(), taps=[log.tap], min_wait=0, min_hold=0)
    try:
        yield log
    finally:
        _api.uninstrument()


class _Borrowed:
    """The session's consumer, lent to the fixture's nested pipeline: never shut down."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def consume(self, records: list[tuple[Any, ...]]) -> None:
        self._consumer.consume(records)

    def flush(self, timeout: float) -> bool:
        return bool(self._consumer.flush(timeout))

    def shutdown(self, timeout: float) -> None:
        self._consumer.flush(timeout)


__all__ = ["AiotracePlugin", "Settings", "TestRecord", "aiotrace_spans"]
