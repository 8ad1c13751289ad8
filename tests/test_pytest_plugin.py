"""``pytest --aiotrace``: pytester runs of small suites, traced and untraced, compared.

Every run is a subprocess (the plugin instruments the whole process and sets
the global TracerProvider); spans are read back from the trace file.
"""

from __future__ import annotations

import datetime
import json
import re
import signal
import subprocess
import sys

import pytest

from aiotrace import semconv
from aiotrace._assemble import SpanDraft
from tests.cli_support import PROGRAMS, Trace, marker_line
from tests.receivers import GrpcReceiver

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestDeprecationWarning")

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
addopts = -p no:cacheprovider
"""

MIXED = """
import asyncio
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("fixture failed")

def test_pass():
    asyncio.run(asyncio.sleep(0))

def test_fail():
    assert 1 == 2

def test_error(broken):
    pass

@pytest.mark.skip(reason="no")
def test_skip():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="known")
def test_xpass():
    pass

@pytest.mark.asyncio
async def test_async_pass():
    lock = asyncio.Lock()
    async with lock:
        await asyncio.sleep(0.002)

@pytest.mark.asyncio
async def test_async_fail():
    await asyncio.sleep(0)
    raise ValueError("async failure")
"""

CONTENDED = """
import asyncio
import pytest

async def contend(lock, hold):
    async def worker():
        async with lock:
            await asyncio.sleep(hold)
    await asyncio.gather(worker(), worker(), worker())

def test_slow():
    async def main():
        slow_lock = asyncio.Lock()
        await contend(slow_lock, 0.03)
    asyncio.run(main())

def test_fast():
    async def main():
        fast_lock = asyncio.Lock()
        await contend(fast_lock, 0.005)
    asyncio.run(main())

def test_none():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    return pytester


def run(
    pytester: pytest.Pytester, *args: str, trace: str | None = "trace.json"
) -> pytest.RunResult:
    extra = [f"--aiotrace-trace-file={trace}"] if trace else []
    return pytester.runpytest_subprocess(*args, *extra, timeout=120)


def trace_of(pytester: pytest.Pytester, name: str = "trace.json") -> Trace:
    return Trace(pytester.path / name)


def line_in(pytester: pytest.Pytester, name: str, text: str) -> int:
    lines = (pytester.path / name).read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if text in line)


def spans_by_test(trace: Trace) -> dict[str, SpanDraft]:
    return {
        str(s.attributes[semconv.ATTR_TEST_CASE_NAME]).split("::")[-1]: s
        for s in trace.named(semconv.SPAN_TEST)
    }


def ancestors(trace: Trace, span: SpanDraft) -> list[str]:
    ids = {s.span_id: s for s in trace.spans}
    names = []
    while span.parent_id in ids:
        span = ids[span.parent_id]
        names.append(span.name)
    return names


def owning_test(trace: Trace, span: SpanDraft) -> str | None:
    ids = {s.span_id: s for s in trace.spans}
    while span.parent_id in ids:
        span = ids[span.parent_id]
        if span.name == semconv.SPAN_TEST:
            return str(span.attributes[semconv.ATTR_TEST_CASE_NAME]).split("::")[-1]
    return None


# ---------------------------------------------------------------------------
# Inert unless enabled; outcomes identical
# ---------------------------------------------------------------------------


@pytest.mark.pristine
def test_importing_the_plugin_patches_nothing() -> None:
    import aiotrace.pytest_plugin  # noqa: F401  # the import is the test
    from tests.conftest import PRISTINE, snapshot

    assert snapshot() == PRISTINE


def test_inert_without_the_flag_or_a_test_to_run_and_gone_with_no_aiotrace(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_mixed=MIXED)
    plain = run(suite, trace=None)
    assert "= aiotrace =" not in plain.stdout.str()
    assert not list(suite.path.glob("aiotrace-*.json"))
    for listing in ("--collect-only", "--fixtures", "--markers"):  # no test runs: no trace
        listed = run(suite, "--aiotrace", listing, trace=None)
        assert listed.ret == pytest.ExitCode.OK, listed.stderr.str()
        assert "= aiotrace =" not in listed.stdout.str()
        assert not list(suite.path.glob("aiotrace-*.json"))
    gone = run(suite, "-p", "no:aiotrace", "--aiotrace", trace=None)
    assert gone.ret == pytest.ExitCode.USAGE_ERROR  # the option does not even exist
    assert "unrecognized arguments: --aiotrace" in gone.stderr.str()


def test_outcomes_are_identical_with_and_without_tracing(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_mixed=MIXED)
    plain = run(suite, trace=None)
    traced = run(suite, "--aiotrace")
    expected = {"passed": 2, "failed": 2, "errors": 1, "skipped": 1, "xfailed": 1, "xpassed": 1}
    assert plain.parseoutcomes() == traced.parseoutcomes() == expected
    assert plain.ret == traced.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = {
        name: span.attributes[semconv.ATTR_TEST_OUTCOME]
        for name, span in spans_by_test(trace_of(suite)).items()
    }
    assert outcomes == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_error": "error",
        "test_skip": "skipped",
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_async_pass": "passed",
        "test_async_fail": "failed",
    }


def test_enabled_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "aiotrace = true\naiotrace_trace_file = from-ini.json\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(passed=1)
    assert "Trace file: " in result.stdout.str()
    assert trace_of(pytester, "from-ini.json").named(semconv.SPAN_TEST)


# ---------------------------------------------------------------------------
# Spans: one trace, a span per test, primitives nested in the test that made them
# ---------------------------------------------------------------------------


def test_a_span_per_test_with_its_phases_and_primitives_nested(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_mixed=MIXED)
    run(suite, "--aiotrace")
    trace = trace_of(suite)
    (session,) = trace.named(semconv.SPAN_TEST_SESSION)
    assert session.parent_id == 0
    assert session.attributes[semconv.ATTR_TEST_SUITE_RUN_STATUS] == "failure"
    assert len({s.trace_id for s in trace.spans}) == 1
    tests = spans_by_test(trace)
    assert {t.parent_id for t in tests.values()} == {session.span_id}
    passed = tests["test_pass"]
    assert passed.attributes[semconv.ATTR_TEST_CASE_RESULT] == "pass"
    assert passed.attributes[semconv.ATTR_CODE_FILE_PATH].endswith("test_mixed.py")
    assert passed.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line_in(
        suite, "test_mixed.py", "def test_pass"
    )
    assert tests["test_fail"].attributes[semconv.ATTR_TEST_CASE_RESULT] == "fail"
    assert tests["test_fail"].status == 2  # ERROR
    phases = {
        (owning_test(trace, s), s.name)
        for s in trace.spans
        if s.name in (semconv.SPAN_TEST_SETUP, semconv.SPAN_TEST_CALL, semconv.SPAN_TEST_TEARDOWN)
    }
    assert {p for p in phases if p[0] == "test_pass"} == {
        ("test_pass", semconv.SPAN_TEST_SETUP),
        ("test_pass", semconv.SPAN_TEST_CALL),
        ("test_pass", semconv.SPAN_TEST_TEARDOWN),
    }
    (setup,) = [
        s for s in trace.named(semconv.SPAN_TEST_SETUP) if owning_test(trace, s) == "test_error"
    ]
    assert setup.attributes[semconv.ATTR_TEST_PHASE_OUTCOME] == "failed"
    assert "fixture failed" in str(setup.events[0][2][semconv.ATTR_EXCEPTION_MESSAGE])
    (hold,) = trace.named(semconv.SPAN_LOCK_HOLD)
    assert owning_test(trace, hold) == "test_async_pass"
    assert ancestors(trace, hold)[:3] == [
        semconv.SPAN_TASK,
        semconv.SPAN_TEST_CALL,
        semconv.SPAN_TEST,
    ]


