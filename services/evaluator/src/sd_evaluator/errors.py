"""The evaluator's one table (``ERRORS``) mapping its domain exceptions to gRPC status codes."""

from __future__ import annotations

import grpc
from sd_common.error_mapping import SERVICE_ERRORS, STORE_RULES, ErrorMapping, rule

from sd_evaluator.runs import (
    CheckpointNotFound,
    EvaluationFinished,
    EvaluationNotFound,
    EvaluationRequestInvalid,
    LauncherUnavailable,
)

_C = grpc.StatusCode

# What a client sees for each error the evaluator API can end a call with.
ERRORS = SERVICE_ERRORS + ErrorMapping(
    rule(EvaluationRequestInvalid, _C.INVALID_ARGUMENT, 400, "invalid_argument"),
    rule((EvaluationNotFound, CheckpointNotFound), _C.NOT_FOUND, 404, "not_found"),
    rule(EvaluationFinished, _C.FAILED_PRECONDITION, 409, "failed_precondition"),
    rule(LauncherUnavailable, _C.UNAVAILABLE, 503, "unavailable"),
) + STORE_RULES
