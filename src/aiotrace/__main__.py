"""``python -m aiotrace``: the same as the ``aiotrace`` command."""

from __future__ import annotations

import sys

from aiotrace.cli import main

if __name__ == "__main__":
    sys.exit(main())
