"""The ``aiotrace`` command: ``run`` a program traced, ``report`` or ``send`` a saved trace.

``aiotrace run script.py args`` behaves like ``python script.py args``: the
same ``sys.argv``, ``__main__``, ``sys.path[0]``, output, traceback and exit
status. Around the program it starts a collector, traces everything, and at
the end prints a report on stderr (stdout stays the program's) and the path
of the trace file. Every option can also be set by an ``AIOTRACE_*``
variable; the standard ``OTEL_*`` variables are honoured.

Usage errors exit with status 2 and one line on stderr; everything else exits
with the program's own status.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import contextlib
import functools
import importlib.machinery
import importlib.util
import io
import json
import linecache
import os
import pkgutil
import runpy
import shlex
import signal
import sys
import threading
import time
import types
from typing import TYPE_CHECKING, Any, NoReturn

from aiotrace import _env
from aiotrace._stderr import STDERR
from aiotrace._version import __version__
from aiotrace.exceptions import (
    AiotraceError,
    ConfigurationError,
    EndpointError,
    TraceFileError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from aiotrace.diagnosis import DiagnosisConfig, Finding
    from aiotrace.report import Report

EXIT_USAGE = 2
EXIT_FINDINGS = 3
"""``--check``: the program exited 0, but aiotrace found a problem."""
EXIT_HANG = 124
"""``--hang-timeout``: the program hung and was stopped (as ``timeout`` exits)."""
DEFAULT_JAEGER = "http://localhost:16686"
DEFAULT_ENDPOINTS = {
    "grpc": "http://localhost:4317",
    "http/protobuf": "http://localhost:4318/v1/traces",
}


class UsageError(AiotraceError):
    """Bad input: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a pointer to --help), exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------


