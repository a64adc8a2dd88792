"""HTTP/JSON API for browsers: the same SessionService as gRPC, plus local-store uploads and the game."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter
from pydantic import BaseModel, Field, ValidationError
from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.ingest.v1 import ingest_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from sd_common.error_mapping import http_error_body, http_headers
from sd_common.metrics import HttpMetricsMiddleware
from sd_gateway.database import SessionRecord
from sd_gateway.errors import ERRORS, NotFound
from sd_gateway.hosted import HostedDiffusion
from sd_gateway.http_guards import (BodyLimitMiddleware, SecurityHeadersMiddleware, api_reference_html,
                                    content_security_policy)
from sd_gateway.sessions import FileSpec, SessionService
from sd_gateway.ice import IceConfig
from sd_gateway.signaling import DiffusionSignaling
from sd_gateway.wallets import WalletLinking

Auth = Annotated[str | None, Header(alias="Authorization")]
log = structlog.get_logger()
UPLOADS_ABORTED = Counter("sd_gateway_uploads_aborted_total",
                          "Uploads to the embedded store whose client went away before the body was complete")
# What the HTTP metrics record for a request whose client closed the connection (nginx's convention):
# nobody receives it, and it is not a server error.
CLIENT_CLOSED_STATUS = 499


class ProblemOut(BaseModel):
    code: str
    path: str
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="stable code: invalid_argument, unauthenticated, … (docs/api.md)")
    message: str = Field(description="what went wrong and what to do, for a person")
    problems: list[ProblemOut] = Field(description="the fields or files at fault, when there are several")


class ErrorOut(BaseModel):
    """The body of every error the API answers."""

    error: ErrorDetail


_STATUS_TEXT = {
    400: "Bad request: a malformed body, field, file name or session id; `problems` name the fields",
    401: "Missing, forged or expired device token, or its player no longer exists",
    403: "Another player's session, or a disabled player",
    404: "No such session; or (DELETE /v1/wallet) no linked wallet",
    409: "The session is already complete; or (hosted-token) hosted diffusion is off on this gateway; or "
         "(wallet link) the challenge was used or expired, the wallet is another player's, or the player "
         "already has one",
    413: "A file, the session's files together, or the request body over its limit",
    429: "Rate limited; retry after `Retry-After` seconds",
    502: "The hosted diffusion provider refused or answered wrongly (the reason says which)",
    503: "A dependency (the object store, the diffusion service, the hosted provider, the ingest's rewards "
         "and wallets) cannot serve now, or is not configured",
}


def _errors(*statuses: int) -> dict[int | str, dict]:
    """The documented error responses of an operation, each with the error envelope."""
    return {status: {"model": ErrorOut, "description": _STATUS_TEXT[status]} for status in statuses}


# Error statuses each operation can answer (tests/… compare them with what the API really returns).
# Every JSON body may be malformed (400) or too long (413); every authenticated call may meet a bad
# token (401) or a disabled player (403).
OPERATION_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/players"): (400, 413, 429),
    ("GET", "/v1/players/me"): (401, 403),
    ("POST", "/v1/sessions"): (400, 401, 403, 413, 429),
    ("GET", "/v1/sessions"): (400, 401, 403),
    ("GET", "/v1/sessions/{session_id}"): (400, 401, 403, 404),
    ("POST", "/v1/sessions/{session_id}/upload-urls"): (400, 401, 403, 404, 409, 413, 429),
    ("POST", "/v1/sessions/{session_id}/multipart/complete"): (400, 401, 403, 404, 409, 413, 429),
    ("POST", "/v1/sessions/{session_id}/complete"): (400, 401, 403, 404, 409, 429, 503),
    ("POST", "/v1/diffusion/offer"): (400, 401, 403, 404, 413, 503),
    ("GET", "/v1/diffusion/ice-servers"): (401, 403),
    ("POST", "/v1/diffusion/hosted-token"): (400, 401, 403, 404, 409, 413, 429, 502, 503),
    ("POST", "/v1/wallet/challenge"): (400, 401, 403, 413, 429, 503),
    ("POST", "/v1/wallet/link"): (400, 401, 403, 409, 413, 503),
    ("GET", "/v1/wallet"): (401, 403, 503),
    ("DELETE", "/v1/wallet"): (401, 403, 404, 503),
    ("GET", "/v1/sessions/{session_id}/outcome"): (400, 401, 403, 404, 503),
    ("GET", "/v1/players/me/contributions"): (400, 401, 403, 503),
    ("GET", "/v1/leaderboard"): (400, 401, 403, 503),
}


def _documented(method: str, path: str) -> dict:
    return {"responses": _errors(*OPERATION_ERRORS[(method, path)])}


class CreatePlayerIn(BaseModel):
    client_build: str = ""


class CreatePlayerOut(BaseModel):
    player_id: str
    device_token: str


class PlayerOut(BaseModel):
    player_id: str
    sessions_total: int
    sessions_uploaded: int
    sessions_rejected: int
    seconds_uploaded: float


class CreateSessionIn(BaseModel):
    client_build: str = ""
    city: str = ""
    route_id: str = ""


class SessionOut(BaseModel):
    session_id: str
    player_id: str
    state: str = Field(description="OPEN, UPLOADED, REJECTED, PROCESSING or PROCESSED")
    created_at: datetime
    key_prefix: str
    problems: list[ProblemOut]
    client_build: str
    city: str
    route_id: str
    duration_s: float


class SessionListOut(BaseModel):
    sessions: list[SessionOut]
    next_page_token: str


class FileIn(BaseModel):
    path: str
    size_bytes: int
    sha256: str = ""
    content_type: str = "application/octet-stream"


class UploadUrlsIn(BaseModel):
    files: list[FileIn]


class PartOut(BaseModel):
    part_number: int
    url: str
    offset_bytes: int
    size_bytes: int


class TargetOut(BaseModel):
    path: str
    method: str
    url: str
    headers: dict[str, str]
    multipart_upload_id: str
    parts: list[PartOut]
    expires_at: datetime


class UploadUrlsOut(BaseModel):
    targets: list[TargetOut]


class PartIn(BaseModel):
    part_number: int
    etag: str


class CompleteMultipartIn(BaseModel):
    path: str
    multipart_upload_id: str
    parts: list[PartIn]


class CompleteMultipartOut(BaseModel):
    size_bytes: int


class CompleteSessionOut(BaseModel):
    session: SessionOut
    accepted: bool
    problems: list[ProblemOut]


class OfferIn(BaseModel):
    session_id: str
    sdp_offer: str
    prompt: str = ""


class OfferOut(BaseModel):
    sdp_answer: str
    stream_id: str
    backend: str
    model: str = ""


class IceServerOut(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServersOut(BaseModel):
    ice_servers: list[IceServerOut]
    # When the TURN credentials in it expire (unix seconds); null when it holds none.
    expires_at: int | None = None


class HostedTokenIn(BaseModel):
    session_id: str


class HostedTokenOut(BaseModel):
    provider: str = Field(description="the hosted diffusion provider: mirage")
    model: str = Field(description="the provider's model, for the realtime URL's `model` parameter")
    realtime_url: str = Field(description="the provider's WebSocket signaling URL, without query")
    token: str = Field(description="a short-lived client token, the realtime URL's `api_key` parameter")
    expires_at: datetime


class WalletChallengeIn(BaseModel):
    address: str = Field(description="the wallet's base58 address (an ed25519 public key)", max_length=128)


class WalletChallengeOut(BaseModel):
    message: str = Field(description="the exact Sign-In With Solana message to sign (docs/wallets.md)")
    nonce: str
    expires_at: datetime


class WalletLinkIn(BaseModel):
    message: str = Field(description="the challenge's message, unchanged", max_length=4096)
    signature: str = Field(description="the wallet's ed25519 signature of the message's UTF-8 bytes, base58",
                           max_length=128)


class WalletOut(BaseModel):
    address: str
    linked_at: datetime
    chain_id: str


class WalletEventOut(BaseModel):
    action: str = Field(description="link or unlink")
    address: str
    at: datetime


class WalletStateOut(BaseModel):
    wallet: WalletOut | None
    events: list[WalletEventOut] = Field(description="every link and unlink, oldest first")


class SegmentOutcomeOut(BaseModel):
    segment_id: str
    index: int
    accepted: bool
    reasons: list[str] = Field(description="why it was rejected (clean-rule codes)")
    duration_s: float
    points: float


class SessionOutcomeOut(BaseModel):
    session_id: str
    state: str = Field(description="the catalog's state, lowercase (received … processed, rejected, failed), "
                                   "or waiting while the catalog has not seen the session")
    final: bool = Field(description="nothing more will change by itself")
    accepted_s: float
    rejected_s: float
    points: float
    segments: list[SegmentOutcomeOut]
    problems: list[ProblemOut]


class CreditOut(BaseModel):
    entry_id: str
    session_id: str
    segment_id: str
    points: float = Field(description="credited, after the daily cap")
    gross_points: float = Field(description="what the rule priced before the cap")
    rule: str
    factors: dict[str, float]
    created_at: datetime
    status: str = Field(description="pending, in_epoch, paid or reversed")
    epoch_id: str
    note: str


class ContributionsOut(BaseModel):
    pending_points: float
    in_epoch_points: float
    paid_points: float
    today_points: float
    daily_cap_points: float
    accepted_s: float
    wallet_address: str = Field(description="empty when no wallet is linked")
    credits: list[CreditOut] = Field(description="newest first")
    next_page_token: str


class LeaderboardRowOut(BaseModel):
    rank: int
    player_label: str = Field(description="a short public label, never a player id")
    points: float
    accepted_s: float
    you: bool


class LeaderboardOut(BaseModel):
    week: str = Field(description="ISO week, e.g. 2026-W49")
    rows: list[LeaderboardRowOut]
    your_rank: int | None = Field(description="null when the player has no points that week")


LEADERBOARD_ROWS = 50


def points(millipoints: int) -> float:
    """Points from the ledger's integer millipoints."""
    return millipoints / 1000


