"""``aiotrace run``/``report``/``send``: as transparent as ``python``, nothing lost, clear errors.

Every test runs the real command in a subprocess. OTLP goes to real gRPC and
HTTP receivers built from ``opentelemetry-proto`` (``tests/receivers.py``).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipapp
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiotrace import semconv
from aiotrace._otlp import new_trace_file
from aiotrace.cli import build_parser
from tests.cli_support import (
    EXAMPLES,
    PROGRAMS,
    Trace,
    aiotrace,
    clean_env,
    console_script,
    python,
    started_and_ready,
)
from tests.receivers import GrpcReceiver, HttpReceiver, ReceivedSpan

CONTEND = PROGRAMS / "contend.py"
EXITS = PROGRAMS / "exits.py"
AT_EXIT = PROGRAMS / "at_exit.py"
EXECS = PROGRAMS / "execs.py"
GIVEN_BACK = PROGRAMS / "given_back.py"


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    receiver = GrpcReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    yield receiver
    receiver.stop()


def free_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def line_in(path: Path, text: str, occurrence: int = 0) -> int:
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if text in line]
    return hits[occurrence]


# ---------------------------------------------------------------------------
# Running programs exactly as python does
# ---------------------------------------------------------------------------


def test_help_documents_every_option_and_its_variable() -> None:
    result = aiotrace("run", "--help", cwd=PROGRAMS)
    assert result.returncode == 0, result.stderr
    assert "usage: aiotrace run" in result.stdout
    run = next(
        action.choices["run"]
        for action in build_parser()._actions
        if isinstance(action.choices, dict) and "run" in action.choices
    )
    for action in run._actions:
        if action.option_strings and action.dest not in ("help", "module", "code"):
            assert action.help is not None
            assert "AIOTRACE_" in action.help, action.option_strings


def test_script_sees_argv_main_and_path_as_under_python(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(PROGRAMS / "show_argv.py", tmp_path / "sub" / "prog.py")
    args = ["sub/prog.py", "a", "--flag", "-m", "x"]
    plain = python(*args, cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", *args, cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(plain.stdout)["argv"] == args
    assert traced.stderr == plain.stderr == "to stderr\n"


@pytest.mark.parametrize("form", ["zip", "directory"])
def test_a_zip_app_or_a_directory_runs_its_main_as_under_python(tmp_path: Path, form: str) -> None:
    """``python app.pyz`` and ``python app/`` run ``__main__.py``; so does aiotrace run."""
    (tmp_path / "app").mkdir()
    shutil.copy(PROGRAMS / "show_argv.py", tmp_path / "app" / "__main__.py")
    target = "app"
    if form == "zip":
        zipapp.create_archive(tmp_path / "app", tmp_path / "app.pyz")
        target = "app.pyz"
    plain = python(target, "a", cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", target, "a", cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    seen, expected = json.loads(traced.stdout), json.loads(plain.stdout)
    assert expected["argv"] == [target, "a"]
    assert seen == expected
    assert traced.stderr == plain.stderr == "to stderr\n"


FAILING_MAIN = """\
import json

print(json.dumps(sorted(globals())))


def fail():
    raise ValueError("from the program")


