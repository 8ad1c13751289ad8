"""A traced session: what ``aiotrace run`` and ``pytest --aiotrace`` share.

A session starts a collector (``_collector``), instruments this process to
ship to it, sets up an OpenTelemetry ``TracerProvider`` whose spans (the
program's own) join aiotrace's in the collector, opens the root span (a child
of ``TRACEPARENT`` if set), and arranges for child Python processes to be
traced into the same collector and the same trace. :meth:`TraceSession.finish`
closes it all in order and returns the :class:`~aiotrace.report.Report`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, NoReturn

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiotrace import _api, semconv
from aiotrace._child import CHILD_DIAGNOSIS, FOLLOW_FORKS, detach_quietly
from aiotrace._context import AMBIENT
from aiotrace._instrumentation import INSTRUMENTATION
from aiotrace._recorder import R_SDK, RECORDER
from aiotrace._sites import SITES, code_text, qualname, short_path
from aiotrace._version import __version__
from aiotrace.primitives._base import via_label_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import CodeType

    from aiotrace.diagnosis import Diagnoser, DiagnosisConfig, Finding
    from aiotrace.report import Report

BOOTSTRAP_DIR = os.path.join(os.path.dirname(__file__), "_bootstrap")
"""Holds the ``sitecustomize.py`` that traces child Python processes."""

ENV_COLLECTOR = "AIOTRACE_COLLECTOR"
ENV_OPTIONS = "AIOTRACE_CHILD_OPTIONS"
ENV_RESOURCE = "AIOTRACE_CHILD_RESOURCE"
ENV_DIAGNOSIS = "AIOTRACE_CHILD_DIAGNOSIS"


class ForwardingProcessor(SpanProcessor):
    """Sends the program's own SDK spans down aiotrace's pipeline, to the same sinks."""

    def on_end(self, span: ReadableSpan) -> None:
        if _api.is_instrumented():
            INSTRUMENTATION.forward_sdk((R_SDK, span))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def make_resource(default_service: str, override: str | None = None) -> Resource:
    """The resource: OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else our default.

    ``override`` (``--service-name``) wins over both, without touching the
    environment the program sees.
    """
    resource = Resource.create(
        {"telemetry.distro.name": "aiotrace", "telemetry.distro.version": __version__}
    )
    service = str(resource.attributes.get("service.name", ""))
    if override:
        resource = resource.merge(Resource({"service.name": override}))
    elif not service or service.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service}))
    return resource


def resource_json(resource: Resource) -> dict[str, Any]:
    """The resource's attributes as JSON-safe data."""
    out: dict[str, Any] = {}
    for key, value in resource.attributes.items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


OWN_PROVIDER: list[TracerProvider | None] = [None]
"""The provider aiotrace installed in this process, if it had to install one."""