PHASES = """
import asyncio
import unittest
import pytest


class TestCaseStyle(unittest.IsolatedAsyncioTestCase):
    async def test_unittest_fails(self):
        await asyncio.sleep(0)
        self.assertEqual(1, 2)

    def test_unittest_passes(self):
        pass


@pytest.mark.xfail(reason="known")
def test_xfail():
    raise KeyError("expected")


@pytest.mark.xfail(reason="known", strict=True)
def test_strict_xpass():
    pass


def test_skips_itself():
    pytest.skip("not here")


@pytest.fixture
def bad_teardown():
    yield
    raise OSError("teardown broke")


def test_teardown_fails(bad_teardown):
    pass
"""


def test_each_phase_has_its_reports_outcome(suite: pytest.Pytester) -> None:
    """A phase's outcome is its report's, not what its hook raised: unittest
    catches a test's failure itself, and an xfail's exception is expected."""
    suite.makepyfile(test_phases=PHASES)
    plain = run(suite, trace=None)
    traced = run(suite, "--aiotrace")
    assert plain.parseoutcomes() == traced.parseoutcomes()
    trace = trace_of(suite)
    phases = {
        (owning_test(trace, s), s.name.split(".")[-1]): s
        for s in trace.spans
        if s.name in (semconv.SPAN_TEST_SETUP, semconv.SPAN_TEST_CALL, semconv.SPAN_TEST_TEARDOWN)
    }
    outcomes = {key: s.attributes[semconv.ATTR_TEST_PHASE_OUTCOME] for key, s in phases.items()}
    assert {k: v for k, v in outcomes.items() if v != "passed"} == {
        ("test_unittest_fails", "call"): "failed",
        ("test_xfail", "call"): "xfailed",
        ("test_strict_xpass", "call"): "failed",
        ("test_skips_itself", "call"): "skipped",
        ("test_teardown_fails", "teardown"): "failed",
    }
    failed = phases["test_unittest_fails", "call"]
    assert failed.status == 2  # ERROR
    assert failed.status_description == "AssertionError: 1 != 2"
    ((_, _, event),) = failed.events
    assert event[semconv.ATTR_EXCEPTION_MESSAGE] == "1 != 2"
    assert phases["test_strict_xpass", "call"].status_description == "[XPASS(strict)] known"
    assert phases["test_teardown_fails", "teardown"].status_description == "OSError: teardown broke"
    for key in (("test_xfail", "call"), ("test_skips_itself", "call")):
        assert phases[key].status != 2
        assert not phases[key].events
    # Each phase ends before the next begins: ended when the phase did, not at its report.
    for test in ("test_unittest_fails", "test_xfail"):
        setup, call, teardown = (phases[test, when] for when in ("setup", "call", "teardown"))
        assert setup.end <= call.start <= call.end <= teardown.start


MANY = """
import asyncio
import pytest


@pytest.mark.parametrize("n", range(40))
def test_many(n):
    async def main():
        async with asyncio.Lock():
            await asyncio.sleep(0)

    asyncio.run(main())
"""

COUNT_LIVE_TEST_SPANS = """
import gc
import json


def pytest_unconfigure(config):
    gc.collect()
    live = [
        o for o in gc.get_objects()
        if type(o).__name__ == "_Span" and getattr(o, "name", None) == "pytest.test"
    ]
    with open("live.json", "w") as fh:
        json.dump(len(live), fh)
"""


def test_a_finished_test_keeps_nothing_of_its_tracing_alive(suite: pytest.Pytester) -> None:
    """pytest keeps every test item to the end of the session: what the plugin
    stashes on one (the test's span, a copy of every wait counter) must go when
    the test ends, or a suite's memory grows with every test it runs."""
    suite.makepyfile(test_many=MANY)
    suite.makeconftest(COUNT_LIVE_TEST_SPANS)
    result = run(suite, "--aiotrace")
    result.assert_outcomes(passed=40)
    assert json.loads((suite.path / "live.json").read_text()) == 0
    assert len(trace_of(suite).named(semconv.SPAN_TEST)) == 40


