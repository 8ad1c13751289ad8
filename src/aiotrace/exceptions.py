"""aiotrace's exceptions: raised to callers of its API, never into traced code."""

from __future__ import annotations


class AiotraceError(Exception):
    """Base class of every error aiotrace raises on purpose."""


class ConfigurationError(AiotraceError, ValueError):
    """An option has an unknown name or an invalid value."""


class TraceFileError(AiotraceError):
    """A trace file is missing, unreadable or not OTLP JSON."""


class EndpointError(AiotraceError, ValueError):
    """An OTLP endpoint URL or protocol is invalid."""