def install_provider(resource: Resource) -> TracerProvider | None:
    """Route the program's spans to us: our provider, or our processor on theirs.

    Ours is installed as a default the program can still replace: a program
    (or a test suite's conftest) that sets its own provider later gets it,
    as it would untraced, and our processor on it.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.add_span_processor(ForwardingProcessor())  # never replace the user's provider
        return None
    # Before the provider, whose fork hook (opentelemetry-sdk 1.44+) submits to
    # a ThreadPoolExecutor in the child: fork hooks run in the order they were
    # registered, and this module's must free the lock submit() takes first,
    # or a forked child waits for ever.
    import concurrent.futures.thread  # noqa: F401

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(ForwardingProcessor())
    if not _install_default(provider):
        trace.set_tracer_provider(provider)
    OWN_PROVIDER[0] = provider
    return provider


def _install_default(provider: TracerProvider) -> bool:
    """Make ``provider`` the global one without using up ``set_tracer_provider``.

    OpenTelemetry lets a process set its provider once; had aiotrace done it,
    the program's own call would be refused ("Overriding of current
    TracerProvider is not allowed") and its exporters would get nothing: a
    changed program. So ours is set as the API's own lazy default is, and
    the program's later ``set_tracer_provider`` goes through, our processor
    added to the provider it sets. This relies on two private names of
    ``opentelemetry.trace``, unchanged since 1.0; without them, False, and
    the caller sets ours the public way.
    """
    original = getattr(trace, "_set_tracer_provider", None)
    if original is None or getattr(trace, "_TRACER_PROVIDER", provider) is not None:
        return False
    if not getattr(original, "aiotrace_wrapped", False):

        @functools.wraps(original)
        def _set_tracer_provider(tracer_provider: Any, log: bool) -> None:
            original(tracer_provider, log)
            chosen = getattr(trace, "_TRACER_PROVIDER", None)
            if (
                chosen is tracer_provider
                and isinstance(chosen, TracerProvider)
                and chosen is not OWN_PROVIDER[0]
            ):
                with contextlib.suppress(Exception):
                    chosen.add_span_processor(ForwardingProcessor())

        _set_tracer_provider.aiotrace_wrapped = True  # type: ignore[attr-defined]
        trace._set_tracer_provider = _set_tracer_provider
    trace._TRACER_PROVIDER = provider
    return True


def aiotrace_tracer() -> trace.Tracer:
    """The tracer of aiotrace's own spans (the run, a process, a test, a finding).

    From aiotrace's provider when it installed one: the program may have
    set its own since, and its exporters must not receive aiotrace's spans.
    """
    provider = OWN_PROVIDER[0]
    if provider is None:
        return trace.get_tracer(semconv.SCOPE_NAME, __version__)
    return provider.get_tracer(semconv.SCOPE_NAME, __version__)


def parent_from_env(traceparent: str | None = None) -> otel_context.Context:
    """The context ``traceparent`` (else ``TRACEPARENT``, ``TRACESTATE``) describes, or none."""
    carrier = {}
    if traceparent:
        carrier["traceparent"] = traceparent
    elif os.environ.get("TRACEPARENT"):
        carrier["traceparent"] = os.environ["TRACEPARENT"]
        if os.environ.get("TRACESTATE"):
            carrier["tracestate"] = os.environ["TRACESTATE"]
    return TraceContextTextMapPropagator().extract(carrier, context=otel_context.Context())


class SigtermDelivery:
    """Make SIGTERM and SIGHUP deliver the spans first, then kill the process as they would have.

    Their default action kills without any clean-up, so everything still
    buffered would be lost: a CI timeout, ``docker stop``, and
    ``multiprocessing.Pool`` ending its workers all send SIGTERM; a closed
    terminal or a dropped SSH session sends SIGHUP. Installed only where the
    signal has that default action (or aiotrace's handler, inherited through
    fork); a program's own handler is left alone (``nohup``'s ignoring
    SIGHUP too). The process still dies by the signal, with the same status.

    A signal that arrives while the spans are being delivered anyway (at a
    normal exit) waits for that delivery to end, instead of cutting it short.

    A delivery belongs to the process that installed it, as with
    :class:`ExitDelivery`: a fork that installs none of its own (one not
    followed, ``--no-children``) inherits the handler, but the signal there
    only kills, as it would untraced. Run there, the parent's delivery
    would end the parent's run from the child, through the parent's
    connection to the collector.
    """

    SIGNALS: Final = tuple(
        getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
    )

    def __init__(self) -> None:
        self._delivers: list[tuple[Callable[[int], object], int]] = []
        """(deliver, the process that installed it), innermost last."""
        self._depth = 0
        self._pending: int | None = None

    def install(self, deliver: Callable[[int], object]) -> None:
        """Deliver with ``deliver(signum)`` on SIGTERM or SIGHUP (main thread only, as Python
        requires).

        Installs nest: ``pytest --aiotrace`` under ``aiotrace run`` ends its
        running test's spans, then the run delivers them with the rest. The
        innermost delivers first.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        self._delivers.append((deliver, os.getpid()))
        self._depth, self._pending = 0, None
        for signum in self.SIGNALS:
            with contextlib.suppress(ValueError, OSError, TypeError):
                current = signal.getsignal(signum)
                if current is signal.SIG_DFL or current == self._handle:
                    signal.signal(signum, self._handle)

    def restore(self, deliver: Callable[[int], object]) -> None:
        """Take ``deliver`` back; with none left, the signals back to their default action,
        where aiotrace's handler is still there."""
        _take_back(self._delivers, deliver)
        if self._delivers or threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(signum) == self._handle:
                    signal.signal(signum, signal.SIG_DFL)

    @contextlib.contextmanager
    def delivering(self) -> Iterator[None]:
        """Around a delivery: a signal meanwhile takes effect only after it."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth and self._pending is not None:
                self._die(self._pending)

    def _handle(self, signum: int, frame: object) -> None:
        if self._depth:
            self._pending = signum
            return
        try:
            pid = os.getpid()
            with self.delivering():
                for deliver, owner in reversed(self._delivers):
                    if owner == pid:
                        with contextlib.suppress(Exception):  # dying anyway: nothing may stop that
                            deliver(signum)
        finally:
            self._die(signum)

    @staticmethod
    def _die(signum: int) -> None:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


SIGTERM_DELIVERY: Final = SigtermDelivery()
"""The process's one SIGTERM and SIGHUP handler (the run's, or a child process's)."""


