"""Typed use of aiotrace's public API; checked by ``mypy --strict``, never run by pytest."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider

import aiotrace
from aiotrace.testing import Captured, CapturedSpan, capture_spans


async def uses_named_lock() -> bool:
    lock: asyncio.Lock = aiotrace.name(asyncio.Lock(), "db-pool")
    async with lock:
        return lock.locked()


def configure() -> aiotrace.Stats:
    aiotrace.instrument(TracerProvider(), min_hold=0.005, tasks=True)
    with aiotrace.tracing(min_wait=0.0):
        pass
    flushed: bool = aiotrace.flush(1.0)
    assert flushed
    aiotrace.uninstrument()
    return aiotrace.stats()


def capture() -> list[CapturedSpan]:
    with capture_spans(min_hold=0) as captured:
        asyncio.run(uses_named_lock())
    result: Captured = captured
    return result.named("asyncio.Lock.hold")
