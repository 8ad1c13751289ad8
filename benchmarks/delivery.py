"""Nothing lost at volume: ``python -m benchmarks.delivery [--spans 1000000]``.

Runs ``benchmarks/million.py`` under ``aiotrace run`` with every wait and hold
spanned, exporting over OTLP/HTTP to ``benchmarks.receiver`` (its own
process), and checks that every span the collector built reached the
receiver. Prints the spans, the time, the throughput, the peak memory of the
traced process and of the collector, and the memory one buffered,
not-yet-exported operation costs (measured separately with tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def delivery(spans: int) -> dict[str, Any]:
    """Run it; return the figures."""
    from benchmarks.run import Receiver

    receiver = Receiver()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = os.path.join(tmp, "r.json")
            started = time.perf_counter()
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "aiotrace",
                    "run",
                    "--quiet",
                    "--no-trace-file",
                    "--min-wait=0",
                    "--min-hold=0",
                    "--no-tasks",
                    "--no-diagnosis",
                    f"--otlp={receiver.endpoint}",
                    "--protocol=http/protobuf",
                    f"--report-json={report_path}",
                    os.path.join(HERE, "million.py"),
                    str(spans),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.perf_counter() - started
            if result.returncode != 0:
                raise RuntimeError(result.stderr)
            with open(report_path, encoding="utf-8") as fh:
                stats = json.load(fh)["stats"]
        received = receiver.count()
    finally:
        receiver.stop()
    return {
        "spans_built": stats["spans_built"],
        "spans_exported": stats.get("spans_exported", 0),
        "spans_dropped": stats["spans_dropped"],
        "received": received,
        "seconds": round(elapsed, 1),
        "spans_per_second": round(received / elapsed),
        "program_peak_rss_mb": round(stats.get("peak_rss_kb", 0) / 1024, 1),
        "collector_peak_rss_mb": round(stats.get("collector_peak_rss_kb", 0) / 1024, 1),
    }


def buffered_bytes_per_operation(workload: str = "lock", operations: int = 100_000) -> float:
    """tracemalloc's view of records waiting in the buffer, per spanned operation.

    ``workload`` is ``lock`` (ten tasks handing a lock around), ``semaphore``
    (ten through a Semaphore(2)) or ``event`` (one setter waking ten waiters).
    """
    import asyncio
    import gc

    import aiotrace
    from aiotrace._pipeline import Discard
    from aiotrace._recorder import RECORDER
    from benchmarks.workloads import contended_lock, event_fan_out, semaphore_2_of_10

    run = {"lock": contended_lock, "semaphore": semaphore_2_of_10, "event": event_fan_out}[workload]
    # Records never reach the consumer: the pipeline is paused below.
    aiotrace.instrument(consumer=Discard(), tasks=False, futures=False, min_wait=0, min_hold=0)
    from aiotrace._instrumentation import INSTRUMENTATION

    pipeline = INSTRUMENTATION.pipeline
    assert pipeline is not None
    pipeline.pause()  # nothing drains: every record stays buffered
    try:
        asyncio.run(run(1000))  # warm every cache first
        RECORDER.buffer.clear()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(run(operations))
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        records = len(RECORDER.buffer)
    finally:
        RECORDER.buffer.clear()
        pipeline.resume()
        aiotrace.uninstrument()
    return (after - before) / records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.delivery", description=__doc__)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    figures = delivery(args.spans)
    for workload in ("lock", "semaphore", "event"):
        key = f"bytes_per_buffered_record_{workload}"
        figures[key] = round(buffered_bytes_per_operation(workload))
    if args.markdown:
        print("| delivery figure | value |\n|---|---|")
    for key, value in figures.items():
        print(f"| {key} | {value} |" if args.markdown else f"{key:28} {value}")
    complete = figures["received"] == figures["spans_built"] and not figures["spans_dropped"]
    print("delivery:", "complete" if complete else "INCOMPLETE")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