def _env_flag(name: str) -> bool:
    try:
        return _env.flag(name)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("cannot be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``aiotrace`` argument parser."""
    parser = _Parser(
        prog="aiotrace",
        description="See which asyncio task held which lock, who waited, who woke whom.",
    )
    parser.add_argument("--version", action="version", version=f"aiotrace {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run a Python program traced (like python script.py / python -m module)",
        description=(
            "Run a program traced, like `python script.py` or `python -m module`. The report "
            "goes to stderr; the trace is written to an OTLP JSON file and, with --otlp, "
            "exported to Jaeger or any OTLP collector. Each option has an AIOTRACE_* variable."
        ),
        usage="aiotrace run [options] (script.py | -m module | -c code) [args ...]",
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, as python -m does")
    run.add_argument(
        "-c", dest="code", metavar="CODE", help="run a program given as a string, as python -c does"
    )
    out = run.add_argument_group("where the trace goes")
    out.add_argument(
        "--trace-file",
        metavar="PATH",
        help="OTLP JSON trace file, or 'none' (AIOTRACE_TRACE_FILE; default: "
        "aiotrace-<program>-<time>.json in the current directory)",
    )
    out.add_argument(
        "--no-trace-file", action="store_true", help="write no trace file (AIOTRACE_NO_TRACE_FILE)"
    )
    out.add_argument(
        "--otlp",
        nargs="?",
        const="",
        metavar="ENDPOINT",
        help="export over OTLP, to ENDPOINT or to OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else "
        "localhost:4317 (gRPC) / :4318 (HTTP) (AIOTRACE_OTLP)",
    )
    out.add_argument(
        "--protocol",
        choices=("grpc", "http/protobuf"),
        help="OTLP transport (AIOTRACE_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL; "
        "default grpc)",
    )
    out.add_argument(
        "--jaeger-url",
        metavar="URL",
        help=f"Jaeger UI to link traces to (AIOTRACE_JAEGER_URL; default {DEFAULT_JAEGER})",
    )
    out.add_argument(
        "--service-name",
        metavar="NAME",
        help="service.name (AIOTRACE_SERVICE_NAME, then OTEL_SERVICE_NAME; default: the program)",
    )
    out.add_argument(
        "--html",
        metavar="PATH",
        help="also write a self-contained HTML timeline: a lane per task, its waits and holds "
        "(AIOTRACE_HTML)",
    )
    out.add_argument("--quiet", "-q", action="store_true", help="no report (AIOTRACE_QUIET)")
    out.add_argument(
        "--report-json", metavar="PATH", help="also write the report as JSON (AIOTRACE_REPORT_JSON)"
    )
    what = run.add_argument_group("what is traced")
    what.add_argument(
        "--min-wait",
        type=_seconds,
        metavar="SECONDS",
        help="shortest wait that becomes a span (AIOTRACE_MIN_WAIT; default 0.001)",
    )
    what.add_argument(
        "--min-hold",
        type=_seconds,
        metavar="SECONDS",
        help="shortest hold that becomes a span (AIOTRACE_MIN_HOLD; default 0.001)",
    )
    what.add_argument("--no-tasks", action="store_true", help="no task spans (AIOTRACE_NO_TASKS)")
    what.add_argument(
        "--no-futures", action="store_true", help="no future spans (AIOTRACE_NO_FUTURES)"
    )
    what.add_argument(
        "--internal",
        action="store_true",
        help="also trace asyncio's own futures, tasks and primitives (AIOTRACE_INTERNAL)",
    )
    what.add_argument(
        "--no-children",
        action="store_true",
        help="do not trace child Python processes (AIOTRACE_NO_CHILDREN)",
    )

    diagnosis = run.add_argument_group("diagnosis (findings lead the report)")
    diagnosis.add_argument(
        "--hang-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="declare a hang past this time, or as soon as no task can make progress: dump "
        f"every task's wait and stack, stop the program, exit {EXIT_HANG} (AIOTRACE_HANG_TIMEOUT)",
    )
    diagnosis.add_argument(
        "--check",
        action="store_true",
        help=f"exit {EXIT_FINDINGS} if there is any finding and the program exited 0 "
        "(AIOTRACE_CHECK)",
    )
    diagnosis.add_argument(
        "--block-threshold",
        type=_seconds,
        metavar="SECONDS",
        help="report callbacks that block the event loop longer than this; 0: do not watch "
        "(AIOTRACE_BLOCK_THRESHOLD; default 0.1)",
    )
    diagnosis.add_argument(
        "--no-lock-order",
        action="store_true",
        help="do not check the order locks are taken in (AIOTRACE_NO_LOCK_ORDER)",
    )
    diagnosis.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="no deadlock, hang, leak, lock-order or loop-block checks (AIOTRACE_NO_DIAGNOSIS)",
    )

    report = commands.add_parser(
        "report",
        help="print the report of a saved trace file",
        description="Print the report of an OTLP JSON trace file (aiotrace's, or any collector's).",
    )
    report.add_argument("trace_file", metavar="TRACE_FILE")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--html", metavar="PATH", help="also write the HTML timeline of the trace")

    send = commands.add_parser(
        "send",
        help="export a saved trace file to an OTLP collector",
        description="Replay a saved trace file to Jaeger or another OTLP collector.",
    )
    send.add_argument("trace_file", metavar="TRACE_FILE")
    send.add_argument(
        "--otlp",
        metavar="ENDPOINT",
        help="where to send (default: OTEL_* variables, else localhost)",
    )
    send.add_argument("--protocol", choices=("grpc", "http/protobuf"))
    return parser


def _looks_like_endpoint(arg: str) -> bool:
    """A URL, or ``host:port`` that names no file."""
    if "://" in arg:
        return True
    host, colon, port = arg.rpartition(":")
    return bool(colon and host and port.isdigit() and "/" not in host) and not os.path.exists(arg)


def split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Options before the program (ours) and the program's own arguments.

    ``aiotrace run --min-hold 0 script.py --verbose``: ``script.py --verbose``
    is the program's. Ours end before the first positional argument (the
    script), or after ``-m MOD`` or ``-c CODE``.
    """
    takes_value = {
        "--trace-file",
        "--protocol",
        "--jaeger-url",
        "--service-name",
        "--report-json",
        "--html",
        "--min-wait",
        "--min-hold",
        "--hang-timeout",
        "--block-threshold",
    }
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            return argv[:index], argv[index + 1 :]
        if arg in ("-m", "-c"):
            return argv[: index + 2], argv[index + 2 :]
        if arg.startswith(("-m", "-c")) and len(arg) > 2:  # -mpackage.module, -c'code'
            return argv[: index + 1], argv[index + 1 :]
        if arg == "--otlp":
            # an optional value: take it if it looks like a URL, or like the
            # host:port a gRPC user may type
            if index + 1 < len(argv) and _looks_like_endpoint(argv[index + 1]):
                index += 2
            else:
                index += 1
            continue
        if arg in takes_value:
            index += 2
            continue
        if arg.startswith("-"):
            index += 1
            continue
        return argv[:index], argv[index:]
    return argv, []


# ---------------------------------------------------------------------------
# aiotrace run
# ---------------------------------------------------------------------------


KNOWN_EXPORTERS = frozenset({"otlp", "console", "none"})


def traces_exporters() -> set[str]:
    """``OTEL_TRACES_EXPORTER``'s values; ones aiotrace cannot honour get a one-line warning."""
    exporters = {
        e.strip().lower()
        for e in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if e.strip()
    }
    unknown = sorted(exporters - KNOWN_EXPORTERS)
    if unknown:
        sys.stderr.write(
            f"aiotrace: OTEL_TRACES_EXPORTER={','.join(unknown)} is not supported "
            "(otlp, console, none are); ignored\n"
        )
    return exporters & KNOWN_EXPORTERS


