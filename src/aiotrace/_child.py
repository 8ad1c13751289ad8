"""Child processes of a traced program: traced into the same collector and trace.

Two ways a child comes about:

* a new interpreter (``subprocess``, multiprocessing's spawn and forkserver):
  ``_bootstrap/sitecustomize.py`` calls :func:`start`;
* a fork of an instrumented process (multiprocessing's default on Linux,
  ``os.fork``): the parent's patches are already there, and
  :func:`after_fork` (registered by the instrumentation) reconnects the pipeline.

Either way the child gets an ``aiotrace.process`` span, a child of the span
that was current where it was started (``TRACEPARENT``), under which its
tasks nest, and ships everything at exit, ``os._exit()`` included.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import os
import sys
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from aiotrace import _api, semconv
from aiotrace._context import AMBIENT

_state: dict[str, Any] = {}

FOLLOW_FORKS: list[bool] = [True]
"""False under ``--no-children``: a forked child records nothing and ships nothing."""
CHILD_DIAGNOSIS: list[Any] = [None]
"""The ``DiagnosisConfig`` a child process of this run watches with, if any: set by
``aiotrace run`` for its forks, and in a child it started, for the child's."""


def start(started_ns: int | None = None) -> None:
    """Instrument a child Python process (see ``_bootstrap``), started at ``started_ns``.

    The bootstrap calls this once the child imports asyncio: its process
    span begins when the process did all the same.
    """
    from aiotrace._session import ENV_COLLECTOR, ENV_DIAGNOSIS, ENV_OPTIONS, ENV_RESOURCE

    if _api.is_instrumented():
        return
    begin(
        os.environ[ENV_COLLECTOR],
        json.loads(os.environ.get(ENV_RESOURCE) or "{}"),
        json.loads(os.environ.get(ENV_OPTIONS) or "{}"),
        None,  # TRACEPARENT and TRACESTATE, from the environment
        semconv.SPAN_PROCESS,
        {semconv.ATTR_ARGV: list(sys.argv)},
        started_ns,
    )
    atexit.register(finish)
    _deliver_at_os_exit()
    diagnosis = os.environ.get(ENV_DIAGNOSIS)
    if diagnosis:
        from aiotrace.diagnosis import DiagnosisConfig

        with contextlib.suppress(Exception):  # the child runs on, undiagnosed
            CHILD_DIAGNOSIS[0] = DiagnosisConfig(**json.loads(diagnosis))
            _diagnose(f"child process {os.getpid()}: {_command_line()}")


def _command_line(limit: int = 80) -> str:
    """``python worker.py --queue jobs``: the script by its name, as labels show files."""
    from aiotrace._sites import short_path

    argv = sys.argv
    words = ["python", short_path(argv[0]), *argv[1:]] if argv and argv[0] else ["python"]
    line = " ".join(words)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _diagnose(process: str) -> None:
    """Watch this child as the run watches its own process (see ``DiagnosisConfig.for_children``).

    Findings become spans under this process's span, and so reach the run's
    report; none is printed as it happens, since a child's stderr is the
    program's to read (a parent may capture it). ``process`` says which
    process each finding is from. A fork's copies of its parent's loops are
    left out by ``pending_tasks()`` (see :func:`_forget_the_parents`).
    """
    from aiotrace.diagnosis import Diagnoser

    diagnoser = Diagnoser(
        CHILD_DIAGNOSIS[0],
        trace.set_span_in_context(_state["span"]),
        echo=_unprinted,
        process=process,
    )
    _state["diagnoser"] = diagnoser
    diagnoser.start()


def _unprinted(_text: str) -> None:
    """A child's findings are not printed as they happen: the run's report has them."""


def _deliver_at_os_exit() -> None:
    from aiotrace._session import EXIT_DELIVERY

    EXIT_DELIVERY.install(lambda _status: finish())


def begin(
    address: str,
    resource: dict[str, Any],
    options: dict[str, Any],
    traceparent: str | None,
    span_name: str,
    attributes: dict[str, Any],
    started_ns: int | None = None,
) -> None:
    """Trace this process into the collector at ``address``, under ``traceparent``.

    A span ``span_name`` covers the process (from ``started_ns``, else now)
    until :func:`finish`, and everything the process does nests under it.
    Used by child processes and by pytest-xdist workers.
    """
    from opentelemetry.sdk.resources import Resource

    from aiotrace._collector import Shipping
    from aiotrace._session import SIGTERM_DELIVERY, install_provider, parent_from_env

    shipping = Shipping(address, lazy=True)
    provider = install_provider(Resource(resource))
    _begin(shipping, provider, parent_from_env(traceparent), span_name, attributes, started_ns)
    _api.instrument(consumer=shipping, nestable=True, **options)
    SIGTERM_DELIVERY.install(lambda _signum: finish())  # Pool ends its workers by SIGTERM


def _begin(
    shipping: Any,
    provider: Any,
    parent: otel_context.Context,
    span_name: str = semconv.SPAN_PROCESS,
    attributes: dict[str, Any] | None = None,
    started_ns: int | None = None,
) -> None:
    from aiotrace._session import aiotrace_tracer

    span = aiotrace_tracer().start_span(
        span_name,
        context=parent,
        attributes={
            semconv.ATTR_PID: os.getpid(),
            semconv.ATTR_ARGV: list(sys.argv),
            **(attributes or {}),
        },
        start_time=started_ns,
    )
    token = otel_context.attach(trace.set_span_in_context(span))
    AMBIENT[0] = span  # for the process's other threads too
    _state.update(shipping=shipping, provider=provider, span=span, token=token)


