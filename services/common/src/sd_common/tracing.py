"""OpenTelemetry traces for every service, off unless an OTLP endpoint is set.

``run_grpc_service`` calls ``configure_tracing`` once per process. With no endpoint nothing is
installed: no tracer provider, no interceptors, no middleware, and the SDK is never imported. With
one (``SD_OTEL_EXPORTER_OTLP_ENDPOINT``, or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``), every gRPC
server the runtime builds and every channel made with ``service_channel`` carries W3C trace
context, the gateway's HTTP API gets server spans, and spans about a session carry its id as
``sd.session_id``.
"""

from __future__ import annotations

import re
from typing import Any

import grpc
from opentelemetry import trace
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sd_common.interceptors import MethodWrappingInterceptor

SESSION_ATTRIBUTE = "sd.session_id"


class TracingSettings(BaseSettings):
    """Where spans go (``SD_OTEL_``); the standard ``OTEL_*`` names are read too."""

    model_config = SettingsConfigDict(env_prefix="SD_OTEL_", extra="ignore", frozen=True)

    exporter_otlp_endpoint: str = Field(
        "", validation_alias=AliasChoices("SD_OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/gRPC collector, e.g. http://otel-collector:4317; empty: tracing off")
    exporter_otlp_insecure: bool = Field(
        True, validation_alias=AliasChoices("SD_OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"),
        description="plaintext to the collector (a sidecar or in-cluster collector)")
    sample_ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of new traces recorded")


_provider: Any = None  # the SDK TracerProvider while tracing is on


def enabled() -> bool:
    """Tracing is configured in this process."""
    return _provider is not None


def configure_tracing(service: str, settings: TracingSettings, exporter: Any = None) -> bool:
    """Installs a tracer provider exporting to the configured OTLP endpoint (or to ``exporter``, for
    tests); returns whether tracing is on. Without either, installs nothing."""
    global _provider
    if exporter is None and not settings.exporter_otlp_endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    shutdown_tracing()
    provider = TracerProvider(resource=Resource.create({"service.name": f"sd-{service}"}),
                              sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=settings.exporter_otlp_endpoint, insecure=settings.exporter_otlp_insecure)))
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Flushes and removes the tracer provider (at exit, and between tests)."""
    global _provider
    if _provider is not None:
        provider, _provider = _provider, None
        provider.shutdown()


def tracer(name: str = "sd") -> trace.Tracer:
    """A tracer for spans the services open themselves (a no-op one while tracing is off)."""
    return _provider.get_tracer(name) if _provider is not None else trace.NoOpTracer()


def tag_session(session_id: str) -> None:
    """Puts the session id on the current span (nothing while tracing is off or no span is open)."""
    if session_id and _provider is not None:
        trace.get_current_span().set_attribute(SESSION_ATTRIBUTE, session_id)


def log_processor(_logger: Any, _method: str, event: dict) -> dict:
    """A structlog processor: a log line about a session tags the span it is written in."""
    sid = event.get("session_id")
    if isinstance(sid, str):
        tag_session(sid)
    return event


class _SessionTagInterceptor(MethodWrappingInterceptor):
    """Tags the call's span with the request's ``session_id`` field, when the request has one."""

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                tag_session(getattr(request, "session_id", ""))
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, request_deserializer=handler.request_deserializer,
                                                       response_serializer=handler.response_serializer)
        if not handler.unary_stream:
            return handler  # a client-streaming method: no request to read a session id from
        inner_stream = handler.unary_stream

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            tag_session(getattr(request, "session_id", ""))
            async for item in inner_stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(streaming, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """Interceptors a gRPC server puts first: a span per call, continuing the caller's trace."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # health probes (every few seconds per pod) and reflection are not worth a trace each
    untraced = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection."))
    return [aio_server_interceptor(tracer_provider=_provider, filter_=filters.negate(untraced)),
            _SessionTagInterceptor()]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel to another service: a span per call, trace context in the metadata."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors
    return list(aio_client_interceptors(tracer_provider=_provider))


def service_channel(target: str, options: list[tuple[str, Any]] | None = None) -> grpc.aio.Channel:
    """A channel from one service to another (traced when tracing is on)."""
    return grpc.aio.insecure_channel(target, options=options, interceptors=client_interceptors() or None)


def instrument_asgi_app(app: Any, session_id_in_path: re.Pattern[str] | None = None) -> bool:
    """Adds HTTP server spans to a FastAPI app (nothing while tracing is off); returns whether it did.

    ``session_id_in_path``: a pattern whose first group is the session id in a request path.
    """
    if _provider is None:
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    def on_request(span: Any, scope: dict) -> None:
        if session_id_in_path is not None and span.is_recording():
            m = session_id_in_path.search(scope.get("path", ""))
            if m:
                span.set_attribute(SESSION_ATTRIBUTE, m.group(1))

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, server_request_hook=on_request)
    return True