fail()
"""


@pytest.mark.parametrize("form", ["module", "zip"])
def test_a_module_or_zip_app_gets_pythons_namespace_and_traceback(
    tmp_path: Path, form: str
) -> None:
    """Its own empty ``__main__`` (not aiotrace's launcher's); runpy's frames, as python shows."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__main__.py").write_text(FAILING_MAIN)
    args = ["-m", "pkg"]
    if form == "zip":
        zipapp.create_archive(tmp_path / "pkg", tmp_path / "pkg.pyz")
        args = ["pkg.pyz"]
    plain = python(*args, cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", *args, cwd=tmp_path)
    assert plain.returncode == traced.returncode == 1
    assert traced.stdout == plain.stdout
    assert "__annotations__" in plain.stdout
    assert traced.stderr == plain.stderr  # runpy's frames included, as python prints them
    assert "_run_module_as_main" in plain.stderr


@pytest.mark.parametrize("module", ["pkg.prog", "pkg"])
def test_module_sees_what_python_dash_m_gives_it(tmp_path: Path, module: str) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copy(PROGRAMS / "show_argv.py", package / "prog.py")
    shutil.copy(PROGRAMS / "show_argv.py", package / "__main__.py")
    plain = python("-m", module, "x", "-y", cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", "-m", module, "x", "-y", cwd=tmp_path)
    assert traced.returncode == plain.returncode == 0, traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert traced.stderr == plain.stderr


DASH_C = """\
import asyncio, json, sys
lock = asyncio.Lock()
async def main():
    async with lock:
        await asyncio.sleep(0)
asyncio.run(main())
print(json.dumps({
    "argv": sys.argv, "path0": sys.path[0], "name": __name__,
    "file": globals().get("__file__"), "spec": __spec__, "loader": repr(__loader__),
}))
raise ValueError(sys.argv[2])
"""


def test_dash_c_runs_code_as_python_dash_c_does(tmp_path: Path) -> None:
    plain = python("-c", DASH_C, "x", "-y", cwd=tmp_path)
    traced = aiotrace("run", "-q", "--min-hold=0", "-c", DASH_C, "x", "-y", cwd=tmp_path)
    assert plain.returncode == traced.returncode == 1
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(plain.stdout)["argv"] == ["-c", "x", "-y"]
    # The traceback (File "<string>", line 12), then where the trace went (-q says that much)
    assert traced.stderr.startswith(plain.stderr)
    assert traced.stderr[len(plain.stderr) :].startswith("aiotrace: trace file ")
    (trace_file,) = tmp_path.glob("aiotrace-python-c-*.json")
    trace = Trace(trace_file)
    (run,) = trace.named(semconv.SPAN_RUN)
    assert run.attributes[semconv.ATTR_PROGRAM] == "-c import asyncio, json, sys..."
    hold = trace.one(semconv.SPAN_LOCK_HOLD)
    assert hold.attributes[semconv.ATTR_CODE_LINE_NUMBER] == 4
    # Named from the code's own line on every Python (no linecache entry, before 3.13,
    # which would have shown source lines in the traceback above that -c does not)
    assert hold.attributes[semconv.ATTR_PRIMITIVE_NAME] == "lock (<string>:2)"


@pytest.mark.parametrize("how", ["script", "module"])
def test_the_console_script_and_python_dash_m_aiotrace_both_run(tmp_path: Path, how: str) -> None:
    # -m finds a module in the current directory, as python -m does, though
    # the console script's sys.path[0] is its bin directory
    shutil.copy(CONTEND, tmp_path / "contend_here.py")
    program = [str(CONTEND)] if how == "script" else ["-m", "contend_here"]
    for run in (console_script, aiotrace):
        result = run("run", "--trace-file", "t.json", *program, "z", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "done ['z']\n"  # the report is on stderr, never stdout
        assert "Trace file: " in result.stderr
        assert Trace(tmp_path / "t.json").names()[semconv.SPAN_LOCK_HOLD] == 1


def test_a_blocked_loops_stack_starts_at_the_program_not_at_the_launcher(tmp_path: Path) -> None:
    """``aiotrace run -m pkg`` from the console script: its frame is not the program's."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "__init__.py").write_text("")
    (tmp_path / "blocker" / "__main__.py").write_text(
        "import asyncio\nimport time\n\n\nasync def main():\n    time.sleep(0.3)\n\n\n"
        "asyncio.run(main())\n"
    )
    result = console_script(
        "run", "--no-trace-file", "--report-json=r.json", "-m", "blocker", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (finding,) = json.loads((tmp_path / "r.json").read_text())["findings"]
    stack = finding["details"][1:]
    main_file = tmp_path / "blocker" / "__main__.py"
    assert stack[0].strip() == f'File "{main_file}", line 9, in <module>'
    assert stack[-1].strip() == "time.sleep(0.3)"


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["return"], 0),
        (["code", "0"], 0),
        (["code", "3"], 3),
        (["code", "300"], 300 & 0xFF),
        (["message"], 1),
        (["raise"], 1),
        (["nested"], 1),
    ],
)
def test_exit_status_output_and_traceback_are_pythons(
    tmp_path: Path, args: list[str], status: int
) -> None:
    plain = python(EXITS, *args, cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", EXITS, *args, cwd=tmp_path)
    assert plain.returncode == status
    assert traced.returncode == status
    assert traced.stdout == plain.stdout
    assert traced.stderr == plain.stderr  # the same traceback, frame for frame


@pytest.mark.parametrize("how", ["raise", "code"])
def test_spans_are_delivered_when_the_program_fails_or_exits(tmp_path: Path, how: str) -> None:
    result = aiotrace(
        "run", "--min-hold", "0", "--trace-file", "t.json", EXITS, how, "7", cwd=tmp_path
    )
    expected = 1 if how == "raise" else 7
    assert result.returncode == expected
    assert "Traceback" in result.stderr if how == "raise" else "Traceback" not in result.stderr
    trace = Trace(tmp_path / "t.json")
    hold = trace.one(semconv.SPAN_LOCK_HOLD)
    assert hold.attributes[semconv.ATTR_OUTCOME] == (
        semconv.OUTCOME_RAISED if how == "raise" else semconv.OUTCOME_RELEASED
    )
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == expected
    assert f"exit status {expected}" in result.stderr


def _addresses_out(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x...", text)


@pytest.mark.parametrize(("how", "status"), [("return", 0), ("exit", 4), ("raise", 1)])
def test_atexit_handlers_run_as_under_python(tmp_path: Path, how: str, status: int) -> None:
    """The program's ``atexit`` handlers run as it ends (see ``cli._ExitHandlers``):
    in Python's order, with their arguments, a failing one reported as Python does,
    one unregistered or registered while they run not run, the status unchanged."""
    plain = python(AT_EXIT, how, cwd=tmp_path)
    traced = aiotrace("run", "-q", "--no-trace-file", AT_EXIT, how, cwd=tmp_path)
    assert plain.returncode == traced.returncode == status
    assert traced.stdout == plain.stdout
    assert _addresses_out(traced.stderr) == _addresses_out(plain.stderr)
    assert "Exception ignored in atexit callback" in plain.stderr
    assert "never run" not in plain.stdout


def test_what_atexit_handlers_do_is_traced_before_the_report(tmp_path: Path) -> None:
    """Left to the interpreter's exit, the handlers ran after the report, untraced:
    their tasks and spans were lost without a word."""
    result = aiotrace(
        "run", "--min-hold", "0", "--trace-file", "t.json", "--report-json", "r.json",
        AT_EXIT, "exit", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert result.stderr.index("cleaned up") < result.stderr.index("aiotrace: at_exit.py ran")
    trace = Trace(tmp_path / "t.json")
    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    assert sorted(h.attributes[semconv.ATTR_TASK_NAME] for h in holds) == ["closer-0", "closer-1"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tasks"] == {"completed": 3}
    assert report["stats"]["spans_dropped"] == 0


def test_a_hang_in_an_atexit_handler_is_found_and_stopped(tmp_path: Path) -> None:
    """The handlers run inside the run: one stuck there is a hang like any, stopped as
    Ctrl-C would stop it, and that interrupt, aiotrace's, is not printed."""
    (tmp_path / "stuck_at_exit.py").write_text(
        "import asyncio, atexit\n"
        "async def stuck():\n"
        "    await asyncio.Event().wait()\n"
        "atexit.register(lambda: asyncio.run(stuck()))\n"
    )
    result = aiotrace("run", "-q", "--hang-timeout", "2", "stuck_at_exit.py", cwd=tmp_path)
    assert result.returncode == 124, result.stderr
    assert "HANG: no task can make progress" in result.stderr
    assert "stuck_at_exit.py:3 in stuck" in result.stderr
    assert "KeyboardInterrupt" not in result.stderr


@pytest.mark.parametrize("how", ["execv", "execve"])
def test_a_program_that_replaces_itself_is_reported_first(tmp_path: Path, how: str) -> None:
    """``os.execv`` replaces the process: the spans not yet shipped and the report went
    with it, and the collector said the program was killed. Now the run ends there,
    reported; the new program runs untraced, as after any run, even with an
    environment copied while traced."""
    result = aiotrace(
        "run", "--min-hold", "0", "--trace-file", "t.json", EXECS, how, cwd=tmp_path
    )  # fmt: skip
    assert result.returncode == 5, result.stderr
    assert result.stdout == (
        "a failed exec raises as untraced\nreplacing itself\nthe new program, untraced\n"
    )
    assert "aiotrace: execs.py ran" in result.stderr
    assert "the program replaced itself (os.exec*): its trace ends here" in result.stderr
    assert "killed" not in result.stderr
    assert "lost" not in result.stderr
    trace = Trace(tmp_path / "t.json")
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 4  # both runs before the exec


STDERR_GAMES = PROGRAMS / "stderr_games.py"


@pytest.mark.parametrize("how", ["close", "capture"])
def test_the_report_goes_to_the_real_stderr_whatever_the_program_does_to_it(
    tmp_path: Path, how: str
) -> None:
    """A program that closes or captures sys.stderr exits as untraced, and we still report.

    Nothing of ours lands in the program's captured text; the lock-order
    warning, printed as it is found, and the report reach the real stderr.
    """
    plain = python(STDERR_GAMES, how, cwd=tmp_path)
    traced = aiotrace("run", "--trace-file=t.json", STDERR_GAMES, how, cwd=tmp_path)
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert traced.stdout == plain.stdout == "captured: ''\n"
    assert "aiotrace: LOCK ORDER: users (stderr_games.py:13) and orders" in traced.stderr
    assert f"Trace file: {tmp_path / 't.json'}" in traced.stderr


def test_python_dev_mode_sees_nothing_of_ours_left_open(tmp_path: Path) -> None:
    """Under ``-X dev`` every unclosed file warns at exit: aiotrace's own stderr must not.

    The program sees only its own warnings (here none), as under ``python``.
    """
    env = clean_env(PYTHONDEVMODE="1")
    plain = python(EXAMPLES / "locks.py", cwd=tmp_path, env=env)
    traced = aiotrace("run", "-q", "--no-trace-file", EXAMPLES / "locks.py", cwd=tmp_path, env=env)
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert plain.stderr == traced.stderr == ""


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_a_fork_sees_no_thread_of_ours(tmp_path: Path, how: str) -> None:
    """A program without threads forks as one: Python 3.12+ warns of none under ``-X dev``.

    aiotrace's threads stop for the fork and start again on both sides: the
    child's spans still reach the trace.
    """
    env = clean_env(PYTHONDEVMODE="1")
    forks = PROGRAMS / "forks.py"
    plain = python(forks, how, cwd=tmp_path, env=env)
    traced = aiotrace(
        "run", "-q", "--min-hold=0", "--trace-file=t.json", forks, how, cwd=tmp_path, env=env
    )
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert plain.stdout == traced.stdout == "forked filters as they were: True\n"
    assert plain.stderr == ""
    assert traced.stderr == f"aiotrace: trace file {tmp_path / 't.json'}\n"
    trace = Trace(tmp_path / "t.json")
    assert len(trace.named(semconv.SPAN_PROCESS)) == 1
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 2  # the parent's and the child's


@pytest.mark.parametrize("follow", [True, False], ids=["followed", "no-children"])
def test_a_fork_ended_by_sigterm_leaves_the_run_and_its_report_alone(
    tmp_path: Path, follow: bool
) -> None:
    """``Process.terminate()`` (as ``Pool`` ends its workers) on a fork of the program.

    The fork inherits the run's SIGTERM handler. Followed, the child ships
    its own spans and dies; not followed, it must simply die: it once ran
    the run's own ending instead, printing a report of its own, and cut the
    parent's connection to the collector, so the run reported nothing,
    five seconds late.
    """
    forks = PROGRAMS / "forks.py"
    plain = python(forks, "terminate", cwd=tmp_path)
    flags = ["--min-hold=0"] if follow else ["--min-hold=0", "--no-children"]
    traced = aiotrace("run", *flags, "--trace-file=t.json", forks, "terminate", cwd=tmp_path)
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert plain.stdout == traced.stdout == "terminated: -15\nforked filters as they were: True\n"
    assert traced.stderr.count("Spans:") == 1, traced.stderr  # one report, the run's
    for wrong in ("lost", "did not report", "still running", "killed"):
        assert wrong not in traced.stderr
    trace = Trace(tmp_path / "t.json")
    assert len(trace.named(semconv.SPAN_PROCESS)) == (1 if follow else 0)
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == (2 if follow else 1)  # the child's too


FORK_WHILE_BUSY = """
import asyncio
import multiprocessing
import os
import sys


def work() -> None:
    async def step() -> None:
        async with asyncio.Lock():
            await asyncio.sleep(0.01)

    asyncio.run(step())


async def main() -> None:
    lock = asyncio.Lock()
    answer = asyncio.get_running_loop().create_future()

    async def holder() -> None:
        async with lock:
            await asyncio.sleep(0.2)

    async def waiter() -> None:
        await answer

    tasks = [
        asyncio.create_task(holder(), name="holder"),
        asyncio.create_task(waiter(), name="waiter"),
    ]
    await asyncio.sleep(0.05)  # the fork copies a held lock, a pending future, two tasks
    if sys.argv[1] == "os.fork":
        pid = os.fork()
        if pid == 0:
            work()
            os._exit(0)
        await asyncio.to_thread(os.waitpid, pid, 0)
    else:
        child = multiprocessing.get_context("fork").Process(target=work)
        child.start()
        await asyncio.to_thread(child.join)
    answer.set_result(42)
    await asyncio.gather(*tasks)


asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["os.fork", "multiprocessing"])
def test_a_fork_leaves_the_parents_tasks_and_futures_to_the_parent(
    tmp_path: Path, how: str
) -> None:
    """The copies a fork makes of the parent's pending tasks and futures are not the child's.

    (At its exit the child ended them too: a second span of each id, all
    ``pending``, a held lock the child never took, and a false "future
    unresolved" leak, for a future the parent resolved, failing ``--check``.)
    """
    (tmp_path / "busy.py").write_text(FORK_WHILE_BUSY)
    result = aiotrace(
        "run",
        "--check",
        "--min-hold=0",
        "--trace-file=t.json",
        "--report-json=r.json",
        "busy.py",
        how,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["findings"] == []
    trace = Trace(tmp_path / "t.json")
    ids = [span.span_id for span in trace.spans]
    assert len(ids) == len(set(ids))
    (process,) = trace.named(semconv.SPAN_PROCESS)
    child = process.attributes[semconv.ATTR_PID]
    in_child = [s for s in trace.spans if trace.resources[s.span_id][semconv.ATTR_PID] == child]
    assert sorted(s.name for s in in_child) == sorted(
        [semconv.SPAN_PROCESS, semconv.SPAN_TASK, semconv.SPAN_LOCK_HOLD]
    )  # its own main task and its own lock's hold, nothing of the parent's
    outcomes = {
        (s.name, s.attributes[semconv.ATTR_OUTCOME])
        for s in trace.spans
        if s.name in (semconv.SPAN_TASK, semconv.SPAN_FUTURE, semconv.SPAN_LOCK_HOLD)
    }
    assert all(outcome != semconv.OUTCOME_PENDING for _, outcome in outcomes), outcomes


FORK_RETURNS = """
import asyncio
import os
import sys


async def hold() -> None:
    async with asyncio.Lock():
        await asyncio.sleep(0.01)


pid = os.fork()
if pid == 0:
    asyncio.run(hold())
    if sys.argv[1] == "sys.exit":
        sys.exit(3)
else:
    asyncio.run(hold())
    _, status = os.waitpid(pid, 0)
    print("child's exit status", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.parametrize(("how", "status"), [("sys.exit", 3), ("the end", 0)])
def test_a_fork_that_returns_leaves_the_run_and_its_report_to_the_parent(
    tmp_path: Path, how: str, status: int
) -> None:
    """A forked child that leaves as the program does, not by os._exit(), ends only itself.

    (It went on into aiotrace run's own ending: it made the report, from the
    collector, which then was gone for the parent's spans.)
    """
    (tmp_path / "fork_returns.py").write_text(FORK_RETURNS)
    plain = python("fork_returns.py", how, cwd=tmp_path)
    traced = aiotrace(
        "run", "-q", "--min-hold=0", "--trace-file=t.json", "fork_returns.py", how, cwd=tmp_path
    )
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert plain.stdout == traced.stdout == f"child's exit status {status}\n"
    assert traced.stderr == f"aiotrace: trace file {tmp_path / 't.json'}\n"
    trace = Trace(tmp_path / "t.json")
    (process,) = trace.named(semconv.SPAN_PROCESS)
    assert process.parent_id == trace.root.span_id
    assert process.attributes[semconv.ATTR_PID] != trace.root.attributes[semconv.ATTR_PID]
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == 0  # the parent's, once
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 2  # the parent's and the child's


def test_a_fork_in_a_program_with_threads_is_warned_of_as_untraced(tmp_path: Path) -> None:
    env = clean_env(PYTHONDEVMODE="1")
    forks = PROGRAMS / "forks.py"
    plain = python(forks, "os.fork", "thread", cwd=tmp_path, env=env)
    traced = aiotrace(
        "run", "-q", "--no-trace-file", forks, "os.fork", "thread", cwd=tmp_path, env=env
    )
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert plain.stdout == traced.stdout == "forked filters as they were: True\n"
    warned = "is multi-threaded, use of fork() may lead to deadlocks in the child."
    assert (warned in plain.stderr) == (warned in traced.stderr) == (sys.version_info >= (3, 12))


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_stderr_that_cannot_be_written_does_not_change_the_exit_status(tmp_path: Path) -> None:
    """As ``python app.py 2>/dev/full`` exits 0, so does ``aiotrace run app.py 2>/dev/full``."""
    with open("/dev/full", "w") as full:
        for command in (
            [sys.executable, str(EXITS), "code", "0"],
            [sys.executable, "-m", "aiotrace", "run", "--no-trace-file", str(EXITS), "code", "0"],
        ):
            result = subprocess.run(
                command,
                cwd=tmp_path,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=full,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, command
            assert result.stdout == "started code\n"


@pytest.mark.parametrize(("how", "status"), [("main", 7), ("thread", 5), ("fork", 0)])
def test_os_exit_delivers_the_spans_and_exits_as_python_does(
    tmp_path: Path, how: str, status: int
) -> None:
    program = PROGRAMS / "os_exit.py"
    env = clean_env(PYTHONUNBUFFERED="")  # buffered: what os._exit() leaves unflushed stays so
    plain = python(program, how, cwd=tmp_path, env=env)
    traced = aiotrace("run", "--trace-file=t.json", program, how, cwd=tmp_path, env=env)
    assert plain.returncode == traced.returncode == status
    assert traced.stdout == plain.stdout
    assert "never flushed" not in plain.stdout
    assert "Traceback" not in traced.stderr
    assert "Failed to detach" not in traced.stderr
    assert (
        f"exit status {status}" in traced.stderr if status else "exit status" not in traced.stderr
    )
    trace = Trace(tmp_path / "t.json")
    tag = "child" if how == "fork" else how
    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    assert sorted(h.attributes[semconv.ATTR_TASK_NAME] for h in holds) == [
        f"{tag}-{n}" for n in range(3)
    ]
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == status
    if how == "fork":
        (process,) = trace.named(semconv.SPAN_PROCESS)
        assert {h.trace_id for h in holds} == {trace.root.trace_id}
        assert process.parent_id == trace.root.span_id


def test_a_killed_program_or_child_leaves_its_shipped_spans_and_says_so(tmp_path: Path) -> None:
    program = PROGRAMS / "os_exit.py"
    result = aiotrace("run", "--trace-file=t.json", program, "killed-child", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "child exited -9" in result.stdout
    assert "1 traced process(es) ended without finishing their trace" in " ".join(
        result.stderr.split()
    )
    assert len(Trace(tmp_path / "t.json").named(semconv.SPAN_LOCK_HOLD)) == 3  # shipped before

    # The run itself killed: no report, but the collector says where the trace is.
    killed = aiotrace("run", "--trace-file=k.json", program, "sigkill", cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert "Traceback" not in killed.stderr
    assert "collector failed" not in killed.stderr
    shipped = Trace(tmp_path / "k.json")
    assert len(shipped.named(semconv.SPAN_LOCK_HOLD)) == 3
    assert killed.stderr.strip().endswith(
        "aiotrace: the traced program was killed before it could finish its trace; "
        f"the {len(shipped.spans)} spans it had shipped are in {tmp_path / 'k.json'} "
        f"(aiotrace report {tmp_path / 'k.json'})"
    ), killed.stderr


def _interrupt(command: list[str], cwd: Path, sig: int) -> subprocess.CompletedProcess[str]:
    """Start ``command``, wait until it prints ``ready``, send it ``sig``."""
    process = started_and_ready(command, cwd)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, "ready\n" + stdout, stderr)


def test_ctrl_c_delivers_the_spans_and_exits_as_python_does(tmp_path: Path) -> None:
    program = str(PROGRAMS / "sigint.py")
    plain = _interrupt([sys.executable, program], tmp_path, signal.SIGINT)
    traced = _interrupt(
        [sys.executable, "-m", "aiotrace", "run", "--min-hold=0", "--trace-file=t.json", program],
        tmp_path,
        signal.SIGINT,
    )
    assert plain.returncode == traced.returncode == -signal.SIGINT
    assert plain.stderr.splitlines()[-1] == "KeyboardInterrupt"
    # The program's traceback comes first, unchanged; then the report.
    assert traced.stderr.startswith(plain.stderr)
    trace = Trace(tmp_path / "t.json")
    hold = trace.one(semconv.SPAN_LOCK_HOLD)  # held for the whole run, ended by the interrupt
    assert hold.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_CANCELLED
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == 130


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_delivers_the_spans_and_dies_by_it(tmp_path: Path, signum: int) -> None:
    """SIGTERM (a CI timeout, ``docker stop``) and SIGHUP (a closed terminal, a dropped SSH
    session) kill without clean-up by default; traced, the spans go first."""
    program = str(PROGRAMS / "sigint.py")
    traced = _interrupt(
        [sys.executable, "-m", "aiotrace", "run", "--trace-file", "t.json", program],
        tmp_path,
        signum,
    )
    assert traced.returncode == -signum  # as untraced: killed by the signal
    trace = Trace(tmp_path / "t.json")
    task = trace.one(semconv.SPAN_TASK)
    assert task.attributes[semconv.ATTR_OUTCOME] == semconv.OUTCOME_PENDING  # never finished
    assert task.parent_id == trace.root.span_id
    assert trace.root.attributes[semconv.ATTR_EXIT_CODE] == 128 + signum
    assert "Trace file:" in traced.stderr


def test_a_program_killed_while_stuck_reports_the_waits_and_holds_that_never_ended(
    tmp_path: Path,
) -> None:
    program = PROGRAMS / "stuck.py"
    killed = _interrupt(
        [
            sys.executable,
            "-m",
            "aiotrace",
            "run",
            "--trace-file=t.json",
            "--report-json=r.json",
            str(program),
        ],
        tmp_path,
        signal.SIGTERM,
    )
    assert killed.returncode == -signal.SIGTERM
    source = program.read_text().splitlines()

    def line(marker: str) -> int:
        return next(n for n, text in enumerate(source, 1) if f"# {marker}" in text)

    trace = Trace(tmp_path / "t.json")
    pending = semconv.OUTCOME_PENDING
    tasks = {s.attributes[semconv.ATTR_TASK_NAME]: s for s in trace.named(semconv.SPAN_TASK)}
    hold = trace.one(semconv.SPAN_LOCK_HOLD)
    assert hold.attributes[semconv.ATTR_OUTCOME] == pending
    assert hold.attributes[semconv.ATTR_TASK_NAME] == "holder"
    assert hold.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line("HOLD")
    assert hold.attributes[semconv.ATTR_WAITERS_DURING] == 1
    assert hold.parent_id == tasks["holder"].span_id
    queued = trace.one(semconv.SPAN_LOCK_ACQUIRE)
    assert queued.attributes[semconv.ATTR_OUTCOME] == pending
    assert queued.attributes[semconv.ATTR_TASK_NAME] == "waiter"
    assert queued.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line("QUEUE")
    assert queued.attributes[semconv.ATTR_BLOCKER_TASK] == "holder"
    assert queued.parent_id == tasks["waiter"].span_id
    permit = trace.one(semconv.SPAN_SEMAPHORE_HOLD)
    assert permit.attributes[semconv.ATTR_OUTCOME] == pending
    assert permit.attributes[semconv.ATTR_TASK_NAME] == "worker"
    assert permit.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line("PERMIT")
    client = trace.one(semconv.SPAN_SEMAPHORE_ACQUIRE)
    assert client.attributes[semconv.ATTR_BLOCKER_TASK] == "worker"
    assert client.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line("CLIENT")
    event = trace.one(semconv.SPAN_EVENT_WAIT, aiotrace__task__name="holder")
    assert event.attributes[semconv.ATTR_OUTCOME] == pending
    assert event.attributes[semconv.ATTR_CODE_LINE_NUMBER] == line("EVENT")
    assert hold.start <= event.start  # it waited while holding
    assert event.end <= hold.end
    assert hold.end - hold.start >= 50_000_000
    # The report: no more "no contention", and the holder's wait named
    report = json.loads((tmp_path / "r.json").read_text())
    assert {row["kind"] for row in report["primitives"]} == {"Lock", "Semaphore", "Event"}
    nested = {(n["held_at"], n["waited_at"]) for n in report["waits_while_holding"]}
    assert (f"stuck.py:{line('HOLD')}", f"stuck.py:{line('EVENT')}") in nested
    assert "No contention" not in killed.stderr


# ---------------------------------------------------------------------------
# Where spans go: the trace file and the report
# ---------------------------------------------------------------------------


def test_default_run_writes_a_trace_file_named_after_the_program(tmp_path: Path) -> None:
    result = aiotrace("run", CONTEND, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    files = list(tmp_path.glob("aiotrace-contend-*.json"))
    assert len(files) == 1
    assert f"Trace file: {files[0]}" in result.stderr
    data = json.loads(files[0].read_text())
    assert list(data) == ["resourceSpans"]  # one OTLP JSON object: Jaeger's upload format
    trace = Trace(files[0])
    assert trace.resource["service.name"] == "contend"  # the service defaults to the script
    assert trace.root.attributes[semconv.ATTR_PROGRAM] == "contend.py"


def test_runs_started_in_the_same_second_write_files_of_their_own(tmp_path: Path) -> None:
    """The default name is the program and the second: a second run then takes ``-2``.

    The names of the next few seconds are taken first, as an earlier run
    would have: the run must leave them as they are.
    """
    now = datetime.datetime.now()
    taken = [
        tmp_path / f"aiotrace-contend-{now + datetime.timedelta(seconds=s):%Y%m%d-%H%M%S}.json"
        for s in range(30)
    ]
    for path in taken:
        path.write_text("an earlier run's spans")
    result = aiotrace("run", CONTEND, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(path.read_text() == "an earlier run's spans" for path in taken)
    (ours,) = tmp_path.glob("aiotrace-contend-*-2.json")
    assert ours.with_name(ours.name.replace("-2.json", ".json")) in taken
    assert f"Trace file: {ours}" in result.stderr
    assert Trace(ours).root.attributes[semconv.ATTR_PROGRAM] == "contend.py"


def test_a_trace_file_name_is_taken_by_creating_the_file(tmp_path: Path) -> None:
    when = datetime.datetime(2026, 12, 2, 8, 30, 5)
    first = new_trace_file(str(tmp_path), "my app", when)
    second = new_trace_file(str(tmp_path), "my app", when)
    third = new_trace_file(str(tmp_path), "my app", when)
    assert [Path(p).name for p in (first, second, third)] == [
        "aiotrace-my_app-20261202-083005.json",
        "aiotrace-my_app-20261202-083005-2.json",
        "aiotrace-my_app-20261202-083005-3.json",
    ]
    assert all(Path(p).read_text() == "" for p in (first, second, third))
    # Where nothing can be created, the plain name: writing it fails as before.
    missing = tmp_path / "no" / "such"
    plain = missing / "aiotrace-x-20261202-083005.json"
    assert new_trace_file(str(missing), "x", when) == str(plain)


def test_the_report_points_at_the_lock_the_holder_and_the_line(tmp_path: Path) -> None:
    result = aiotrace("run", "--report-json", "r.json", "--no-trace-file", CONTEND, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    hold_line = line_in(CONTEND, "async with lock:", 0)
    assert f"db held by holder at contend.py:{hold_line} (1 waiting)" in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    (row,) = report["primitives"]
    assert (row["name"], row["kind"], row["waits"], row["holds"]) == ("db", "Lock", 1, 1)
    assert 30 < row["wait_ms"] < 5000
    assert report["tasks"] == {"completed": 3}
    assert report["stats"]["spans_dropped"] == 0


def test_the_report_counts_holds_that_went_without_their_holders_name(tmp_path: Path) -> None:
    """A hold released by another task names its holder only while the lookup's
    budget lasts (``docs/spans.md#parentage``); past it, the report says how many
    went without, so that a missing name is not taken for a missing task."""
    result = aiotrace(
        "run", "--min-hold", "0", "--report-json", "r.json", "--no-trace-file", GIVEN_BACK,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 holds released by another task went without their holder's name" in result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["stats"]["holders_unnamed"] == 3


def test_a_trace_file_named_none_is_no_trace_file_as_under_pytest(tmp_path: Path) -> None:
    """``--aiotrace-trace-file=none`` means no file to pytest; so it does to ``aiotrace run``."""
    for args, env in (
        (["--trace-file", "none"], clean_env()),
        ([], clean_env(AIOTRACE_TRACE_FILE="NONE")),
    ):
        result = aiotrace("run", *args, CONTEND, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert "Trace file" not in result.stderr
        assert list(tmp_path.iterdir()) == []


def test_aiotrace_variables_set_every_option(tmp_path: Path) -> None:
    env = clean_env(
        AIOTRACE_TRACE_FILE=str(tmp_path / "from-env.json"),
        AIOTRACE_QUIET="1",
        AIOTRACE_MIN_HOLD="0",
        AIOTRACE_NO_TASKS="yes",
    )
    result = aiotrace("run", CONTEND, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"aiotrace: trace file {tmp_path / 'from-env.json'}\n"
    names = Trace(tmp_path / "from-env.json").names()
    assert names[semconv.SPAN_LOCK_HOLD] == 2  # the waiter's short hold too: min_hold 0
    assert names[semconv.SPAN_TASK] == 0


def test_service_name_comes_from_flag_then_variables_then_program(tmp_path: Path) -> None:
    cases = [
        ([], {}, "show_env"),
        ([], {"OTEL_SERVICE_NAME": "from-otel"}, "from-otel"),
        ([], {"OTEL_RESOURCE_ATTRIBUTES": "service.name=attrs"}, "attrs"),
        ([], {"AIOTRACE_SERVICE_NAME": "ours", "OTEL_SERVICE_NAME": "from-otel"}, "ours"),
        (["--service-name=flag"], {"AIOTRACE_SERVICE_NAME": "ours"}, "flag"),
    ]
    for flags, extra, expected in cases:
        result = aiotrace(
            "run",
            "-q",
            "--trace-file=t.json",
            *flags,
            PROGRAMS / "show_env.py",
            cwd=tmp_path,
            env=clean_env(**extra),
        )
        assert result.returncode == 0, result.stderr
        assert Trace(tmp_path / "t.json").resource["service.name"] == expected
        # ... and the program's environment is its own, untouched
        assert json.loads(result.stdout).get("OTEL_SERVICE_NAME") == extra.get("OTEL_SERVICE_NAME")


def test_outputs_go_where_asked_though_the_program_changes_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    program = tmp_path / "moves.py"
    program.write_text(
        f"import os, runpy\nos.chdir({str(elsewhere)!r})\nrunpy.run_path({str(CONTEND)!r})\n"
    )
    result = aiotrace(
        "run",
        "--trace-file=t.json",
        "--report-json=r.json",
        "--html=t.html",
        program,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere",
        "moves.py",
        "r.json",
        "t.html",
        "t.json",
    ]
    assert list(elsewhere.iterdir()) == []
    assert json.loads((tmp_path / "r.json").read_text())["primitives"][0]["name"] == "db"


INSTRUMENTS_ITSELF = """
import asyncio

import aiotrace


async def contend():
    lock = asyncio.Lock()

    async def hold():
        async with lock:
            await asyncio.sleep(0.005)

    await asyncio.gather(hold(), hold())


aiotrace.instrument()  # its own tracing, inside aiotrace run's
asyncio.run(contend())
aiotrace.uninstrument()
asyncio.run(contend())
"""


def test_a_program_that_instruments_itself_is_counted_whole(tmp_path: Path) -> None:
    """Its own instrument()'s spans reach the run's trace: so do their counts, in the totals."""
    (tmp_path / "itself.py").write_text(INSTRUMENTS_ITSELF)
    result = aiotrace(
        "run", "--trace-file=t.json", "--report-json=r.json", "itself.py", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    names = Trace(tmp_path / "t.json").names()
    assert (names[semconv.SPAN_LOCK_ACQUIRE], names[semconv.SPAN_LOCK_HOLD]) == (2, 4)
    (row,) = json.loads((tmp_path / "r.json").read_text())["primitives"]
    assert (row["name"], row["waits"], row["holds"]) == ("lock (itself.py:8)", 2, 4)


def test_a_program_that_sets_its_own_provider_keeps_it(tmp_path: Path) -> None:
    program = PROGRAMS / "own_provider.py"
    plain = python(program, cwd=tmp_path)
    traced = aiotrace("run", "--trace-file=t.json", program, cwd=tmp_path)
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert json.loads(plain.stdout) == {
        "provider": True,
        "spans": ["work-1", "work-2"],
        "warnings": [],
    }
    assert json.loads(traced.stdout) == json.loads(plain.stdout)  # aiotrace's not among them
    assert "Overriding" not in traced.stderr
    # ... and the trace has them too, the lock's spans nested in them
    trace = Trace(tmp_path / "t.json")
    works = {s.span_id: s.name for s in trace.spans if s.name.startswith("work-")}
    assert sorted(works.values()) == ["work-1", "work-2"]
    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    assert len(holds) == 2
    assert {works[h.parent_id] for h in holds} == {"work-1", "work-2"}


def test_otel_console_exporter_prints_spans(tmp_path: Path) -> None:
    env = clean_env(OTEL_TRACES_EXPORTER="console")
    result = aiotrace("run", "-q", "--no-trace-file", CONTEND, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert '"name": "asyncio.Lock.acquire"' in result.stderr
    assert result.stdout == "done []\n"


def test_report_and_send_replay_a_saved_trace(tmp_path: Path, grpc_receiver: GrpcReceiver) -> None:
    run = aiotrace(
        "run", "--trace-file", "t.json", "--report-json", "r.json", CONTEND, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    again = aiotrace("report", "t.json", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    saved, replayed = json.loads((tmp_path / "r.json").read_text()), json.loads(again.stdout)
    for key in ("primitives", "longest_holds", "tasks", "futures", "trace_id"):
        assert replayed[key] == saved[key], key
    printed = aiotrace("report", "t.json", cwd=tmp_path)
    assert printed.returncode == 0
    assert "db held by holder" in printed.stdout

    sent = aiotrace("send", "t.json", "--otlp", grpc_receiver.endpoint, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    trace = Trace(tmp_path / "t.json")
    # Seven spans, unless a machine slow enough made a short wait pass its threshold.
    assert len(trace.spans) >= 7
    assert (
        sent.stderr
        == f"aiotrace: sent {len(trace.spans)} spans to {grpc_receiver.endpoint} (grpc)\n"
    )
    assert _identities(grpc_receiver.spans) == {
        (s.name, s.trace_id, s.span_id, s.parent_id) for s in trace.spans
    }
    assert grpc_receiver.spans[0].resource == trace.resource


def test_otlp_takes_host_and_port_as_grpc_tools_write_them(
    tmp_path: Path, grpc_receiver: GrpcReceiver
) -> None:
    """``--otlp localhost:4317``, as ``--help`` shows the default: plain http, over gRPC."""
    host_port = grpc_receiver.endpoint.split("://", 1)[1]
    result = aiotrace("run", "--no-trace-file", "--otlp", host_port, CONTEND, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "could not export" not in result.stderr
    assert len(grpc_receiver.spans) >= 7


def _identities(spans: list[ReceivedSpan]) -> set[tuple[str, int, int, int]]:
    return {(s.name, s.trace_id, s.span_id, s.parent_id) for s in spans}


# ---------------------------------------------------------------------------
# OTLP to a real receiver, both protocols
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_delivers_the_exact_spans_parents_links_and_resource(
    tmp_path: Path,
    grpc_receiver: GrpcReceiver,
    http_receiver: HttpReceiver,
    protocol: str,
) -> None:
    receiver = grpc_receiver if protocol == "grpc" else http_receiver
    env = clean_env(
        OTEL_SERVICE_NAME="shop",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test,team=core",
        OTEL_EXPORTER_OTLP_HEADERS="x-tenant=acme",
    )
    result = aiotrace(
        "run",
        "--otlp",
        receiver.endpoint,
        "--protocol",
        protocol,
        "--trace-file",
        "t.json",
        CONTEND,
        "x",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done ['x']\n"
    spans = receiver.spans
    # (On failure, the run's report says why: an export error, a timeout.)
    assert Counter(s.name for s in spans) == {
        semconv.SPAN_RUN: 1,
        semconv.SPAN_TASK: 3,
        semconv.SPAN_LOCK_HOLD: 1,
        semconv.SPAN_LOCK_ACQUIRE: 1,
        "app.fetch": 1,
    }, result.stderr
    assert _identities(spans) == _identities_of_file(tmp_path / "t.json")
    by_name = {(s.name, s.get(semconv.ATTR_TASK_NAME)): s for s in spans}
    root = by_name[semconv.SPAN_RUN, None]
    main = by_name[semconv.SPAN_TASK, "Task-1"]
    holder = by_name[semconv.SPAN_TASK, "holder"]
    waiter = by_name[semconv.SPAN_TASK, "waiter"]
    hold = by_name[semconv.SPAN_LOCK_HOLD, "holder"]
    wait = by_name[semconv.SPAN_LOCK_ACQUIRE, "waiter"]
    fetch = by_name["app.fetch", None]
    assert {s.trace_id for s in spans} == {root.trace_id}
    parents = {
        root.span_id: 0,
        main.span_id: root.span_id,
        holder.span_id: main.span_id,
        waiter.span_id: main.span_id,
        hold.span_id: holder.span_id,
        fetch.span_id: waiter.span_id,  # the program's own span, inside its task
        wait.span_id: fetch.span_id,  # the wait happened inside it
    }
    assert {s.span_id: s.parent_id for s in spans} == parents
    assert wait.links == [(hold.span_id, {semconv.ATTR_LINK_KIND: semconv.LINK_HANDOFF})]
    assert wait[semconv.ATTR_BLOCKER_TASK] == "holder"
    assert hold[semconv.ATTR_PRIMITIVE_NAME] == wait[semconv.ATTR_PRIMITIVE_NAME] == "db"
    assert hold[semconv.ATTR_CODE_LINE_NUMBER] == line_in(CONTEND, "async with lock:", 0)
    assert wait[semconv.ATTR_CODE_LINE_NUMBER] == line_in(CONTEND, "async with lock:", 1)
    assert hold[semconv.ATTR_CODE_FILE_PATH] == str(CONTEND)
    assert hold[semconv.ATTR_WAITERS_DURING] == 1
    assert hold.end - hold.start >= 45_000_000
    assert root[semconv.ATTR_PROGRAM] == "contend.py"
    assert root[semconv.ATTR_ARGV] == (str(CONTEND), "x")
    assert root[semconv.ATTR_EXIT_CODE] == 0
    assert {s.scope for s in spans} == {"aiotrace", "app"}
    assert fetch.scope == "app"
    resource = spans[0].resource
    assert resource["service.name"] == "shop"
    assert resource["deployment.environment"] == "test"
    assert resource["team"] == "core"
    assert resource["telemetry.distro.name"] == "aiotrace"
    assert all(s.resource == resource for s in spans)
    assert all(headers.get("x-tenant") == "acme" for headers in receiver.headers)
    assert f"Jaeger: http://localhost:16686/trace/{root.trace_id:032x}" in result.stderr
    assert f"Exported over OTLP to {receiver.endpoint}" in result.stderr


def _identities_of_file(path: Path) -> set[tuple[str, int, int, int]]:
    return {(s.name, s.trace_id, s.span_id, s.parent_id) for s in Trace(path).spans}


def test_otel_endpoint_variables_turn_export_on(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint,  # the base: /v1/traces is added
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
    )
    result = aiotrace(
        "run", "--no-trace-file", "--jaeger-url", "http://jaeger:1", CONTEND, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr
    assert len(http_receiver.spans) == 7
    assert "Jaeger: http://jaeger:1/trace/" in result.stderr

    off = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=http_receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_EXPORTER="none",
    )
    result = aiotrace("run", "--no-trace-file", CONTEND, cwd=tmp_path, env=off)
    assert result.returncode == 0, result.stderr
    assert len(http_receiver.spans) == 7  # nothing more: "none" means no export


def test_traceparent_makes_the_run_a_child_of_an_outer_trace(tmp_path: Path) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    env = clean_env(TRACEPARENT=f"00-{trace_id}-{parent_id}-01")
    result = aiotrace("run", "--trace-file", "t.json", CONTEND, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    trace = Trace(tmp_path / "t.json")
    assert trace.root.parent_id == int(parent_id, 16)
    assert {s.trace_id for s in trace.spans} == {int(trace_id, 16)}


def test_child_processes_join_the_same_trace(
    tmp_path: Path, http_receiver: HttpReceiver, grpc_receiver: GrpcReceiver
) -> None:
    result = aiotrace(
        "run",
        "--min-hold=0",
        "--trace-file=t.json",
        "--report-json=r.json",
        "--otlp",
        http_receiver.endpoint,
        "--protocol",
        "http/protobuf",
        PROGRAMS / "spawner.py",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["parent", "subprocess", "fork", "spawn"]
    assert "still running" not in result.stderr
    assert "lost" not in result.stderr
    trace = Trace(tmp_path / "t.json")
    assert len({s.trace_id for s in trace.spans}) == 1
    root = trace.root
    processes = trace.named(semconv.SPAN_PROCESS)
    assert len(processes) == 3
    assert {p.parent_id for p in processes} == {root.span_id}
    pids = {p.attributes[semconv.ATTR_PID] for p in processes}
    assert len(pids) == 3
    assert root.attributes[semconv.ATTR_PID] not in pids

    def process_of(span_id: int) -> int:
        span = trace.by_id(span_id)
        while span.name not in (semconv.SPAN_PROCESS, semconv.SPAN_RUN):
            span = trace.by_id(span.parent_id)
        return int(span.attributes[semconv.ATTR_PID])

    holds = trace.named(semconv.SPAN_LOCK_HOLD)
    by_process = {s.attributes[semconv.ATTR_TASK_NAME]: process_of(s.span_id) for s in holds}
    assert set(by_process) == {
        f"{tag}-{x}" for tag in ("parent", "subprocess", "fork", "spawn") for x in "ab"
    }
    assert by_process["parent-a"] == root.attributes[semconv.ATTR_PID]
    assert len({by_process[f"{tag}-a"] for tag in ("subprocess", "fork", "spawn")}) == 3
    (row,) = json.loads((tmp_path / "r.json").read_text())["primitives"]
    assert (row["waits"], row["holds"]) == (4, 8)  # the report adds up every process

    # In OpenTelemetry a process is a resource: each span's says which made it,
    # in the trace file, over OTLP, and when the file is sent on.
    run_pid = root.attributes[semconv.ATTR_PID]
    for span in trace.spans:
        resource = trace.resources[span.span_id]
        assert resource[semconv.ATTR_PID] == process_of(span.span_id), span.name
        assert resource["service.name"] == "spawner"
        if resource[semconv.ATTR_PID] != run_pid:
            assert resource[semconv.ATTR_PARENT_PID] == run_pid
    sent = aiotrace("send", "t.json", "--otlp", grpc_receiver.endpoint, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    for received in (http_receiver.spans, grpc_receiver.spans):
        assert len(received) == len(trace.spans)
        assert {s.span_id: s.resource for s in received} == trace.resources

    alone = aiotrace(
        "run", "--no-children", "--trace-file", "n.json", PROGRAMS / "spawner.py", cwd=tmp_path
    )
    assert alone.returncode == 0, alone.stderr
    assert Trace(tmp_path / "n.json").names()[semconv.SPAN_PROCESS] == 0


def test_event_loops_in_the_programs_threads_join_the_runs_trace(tmp_path: Path) -> None:
    """A thread starts with an empty context: its loop's tasks nest under the run, or under
    the child's process (one whose first import of asyncio is in that thread), not each
    in a trace of its own."""
    program = PROGRAMS / "asyncio_children.py"
    result = aiotrace("run", "--trace-file=t.json", program, "threads", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    trace = Trace(tmp_path / "t.json")
    assert len({s.trace_id for s in trace.spans}) == 1
    assert len(trace.named(semconv.SPAN_PROCESS)) == 1
    firsts = [
        s for s in trace.named(semconv.SPAN_TASK) if s.attributes["aiotrace.task.name"] == "Task-1"
    ]
    assert sorted(trace.by_id(s.parent_id).name for s in firsts) == [
        semconv.SPAN_PROCESS,
        semconv.SPAN_RUN,
    ]
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 4


def test_a_child_is_traced_once_it_imports_asyncio_and_costs_nothing_before(
    tmp_path: Path,
) -> None:
    """Most children that never use asyncio (tools, multiprocessing's helpers) import nothing
    of aiotrace's; one that does is traced from its import on, its span from its start."""
    program = PROGRAMS / "asyncio_children.py"
    bare = python(program, "late", cwd=tmp_path)
    traced = aiotrace("run", "--trace-file=t.json", program, "late", cwd=tmp_path)
    assert bare.returncode == traced.returncode == 0, traced.stderr
    tool, late = traced.stdout.splitlines()
    assert json.loads(tool) == []  # neither aiotrace nor asyncio imported
    # asyncio's loader is its own again, and the import hook is gone: as untraced
    assert late == bare.stdout.splitlines()[1]
    trace = Trace(tmp_path / "t.json")
    (process,) = trace.named(semconv.SPAN_PROCESS)
    assert process.attributes[semconv.ATTR_ARGV][-1] == "late-child"
    (first,) = [s for s in trace.named(semconv.SPAN_TASK) if s.parent_id == process.span_id]
    assert first.start - process.start >= 0.25e9  # the span covers the time before asyncio
    assert len(trace.named(semconv.SPAN_LOCK_HOLD)) == 2


# ---------------------------------------------------------------------------
# Nothing lost when the collector is down; clear errors for bad input
# ---------------------------------------------------------------------------


def _export_to(
    tmp_path: Path, endpoint: str, protocol: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``CONTEND q`` run with ``--otlp endpoint``; the spans kept in ``t.json``, as it says."""
    result = aiotrace(
        "run",
        "--otlp",
        endpoint,
        "--protocol",
        protocol,
        "--trace-file",
        "t.json",
        CONTEND,
        "q",
        cwd=tmp_path,
        env=clean_env(**env),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done ['q']\n"
    assert "Traceback" not in result.stderr
    complaints = [line for line in result.stderr.splitlines() if "could not export" in line]
    assert len(complaints) == 1, result.stderr
    assert f"aiotrace send {tmp_path / 't.json'} --otlp" in complaints[0]
    assert ".." not in complaints[0]
    assert len(Trace(tmp_path / "t.json").spans) == 7
    return result


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_an_unreachable_collector_keeps_the_spans_and_says_how_to_send_them(
    tmp_path: Path, grpc_receiver: GrpcReceiver, protocol: str
) -> None:
    _export_to(tmp_path, f"http://127.0.0.1:{free_port()}", protocol)
    # ... and sending later, as told, delivers every span.
    path = tmp_path / "t.json"
    sent = aiotrace("send", path, "--otlp", grpc_receiver.endpoint, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert _identities(grpc_receiver.spans) == _identities_of_file(path)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_never_answers_costs_the_export_timeout_not_a_hang(
    tmp_path: Path, protocol: str
) -> None:
    """A black hole (it accepts the connection, never replies): the run ends when the
    OTLP timeout does, keeps every span in the file and says how to send them."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        started = time.monotonic()
        endpoint = f"http://127.0.0.1:{hole.getsockname()[1]}"
        _export_to(tmp_path, endpoint, protocol, OTEL_EXPORTER_OTLP_TIMEOUT="1")
        assert time.monotonic() - started < 10


def test_send_to_an_unreachable_collector_fails_in_one_line(tmp_path: Path) -> None:
    run = aiotrace("run", "-q", "--trace-file", "t.json", CONTEND, cwd=tmp_path)
    assert run.returncode == 0
    env = clean_env(OTEL_EXPORTER_OTLP_TIMEOUT="2")
    result = aiotrace(
        "send",
        "t.json",
        "--otlp",
        f"http://127.0.0.1:{free_port()}",
        "--protocol",
        "http/protobuf",
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("aiotrace: could not send to ")
    assert "0 of 7 spans sent" in result.stderr


def _bad_inputs(tmp: Path) -> list[tuple[list[str], dict[str, str], str]]:
    (tmp / "empty.json").write_text("")
    (tmp / "not-otlp.json").write_text('{"spans": []}')
    (tmp / "broken.json").write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{}]}]}]}')
    (tmp / "dir").mkdir()
    script = str(CONTEND)
    return [
        (["run", "missing.py"], {}, "can't open file 'missing.py'"),
        (["run", "-m", "no_such_module_here"], {}, "no module named 'no_such_module_here'"),
        (["run", "-c"], {}, "argument -c: expected one argument"),
        (["run"], {}, "nothing to run"),
        (["run", "--bogus", script], {}, "unrecognized arguments: --bogus"),
        (["run", "--min-hold", "soon", script], {}, "expected a number of seconds"),
        (["run", "--otlp=ftp://collector:4317", script], {}, "invalid OTLP endpoint"),
        (
            ["run", script],
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},  # the spec asks for a scheme
            "invalid OTLP endpoint 'collector:4317'",
        ),
        (["run", "--otlp", "http://host:99999", script], {}, "bad port"),
        (["run", "--protocol", "udp", script], {}, "invalid choice: 'udp'"),
        (["run", "--trace-file", "nowhere/t.json", script], {}, "no directory"),
        (["run", "--report-json", "nowhere/r.json", script], {}, "cannot write the report"),
        (["run", "--html", "nowhere/t.html", script], {}, "cannot write the HTML timeline"),
        (["run", "dir"], {}, "can't find '__main__' module"),
        (["run", script], {"AIOTRACE_MIN_WAIT": "x"}, "AIOTRACE_MIN_WAIT='x'"),
        (["run", script], {"AIOTRACE_QUIET": "maybe"}, "AIOTRACE_QUIET='maybe'"),
        (
            ["run", "--otlp", script],
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
            "unknown OTLP protocol 'carrier-pigeon'",
        ),
        (["report", "missing.json"], {}, "trace file not found"),
        (["report", "empty.json"], {}, "is not JSON"),
        (["report", "not-otlp.json"], {}, "not an OTLP JSON trace"),
        (["report", "broken.json"], {}, "not a valid OTLP JSON trace"),
        (["report", "dir"], {}, "cannot read trace file"),
        (["send", "not-otlp.json", "--otlp", "http://127.0.0.1:4317"], {}, "not an OTLP"),
        (["send", "empty.json", "--otlp", "ftp://collector"], {}, "invalid OTLP endpoint"),
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
    ]


def test_bad_input_gets_one_clear_line_and_status_2(tmp_path: Path) -> None:
    failures = []
    for args, extra, message in _bad_inputs(tmp_path):
        result = aiotrace(*args, cwd=tmp_path, env=clean_env(**extra))
        lines = result.stderr.splitlines()
        ok = (
            result.returncode == 2
            and len(lines) == 1
            and lines[0].startswith("aiotrace: error: ")
            and message in lines[0]
            and result.stdout == ""
        )
        if not ok:
            failures.append((args, extra, result.returncode, result.stderr))
    assert not failures
    assert not list(tmp_path.glob("aiotrace-*.json"))  # nothing ran, nothing written


def test_no_command_prints_help_with_status_2(tmp_path: Path) -> None:
    result = aiotrace(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: aiotrace" in result.stderr
    assert os.listdir(tmp_path) == []


PYTEST_SUITE = """
import asyncio


def test_lock():
    async def main():
        async with asyncio.Lock():
            pass

    asyncio.run(main())
    assert 1 + 1 == 2
"""


@pytest.mark.parametrize("launcher", ["aiotrace run -m", "opentelemetry-instrument python -m"])
def test_pytest_run_by_aiotrace_warns_of_nothing_it_would_not_untraced(
    tmp_path: Path, launcher: str
) -> None:
    """aiotrace is a pytest plugin imported before pytest: pytest must not warn of it.

    (It did: "Module already imported so cannot be rewritten; aiotrace",
    which ``-W error`` turns into a failed run.)
    """
    (tmp_path / "test_it.py").write_text(PYTEST_SUITE)
    args = [
        "pytest",
        "-q",
        "-W",
        "error",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:asyncio",
        "test_it.py",
    ]
    plain = python("-m", *args, cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    if launcher.startswith("aiotrace"):
        traced = aiotrace("run", "--no-trace-file", "-m", *args, cwd=tmp_path)
    else:
        bin_dir = Path(sys.executable).parent
        traced = subprocess.run(
            [str(bin_dir / "opentelemetry-instrument"), sys.executable, "-m", *args],
            cwd=tmp_path,
            env=clean_env(
                OTEL_TRACES_EXPORTER="none",
                OTEL_METRICS_EXPORTER="none",
                OTEL_LOGS_EXPORTER="none",
                PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert traced.returncode == 0, traced.stdout + traced.stderr
    assert "1 passed" in traced.stdout
    assert "Warning" not in traced.stdout + traced.stderr
