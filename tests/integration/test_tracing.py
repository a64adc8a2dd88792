"""Traces across services: one request gives connected spans in two real services (trace context
carried over gRPC), the session id rides on them, an OTLP endpoint set in the environment receives a
real service's spans, and with no endpoint nothing is installed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sd_common import tracing
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.settings import StoreSettings
from tests.ingest_access import put_session
from tests.ports import free_port

SESSION = tracing.SESSION_ATTRIBUTE


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing("test", tracing.TracingSettings(), exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def _chain_to(span, by_id: dict) -> list:
    """The span and its ancestors, nearest first."""
    out = [span]
    while out[-1].parent is not None and out[-1].parent.span_id in by_id:
        out.append(by_id[out[-1].parent.span_id])
    return out


async def test_an_http_request_is_one_trace_through_the_gateway_and_the_diffusion_service(spans, tmp_path):
    from sd_diffusion.server import register as register_diffusion
    from sd_diffusion.settings import DiffusionSettings
    from sd_gateway.assembly import start_gateway
    from sd_gateway.settings import GatewaySettings

    diffusion = GrpcRuntime("diffusion", DiffusionSettings(grpc_port=0, metrics_port=0, shutdown_grace_s=0.5))
    register_diffusion(diffusion)
    await diffusion.start()
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw",
                                             shutdown_grace_s=0.5,
                                             diffusion_target=f"127.0.0.1:{diffusion.grpc_port}"),
                             StoreSettings(backend="local", root=tmp_path / "store"))
    try:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
            tok = (await http.post("/v1/players", json={})).json()["device_token"]
            h = {"Authorization": f"Bearer {tok}"}
            sid = (await http.post("/v1/sessions", json={}, headers=h)).json()["session_id"]
            assert (await http.get(f"/v1/sessions/{sid}", headers=h)).status_code == 200
            [get] = [s for s in spans.get_finished_spans()
                     if s.kind == SpanKind.SERVER and s.name == "GET /v1/sessions/{session_id}"]
            assert get.attributes[SESSION] == sid  # an HTTP request about a session carries its id
            spans.clear()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{diffusion.grpc_port}") as ch:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            r = await http.post("/v1/diffusion/offer", json={"session_id": sid, "sdp_offer": "v=0\r\n"}, headers=h)
            assert r.status_code == 400  # the diffusion service refuses an offer with no video
    finally:
        await gw.stop()
        await diffusion.stop()
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    method = "/scale_diffusion.diffusion.v1.DiffusionService/CreateStream"
    [server] = [s for s in finished if s.kind == SpanKind.SERVER and s.name == method]
    [client] = [s for s in finished if s.kind == SpanKind.CLIENT and s.name == method]
    [http_span] = [s for s in finished if s.kind == SpanKind.SERVER and "/v1/diffusion/offer" in s.name]
    # the diffusion service's span continues the gateway's call, which sits inside the HTTP request
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert http_span in _chain_to(client, by_id)
    assert not [s for s in finished if "grpc.health" in s.name]  # probes are not traced
    assert server.context.trace_id == client.context.trace_id == http_span.context.trace_id
    assert server.parent.is_remote  # it came over the wire, in the call's metadata
    assert server.attributes[SESSION] == sid  # from the request's session_id
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # gRPC server spans are per service: both runtimes traced their calls
    assert {s.resource.attributes["service.name"] for s in finished} == {"sd-test"}


async def test_a_dispatch_is_one_trace_through_the_ingest_and_the_real_processor(spans, tmp_path, session_6s):
    from sd_ingest.assembly import start_ingest
    from sd_ingest.catalog import SessionState
    from sd_ingest.settings import IngestSettings
    from sd_processor.__main__ import build as build_processor
    from sd_processor.settings import ProcessorSettings

    store_settings = StoreSettings(backend="local", root=tmp_path / "store")
    processor = GrpcRuntime("processor", ProcessorSettings(grpc_port=0, metrics_port=0, shutdown_grace_s=1,
                                                           work_dir=tmp_path / "work"))
    build_processor(processor, store_settings)
    await processor.start()
    ingest = await start_ingest(IngestSettings(
        grpc_port=0, metrics_port=0, state_dir=tmp_path / "ingest", database_url=f"sqlite:///{tmp_path / 'c.db'}",
        processor_target=f"127.0.0.1:{processor.grpc_port}", scan_interval_s=0.1, receive_wait_s=0.1,
        shutdown_grace_s=1), store_settings)
    sid = "sess-traced"
    try:
        await put_session(store_settings, session_6s, sid, "p-trace")
        deadline = time.monotonic() + 120
        while (rec := ingest.catalog.get_session(sid)) is None or rec.state not in (
                SessionState.PROCESSED, SessionState.FAILED):
            assert time.monotonic() < deadline, "the session was not processed in time"
            await asyncio.sleep(0.2)
        assert rec.state == SessionState.PROCESSED, rec.last_error
    finally:
        await ingest.stop()
        await processor.stop()
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished}
    method = "/scale_diffusion.processor.v1.ProcessorService/ProcessSession"
    [server] = [s for s in finished if s.kind == SpanKind.SERVER and s.name == method]
    [client] = [s for s in finished if s.kind == SpanKind.CLIENT and s.name == method]
    [dispatch] = [s for s in finished if s.name == "ingest dispatch"]
    assert server.parent.is_remote and server.parent.span_id == client.context.span_id
    assert dispatch in _chain_to(client, by_id)
    assert server.context.trace_id == dispatch.context.trace_id
    assert dispatch.attributes[SESSION] == sid and server.attributes[SESSION] == sid
    # every pipeline step of the session is a span carrying its id
    steps = {s.name for s in finished if s.attributes.get(SESSION) == sid}
    assert {"ingest check", "ingest validate", "ingest dispatch"} <= steps


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, object]] = []

    async def Export(self, request, context):
        for rs in request.resource_spans:
            resource = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                self.spans.extend((resource, s) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


_PROBE = """
import asyncio, sys
from sd_common import tracing
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.settings import StoreSettings
from sd_gateway.assembly import build_gateway
from sd_gateway.settings import GatewaySettings
on = tracing.configure_tracing("gateway", tracing.TracingSettings())
async def main():
    rt = GrpcRuntime("gateway", GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=sys.argv[1]))
    await build_gateway(rt, StoreSettings(root=sys.argv[2]))
    await rt.start()
    await rt.stop()