def _rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wallet_out(w) -> WalletOut:
    """The HTTP view of the ingest's Wallet."""
    return WalletOut(address=w.address, linked_at=_rfc3339(w.linked_at), chain_id=w.chain_id)


def catalog_state_name(state: int) -> str:
    """processed, rejected, … from the ingest's CatalogState value."""
    return ingest_pb2.CatalogState.Name(state).removeprefix("CATALOG_STATE_").lower()


def outcome_out(r) -> SessionOutcomeOut:
    """The HTTP view of a GetSessionOutcomeResponse."""
    return SessionOutcomeOut(
        session_id=r.session_id, state=catalog_state_name(r.state), final=r.final, accepted_s=r.accepted_s,
        rejected_s=r.rejected_s, points=points(r.millipoints),
        segments=[SegmentOutcomeOut(segment_id=g.segment_id, index=g.index, accepted=g.accepted,
                                    reasons=list(g.reasons), duration_s=g.duration_s, points=points(g.millipoints))
                  for g in r.segments],
        problems=[ProblemOut(code=p.code, path=p.path, message=p.message) for p in r.problems])


def contributions_out(r) -> ContributionsOut:
    """The HTTP view of a GetContributionsResponse."""
    return ContributionsOut(
        pending_points=points(r.pending_millipoints), in_epoch_points=points(r.in_epoch_millipoints),
        paid_points=points(r.paid_millipoints), today_points=points(r.today_millipoints),
        daily_cap_points=points(r.daily_cap_millipoints), accepted_s=r.accepted_s,
        wallet_address=r.wallet_address, next_page_token=r.next_page_token,
        credits=[CreditOut(entry_id=c.entry_id, session_id=c.session_id, segment_id=c.segment_id,
                           points=points(c.millipoints), gross_points=points(c.gross_millipoints), rule=c.rule,
                           factors=dict(c.factors), created_at=_rfc3339(c.created_at), status=c.status,
                           epoch_id=c.epoch_id, note=c.note) for c in r.credits])


