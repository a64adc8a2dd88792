"""Gateway domain errors and the one table (``ERRORS``) mapping them to HTTP statuses and gRPC codes."""

from __future__ import annotations

import grpc

from sd_common.error_mapping import SERVICE_ERRORS, STORE_RULES, ServiceError, http_error_body


class GatewayError(ServiceError):
    """Base of every error the gateway reports to a client; the message is shown to the user."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL
    code = "internal"


class InvalidArgument(GatewayError):
    http_status, grpc_code, code = 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"


class Unauthenticated(GatewayError):
    http_status, grpc_code, code = 401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"


class PermissionDenied(GatewayError):
    http_status, grpc_code, code = 403, grpc.StatusCode.PERMISSION_DENIED, "permission_denied"


class NotFound(GatewayError):
    http_status, grpc_code, code = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class FailedPrecondition(GatewayError):
    http_status, grpc_code, code = 409, grpc.StatusCode.FAILED_PRECONDITION, "failed_precondition"


class AlreadyExists(GatewayError):
    """Something another player holds (a wallet linked to them): HTTP 409, like a failed precondition."""

    http_status, grpc_code, code = 409, grpc.StatusCode.ALREADY_EXISTS, "already_exists"


class TooLarge(GatewayError):
    http_status, grpc_code, code = 413, grpc.StatusCode.INVALID_ARGUMENT, "too_large"


class RateLimited(GatewayError):
    http_status, grpc_code, code = 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(GatewayError):
    http_status, grpc_code, code = 503, grpc.StatusCode.UNAVAILABLE, "unavailable"


class BadGateway(GatewayError):
    """A provider the gateway calls for the player (the hosted diffusion's token endpoint) answered wrongly."""

    http_status, grpc_code, code = 502, grpc.StatusCode.UNAVAILABLE, "bad_gateway"


class Busy(Unavailable):
    """Every diffusion stream is taken: HTTP 503 with Retry-After, gRPC RESOURCE_EXHAUSTED with `retry-after-s`."""

    grpc_code, code = grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# What gRPC and HTTP clients see for each error: every GatewayError carries its own statuses, and
# object-store failures read the same as in every other service.
ERRORS = SERVICE_ERRORS + STORE_RULES


def error_body(err: GatewayError) -> dict:
    """The JSON body every HTTP error carries: {"error": {"code", "message", "problems"}}."""
    return http_error_body(err.status())
