"""What a process pays to start traced: ``python -m benchmarks.startup [--reps 7]``.

Two costs that do not scale with what a program does, so that the other
benchmarks, which time operations, never see them:

* **a child process** of a traced program: under ``aiotrace run`` every
  Python child (``subprocess``, multiprocessing's spawn) is traced, with
  its diagnosis, once it imports asyncio, and ships to the run's
  collector. The spawner starts children one after another and times
  each: ``python -c pass`` (a tool that never imports asyncio) and a child
  that runs ``asyncio.run()`` once; it runs untraced and under ``aiotrace
  run``, interleaved, and each repetition's ratio is traced over
  untraced, per child.
* **importing the pytest plugin**: pytest imports every installed plugin, so
  every pytest run in an environment with pytest-aiotrace pays this, with
  ``--aiotrace`` or not. Timed as a fresh interpreter importing pytest and
  the plugin, against one importing pytest alone.

Prints milliseconds and the median ratio over the repetitions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from .interleaved import add_reps

SPAWNER = """
import subprocess, sys, time
count, code = int(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
for _ in range(count):
    subprocess.run([sys.executable, "-c", code], check=True)
print((time.perf_counter() - started) / count)
"""

CHILDREN = {
    "python -c pass": "pass",
    "a child that runs asyncio.run() once": (
        "import asyncio\nasync def main(): await asyncio.sleep(0)\nasyncio.run(main())"
    ),
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AIOTRACE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run: with compiled modules cached
    return env


def _time_child_run(traced: bool, children: int, script: str, code: str) -> float:
    """Seconds per ``python -c CODE`` child, started from the spawner run plain or traced."""
    command = [sys.executable, script, str(children), code]
    if traced:
        command = [sys.executable, "-m", "aiotrace", "run", "-q", "--no-trace-file", *command[1:]]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=_env())
    return float(result.stdout.split()[-1])


def _time_import(modules: str) -> float:
    """Seconds for a fresh interpreter to import ``modules`` and exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], check=True, env=_env())
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reps(parser, default=7)
    parser.add_argument("--children", type=int, default=10, help="children per repetition")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "spawner.py")
        with open(script, "w", encoding="utf-8") as fh:
            fh.write(SPAWNER)
        for warm in (False, True):  # compiled modules cached, as users have them
            for code in CHILDREN.values():
                _time_child_run(warm, 1, script, code)
        child: dict[str, dict[bool, list[float]]] = {k: {False: [], True: []} for k in CHILDREN}
        child_ratios: dict[str, list[float]] = {kind: [] for kind in CHILDREN}
        plugin: dict[bool, list[float]] = {False: [], True: []}
        plugin_ratios = []
        for _ in range(args.reps):
            for kind, code in CHILDREN.items():
                bare = _time_child_run(False, args.children, script, code)
                spawned = _time_child_run(True, args.children, script, code)
                child[kind][False].append(bare)
                child[kind][True].append(spawned)
                child_ratios[kind].append(spawned / bare)
            alone = _time_import("pytest")
            with_plugin = _time_import("pytest, aiotrace.pytest_plugin")
            plugin[False].append(alone)
            plugin[True].append(with_plugin)
            plugin_ratios.append(with_plugin / alone)

    def ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    print(f"{args.reps} interleaved repetitions, medians")
    for kind in CHILDREN:
        print(
            f"child process ({kind}): untraced {ms(child[kind][False]):.1f} ms, traced "
            f"{ms(child[kind][True]):.1f} ms, ratio {statistics.median(child_ratios[kind]):.2f}x"
        )
    print(
        f"python -c 'import pytest': {ms(plugin[False]):.1f} ms; with aiotrace.pytest_plugin "
        f"{ms(plugin[True]):.1f} ms, ratio {statistics.median(plugin_ratios):.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
