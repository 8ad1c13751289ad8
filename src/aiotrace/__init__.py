"""aiotrace: OpenTelemetry spans for asyncio's locks, semaphores, events, conditions,
barriers, queues, futures and tasks: who held what, who waited, who woke whom.

Importing aiotrace patches nothing; :func:`instrument` does, reversibly.
"""

from __future__ import annotations

from aiotrace._api import (
    Stats,
    flush,
    ignore_lock_order,
    instrument,
    is_instrumented,
    name,
    stats,
    tracing,
    uninstrument,
)
from aiotrace._recorder import Options
from aiotrace._version import __version__
from aiotrace.exceptions import AiotraceError, ConfigurationError
from aiotrace.instrumentor import AiotraceInstrumentor

__all__ = [
    "AiotraceError",
    "AiotraceInstrumentor",
    "ConfigurationError",
    "Options",
    "Stats",
    "__version__",
    "flush",
    "ignore_lock_order",
    "instrument",
    "is_instrumented",
    "name",
    "stats",
    "tracing",
    "uninstrument",
]