def _otlp_settings(
    args: argparse.Namespace, exporters: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any] | None:
    """Whether and where to export over OTLP, from flags, AIOTRACE_* and OTEL_* variables.

    ``exporters`` is what ``OTEL_TRACES_EXPORTER`` asks for: ``otlp`` turns
    export on with no flag, ``none`` turns it off unless a flag insists.
    """
    from aiotrace.sinks import check_endpoint

    flag = args.otlp
    if flag is None and os.environ.get("AIOTRACE_OTLP") is not None:
        value = os.environ["AIOTRACE_OTLP"].strip()
        if value.lower() in _env.TRUE:
            flag = ""
        elif value.lower() not in _env.FALSE:
            flag = value
    protocol = (
        args.protocol
        or os.environ.get("AIOTRACE_OTLP_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    )
    if protocol not in DEFAULT_ENDPOINTS:
        raise UsageError(f"unknown OTLP protocol {protocol!r}; valid: grpc, http/protobuf")
    env_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if flag is None:
        if "none" in exporters or ("otlp" not in exporters and not (env_endpoint or base_endpoint)):
            return None
        flag = ""
    if flag:
        # ``host:port``, as gRPC tools (and our own --help) write it: plain
        # http, as the SDK's gRPC exporter takes it. The OTEL_* variables
        # keep the spec's rule (a scheme), checked below.
        endpoint = f"http://{flag}" if _looks_like_endpoint(flag) and "://" not in flag else flag
    elif env_endpoint:
        endpoint = env_endpoint
    elif base_endpoint:
        endpoint = base_endpoint
        if protocol == "http/protobuf":
            endpoint = base_endpoint.rstrip("/") + "/v1/traces"
    else:
        endpoint = DEFAULT_ENDPOINTS[protocol]
    try:
        check_endpoint(endpoint)
    except EndpointError as exc:
        raise UsageError(str(exc)) from None
    if protocol == "http/protobuf" and flag and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    timeout = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TIMEOUT"
    )
    return {
        "endpoint": endpoint,
        "protocol": protocol,
        "shown": f"{endpoint} ({protocol})",
        "probe": endpoint,
        "timeout": float(timeout) if timeout else 10.0,
    }


def _program(args: argparse.Namespace, program: list[str]) -> tuple[str, str, list[str]]:
    """(kind, target, argv) of the program to run; usage errors for a missing one."""
    if args.code is not None:  # (-m and -c each end our options: there is never both)
        return "command", args.code, ["-c", *program]
    if args.module:
        module = args.module
        # Looked up as python -m will run it: from the current directory
        # first (the console script's own sys.path[0] is its bin directory).
        saved_path = sys.path[:]
        sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise UsageError(f"cannot run module {module!r}: {exc}") from None
        finally:
            sys.path[:] = saved_path
        if spec is None:
            raise UsageError(f"no module named {module!r}")
        return "module", module, [module, *program]
    if not program:
        raise UsageError("nothing to run: give a script or -m module (see aiotrace run --help)")
    script, rest = program[0], program[1:]
    if not os.path.exists(script):
        raise UsageError(f"can't open file {script!r}: no such file or directory")
    if os.path.isdir(script) and not os.path.exists(os.path.join(script, "__main__.py")):
        raise UsageError(f"can't find '__main__' module in {script!r}")
    return "script", script, [script, *rest]


def _label(kind: str, target: str) -> str:
    """The program's short name: the service's, and the default trace file's."""
    if kind == "module":
        return target
    if kind == "command":
        return "python-c"
    return os.path.splitext(os.path.basename(target))[0]


def _program_attribute(kind: str, target: str) -> str:
    """``aiotrace.program``: ``app.py``, ``-m pkg.mod``, or ``-c`` and the code's first line."""
    if kind == "module":
        return f"-m {target}"
    if kind == "command":
        lines = target.strip().splitlines() or [""]
        cut = len(lines) > 1 or len(lines[0]) > 60
        return f"-c {lines[0][:60]}" + ("..." if cut else "")
    return os.path.basename(target)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """What to trace: the AIOTRACE_* variables, then the flags over them."""
    try:
        options = _env.options_from_env()
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None
    options["flush_interval"] = 0.1
    if args.min_wait is not None:
        options["min_wait"] = args.min_wait
    if args.min_hold is not None:
        options["min_hold"] = args.min_hold
    if args.no_tasks:
        options["tasks"] = False
    if args.no_futures:
        options["futures"] = False
    if args.internal:
        options.update(internal_futures=True, internal_tasks=True, internal_primitives=True)
    return options


def _diagnosis(args: argparse.Namespace) -> DiagnosisConfig | None:
    """The checks asked for, from flags and AIOTRACE_* variables."""
    from aiotrace.diagnosis import DiagnosisConfig

    if args.no_diagnosis or _env_flag("AIOTRACE_NO_DIAGNOSIS"):
        return None
    hang = args.hang_timeout
    if hang is None:
        hang = _env_seconds("AIOTRACE_HANG_TIMEOUT")
    block = args.block_threshold
    if block is None:
        block = _env_seconds("AIOTRACE_BLOCK_THRESHOLD")
    return DiagnosisConfig(
        hang_timeout=hang if hang else None,
        block_threshold=0.1 if block is None else (block or None),
        lock_order=not (args.no_lock_order or _env_flag("AIOTRACE_NO_LOCK_ORDER")),
    )


def _output_path(path: str | None, what: str) -> str | None:
    """Where an output goes, fixed before the program runs (it may change directory).

    A usage error if its directory does not exist: said at once, not after
    the program has run.
    """
    if not path:
        return None
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError(f"cannot write {what}: no directory {os.path.dirname(path)!r}")
    return path


def _env_seconds(name: str) -> float | None:
    try:
        return _env.seconds(name)
    except ConfigurationError as exc:
        raise UsageError(str(exc)) from None


def _trace_file(args: argparse.Namespace, label: str) -> str | None:
    if args.no_trace_file or _env_flag("AIOTRACE_NO_TRACE_FILE"):
        return None
    path = args.trace_file or os.environ.get("AIOTRACE_TRACE_FILE")
    if path is not None and path.lower() == "none":  # as pytest's --aiotrace-trace-file
        return None
    if not path:
        from aiotrace._otlp import new_trace_file

        return new_trace_file(os.getcwd(), label)
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise UsageError(f"cannot write the trace file: no directory {directory!r}")
    return path


def _trim(tb: TracebackType | None) -> TracebackType | None:
    """Drop aiotrace's frames from the top of a traceback, as python shows it.

    runpy's stay: python shows them too, for ``-m`` and for zip apps, which
    run through the same function (``_run_module_as_main``).
    """
    ours = os.path.dirname(__file__)
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    return tb


def _print_uncaught(exc: BaseException) -> None:
    """Print an uncaught exception as python would, through ``sys.excepthook``."""
    # The hook prints the exception's own __traceback__ when it has one, not
    # the one passed: trim that.
    exc.__traceback__ = _trim(exc.__traceback__)
    sys.excepthook(type(exc), exc, exc.__traceback__)


def _exit_status(code: object) -> int:
    """What ``sys.exit(code)`` makes the process exit with, printing a message as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    with contextlib.suppress(Exception):
        sys.stderr.write(f"{code}\n")
    return 1


def _fresh_main() -> types.ModuleType:
    """A new, empty ``__main__`` for the program, in place of aiotrace's own.

    Under ``python -m aiotrace`` (or the console script) ``__main__`` is
    aiotrace's launcher module: the program must not find its globals in
    its own namespace.
    """
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, __annotations__={})  # as python's, 3.10-3.13
    sys.modules["__main__"] = main  # the program's from now on, as under python
    return main


def _run_script(target: str) -> None:
    """Run a file, a directory or a zip app as ``python target`` does.

    runpy.run_path would do, but it puts ``target`` in ``sys.argv[0]`` and
    ``__file__`` as given, where python makes ``__file__`` (and so every
    traceback) absolute and leaves ``argv[0]`` alone; and ``sys.path[0]``
    is the script's real directory, symbolic links resolved.
    """
    path = target if os.path.isabs(target) else os.path.join(os.getcwd(), target)
    # A directory or a zip file (a .pyz app) with a __main__.py: what python
    # asks too, whether an importer takes the path. Then it runs that
    # __main__ module as ``python -m __main__`` would, sys.argv left alone.
    if pkgutil.get_importer(path) is not None:
        sys.path[0] = path
        _fresh_main()
        runpy._run_module_as_main("__main__", alter_argv=False)  # type: ignore[attr-defined]
        return
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    with io.open_code(path) as fh:
        source = fh.read()
    code = compile(source, path, "exec", dont_inherit=True)  # not our __future__ imports
    main = _fresh_main()
    main.__dict__.update(
        __file__=path,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", path),
        __spec__=None,
        __package__=None,
    )
    exec(code, main.__dict__)


def _run_command(code: str) -> None:
    """Run a program given as a string, as ``python -c code`` does: named ``<string>`` in
    tracebacks, the current directory first on ``sys.path`` (as ``''``)."""
    sys.path[0] = ""
    from aiotrace._sites import register_source

    register_source("<string>", code)  # its lines name its primitives, on every version
    register = getattr(linecache, "_register_code", None)
    if sys.version_info >= (3, 13) and register is not None:
        register("<string>", code, "<string>")  # 3.13's tracebacks show -c's lines, as here
    compiled = compile(code, "<string>", "exec", dont_inherit=True)  # not our __future__ imports
    main = _fresh_main()
    main.__dict__.update(__loader__=importlib.machinery.BuiltinImporter, __spec__=None)
    exec(compiled, main.__dict__)


def _run_module(target: str) -> None:
    """Run a module as ``python -m target`` does (the same runpy function, so the
    same traceback frames), in a ``__main__`` of its own."""
    sys.path[0] = os.getcwd()
    _fresh_main()
    runpy._run_module_as_main(target, alter_argv=True)  # type: ignore[attr-defined]


def _run_program(
    kind: str, target: str, argv: list[str], stopped: Callable[[], bool] = lambda: False
) -> tuple[int, bool]:
    """Run it as python would; (exit status, interrupted by Ctrl-C).

    ``stopped()`` true means aiotrace itself interrupted the program (a
    hang): the KeyboardInterrupt that stopped it is ours, not printed.
    """
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = argv
    exit_handlers = _ExitHandlers()
    try:
        exit_handlers.start()
        if kind == "module":
            _run_module(target)
        elif kind == "command":
            _run_command(target)
        else:
            _run_script(target)
        return 0, False
    except SystemExit as exc:
        return _exit_status(exc.code), False
    except KeyboardInterrupt as exc:
        if stopped():
            return EXIT_HANG, False
        _print_uncaught(exc)
        return 130, True
    except BaseException as exc:
        _print_uncaught(exc)
        return 1, False
    finally:
        _join_threads()
        exit_handlers.run(stopped)
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0


class _ExitHandlers:
    """The ``atexit`` handlers the program registers, run as it ends, before the report.

    Python runs them once the main module is done and its threads joined, at
    the interpreter's exit. Under ``aiotrace run`` the trace and the report
    end when the program does: left to the interpreter, the handlers ran
    after the report and untraced, so the async clean-up done there
    (``atexit.register(lambda: asyncio.run(client.aclose()))``) was lost
    without a word, and a lock released there was reported as leaked. So
    while the program runs its registrations are noted (and made as well:
    if we never get to run them, the interpreter still does), and when it
    ends they are taken back and run here, in Python's order (last
    registered first, after the threads), each failure reported as
    CPython's ``atexit`` reports it. As in Python, a handler registered while
    the handlers run is not run.
    """

    def __init__(self) -> None:
        self.handlers: list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = []
        self.running = False
        self._real = (atexit.register, atexit.unregister)

    def start(self) -> None:
        real_register: Any = self._real[0]
        real_unregister: Any = self._real[1]

        @functools.wraps(real_register)
        def register(func: Callable[..., object], /, *args: Any, **kwargs: Any) -> Any:
            if self.running:
                return func
            real_register(func, *args, **kwargs)  # first: its TypeError for a non-callable
            self.handlers.append((func, args, kwargs))
            return func

        @functools.wraps(real_unregister)
        def unregister(func: Callable[..., object], /) -> None:
            real_unregister(func)  # first: a comparison that raises, raises as there
            self.handlers[:] = [entry for entry in self.handlers if not entry[0] == func]  # noqa: SIM201  # atexit's test

        atexit.register, atexit.unregister = register, unregister

    def run(self, stopped: Callable[[], bool]) -> None:
        """Run the program's handlers, last registered first; never raises.

        ``stopped()`` true: aiotrace stopped a hung handler as Ctrl-C would; that
        KeyboardInterrupt is ours, not printed (as for the program itself).
        """
        self.running = True
        handlers, self.handlers = self.handlers, []
        real_register, real_unregister = self._real
        # Ctrl-C between two handlers: the rest are skipped.
        with contextlib.suppress(BaseException):
            for func, _, _ in handlers:
                real_unregister(func)  # taken back from the interpreter's exit
            for func, args, kwargs in reversed(handlers):
                try:
                    func(*args, **kwargs)
                except BaseException as exc:  # as atexit: reported, and the next one runs
                    if not (isinstance(exc, KeyboardInterrupt) and stopped()):
                        _unraisable_in_atexit(exc, func)
        atexit.register, atexit.unregister = real_register, real_unregister


def _unraisable_in_atexit(exc: BaseException, func: object) -> None:
    """Report a handler's exception as CPython's ``atexit`` does, through ``sys.unraisablehook``."""
    # From the handler's own frame, as there (not from ours, which called it).
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    if sys.version_info >= (3, 13):
        message, obj = f"Exception ignored in atexit callback {func!r}", None
    else:
        message, obj = "Exception ignored in atexit callback", func
    with contextlib.suppress(BaseException):  # a hook that fails: the next handler runs
        sys.unraisablehook(_unraisable_args_type()((type(exc), exc, tb, message, obj)))


@functools.cache
def _unraisable_args_type() -> Any:
    """``sys.UnraisableHookArgs``, which the ``sys`` module does not export: learnt from
    the one unraisable exception we cause, with the hook swapped out meanwhile."""
    seen: list[object] = []
    hook = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        _RaisesWhenCollected()
    finally:
        sys.unraisablehook = hook
    return type(seen[0])


class _RaisesWhenCollected:
    def __del__(self) -> None:
        raise RuntimeError


def _interrupt_loops() -> None:
    """Raise KeyboardInterrupt in the main thread's event loop, from a callback of its own.

    What Ctrl-C does to the program (the interrupt lands in the main thread),
    where SIGINT cannot be delivered. A loop another thread runs is left
    alone (and one not running); one whose thread is unknown (not asyncio's
    own) is interrupted.
    """
    from aiotrace._loops import call_soon_threadsafe, is_running, loop_of, pending_tasks

    main = threading.main_thread().ident
    loops = {id(loop_of(task)): loop_of(task) for task in pending_tasks()}
    for loop in loops.values():
        if not is_running(loop) or getattr(loop, "_thread_id", main) != main:
            continue
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            call_soon_threadsafe(loop, _keyboard_interrupt)


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _join_threads() -> None:
    """Wait for the program's non-daemon threads, as the interpreter would before exiting."""
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon and thread.is_alive():
            with contextlib.suppress(Exception):
                thread.join()