def test_the_session_joins_an_outer_trace(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite.makepyfile(test_one="def test_one():\n    pass\n")
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    monkeypatch.setenv("TRACEPARENT", f"00-{trace_id}-{parent}-01")
    run(suite, "--aiotrace")
    (session,) = trace_of(suite).named(semconv.SPAN_TEST_SESSION)
    assert (session.trace_id, session.parent_id) == (int(trace_id, 16), int(parent, 16))
    other = "11111111111111111111111111111111"
    run(suite, "--aiotrace", f"--aiotrace-traceparent=00-{other}-2222222222222222-01")
    (session,) = trace_of(suite).named(semconv.SPAN_TEST_SESSION)
    assert session.trace_id == int(other, 16)  # the option wins over the variable


PYTEST_ASYNCIO = """
import asyncio
import pytest

async def contend(name):
    lock = asyncio.Lock()
    async def worker():
        async with lock:
            await asyncio.sleep(0.003)
    await asyncio.gather(worker(), worker())

@pytest.fixture
async def prepared():
    await contend("fixture")
    yield

async def test_first(prepared):
    await contend("first")

async def test_second():
    await contend("second")

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_a():
    await contend("module a")

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_b():
    await contend("module b")
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_pytest_asyncio_tests_nest_under_their_own_test(suite: pytest.Pytester, mode: str) -> None:
    source = PYTEST_ASYNCIO
    if mode == "strict":
        source = source.replace("@pytest.fixture\nasync", "@pytest_asyncio.fixture\nasync")
        source = source.replace("\nasync def test_", "\n@pytest.mark.asyncio\nasync def test_")
        source = "import pytest_asyncio\n" + source
    suite.makepyfile(test_pa=source)
    result = run(suite, "--aiotrace", f"--asyncio-mode={mode}", "--aiotrace-min-hold=0")
    result.assert_outcomes(passed=4)
    trace = trace_of(suite)
    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    where = sorted((owning_test(trace, h), ancestors(trace, h)[2]) for h in holds)
    assert where == [
        ("test_first", semconv.SPAN_TEST_CALL),
        ("test_first", semconv.SPAN_TEST_CALL),
        ("test_first", semconv.SPAN_TEST_SETUP),  # the async fixture's, in setup
        ("test_first", semconv.SPAN_TEST_SETUP),
        ("test_module_loop_a", semconv.SPAN_TEST_CALL),
        ("test_module_loop_a", semconv.SPAN_TEST_CALL),
        ("test_module_loop_b", semconv.SPAN_TEST_CALL),
        ("test_module_loop_b", semconv.SPAN_TEST_CALL),
        ("test_second", semconv.SPAN_TEST_CALL),
        ("test_second", semconv.SPAN_TEST_CALL),
    ]


ANYIO = """
import asyncio
import threading
import pytest

pytestmark = pytest.mark.anyio

@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"

async def contend():
    lock = asyncio.Lock()
    async def worker():
        async with lock:
            await asyncio.sleep(0.003)
    await asyncio.gather(worker(), worker())

async def test_first():
    await contend()

async def test_second():
    await contend()

def test_sync_with_asyncio_run():
    asyncio.run(contend())

def test_sync_with_asyncio_run_in_a_thread():
    thread = threading.Thread(target=asyncio.run, args=(contend(),))
    thread.start()
    thread.join()
"""


def test_anyio_asyncio_run_and_thread_tests_nest_under_their_own_test(
    suite: pytest.Pytester,
) -> None:
    """anyio runs every test in one long-lived task; each test's spans still nest under it.

    So do those of an event loop in a thread the test starts: a thread begins
    with an empty context (a blocking portal, a server), where its tasks would
    each start a trace of their own.
    """
    suite.makepyfile(test_anyio=ANYIO)
    result = run(suite, "--aiotrace", "-p", "no:asyncio")
    result.assert_outcomes(passed=4)
    trace = trace_of(suite)
    assert len({s.trace_id for s in trace.spans}) == 1
    owners = sorted(owning_test(trace, h) or "?" for h in trace.named(semconv.SPAN_LOCK_HOLD))
    assert owners == [
        "test_first",
        "test_first",
        "test_second",
        "test_second",
        "test_sync_with_asyncio_run",
        "test_sync_with_asyncio_run",
        "test_sync_with_asyncio_run_in_a_thread",
        "test_sync_with_asyncio_run_in_a_thread",
    ]
    for hold in trace.named(semconv.SPAN_LOCK_HOLD):  # in the phase that ran, the call
        assert semconv.SPAN_TEST_CALL in ancestors(trace, hold)


def test_xdist_workers_share_the_sessions_trace(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_contended=CONTENDED, test_mixed=MIXED)
    result = run(suite, "--aiotrace", "-n", "2")
    result.assert_outcomes(passed=5, failed=2, errors=1, skipped=1, xfailed=1, xpassed=1)
    trace = trace_of(suite)
    assert len({s.trace_id for s in trace.spans}) == 1
    (session,) = trace.named(semconv.SPAN_TEST_SESSION)
    workers = trace.named(semconv.SPAN_TEST_WORKER)
    assert sorted(w.attributes[semconv.ATTR_XDIST_WORKER] for w in workers) == ["gw0", "gw1"]
    assert {w.parent_id for w in workers} == {session.span_id}
    tests = trace.named(semconv.SPAN_TEST)
    assert len(tests) == 11
    assert {t.parent_id for t in tests} <= {w.span_id for w in workers}
    slow = [h for h in trace.named(semconv.SPAN_LOCK_HOLD) if owning_test(trace, h) == "test_slow"]
    assert len(slow) == 3
    out = result.stdout.str()
    assert "test_contended.py::test_slow" in out  # per-test records came from the workers
    assert out.index("test_contended.py::test_slow") < out.index("test_contended.py::test_fast")


def test_a_default_trace_file_is_the_sessions_own_and_workers_write_none(
    suite: pytest.Pytester,
) -> None:
    """Named after the project and the second, taking ``-2`` if an earlier run has that name."""
    suite.makepyfile(test_contended=CONTENDED)
    project = re.sub(r"[^\w.-]", "_", suite.path.name)
    now = datetime.datetime.now()
    taken = [
        suite.path / f"aiotrace-{project}-{now + datetime.timedelta(seconds=s):%Y%m%d-%H%M%S}.json"
        for s in range(60)
    ]
    for path in taken:
        path.write_text("an earlier run's spans")
    result = run(suite, "--aiotrace", "-n", "2", trace=None)
    result.assert_outcomes(passed=3)
    assert all(path.read_text() == "an earlier run's spans" for path in taken)
    (ours,) = set(suite.path.glob("aiotrace-*.json")) - set(taken)  # no file per worker
    assert ours.name.endswith("-2.json")
    assert f"Trace file: {ours}" in result.stdout.str()
    assert len(Trace(ours).named(semconv.SPAN_TEST)) == 3


FORKS = """
import asyncio
import multiprocessing


def work():
    async def step():
        async with asyncio.Lock():
            await asyncio.sleep(0)

    asyncio.run(step())


def test_forks():
    child = multiprocessing.get_context("fork").Process(target=work)
    child.start()
    child.join(60)
    assert child.exitcode == 0
"""


@pytest.mark.parametrize("workers", [None, "2"])
def test_a_test_that_forks_runs_as_untraced(suite: pytest.Pytester, workers: str | None) -> None:
    """The child must not hang in OpenTelemetry's fork hook.

    opentelemetry-sdk 1.44+ re-detects a provider's resource in a forked
    child through a ThreadPoolExecutor: if ``concurrent.futures.thread``
    was first imported after the provider was made, its own fork hook (which
    frees the lock ``submit`` takes) runs after, and the child waits for
    ever. An xdist worker imports it late.
    """
    suite.makepyfile(test_forks=FORKS)
    xdist = ["-n", workers] if workers else []
    result = run(suite, "--aiotrace", "--aiotrace-min-hold=0", "--aiotrace-children", *xdist)
    result.assert_outcomes(passed=1)
    holds = trace_of(suite).named(semconv.SPAN_LOCK_HOLD)
    assert len(holds) == 1  # the child's, delivered


EXITS = """
import asyncio
import os


def test_first():
    pass


def test_cut():
    async def main():
        lock = asyncio.Lock()
        async with lock:
            await asyncio.sleep(0.002)
        os._exit(3)

    asyncio.run(main())
"""


def _cut_short(
    suite: pytest.Pytester, program: str, workers: str | None, outcome: str, what: str
) -> tuple[pytest.RunResult, Trace]:
    """Run ``program``: ``test_first``, then ``test_cut``, which ends the process.

    ``test_cut``'s span is marked ``outcome``, its status ``<what> during the test``,
    and one line says where the trace is; under xdist only that worker died, and
    the run went on.
    """
    suite.makepyfile(test_cut=program)
    result = run(
        suite, "--aiotrace", "--aiotrace-min-hold=0", *(["-n", workers] if workers else [])
    )
    trace = trace_of(suite)
    tests = spans_by_test(trace)
    assert tests["test_cut"].attributes[semconv.ATTR_TEST_OUTCOME] == outcome
    assert tests["test_cut"].status_description == f"{what} during the test"
    assert tests["test_first"].attributes[semconv.ATTR_TEST_OUTCOME] == "passed"
    if workers is None:
        trace_file = suite.path / "trace.json"
        assert result.stdout.lines[-1] == (
            f"aiotrace: {what} during test_cut.py::test_cut: the trace was finished "
            f"first; trace file: {trace_file}"
        )
    else:
        result.assert_outcomes(passed=1, failed=1)  # the worker crashed, the run went on
    return result, trace


@pytest.mark.parametrize("workers", [None, "2"])
def test_os_exit_during_a_test_delivers_the_trace_first(
    suite: pytest.Pytester, workers: str | None
) -> None:
    """``os._exit()`` skips pytest's end: the trace was lost, ``0 spans`` in its file.

    Under xdist only the worker dies; its spans reach the controller's trace.
    """
    result, trace = _cut_short(suite, EXITS, workers, semconv.TEST_OUTCOME_EXITED, "os._exit(3)")
    (hold,) = trace.named(semconv.SPAN_LOCK_HOLD)
    assert owning_test(trace, hold) == "test_cut"
    if workers is None:
        assert result.ret == 3
        (session,) = trace.named(semconv.SPAN_TEST_SESSION)
        assert session.attributes[semconv.ATTR_EXIT_CODE] == 3
        assert session.attributes[semconv.ATTR_TEST_SUITE_RUN_STATUS] == "failure"


KILLED = """
import asyncio
import os
import signal


def test_first():
    pass


def test_cut():
    async def main():
        stuck_on = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        await stuck_on.wait()

    asyncio.run(main())
"""


@pytest.mark.parametrize("workers", [None, "2"])
def test_sigterm_during_a_test_delivers_the_trace_first(
    suite: pytest.Pytester, workers: str | None
) -> None:
    """A CI job's timeout ends pytest with SIGTERM, which kills without clean-up: the
    stuck test, the one the timeout is about, was missing from the trace. Now its span
    ends, marked, with what it waited for, and the process still dies by SIGTERM."""
    result, trace = _cut_short(
        suite, KILLED, workers, semconv.TEST_OUTCOME_KILLED, "killed by SIGTERM"
    )
    (wait,) = trace.named(semconv.SPAN_EVENT_WAIT)
    assert wait.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PENDING
    assert owning_test(trace, wait) == "test_cut"
    if workers is None:
        assert result.ret == -signal.SIGTERM


# ---------------------------------------------------------------------------
# The terminal summary and OTLP
# ---------------------------------------------------------------------------


SERVER_THREAD = """
import asyncio
import threading

import pytest


@pytest.fixture(scope="session", autouse=True)
def server():
    async def serve(stop):
        idle = asyncio.Event()
        while not stop.is_set():
            try:
                await asyncio.wait_for(idle.wait(), 0.005)
            except asyncio.TimeoutError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=asyncio.run, args=(serve(stop),))
    thread.start()
    yield
    stop.set()
    thread.join()
