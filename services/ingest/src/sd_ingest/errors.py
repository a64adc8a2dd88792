"""Ingest domain errors and the one table (``ERRORS``) mapping them to gRPC status codes."""

from __future__ import annotations

import grpc
from sd_common.error_mapping import SERVICE_ERRORS, STORE_RULES, ErrorMapping, ServiceError, rule

from sd_ingest.catalog import InvalidTransition, SessionNotFound
from sd_ingest.datasets import DatasetInputInvalid, NothingToSnapshot
from sd_ingest.wallets import InvalidLink, LinkExpired, NoWallet, NonceUsed, PlayerHasWallet, WalletTaken
from sd_ingest.ledger import EpochAlreadyPaid, EpochInvalid, EpochNotFound


class IngestError(ServiceError):
    """Base of every error the ingest reports to a client; the message is shown to the user."""


class InvalidArgument(IngestError):
    grpc_code, http_status, code = grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_argument"


class NotFound(IngestError):
    grpc_code, http_status, code = grpc.StatusCode.NOT_FOUND, 404, "not_found"


class FailedPrecondition(IngestError):
    grpc_code, http_status, code = grpc.StatusCode.FAILED_PRECONDITION, 409, "failed_precondition"


class Unavailable(IngestError):
    grpc_code, http_status, code = grpc.StatusCode.UNAVAILABLE, 503, "unavailable"


_C = grpc.StatusCode

# What a client sees for each error the ingest API can end a call with: its own errors carry their
# statuses; the catalog's and datasets' domain exceptions are named here.
ERRORS = SERVICE_ERRORS + ErrorMapping(
    rule(SessionNotFound, _C.NOT_FOUND, 404, "not_found", lambda exc: f"no session {exc} in the catalog"),
    rule((InvalidTransition, NothingToSnapshot), _C.FAILED_PRECONDITION, 409, "failed_precondition"),
    rule(DatasetInputInvalid, _C.INVALID_ARGUMENT, 400, "invalid_argument"),
) + ErrorMapping(  # wallets (docs/wallets.md)
    rule(InvalidLink, _C.INVALID_ARGUMENT, 400, "invalid_argument"),
    rule(WalletTaken, _C.ALREADY_EXISTS, 409, "already_exists"),
    rule((PlayerHasWallet, NonceUsed, LinkExpired), _C.FAILED_PRECONDITION, 409, "failed_precondition"),
    rule(NoWallet, _C.NOT_FOUND, 404, "not_found"),
) + ErrorMapping(  # ledger epochs (docs/rewards.md)
    rule(EpochNotFound, _C.NOT_FOUND, 404, "not_found"),
    rule(EpochInvalid, _C.INVALID_ARGUMENT, 400, "invalid_argument"),
    rule(EpochAlreadyPaid, _C.FAILED_PRECONDITION, 409, "failed_precondition"),
) + STORE_RULES
