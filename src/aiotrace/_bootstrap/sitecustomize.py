"""Trace a child Python process of a traced program (``aiotrace run``, ``pytest --aiotrace``).

The traced program's environment puts this directory first on
``PYTHONPATH``; Python imports ``sitecustomize`` at start-up, so every child
Python process runs this. It instruments the child to ship to the same
collector, under the same trace, then hands over to any other
``sitecustomize`` that was on the path (``opentelemetry-instrument`` uses one
too), so nothing the environment already did is lost.

A child is traced when it imports asyncio, not before: there is nothing
to trace until then, and most children that never do (a tool run with
``subprocess``, multiprocessing's resource tracker) would otherwise pay
for importing aiotrace, OpenTelemetry and asyncio, ten times what
starting Python costs. Its process span still starts when the process did.
"""

import os
import sys
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would cost every child

if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

_STARTED_NS = time.time_ns()


def _start() -> None:
    try:
        from aiotrace._child import start
    except ImportError:  # another interpreter, without aiotrace: run it untraced
        return
    try:
        start(_STARTED_NS)
    except Exception as exc:  # tracing must never stop the program from running
        sys.stderr.write(f"aiotrace: could not trace child process {os.getpid()}: {exc}\n")


class _TraceOnceAsyncioIsImported:
    """A meta path finder that finds nothing itself: it wraps asyncio's loader.

    When asyncio's own code has run (``exec_module``), the child is traced,
    and the module is left with its real loader, as if we had not been there.
    """

    def find_spec(
        self, name: str, path: "Sequence[str] | None" = None, target: "ModuleType | None" = None
    ) -> "ModuleSpec | None":
        if name != "asyncio":
            return None
        import importlib.util

        _stop_watching()
        spec = importlib.util.find_spec(name)
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec  # an import we cannot follow: this child stays untraced
        spec.loader = _StartAfter(loader)  # type: ignore[assignment]  # a loader in all but name
        return spec


class _StartAfter:
    def __init__(self, loader: object) -> None:
        self._loader = loader

    def create_module(self, spec: object) -> object:
        return self._loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: object) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # type: ignore[attr-defined]
        self._loader.exec_module(module)  # type: ignore[attr-defined]
        _start()

    def __getattr__(self, name: str) -> object:
        return getattr(self._loader, name)


_WATCHER = _TraceOnceAsyncioIsImported()


def _stop_watching() -> None:
    if _WATCHER in sys.meta_path:
        sys.meta_path.remove(_WATCHER)


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    import importlib.util

    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        spec = importlib.util.find_spec("sitecustomize")
    finally:
        sys.path[:] = saved
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


if os.environ.get("AIOTRACE_COLLECTOR"):
    if "asyncio" in sys.modules:  # imported already (a .pth file)
        _start()
    else:
        sys.meta_path.insert(0, _WATCHER)
_chain()