"""
"""A server on a thread of its own for the whole session, waiting on its own event:
none of it is any test's waiting."""


def test_summary_ranks_tests_and_primitives_and_says_where_the_trace_went(
    suite: pytest.Pytester,
) -> None:
    receiver = GrpcReceiver()
    try:
        suite.makeconftest(SERVER_THREAD)
        suite.makepyfile(test_contended=CONTENDED)
        result = run(suite, "--aiotrace", f"--aiotrace-otlp={receiver.endpoint}")
    finally:
        receiver.stop()
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    section = out[out.index("= aiotrace =") :]
    lines = section.splitlines()
    ranked = [line for line in lines if "test_contended.py::" in line]
    assert [re.search(r"::(\w+)", line).group(1) for line in ranked] == [  # type: ignore[union-attr]
        "test_slow",
        "test_fast",
    ]
    slow = f"slow_lock (test_contended.py:{line_in(suite, 'test_contended.py', 'slow_lock =')})"
    fast = f"fast_lock (test_contended.py:{line_in(suite, 'test_contended.py', 'fast_lock =')})"
    assert f"(2 waits: {slow} " in ranked[0]
    assert f"(2 waits: {fast} " in ranked[1]
    assert "Most contended primitives:" in section
    assert section.index(f"{slow}  Lock: 2 waits") < section.index(f"{fast}  Lock: 2 waits")
    trace = trace_of(suite)
    (session,) = trace.named(semconv.SPAN_TEST_SESSION)
    trace_id = f"{session.trace_id:032x}"
    assert f"Trace file: {suite.path / 'trace.json'}" in section
    assert f"Jaeger: http://localhost:16686/trace/{trace_id}" in section
    assert {(s.name, s.span_id) for s in receiver.spans} == {
        (s.name, s.span_id) for s in trace.spans
    }
    test_slow = next(
        s
        for s in trace.named(semconv.SPAN_TEST)
        if "test_slow" in s.attributes[semconv.ATTR_TEST_CASE_NAME]
    )
    assert test_slow.attributes[semconv.ATTR_TEST_WAITS] == 2
    assert test_slow.attributes[semconv.ATTR_TEST_WAIT_MS] >= 80


IMPATIENT = """
import asyncio


def test_impatient():
    async def main():
        lock = asyncio.Lock()

        async def slow():
            async with lock:
                await asyncio.sleep(0.1)  # HOLDING

        async def impatient():
            try:
                await asyncio.wait_for(lock.acquire(), 0.02)
            except asyncio.TimeoutError:
                return
            lock.release()

        holder = asyncio.create_task(slow())
        await asyncio.sleep(0)
        await asyncio.gather(impatient(), impatient())
        await holder

    asyncio.run(main())
"""


def test_summary_says_where_the_holder_was_and_how_many_waits_timed_out(
    suite: pytest.Pytester,
) -> None:
    suite.makepyfile(test_impatient=IMPATIENT)
    result = run(suite, "--aiotrace", trace=None)
    result.assert_outcomes(passed=1)
    lines = result.stdout.str().splitlines()
    at = lines.index("Most contended primitives:")
    lock = f"lock (test_impatient.py:{line_in(suite, 'test_impatient.py', 'lock =')})"
    assert re.fullmatch(
        rf"  {re.escape(lock)}  Lock: 2 waits, .* \(2 timed out\); longest hold .*", lines[at + 1]
    )
    holding = line_in(suite, "test_impatient.py", "# HOLDING")
    assert lines[at + 2].startswith(
        f"    while others waited, its holder was at test_impatient.py:{holding} in "
        "test_impatient.<locals>.main.<locals>.slow: await asyncio.sleep(0.1) ("
    )


def test_a_tests_child_process_is_diagnosed_leaks_at_its_exit_included(
    suite: pytest.Pytester,
) -> None:
    """The session checks leaks after each test; a child's end is its own exit."""
    suite.makepyfile(
        test_child="""
        import subprocess, sys

        CHILD = '''
        import asyncio

        async def main():
            pool_lock = asyncio.Lock()

            async def forget():
                await pool_lock.acquire()

            await asyncio.create_task(forget())

        asyncio.run(main())
        '''

        def test_child():
            subprocess.run([sys.executable, "-c", CHILD], check=True)
        """
    )
    result = run(suite, "--aiotrace", "--aiotrace-children", trace=None)
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    # Named from its source where Python keeps a -c program's (3.13+), else by its line
    assert re.search(r"LEAK: lock held: (pool_lock \(<string>:5\)|<string>:5)\n", out), out
    assert "in child process " in out


def test_summary_bounds_the_longest_of_waits_too_short_to_be_timed(
    suite: pytest.Pytester,
) -> None:
    """Short waits are summed, not timed: "longest < 1.0 ms", never "longest 0.0 ms"."""
    suite.makepyfile(
        test_brief="""
        import asyncio

        def test_brief():
            async def main():
                brief_lock = asyncio.Lock()

                async def worker():
                    async with brief_lock:
                        await asyncio.sleep(0)

                await asyncio.gather(worker(), worker(), worker())

            asyncio.run(main())
        """
    )
    result = run(suite, "--aiotrace", trace=None)
    result.assert_outcomes(passed=1)
    (line,) = [line for line in result.outlines if line.startswith("  brief_lock (")]
    found = re.fullmatch(r".*  Lock: 2 waits, .* in total, longest (.+); longest hold (.+)", line)
    assert found is not None, line
    for longest in found.groups():  # a loop turn each: under 1 ms, unless the machine stalled
        if not longest.startswith("<"):
            assert float(longest.split()[0]) >= 1.0, line
        else:
            assert longest == "< 1.0 ms", line


