"""Whole test suites pass identically with ``--aiotrace``: this project's own, and janus's.

janus (an asyncio/threading queue built on asyncio's Condition and futures)
is installed from PyPI at the version pinned in the ``test`` extra; its
tests come from the same version's sdist, downloaded here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from aiotrace.pytest_plugin import PLUGIN_NAME
from tests.cli_support import clean_env
from tests.outcomes import FILE_VARIABLE, OUT_OF_PROCESS, SEEN, SELF_TRACED_VARIABLE

pytestmark = pytest.mark.suite_check

ROOT = Path(__file__).parent.parent


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped, from a JUnit XML report."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[name] = next((k for k in ("error", "failure", "skipped") if k in kinds), "passed")
    return result


def run_pytest(
    args: list[str], cwd: Path, junit: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, f"--junitxml={junit}", "-q"],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def run_traced(
    args: list[str], cwd: Path, tmp_path: Path, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """The suite run with ``--aiotrace``, which must pass unless not ``check``ed; its trace
    goes to ``trace.json``."""
    traced = run_pytest(
        [*args, "--aiotrace", f"--aiotrace-trace-file={tmp_path / 'trace.json'}"],
        cwd,
        tmp_path / "traced.xml",
        **env,
    )
    assert traced.returncode == 0 or not check, traced.stdout[-3000:]
    return traced


def plain_and_traced(
    args: list[str], cwd: Path, tmp_path: Path
) -> tuple[dict[str, str], dict[str, str], str]:
    """The suite run without and with ``--aiotrace``: both outcomes, and the traced output."""
    plain = run_pytest(args, cwd, tmp_path / "plain.xml")
    assert plain.returncode == 0, plain.stdout[-3000:]
    traced = run_traced(args, cwd, tmp_path)
    return outcomes(tmp_path / "plain.xml"), outcomes(tmp_path / "traced.xml"), traced.stdout


REPEATED = "not pristine and not suite_check"
"""The tests a self-traced run repeats: not those needing a pristine process, nor these checks."""


def outcomes_this_session_saw(session: pytest.Session) -> dict[str, Any] | None:
    """What this session saw of the tests a self-traced run repeats, if it ran them all alike.

    Alike: untraced, in this process (an xdist worker saw only its share),
    with no ``OTEL_*``/``AIOTRACE_*`` variable steering them. Otherwise, or
    when it ran none of them, ``None``: the check runs them untraced itself.
    As ``tests/outcomes.py`` writes it: their outcomes, and which of them
    ran out of process.
    """
    steered = any(
        key.startswith(("OTEL_", "AIOTRACE_")) or key == "TRACEPARENT" for key in os.environ
    )
    if steered or session.config.pluginmanager.has_plugin(PLUGIN_NAME):
        return None
    repeated = [
        item.nodeid
        for item in session.items
        if not item.get_closest_marker("pristine") and not item.get_closest_marker("suite_check")
    ]
    if not repeated or any(nodeid not in SEEN for nodeid in repeated):
        return None
    return {
        "outcomes": {nodeid: SEEN[nodeid] for nodeid in repeated},
        "out_of_process": sorted(OUT_OF_PROCESS.intersection(repeated)),
    }


# Runs the suite traced (about a minute alone; a loaded machine can double
# that), and untraced too unless this session just did.
@pytest.mark.timeout(900)
def test_this_projects_suite_passes_identically_traced(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every test but the ``pristine`` ones (which need aiotrace not instrumented) and those
    that ran out of process (which a traced session cannot reach: ``tests/outcomes.py``)."""
    selection = ["-m", REPEATED, "-p", "xdist", "-n", "2"]
    report = tmp_path / "outcomes.json"
    before = outcomes_this_session_saw(request.session)
    if before is None:
        plain = run_pytest(selection, ROOT, tmp_path / "plain.xml", **{FILE_VARIABLE: str(report)})
        assert plain.returncode == 0, plain.stdout[-3000:]
        before = json.loads(report.read_text(encoding="utf-8"))
    out_of_process = before["out_of_process"]
    expected = {
        nodeid: outcome
        for nodeid, outcome in before["outcomes"].items()
        if nodeid not in out_of_process
    }
    assert len(expected) > 100
    deselected = [f"--deselect={nodeid}" for nodeid in out_of_process]
    traced = run_traced(
        [*selection, *deselected],
        ROOT,
        tmp_path,
        check=False,
        **{FILE_VARIABLE: str(report), SELF_TRACED_VARIABLE: "1"},
    )
    after = json.loads(report.read_text(encoding="utf-8"))["outcomes"]
    differ = sorted(nodeid for nodeid in expected if after.get(nodeid) != expected[nodeid])
    if 0 < len(differ) <= 3:
        # Two at a time on two loaded cores, a test that times what it checks
        # can fail once where it passes alone: each such test runs again,
        # traced, alone, and must then come to what it came to untraced. A
        # difference that tracing makes stays.
        again = tmp_path / "again.json"
        rerun = run_pytest(
            [*differ, "--aiotrace", "--aiotrace-trace-file=none"],
            ROOT,
            tmp_path / "again.xml",
            **{FILE_VARIABLE: str(again), SELF_TRACED_VARIABLE: "1"},
        )
        after.update(json.loads(again.read_text(encoding="utf-8"))["outcomes"])
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            outcome = rerun.stdout.strip().splitlines()[-1:]
            reporter.write_line(f"\nself-traced run: ran alone again {differ}: {outcome}")
    else:
        assert traced.returncode == 0, traced.stdout[-3000:]
    assert after == expected, traced.stdout[-3000:]
    assert "= aiotrace =" in traced.stdout
    assert (tmp_path / "trace.json").stat().st_size > 0


