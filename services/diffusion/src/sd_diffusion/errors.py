"""Diffusion domain errors and the table (``ERRORS``) mapping them to gRPC codes."""

from __future__ import annotations

import grpc

from sd_common.error_mapping import SERVICE_ERRORS, ServiceError


class DiffusionError(ServiceError):
    http_status, grpc_code, code = 500, grpc.StatusCode.INTERNAL, "internal"


class InvalidOffer(DiffusionError):
    http_status, grpc_code, code = 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_offer"


class StreamNotFound(DiffusionError):
    http_status, grpc_code, code = 404, grpc.StatusCode.NOT_FOUND, "stream_not_found"


class NoFreeSlot(DiffusionError):
    """Every slot of this pod is taken; `retry_after_s` is the hint the caller passes on."""

    http_status, grpc_code, code = 503, grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


ERRORS = SERVICE_ERRORS