HELD_WHILE_WAITING = """
import asyncio

def test_holder_waits():
    async def main():
        lock = asyncio.Lock()
        reply = asyncio.get_running_loop().create_future()

        async def holder():
            async with lock:
                await reply

        async def queued():
            async with lock:
                pass

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        others = [asyncio.create_task(queued()) for _ in range(2)]
        await asyncio.sleep(0.05)
        reply.set_result(1)
        await asyncio.gather(first, *others)
    asyncio.run(main())
"""


def test_summary_says_what_a_holder_others_queued_for_waited_on(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_held=HELD_WHILE_WAITING)
    result = run(suite, "--aiotrace")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    section = out[out.index("= aiotrace =") :].splitlines()
    start = section.index("Waited while holding (others queued for what was held):")
    taken = line_in(suite, "test_held.py", "async with lock:")
    awaited = line_in(suite, "test_held.py", "await reply")
    made = line_in(suite, "test_held.py", "lock = asyncio.Lock()")
    future = line_in(suite, "test_held.py", "reply = ")
    assert section[start + 1].startswith(
        f"  lock (test_held.py:{made}), taken at test_held.py:{taken}, was held while waiting "
    ), section
    assert section[start + 1].endswith(
        f" for reply (test_held.py:{future}) at test_held.py:{awaited} "
        "(1 time; up to 2 queued behind)"
    ), section


OWN_PROVIDER = """
import asyncio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

@pytest.fixture(scope="session")
def exporter():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider
    return exporter

def test_my_instrumentation(exporter):
    async def main():
        with trace.get_tracer("app").start_as_current_span("handler"):
            lock = asyncio.Lock()
            async with lock:
                await asyncio.sleep(0)
    asyncio.run(main())
    assert [s.name for s in exporter.get_finished_spans()] == ["handler"]
"""


def test_a_suite_that_sets_its_own_provider_keeps_it(suite: pytest.Pytester) -> None:
    """A suite testing its own instrumentation sets a provider: the plugin must not take it."""
    suite.makepyfile(test_own=OWN_PROVIDER)
    result = run(suite, "--aiotrace", "-W", "error")
    result.assert_outcomes(passed=1)
    assert "Overriding" not in result.stdout.str() + result.stderr.str()
    trace = trace_of(suite)
    (handler,) = trace.named("handler")  # in the session's trace too
    (test,) = trace.named(semconv.SPAN_TEST)
    assert "handler" not in {s.name for s in trace.spans if s.parent_id == 0}
    assert ancestors(trace, handler)[-1] == semconv.SPAN_TEST_SESSION
    assert test.trace_id == handler.trace_id


