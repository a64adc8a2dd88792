"""Prometheus metrics: the /metrics endpoint and per-RPC counters and latencies for gRPC servers."""

from __future__ import annotations

import time
from typing import Any

import grpc
from prometheus_client import Counter, Histogram, start_http_server

from sd_common.interceptors import MethodWrappingInterceptor

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)

GRPC_HANDLED = Counter(
    "sd_grpc_server_handled_total",
    "gRPC calls completed, by method and status code",
    ["service", "grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SECONDS = Histogram(
    "sd_grpc_server_handling_seconds",
    "Time to complete a gRPC call",
    ["service", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS_S,
)


def start_metrics_server(host: str, port: int) -> int:
    """Serves /metrics on a thread; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port


def _code_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> str:
    """The status the client sees: the one set on the context wins, else OK or UNKNOWN from the outcome."""
    code = context.code()
    if code is not None:
        if isinstance(code, grpc.StatusCode):
            return code.name
        for c in grpc.StatusCode:
            if c.value[0] == code:
                return c.name
    return "OK" if exc is None else "UNKNOWN"


class MetricsInterceptor(MethodWrappingInterceptor):
    """Counts and times every RPC by method and final status code."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        _, grpc_service, grpc_method = method.split("/", 2)
        labels = (self._service, grpc_service, grpc_method)
        seconds = GRPC_SECONDS.labels(*labels)

        def record(context: Any, start: float, exc: BaseException | None) -> None:
            seconds.observe(time.perf_counter() - start)
            GRPC_HANDLED.labels(*labels, _code_of(context, exc)).inc()

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                start, exc = time.perf_counter(), None
                try:
                    return await inner(request, context)
                except BaseException as e:
                    exc = e
                    raise
                finally:
                    record(context, start, exc)

            make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return make(unary, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, exc = time.perf_counter(), None
            try:
                async for item in inner_stream(request, context):
                    yield item
            except BaseException as e:
                exc = e
                raise
            finally:
                record(context, start, exc)

        make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return make(streaming, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


HTTP_REQUESTS = Counter(
    "sd_http_requests_total",
    "HTTP requests completed, by route template, method and status",
    ["service", "route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "sd_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS_S,
)


class HttpMetricsMiddleware:
    """ASGI middleware counting and timing requests by route template (never the raw path)."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_SECONDS.labels(self.service, template, scope["method"]).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(self.service, template, scope["method"], str(status)).inc()
