"""AiotraceInstrumentor: aiotrace as an ``opentelemetry-instrumentation`` instrumentor.

Registered under the ``opentelemetry_instrumentor`` entry point, so
``opentelemetry-instrument python app.py`` traces a program with no code
change. It is a face of the one instrumentation (``_instrumentation``):
``aiotrace.instrument()`` and this see and change the same state, so either
way in, the other knows it is instrumented.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # untyped package

from aiotrace._instrumentation import INSTRUMENTATION

if TYPE_CHECKING:
    from collections.abc import Collection


class AiotraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # untyped base class
    """Instrument asyncio's primitives; see :func:`aiotrace.instrument` for the options."""

    def instrumentation_dependencies(self) -> Collection[str]:
        """asyncio is part of the standard library: nothing to check."""
        return ()

    @property
    def _is_instrumented_by_opentelemetry(self) -> bool:
        # BaseInstrumentor keeps its own flag; ours is the instrumentation's.
        return INSTRUMENTATION.active

    @_is_instrumented_by_opentelemetry.setter
    def _is_instrumented_by_opentelemetry(self, value: bool) -> None:
        """BaseInstrumentor sets it after ``_instrument``: the instrumentation has already."""

    def _instrument(self, **kwargs: Any) -> None:
        INSTRUMENTATION.start(**kwargs)

    def _uninstrument(self, **kwargs: Any) -> None:
        INSTRUMENTATION.stop(**kwargs)
