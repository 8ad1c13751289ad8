"""``AIOTRACE_*`` environment variables: one reading of them for every entry point.

``aiotrace run`` turns a bad value into a usage error; ``instrument()``
(and so ``opentelemetry-instrument``) warns and ignores it, since a typo in
the environment must not stop a program from starting.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

from aiotrace.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

TRUE: Final = frozenset({"1", "true", "yes", "on"})
FALSE: Final = frozenset({"0", "false", "no", "off", ""})


def flag(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """A yes/no variable; unset is no.

    Raises:
        ConfigurationError: a value that is neither.
    """
    value = environ.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ConfigurationError(f"{name}={value!r}: expected 1/true/yes or 0/false/no")


def seconds(name: str, environ: Mapping[str, str] = os.environ) -> float | None:
    """A duration in seconds; unset or empty is None.

    Raises:
        ConfigurationError: not a number, or negative.
    """
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"{name}={value!r}: expected a number of seconds") from None
    if number < 0:
        raise ConfigurationError(f"{name}={value!r}: cannot be negative")
    return number


def options_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The :class:`aiotrace.Options` the environment sets.

    Raises:
        ConfigurationError: a variable with a bad value (named in the message).
    """
    options: dict[str, Any] = {}
    for name, key in (("AIOTRACE_MIN_WAIT", "min_wait"), ("AIOTRACE_MIN_HOLD", "min_hold")):
        value = seconds(name, environ)
        if value is not None:
            options[key] = value
    if flag("AIOTRACE_NO_TASKS", environ):
        options["tasks"] = False
    if flag("AIOTRACE_NO_FUTURES", environ):
        options["futures"] = False
    if flag("AIOTRACE_INTERNAL", environ):
        options.update(internal_futures=True, internal_tasks=True, internal_primitives=True)
    return options
