"""Run CPython's own asyncio test suites with and without aiotrace, and compare.

``python -m aiotrace.selftest`` runs each module of ``test.test_asyncio`` twice,
each run in a fresh interpreter: once untraced, once with aiotrace
instrumented at thresholds of zero (every wait and hold becomes a span)
through a real SDK ``TracerProvider`` and ``BatchSpanProcessor``. It prints
per-module results and exits non-zero if any module's outcome differs: a test
that passes untraced must pass traced, and vice versa. The traced run also
fails if aiotrace recorded an internal error or built no spans at all.
Runs go one per CPU at a time (``--jobs``).

Run it on every installed Python, e.g. with pyenv::

    for v in 3.10 3.11 3.12 3.13; do
        "$(pyenv prefix $v)/bin/python" -m aiotrace.selftest
    done

(aiotrace and its dependencies must be importable by that interpreter; see
``docs/transparency.md``.)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pkgutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

DEFAULT_MODULES = (
    "test_locks",
    "test_queues",
    "test_pep492",
    "test_futures",
    "test_futures2",
    "test_tasks",
    "test_taskgroups",
    "test_timeouts",
    "test_waitfor",
)
"""Modules run by default; those a Python version lacks are skipped.

They exercise the primitives aiotrace patches: a traced run of one that
builds no span at all means aiotrace was not there, and fails. ``--all``
adds every other module of ``test.test_asyncio`` (streams, subprocesses,
SSL, servers, runners, ...), where some build no span (a protocol's unit
tests never run a loop) and that is no failure.
"""


ALSO_PATCHED = ("test.test_contextlib_async",)
"""Suites outside ``test.test_asyncio`` of what aiotrace patches too, run by ``--all``:
``@asynccontextmanager``'s ``__aenter__`` and ``__aexit__`` (ownership, under diagnosis)."""


def all_modules() -> list[str]:
    """Every test module of this Python's ``test.test_asyncio``, the default ones first,
    then :data:`ALSO_PATCHED`."""
    try:
        spec = importlib.util.find_spec("test.test_asyncio")
    except ModuleNotFoundError:  # no ``test`` package at all (see docs/transparency.md)
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return list(DEFAULT_MODULES)
    found = sorted(
        info.name
        for info in pkgutil.iter_modules(spec.submodule_search_locations)
        if info.name.startswith("test_") and info.name not in DEFAULT_MODULES
    )
    return [*DEFAULT_MODULES, *found, *ALSO_PATCHED]


@dataclass
class ModuleResult:
    """Outcome of one module in one run."""

    module: str
    run: int = 0
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    spans: int = 0
    internal_errors: int = 0
    findings: int = 0
    """With ``--checks``: how many findings the diagnosis made (a suite's deliberate
    deadlocks, locks it leaves held, ...): shown, not a failure."""
    error: str | None = None
    skipped_module: str | None = None
    """Why the whole module skipped itself on import (``Windows only``), if it did."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed


class _Result(unittest.TextTestResult):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed_ids: list[str] = []

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self.failed_ids.append(test.id())

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        self.failed_ids.append(test.id())

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self.failed_ids.append(test.id())

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_ids.append(subtest.id())


def _child(module: str, traced: bool, out: str, checks: bool = False) -> int:
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # A shell starts a background job (``tools/selftest-all &``) with
        # Ctrl-C ignored, and Python then keeps it so. The suites assume
        # Python's own handler: test_runners' interrupt tests would loop,
        # untraced as traced, until memory ran out.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    result = ModuleResult(module)
    exporter_count = [0]
    if traced:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        import aiotrace

        class Counting(SpanExporter):
            def export(self, spans: Sequence[Any]) -> SpanExportResult:
                exporter_count[0] += len(spans)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Counting(), max_queue_size=1 << 20))
        aiotrace.instrument(provider, min_wait=0, min_hold=0, internal_futures=True)
        diagnoser = None
        if checks:
            from aiotrace.diagnosis import Diagnoser, DiagnosisConfig

            diagnoser = Diagnoser(DiagnosisConfig(dump_signals=False), None)
            diagnoser.start()
    started = time.perf_counter()
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(_qualified(module))
        runner = unittest.TextTestRunner(
            stream=sys.stderr, verbosity=0, resultclass=_Result, buffer=True
        )
        outcome: Any = runner.run(suite)
        result.run = outcome.testsRun
        result.failed = sorted(set(outcome.failed_ids))
        result.skipped = len(outcome.skipped)
    except unittest.SkipTest as exc:  # not for this platform
        result.skipped_module = str(exc)
    except Exception as exc:  # an import error is a result too
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    if traced:
        import aiotrace

        if diagnoser is not None:
            diagnoser.finish(at_exit=False)
            result.findings = len(diagnoser.findings)
        aiotrace.flush()
        provider.force_flush()
        stats = aiotrace.stats()
        result.internal_errors = stats.internal_errors
        result.spans = exporter_count[0]
        aiotrace.uninstrument()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result.__dict__, fh)
    return 0


def _qualified(module: str) -> str:
    """``test_locks`` is ``test.test_asyncio``'s; a dotted name is taken as it is."""
    return module if "." in module else f"test.test_asyncio.{module}"


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(_qualified(module)) is not None
    except ModuleNotFoundError:
        return False


