"""Instructions per operation, traced over bare: ``python -m benchmarks.instructions``.

The time ratios of ``benchmarks.run`` swing by 5-10% on a shared two-core
machine, which is as large as the hot-path costs we try to cut. This counts
instructions instead, under valgrind's callgrind, which gives the same count
for the same code whatever else the machine is doing. Each workload runs
twice per mode, at two sizes, and the difference divided by the difference
in operations is the cost of one operation, start-up and imports excluded.

Time does not pass under valgrind as it does outside (about fifty times
slower), so the traced modes raise ``min_wait`` and ``min_hold`` to 1000 s:
every operation stays below threshold, as in ``benchmarks.run``'s
``default`` mode. For the same reason the span pipeline drains only when
its buffer passes its high-water mark (50,000 records) and at the end, not
every ``flush_interval``: woken by the clock, it drained a number of times
that depended on how loaded the machine was, in batches of varying size,
and a task's cost varied by 0.02-0.13x of a bare task from run to run.
Outside valgrind a busy program fills the buffer within the interval
anyway. Modes:

  bare      not instrumented
  default   ``aiotrace.instrument()`` with what the workload traces in
            ``benchmarks.run`` (primitives only for the primitive workloads)
  shipped   ``aiotrace.instrument()`` with nothing turned off: task spans,
            and futures, whose patched ``loop.create_future`` every waiter's
            future passes
  checks    ``default`` plus the per-operation part of the diagnosis
            ``aiotrace run`` does by default: ownership tracking and
            lock-order checking. The watchdog thread is left out: it works
            per second, not per operation (20 ticks a second), and under
            valgrind, fifty times slower, it would tick fifty times as often
            per operation, more on a loaded machine. ``benchmarks.run``'s
            ``checks`` mode times it with the rest.

Counts to be compared are taken one at a time, never beside another run:
the pipeline's thread runs by the clock (it drains, and takes turns on the
GIL with the program, while the program goes on), so a run slowed by
another can count differently (0.09x of a task once, on 3.10).

Needs ``valgrind`` on the PATH. Usage::

    python -m benchmarks.instructions
    python -m benchmarks.instructions --workload "Semaphore(2), 10 tasks" --modes bare,default
    python -m benchmarks.instructions --workload "`await lock.acquire()`, `lock.release()`"

A ``--workload`` may also name one of ``benchmarks.uncontended``'s operations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from .uncontended import OPERATIONS, Operation
from .workloads import PRIMITIVES, WORKLOADS

if TYPE_CHECKING:
    from collections.abc import Sequence

MODES = ("bare", "default", "shipped", "checks")
SIZES = (2000, 6000)
"""Operations in the small and the large run (their difference is what is counted)."""
QUIET = 1000.0
"""Seconds: thresholds no operation reaches, however slow valgrind makes it."""

COUNTED: dict[str, tuple[Operation, dict[str, Any]]] = {
    **{name: (run, traced) for name, (run, _, traced) in WORKLOADS.items()},
    **{name: (operation, PRIMITIVES) for name, operation in OPERATIONS.items()},
}
"""``benchmarks.run``'s workloads, then ``benchmarks.uncontended``'s operations."""

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(mode: str, workload: str, n: int) -> None:
    """Run one workload ``n`` times in ``mode`` (inside valgrind)."""
    run, traced = COUNTED[workload]
    if mode != "bare":
        import aiotrace
        from aiotrace._pipeline import Discard

        options = dict(traced) if mode != "shipped" else {}
        aiotrace.instrument(
            consumer=Discard(),
            min_wait=QUIET,
            min_hold=QUIET,
            flush_interval=QUIET,
            **options,
        )
    diagnoser = None
    if mode == "checks":
        from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

        config = DiagnosisConfig(dump_signals=False, deadlocks=False, block_threshold=None)
        diagnoser = Diagnoser(config, None)
        diagnoser.start()
    asyncio.run(run(n))
    if diagnoser is not None:
        diagnoser.finish(at_exit=False)
    if mode != "bare":
        aiotrace.flush()
        aiotrace.uninstrument()


def count(mode: str, workload: str, n: int) -> int:
    """Instructions callgrind counted for one child run."""
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            mode,
            workload,
            str(n),
        ],
        capture_output=True,
        text=True,
        cwd=_ROOT,
        check=False,
        # A fixed hash seed: with a random one, dict and set layouts (and so
        # the start-up both sizes pay) differ from run to run by up to a few
        # hundred thousand instructions, 1-4% of the smaller workloads.
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        detail = proc.stderr[-2000:]
        raise RuntimeError(f"callgrind run failed ({mode}, {workload}, {n}):\n{detail}")
    return int(found.group(1))


def per_operation(mode: str, workload: str) -> float:
    """Instructions one operation costs in ``mode`` (start-up subtracted)."""
    small, large = (count(mode, workload, n) for n in SIZES)
    return (large - small) / (SIZES[1] - SIZES[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--workload", action="append", help="a workload name (repeatable)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        mode, workload, n = args.child
        child(mode, workload, int(n))
        return 0
    if shutil.which("valgrind") is None:
        print("benchmarks.instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown or "bare" not in modes:
        parser.error(f"--modes: choose from {', '.join(MODES)}, bare included")
    workloads = args.workload or list(WORKLOADS)  # the operations on request
    print(f"# instructions per operation (callgrind), Python {sys.version.split()[0]}")
    for workload in workloads:
        if workload not in COUNTED:
            parser.error(f"unknown workload {workload!r}; one of: {', '.join(COUNTED)}")
        bare = per_operation("bare", workload)
        cells = [f"bare {bare:,.0f}"]
        for mode in modes:
            if mode != "bare":
                cells.append(f"{mode} {per_operation(mode, workload) / bare:.3f}x")
        print(f"{workload:32} " + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
