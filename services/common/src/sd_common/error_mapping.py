"""Domain exceptions → gRPC status codes and HTTP statuses: one table per service, one interceptor for all.

Each service declares its table once (``ERRORS`` in its ``errors.py``) as rules built with ``rule``;
``GrpcRuntime.map_errors(ERRORS)`` installs it for every RPC the service serves, and the gateway's
HTTP API answers from the same table. A servicer only raises domain exceptions.

An exception no rule names is a bug: its call ends with INTERNAL and a pointer to the logs (the
traceback is logged, never sent). Object-store failures have one shared set of rules
(``STORE_RULES``) so every service reports a store outage the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from sd_common.interceptors import MethodWrappingInterceptor
from sd_common.objectstore.errors import ObjectStoreError
from sd_common.problems import Problem

log = structlog.get_logger()


@dataclass(frozen=True)
class ErrorStatus:
    """What a client sees for one error, on either protocol."""

    grpc_code: grpc.StatusCode
    http_status: int
    code: str  # stable snake_case (or store error) name: error.code of the HTTP envelope
    message: str  # a sentence the user can act on
    problems: tuple[Problem, ...] = ()
    retry_after_s: float | None = None

    @property
    def grpc_details(self) -> str:
        """The gRPC status details: the message, then one line per problem."""
        return self.message + "".join(f"\n{p}" for p in self.problems)


Rule = Callable[[BaseException], "ErrorStatus | None"]

RETRY_AFTER_METADATA = "retry-after-s"


def retry_after_s(error: grpc.aio.AioRpcError) -> float | None:
    """The retry hint a failed call's trailing metadata carries (RETRY_AFTER_METADATA), if any."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_METADATA:
            try:
                return float(value)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class _TypedRule:
    types: tuple[type[BaseException], ...]
    build: Callable[[Any], ErrorStatus]

    def __call__(self, exc: BaseException) -> ErrorStatus | None:
        return self.build(exc) if isinstance(exc, self.types) else None


def rule(types: type[BaseException] | tuple[type[BaseException], ...], grpc_code: grpc.StatusCode | None = None,
         http_status: int = 500, code: str = "", message: Callable[[Any], str] = str, *,
         build: Callable[[Any], ErrorStatus] | None = None) -> _TypedRule:
    """A rule for exceptions of ``types``: a fixed status, or ``build(exc)`` for one read from the exception."""
    types = types if isinstance(types, tuple) else (types,)
    if build is None:
        if grpc_code is None or not code:
            raise ValueError("a rule needs grpc_code and code, or build")
        build = lambda exc: ErrorStatus(grpc_code, http_status, code, message(exc))  # noqa: E731
    return _TypedRule(types, build)


class ErrorMapping:
    """An ordered table of rules; the first that answers for an exception decides its status."""

    def __init__(self, *rules: _TypedRule) -> None:
        self.rules = list(rules)

    def __add__(self, other: ErrorMapping) -> ErrorMapping:
        return ErrorMapping(*self.rules, *other.rules)

    @property
    def exception_types(self) -> tuple[type[BaseException], ...]:
        """Every exception type some rule names (an HTTP app registers one handler for each)."""
        seen: dict[type[BaseException], None] = {}
        for r in self.rules:
            seen.update(dict.fromkeys(r.types))
        return tuple(seen)

    def status_for(self, exc: BaseException) -> ErrorStatus | None:
        """The status of a domain exception, or None when no rule names it (a bug)."""
        for r in self.rules:
            status = r(exc)
            if status is not None:
                return status
        return None


class ServiceError(Exception):
    """Base of a service's client-facing errors: each subclass names its gRPC code, HTTP status and code.

    The message is shown to the user; ``problems`` list what is wrong, one each.
    """

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    code = "internal"

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def status(self) -> ErrorStatus:
        """What a client sees for this error."""
        return ErrorStatus(self.grpc_code, self.http_status, self.code, self.message, tuple(self.problems),
                           getattr(self, "retry_after_s", None))


