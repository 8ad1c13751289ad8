"""Fast reads of the current OpenTelemetry span, and span identities as plain ints.

``opentelemetry.trace.get_current_span()`` walks three Python calls; the slow
paths call this module's :func:`current_span`, which reads the SDK's context
variable directly when the default contextvars runtime context is in use and
falls back to the public API otherwise.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation import _SPAN_KEY

if TYPE_CHECKING:
    from collections.abc import Callable

SPAN_KEY: Final = _SPAN_KEY
"""The key under which OpenTelemetry stores the current span in a Context."""

_INVALID: Final = trace.INVALID_SPAN


def _find_context_var() -> ContextVar[Any] | None:
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


_CONTEXT_VAR: Final = _find_context_var()


AMBIENT: Final[list[Any]] = [None]
"""The span aiotrace's spans nest under where no span is current at all.

``aiotrace run``'s run span, a child process's span, the running test's
phase under ``pytest --aiotrace``: each is current in the thread that
started it, but a thread the program starts has a context of its own,
empty. An event loop run there (``asyncio.run`` in a worker thread, a
blocking portal) would otherwise start a new trace for each of its tasks.
A context that holds a span, even the invalid one a program set on
purpose, keeps it. ``None``: no session (``instrument()`` in a program).
"""


def _current_span_fast() -> trace.Span | None:
    span = _CONTEXT_VAR.get().get(SPAN_KEY)  # type: ignore[union-attr]  # checked at import
    if span is None:
        return AMBIENT[0]  # type: ignore[no-any-return]  # a span or None
    if span is _INVALID:
        return None
    return span  # type: ignore[no-any-return]  # Context is a Mapping[str, object]


def _current_span_api() -> trace.Span | None:
    span = trace.get_current_span()
    return AMBIENT[0] if span is _INVALID else span  # (no span and the invalid one look alike)


current_span: Final[Callable[[], trace.Span | None]] = (
    _current_span_fast if _CONTEXT_VAR is not None else _current_span_api
)
"""The span current in this task/thread, else the :data:`AMBIENT` one, else ``None``."""

SpanIds = tuple[int, int, int, bool]
"""``(trace_id, span_id, trace_flags, is_remote)`` of a span."""


def ids_of(span: object) -> SpanIds | None:
    """The identity of an OpenTelemetry span (or SpanContext), or ``None`` if invalid."""
    if isinstance(span, trace.SpanContext):
        ctx = span
    else:
        getter = getattr(span, "get_span_context", None)
        if getter is None:
            return None
        ctx = getter()
    if ctx is None or not ctx.is_valid:
        return None
    return (ctx.trace_id, ctx.span_id, int(ctx.trace_flags), bool(ctx.is_remote))


TASK_SPANS: Final[dict[int, Any]] = {}
"""``id(task)`` -> the task's span while it runs (filled by the task family)."""


def task_span_of(task: object) -> Any:
    """The span of a traced task, or ``None`` when tasks are not traced."""
    if task is None:
        return None
    return TASK_SPANS.get(id(task))
