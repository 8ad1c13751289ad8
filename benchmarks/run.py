"""Traced versus bare, in one process, interleaved, as ratios: ``python -m benchmarks.run``.

Each repetition runs every workload once per mode, in a fresh event loop,
alternating modes so that machine noise hits them alike; a mode's ratio is
the median over repetitions of (mode time / bare time of the same repetition).
Traced timings include delivering the spans (``aiotrace.flush()`` and the
span processor's flush) so work moved off the hot path is still paid for.

Modes:
  bare       not instrumented
  default    aiotrace.instrument() defaults: below-threshold operations are
             counted, not spanned (the hot path); spans built in this process
             as SDK spans (BatchSpanProcessor into a discarding exporter)
  run        the defaults as ``aiotrace run`` applies them: records encoded
             and shipped to a collector process, which builds the spans on
             another core (and writes nothing); the time ends when everything
             has been shipped
  checks     as ``run``, plus the diagnosis ``aiotrace run`` does by default:
             lock-order checking and the watchdog (deadlocks, hangs, blocks)
  run-full   as ``run`` with min_wait=0, min_hold=0: every contended wait and
             every hold becomes a span, built in the collector process
  otlp-full  as ``run-full``, and the collector exports them over OTLP/HTTP
             to ``benchmarks.receiver`` (its own process); the time ends when
             the receiver has counted every span the collector built
  full       min_wait=0, min_hold=0 in-process: every contended wait and
             every hold built as an SDK span (the path taken when you pass
             your own TracerProvider)
  otel-asyncio, viztracer (``--peers``; ``pip install -e '.[bench]'``)
             opentelemetry-instrumentation-asyncio, asked to trace the
             workloads' coroutines and futures, into the same discarding
             SDK exporter; viztracer with ``log_async=True``

Usage::

    python -m benchmarks.run                 # every workload, 9 repetitions
    python -m benchmarks.run --reps 15 --workload "contended lock, 10 tasks"
    python -m benchmarks.run --markdown      # the table for docs/performance.md
    python -m benchmarks.run --peers --modes bare,default,run,run-full,otlp-full
    python -m benchmarks.run --peers --markdown --delivery 1000000   # everything
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import aiotrace
from aiotrace._collector import CollectorHandle, Shipping
from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

from .interleaved import add_reps
from .workloads import PRIMITIVES, WORKLOADS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .workloads import Workload


class Discard(SpanExporter):
    """Counts spans and throws them away: measures aiotrace, not an exporter."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS


MODES: dict[str, dict[str, Any] | None] = {
    "bare": None,
    "default": {},
    "run": {"collector": True},
    "checks": {"collector": True, "diagnosis": True},
    "run-full": {"collector": True, "min_wait": 0, "min_hold": 0},
    "otlp-full": {"collector": True, "otlp": True, "min_wait": 0, "min_hold": 0},
    "full": {"min_wait": 0, "min_hold": 0},
    "otel-asyncio": {"peer": "otel-asyncio"},
    "viztracer": {"peer": "viztracer"},
}
PEERS = {"otel-asyncio": "opentelemetry.instrumentation.asyncio", "viztracer": "viztracer"}
"""The peers ``--peers`` adds, and the module each needs."""