def leaderboard_out(r) -> LeaderboardOut:
    """The HTTP view of a GetLeaderboardResponse."""
    return LeaderboardOut(week=r.week, your_rank=r.your_rank or None, rows=[
        LeaderboardRowOut(rank=x.rank, player_label=x.player_label, points=points(x.millipoints),
                          accepted_s=x.accepted_s, you=x.you) for x in r.rows])


def state_name(state: int) -> str:
    """OPEN, UPLOADED, … from the proto enum value."""
    return common_pb2.SessionState.Name(state).removeprefix("SESSION_STATE_")


def session_out(rec: SessionRecord) -> SessionOut:
    """The HTTP view of a session record."""
    return SessionOut(session_id=rec.session_id, player_id=rec.player_id, state=state_name(rec.state),
                      created_at=rec.created_at, key_prefix=rec.key_prefix,
                      problems=[ProblemOut(**p.to_dict()) for p in rec.problems], client_build=rec.client_build,
                      city=rec.city, route_id=rec.route_id, duration_s=rec.duration_s)


def upload_urls_out(targets) -> UploadUrlsOut:
    """The HTTP view of the upload targets."""
    return UploadUrlsOut(targets=[TargetOut(
        path=t.path, method=t.method, url=t.url, headers=t.headers, multipart_upload_id=t.multipart_upload_id,
        parts=[PartOut(**p.__dict__) for p in t.parts], expires_at=t.expires_at) for t in targets])


