"""The one way a service starts: gRPC with health, reflection, metrics, error mapping, optional tracing,
any extra servers or loops it hosts, and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sd_common import tracing
from sd_common.error_mapping import STORE_RULES, ErrorMapping, ErrorMappingInterceptor
from sd_common.metrics import MetricsInterceptor, start_metrics_server
from sd_common.settings import ServiceSettings

log = structlog.get_logger()


@dataclass(frozen=True)
class Hosted:
    """Something a service runs beside its gRPC server (an HTTP server, a polling loop)."""

    name: str
    start: Callable[[], Awaitable[Any]]  # returns once it is serving
    stop: Callable[[], Awaitable[Any]]  # drains within the service's grace period


@dataclass
class GrpcRuntime:
    """One service's gRPC server with the standard health service and reflection.

    Usage: ``rt = GrpcRuntime("ingest", settings); rt.add(add_fn, servicer, full_name);
    rt.map_errors(ERRORS); rt.host("http", start, stop); rt.on_stop(close); await rt.start(); …;
    await rt.stop()`` — or hand a function doing the middle part to ``run_grpc_service``.
    """

    name: str
    settings: ServiceSettings
    server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    grpc_port: int = field(init=False, default=0)
    metrics_port: int = field(init=False, default=0)
    _services: list[str] = field(init=False, default_factory=list)
    _on_stop: list[Callable[[], Awaitable[Any]]] = field(init=False, default_factory=list)
    _hosted: list[Hosted] = field(init=False, default_factory=list)
    _started: list[Hosted] = field(init=False, default_factory=list)
    errors: ErrorMapping = field(init=False, default_factory=lambda: STORE_RULES)

    def __post_init__(self) -> None:
        # Outermost first: tracing and metrics see the status the error mapping chose.
        self.server = grpc.aio.server(
            interceptors=[*tracing.server_interceptors(), MetricsInterceptor(self.name),
                          ErrorMappingInterceptor(self.name, lambda: self.errors)],
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def add(self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any, full_name: str) -> None:
        """Registers a servicer under its full proto name (e.g. ``scale_diffusion.ingest.v1.IngestService``)."""
        add_to_server(servicer, self.server)
        self._services.append(full_name)

    def map_errors(self, mapping: ErrorMapping) -> None:
        """Ends every call whose handler raised with the status ``mapping`` gives (the service's table)."""
        self.errors = mapping

    def host(self, name: str, start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]) -> None:
        """Runs ``start`` once gRPC serves, and ``stop`` beside the gRPC drain at shutdown."""
        self._hosted.append(Hosted(name, start, stop))

    def on_stop(self, fn: Callable[[], Awaitable[Any]]) -> None:
        """Runs ``fn`` after the server stopped taking calls (close pools, flush queues)."""
        self._on_stop.append(fn)

    async def start(self) -> int:
        """Binds, starts serving, marks every service SERVING; returns the bound gRPC port."""
        reflection.enable_server_reflection(
            [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.grpc_port = self.server.add_insecure_port(f"{self.settings.grpc_host}:{self.settings.grpc_port}")
        if self.grpc_port == 0:
            raise OSError(f"{self.name}: cannot bind gRPC to {self.settings.grpc_host}:{self.settings.grpc_port}")
        self.metrics_port = start_metrics_server(self.settings.metrics_host, self.settings.metrics_port)
        await self.server.start()
        try:
            for hosted in self._hosted:
                await hosted.start()
                self._started.append(hosted)
        except BaseException:
            await self.stop()
            raise
        for svc in ["", *self._services]:
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", grpc_port=self.grpc_port, metrics_port=self.metrics_port, services=self._services,
                 hosted=[h.name for h in self._hosted], tracing=tracing.enabled())
        return self.grpc_port

    async def stop(self) -> None:
        """Reports NOT_SERVING, lets in-flight work finish within the grace period, then closes.

        The gRPC server and everything hosted drain side by side (one grace period, not one each);
        the ``on_stop`` functions run afterwards, last registered first.
        """
        await self.health.enter_graceful_shutdown()
        started, self._started = self._started, []
        results = await asyncio.gather(self.server.stop(self.settings.shutdown_grace_s),
                                       *(h.stop() for h in reversed(started)), return_exceptions=True)
        for fn in reversed(self._on_stop):
            await fn()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        log.info("stopped")


async def wait_for_shutdown_signal() -> None:
    """Returns on the first SIGTERM or SIGINT (Kubernetes sends SIGTERM; Ctrl-C sends SIGINT)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def run_service(rt: GrpcRuntime) -> None:
    """Starts the runtime, serves until a shutdown signal, then stops gracefully."""
    await rt.start()
    await wait_for_shutdown_signal()
    log.info("shutting down", grace_s=rt.settings.shutdown_grace_s)
    await rt.stop()


def run_grpc_service(name: str, settings: ServiceSettings,
                     register: Callable[[GrpcRuntime], Awaitable[Any] | None]) -> None:
    """Every service's whole `main()`: logging, tracing (when configured), a runtime built inside the
    event loop by ``register`` (sync or async: add servicers, map errors, host extra servers), serve
    until signalled, stop gracefully."""
    from sd_common.logs import configure_logging

    configure_logging(name, settings.log_format, settings.log_level)
    tracing.configure_tracing(name, tracing.TracingSettings())

    async def serve() -> None:
        rt = GrpcRuntime(name, settings)
        built = register(rt)
        if inspect.isawaitable(built):
            await built
        await run_service(rt)

    try:
        asyncio.run(serve())
    finally:
        tracing.shutdown_tracing()