class ExitDelivery:
    """Make ``os._exit()`` and the ``os.exec*`` calls deliver the spans first, then go on.

    ``os._exit`` skips atexit, ``finally`` blocks and the interpreter's
    shutdown: a program that leaves through it (a forking server's child, a
    supervisor giving up, a test runner's worker) would lose whatever it had
    not yet shipped, and ``aiotrace run`` would print no report at all. While
    a delivery is installed, ``os._exit`` runs it first, in the calling
    thread, then the real ``os._exit``; a timer ends the process the real
    way if the delivery takes longer than :attr:`TIMEOUT`, so that no
    delivery can keep alive a process that asked to die. Nothing else of
    ``os._exit`` changes: unflushed output stays unflushed, the status is
    the same.

    ``os.execv`` and ``os.execve`` (which every ``os.exec*`` function ends
    in) replace the process: its buffered spans, and under ``aiotrace run``
    the report, went with it, and the collector, orphaned, said the program
    had been killed. While a delivery is installed, an exec that can succeed
    (its file executable) delivers first, as ``os._exit`` does, without a
    timer: the process is to go on, as the new program. The new program is
    not traced once this process's run has ended: an environment the program
    copied from ``os.environ`` while traced loses what the run put there (see
    :func:`untraced_env`).

    A delivery belongs to the process that installed it: a fork inherits
    the patch, not the parent's delivery, until it installs its own.
    """

    TIMEOUT: Final = 30.0

    def __init__(self) -> None:
        self._delivers: list[tuple[Callable[[int], object], Callable[[], object] | None, int]] = []
        """(deliver, on_exec, the process that installed it), innermost last."""
        self._real: Callable[[int], NoReturn] = os._exit
        self._real_execv: Callable[..., NoReturn] = os.execv
        self._real_execve: Callable[..., NoReturn] = os.execve
        # One bound method each, compared by identity.
        self._patched = self._exit
        self._patched_execv = self._execv
        self._patched_execve = self._execve

    def install(
        self, deliver: Callable[[int], object], on_exec: Callable[[], object] | None = None
    ) -> None:
        """Deliver with ``deliver(status)`` when this process calls ``os._exit(status)``,
        and with ``on_exec()`` (else ``deliver(0)``) before it replaces itself by an exec.
        Installs nest, as :meth:`SigtermDelivery.install`'s."""
        self._delivers.append((deliver, on_exec, os.getpid()))
        if os._exit is not self._patched:
            self._real = os._exit
            os._exit = self._patched  # type: ignore[assignment]  # same signature
        if os.execv is not self._patched_execv:
            self._real_execv = os.execv
            os.execv = self._patched_execv
        if os.execve is not self._patched_execve:
            self._real_execve = os.execve
            os.execve = self._patched_execve  # type: ignore[assignment]  # same signature

    def restore(self, deliver: Callable[[int], object]) -> None:
        """Take ``deliver`` back; with none left, the real ``os._exit`` and exec calls back,
        where ours are still in place."""
        _take_back(self._delivers, deliver)
        if self._delivers:
            return
        if os._exit is self._patched:
            os._exit = self._real  # type: ignore[assignment]  # the saved original
        if os.execv is self._patched_execv:
            os.execv = self._real_execv
        if os.execve is self._patched_execve:
            os.execve = self._real_execve

    def real_exit(self, status: int) -> NoReturn:
        """``os._exit`` itself, for aiotrace's own last resorts."""
        self._real(status)

    def _exit(self, status: int, /) -> NoReturn:
        delivers = self._own()
        if delivers and isinstance(status, int):
            self._delivers.clear()  # once: the delivery itself may end in os._exit
            timer = threading.Timer(self.TIMEOUT, self._real, (status,))
            timer.daemon = True
            timer.start()
            for deliver, _ in delivers:
                with contextlib.suppress(BaseException):  # exiting anyway: nothing may stop that
                    deliver(status)
        self._real(status)

    def _own(self) -> list[tuple[Callable[[int], object], Callable[[], object] | None]]:
        """This process's deliveries, innermost first (a fork inherits its parent's list)."""
        pid = os.getpid()
        return [(d, on_exec) for d, on_exec, owner in reversed(self._delivers) if owner == pid]

    def _execv(self, path: Any, argv: Any, /) -> NoReturn:
        self._before_exec(path)
        self._real_execv(path, argv)

    def _execve(self, path: Any, argv: Any, env: Any, /) -> NoReturn:
        if self._before_exec(path):
            env = untraced_env(env)
        self._real_execve(path, argv, env)

    def _before_exec(self, path: Any) -> bool:
        """Deliver before an exec that can succeed; whether a delivery was made."""
        delivers = self._own()
        if not delivers:
            return False
        try:
            # os.execvp tries each directory of PATH in turn: only the one
            # that can run ends the trace. (A file descriptor: it can.)
            if not isinstance(path, int) and not os.access(path, os.X_OK):
                return False
        except Exception:  # a path exec itself rejects: it raises, as untraced
            return False
        self._delivers.clear()
        for deliver, on_exec in delivers:
            with contextlib.suppress(BaseException):  # the exec goes ahead whatever happens here
                if on_exec is not None:
                    on_exec()
                else:
                    deliver(0)
        return True


