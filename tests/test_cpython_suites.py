"""CPython's own asyncio test suites pass with aiotrace instrumented (``aiotrace.selftest``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aiotrace.selftest import DEFAULT_MODULES

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