UPLOAD_URLS_TEMPLATE = "/v1/sessions/{session_id}/upload-urls"
_UPLOAD_URLS_PATH = re.compile(r"/v1/sessions/([^/]+)/upload-urls")  # Starlette's {session_id}: [^/]+
_MAPPED = tuple(ERRORS.exception_types)


def _is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class UploadUrlsHotPath:
    """``POST /v1/sessions/{session_id}/upload-urls`` without FastAPI's per-request machinery.

    The call every upload makes, often: FastAPI's routing, dependency solving and response
    re-validation cost about three times the call's own work. This ASGI layer sits inside the
    gateway's middleware (metrics, security headers, CORS, body limit) and answers with the same body
    model, service call, answer model and error envelope as the route; a request it would not answer
    exactly as the route does (not ``application/json``, a body the model refuses) goes on to the
    route itself with the body already read, so FastAPI writes that answer as before.
    """

    def __init__(self, app, service: SessionService, api: FastAPI) -> None:
        self.app = app
        self._service = service
        self._api = api
        self._route = None

    def _the_route(self):
        if self._route is None:
            self._route = [r for r in self._api.routes if getattr(r, "path", None) == UPLOAD_URLS_TEMPLATE]
        return self._route[0] if self._route else None

    async def __call__(self, scope, receive, send) -> None:
        match = (_UPLOAD_URLS_PATH.fullmatch(scope["path"])
                 if scope["type"] == "http" and scope["method"] == "POST" else None)
        if match is None:
            await self.app(scope, receive, send)
            return
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"authorization" and authorization is None:
                authorization = value
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the route decides, as before
                await self.app(scope, _replay(b"".join(chunks), receive, message), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        parsed = None
        if _is_json(content_type):
            try:
                parsed = UploadUrlsIn.model_validate(json.loads(body))
            except (ValueError, ValidationError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                parsed = None
        if parsed is None:
            await self.app(scope, _replay(body, receive), send)
            return
        route = self._the_route()
        if route is not None:
            scope["route"] = route  # what the metrics label the request with
        files = [FileSpec(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256, content_type=f.content_type)
                 for f in parsed.files]
        try:
            targets = await self._service.create_upload_urls(
                authorization.decode("latin-1") if authorization is not None else None, match.group(1), files)
        except _MAPPED as err:
            status = ERRORS.status_for(err)
            if status is None:
                raise
            response = JSONResponse(http_error_body(status), status_code=status.http_status,
                                    headers=http_headers(status))
        else:
            response = Response(upload_urls_out(targets).model_dump_json().encode(), media_type="application/json")
        await response(scope, receive, send)


def _replay(body: bytes, receive, last: dict | None = None):
    """A receive that gives ``body`` first (then ``last``, if the client had left), then the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    if last is not None:
        pending.append(last)

    async def replay() -> dict:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


_NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>Scale Diffusion</title></head>
<body><h1>Scale Diffusion gateway</h1><p>The game is not built into this gateway. The HTTP API is
under <code>/v1/</code>; its reference is at <a href="/docs">/docs</a>.</p></body></html>"""


_HTTP_CODES = {400: "invalid_argument", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def create_app(service: SessionService, signaling: DiffusionSignaling, *, cors_origins: list[str],
               local_store=None, web_dir: Path | None = None, max_json_body_bytes: int = 1024 * 1024,
               csp_connect_origins: list[str] | None = None, ice: IceConfig | None = None,
               hosted: HostedDiffusion | None = None, wallets: WalletLinking | None = None,
               upload_urls_hot_path: bool = True) -> FastAPI:
    """The gateway's ASGI app. `local_store` set: it also receives uploads for the embedded store.

    ``upload_urls_hot_path``: answer upload-urls in ``UploadUrlsHotPath`` (off: only the FastAPI route,
    which the tests compare it with).
    """
    hosted = hosted or HostedDiffusion("off")
    app = FastAPI(title="Scale Diffusion gateway", version="1",
                  description="Player identity, sessions, presigned uploads and diffusion signaling. "
                              "Every error answers `ErrorOut`.",
                  docs_url=None, redoc_url=None)  # the reference below needs no third-party script

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operations in doc.get("paths", {}).values():
                for op in operations.values():
                    op.get("responses", {}).pop("422", None)  # FastAPI's default; this API answers 400
            schemas = doc.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
    if upload_urls_hot_path:  # innermost of the middleware added here: every one of them still applies
        app.add_middleware(UploadUrlsHotPath, service=service, api=app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_json_body_bytes, exempt_prefixes=("/v1/store/",))
    app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["ETag", "Retry-After"],
                       max_age=600)
    app.add_middleware(SecurityHeadersMiddleware, csp=content_security_policy(csp_connect_origins or []))
    app.add_middleware(HttpMetricsMiddleware, service="gateway")

    async def _mapped_error(_req: Request, err: Exception) -> JSONResponse:
        status = ERRORS.status_for(err)  # the same table the gRPC API answers from
        return JSONResponse(http_error_body(status), status_code=status.http_status, headers=http_headers(status))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, err: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(err.status_code, f"http_{err.status_code}")
        return JSONResponse({"error": {"code": code, "message": str(err.detail), "problems": []}},
                            status_code=err.status_code, headers=dict(err.headers or {}))

    for exc_type in ERRORS.exception_types:
        app.add_exception_handler(exc_type, _mapped_error)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_req: Request, err: RequestValidationError) -> JSONResponse:
        problems = [{"code": "invalid_field", "path": ".".join(str(x) for x in e["loc"][1:]), "message": e["msg"]}
                    for e in err.errors()]
        return JSONResponse({"error": {"code": "invalid_argument", "message": "request body is invalid",
                                       "problems": problems}}, status_code=400)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(api_reference_html(app.openapi()))

    @app.post("/v1/players", response_model=CreatePlayerOut, status_code=201,
              **_documented("POST", "/v1/players"))
    async def create_player(body: CreatePlayerIn, request: Request) -> CreatePlayerOut:
        player_id, token = await service.create_player(body.client_build, request.client.host if request.client else "")
        return CreatePlayerOut(player_id=player_id, device_token=token)

    @app.get("/v1/players/me", response_model=PlayerOut,
              **_documented("GET", "/v1/players/me"))
    async def get_player(authorization: Auth = None) -> PlayerOut:
        t = await service.player_totals(await service.authenticate(authorization))
        return PlayerOut(**t.__dict__)

    @app.post("/v1/sessions", response_model=SessionOut, status_code=201,
              **_documented("POST", "/v1/sessions"))
    async def create_session(body: CreateSessionIn, authorization: Auth = None) -> SessionOut:
        player = await service.authenticate(authorization)
        return session_out(await service.create_session(player, body.client_build, body.city, body.route_id))

    @app.get("/v1/sessions", response_model=SessionListOut,
              **_documented("GET", "/v1/sessions"))
    async def list_sessions(page_size: int = 50, page_token: str = "", authorization: Auth = None) -> SessionListOut:
        rows, nxt = await service.list_sessions(await service.authenticate(authorization), page_size, page_token)
        return SessionListOut(sessions=[session_out(r) for r in rows], next_page_token=nxt)

    @app.get("/v1/sessions/{session_id}", response_model=SessionOut,
              **_documented("GET", "/v1/sessions/{session_id}"))
    async def get_session(session_id: str, authorization: Auth = None) -> SessionOut:
        return session_out(await service.get_session(await service.authenticate(authorization), session_id))

    @app.post("/v1/sessions/{session_id}/upload-urls", response_model=UploadUrlsOut,
              **_documented("POST", "/v1/sessions/{session_id}/upload-urls"))
    async def upload_urls(session_id: str, body: UploadUrlsIn, authorization: Auth = None) -> UploadUrlsOut:
        targets = await service.create_upload_urls(authorization, session_id,
                                                   [FileSpec(**f.model_dump()) for f in body.files])
        return upload_urls_out(targets)  # UploadUrlsHotPath answers the same; this serves what it passes on

    @app.post("/v1/sessions/{session_id}/multipart/complete", response_model=CompleteMultipartOut,
              **_documented("POST", "/v1/sessions/{session_id}/multipart/complete"))
    async def complete_multipart(session_id: str, body: CompleteMultipartIn,
                                 authorization: Auth = None) -> CompleteMultipartOut:
        player = await service.authenticate(authorization)
        size = await service.complete_multipart(player, session_id, body.path, body.multipart_upload_id,
                                                [(p.part_number, p.etag) for p in body.parts])
        return CompleteMultipartOut(size_bytes=size)

    @app.post("/v1/sessions/{session_id}/complete", response_model=CompleteSessionOut,
              **_documented("POST", "/v1/sessions/{session_id}/complete"))
    async def complete_session(session_id: str, authorization: Auth = None) -> CompleteSessionOut:
        result = await service.complete_session(await service.authenticate(authorization), session_id)
        return CompleteSessionOut(session=session_out(result.session), accepted=result.accepted,
                                  problems=[ProblemOut(**p.to_dict()) for p in result.problems])

    @app.post("/v1/diffusion/offer", response_model=OfferOut,
              **_documented("POST", "/v1/diffusion/offer"))
    async def diffusion_offer(body: OfferIn, authorization: Auth = None) -> OfferOut:
        player = await service.authenticate(authorization)
        await service.get_session(player, body.session_id)
        ans = await signaling.offer(body.session_id, body.sdp_offer, body.prompt)
        return OfferOut(sdp_answer=ans.sdp_answer, stream_id=ans.stream_id, backend=ans.backend, model=ans.model)

    ice = ice or IceConfig()

    @app.get("/v1/diffusion/ice-servers", response_model=IceServersOut,
             **_documented("GET", "/v1/diffusion/ice-servers"))
    async def diffusion_ice_servers(authorization: Auth = None) -> IceServersOut:
        """The STUN/TURN servers for the game's peer connection; TURN credentials are the player's own."""
        servers, expires = ice.for_player(await service.authenticate(authorization))
        return IceServersOut(ice_servers=[IceServerOut(**s.model_dump()) for s in servers], expires_at=expires)

    @app.post("/v1/diffusion/hosted-token", response_model=HostedTokenOut,
              **_documented("POST", "/v1/diffusion/hosted-token"))
    async def hosted_token(body: HostedTokenIn, authorization: Auth = None) -> HostedTokenOut:
        """A client token of the hosted diffusion provider, for the game to stream to it directly."""
        player = await service.authenticate(authorization)
        await service.get_session(player, body.session_id)
        t = await hosted.mint(player, body.session_id)
        return HostedTokenOut(provider=t.provider, model=t.model, realtime_url=t.realtime_url, token=t.token,
                              expires_at=t.expires_at)

    if wallets is not None:
        _add_rewards_routes(app, service, wallets)

    if local_store is not None:
        @app.put("/v1/store/{key:path}", include_in_schema=False)
        async def receive_upload(key: str, request: Request) -> JSONResponse:
            length = request.headers.get("content-length")
            try:
                info = await local_store.receive_upload(
                    key=key, query=dict(request.query_params),
                    content_length=int(length) if length and length.isdigit() else None, body=request.stream())
            except ClientDisconnect:  # nothing was written: the partial body is removed with its temp file
                UPLOADS_ABORTED.inc()
                log.info("upload aborted: the client closed the connection mid-body", key=key,
                         content_length=length)
                return Response(status_code=CLIENT_CLOSED_STATUS)
            return JSONResponse({"size_bytes": info.size_bytes}, headers={"ETag": info.etag})

    if web_dir is not None and (web_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=web_dir, html=True), name="web")
    else:
        @app.get("/", include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse(_NOT_BUILT)

    return app


def _add_rewards_routes(app: FastAPI, service: SessionService, wallets: WalletLinking) -> None:
    """Wallet linking and the rewards views, each for the authenticated player only (docs/wallets.md)."""
    ingest = wallets.ingest

    @app.post("/v1/wallet/challenge", response_model=WalletChallengeOut,
              **_documented("POST", "/v1/wallet/challenge"))
    async def wallet_challenge(body: WalletChallengeIn, authorization: Auth = None) -> WalletChallengeOut:
        """A Sign-In With Solana message for the player's wallet to sign, valid once, until expires_at."""
        c = await wallets.challenge(await service.authenticate(authorization), body.address)
        return WalletChallengeOut(message=c.message, nonce=c.nonce, expires_at=c.expires_at)

    @app.post("/v1/wallet/link", response_model=WalletOut, **_documented("POST", "/v1/wallet/link"))
    async def wallet_link(body: WalletLinkIn, authorization: Auth = None) -> WalletOut:
        """Links the wallet that signed the challenge; every field and the signature are checked first."""
        return wallet_out(await wallets.link(await service.authenticate(authorization), body.message,
                                             body.signature))

    @app.get("/v1/wallet", response_model=WalletStateOut, **_documented("GET", "/v1/wallet"))
    async def wallet_get(authorization: Auth = None) -> WalletStateOut:
        """The player's linked wallet (null if none) and every link and unlink."""
        r = await wallets.get(await service.authenticate(authorization))
        return WalletStateOut(wallet=wallet_out(r.wallet) if r.HasField("wallet") else None, events=[
            WalletEventOut(action=e.action, address=e.address, at=_rfc3339(e.at)) for e in r.events])

    @app.delete("/v1/wallet", status_code=204, response_class=Response, **_documented("DELETE", "/v1/wallet"))
    async def wallet_unlink(authorization: Auth = None) -> Response:
        """Unlinks the player's wallet; pending points stay pending until a wallet is linked again."""
        await wallets.unlink(await service.authenticate(authorization))
        return Response(status_code=204)

    @app.get("/v1/sessions/{session_id}/outcome", response_model=SessionOutcomeOut,
             **_documented("GET", "/v1/sessions/{session_id}/outcome"))
    async def session_outcome(session_id: str, authorization: Auth = None) -> SessionOutcomeOut:
        """What became of one of the player's sessions: state, segments with reasons, points."""
        player = await service.authenticate(authorization)
        ingest.require()
        rec = await service.get_session(player, session_id)  # the player's own session, or 400/403/404
        try:
            return outcome_out(await ingest.session_outcome(player, session_id))
        except NotFound:  # uploaded here, not yet in the catalog
            return SessionOutcomeOut(session_id=session_id, state="waiting", final=False, accepted_s=0.0,
                                     rejected_s=0.0, points=0.0, segments=[],
                                     problems=[ProblemOut(**p.to_dict()) for p in rec.problems])

    @app.get("/v1/players/me/contributions", response_model=ContributionsOut,
             **_documented("GET", "/v1/players/me/contributions"))
    async def contributions(page_size: Annotated[int, Query(ge=1, le=200)] = 50, page_token: str = "",
                            authorization: Auth = None) -> ContributionsOut:
        """The player's credits (newest first), balances and today's cap."""
        player = await service.authenticate(authorization)
        return contributions_out(await ingest.contributions(player, page_size, page_token))

    @app.get("/v1/leaderboard", response_model=LeaderboardOut, **_documented("GET", "/v1/leaderboard"))
    async def leaderboard(week: Annotated[str, Query(pattern=r"^(\d{4}-W\d{2})?$")] = "",
                          authorization: Auth = None) -> LeaderboardOut:
        """Points credited in one ISO week (this week by default), highest first, the player's row marked."""
        player = await service.authenticate(authorization)
        return leaderboard_out(await ingest.leaderboard(player, week, LEADERBOARD_ROWS))
