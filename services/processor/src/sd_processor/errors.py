"""Errors the processor reports to its caller, and the one table (``ERRORS``) mapping them to gRPC codes.

Bad *session content* is never an error: it is a rejection with named problems in the result. These
are for requests that cannot be served at all.
"""

from __future__ import annotations

import asyncio

import grpc
from sd_common.error_mapping import STORE_RULES, ErrorMapping, ErrorStatus, rule
from sd_common.objectstore import InvalidKey, ObjectNotFound, ObjectStoreError

from .pipeline import Cancelled


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


def _cancelled(_exc: BaseException) -> ErrorStatus:
    return ErrorStatus(grpc.StatusCode.CANCELLED, 499, "cancelled", "processing was cancelled")


def _store_failed(exc: BaseException) -> ErrorStatus:
    # a bad key or a missing object is the request's fault; any other store error may pass on retry
    if isinstance(exc, (InvalidKey, ObjectNotFound)):
        return STORE_RULES.status_for(exc)
    return ErrorStatus(grpc.StatusCode.UNAVAILABLE, 503, "store_unavailable", describe_error(exc))


_C = grpc.StatusCode

# What the caller (the ingest) sees for each error that ends a call; a bad session is no error.
ERRORS = ErrorMapping(
    rule(InvalidRequest, _C.INVALID_ARGUMENT, 400, "invalid_argument"),
    rule(RawSessionNotFound, _C.NOT_FOUND, 404, "not_found"),
    rule((StoreUnavailable, ObjectStoreError), build=_store_failed),
    rule((Cancelled, asyncio.CancelledError), build=_cancelled),
) + STORE_RULES
