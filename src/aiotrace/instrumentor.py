"""AiotraceInstrumentor: owns the patches and the pipeline; idempotent.

It is an ``opentelemetry-instrumentation`` ``BaseInstrumentor`` registered under
the ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
python app.py`` traces a program with no code change. ``instrument()`` applies
every patch or none (a failure half-way rolls back), and ``uninstrument()``
reverts them in reverse order, leaving ``vars(cls)`` of every asyncio class as
it found it, then delivers what was recorded.
"""

from __future__ import annotations

import atexit
import os
from typing import TYPE_CHECKING, Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]  # untyped package

from aiotrace._env import options_from_env
from aiotrace._patching import Patch, PatchSet
from aiotrace._pipeline import Building, Consumer, Pipeline, Sink
from aiotrace._recorder import LOGGER, RECORDER, Options
from aiotrace.exceptions import ConfigurationError
from aiotrace.primitives._base import retire_all
from aiotrace.sinks import TracerProviderSink

if TYPE_CHECKING:
    from collections.abc import Collection


def build_patches(options: Options) -> list[Patch]:
    """The patches ``options`` asks for, in application order."""
    from aiotrace.primitives import barriers, events, locks, queues, tasks
    from aiotrace.primitives._timeouts import timeout_patches

    families = set(options.primitives)
    patches: list[Patch] = []
    # Condition waits re-acquire their Lock: the lock family serves conditions too.
    if "lock" in families:
        patches += locks.lock_patches()
    if "semaphore" in families:
        patches += locks.semaphore_patches()
    if "event" in families:
        patches += events.event_patches()
    if "condition" in families:
        patches += events.condition_patches()
    if "barrier" in families:
        patches += barriers.barrier_patches()
    if "queue" in families:
        patches += queues.queue_patches()
    if options.tasks:
        patches += tasks.task_patches()
    if options.futures:
        patches += tasks.future_patches()
    if families or options.tasks or options.futures:
        patches += timeout_patches()
    return patches


_exit_registered = False


def _flush_at_exit() -> None:
    """Deliver what was recorded when the interpreter exits while instrumented."""
    pipeline = AiotraceInstrumentor._pipeline
    if pipeline is not None:
        try:
            from aiotrace.primitives import tasks

            tasks.report_pending()
            pipeline.flush(timeout=10.0)
        except Exception as exc:  # exiting: report, never raise
            RECORDER.fail("pipeline", exc)


def _after_fork_in_child() -> None:
    pipeline = AiotraceInstrumentor._pipeline
    if pipeline is None:
        return
    try:
        pipeline.after_fork()
        from aiotrace._child import after_fork

        after_fork(pipeline.consumer)
    except Exception as exc:  # a fork must never fail because of us
        RECORDER.fail("pipeline", exc)


def _environment_options() -> dict[str, Any]:
    """``AIOTRACE_*`` options (``opentelemetry-instrument`` has no other way to pass them).

    Arguments given to ``instrument()`` win over them; a bad value is logged
    and ignored rather than stopping the program.
    """
    try:
        return options_from_env()
    except ConfigurationError as exc:
        LOGGER.warning("aiotrace: ignoring the environment: %s", exc)
        return {}


def _register_exit_flush() -> None:
    # Registered at the first instrument(): atexit runs handlers last-in
    # first-out, so a TracerProvider configured before us (as
    # opentelemetry-instrument does) is still open when we flush into it.
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(_flush_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)


class AiotraceInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # untyped base class
    """Instrument asyncio's primitives; see :func:`aiotrace.instrument` for the options."""

    _patches: PatchSet | None = None
    _pipeline: Pipeline | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """asyncio is part of the standard library: nothing to check."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        provider = kwargs.pop("tracer_provider", None)
        sink: Sink | None = kwargs.pop("sink", None)
        consumer: Consumer | None = kwargs.pop("consumer", None)
        options = Options.from_kwargs(**{**_environment_options(), **kwargs})
        if consumer is None:
            consumer = Building(sink if sink is not None else TracerProviderSink(provider))
        pipeline = Pipeline(consumer, RECORDER, options.flush_interval)
        RECORDER.configure(options)
        patches = PatchSet(build_patches(options))
        try:
            patches.apply()
            pipeline.start()
        except BaseException:
            from aiotrace.primitives import tasks

            RECORDER.disable_all()
            retire_all()
            tasks.retire_futures()
            patches.revert()
            raise
        type(self)._patches = patches
        type(self)._pipeline = pipeline
        _register_exit_flush()

    def _uninstrument(self, **kwargs: Any) -> None:
        patches, pipeline = type(self)._patches, type(self)._pipeline
        type(self)._patches = type(self)._pipeline = None
        from aiotrace.primitives import tasks

        tasks.report_pending()  # futures never resolved: reported, not forgotten
        RECORDER.disable_all()
        retire_all()
        tasks.retire_futures()
        try:
            if patches is not None:
                patches.revert()
        finally:
            if pipeline is not None:
                pipeline.shutdown(timeout=float(kwargs.get("timeout", 30.0)))

    @property
    def pipeline(self) -> Pipeline | None:
        """The running pipeline, while instrumented."""
        return type(self)._pipeline

    @property
    def patches(self) -> PatchSet | None:
        """The applied patches, while instrumented."""
        return type(self)._patches
