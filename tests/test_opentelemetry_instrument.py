"""``opentelemetry-instrument python app.py`` traces a program with no code change."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aiotrace

APP = textwrap.dedent(
    """
    import asyncio

    async def main():
        lock = asyncio.Lock()

        async def worker():
            async with lock:
                await asyncio.sleep(0.01)

        await asyncio.gather(worker(), worker())

    asyncio.run(main())
    """
)


def test_entry_point_is_registered() -> None:
    """aiotrace is listed under the opentelemetry_instrumentor entry point group."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "aiotrace"]
    assert [ep.value for ep in found] == ["aiotrace.instrumentor:AiotraceInstrumentor"]


def test_opentelemetry_instrument_traces_an_unmodified_program(tmp_path: Path) -> None:
    """Spans reach the exporter configured by OTEL_* variables, flushed at exit."""
    command = shutil.which("opentelemetry-instrument", path=os.path.dirname(sys.executable))
    if command is None:  # pragma: no cover - installed with the test extras
        pytest.fail("opentelemetry-instrument is not installed next to this Python")
    (tmp_path / "app.py").write_text(APP)
    env = dict(
        os.environ,
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="demo",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    proc = subprocess.run(
        [command, sys.executable, "app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    decoder = json.JSONDecoder()
    spans = []
    text = proc.stdout
    index = 0
    while True:
        start = text.find("{", index)
        if start < 0:
            break
        obj, index = decoder.raw_decode(text, start)
        spans.append(obj)
    names = sorted(span["name"] for span in spans)
    assert names == [
        "asyncio.Lock.acquire",
        "asyncio.Lock.hold",
        "asyncio.Lock.hold",
        "asyncio.Task",  # main()
        "asyncio.Task",  # the two workers gather() made
        "asyncio.Task",
    ]
    assert all(span["resource"]["attributes"]["service.name"] == "demo" for span in spans)


def test_aiotrace_variables_set_options_and_arguments_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """``opentelemetry-instrument`` can pass no arguments: the AIOTRACE_* variables do."""
    from aiotrace._recorder import RECORDER

    monkeypatch.setenv("AIOTRACE_MIN_HOLD", "0.25")
    monkeypatch.setenv("AIOTRACE_NO_TASKS", "1")
    with aiotrace.tracing():
        assert RECORDER.options.min_hold == 0.25
        assert RECORDER.options.tasks is False
    with aiotrace.tracing(min_hold=0.5):
        assert RECORDER.options.min_hold == 0.5


def test_a_bad_variable_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from aiotrace._recorder import RECORDER

    monkeypatch.setenv("AIOTRACE_MIN_WAIT", "soon")
    with aiotrace.tracing():
        assert RECORDER.options.min_wait == 0.001
    assert "AIOTRACE_MIN_WAIT='soon'" in caplog.text


@pytest.mark.pristine
def test_the_instrumentor_and_the_api_are_one_instrumentation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Instrumented one way in, the other way knows it: no second set of patches."""
    from aiotrace import AiotraceInstrumentor

    aiotrace.instrument()
    try:
        assert AiotraceInstrumentor().is_instrumented_by_opentelemetry
        with caplog.at_level(logging.WARNING):
            AiotraceInstrumentor().instrument()
        assert "already instrumented" in caplog.text
    finally:
        AiotraceInstrumentor().uninstrument()
    assert not aiotrace.is_instrumented()
    AiotraceInstrumentor().instrument()
    try:
        assert aiotrace.is_instrumented()
    finally:
        aiotrace.uninstrument()
    assert not AiotraceInstrumentor().is_instrumented_by_opentelemetry


def test_aiotrace_does_without_opentelemetry_instrumentation_until_asked() -> None:
    """It takes 40-50 ms to import: each child process of a run and each pytest run paid it."""
    code = (
        "import sys, asyncio, aiotrace, aiotrace.pytest_plugin\n"
        "aiotrace.instrument()\n"
        "asyncio.run(asyncio.sleep(0))\n"
        "aiotrace.uninstrument()\n"
        "print('opentelemetry.instrumentation' in sys.modules)\n"
        "assert 'AiotraceInstrumentor' in dir(aiotrace)\n"
        "aiotrace.AiotraceInstrumentor\n"
        "print('opentelemetry.instrumentation' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.split() == ["False", "True"]
