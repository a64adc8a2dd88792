"""Errors the processor reports to its caller (the server maps them to gRPC codes in one place).

Bad *session content* is never an error: it is a rejection with named problems in the result. These
are for requests that cannot be served at all.
"""

from __future__ import annotations

from sd_common.objectstore import ObjectStoreError


class ProcessorError(Exception):
    """Base of the processor's request errors; the message tells the caller what to fix."""


class InvalidRequest(ProcessorError):
    """A request field is malformed (an id, a prefix, an output that overlaps the raw upload)."""


class RawSessionNotFound(ProcessorError):
    """Nothing is stored under the raw session prefix."""


class StoreUnavailable(ProcessorError):
    """The object store failed while reading the session or writing outputs; retrying may help."""


def describe_error(exc: BaseException) -> str:
    """A one-line description of an error for a person (no traceback, no server paths)."""
    if isinstance(exc, (ProcessorError, ObjectStoreError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