def test_ini_options_apply_and_command_line_options_win(suite: pytest.Pytester) -> None:
    suite.makeini(
        INI
        + "aiotrace = true\naiotrace_min_hold = 0\naiotrace_summary = 1\n"
        + "aiotrace_service_name = from-ini\n"
    )
    suite.makepyfile(test_contended=CONTENDED)
    result = run(suite)
    trace = trace_of(suite)
    assert trace.resource["service.name"] == "from-ini"
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 6  # min_hold 0: the short ones too
    assert "... and 1 more test that waited" in result.stdout.str()  # summary 1
    run(
        suite, "--aiotrace-min-hold=1", "--aiotrace-min-wait=1", "--aiotrace-service-name=from-flag"
    )
    trace = trace_of(suite)
    assert trace.resource["service.name"] == "from-flag"
    assert trace.named(semconv.SPAN_LOCK_HOLD) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aiotrace-protocol=udp"], "aiotrace_protocol: 'udp' is not valid; valid values: grpc"),
        (["--aiotrace-min-wait=soon"], "aiotrace_min_wait: 'soon' is not valid"),
        (["--aiotrace-summary=-1"], "aiotrace_summary: '-1' is not valid; valid values: 0, 1"),
        (["--aiotrace-traceparent=abc"], "aiotrace_traceparent: 'abc' is not a W3C traceparent"),
        (["--aiotrace-trace-file=nowhere/t.json"], "aiotrace_trace_file: no directory"),
        (["--aiotrace-otlp=ftp://x"], "aiotrace_otlp: invalid OTLP endpoint 'ftp://x'"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_valid_ones(
    suite: pytest.Pytester, args: list[str], message: str
) -> None:
    suite.makepyfile(test_one="def test_one():\n    pass\n")
    result = run(suite, "--aiotrace", *args, trace=None)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_a_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI + "aiotrace = maybe\n")
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess(timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "aiotrace: 'maybe' is not valid; valid values: true, false" in result.stderr.str()


# ---------------------------------------------------------------------------
# The fixture
# ---------------------------------------------------------------------------

FIXTURE = """
import asyncio
import aiotrace
import pytest

def test_first(aiotrace_spans):
    async def main():
        api = aiotrace.name(asyncio.Semaphore(2), "api")
        async def call():
            async with api:
                await asyncio.sleep(0.002)
        await asyncio.gather(*(call() for _ in range(5)))
    asyncio.run(main())
    stats = aiotrace_spans.primitive("api")
    assert stats.holds == 5
    assert stats.max_concurrent_holds == 2
    assert stats.waits == 3
    assert stats.kind == "Semaphore"
    assert stats.max_hold < 0.5

@pytest.mark.asyncio
async def test_second(aiotrace_spans):
    cache = aiotrace.name(asyncio.Lock(), "cache")
    async with cache:
        pass
    assert set(aiotrace_spans.primitives()) == {"cache"}  # nothing of test_first
    assert aiotrace_spans.primitive("cache").holds == 1  # even a short hold is a span
    assert aiotrace_spans.primitive("cache").max_hold < 0.05
    with pytest.raises(KeyError, match="seen: \\\\['cache'\\\\]"):
        aiotrace_spans.primitive("api")

def test_uses_capture_spans_inside():
    from aiotrace.testing import capture_spans
    with capture_spans(min_hold=0, tasks=False) as captured:
        async def main():
            lock = aiotrace.name(asyncio.Lock(), "inner")
            async with lock:
                pass
        asyncio.run(main())
    assert [s.name for s in captured.spans] == ["asyncio.Lock.hold"]
"""


@pytest.mark.parametrize("traced", [True, False])
def test_the_fixture_gives_each_test_its_own_spans(suite: pytest.Pytester, traced: bool) -> None:
    suite.makepyfile(test_fixture=FIXTURE)
    result = run(suite, *(["--aiotrace"] if traced else []), trace="trace.json" if traced else None)
    result.assert_outcomes(passed=3)
    if traced:
        trace = trace_of(suite)
        holds = trace.named(semconv.SPAN_SEMAPHORE_HOLD)
        assert len(holds) == 5  # the session's trace has them too
        assert {owning_test(trace, h) for h in holds} == {"test_first"}
        names = {s.attributes.get(semconv.ATTR_PRIMITIVE_NAME) for s in trace.spans}
        assert "inner" not in names  # capture_spans() inside a test keeps its spans to itself
        summary = [
            attrs
            for name, _, attrs in trace.named(semconv.SPAN_TEST_SESSION)[0].events
            if name == semconv.EVENT_PRIMITIVE_SUMMARY
        ]
        assert {a[semconv.ATTR_PRIMITIVE_NAME] for a in summary} >= {"api", "cache"}


# ---------------------------------------------------------------------------
# Leaks: reported by default, failed when strict
# ---------------------------------------------------------------------------

LEAKS = """
import asyncio
import pytest

def test_clean():
    async def main():
        lock = asyncio.Lock()
        async with lock:
            pass
    asyncio.run(main())

def test_lock_left_held():
    async def main():
        cache_lock = asyncio.Lock()
        await cache_lock.acquire()
    asyncio.run(main())

def test_permit_left_taken():
    async def main():
        pool = asyncio.Semaphore(3)
        await pool.acquire()
    asyncio.run(main())

def test_future_never_resolved():
    loop = asyncio.new_event_loop()
    reply = loop.create_future()
    loop.close()
    test_future_never_resolved.keep = reply

@pytest.mark.aiotrace_strict
def test_strict_and_leaky():
    async def main():
        marked_lock = asyncio.Lock()
        await marked_lock.acquire()
    asyncio.run(main())

@pytest.mark.aiotrace_strict
def test_strict_and_clean():
    async def main():
        lock = asyncio.Lock()
        async with lock:
            pass
    asyncio.run(main())
"""


def test_leaks_are_reported_by_default_and_fail_strict_tests(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_leaks=LEAKS)
    result = run(suite, "--aiotrace")
    result.assert_outcomes(passed=6, errors=1)
    out = result.stdout.str()
    assert "ERROR at teardown of test_strict_and_leaky" in out

    def at(text: str) -> str:
        return f"test_leaks.py:{line_in(suite, 'test_leaks.py', text)}"

    assert f"lock held: marked_lock ({at('marked_lock =')})" in out
    section = out[out.index("= aiotrace =") :]
    assert f"  lock held: cache_lock ({at('cache_lock =')}), by 1 test:\n" in section
    assert "\n    test_leaks.py::test_lock_left_held: " in section
    assert f"  permit taken: pool ({at('pool =')}), by 1 test:\n" in section
    assert f"  future unresolved: reply ({at('reply =')}), by 1 test:\n" in section
    assert (
        "    test_leaks.py::test_future_never_resolved: still pending, no task waiting\n"
    ) in section
    assert "test_clean:" not in section
    assert f"acquired at {at('await cache_lock.acquire()')} in test_lock_left_held." in out
    trace = trace_of(suite)
    leaky = spans_by_test(trace)["test_lock_left_held"]
    ((name, _, attrs),) = leaky.events
    assert name == semconv.EVENT_LEAK
    assert attrs[semconv.ATTR_LEAK_KIND] == "lock held"


@pytest.mark.parametrize("workers", [None, "2"])
def test_what_tests_leave_behind_is_listed_by_primitive_most_severe_first(
    suite: pytest.Pytester, workers: str | None
) -> None:
    """A helper's forgotten future, left by five tests, is one culprit, listed once.

    Under xdist the workers' records reach the summary, in no set order.
    """
    suite.makepyfile(
        test_many="""
import asyncio

def start_and_forget():
    loop = asyncio.new_event_loop()
    signal = loop.create_future()
    loop.close()
    start_and_forget.kept.append(signal)

start_and_forget.kept = []

def test_a(): start_and_forget()
def test_b(): start_and_forget()
def test_c(): start_and_forget()
def test_d(): start_and_forget()
def test_e(): start_and_forget()

def test_lock():
    async def main():
        pool_lock = asyncio.Lock()
        await pool_lock.acquire()
    asyncio.run(main())
"""
    )
    xdist = ["-n", workers] if workers else []
    out = run(suite, "--aiotrace", *xdist).stdout.str()
    section = out[out.index("Left behind by tests") :].splitlines()
    signal = f"signal (test_many.py:{line_in(suite, 'test_many.py', 'signal =')})"
    lock = f"pool_lock (test_many.py:{line_in(suite, 'test_many.py', 'pool_lock =')})"
    assert section[1] == f"  lock held: {lock}, by 1 test:"
    assert section[2].startswith("    test_many.py::test_lock: ")
    assert section[3] == f"  future unresolved: {signal}, by 5 tests:"
    listed = [line.split(":")[2] for line in section[4:7]]
    if not workers:
        assert listed == ["test_a", "test_b", "test_c"]
    assert len(set(listed)) == 3
    assert set(listed) <= {"test_a", "test_b", "test_c", "test_d", "test_e"}
    assert section[7] == "    ... and 2 more tests"
    assert section[8].startswith("Spans: ")

    out = run(suite, "--aiotrace", "--aiotrace-summary=0", *xdist).stdout.str()
    section = out[out.index("Left behind by tests") :].splitlines()
    assert section[1] == f"  lock held: {lock}, by 1 test:"
    assert section[3] == "  ... and 1 more primitive left behind"


@pytest.mark.parametrize("workers", [None, "2"])
def test_the_summary_counts_holds_that_went_without_their_holders_name(
    suite: pytest.Pytester, workers: str | None
) -> None:
    """As ``aiotrace run``'s report: how many holds, released by another task, went
    without their holder's name (the lookup's budget spent), every worker's counted."""
    program = (PROGRAMS / "given_back.py").read_text()
    test = "\n\ndef test_given_back():\n    asyncio.run(main())\n"
    suite.makepyfile(test_given_back=program + test)
    xdist = ["-n", workers] if workers else []
    result = run(suite, "--aiotrace", "--aiotrace-min-hold=0", *xdist)
    result.assert_outcomes(passed=1)
    summary = [line for line in result.stdout.lines if line.startswith("Spans: ")]
    assert len(summary) == 1
    assert summary[0].endswith(
        "; 3 holds released by another task went without their holder's name"
        " (the lookup's time budget was spent)"
    )


def test_the_strict_option_fails_every_leaky_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_leaks=LEAKS)
    result = run(suite, "--aiotrace", "--aiotrace-strict")
    result.assert_outcomes(passed=6, errors=4)
    errors = set(re.findall(r"ERROR at teardown of (\w+)", result.stdout.str()))
    assert errors == {
        "test_lock_left_held",
        "test_permit_left_taken",
        "test_future_never_resolved",
        "test_strict_and_leaky",
    }


# ---------------------------------------------------------------------------
# Under `aiotrace run -m pytest`
# ---------------------------------------------------------------------------


