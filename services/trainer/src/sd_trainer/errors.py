"""The trainer's one table (``ERRORS``) mapping its domain exceptions to gRPC status codes."""

from __future__ import annotations

import grpc
from sd_common.error_mapping import SERVICE_ERRORS, STORE_RULES, ErrorMapping, rule

from sd_trainer.config import ConfigError
from sd_trainer.runs import DatasetNotFound, LauncherUnavailable, RunFinished, RunNotFound, RunRequestInvalid

_C = grpc.StatusCode

# What a client sees for each error the trainer API can end a call with.
ERRORS = SERVICE_ERRORS + ErrorMapping(
    rule((RunRequestInvalid, ConfigError), _C.INVALID_ARGUMENT, 400, "invalid_argument"),
    rule((RunNotFound, DatasetNotFound), _C.NOT_FOUND, 404, "not_found"),
    rule(RunFinished, _C.FAILED_PRECONDITION, 409, "failed_precondition"),
    rule(LauncherUnavailable, _C.UNAVAILABLE, 503, "unavailable"),
) + STORE_RULES
