"""instrument()/uninstrument(): exact restore, idempotence, rollback, life after revert."""

from __future__ import annotations

import asyncio
import logging

import pytest

import aiotrace
from aiotrace import _patching, semconv
from aiotrace.testing import capture_spans
from tests.conftest import PRISTINE, snapshot


def test_round_trip_restores_every_class_exactly() -> None:
    """After uninstrument(), vars() of every patched class and module is what it was."""
    aiotrace.instrument()
    try:
        during = snapshot()
        assert during != PRISTINE
        assert "acquire" in vars(asyncio.Lock)
        assert "__aenter__" in vars(asyncio.Lock)  # inherited before: must be deleted after
    finally:
        aiotrace.uninstrument()
    assert snapshot() == PRISTINE
    assert "__aenter__" not in vars(asyncio.Lock)


def test_instrument_is_idempotent(caplog: pytest.LogCaptureFixture) -> None:
    """A second instrument() warns and changes nothing; so does a second uninstrument()."""
    aiotrace.instrument()
    try:
        patched = snapshot()
        with caplog.at_level(logging.WARNING):
            aiotrace.instrument()
        assert snapshot() == patched
        assert "already instrumented" in caplog.text
    finally:
        aiotrace.uninstrument()
    with caplog.at_level(logging.WARNING):
        aiotrace.uninstrument()
    assert "already uninstrumented" in caplog.text
    assert not aiotrace.is_instrumented()


def test_failed_patch_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """If one patch cannot be applied, those already applied are reverted and the error raised."""
    real_apply = _patching.Patch.apply

    def flaky(self: _patching.Patch) -> None:
        if self.owner is asyncio.Queue and self.name == "get":
            raise RuntimeError("cannot patch Queue.get")
        real_apply(self)

    monkeypatch.setattr(_patching.Patch, "apply", flaky)
    with pytest.raises(RuntimeError, match=r"cannot patch Queue\.get"):
        aiotrace.instrument()
    assert not aiotrace.is_instrumented()
    assert snapshot() == PRISTINE


def test_tracing_context_manager() -> None:
    """aiotrace.tracing() instruments for the block only."""
    with aiotrace.tracing():
        assert aiotrace.is_instrumented()
    assert not aiotrace.is_instrumented()


def test_primitives_made_while_instrumented_work_after_uninstrument() -> None:
    """Objects holding bound methods of patched classes keep working after revert."""

    async def make() -> asyncio.Condition:
        return asyncio.Condition()  # binds the patched Lock.acquire/release

    with capture_spans(min_wait=0, min_hold=0):
        cond = asyncio.run(make())
        lock = asyncio.Lock()
        asyncio.run(lock.acquire())

    async def use() -> None:
        async with cond:
            cond.notify_all()
        lock.release()  # acquired while traced, released after
        async with lock:
            pass

    asyncio.run(use())
    assert not lock.locked()


def test_spans_recorded_before_uninstrument_are_delivered() -> None:
    """uninstrument() flushes: nothing recorded is lost."""

    async def main() -> None:
        lock = asyncio.Lock()
        async with lock:
            await asyncio.sleep(0.002)

    with capture_spans(min_hold=0, flush_interval=3600) as captured:
        asyncio.run(main())
    assert [s.name for s in captured.primitive_spans] == [semconv.SPAN_LOCK_HOLD]
