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
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from aiotrace.pytest_plugin import PLUGIN_NAME
from tests.cli_support import clean_env
from tests.outcomes import FILE_VARIABLE, SEEN

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
    args: list[str], cwd: Path, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """The suite run with ``--aiotrace``, which must pass; its trace goes to ``trace.json``."""
    traced = run_pytest(
        [*args, "--aiotrace", f"--aiotrace-trace-file={tmp_path / 'trace.json'}"],
        cwd,
        tmp_path / "traced.xml",
        **env,
    )
    assert traced.returncode == 0, traced.stdout[-3000:]
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


def outcomes_this_session_saw(session: pytest.Session) -> dict[str, str] | None:
    """The outcomes of the tests a self-traced run repeats, if this session ran them all alike.

    Alike: untraced, in this process (an xdist worker saw only its share),
    with no ``OTEL_*``/``AIOTRACE_*`` variable steering them. Otherwise, or
    when it ran none of them, ``None``: the check runs them untraced itself.
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
    return {nodeid: SEEN[nodeid] for nodeid in repeated}


# Runs the suite traced (about 100 s alone; a loaded machine can double that),
# and untraced too unless this session just did.
@pytest.mark.timeout(900)
def test_this_projects_suite_passes_identically_traced(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every test but the ``pristine`` ones (which need aiotrace not instrumented)."""
    selection = ["-m", REPEATED, "-p", "xdist", "-n", "2"]
    before = outcomes_this_session_saw(request.session)
    report = tmp_path / "outcomes.json"
    traced = run_traced(selection, ROOT, tmp_path, **{FILE_VARIABLE: str(report)})
    after = json.loads(report.read_text(encoding="utf-8"))
    if before is None or set(before) != set(after):
        plain = run_pytest(selection, ROOT, tmp_path / "plain.xml", **{FILE_VARIABLE: str(report)})
        assert plain.returncode == 0, plain.stdout[-3000:]
        before = json.loads(report.read_text(encoding="utf-8"))
    assert len(before) > 100
    assert after == before
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