def _take_back(delivers: list[Any], deliver: Callable[..., object]) -> None:
    """Remove the latest entry of ``deliver`` (compared by ==: bound methods are new
    objects each time) from a delivery's list, if it is there."""
    for index in range(len(delivers) - 1, -1, -1):
        if delivers[index][0] == deliver:
            del delivers[index]
            return


def untraced_env(env: Any) -> Any:
    """``env`` without what a run put in ``os.environ`` to trace children, once the run has
    ended in this process (it is in ``os.environ`` no more): a child started with it would
    try to join a trace already closed."""
    try:
        if ENV_COLLECTOR in os.environ or ENV_COLLECTOR not in env:
            return env
        cleaned = {
            key: value
            for key, value in env.items()
            if key not in (ENV_COLLECTOR, ENV_OPTIONS, ENV_RESOURCE, ENV_DIAGNOSIS)
        }
        path = cleaned.get("PYTHONPATH")
        if isinstance(path, str) and path.split(os.pathsep)[0] == BOOTSTRAP_DIR:
            rest = path[len(BOOTSTRAP_DIR) + len(os.pathsep) :]
            if rest:
                cleaned["PYTHONPATH"] = rest
            else:
                del cleaned["PYTHONPATH"]
        return cleaned
    except Exception:  # a mapping of the program's own kind: as it is
        return env


EXIT_DELIVERY: Final = ExitDelivery()
"""The process's ``os._exit`` guard (the run's, or a child process's)."""


def summary_events() -> list[tuple[str, dict[str, Any]]]:
    """One event per primitive (by creation site) with totals, below-threshold included."""
    events = []
    min_wait_ms = RECORDER.min_wait_ns / 1e6
    min_hold_ms = RECORDER.min_hold_ns / 1e6
    for stats in list(RECORDER.sites):
        if stats.internal or not (stats.waits or stats.holds or stats.n):
            continue
        if stats.kind == semconv.KIND_FUTURE:
            continue  # futures are reported from their own spans
        label = SITES.resolve(stats.raw).label if stats.raw is not None else semconv.UNKNOWN_SITE
        attrs: dict[str, Any] = {
            semconv.ATTR_PRIMITIVE_KIND: stats.kind,
            semconv.ATTR_PRIMITIVE_NAME: stats.display_name(),
            semconv.ATTR_PRIMITIVE_SITE: label,
            semconv.ATTR_OPERATIONS: stats.n + stats.holds,
            semconv.ATTR_SUMMARY_WAITS: stats.waits,
            semconv.ATTR_SUMMARY_WAIT_MS: round(stats.wait_ns / 1e6, 3),
            semconv.ATTR_SUMMARY_MAX_WAIT_MS: round(stats.max_wait_ns / 1e6, 3),
            semconv.ATTR_SUMMARY_HOLDS: stats.holds,
            semconv.ATTR_SUMMARY_MAX_HOLD_MS: round(stats.max_hold_ns / 1e6, 3),
            semconv.ATTR_SUMMARY_MIN_WAIT_MS: min_wait_ms,
            semconv.ATTR_SUMMARY_MIN_HOLD_MS: min_hold_ms,
        }
        via = via_label_of(stats)
        if via is not None:
            attrs[semconv.ATTR_PRIMITIVE_VIA_SITE] = via
        if stats.capacity is not None:
            attrs[semconv.ATTR_SEMAPHORE_CAPACITY] = stats.capacity
        if stats.held_at:
            attrs.update(held_at_attributes(stats.held_at))
        events.append((semconv.EVENT_PRIMITIVE_SUMMARY, attrs))
    return events


