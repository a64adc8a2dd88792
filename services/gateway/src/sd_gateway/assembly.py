"""Builds a running gateway — gRPC and HTTP in one event loop — from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
import uvicorn

from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import make_store
from sd_common.objectstore.local import LocalObjectStore
from sd_common.secret_files import load_or_create_secret
from sd_common.settings import StoreSettings
from sd_gateway.database import GatewayDatabase
from sd_gateway.http_api import create_app
from sd_gateway.server import register
from sd_gateway.sessions import SessionService
from sd_gateway.settings import GatewaySettings
from sd_gateway.signaling import DiffusionSignaling
from sd_gateway.tokens import DeviceTokens

log = structlog.get_logger()


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
    _http: _Uvicorn
    _http_task: asyncio.Task
    _db: GatewayDatabase
    _store: object
    _signaling: DiffusionSignaling

    async def stop(self) -> None:
        """Stops taking requests, drains both servers, closes the database and store."""
        self._http.should_exit = True
        await self._rt.stop()
        await self._http_task
        await self._signaling.close()
        await self._store.close()
        self._db.close()


def _store_origins(store_settings: StoreSettings) -> list[str]:
    """Where the browser PUTs its uploads when that is not the gateway itself."""
    if store_settings.backend != "s3":
        return []
    if store_settings.endpoint_url:
        parts = urlsplit(store_settings.endpoint_url)
        return [f"{parts.scheme}://{parts.netloc}"]
    return ["https://*.amazonaws.com"]


async def start_gateway(settings: GatewaySettings, store_settings: StoreSettings) -> RunningGateway:
    """Binds, builds and starts the gateway; returns once both servers accept connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.http_host, settings.http_port))
    http_port = sock.getsockname()[1]
    base_url = f"http://{settings.http_host if settings.http_host != '0.0.0.0' else '127.0.0.1'}:{http_port}"

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    secret = (settings.token_secret.get_secret_value().encode() if settings.token_secret
              else load_or_create_secret(settings.state_dir / "token-secret"))
    db = GatewayDatabase(settings.database_url or f"sqlite:///{settings.state_dir / 'gateway.db'}")
    if store_settings.backend == "local" and "public_base_url" not in store_settings.model_fields_set:
        # not configured (neither in the environment nor in code): uploads come to this gateway
        store_settings = store_settings.model_copy(update={"public_base_url": base_url})
    store = make_store(store_settings)
    signaling = DiffusionSignaling(settings.diffusion_target)
    service = SessionService(
        settings, db, store, DeviceTokens(secret, settings.token_ttl_days * 86400),
        url_expiry_s=store_settings.url_expiry_s,
        multipart_threshold_bytes=store_settings.multipart_threshold_bytes,
        multipart_part_bytes=store_settings.multipart_part_bytes,
        max_object_bytes=store_settings.max_object_bytes)

    rt = GrpcRuntime("gateway", settings)
    register(rt, service, signaling)
    await rt.start()

    app = create_app(service, signaling, cors_origins=settings.cors_origins,
                     local_store=store if isinstance(store, LocalObjectStore) else None,
                     web_dir=settings.web_dir, max_json_body_bytes=settings.max_json_body_bytes,
                     csp_connect_origins=[*settings.csp_connect_origins, *_store_origins(store_settings)])
    http = _Uvicorn(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                   timeout_graceful_shutdown=int(settings.shutdown_grace_s)))
    task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started:
        if task.done():
            await task
            raise RuntimeError("gateway HTTP server exited during startup")
        await asyncio.sleep(0.01)
    log.info("http serving", url=base_url, store=store_settings.backend)
    return RunningGateway(http_port, rt.grpc_port, rt.metrics_port, base_url, rt, http, task, db, store, signaling)
