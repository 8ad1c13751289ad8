"""Shared fixtures: captured spans, and a check that every test leaves asyncio unpatched."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import aiotrace
from aiotrace.testing import Captured, capture_spans

pytest_plugins = ["pytester", "tests.outcomes"]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile aiotrace's modules once, as installing a wheel would.

    The suite runs hundreds of processes that import aiotrace from an
    editable install; where ``PYTHONDONTWRITEBYTECODE`` is set (as on these
    machines), each would compile every module again, about 0.1 s apiece.
    """
    package = Path(aiotrace.__file__).parent
    if os.access(package, os.W_OK):
        compileall.compile_dir(package, quiet=1, workers=1)


def _patched_owners() -> list[Any]:
    owners: list[Any] = [
        asyncio.Lock,
        asyncio.Semaphore,
        asyncio.BoundedSemaphore,
        asyncio.Event,
        asyncio.Condition,
        asyncio.Queue,
        asyncio.PriorityQueue,
        asyncio.LifoQueue,
        asyncio.BaseEventLoop,
        asyncio.tasks,
        asyncio.base_futures,
        asyncio.futures,
        asyncio,
        contextlib._AsyncGeneratorContextManager,  # who entered an @asynccontextmanager
    ]
    for name in ("Barrier",):
        if hasattr(asyncio, name):
            owners.append(getattr(asyncio, name))
    timeouts = getattr(asyncio, "timeouts", None)
    if timeouts is not None:
        owners.append(timeouts.Timeout)
    return owners


def snapshot() -> dict[str, dict[str, int]]:
    """Identity of every attribute of every class and module aiotrace may patch."""
    return {
        repr(owner): {name: id(value) for name, value in vars(owner).items()}
        for owner in _patched_owners()
    }


PRISTINE = snapshot()
ORIGINAL_CREATE_TASK = vars(asyncio.BaseEventLoop)["create_task"]
"""As asyncio has it, before any plugin (``pytest --aiotrace``) patched it."""


@pytest.fixture(autouse=True)
def _asyncio_left_unpatched() -> Iterator[None]:
    """Every test must leave asyncio exactly as it found it.

    Pristine, normally; under ``pytest --aiotrace`` (this suite traced by
    itself) as the plugin's instrumentation has it, nested instrumentations
    of the test undone.
    """
    from aiotrace._instrumentation import INSTRUMENTATION as instrumentor

    was_instrumented, depth, before = aiotrace.is_instrumented(), instrumentor.depth, snapshot()
    if not was_instrumented:
        assert before == PRISTINE
    watching = _diagnosis_state()
    yield
    # What a Diagnoser or a leak watcher began, it ended: else every later test
    # (and a program traced again in the same process) pays for ownership tracking.
    assert _diagnosis_state() == watching
    if aiotrace.is_instrumented() and not was_instrumented:
        aiotrace.uninstrument()
        pytest.fail("test left aiotrace instrumented")
    if instrumentor.depth > depth:
        while instrumentor.depth > depth:
            instrumentor.pop()
        pytest.fail("test left a nested aiotrace instrumentation running")
    assert snapshot() == before


def _diagnosis_state() -> tuple[object, ...]:
    from aiotrace import _leaks
    from aiotrace.primitives import _lock_order
    from aiotrace.primitives._base import _WATCHED_KINDS, WATCHED

    return (
        WATCHED[0] is not None,
        _lock_order.DIAGNOSING[0],
        _lock_order.LOCK_ORDER[0],
        sorted(_WATCHED_KINDS),
        _lock_order._TRACKERS[0],
        _leaks._EVERY_KIND_WATCHERS[0],
    )


@pytest.fixture
def traced() -> Iterator[Captured]:
    """Instrumented with thresholds at zero: every wait and hold becomes a span."""
    with capture_spans(min_wait=0, min_hold=0) as captured:
        yield captured


@pytest.fixture
def no_syntax_trees_from_aiotrace(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ast.parse`` fails the test when aiotrace's code is anywhere up its caller's stack.

    Others (pytest's own, showing a failure) parse as usual. Why aiotrace must
    not: ``aiotrace._sites.SHARED_SYNTAX_TREE_DEPTH``.
    """
    import ast
    import sys

    parse = ast.parse

    def refuse(*args: Any, **kwargs: Any) -> ast.AST:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith("aiotrace"):
                raise AssertionError("aiotrace built a syntax tree")
            frame = frame.f_back  # type: ignore[assignment]
        return parse(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", refuse)


def line_of(marker: str, obj: Any = None) -> int:
    """Line number of the line containing ``marker`` in the calling test module."""
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    module = inspect.getmodule(obj) if obj is not None else inspect.getmodule(frame.f_back)
    assert module is not None
    source = inspect.getsource(module).splitlines()
    hits = [i + 1 for i, text in enumerate(source) if marker in text and "line_of(" not in text]
    assert len(hits) == 1, f"marker {marker!r} found {len(hits)} times"
    return hits[0]


def quiet_hand_offs(make: Callable[[], Any], tasks: int = 10, rounds: int = 20) -> Any:
    """Hand ``make()``'s primitive around ``tasks`` tasks, ``rounds`` times each, below thresholds.

    Checks what every such run must give: no span, no internal error,
    nobody left queued, and every hand-off counted exactly once. Returns
    the primitive for the caller's own checks.
    """

    async def main() -> Any:
        prim = make()

        async def worker() -> None:
            for _ in range(rounds):
                async with prim:
                    await asyncio.sleep(0)

        await asyncio.gather(*(worker() for _ in range(tasks)))
        return prim

    with capture_spans(min_wait=60.0, min_hold=60.0) as captured:
        prim = asyncio.run(main())
        assert captured.primitive_spans == []
        assert aiotrace.stats().internal_errors == 0
    stats = prim._aiotrace_stats
    assert not prim._aiotrace_starts  # nobody left queued
    # Each release found nobody waiting (n) or handed over (a hold, and the
    # waiter's wait, both settled quietly).
    assert stats.holds + stats.n == tasks * rounds
    assert stats.waits == stats.holds > 0
    assert stats.quiet == stats.waits + stats.holds
    assert stats.wait_ns > 0
    return prim