def held_at_attributes(held_at: dict[tuple[CodeType, int], int]) -> dict[str, Any]:
    """A primitive's sampled holding lines (``SiteStats.held_at``) as summary attributes."""
    counts = dict(held_at)  # the watchdog's thread may be adding to it
    top = sorted(counts.items(), key=lambda item: -item[1])[:3]
    lines = []
    for (code, line), _ in top:
        where = f"{short_path(code.co_filename)}:{line} in {qualname(code)}"
        text = code_text(code.co_filename, line)
        lines.append(f"{where}: {text}" if text else where)
    return {
        semconv.ATTR_SUMMARY_HELD_AT: lines,
        semconv.ATTR_SUMMARY_HELD_AT_SAMPLES: [count for _, count in top],
        semconv.ATTR_SUMMARY_HELD_SAMPLES: sum(counts.values()),
    }


def producer_stats() -> dict[str, int]:
    """What this process knows of its own losses and counts, for the collector."""
    stats = _api.stats()
    return {
        "spans_dropped": stats.spans_dropped,
        "internal_errors": stats.internal_errors,
        "below_threshold": stats.below_threshold,
        "operations": stats.operations,
        "pressure_timeouts": stats.pressure_timeouts,
        "holders_unnamed": stats.holders_unnamed,
        "peak_rss_kb": peak_rss_kb(),
    }