# The gRPC code that goes with each HTTP status the services answer with.
GRPC_CODE_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION, 411: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.INVALID_ARGUMENT, 429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE,
}


def _store_error(exc: ObjectStoreError) -> ErrorStatus:
    http_status = getattr(exc, "http_status", 500)
    return ErrorStatus(GRPC_CODE_FOR_HTTP.get(http_status, grpc.StatusCode.INTERNAL), http_status,
                       type(exc).__name__, str(exc))


def _store_unreachable(exc: BaseException) -> ErrorStatus:
    detail = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
    return ErrorStatus(grpc.StatusCode.UNAVAILABLE, 503, "store_unavailable",
                       f"the object store failed ({detail}); retry later")


def _storage_client_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # a service without the S3 client cannot see its errors either
        return (OSError,)
    return (OSError, BotoCoreError, ClientError)


# Every ServiceError carries its own statuses.
SERVICE_ERRORS = ErrorMapping(rule(ServiceError, build=ServiceError.status))

# A store error names its own status (a missing object is NOT_FOUND, a bad key INVALID_ARGUMENT);
# an I/O or S3 client error under the store is the store being unavailable.
STORE_RULES = ErrorMapping(
    rule(ObjectStoreError, build=_store_error),
    rule(_storage_client_errors(), build=_store_unreachable),
)


def unexpected_error_message(service: str, exc: BaseException) -> str:
    """What a caller sees for a bug: no traceback or server paths, a pointer to the logs."""
    return f"the {service} failed unexpectedly ({type(exc).__name__}); see its logs"


def _status_already_set(context: grpc.aio.ServicerContext) -> bool:
    code = context.code()  # a StatusCode, or its integer value, depending on how it was set
    return code is not None and code not in (grpc.StatusCode.OK, grpc.StatusCode.OK.value[0])


class ErrorMappingInterceptor(MethodWrappingInterceptor):
    """Ends every call whose handler raised with the status its service's table gives.

    It sits innermost, so the metrics and tracing interceptors see the final status. A status the
    handler set itself (``context.abort``, or UNIMPLEMENTED from a generated base) is left alone.
    """

    def __init__(self, service: str, mapping: Callable[[], ErrorMapping]) -> None:
        super().__init__()
        self._service = service
        self._mapping = mapping

    async def _end(self, exc: BaseException, context: grpc.aio.ServicerContext, method: str) -> None:
        if isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError)) or _status_already_set(context):
            raise exc
        status = self._mapping().status_for(exc)
        if status is None:
            log.error("unexpected error", method=method, exc_info=exc)
            await context.abort(grpc.StatusCode.INTERNAL, unexpected_error_message(self._service, exc))
        (log.error if status.grpc_code == grpc.StatusCode.INTERNAL else log.info)(
            "call failed", method=method, code=status.grpc_code.name, error=status.message)
        # A retry hint travels as trailing metadata `retry-after-s` (seconds), as HTTP's Retry-After does.
        trailing = (() if status.retry_after_s is None
                    else ((RETRY_AFTER_METADATA, f"{status.retry_after_s:g}"),))
        await context.abort(status.grpc_code, status.grpc_details, trailing_metadata=trailing)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner(request, context)
                except BaseException as exc:  # noqa: BLE001 - _end re-raises what it does not map
                    await self._end(exc, context, method)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for item in inner_stream(request, context):
                    yield item
            except BaseException as exc:  # noqa: BLE001 - _end re-raises what it does not map
                await self._end(exc, context, method)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(streaming, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def http_error_body(status: ErrorStatus) -> dict:
    """The JSON body every HTTP error carries: {"error": {"code", "message", "problems"}}."""
    return {"error": {"code": status.code, "message": status.message,
                      "problems": [p.to_dict() for p in status.problems]}}


def http_headers(status: ErrorStatus) -> dict[str, str]:
    """Headers that go with an error (Retry-After for rate limits, in whole seconds, at least 1)."""
    if status.retry_after_s is None:
        return {}
    return {"Retry-After": str(max(1, int(status.retry_after_s + 0.999)))}