def _under_aiotrace_run(suite: pytest.Pytester) -> subprocess.CompletedProcess[str]:
    """``aiotrace run --trace-file=run.json -m pytest --aiotrace -q`` in the suite."""
    from tests.cli_support import clean_env

    return subprocess.run(
        [
            sys.executable,
            "-m",
            "aiotrace",
            "run",
            "--trace-file=run.json",
            "-m",
            "pytest",
            "--aiotrace",
            "-q",
        ],
        cwd=suite.path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_under_aiotrace_run_the_tests_join_the_runs_trace(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_contended=CONTENDED)
    result = _under_aiotrace_run(suite)
    assert result.returncode == 0, result.stdout + result.stderr
    trace = trace_of(suite, "run.json")
    (root,) = trace.named(semconv.SPAN_RUN)
    tests = trace.named(semconv.SPAN_TEST)
    assert len(tests) == 3
    assert {t.parent_id for t in tests} == {root.span_id}
    assert "Traced by the enclosing `aiotrace run`" in result.stdout


@pytest.mark.parametrize(
    ("program", "outcome", "what", "status"),
    [
        (KILLED, semconv.TEST_OUTCOME_KILLED, "killed by SIGTERM", -signal.SIGTERM),
        (EXITS, semconv.TEST_OUTCOME_EXITED, "os._exit(3)", 3),
    ],
)
def test_under_aiotrace_run_a_test_cut_short_is_in_the_runs_trace(
    suite: pytest.Pytester, program: str, outcome: str, what: str, status: int
) -> None:
    """The run delivers on SIGTERM and ``os._exit``, but only the plugin knows the test
    that was running: its span, and its phase's, were never ended, and so missing, and
    what it had done was left without a parent. The plugin ends them first, then the
    run delivers."""
    suite.makepyfile(test_cut=program)
    result = _under_aiotrace_run(suite)
    assert result.returncode == status, result.stdout + result.stderr
    trace = trace_of(suite, "run.json")
    tests = spans_by_test(trace)
    assert tests["test_cut"].attributes[semconv.ATTR_TEST_OUTCOME] == outcome
    assert tests["test_cut"].status_description == f"{what} during the test"
    ids = {span.span_id for span in trace.spans}
    assert [s.name for s in trace.spans if s.parent_id and s.parent_id not in ids] == []
    assert f"aiotrace: {what} during test_cut.py::test_cut" in result.stdout
    assert f"exit status {128 + signal.SIGTERM if status < 0 else status}" in result.stderr


# ---------------------------------------------------------------------------
# Diagnosis per test
# ---------------------------------------------------------------------------

DIAGNOSED = """
import asyncio
import pytest

def test_hangs():
    async def main():
        ready = asyncio.Event()
        await ready.wait()
    asyncio.run(main())

async def test_deadlocks():
    first = asyncio.Lock()
    second = asyncio.Lock()
    async def transfer(x, y):
        async with x:
            await asyncio.sleep(0.02)
            async with y:
                pass
    await asyncio.gather(transfer(first, second), transfer(second, first))

def test_inverts_lock_order():
    async def main():
        users = asyncio.Lock()
        orders = asyncio.Lock()
        async with users:
            async with orders:
                pass
        async with orders:
            async with users:
                pass
    asyncio.run(main())

async def test_passes_while_its_background_task_dies():
    async def refresh():
        raise ConnectionError("backend down")  # RAISES
    asyncio.create_task(refresh(), name="refresher")
    await asyncio.sleep(0.01)

def test_fine_afterwards():
    asyncio.run(asyncio.sleep(0.01))
"""


SLOW_OUTSIDE_TESTS = """
import asyncio, time

time.sleep(1.2)  # a slow import, while pytest collects

def test_quick():
    asyncio.run(asyncio.sleep(0.01))

def test_quick_too():
    asyncio.run(asyncio.sleep(0.01))
"""


@pytest.mark.parametrize("workers", [None, "2"])
def test_the_hang_timeout_runs_only_while_a_test_does(
    suite: pytest.Pytester, workers: str | None
) -> None:
    """Collection, the time between tests, and pytest-xdist's controller (which runs no
    test, and whose session outlasts the timeout) are not a test that hung."""
    suite.makepyfile(test_slow_outside=SLOW_OUTSIDE_TESTS)
    xdist = ["-n", workers] if workers else []
    result = run(suite, "--aiotrace", "--aiotrace-hang-timeout=1", *xdist)
    result.assert_outcomes(passed=2)
    assert "HANG" not in result.stdout.str() + result.stderr.str()


SWALLOWS_CANCELLATION = f"""
import asyncio, contextlib, runpy

def test_swallows():  # a TaskGroup's task swallows every cancellation
    runpy.run_path({str(PROGRAMS / "diag" / "hang_swallowed_cancel.py")!r})

async def test_swallows_in_its_loop():  # pytest-asyncio's loop, closing, waits for it too
    async def worker():
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
    asyncio.create_task(worker())
    await asyncio.Event().wait()

def test_afterwards():
    pass
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup")
def test_a_hung_test_its_cancellation_cannot_end_fails_and_the_run_goes_on(
    suite: pytest.Pytester,
) -> None:
    """A task swallowing every cancellation hangs the test, and asyncio.run's own clean-up
    after it: the test's loop is made to raise each time it is stuck again."""
    suite.makepyfile(test_swallowing=SWALLOWS_CANCELLATION)
    result = run(  # hung: a timeout
        suite, "--aiotrace", "--aiotrace-hang-timeout=0.5", "--asyncio-mode=auto"
    )
    outcomes = result.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"]) == (1, 2)
    out = result.stdout.str()
    assert "FAILED test_swallowing.py::test_swallows - aiotrace: HANG" in out
    assert "FAILED test_swallowing.py::test_swallows_in_its_loop - aiotrace: HANG" in out
    # The async test's teardown, where pytest-asyncio's loop may wait for the task as it
    # closes (as on 3.12 and 3.13), is stopped so too: an error of the test, if any.
    errors = [line for line in out.splitlines() if line.startswith("ERROR test_swallowing")]
    assert all(" - aiotrace.diagnosis.Hang" in line for line in errors), errors  # (cut short)


SESSION_SERVER = """
import asyncio, threading
import pytest

@pytest.fixture(scope="session")
def server():  # a loop of its own in a thread, serving every test
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box = {}
    async def serve():
        box["requests"] = asyncio.Queue()
        ready.set()
        while True:
            reply = await box["requests"].get()
            reply.set_result("pong")
    def run():
        box["task"] = loop.create_task(serve(), name="server")
        loop.run_forever()
    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    def ask():
        async def request():
            reply = loop.create_future()
            box["requests"].put_nowait(reply)
            return await reply
        return asyncio.run_coroutine_threadsafe(request(), loop).result(timeout=5)
    yield ask, loop, box
    loop.call_soon_threadsafe(loop.stop)

def test_before(server):
    assert server[0]() == "pong"

def test_hangs_in_its_own_loop(server):
    async def main():
        await asyncio.Event().wait()
    asyncio.run(main())

def test_hangs_on_a_request_to_the_server(server):
    async def stuck():
        await asyncio.Event().wait()
    asyncio.run_coroutine_threadsafe(stuck(), server[1]).result()

def test_after(server):
    assert not server[2]["task"].done()
    assert server[0]() == "pong"
"""

SESSION_LOOP = """
import asyncio
import pytest
import pytest_asyncio

@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ticker():  # set up for the test that hangs, on the loop every test runs on
    box = {"ticks": 0}
    async def tick():
        while True:
            await asyncio.sleep(0.01)
            box["ticks"] += 1
    box["task"] = asyncio.create_task(tick(), name="ticker")
    yield box
    box["task"].cancel()

@pytest.mark.asyncio(loop_scope="session")
async def test_hangs_on_the_sessions_loop(ticker):
    await asyncio.Event().wait()

@pytest.mark.asyncio(loop_scope="session")
async def test_after_on_the_sessions_loop(ticker):
    before = ticker["ticks"]
    await asyncio.sleep(0.05)
    assert ticker["ticks"] > before
"""


def test_a_hung_tests_cancellation_spares_a_session_servers_tasks(
    suite: pytest.Pytester,
) -> None:
    """A hang cancels the tasks begun in the phase that hung, on any thread's loop (the
    request it is stuck on, too); not a session's server's or background task's, though
    set up for that very test, which later tests need. The test's tasks are listed
    first."""
    suite.makepyfile(test_server=SESSION_SERVER, test_session_loop=SESSION_LOOP)
    result = run(suite, "--aiotrace", "--aiotrace-hang-timeout=0.5")
    outcomes = result.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"]) == (3, 3), result.stdout.str()
    out = result.stdout.str()
    waiting = {
        "test_hangs_in_its_own_loop": ("test_hangs_in_its_own_loop.<locals>.main", "server"),
        "test_hangs_on_a_request_to_the_server": (
            "test_hangs_on_a_request_to_the_server.<locals>.stuck",
            "server",
        ),
        "test_hangs_on_the_sessions_loop": ("test_hangs_on_the_sessions_loop", "ticker"),
    }
    for test, (coroutine, spared) in waiting.items():
        dump = out[out.index(f"___ {test} ___") :]
        first, other = dump.index('  task "'), dump.index(f'task "{spared}"')
        assert dump[first:].startswith('  task "Task-'), dump
        assert f"({coroutine}) waits for event" in dump[first:other], dump


def test_hung_tests_fail_with_the_finding_and_the_run_goes_on(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_diagnosed=DIAGNOSED)
    result = run(suite, "--aiotrace", "--aiotrace-hang-timeout=5", "--asyncio-mode=auto")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert "FAILED test_diagnosed.py::test_hangs - aiotrace: HANG" in out
    assert "FAILED test_diagnosed.py::test_deadlocks - aiotrace: HANG" in out
    section = out[out.index("= aiotrace =") :]
    findings = section[: section.index("Tests by time spent waiting")]
    lines = [line.strip() for line in findings.splitlines()]
    heads = [line for line in lines if line.split(":")[0] in _FINDING_HEADS]
    assert [h.split(":")[0] for h in heads] == [
        "DEADLOCK",
        "HANG",
        "HANG",
        "EXCEPTION NEVER RETRIEVED",
        "LOCK ORDER",
    ]
    assert heads[0].endswith("[test_diagnosed.py::test_deadlocks]")
    # A test that passed: its task's failure was in a log pytest showed no one.
    raises = marker_line(DIAGNOSED, "RAISES") - 1  # (the source's first line is blank)
    assert heads[3] == (
        'EXCEPTION NEVER RETRIEVED: task "refresher" '
        "(test_passes_while_its_background_task_dies.<locals>.refresh) raised ConnectionError: "
        f"backend down at test_diagnosed.py:{raises} in "
        "test_passes_while_its_background_task_dies.<locals>.refresh, and nothing retrieved it  "
        "[test_diagnosed.py::test_passes_while_its_background_task_dies]"
    )
    assert "users (test_diagnosed.py:22) and orders (test_diagnosed.py:23)" in heads[4]
    assert heads[4].endswith("[test_diagnosed.py::test_inverts_lock_order]")
    trace = trace_of(suite)
    kinds = sorted(
        s.attributes[semconv.ATTR_FINDING_KIND] for s in trace.named(semconv.SPAN_FINDING)
    )
    assert kinds == ["deadlock", "exception never retrieved", "hang", "hang", "lock order"]


_FINDING_HEADS = ("DEADLOCK", "HANG", "EXCEPTION NEVER RETRIEVED", "LOCK ORDER")


BLOCKING = """
import time

def crunch(seconds):
    time.sleep(seconds)  # the blocking line

async def test_blocks():
    crunch(0.3)

async def test_blocks_less():
    crunch(0.15)
"""


def test_the_summary_shows_where_a_blocked_loop_blocked(suite: pytest.Pytester) -> None:
    """A loop block's stack runs outermost first: the summary keeps its innermost lines,
    and says during which tests the loop was blocked there, the longest block's first."""
    suite.makepyfile(test_blocking=BLOCKING)
    result = run(suite, "--aiotrace", "--asyncio-mode=auto")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    section = out[out.index("= aiotrace =") :].splitlines()
    (at,) = [i for i, line in enumerate(section) if line.strip().startswith("LOOP BLOCKED:")]
    blocking = line_in(suite, "test_blocking.py", "# the blocking")
    assert f"at test_blocking.py:{blocking} in task" in section[at]
    details = []
    for line in section[at + 1 :]:
        if not line.startswith("      "):
            break
        details.append(line.strip())
    assert "the event loop was blocked 2 times, up to " in section[at]
    assert details[:2] == [
        "during test_blocking.py::test_blocks (and 1 more)",
        "stack while it blocked:",
    ]
    assert details[-2:] == [
        f'File "{suite.path / "test_blocking.py"}", line {blocking}, in crunch',
        "time.sleep(seconds)  # the blocking line",
    ]


CAPTURED = """
import asyncio


def invert(first, second):
    async def main():
        async with first, second:
            pass
        async with second, first:
            pass

    asyncio.run(main())


def test_capsys_sees_only_the_tests_output(capsys):
    async def make():
        return asyncio.Lock(), asyncio.Lock()

    invert(*asyncio.run(make()))
    assert capsys.readouterr().err == ""


def test_capfd_sees_only_the_tests_output(capfd):
    async def make():
        return asyncio.Lock(), asyncio.Lock()

    invert(*asyncio.run(make()))
    assert capfd.readouterr().err == ""
"""


def test_a_finding_shown_at_once_stays_out_of_the_tests_captured_output(
    suite: pytest.Pytester,
) -> None:
    """A lock-order warning goes to the terminal, not into what capsys/capfd capture."""
    suite.makepyfile(test_captured=CAPTURED)
    result = run(suite, "--aiotrace")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    section = out[out.index("= aiotrace =") :]
    assert out[: out.index("= aiotrace =")].count("aiotrace: LOCK ORDER:") == 2  # as found
    assert section.count("LOCK ORDER:") == 2  # and in the summary


STUCK_AT_THE_END = """
import asyncio
import threading


def test_leaves_a_loop_stuck_behind():
    started = threading.Event()

    async def main():
        lock, never = asyncio.Lock(), asyncio.Event()

        async def holder():
            async with lock:  # HOLD
                started.set()
                await never.wait()

        async def waiter():
            async with lock:
                pass

        await asyncio.gather(holder(), waiter())

    threading.Thread(target=asyncio.run, args=(main(),), daemon=True).start()
    assert started.wait(5)
"""


def test_a_session_ends_with_the_waits_and_holds_still_going_as_spans(
    suite: pytest.Pytester,
) -> None:
    """A test that leaves a loop running in a thread, a task holding a lock and one
    waiting for it: the session's end spans both, outcome pending (the plugin's leak
    watch, which ends first, no longer takes the session diagnosis's with it)."""
    suite.makepyfile(test_stuck=STUCK_AT_THE_END)
    result = run(suite, "--aiotrace")
    assert result.ret == 0, result.stdout.str()
    trace = trace_of(suite)
    hold = trace.one(semconv.SPAN_LOCK_HOLD)
    assert hold.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PENDING
    assert hold.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line_in(
        suite, "test_stuck.py", "# HOLD"
    )
    wait = trace.one(semconv.SPAN_LOCK_ACQUIRE)
    assert wait.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PENDING
