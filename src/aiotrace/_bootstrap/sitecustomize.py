"""Trace a child Python process of a traced program (``aiotrace run``, ``pytest --aiotrace``).

The traced program's environment puts this directory first on
``PYTHONPATH``; Python imports ``sitecustomize`` at start-up, so every child
Python process runs this. It instruments the child to ship to the same
collector, under the same trace, then hands over to any other
``sitecustomize`` that was on the path (``opentelemetry-instrument`` uses one
too), so nothing the environment already did is lost.
"""

import os
import sys


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
    try:
        from aiotrace._child import start
    except ImportError:  # another interpreter, without aiotrace: run it untraced
        start = None  # type: ignore[assignment]
    try:
        if start is not None:
            start()
    except Exception as exc:  # tracing must never stop the program from running
        sys.stderr.write(f"aiotrace: could not trace child process {os.getpid()}: {exc}\n")
_chain()