def _janus_tests(tmp_path: Path) -> Path:
    version = metadata.version("janus")
    download = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--quiet",
            "--dest",
            str(tmp_path),
            f"janus=={version}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert download.returncode == 0, f"cannot download janus's sdist: {download.stderr}"
    (sdist,) = tmp_path.glob("janus-*.tar.gz")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(tmp_path, filter="data")
        else:  # pragma: no cover - a Python before the tarfile filters
            archive.extractall(tmp_path)  # a PyPI sdist of a pinned version
    return tmp_path / f"janus-{version}"


def test_a_third_party_asyncio_suite_passes_identically_traced(tmp_path: Path) -> None:
    source = _janus_tests(tmp_path)
    # Its tests, against the installed janus; its coverage and benchmark
    # plugins are not ours to install.
    args = [
        "-o",
        "addopts=",
        "-p",
        "no:cacheprovider",
        "--ignore=tests/test_benchmarks.py",
        "--import-mode=importlib",
        "tests",
    ]
    before, after, output = plain_and_traced(args, source, tmp_path)
    assert len(before) >= 90
    assert after == before
    assert "Most contended primitives:" in output  # it really was traced


@pytest.mark.parametrize("xdist", [[], ["-p", "xdist", "-n", "2"]], ids=["plain", "xdist"])
def test_only_tests_a_traced_session_cannot_reach_count_as_out_of_process(
    tmp_path: Path, xdist: list[str]
) -> None:
    """A test is left out of the self-traced run only if all it did was start children with
    a scrubbed environment: an event loop, a fork or an inherited environment keeps it in."""
    (tmp_path / "test_kinds.py").write_text(
        textwrap.dedent(
            """
            import asyncio, os, subprocess, sys
            from tests.cli_support import clean_env

            def child(env):
                subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)

            def test_scrubbed():
                child(clean_env(AIOTRACE_OWN="1"))

            def test_inherited():
                child(None)

            def test_copied():
                child(dict(os.environ))

            def test_loop_too():
                asyncio.run(asyncio.sleep(0))
                child(clean_env())

            def test_no_child():
                pass

            def test_fork():
                pid = os.fork()
                if pid == 0:
                    os._exit(0)
                os.waitpid(pid, 0)
                child(clean_env())
            """
        ),
        encoding="utf-8",
    )
    report = tmp_path / "seen.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.outcomes", "-p", "no:cacheprovider", *xdist],
        cwd=tmp_path,
        env={**clean_env(), FILE_VARIABLE: str(report), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout
    seen = json.loads(report.read_text(encoding="utf-8"))
    assert seen["outcomes"] == {
        f"test_kinds.py::test_{name}": "passed"
        for name in ("scrubbed", "inherited", "copied", "loop_too", "no_child", "fork")
    }
    assert seen["out_of_process"] == ["test_kinds.py::test_scrubbed"]
