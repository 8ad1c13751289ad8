"""aiotrace's own stderr: its report and messages, whatever the program did to ``sys.stderr``.

A traced program may close ``sys.stderr``, replace it
(``contextlib.redirect_stderr``, a logging set-up that captures it), or have
it point at a full disk or a closed pipe. None of that is aiotrace's to
inherit: the report must not land in the program's captured text, and a
stderr that cannot be written must not change how the program exits.
``aiotrace run`` duplicates file descriptor 2 before the program starts
(:meth:`OwnStderr.claim`) and writes there. A write that fails is dropped,
never raised: ``python app.py 2>/dev/full`` exits 0, and so does
``aiotrace run app.py 2>/dev/full``.

Unclaimed (``aiotrace.instrument()`` in the user's own program, the pytest
plugin), writes go to ``sys.stderr`` as it is at the time: there the user
or pytest decides where stderr goes.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import IO, Final


class OwnStderr:
    """A write-only text stream for aiotrace's output that never raises."""

    def __init__(self) -> None:
        self._stream: IO[str] | None = None

    def claim(self) -> None:
        """Duplicate file descriptor 2 now, before the program can close or replace it."""
        if self._stream is not None:
            return
        try:
            fd = os.dup(2)
        except OSError:  # no stderr at all: sys.stderr it is, if anything
            return
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        self._stream = open(  # noqa: SIM115  # closed by release(), at exit
            fd, "w", encoding=encoding, errors="backslashreplace", buffering=1
        )
        # Registered before the program runs, so run after its handlers and
        # aiotrace's own (atexit is last in, first out).
        atexit.register(self.release)

    def release(self) -> None:
        """Close the duplicate; later writes go to ``sys.stderr``.

        Left to the interpreter's shutdown, the open file would be reported
        as the program's (``ResourceWarning: unclosed file`` under ``-X dev``).
        """
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # a full disk, a closed pipe
                stream.close()

    def _target(self) -> IO[str] | None:
        return self._stream if self._stream is not None else sys.stderr

    def write(self, text: str) -> int:
        try:
            target = self._target()
            if target is not None:
                target.write(text)
        except (OSError, ValueError):  # a full disk, a closed pipe, a closed file
            pass
        return len(text)

    def flush(self) -> None:
        try:
            target = self._target()
            if target is not None:
                target.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            target = self._target()
            return target is not None and target.isatty()
        except (OSError, ValueError):
            return False

    @property
    def encoding(self) -> str:
        target = self._target()
        return getattr(target, "encoding", None) or "utf-8"


STDERR: Final = OwnStderr()
"""aiotrace's stderr, in this process."""


def line(text: str) -> None:
    """One line on aiotrace's stderr, flushed (the program may be about to die)."""
    STDERR.write(text + "\n")
    STDERR.flush()
