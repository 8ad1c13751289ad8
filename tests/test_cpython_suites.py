"""CPython's own asyncio test suites pass with aiotrace instrumented (``aiotrace.selftest``)."""

from __future__ import annotations

import subprocess
import sys


def test_cpython_asyncio_suites_pass_traced() -> None:
    """test_locks, test_queues and test_pep492 give the same results traced and untraced."""
    proc = subprocess.run(
        [sys.executable, "-m", "aiotrace.selftest", "test_locks", "test_queues", "test_pep492"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all outcomes identical" in proc.stdout
    for module in ("test_locks", "test_queues", "test_pep492"):
        line = next(line for line in proc.stdout.splitlines() if line.startswith(module))
        assert line.split()[-1] == "same", line
