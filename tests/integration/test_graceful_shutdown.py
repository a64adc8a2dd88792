"""SIGTERM lets a call already in flight finish (an upload to the gateway, a session in the processor,
a dispatch in the ingest), or cuts it at the end of the grace period; then every service exits cleanly."""

import asyncio
import os
import queue
import signal
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from tests.ports import free_port


async def test_in_flight_upload_finishes_after_sigterm(tmp_path):
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "SD_GATEWAY_HTTP_PORT": str(http_port), "SD_GATEWAY_GRPC_PORT": str(grpc_port),
           "SD_GATEWAY_STATE_DIR": str(tmp_path / "gw"), "SD_STORE_ROOT": str(tmp_path / "store"),
           "SD_GATEWAY_SHUTDOWN_GRACE_S": "10", "SD_GATEWAY_LOG_FORMAT": "json"}
    proc = subprocess.Popen([sys.executable, "-m", "sd_gateway"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60  # a loaded 2-core machine can take many seconds to import it
            while True:
                try:
                    await http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, "the gateway exited during startup"
                    assert time.monotonic() < deadline, "the gateway did not answer /healthz within 60 s"
                    await asyncio.sleep(0.1)
            tok = (await http.post("/v1/players", json={})).json()["device_token"]
            h = {"Authorization": f"Bearer {tok}"}
            sid = (await http.post("/v1/sessions", json={}, headers=h)).json()["session_id"]
            size = 20 * 65536
            t = (await http.post(f"/v1/sessions/{sid}/upload-urls", headers=h,
                                 json={"files": [{"path": "events.jsonl", "size_bytes": size}]})).json()["targets"][0]
            started = asyncio.Event()

            async def slow_body():
                for i in range(20):
                    if i == 2:
                        started.set()
                    yield b"e" * 65536
                    await asyncio.sleep(0.1)  # about 2 s in all

            upload = asyncio.create_task(http.put(t["url"], content=slow_body(), headers=t["headers"]))
            await started.wait()
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            resp = await upload
            assert resp.status_code == 200, resp.text
            assert time.monotonic() - t0 > 0.5  # it really was still in flight when the signal came
        out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, out
        assert (tmp_path / "store" / "raw" / sid / "events.jsonl").stat().st_size == size
        # once stopped, nothing listens
        try:
            httpx.get(base + "/healthz", timeout=1)
            raise AssertionError("gateway still answering after shutdown")
        except httpx.TransportError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()


# Every other service: SIGTERM with a call in flight. A call that finishes within the grace period
# completes; one that never ends by itself is cut at the end of it; either way the exit is clean.

def _json_events(out: str, event: str) -> list[dict]:
    import json
    return [d for line in out.splitlines() if line.startswith("{") and (d := json.loads(line)).get("event") == event]


def test_the_processor_finishes_a_session_in_flight_after_sigterm(tmp_path, long_session_dir):
    from scale_diffusion.processor.v1 import processor_pb2, processor_pb2_grpc

    from tests.ingest_access import put_session_locally
    from tests.integration.test_service_runtime import start_service

    put_session_locally(tmp_path / "store", long_session_dir, "sess-drain")
    proc, grpc_port, _, _ = start_service("processor", tmp_path, {"SD_PROCESSOR_SHUTDOWN_GRACE_S": "60"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            stream = processor_pb2_grpc.ProcessorServiceStub(ch).ProcessSession(processor_pb2.ProcessSessionRequest(
                session_id="sess-drain", raw_uri="raw/sess-drain/", output_uri="processed/sess-drain/",
                attempt_id="1-drain"), timeout=120)
            first = next(stream)  # the session is being processed
            assert not first.HasField("result")
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            messages = [first, *stream]
        assert messages[-1].HasField("result") and not messages[-1].result.rejected
        assert messages[-1].result.segments_accepted > 0
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert time.monotonic() - signalled < 60
        assert _json_events(out, "processed") and _json_events(out, "stopped")
        assert (tmp_path / "store" / "processed" / "sess-drain" / "_SUCCESS.json").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_ingest_finishes_a_dispatch_in_flight_after_sigterm(tmp_path, long_session_dir):
    from sd_ingest.catalog import Catalog, SessionState

    from tests.ingest_access import put_session_locally
    from tests.integration.test_service_runtime import start_service

    processor, processor_port, _, _ = start_service("processor", tmp_path, {"SD_PROCESSOR_SHUTDOWN_GRACE_S": "60"})
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest, _, _, _ = start_service("ingest", tmp_path, {
        "SD_INGEST_SHUTDOWN_GRACE_S": "60", "SD_INGEST_DATABASE_URL": db, "SD_INGEST_SCAN_INTERVAL_S": "0.2",
        "SD_INGEST_RECEIVE_WAIT_S": "0.2", "SD_INGEST_PROCESSOR_TARGET": f"127.0.0.1:{processor_port}"})
    try:
        put_session_locally(tmp_path / "store", long_session_dir, "sess-drain")
        catalog = Catalog(db)
        try:
            deadline = time.monotonic() + 90
            while (rec := catalog.get_session("sess-drain")) is None or rec.state != SessionState.PROCESSING:
                assert time.monotonic() < deadline and ingest.poll() is None, "no dispatch started"
                time.sleep(0.05)
            ingest.send_signal(signal.SIGTERM)  # the processor is working on the session right now
            out, _ = ingest.communicate(timeout=90)
            assert ingest.returncode == 0, out
            rec = catalog.get_session("sess-drain")
            assert rec.state == SessionState.PROCESSED and rec.attempts == 1, (rec, out)
            assert _json_events(out, "stopped")
        finally:
            catalog.close()
    finally:
        for p in (ingest, processor):
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("name", ["diffusion", "trainer", "evaluator"])
def test_a_call_that_outlives_the_grace_period_is_cut_and_the_service_exits_cleanly(name, tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from tests.integration.test_service_runtime import start_service

    proc, grpc_port, _, _ = start_service(name, tmp_path, {f"SD_{name.upper()}_SHUTDOWN_GRACE_S": "2"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            requests = queue.Queue()
            stream = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter(requests.get, None))
            requests.put(reflection_pb2.ServerReflectionRequest(list_services=""))
            assert next(stream).list_services_response.service  # the call is open, and stays open
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            with pytest.raises(grpc.RpcError):
                next(stream)  # ended by the server at the end of its grace period, not by us
            requests.put(None)
        out, _ = proc.communicate(timeout=30)
        took_s = time.monotonic() - signalled
        assert proc.returncode == 0, out
        assert 1.5 < took_s < 20, took_s  # it waited for the call, and not much longer than the grace
        assert _json_events(out, "stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
