"""Builds a running gateway — gRPC and HTTP in one event loop — from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
import uvicorn

from sd_common import tracing
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import make_store
from sd_common.objectstore.local import LocalObjectStore
from sd_common.secret_files import load_or_create_secret
from sd_common.settings import StoreSettings
from sd_gateway.database import GatewayDatabase
from sd_gateway.hosted import HostedDiffusion
from sd_gateway.http_api import create_app
from sd_gateway.rewards_client import IngestRewardsClient
from sd_gateway.server import register
from sd_gateway.sessions import SessionService
from sd_gateway.settings import GatewaySettings
from sd_gateway.ice import IceConfig
from sd_gateway.ratelimit import make_limiter
from sd_gateway.signaling import DiffusionSignaling
from sd_gateway.tokens import DeviceTokens
from sd_gateway.wallets import WalletLinking

log = structlog.get_logger()
# where a request path names a session (the API's routes and the embedded store's upload keys)
_SESSION_IN_PATH = re.compile(r"/(?:sessions|raw)/([A-Za-z0-9_.-]+)")


class _Uvicorn(uvicorn.Server):
    """Uvicorn without its own signal handling: the gateway stops HTTP and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


@dataclass
class RunningGateway:
    """A started gateway: its bound ports and how to stop it."""

    http_port: int
    grpc_port: int
    metrics_port: int
    base_url: str
    _rt: GrpcRuntime
    _db: GatewayDatabase  # the parts tests reach into to set up states a client cannot make
    _store: object

    async def stop(self) -> None:
        """Stops taking requests, drains both servers, closes the database and store."""
        await self._rt.stop()


def _store_origins(store_settings: StoreSettings) -> list[str]:
    """Where the browser PUTs its uploads when that is not the gateway itself."""
    if store_settings.backend != "s3":
        return []
    if store_settings.endpoint_url:
        parts = urlsplit(store_settings.endpoint_url)
        return [f"{parts.scheme}://{parts.netloc}"]
    return ["https://*.amazonaws.com"]


@dataclass
class GatewayParts:
    """What build_gateway made: the bound HTTP port and URL, and the records and store it serves."""

    http_port: int
    base_url: str
    db: GatewayDatabase
    store: object


async def build_gateway(rt: GrpcRuntime, store_settings: StoreSettings) -> GatewayParts:
    """Builds the gateway into ``rt``: gRPC API, the HTTP server it hosts, what closes at shutdown.

    Binds the HTTP socket now (its URL is the local store's upload URL).
    """
    settings: GatewaySettings = rt.settings  # type: ignore[assignment]
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections whose socket says so, and an
    # accepted socket inherits this one's. Without it every answer (headers, then body) waited on
    # Nagle's algorithm and the client's delayed ACK: about 40 ms a call.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.http_host, settings.http_port))
    http_port = sock.getsockname()[1]
    base_url = f"http://{settings.http_host if settings.http_host != '0.0.0.0' else '127.0.0.1'}:{http_port}"

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    secret = (settings.token_secret.get_secret_value().encode() if settings.token_secret
              else load_or_create_secret(settings.state_dir / "token-secret"))
    db = GatewayDatabase(settings.database_url or f"sqlite:///{settings.state_dir / 'gateway.db'}")
    rt.on_stop(db.aclose)
    if store_settings.backend == "local" and "public_base_url" not in store_settings.model_fields_set:
        # not configured (neither in the environment nor in code): uploads come to this gateway
        store_settings = store_settings.model_copy(update={"public_base_url": base_url})
    store = make_store(store_settings)
    rt.on_stop(store.close)
    signaling = DiffusionSignaling(settings.diffusion_target, resolve_every_s=settings.diffusion_resolve_every_s)
    rt.on_stop(signaling.close)
    hosted = HostedDiffusion(
        settings.hosted_diffusion, api_key=settings.mirage_api_key, api_url=settings.mirage_api_url,
        realtime_url=settings.mirage_realtime_url, model=settings.mirage_model,
        token_ttl_s=settings.mirage_token_ttl_s, timeout_s=settings.mirage_timeout_s,
        tokens_per_minute=settings.hosted_tokens_per_minute, tokens_burst=settings.hosted_tokens_burst,
        limiter=make_limiter(settings.rate_limit_store, db.engine, "hosted_tokens",
                             settings.hosted_tokens_per_minute, settings.hosted_tokens_burst, pg=db.async_pg))
    rt.on_stop(hosted.close)
    service = SessionService(
        settings, db, store, DeviceTokens(secret, settings.token_ttl_days * 86400),
        url_expiry_s=store_settings.url_expiry_s,
        multipart_threshold_bytes=store_settings.multipart_threshold_bytes,
        multipart_part_bytes=store_settings.multipart_part_bytes,
        max_object_bytes=store_settings.max_object_bytes)
    register(rt, service, signaling)
    ingest = IngestRewardsClient(settings.ingest_target, timeout_s=settings.ingest_timeout_s)
    rt.on_stop(ingest.close)

    app = create_app(service, signaling, cors_origins=settings.cors_origins,
                     local_store=store if isinstance(store, LocalObjectStore) else None,
                     web_dir=settings.web_dir, max_json_body_bytes=settings.max_json_body_bytes,
                     csp_connect_origins=[*settings.csp_connect_origins, *_store_origins(store_settings),
                                          *hosted.connect_origins()],
                     ice=IceConfig.from_settings(settings), hosted=hosted,
                     wallets=WalletLinking(settings, db, ingest))
    tracing.instrument_asgi_app(app, session_id_in_path=_SESSION_IN_PATH)
    http = _Uvicorn(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                   timeout_graceful_shutdown=int(settings.shutdown_grace_s)))
    task: asyncio.Task | None = None

    async def start_http() -> None:
        nonlocal task
        task = asyncio.create_task(http.serve(sockets=[sock]))
        while not http.started:
            if task.done():
                await task
                raise RuntimeError("gateway HTTP server exited during startup")
            await asyncio.sleep(0.01)
        log.info("http serving", url=base_url, store=store_settings.backend)

    async def stop_http() -> None:
        http.should_exit = True
        if task is not None:
            await task

    rt.host("http", start_http, stop_http)
    return GatewayParts(http_port, base_url, db, store)


async def start_gateway(settings: GatewaySettings, store_settings: StoreSettings) -> RunningGateway:
    """Binds, builds and starts the gateway; returns once both servers accept connections."""
    rt = GrpcRuntime("gateway", settings)
    parts = await build_gateway(rt, store_settings)
    await rt.start()
    return RunningGateway(parts.http_port, rt.grpc_port, rt.metrics_port, parts.base_url, rt, parts.db, parts.store)