def run_module(
    module: str, traced: bool, timeout: float = 900.0, checks: bool = False
) -> ModuleResult:
    """Run one module in a fresh interpreter and return its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "aiotrace.selftest", "--child", module, "--out", out]
        if traced:
            cmd.append("--traced")
            if checks:
                cmd.append("--checks")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return ModuleResult(module, error=f"timed out after {timeout:.0f}s")
        if not os.path.exists(out):
            tail = (proc.stderr or "").strip().splitlines()[-5:]
            return ModuleResult(
                module, error=f"crashed (exit {proc.returncode}): {' | '.join(tail)}"
            )
        with open(out, encoding="utf-8") as fh:
            return ModuleResult(**json.load(fh))


def _run_all(
    modules: Sequence[str], jobs: int, checks: bool = False
) -> Iterator[tuple[str, ModuleResult | None, ModuleResult | None]]:
    """Each module's untraced and traced results, in order, ``jobs`` interpreters at a time.

    Each run is a fresh interpreter, mostly waiting on its tests' timers: running
    several at once costs none of them its outcome (CPython's own test runner
    runs these modules in parallel too) and the whole in a fraction of the time.
    """
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        runs = {
            (module, traced): pool.submit(run_module, module, traced, checks=checks)
            for module in modules
            if _available(module)
            for traced in (False, True)
        }
        for module in modules:
            if (module, False) not in runs:
                yield module, None, None
            else:
                yield module, runs[module, False].result(), runs[module, True].result()


def compare(
    modules: Sequence[str], verbose: bool = True, jobs: int = 1, checks: bool = False
) -> bool:
    """Run every module untraced and traced; print a table; True if all outcomes match.

    ``checks``: traced as ``aiotrace run`` traces by default, the diagnosis on
    too (ownership and lock order on every acquisition, the watchdog thread,
    deadlock and hang detection); its findings are counted, not failures.
    """
    all_same = True
    version = ".".join(map(str, sys.version_info[:3]))
    if verbose:
        how = "traced with the diagnosis" if checks else "traced"
        print(f"aiotrace selftest on Python {version}: CPython asyncio suites, untraced vs {how}")
        findings = f" {'findings':>8}" if checks else ""
        print(
            f"{'module':<16} {'tests':>6} {'untraced':>12} {'traced':>12} {'spans':>8}"
            f"{findings}  verdict"
        )
    for module, bare, traced in _run_all(modules, jobs, checks):
        if bare is None or traced is None:
            if verbose:
                print(f"{module:<16} {'-':>6} {'not in this Python':>26}")
            continue
        if bare.skipped_module is not None:
            if verbose:
                print(f"{module:<16} {'-':>6} {'skipped: ' + bare.skipped_module:>26}")
            continue
        same = (
            bare.error is None
            and traced.error is None
            and bare.run == traced.run
            and bare.failed == traced.failed
            and traced.internal_errors == 0
            and (traced.spans > 0 or module not in DEFAULT_MODULES)
        )
        all_same &= same
        if verbose:

            def cell(r: ModuleResult) -> str:
                if r.error:
                    return "error"
                return f"{len(r.failed)} fail" if r.failed else f"ok {r.seconds:.1f}s"

            verdict = "same" if same else "DIFFERENT"
            found = f" {traced.findings:>8}" if checks else ""
            print(
                f"{module:<16} {bare.run:>6} {cell(bare):>12} {cell(traced):>12} "
                f"{traced.spans:>8}{found}  {verdict}"
            )
            if not same:
                for label, r in (("untraced", bare), ("traced", traced)):
                    if r.error:
                        print(f"    {label}: {r.error}")
                    for test_id in r.failed:
                        print(f"    {label} failed: {test_id}")
                if traced.internal_errors:
                    print(f"    traced: {traced.internal_errors} internal aiotrace errors")
    if verbose:
        print("all outcomes identical" if all_same else "OUTCOMES DIFFER")
    return all_same


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aiotrace.selftest``."""
    parser = argparse.ArgumentParser(
        prog="python -m aiotrace.selftest",
        description="Run CPython's asyncio test suites untraced and traced; compare outcomes.",
    )
    parser.add_argument("modules", nargs="*", help=f"default: {' '.join(DEFAULT_MODULES)}")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every module of test.test_asyncio this Python has (a few minutes)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="interpreters to run at once (default: one per CPU, %(default)s here)",
    )
    parser.add_argument(
        "--checks",
        action="store_true",
        help="trace as `aiotrace run` does by default: with the diagnosis on",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.traced, args.out, args.checks)
    if args.all and args.modules:
        parser.error("give modules or --all, not both")
    modules = all_modules() if args.all else args.modules or DEFAULT_MODULES
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return 0 if compare(modules, jobs=args.jobs, checks=args.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
