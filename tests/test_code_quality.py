"""The code base is ruff-clean and ``mypy --strict``-clean (configured in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:  # pragma: no cover - installed with the test extras
        pytest.fail(f"{name} is not installed next to {sys.executable}; pip install -e '.[test]'")
    return found


def test_ruff_is_clean() -> None:
    """ruff check and ruff format --check pass on the whole repository."""
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run(
            [_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean() -> None:
    """mypy --strict passes on src/ and tests/typing/."""
    proc = subprocess.run(
        [_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
