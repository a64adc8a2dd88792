"""End to end over the cluster code path: S3-protocol store and SQS queue on loopback (moto_server).

Gateway and ingest in this process; the processor is either the ingest's scripted stand-in
(``fake``, which proves the ingest's side today) or the REAL processor as its own process
(``real``, which waits for services/processor: while it answers UNIMPLEMENTED that case fails and
says so). Upload through the gateway → S3 event on SQS → ingest → processor → segments and QC report
in S3 → `sdctl dataset create` lists them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_common.upload_client import GatewayClient
from sd_gateway.assembly import start_gateway
from sd_gateway.settings import GatewaySettings
from sd_ingest.assembly import start_ingest
from sd_ingest.catalog import SessionState
from sd_ingest.settings import IngestSettings

from tests.ports import free_port

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[2]
SDCTL = str(Path(sys.executable).parent / "sdctl")
S = SessionState


def _fake_processor_module():
    spec = importlib.util.spec_from_file_location(
        "ingest_fake_processor", REPO / "services" / "ingest" / "tests" / "fake_processor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def session_6s(tmp_path_factory) -> Path:
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth6-s3")
    synth_session(out, SynthConfig(width=256, height=144, duration_s=6.0, seed=41))
    return out / "session"


async def _start_real_processor(port: int, store: StoreSettings, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "SD_PROCESSOR_GRPC_PORT": str(port), "SD_PROCESSOR_METRICS_PORT": "0",
           "SD_PROCESSOR_STATE_DIR": str(tmp / "processor"), "SD_STORE_BACKEND": "s3", "SD_STORE_BUCKET": store.bucket,
           "SD_STORE_ENDPOINT_URL": store.endpoint_url, "SD_STORE_REGION": store.region}
    log = open(tmp / "processor.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sd_processor"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        while True:
            assert proc.poll() is None, (tmp / "processor.log").read_text()
            try:
                r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return proc
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, "the real processor did not become healthy"
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("processor", ["fake", "real"])
async def test_upload_to_s3_becomes_processed_segments_and_a_dataset(
        processor, moto_server, bucket_and_queue, session_6s, tmp_path):
    bucket, queue_url = bucket_and_queue
    store_settings = StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION,
                                   queue_url=queue_url)
    port = free_port()
    stop_processor = None
    if processor == "fake":
        fake = _fake_processor_module()
        proc_store = make_store(store_settings)
        server, port, _ = await fake.start_fake_processor(proc_store, ["ok"], tmp_path / "calls", port)

        async def stop_processor() -> None:
            await server.stop(0)
            await proc_store.close()
    else:
        real = await _start_real_processor(port, store_settings, tmp_path)

        async def stop_processor() -> None:
            real.terminate()
            await asyncio.to_thread(real.wait, 30)

    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             store_settings)
    ingest = await start_ingest(IngestSettings(
        grpc_port=0, metrics_port=0, state_dir=tmp_path / "ingest", processor_target=f"127.0.0.1:{port}",
        scan_interval_s=0.2, receive_wait_s=1, retry_backoff_s=0.3, max_attempts=2, lease_s=10,
        visibility_timeout_s=10, shutdown_grace_s=1), store_settings)
    client = GatewayClient(gw.base_url)
    try:
        result = await client.upload_session(session_6s)
        assert result.accepted, result.problems
        sid = result.session_id
        deadline = time.monotonic() + 120
        while True:
            rec = ingest.catalog.get_session(sid)
            if rec and rec.state in (S.PROCESSED, S.FAILED, S.REJECTED):
                break
            assert time.monotonic() < deadline, f"session {sid} is still {rec and rec.state} after 120 s"
            await asyncio.sleep(0.2)
        assert rec.state == S.PROCESSED, (rec.state, rec.last_error, rec.problems)
        assert rec.segments_accepted >= 1 and rec.attempts == 1
        segments = json.loads(await ingest.store.get_bytes(f"processed/{sid}/segments.json", max_bytes=1 << 24))
        assert await ingest.store.head(f"processed/{sid}/qc_report.json") is not None
        accepted = [s for s in segments["segments"] if s["accepted"]]
        assert await ingest.store.head(f"processed/{sid}/{accepted[0]['segment_id']}/measurements.json") is not None
        assert await ingest.store.head(f"raw/{sid}/video.webm") is not None

        target = f"127.0.0.1:{ingest.grpc_port}"
        proc = await asyncio.create_subprocess_exec(SDCTL, "dataset", "create", "--ingest", target, "--json",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        dataset = json.loads(out)["dataset"]
        assert dataset["segments"] == len(accepted)
        proc = await asyncio.create_subprocess_exec(SDCTL, "dataset", "list", "--ingest", target, "--json",
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert [d["dataset_id"] for d in json.loads(out)] == [dataset["dataset_id"]]
        manifest = await ingest.store.get_bytes(dataset["manifest_uri"], max_bytes=1 << 24)
        assert {s["segment_id"] for s in json.loads(manifest)["segments"]} == {s["segment_id"] for s in accepted}
        assert await ingest.store.head(f"datasets/{dataset['dataset_id']}/lerobot/meta/info.json") is not None
    finally:
        await client.close()
        await ingest.stop()
        await gw.stop()
        await stop_processor()
