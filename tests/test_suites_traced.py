"""Whole test suites pass identically with ``--aiotrace``: this project's own, and janus's.

janus (an asyncio/threading queue built on asyncio's Condition and futures)
is installed from PyPI at the version pinned in the ``test`` extra; its
tests come from the same version's sdist, downloaded here.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

from tests.cli_support import clean_env

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


def run_pytest(args: list[str], cwd: Path, junit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", *args, f"--junitxml={junit}", "-q"],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def plain_and_traced(
    args: list[str], cwd: Path, tmp_path: Path
) -> tuple[dict[str, str], dict[str, str], str]:
    """The suite run without and with ``--aiotrace``: both outcomes, and the traced output.

    Both runs must pass; the trace goes to ``tmp_path / "trace.json"``.
    """
    plain = run_pytest(args, cwd, tmp_path / "plain.xml")
    traced = run_pytest(
        [*args, "--aiotrace", f"--aiotrace-trace-file={tmp_path / 'trace.json'}"],
        cwd,
        tmp_path / "traced.xml",
    )
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert traced.returncode == 0, traced.stdout[-3000:]
    return outcomes(tmp_path / "plain.xml"), outcomes(tmp_path / "traced.xml"), traced.stdout


# Runs the suite twice (about 100 s each alone); a loaded machine can double that.
@pytest.mark.timeout(900)
def test_this_projects_suite_passes_identically_traced(tmp_path: Path) -> None:
    """Every test but the ``pristine`` ones (which need aiotrace not instrumented)."""
    selection = ["-m", "not pristine and not suite_check", "-p", "xdist", "-n", "2"]
    before, after, output = plain_and_traced(selection, ROOT, tmp_path)
    assert len(before) > 100
    assert after == before
    assert "= aiotrace =" in output
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