def detach_quietly(token: object) -> None:
    """``otel_context.detach``, silent when called from another context.

    ``os._exit()`` called inside a task finishes the trace in that task's
    context, where the token attached at the start does not belong;
    OpenTelemetry's detach would log a traceback for it, to a program that
    is only exiting.
    """
    if isinstance(token, contextvars.Token):
        with contextlib.suppress(ValueError):
            token.var.reset(token)
        return
    with contextlib.suppress(Exception):
        otel_context.detach(token)  # type: ignore[arg-type]  # another runtime context's


def current_span() -> Any:
    """This process's span (``aiotrace.process``, ``pytest.worker``), while it runs."""
    return _state.get("span")


def finish() -> None:
    """At the child's exit: end its span, ship everything, disconnect.

    A process that did nothing traced (multiprocessing's resource tracker, a
    forkserver, a worker that never touched asyncio) never connected, and
    leaves without connecting: no empty process span, and no complaint if
    it outlives the collector.
    """
    from aiotrace._session import SIGTERM_DELIVERY

    with SIGTERM_DELIVERY.delivering():
        _finish()


def _finish() -> None:
    from aiotrace._recorder import RECORDER
    from aiotrace._session import producer_stats, summary_events
    from aiotrace.primitives.tasks import report_pending

    span = _state.pop("span", None)
    if span is None:
        return
    diagnoser = _state.pop("diagnoser", None)
    if diagnoser is not None:
        with contextlib.suppress(Exception):
            diagnoser.finish()  # at exit: the unfinished waits and holds as spans too
    with contextlib.suppress(Exception):
        report_pending()
    detach_quietly(_state.pop("token"))
    AMBIENT[0] = None
    shipping = _state.get("shipping")
    events = summary_events()
    if _api.is_instrumented():
        _api.flush(5.0)
    idle = (
        shipping is not None
        and not getattr(shipping, "connected", True)
        and not events
        and RECORDER.stats.operations == 0
    )
    if not idle:
        for name, attrs in events:
            span.add_event(name, attrs)
        span.end()
        if shipping is not None:
            shipping.send_stats(producer_stats())
    if _api.is_instrumented():
        from aiotrace._instrumentation import INSTRUMENTATION

        INSTRUMENTATION.uninstrument()
    provider = _state.get("provider")
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.shutdown()


def after_fork(consumer: Any) -> None:
    """In the child of a fork: our own connection, and a span for this process."""
    _forget_the_parents()  # whatever the sink: the parent ends its own spans
    reconnect = getattr(consumer, "reconnect", None)
    if reconnect is None:
        return  # an in-process sink (the user's TracerProvider): nothing to reconnect
    reconnect()
    if not FOLLOW_FORKS[0]:
        from aiotrace._recorder import RECORDER

        RECORDER.disable_all()  # the patches stay (inherited), on their cheapest path
        consumer.shutdown(0.0)  # never connected: closes without a word
        return
    _begin(consumer, None, otel_context.get_current())
    if CHILD_DIAGNOSIS[0] is not None:
        with contextlib.suppress(Exception):  # the child runs on, undiagnosed
            _diagnose(f"child process {os.getpid()}, forked from {os.getppid()}")
    atexit.register(finish)
    _deliver_at_os_exit()  # a plain os.fork() child leaves through os._exit() as a rule
    from aiotrace._session import SIGTERM_DELIVERY

    SIGTERM_DELIVERY.install(lambda _signum: finish())  # Pool ends its workers by SIGTERM
    # multiprocessing's forked workers leave through os._exit(), which skips
    # atexit; their finalizers still run. But a new multiprocessing.Process
    # clears the finalizers it inherited before it runs its after-fork hooks:
    # register the finalizer from such a hook too.
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        with contextlib.suppress(Exception):
            mp_util.Finalize(None, finish, exitpriority=-100)
            mp_util.register_after_fork(_MP_HOOK, _finalize_at_mp_exit)


def _forget_the_parents() -> None:
    """Leave the parent's pending tasks and futures, copied by the fork, to the parent.

    Their spans are the parent's to end: ended here too at exit, each would
    be a second span of the same id, ``pending``, and a future the parent
    resolves a false "future unresolved" leak of this process. The parent's
    loops are set aside (``_loops.INHERITED``): ``pending_tasks()``, which
    the watchdog and the exit reports go by, leaves their tasks out.
    """
    from aiotrace._context import TASK_SPANS
    from aiotrace._loops import inherit_loops
    from aiotrace.primitives.tasks import DIED, ENDED_RAISING, GIVEN_EXCEPTION, PENDING

    inherit_loops()
    TASK_SPANS.clear()
    PENDING.clear()
    DIED.clear()  # their failures are the parent's to report
    ENDED_RAISING.clear()
    GIVEN_EXCEPTION.clear()
    leaks = sys.modules.get("aiotrace._leaks")
    if leaks is not None:
        leaks.COLLECTED.clear()


class _Hook:
    """A weak-referenceable owner for multiprocessing's after-fork registry."""


_MP_HOOK = _Hook()


def _finalize_at_mp_exit(_: object) -> None:
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and "span" in _state:
        mp_util.Finalize(None, finish, exitpriority=-100)
