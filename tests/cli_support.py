"""Running ``aiotrace`` (and plain ``python``) in subprocesses, and reading what they left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiotrace._assemble import SpanDraft
from aiotrace._otlp import read_trace_file
from tests.outcomes import STEERING, STEERING_KEYS, ScrubbedEnv

PROGRAMS = Path(__file__).parent / "programs"
"""Small programs the CLI tests run."""

EXAMPLES = Path(__file__).parent.parent / "examples"


def clean_env(**extra: str) -> ScrubbedEnv:
    """This environment without any OTEL_*, AIOTRACE_* or TRACEPARENT that would steer a run."""
    env = ScrubbedEnv(
        (key, value)
        for key, value in os.environ.items()
        if not key.startswith(STEERING) and key not in STEERING_KEYS
    )
    env.update(COLUMNS="160", PYTHONUNBUFFERED="1", PYTHONHASHSEED="0")
    env.update(extra)
    return env


def aiotrace(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    sigint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m aiotrace ARGS``, as the user would type ``aiotrace ARGS``.

    ``sigint``: run it with SIGINT's action set (see :func:`sigint_as`).
    """
    return python("-m", "aiotrace", *args, cwd=cwd, env=env, timeout=timeout, sigint=sigint)


def sigint_as(action: str) -> list[str]:
    """A command prefix that runs the rest with SIGINT's action set: ``"default"`` or ``"ignore"``.

    The command is exec'd (same process, so signals sent to it reach it).
    Ctrl-C tests want ``default`` even when this suite runs as a background
    job (``pytest &``), whose children inherit SIGINT ignored; ``ignore``
    makes that inheritance on purpose. (Not ``preexec_fn``: it can
    deadlock a child forked from a process with threads, as a traced test
    session has.)
    """
    handler = {"default": "SIG_DFL", "ignore": "SIG_IGN"}[action]
    return [
        sys.executable,
        "-c",
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{handler}); "
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]


def started_and_ready(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    """``command`` running, past its ``ready`` line, and into the await that follows it.

    Tests that send a signal wait for this: there is then one place for it to land.
    """
    process = subprocess.Popen(
        [*sigint_as("default"), *command],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    time.sleep(0.3)
    return process


def python(
    *args: str | os.PathLike[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    sigint: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """The same program without aiotrace, to compare with."""
    command = [*(sigint_as(sigint) if sigint else ()), sys.executable, *map(str, args)]
    return _run(command, cwd, env, timeout)


def console_script(
    *args: str | os.PathLike[str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``aiotrace ARGS`` through the installed console script, whose ``sys.path[0]`` is bin/."""
    script = Path(sys.executable).parent / "aiotrace"
    assert script.exists(), "the aiotrace console script is installed next to python"
    return _run([str(script), *map(str, args)], cwd, None, timeout)


def _run(
    command: list[str], cwd: Path, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Trace:
    """A trace file's spans, with the look-ups the tests need."""

    def __init__(self, path: Path) -> None:
        data = read_trace_file(str(path))
        self.resource = data.resource
        self.spans: list[SpanDraft] = data.drafts
        self.resources = {
            span.span_id: resource for resource, spans in data.groups for span in spans
        }
        """Each span's resource (by span id): the process that made it."""

    def names(self) -> Counter[str]:
        return Counter(span.name for span in self.spans)

    def named(self, name: str) -> list[SpanDraft]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str, **attrs: Any) -> SpanDraft:
        hits = [
            span
            for span in self.named(name)
            if all(span.attributes.get(key.replace("__", ".")) == v for key, v in attrs.items())
        ]
        assert len(hits) == 1, f"{len(hits)} spans {name} {attrs}: {self.names()}"
        return hits[0]

    def by_id(self, span_id: int) -> SpanDraft:
        return next(span for span in self.spans if span.span_id == span_id)

    @property
    def root(self) -> SpanDraft:
        return self.one("aiotrace.run")


def report_lines(stderr: str) -> list[str]:
    """stderr's lines with trailing spaces dropped."""
    return [line.rstrip() for line in stderr.splitlines()]


def installed_library(tmp_path: Path, package: str, source: str, program: str) -> None:
    """``package`` as if installed (under a ``site-packages`` folder: aiotrace counts its
    files as a library's), and beside it ``prog.py``, which puts that folder on its path."""
    library = tmp_path / "site-packages" / package
    library.mkdir(parents=True)
    (library / "__init__.py").write_text(source)
    (tmp_path / "prog.py").write_text(program)


def marker_line(source: str, marker: str) -> int:
    """The number of the line of ``source`` that carries the comment ``# marker``."""
    return next(n for n, text in enumerate(source.splitlines(), 1) if f"# {marker}" in text)
