"""CPython's own asyncio test suites pass with aiotrace instrumented (``aiotrace.selftest``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiotrace.selftest import DEFAULT_MODULES, all_modules, compare, main

# A whole suite traced already: run inside the self-traced run as well, it
# only added its minute to both of that run's passes.
pytestmark = pytest.mark.suite_check


def test_cpython_asyncio_suites_pass_traced() -> None:
    """Every default module (locks, queues, futures, tasks, ...) gives the same results traced.

    Modules this Python lacks (``test_taskgroups`` before 3.11) are reported as
    absent; every other one must say "same".
    """
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace.selftest"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all outcomes identical" in proc.stdout
    verdicts = {
        line.split()[0]: "absent" if "not in this Python" in line else line.split()[-1]
        for line in proc.stdout.splitlines()
        if line.startswith(DEFAULT_MODULES)
    }
    assert set(verdicts) == set(DEFAULT_MODULES)
    for module in ("test_locks", "test_queues", "test_pep492", "test_futures", "test_tasks"):
        assert verdicts[module] == "same", proc.stdout
    assert set(verdicts.values()) <= {"same", "absent"}, proc.stdout


def test_the_lock_and_queue_suites_pass_traced_with_the_diagnosis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``aiotrace run`` traces with the diagnosis on: ownership and lock order on every
    acquisition, the watchdog, deadlock and hang detection. The primitives' own suites
    give the same results so too (``--checks``; every module: ``tools/selftest-all
    --checks``)."""
    assert compare(["test_locks", "test_queues"], jobs=2, checks=True)
    table = capsys.readouterr().out.splitlines()
    assert "untraced vs traced with the diagnosis" in table[0]
    assert [line.split()[-1] for line in table[2:4]] == ["same", "same"]


_IN_THE_BACKGROUND = """
import os, resource, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a background job
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a loop fails here, not the machine
os.execv(sys.executable, [sys.executable, "-m", "aiotrace.selftest", *sys.argv[1:]])
"""


def test_a_run_started_in_the_background_gives_the_same_outcomes() -> None:
    """Started as a background job (``tools/selftest-all --all &``), where SIGINT is
    ignored: test_runners' interrupt tests still get their KeyboardInterrupt, untraced and
    traced, instead of looping until memory runs out."""
    proc = subprocess.run(
        [sys.executable, "-c", _IN_THE_BACKGROUND, "test_runners", "--jobs", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("test_runners")]
    assert line.split()[-1] == "same", proc.stdout


def test_all_modules_covers_the_whole_package_and_skips_other_platforms_modules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--all``: every module, the default ones first; a Windows-only one is skipped, and a
    module that never runs a loop (so builds no span) is no failure, unlike a default one.
    Runs in parallel are listed in the order asked for."""
    modules = all_modules()
    assert modules[: len(DEFAULT_MODULES)] == list(DEFAULT_MODULES)
    assert {"test_streams", "test_subprocess", "test_sslproto", "test_events"} <= set(modules)
    assert compare(["test_windows_utils", "test_protocols", "test_futures2"], jobs=3)
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[2:5]] == [
        "test_windows_utils",
        "test_protocols",
        "test_futures2",
    ]
    assert table[2] == "test_windows_utils      -      skipped: Windows only"
    assert table[3].split()[-2:] == ["0", "same"]  # no span built, no failure
    assert table[4].split()[-1] == "same"
    assert table[-1] == "all outcomes identical"
    with pytest.raises(SystemExit) as exit:
        main(["--jobs", "0"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("--jobs must be at least 1")
