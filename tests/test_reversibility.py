"""instrument()/uninstrument(): exact restore, idempotence, rollback, life after revert."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import aiotrace
from aiotrace import _patching, semconv
from aiotrace._wire import W_PRIM
from aiotrace.testing import capture_spans
from tests.conftest import PRISTINE, snapshot


@pytest.mark.pristine
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


@pytest.mark.pristine
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


@pytest.mark.pristine
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
    before = snapshot(), aiotrace.is_instrumented()
    with aiotrace.tracing():
        assert aiotrace.is_instrumented()
        assert snapshot() != before[0]
    assert (snapshot(), aiotrace.is_instrumented()) == before


def test_primitives_made_while_instrumented_work_after_uninstrument() -> None:
    """Objects holding bound methods of patched classes keep working after revert."""

    async def make() -> asyncio.Condition:
        return asyncio.Condition()  # binds the patched Lock.acquire/release

    with capture_spans(min_wait=0, min_hold=0):
        cond = asyncio.run(make())
        lock = asyncio.Lock()
        asyncio.run(lock.acquire())
        event = asyncio.Event()
        wait = event.wait  # the patched wait, bound

    async def use() -> None:
        async with cond:
            cond.notify_all()
        lock.release()  # acquired while traced, released after
        async with lock:
            pass
        waiting = asyncio.create_task(wait())
        await asyncio.sleep(0)
        assert event._waiters  # it blocked
        event.set()
        assert await waiting is True

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


@pytest.mark.pristine
def test_instrumenting_inside_a_session_nests_and_restores_the_sessions_tracing() -> None:
    """A test calling instrument() under ``pytest --aiotrace`` gets its own tracing, then not."""
    from aiotrace._instrumentation import INSTRUMENTATION
    from aiotrace._pipeline import Consumer

    class Keep(Consumer):
        def __init__(self) -> None:
            self.records: list[tuple[Any, ...]] = []

        def consume(self, records: list[tuple[Any, ...]]) -> None:
            self.records.extend(records)

        def flush(self, timeout: float) -> bool:
            return True

        def shutdown(self, timeout: float) -> None:
            pass

    async def contend(name: str) -> None:
        lock = aiotrace.name(asyncio.Lock(), name)

        async def hold() -> None:
            async with lock:
                await asyncio.sleep(0.002)

        await asyncio.gather(hold(), hold())

    session = Keep()
    aiotrace.instrument(consumer=session, nestable=True, min_hold=0)
    try:
        session_patches = snapshot()
        asyncio.run(contend("before"))
        with capture_spans(tasks=False, primitives=("lock",)) as inner:
            assert INSTRUMENTATION.depth == 1
            asyncio.run(contend("inner"))
        assert INSTRUMENTATION.depth == 0
        assert snapshot() == session_patches  # the session's patches, exactly, are back
        asyncio.run(contend("after"))
        aiotrace.flush()
    finally:
        aiotrace.uninstrument()
    assert snapshot() == PRISTINE
    assert {s[semconv.ATTR_PRIMITIVE_NAME] for s in inner.primitive_spans} == {"inner"}
    assert inner.task_spans == []  # its own options: tasks=False
    names = {defn[3] for defn in session.records if defn[0] == W_PRIM}
    assert names == {"before", "after"}  # the session saw its own, not the nested one's


@pytest.mark.pristine  # in a traced session, the session's tracing resumes at uninstrument()
def test_a_wait_that_ends_after_uninstrument_reaches_no_later_trace() -> None:
    """Waits begun traced and ended after ``uninstrument()`` end untraced: their
    records went to the next instrumentation's trace (a pytest run's next test saw
    a Queue's and a Condition's waits from a program the test before had run)."""

    async def main() -> None:
        lock, queue, event = asyncio.Lock(), asyncio.Queue[int](), asyncio.Event()
        await lock.acquire()
        waits = [
            asyncio.create_task(lock.acquire()),
            asyncio.create_task(queue.get()),
            asyncio.create_task(event.wait()),
        ]
        await asyncio.sleep(0.002)  # all three waiting, traced
        aiotrace.uninstrument()
        lock.release()
        queue.put_nowait(1)
        event.set()
        await asyncio.sleep(0.002)  # all three woken, untraced
        waits.append(asyncio.create_task(lock.acquire()))  # queued, cancelled at the end
        await asyncio.sleep(0)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    aiotrace.instrument(min_wait=0, min_hold=0)
    try:
        asyncio.run(main())
    finally:
        if aiotrace.is_instrumented():
            aiotrace.uninstrument()
    with capture_spans(min_wait=0, min_hold=0) as later:
        pass
    assert later.primitive_spans == []