def peak_rss_kb() -> int:
    """This process's peak resident memory, in KiB (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)  # macOS counts bytes


@dataclass
class SessionConfig:
    """Everything a session needs to know."""

    service_name: str
    """The default service.name (the program's name), if the environment sets none."""
    service_override: str | None = None
    """A service.name that wins over the environment's (``--service-name``)."""
    root_name: str = semconv.SPAN_RUN
    root_attributes: dict[str, Any] = field(default_factory=dict)
    trace_file: str | None = None
    otlp: dict[str, Any] | None = None
    console: bool = False
    jaeger_url: str = "http://localhost:16686"
    options: dict[str, Any] = field(default_factory=dict)
    trace_children: bool = True
    linger: float = 5.0
    traceparent: str | None = None
    """The outer trace to join; ``TRACEPARENT`` when None."""
    diagnosis: DiagnosisConfig | None = None
    """Deadlock, hang, leak, lock-order and loop-block checks; None for none."""
    html: str | None = None
    """Where the collector writes the HTML timeline; None for none."""


class TraceSession:
    """Start: collector, provider, root span, instrumentation. Finish: the report."""

    def __init__(
        self,
        config: SessionConfig,
        on_hang: Callable[[Finding], None] | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        """``on_hang`` and ``echo`` go to the diagnoser: what to do on a hang, and
        where urgent findings are shown as they are found (aiotrace's stderr
        by default)."""
        from aiotrace._collector import CollectorHandle, Shipping

        self.config = config
        self.resource = make_resource(config.service_name, config.service_override)
        self.collector = CollectorHandle(
            {
                "trace_file": config.trace_file,
                "otlp": config.otlp,
                "console": config.console,
                "html": config.html,
                "title": config.root_attributes.get(semconv.ATTR_PROGRAM) or config.service_name,
                "resource": resource_json(self.resource),
                "jaeger_url": config.jaeger_url,
                "linger": config.linger,
                "run_pid": os.getpid(),
            }
        )
        self.shipping = Shipping(self.collector.address)
        self.provider = install_provider(self.resource)
        self.root = aiotrace_tracer().start_span(
            config.root_name,
            context=parent_from_env(config.traceparent),
            attributes={semconv.ATTR_PID: os.getpid(), **config.root_attributes},
        )
        self._token = otel_context.attach(trace.set_span_in_context(self.root))
        AMBIENT[0] = self.root  # for the program's own threads too
        self._saved_env: dict[str, str | None] = {}
        FOLLOW_FORKS[0] = config.trace_children
        if config.trace_children and config.diagnosis is not None:
            CHILD_DIAGNOSIS[0] = config.diagnosis.for_children()
        if config.trace_children:
            self._export_env()
        _api.instrument(consumer=self.shipping, nestable=True, **config.options)
        self.started = time.perf_counter()
        self.diagnoser: Diagnoser | None = None
        if config.diagnosis is not None:
            from aiotrace.diagnosis import Diagnoser

            self.diagnoser = Diagnoser(
                config.diagnosis, trace.set_span_in_context(self.root), on_hang=on_hang, echo=echo
            )
            self.diagnoser.start()
        self.findings: list[Finding] = []
        self._report: Report | None = None
        self._finished = False

    def traceparent(self) -> str | None:
        """The root span as a W3C ``traceparent``: for processes that join this trace."""
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(self.root))
        return carrier.get("traceparent")

    def _export_env(self) -> None:
        carrier = {"traceparent": self.traceparent()}
        pythonpath = os.environ.get("PYTHONPATH")
        updates = {
            "TRACEPARENT": carrier.get("traceparent"),
            ENV_COLLECTOR: self.collector.address,
            ENV_OPTIONS: json.dumps(self.config.options),
            ENV_RESOURCE: json.dumps(resource_json(self.resource)),
            ENV_DIAGNOSIS: (
                json.dumps(asdict(CHILD_DIAGNOSIS[0])) if CHILD_DIAGNOSIS[0] is not None else None
            ),
            "PYTHONPATH": BOOTSTRAP_DIR + (os.pathsep + pythonpath if pythonpath else ""),
        }
        for key, value in updates.items():
            self._saved_env[key] = os.environ.get(key)
            if value is not None:
                os.environ[key] = value

    def _restore_env(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def signal_children(self, signum: int) -> None:
        """Send ``signum`` to the run's traced child processes that Ctrl-C would reach.

        A hung program is stopped as Ctrl-C would stop it, and the terminal
        sends Ctrl-C to the program's children too: without this, a child
        the program waits for (deadlocked, as a rule, when its parent hangs)
        would keep the program from stopping, and outlive the run.
        """
        self.collector.signal_children(signum)

    def finish(self, exit_code: int | None = None, timeout: float = 60.0) -> Report | None:
        """End the root span, deliver everything, stop the collector, return the report."""
        from aiotrace.primitives.tasks import report_pending
        from aiotrace.report import Report

        if self._finished:
            return self._report
        self._finished = True
        if self.diagnoser is not None:
            with contextlib.suppress(Exception):
                # At exit: the unfinished waits and holds as spans too, before
                # report_pending() ends the tasks they belong to.
                self.findings = self.diagnoser.finish()
        self._restore_env()
        FOLLOW_FORKS[0] = True
        CHILD_DIAGNOSIS[0] = None
        with contextlib.suppress(Exception):
            report_pending()
        root = self.root
        for name, attrs in summary_events():
            root.add_event(name, attrs)
        if exit_code is not None:
            root.set_attribute(semconv.ATTR_EXIT_CODE, exit_code)
        stats = producer_stats()
        root.set_attribute(semconv.ATTR_DROPPED, stats["spans_dropped"])
        root.set_attribute(semconv.ATTR_INTERNAL_ERRORS, stats["internal_errors"])
        root.set_attribute(semconv.ATTR_BELOW_THRESHOLD, stats["below_threshold"])
        root.set_attribute(semconv.ATTR_OPERATIONS, stats["operations"])
        detach_quietly(self._token)
        AMBIENT[0] = None
        root.end()
        self.shipping.send_stats(producer_stats())
        # Everything, nested instrumentations included: drains the pipeline
        # into the collector, then says goodbye.
        INSTRUMENTATION.uninstrument()
        if self.provider is not None:
            with contextlib.suppress(Exception):
                self.provider.shutdown()
        data = self.collector.finish(timeout)
        self._report = Report.from_json(data) if data is not None else None
        return self._report


__all__ = [
    "EXIT_DELIVERY",
    "SIGTERM_DELIVERY",
    "ExitDelivery",
    "SessionConfig",
    "SigtermDelivery",
    "TraceSession",
]
