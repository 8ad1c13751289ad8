"""The instrumentation: owns the patches and the pipeline; idempotent.

``instrument()`` applies every patch or none (a failure half-way rolls back),
and ``uninstrument()`` reverts them in reverse order, leaving ``vars(cls)`` of
every asyncio class as it found it, then delivers what was recorded.

``aiotrace.instrument()``, ``aiotrace run``, ``pytest --aiotrace`` and every
child process use this directly. ``AiotraceInstrumentor``, the
``opentelemetry-instrumentation`` face of it, lives in its own module:
importing ``opentelemetry.instrumentation`` takes 40-50 ms, which every child
process of a traced program, and every pytest run with the plugin installed,
would otherwise pay for nothing.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, ClassVar, Final

from aiotrace._env import options_from_env
from aiotrace._patching import Patch, PatchSet
from aiotrace._pipeline import Building, Consumer, Pipeline, Sink
from aiotrace._recorder import LOGGER, RECORDER, Options, Stats
from aiotrace.exceptions import ConfigurationError
from aiotrace.primitives._base import HOLDERS, live_mark, retire_all, retire_since

if TYPE_CHECKING:
    from collections.abc import Callable


def build_patches(options: Options) -> list[Patch]:
    """The patches ``options`` asks for, in application order."""
    from aiotrace.primitives import barriers, events, locks, queues, tasks
    from aiotrace.primitives._timeouts import timeout_patches

    families = set(options.primitives)
    patches: list[Patch] = []
    # Condition waits re-acquire their Lock: the lock family serves conditions too.
    by_family = {
        "lock": locks.lock_patches,
        "semaphore": locks.semaphore_patches,
        "event": events.event_patches,
        "condition": events.condition_patches,
        "barrier": barriers.barrier_patches,
        "queue": queues.queue_patches,
    }
    for family, make in by_family.items():  # in application order
        if family in families:
            patches += make()
    if options.tasks:
        patches += tasks.task_patches()
    if options.futures:
        patches += tasks.future_patches()
    if families or options.tasks or options.futures:
        patches += timeout_patches()
    return patches


def _stop_recording(report_pending: bool = False) -> None:
    """Stop recording and let go of what was being tracked, before the patches go.

    Each step on its own: a bug in one is counted (``Recorder.fail``) and
    the next still runs, so that ``uninstrument()`` always restores asyncio
    and stops the pipeline, whatever went wrong in the bookkeeping.
    """
    from aiotrace.primitives import tasks

    steps: list[Callable[[], object]] = [
        RECORDER.disable_all,
        retire_all,
        tasks.retire_futures,
        HOLDERS.forget,
    ]
    if report_pending:  # futures never resolved: reported, not forgotten
        steps.insert(0, tasks.report_pending)
    for step in steps:
        try:
            step()
        except Exception as exc:
            RECORDER.fail("uninstrument", exc)


_exit_registered = False


def _flush_at_exit() -> None:
    """Deliver what was recorded when the interpreter exits while instrumented."""
    pipeline = Instrumentation._pipeline
    if pipeline is not None:
        try:
            from aiotrace.primitives import tasks

            tasks.report_pending()
            pipeline.flush(timeout=10.0)
        except Exception as exc:  # exiting: report, never raise
            RECORDER.fail("pipeline", exc)
        RECORDER.exit_flushed()


def _after_fork_in_child() -> None:
    pipeline = Instrumentation._pipeline
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


_COUNTERS: Final = ("n", "spanned", "waits", "holds", "wait_ns", "max_wait_ns", "max_hold_ns")


def _site_counters(site: Any) -> tuple[int, ...]:
    return tuple(getattr(site, name) for name in _COUNTERS)


def _set_site_counters(site: Any, counters: tuple[int, ...]) -> None:
    for name, value in zip(_COUNTERS, counters, strict=True):
        setattr(site, name, value)


def _merge_counts(outer: Stats, inner: Stats, inner_sites: dict[int, tuple[int, ...]]) -> None:
    counted = ("operations", "spans_built", "spans_dropped", "internal_errors", "holders_unnamed")
    for name in counted:
        setattr(outer, name, getattr(outer, name) + getattr(inner, name))
    outer.below_threshold += inner.below_threshold
    for site in RECORDER.sites:
        counters = inner_sites.get(id(site))
        if counters is None:
            continue
        for name, value in zip(_COUNTERS, counters, strict=True):
            if name.startswith("max_"):
                setattr(site, name, max(getattr(site, name), value))
            else:
                setattr(site, name, getattr(site, name) + value)


def _futures_live() -> bool:
    from aiotrace.primitives import tasks

    return bool(tasks._FUTURE_LIVE[0])


def _set_futures_live(value: bool) -> None:
    from aiotrace.primitives import tasks

    tasks._FUTURE_LIVE[0] = value


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


@dataclass
class _Outer:
    """An instrumentation set aside while a nested one runs (see :meth:`push`)."""

    patches: PatchSet | None
    pipeline: Pipeline | None
    options: Options
    stats: Stats
    sites: list[tuple[Any, tuple[int, ...]]]
    live: int
    futures_live: bool
    started: int
    merge: bool = False
    nestable: bool = False


class Instrumentation:
    """Instrument asyncio's primitives; see :func:`aiotrace.instrument` for the options.

    The state is the class's: there is one instrumentation per process.
    """

    _active = False
    _patches: PatchSet | None = None
    _pipeline: Pipeline | None = None
    _nestable = False
    _stack: ClassVar[list[_Outer]] = []
    _deferred: ClassVar[list[tuple[Any, ...]]] = []

    @property
    def active(self) -> bool:
        """Whether instrumented, whichever way in (API, session, ``opentelemetry-instrument``)."""
        return type(self)._active

    def instrument(self, **kwargs: Any) -> None:
        """Instrument; a second call warns and does nothing (as any instrumentor's)."""
        if type(self)._active:
            LOGGER.warning("aiotrace: Attempting to instrument while already instrumented")
            return
        self.start(**kwargs)

    def uninstrument(self, **kwargs: Any) -> None:
        """Uninstrument; when not instrumented, warn and do nothing."""
        if not type(self)._active:
            LOGGER.warning("aiotrace: Attempting to uninstrument while already uninstrumented")
            return
        self.stop(**kwargs)

    def start(self, **kwargs: Any) -> None:
        """Instrument, unchecked (``AiotraceInstrumentor`` checks, as ``BaseInstrumentor``)."""
        self._instrument(**kwargs)
        type(self)._active = True

    def stop(self, **kwargs: Any) -> None:
        """Uninstrument, unchecked."""
        self._uninstrument(**kwargs)
        type(self)._active = False

    def _instrument(self, **kwargs: Any) -> None:
        type(self)._nestable = bool(kwargs.pop("nestable", False))
        provider = kwargs.pop("tracer_provider", None)
        sink: Sink | None = kwargs.pop("sink", None)
        consumer: Consumer | None = kwargs.pop("consumer", None)
        encoder = kwargs.pop("encoder", None)
        taps = kwargs.pop("taps", ())
        options = Options.from_kwargs(**{**_environment_options(), **kwargs})
        if consumer is None:
            from aiotrace.sinks import TracerProviderSink  # the SDK, imported if used

            consumer = Building(sink if sink is not None else TracerProviderSink(provider))
        pipeline = Pipeline(consumer, RECORDER, options.flush_interval, encoder, taps)
        RECORDER.configure(options)
        patches = PatchSet(build_patches(options))
        try:
            patches.apply()
            pipeline.start()
        except BaseException:
            _stop_recording()
            patches.revert()
            raise
        type(self)._patches = patches
        type(self)._pipeline = pipeline
        _register_exit_flush()

    def _uninstrument(self, **kwargs: Any) -> None:
        while type(self)._stack:
            self.pop()
        type(self)._nestable = False
        patches, pipeline = type(self)._patches, type(self)._pipeline
        type(self)._patches = type(self)._pipeline = None
        _stop_recording(report_pending=True)
        try:
            if patches is not None:
                patches.revert()
        finally:
            if pipeline is not None:
                pipeline.shutdown(timeout=float(kwargs.get("timeout", 30.0)))

    # -- nesting -----------------------------------------------------------
    @property
    def nestable(self) -> bool:
        """Whether an ``instrument()`` now would nest (a session owns this instrumentation)."""
        return bool(type(self)._active and type(self)._nestable)

    @property
    def depth(self) -> int:
        """How many nested instrumentations are running."""
        return len(type(self)._stack)

    def push(self, merge_counts: bool = False, **kwargs: Any) -> None:
        """Instrument inside a session's instrumentation (``pytest --aiotrace``, ``aiotrace run``).

        A test that calls ``aiotrace.instrument()`` (or ``capture_spans()``)
        gets exactly what it asked for, its own options, patches and
        destination, until its ``uninstrument()``; the session's patches are
        set aside meanwhile and its pipeline paused, then both come back.
        With ``merge_counts`` the operations counted meanwhile are added to
        the session's totals (the pytest fixture, which traces for the
        session too); otherwise they are the nested instrumentation's alone.
        """
        cls = type(self)
        outer = cls._pipeline
        if outer is not None:
            outer.pause()  # everything recorded so far goes to the session first
        saved = _Outer(
            patches=cls._patches,
            pipeline=outer,
            options=RECORDER.options,
            stats=RECORDER.stats,
            sites=[(site, _site_counters(site)) for site in RECORDER.sites],
            live=live_mark(),
            futures_live=_futures_live(),
            started=perf_counter_ns(),
            merge=merge_counts,
            nestable=cls._nestable,
        )
        if saved.patches is not None:
            saved.patches.revert()
        cls._patches = cls._pipeline = None
        try:
            self._instrument(**kwargs)
        except BaseException:
            cls._stack.append(saved)
            self._restore()
            raise
        cls._nestable = saved.nestable
        cls._stack.append(saved)

    def forward_sdk(self, record: tuple[Any, ...]) -> None:
        """A span of the session's own provider: to the session's pipeline, not a nested one."""
        if type(self)._stack:
            type(self)._deferred.append(record)  # delivered when the session resumes
        else:
            RECORDER.emit(record)

    def pop(self) -> None:
        """End the innermost nested instrumentation; the session's comes back."""
        cls = type(self)
        from aiotrace.primitives import tasks

        saved = cls._stack[-1]
        patches, pipeline = cls._patches, cls._pipeline
        tasks.report_pending(since=saved.started)
        RECORDER.disable_all()
        retire_since(saved.live)
        try:
            if patches is not None:
                patches.revert()
        finally:
            if pipeline is not None:
                pipeline.shutdown()
            self._restore()

    def _restore(self) -> None:
        cls = type(self)
        saved = cls._stack.pop()
        inner_stats = RECORDER.stats
        inner_sites = {id(site): _site_counters(site) for site in RECORDER.sites}
        RECORDER.configure(saved.options)
        RECORDER.stats = saved.stats
        for site, counters in saved.sites:
            _set_site_counters(site, counters)
        if saved.merge:
            _merge_counts(saved.stats, inner_stats, inner_sites)
        _set_futures_live(saved.futures_live)
        if saved.patches is not None:
            saved.patches.apply()
        cls._patches, cls._pipeline = saved.patches, saved.pipeline
        cls._nestable = saved.nestable
        if not cls._stack:
            deferred, cls._deferred[:] = list(cls._deferred), []
            for record in deferred:
                RECORDER.emit(record)
        if saved.pipeline is not None:
            saved.pipeline.resume()

    @property
    def pipeline(self) -> Pipeline | None:
        """The running pipeline, while instrumented."""
        return type(self)._pipeline

    @property
    def patches(self) -> PatchSet | None:
        """The applied patches, while instrumented."""
        return type(self)._patches


INSTRUMENTATION: Final = Instrumentation()
"""The process's instrumentation."""