class Receiver:
    """``benchmarks.receiver`` in its own process: an OTLP/HTTP endpoint that counts spans."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver"],
            stdin=subprocess.PIPE,  # closed when we exit, however we exit: it then stops
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.port = int(line.split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"

    def count(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/count", timeout=10) as r:
            return int(r.read())

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


_RECEIVER: list[Receiver] = []


def receiver() -> Receiver:
    """One receiver for the whole benchmark run (stopped at exit)."""
    if not _RECEIVER:
        _RECEIVER.append(Receiver())
        atexit.register(_RECEIVER[0].stop)
    return _RECEIVER[0]


def _peer(name: str) -> tuple[Any, Any]:
    """(start, stop) for a peer tool; ImportError when it is not installed (bench extra)."""
    if name == "otel-asyncio":
        from opentelemetry.instrumentation.asyncio import (  # type: ignore[import-not-found,unused-ignore]
            AsyncioInstrumentor,
        )

        provider = TracerProvider()
        exporter = Discard()
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=1 << 20, max_export_batch_size=4096)
        )
        instrumentor = AsyncioInstrumentor()

        def start() -> None:
            # Its spans are opt-in, by coroutine name and for futures: ask for the
            # workloads' own (it has no spans for locks, semaphores or events).
            os.environ["OTEL_PYTHON_ASYNCIO_COROUTINE_NAMES_TO_TRACE"] = "trivial"
            os.environ["OTEL_PYTHON_ASYNCIO_FUTURE_TRACE_ENABLED"] = "true"
            instrumentor.instrument(tracer_provider=provider)

        def stop() -> int:
            instrumentor.uninstrument()
            provider.force_flush()
            provider.shutdown()
            return exporter.count

        return start, stop
    from viztracer import VizTracer  # type: ignore[import-not-found,import-untyped,unused-ignore]

    tracer = VizTracer(log_async=True, verbose=0, tracer_entries=5_000_000)

    def vstart() -> None:
        tracer.start()

    def vstop() -> int:
        tracer.stop()
        tracer.clear()
        # Before 3.12 viztracer installs its profile function for threads started
        # later (threading.setprofile) when the tracer is made, and removes it only
        # when the tracer is freed: the next run_once (the timed run after the
        # warm-up in _forked) would refuse to start with it still there.
        threading.setprofile(None)
        sys.setprofile(None)
        return -1  # it records every call, not spans: no comparable count

    return vstart, vstop


def run_once(
    workload: Workload, n: int, options: dict[str, Any] | None, traced: dict[str, Any]
) -> tuple[float, int, int]:
    """Seconds per operation for one run, plus spans delivered and operations done.

    The time includes delivering every span: to the discarding exporter, to
    the collector, or (otlp-full) all the way to the receiver, which must
    have counted every span the collector built.
    """
    if sys.getprofile() is not None or threading.getprofile() is not None:
        raise RuntimeError(
            f"a profiler's hook is still installed ({sys.getprofile()!r}, "
            f"{threading.getprofile()!r}): it would be timed too"
        )
    exporter = Discard()
    provider = TracerProvider()
    collector = None
    diagnoser = None
    peer_stop = None
    counted_before = 0
    if options is not None and options.get("peer"):
        peer_start, peer_stop = _peer(options["peer"])
        peer_start()
    elif options is not None and options.get("collector"):
        config: dict[str, Any] = {"linger": 0}
        if options.get("otlp"):
            endpoint = receiver().endpoint
            counted_before = receiver().count()
            config["otlp"] = {
                "endpoint": endpoint,
                "protocol": "http/protobuf",
                "shown": endpoint,
                "probe": endpoint,
                "timeout": 30,
            }
        collector = CollectorHandle(config)
        thresholds = {k: v for k, v in options.items() if k in ("min_wait", "min_hold")}
        aiotrace.instrument(consumer=Shipping(collector.address), **traced, **thresholds)
        if options.get("diagnosis"):
            diagnoser = Diagnoser(DiagnosisConfig(dump_signals=False), None)
            diagnoser.start()
    elif options is not None:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=1 << 20, max_export_batch_size=4096)
        )
        aiotrace.instrument(provider, **traced, **options)
    gc.collect()
    spans = 0
    try:
        start = time.perf_counter()
        ops = asyncio.run(workload(n))
        report = None
        if peer_stop is not None:
            spans = peer_stop()
            peer_stop = None
        elif collector is not None:
            if diagnoser is not None:
                diagnoser.finish(at_exit=False)
            aiotrace.uninstrument()  # everything encoded and shipped
            if options is not None and options.get("otlp"):
                # ... and exported: the receiver has it all (the process exits later)
                report = collector.finish(reap=False)
        elif options is not None:
            aiotrace.flush()
            provider.force_flush()
            spans = exporter.count
        elapsed = time.perf_counter() - start
        if collector is not None:
            if report is None:
                report = collector.finish()
            else:
                collector.reap()
            stats = (report or {}).get("stats", {})
            spans = int(stats.get("spans_built", 0))
            if options is not None and options.get("otlp"):
                delivered = receiver().count() - counted_before
                if delivered != spans or stats.get("spans_exported") != spans:
                    raise RuntimeError(f"{spans} spans built, {delivered} reached the receiver")
    finally:
        if peer_stop is not None:
            peer_stop()
        if aiotrace.is_instrumented():
            aiotrace.uninstrument()
        provider.shutdown()
    return elapsed / ops, spans, ops


def _forked(
    workload: Workload, n: int, options: dict[str, Any] | None, traced: dict[str, Any]
) -> tuple[float, int, int]:
    """:func:`run_once` in a forked copy of this process, which then exits.

    viztracer keeps a reference to every task it saw with ``log_async`` (1.1.1:
    thousands per run, never released), and a heap that grows run after run
    makes every later garbage collection dearer, bare runs' included. The
    copy starts from this process's state and runs a short warm-up first,
    so that copying the pages it writes to is not timed (a few per cent of a
    run at most, which counts against viztracer, not for it).
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: report, and leave without running exit handlers
        code = 1
        try:
            run_once(workload, max(n // 10, 1), options, traced)
            with os.fdopen(write, "w") as out:
                json.dump(run_once(workload, n, options, traced), out)
            code = 0
        except BaseException:  # os._exit() would otherwise leave no word of why
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as got:
        data = got.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise RuntimeError(f"the forked {options} run failed (status {status})")
    # This process's pages were shared with the copy: the first write to each
    # faults once. A short bare run takes those faults before the next timed one.
    run_once(workload, max(n // 10, 1), None, traced)
    per_op, spans, ops = json.loads(data)
    return float(per_op), int(spans), int(ops)


def measure(
    workload: Workload, n: int, traced: dict[str, Any], modes: Sequence[str], reps: int
) -> dict[str, dict[str, float]]:
    """Interleaved repetitions of every mode; returns median per-op time and ratio per mode."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    spans: dict[str, int] = dict.fromkeys(modes, 0)
    run_once(workload, n // 10, None, traced)  # warm up imports and caches
    for _ in range(reps):
        this_rep: dict[str, float] = {}
        for mode in modes:
            if mode == "viztracer":
                per_op, exported, _ = _forked(workload, n, MODES[mode], traced)
            else:
                per_op, exported, _ = run_once(workload, n, MODES[mode], traced)
            this_rep[mode] = per_op
            times[mode].append(per_op)
            spans[mode] = exported
        for mode in modes:
            ratios[mode].append(this_rep[mode] / this_rep["bare"])
    return {
        mode: {
            "us_per_op": statistics.median(times[mode]) * 1e6,
            "ratio": statistics.median(ratios[mode]),
            "spans": spans[mode],
        }
        for mode in modes
    }


def _cell(workload: str, mode: str, result: dict[str, float]) -> str:
    ratio = f"{result['ratio']:.2f}×"  # noqa: RUF001  # the multiplication sign, on purpose
    if mode == "otel-asyncio" and not result["spans"] and WORKLOADS[workload][2] is PRIMITIVES:
        return f"{ratio} (traces no primitives)"
    if result["spans"] < 0:
        return f"{ratio} (records calls)"
    return f"{ratio} ({int(result['spans'])} spans)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    add_reps(parser, default=9)
    parser.add_argument("--workload", action="append", help="only these workloads")
    parser.add_argument("--modes", default="bare,default,run,checks,run-full,otlp-full,full")
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run opentelemetry-instrumentation-asyncio and viztracer "
        "(pip install -e '.[bench]')",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--delivery",
        type=int,
        default=0,
        metavar="SPANS",
        help="then run benchmarks.delivery with this many spans (e.g. 1000000)",
    )
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if modes[0] != "bare":
        modes.insert(0, "bare")
    if args.peers:
        for peer, module in PEERS.items():
            # Looked for, not imported: making a VizTracer installs its profile
            # function on this thread, which every later run would then pay.
            if importlib.util.find_spec(module) is None:
                parser.error(f"{peer} is not installed: pip install -e '.[bench]'")
            if peer not in modes:
                modes.append(peer)
    chosen = args.workload or list(WORKLOADS)
    print(
        f"# aiotrace {aiotrace.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, {args.reps} interleaved repetitions, median ratios",
        file=sys.stderr,
    )
    rows = []
    for name in chosen:
        workload, n, traced = WORKLOADS[name]
        result = measure(workload, int(n * args.scale), traced, modes, args.reps)
        rows.append((name, result))
        cells = "  ".join(
            f"{m} {result[m]['us_per_op']:.2f}us x{result[m]['ratio']:.2f}" for m in modes
        )
        print(f"{name:<32} {cells}", file=sys.stderr)
    if args.markdown:
        header = "| workload | bare µs/op | " + " | ".join(f"{m} (ratio)" for m in modes[1:]) + " |"
        print(header)
        print("|" + "---|" * (2 + len(modes) - 1))
        for name, result in rows:
            cells = " | ".join(_cell(name, m, result[m]) for m in modes[1:])
            print(f"| {name} | {result['bare']['us_per_op']:.2f} | {cells} |")
    if args.delivery:
        from .delivery import main as delivery

        print()
        return delivery(["--spans", str(args.delivery), *(["--markdown"] if args.markdown else [])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