def cmd_run(args: argparse.Namespace, program: list[str]) -> int:
    """``aiotrace run``."""
    from aiotrace import semconv
    from aiotrace._session import EXIT_DELIVERY, SIGTERM_DELIVERY, SessionConfig, TraceSession

    # Before the program can close or replace sys.stderr (see _stderr).
    STDERR.claim()
    kind, target, argv = _program(args, program)
    label = _label(kind, target)
    exporters = traces_exporters()
    otlp = _otlp_settings(args, exporters)
    options = _options(args)
    service = args.service_name or os.environ.get("AIOTRACE_SERVICE_NAME") or None
    quiet = args.quiet or _env_flag("AIOTRACE_QUIET")
    report_json = _output_path(
        args.report_json or os.environ.get("AIOTRACE_REPORT_JSON"), "the report"
    )
    html = _output_path(args.html or os.environ.get("AIOTRACE_HTML"), "the HTML timeline")
    diagnosis = _diagnosis(args)
    trace_file = _trace_file(args, label)  # last: a default one is created (see new_trace_file)
    config = SessionConfig(
        service_name=label,
        service_override=service,
        root_attributes={
            semconv.ATTR_PROGRAM: _program_attribute(kind, target),
            semconv.ATTR_ARGV: list(argv),
        },
        trace_file=trace_file,
        otlp=otlp,
        console="console" in exporters,
        jaeger_url=args.jaeger_url or os.environ.get("AIOTRACE_JAEGER_URL") or DEFAULT_JAEGER,
        options=options,
        trace_children=not (args.no_children or _env_flag("AIOTRACE_NO_CHILDREN")),
        diagnosis=diagnosis,
        html=html,
    )
    check = args.check or _env_flag("AIOTRACE_CHECK")
    hung: list[Finding] = []
    concluded = threading.Event()

    def on_hang(finding: Finding) -> None:
        """From the watchdog: stop the program as Ctrl-C would; if it will not stop, end it."""
        import _thread

        hung.append(finding)
        diagnoser = session.diagnoser
        watchdog = diagnoser.watchdog if diagnoser is not None else None
        if watchdog is not None:
            watchdog.forget_stuck()  # stuck again after the interrupt: see last_resort
        if callable(signal.getsignal(signal.SIGINT)):
            _thread.interrupt_main()
        else:
            # SIGINT ignored (a background job's inheritance) or left to the
            # system: interrupt_main() would do nothing. Ctrl-C from inside
            # each loop instead, as its next callback.
            _interrupt_loops()
        # The terminal's Ctrl-C reaches the program's children too.
        session.signal_children(signal.SIGINT)

        def last_resort() -> None:
            # Ten seconds for the program's clean-up; less if, interrupted, it is
            # stuck again, no task able to progress (a TaskGroup whose task
            # swallowed its cancellation does not cancel it twice): it never will.
            deadline = time.monotonic() + 10.0
            while not concluded.wait(0.25):
                if time.monotonic() >= deadline or (
                    watchdog is not None and watchdog.stuck_again(threading.main_thread().ident)
                ):
                    break
            else:
                return
            if not concluded.is_set():
                STDERR.write("aiotrace: the hung program did not stop; ending it\n")
                # Its children too (they ship their spans as they go): else
                # one the program waited for outlives the run, hung.
                session.signal_children(signal.SIGTERM)
                conclude(EXIT_HANG)
                EXIT_DELIVERY.real_exit(EXIT_HANG)

        threading.Thread(target=last_resort, name="aiotrace-hang-exit", daemon=True).start()

    try:
        session = TraceSession(config, on_hang=on_hang)
    except Exception as exc:
        STDERR.write(f"aiotrace: could not start tracing ({exc}); running untraced\n")
        if trace_file and not (args.trace_file or os.environ.get("AIOTRACE_TRACE_FILE")):
            with contextlib.suppress(OSError):
                if os.path.getsize(trace_file) == 0:  # the name we took, unwritten
                    os.remove(trace_file)
        code, interrupted = _run_program(kind, target, argv)
        return _finish_exit(code, interrupted)

    findings = [0]
    # A second caller (the program ending while a hang's last resort
    # concludes) waits for the first: returning at once, it would exit the
    # process and cut the report off. Reentrant for a SIGTERM meanwhile.
    concluding = threading.RLock()

    def conclude(code: int) -> None:
        with concluding:
            if concluded.is_set():
                return
            concluded.set()
            _conclude(code)

    def _conclude(code: int) -> None:
        with contextlib.suppress(Exception):  # what the program wrote comes first
            sys.stderr.flush()
        report = None
        try:
            with SIGTERM_DELIVERY.delivering():
                report = session.finish(exit_code=code)
        except Exception as exc:
            STDERR.write(f"aiotrace: could not finish the trace: {exc}\n")
        if report is None:
            STDERR.write(
                "aiotrace: the collector did not report"
                + (f"; the trace file may be incomplete: {trace_file}" if trace_file else "")
                + "\n"
            )
            return
        findings[0] = report.findings_total
        _print_report(report, quiet, trace_file, otlp)
        if report_json:
            try:
                with open(report_json, "w", encoding="utf-8") as fh:
                    json.dump(report.to_json(), fh, indent=2)
            except OSError as exc:
                STDERR.write(f"aiotrace: could not write {report_json}: {exc.strerror}\n")

    def replaced() -> None:
        """The program replaces itself (``os.execv``): its run ends here, reported.

        (Its unflushed output stays unflushed, lost as it would be untraced.)
        """
        conclude(0)
        STDERR.write("aiotrace: the program replaced itself (os.exec*): its trace ends here\n")

    # Killed by SIGTERM (a CI timeout, docker stop) or SIGHUP (a closed terminal):
    # report, then die by it as before.
    def killed(signum: int) -> None:
        conclude(128 + signum)

    def exiting(status: int) -> None:
        conclude(_exit_status(status))

    SIGTERM_DELIVERY.install(killed)
    # Leaving through os._exit(): report, then exit with its status, unflushed output unflushed.
    EXIT_DELIVERY.install(exiting, replaced)
    pid = os.getpid()
    try:
        code, interrupted = _run_program(kind, target, argv, lambda: bool(hung))
    finally:
        EXIT_DELIVERY.restore(exiting)
    if os.getpid() != pid:
        # A fork of the program that left as the program does (sys.exit(), or
        # the end of the script): the run and its report are the parent's;
        # this process's own trace ends with it, at exit (_child.after_fork).
        return _finish_exit(code, interrupted)
    # Ctrl-C while we deliver must not lose the spans: ignore it until done
    # (and a SIGTERM waits for the delivery).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conclude(code)
    finally:
        signal.signal(signal.SIGINT, previous)
        SIGTERM_DELIVERY.restore(killed)
    if hung:
        STDERR.write(f"aiotrace: stopped: {hung[0].summary} (exit status {EXIT_HANG})\n")
        return EXIT_HANG
    if check and findings[0] and code == 0 and not interrupted:
        from aiotrace.report import counted

        found = counted(findings[0], "finding")
        STDERR.write(f"aiotrace: --check: {found}; exit status {EXIT_FINDINGS}\n")
        return EXIT_FINDINGS
    return _finish_exit(code, interrupted)


