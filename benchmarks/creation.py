"""What creating a primitive costs traced: ``python -m benchmarks.creation [--reps 7]``.

The other benchmarks make their primitives once and time operations on
them. A program that makes a lock, an event or a future per request pays
the creation every time: aiotrace names each where it is created (a walk
past its own and asyncio's frames, the creation site's counters, an
identity object), and for one a library creates, it also walks up to the
program's own line that led there (``aiotrace.primitive.via.site``).

Each workload makes ``--count`` primitives in a loop, from the program's
own code and from an installed library's (a module written to a
``site-packages`` directory in a temporary folder, called through
``--depth`` of its own frames, as a request goes through a client
library). Runs alternate bare and traced (``aiotrace.instrument()`` with
its defaults, records encoded and then dropped, as ``benchmarks.instructions``
does) in one process; each repetition's ratio is traced over bare, and the
median is printed. A future is created and resolved (it is a span: the
resolution is part of its cost); the others are only created.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import os
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from .interleaved import add_reps, times, traced_over_bare

if TYPE_CHECKING:
    from collections.abc import Callable


def make(kind: str, count: int, depth: int) -> None:
    """The creation loop: run from this file (the program's code), and written out as
    an installed library's module and run from there."""
    if depth:
        return make(kind, count, depth - 1)
    if kind == "future":
        loop = asyncio.get_running_loop()
        for _ in range(count):
            loop.create_future().set_result(None)
    else:
        factory = getattr(asyncio, kind)
        for _ in range(count):
            factory()
    return None


KINDS = ("Lock", "Event", "Semaphore", "future")


def _time(maker: Callable[[str, int, int], None], kind: str, count: int, depth: int) -> float:
    """Seconds per primitive, inside a running loop (futures need one)."""

    async def run() -> float:
        started = time.perf_counter()
        maker(kind, count, depth)
        return (time.perf_counter() - started) / count

    return asyncio.run(run())


def measure(reps: int, count: int, depth: int) -> list[tuple[str, str, float, float, float]]:
    """Rows of (kind, whose code, bare µs, traced µs, median ratio)."""
    with tempfile.TemporaryDirectory() as tmp:
        package = os.path.join(tmp, "site-packages")
        os.makedirs(package)
        with open(os.path.join(package, "creation_lib.py"), "w", encoding="utf-8") as fh:
            # The same function, as an installed library's file.
            fh.write("import asyncio\n\n\n" + inspect.getsource(make))
        sys.path.insert(0, package)
        try:
            library: Any = importlib.import_module("creation_lib")
            makers = {"the program's": make, "a library's": library.make}
            rows = []
            for kind in KINDS:
                for whose, maker in makers.items():
                    bare, traced, ratio = traced_over_bare(
                        reps, functools.partial(_time, maker, kind, count, depth)
                    )
                    rows.append((kind, whose, bare * 1e6, traced * 1e6, ratio))
            return rows
        finally:
            sys.path.remove(package)
            sys.modules.pop("creation_lib", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reps(parser, default=7)
    parser.add_argument("--count", type=int, default=20_000, help="primitives per run")
    parser.add_argument("--depth", type=int, default=5, help="frames of the caller's own code")
    args = parser.parse_args(argv)
    print(f"Python {sys.version.split()[0]}, {args.count} per run, {args.depth} frames deep")
    print("| created | by | bare µs | traced µs | traced / bare |")
    print("|---|---|---|---|---|")
    for kind, whose, bare, traced, ratio in measure(args.reps, args.count, args.depth):
        name = "loop.create_future().set_result()" if kind == "future" else f"asyncio.{kind}()"
        print(f"| {name} | {whose} code | {bare:.2f} | {traced:.2f} | {times(ratio)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