asyncio.run(main())
print(on, tracing.server_interceptors(), tracing.client_interceptors(),
      sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation"))))
"""


def test_with_no_endpoint_nothing_is_installed(tmp_path):
    env = {k: v for k, v in os.environ.items() if "OTEL" not in k}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "gw"), str(tmp_path / "store")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False [] [] []"
    # the same probe with an endpoint set does load and install the instrumentation
    env["SD_OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    on = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "gw2"), str(tmp_path / "store")], env=env,
                        capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    last = on.stdout.strip().splitlines()[-1]
    assert last.startswith("True [") and "opentelemetry.instrumentation.fastapi" in last


async def test_a_service_process_exports_its_spans_to_the_configured_otlp_endpoint(tmp_path):
    collector = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    grpc_port = free_port()
    env = {**{k: v for k, v in os.environ.items() if "OTEL" not in k},
           "SD_OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "SD_TRAINER_GRPC_PORT": str(grpc_port),
           "SD_TRAINER_METRICS_PORT": "0", "SD_TRAINER_LOG_FORMAT": "json",
           "SD_TRAINER_STATE_DIR": str(tmp_path / "trainer"), "SD_STORE_ROOT": str(tmp_path / "store")}
    proc = subprocess.Popen([sys.executable, "-m", "sd_trainer"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        from scale_diffusion.trainer.v1 import trainer_pb2, trainer_pb2_grpc
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            await ch.channel_ready()
            await trainer_pb2_grpc.TrainerServiceStub(ch).ListTrainingRuns(
                trainer_pb2.ListTrainingRunsRequest(), timeout=10, wait_for_ready=True)
        proc.send_signal(signal.SIGTERM)  # a clean exit flushes what is batched
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            proc.kill()
        await server.stop(0)
    names = {(r.get("service.name"), s.name) for r, s in collector.spans}
    assert ("sd-trainer", "/scale_diffusion.trainer.v1.TrainerService/ListTrainingRuns") in names, names


@pytest.fixture(scope="module")
def session_6s(tmp_path_factory) -> Path:
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth6-trace")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=6.0, seed=23))
    return out / "session"