def _print_report(
    report: Report, quiet: bool, trace_file: str | None, otlp: dict[str, Any] | None
) -> None:
    from aiotrace.report import console_for, print_plain, render

    console = console_for()
    if not quiet:
        render(report, console)
    elif trace_file:
        print_plain(console, f"aiotrace: trace file {trace_file}")
    if otlp is not None and report.export_error:
        endpoint = otlp["endpoint"]
        print_plain(
            console,
            f"aiotrace: could not export to {endpoint}: {report.export_error.rstrip('.')}. "
            + (
                f"The spans are in {trace_file}; send them later with: aiotrace send "
                f"{shlex.quote(trace_file)} --otlp {shlex.quote(endpoint)} "
                f"--protocol {otlp['protocol']}"
                if trace_file
                else "Run with a trace file to keep them."
            ),
            "yellow",
        )


def _finish_exit(code: int, interrupted: bool) -> int:
    if interrupted:
        # Exit the way python does after an uncaught KeyboardInterrupt: killed by SIGINT.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # closed, or on a full disk
                stream.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


# ---------------------------------------------------------------------------
# aiotrace report / send
# ---------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    """``aiotrace report``: the report of a saved trace."""
    from aiotrace._otlp import read_trace_file
    from aiotrace.report import ReportBuilder, console_for, render

    try:
        data = read_trace_file(args.trace_file)
    except TraceFileError as exc:
        raise UsageError(str(exc)) from None
    html = _output_path(args.html, "the HTML timeline")
    builder = ReportBuilder()
    for pid, drafts in data.by_process():
        builder.add(drafts, pid)
    report = builder.build(trace_file=os.path.abspath(args.trace_file))
    if html is not None:
        from aiotrace.timeline import write_html

        title = str(data.resource.get("service.name", os.path.basename(args.trace_file)))
        report.html_file, report.html_bytes = html, write_html(data.drafts, html, title)
    if not report.title:
        report.title = str(data.resource.get("service.name", os.path.basename(args.trace_file)))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        render(report, console_for(stderr=False))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    """``aiotrace send``: replay a saved trace to an OTLP collector."""
    from opentelemetry.sdk.resources import Resource

    from aiotrace._otlp import AIOTRACE_SCOPE, draft_to_readable, read_trace_file
    from aiotrace._otlp_bulk import BulkEncoder
    from aiotrace.sinks import _Capture, bulk_sender, otlp_exporter

    namespace = argparse.Namespace(
        otlp=args.otlp if args.otlp is not None else "", protocol=args.protocol
    )
    settings = _otlp_settings(namespace)
    assert settings is not None
    try:
        data = read_trace_file(args.trace_file)
    except TraceFileError as exc:
        raise UsageError(str(exc)) from None
    exporter = otlp_exporter(settings["endpoint"], settings["protocol"], settings["timeout"])
    capture = _Capture()
    import logging

    loggers = [logging.getLogger(n) for n in ("opentelemetry.exporter", "opentelemetry.sdk")]
    for logger in loggers:
        logger.addHandler(capture)
        logger.propagate = False
    sent = 0
    try:
        send = bulk_sender(exporter)
        # Each process's spans under its own resource, as the run exported them.
        for attributes, spans in data.groups:
            resource = Resource(attributes)
            encoder = BulkEncoder(attributes)
            for start in range(0, len(spans), 512):
                drafts = spans[start : start + 512]
                if send is not None:
                    ok = send(encoder.request(drafts, AIOTRACE_SCOPE), len(drafts))
                else:
                    result = exporter.export([draft_to_readable(d, resource) for d in drafts])
                    ok = getattr(result, "name", "") == "SUCCESS"
                if not ok:
                    reason = capture.messages[-1] if capture.messages else "the exporter failed"
                    sys.stderr.write(
                        f"aiotrace: could not send to {settings['endpoint']}: {reason} "
                        f"({sent} of {len(data.drafts)} spans sent)\n"
                    )
                    return 1
                sent += len(drafts)
    finally:
        with contextlib.suppress(Exception):
            exporter.shutdown()
        for logger in loggers:
            logger.removeHandler(capture)
            logger.propagate = True
    sys.stderr.write(f"aiotrace: sent {sent} spans to {settings['shown']}\n")
    return 0


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotrace`` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        program: list[str] = []
        if arguments[:1] == ["run"]:
            ours, program = split_run_args(arguments[1:])
            args = parser.parse_args(["run", *ours])
        else:
            args = parser.parse_args(arguments)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "run":
            return cmd_run(args, program)
        if args.command == "report":
            return cmd_report(args)
        return cmd_send(args)
    except UsageError as exc:
        sys.stderr.write(f"aiotrace: error: {exc}\n")
        return EXIT_USAGE


__all__ = ["build_parser", "main", "split_run_args"]
