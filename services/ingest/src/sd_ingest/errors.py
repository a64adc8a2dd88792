"""Ingest domain errors and the one place they map to gRPC status codes."""

from __future__ import annotations

import functools

import grpc

from sd_ingest.catalog import InvalidTransition, SessionNotFound
from sd_ingest.datasets import DatasetInputInvalid, NothingToSnapshot


class IngestError(Exception):
    """Base of every error the ingest reports to a client; the message is shown to the user."""

    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(IngestError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(IngestError):
    grpc_code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(IngestError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(IngestError):
    grpc_code = grpc.StatusCode.UNAVAILABLE


def as_ingest_error(exc: Exception) -> IngestError | None:
    """The client-facing error for a domain exception, or None if it is a bug."""
    if isinstance(exc, IngestError):
        return exc
    if isinstance(exc, SessionNotFound):
        return NotFound(f"no session {exc} in the catalog")
    if isinstance(exc, InvalidTransition):
        return FailedPrecondition(str(exc))
    if isinstance(exc, NothingToSnapshot):
        return FailedPrecondition(str(exc))
    if isinstance(exc, DatasetInputInvalid):
        return InvalidArgument(str(exc))
    return None


def maps_errors(fn):
    """Translates domain errors into the matching gRPC status, with their message."""
    @functools.wraps(fn)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await fn(self, request, context)
        except Exception as exc:
            err = as_ingest_error(exc)
            if err is None:
                raise
            await context.abort(err.grpc_code, err.message)
    return wrapper
