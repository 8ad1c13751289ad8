"""aiotrace: OpenTelemetry spans for asyncio's locks, semaphores, events, conditions,
barriers, queues, futures and tasks: who held what, who waited, who woke whom.

Importing aiotrace patches nothing; :func:`instrument` does, reversibly.

PYTEST_DONT_REWRITE: aiotrace is also a pytest plugin, so pytest asks to
rewrite its asserts; when aiotrace runs pytest (``aiotrace run -m pytest``,
``opentelemetry-instrument pytest``) it is imported first, and pytest would
warn that it cannot, which fails a run with ``-W error``. Its asserts are
aiotrace's own and need no rewriting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # AiotraceInstrumentor on first use: it imports opentelemetry.instrumentation
    # (40-50 ms), which a child process or a pytest run without --aiotrace
    # would pay for nothing.
    if name == "AiotraceInstrumentor":
        from aiotrace.instrumentor import AiotraceInstrumentor

        return AiotraceInstrumentor
    raise AttributeError(f"module 'aiotrace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})  # AiotraceInstrumentor too, before its first use
