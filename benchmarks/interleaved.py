"""What every benchmark here shares: repetitions that alternate bare and traced runs.

These machines are shared and noisy (two cores): a ratio of runs made
side by side in one process means something, an absolute time does not,
and a median of fewer than seven is noise.
"""

from __future__ import annotations

import argparse
import statistics
from typing import TYPE_CHECKING, Any

import aiotrace
from aiotrace._pipeline import Discard

if TYPE_CHECKING:
    from collections.abc import Callable

MIN_REPS = 7


def _reps(text: str) -> int:
    reps = int(text)
    if reps < MIN_REPS:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_REPS} (medians of fewer are noise here)"
        )
    return reps


def add_reps(parser: argparse.ArgumentParser, default: int) -> None:
    """The ``--reps`` option, refusing fewer than :data:`MIN_REPS`."""
    parser.add_argument(
        "--reps", type=_reps, default=default, help=f"repetitions (median; >= {MIN_REPS})"
    )


def traced_over_bare(
    reps: int, timed: Callable[[], float], **options: Any
) -> tuple[float, float, float]:
    """Medians of (bare, traced, traced / bare) over ``reps`` pairs of ``timed()`` runs.

    Traced is ``aiotrace.instrument(**options)`` with records encoded and
    then dropped (a :class:`~aiotrace._pipeline.Discard` consumer), as
    ``benchmarks.instructions`` does: the hot path and the encoding, no
    exporter. Each ratio is of the runs made one after the other.
    """
    bare, traced, ratios = [], [], []
    for _ in range(reps):
        plain = timed()
        aiotrace.instrument(consumer=Discard(), **options)
        try:
            with_tracing = timed()
        finally:
            aiotrace.uninstrument()
        bare.append(plain)
        traced.append(with_tracing)
        ratios.append(with_tracing / plain)
    return statistics.median(bare), statistics.median(traced), statistics.median(ratios)


def times(ratio: float) -> str:
    """A ratio as every table here prints it: two decimals and the multiplication sign."""
    return f"{ratio:.2f}×"  # noqa: RUF001  # the multiplication sign, on purpose
