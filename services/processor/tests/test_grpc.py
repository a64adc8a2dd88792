"""The processor service in-process (real gRPC server on an ephemeral port) over a local store in tmp."""

from __future__ import annotations

import hashlib
import json

import grpc
import pytest
from scale_diffusion.processor.v1 import processor_pb2 as pb
from scale_diffusion.processor.v1 import processor_pb2_grpc
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_processor.server import register
from sd_processor.settings import ProcessorSettings


@pytest.fixture
async def service(tmp_path):
    settings = ProcessorSettings(grpc_port=0, metrics_port=0, shutdown_grace_s=1, version="2026.12.1")
    store = make_store(StoreSettings(backend="local", root=tmp_path / "store"))
    rt = GrpcRuntime("processor", settings)
    register(rt, store, settings, settings.processing_config())
    port = await rt.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield processor_pb2_grpc.ProcessorServiceStub(channel), store
    await rt.stop()
    await store.close()


async def upload(store, session_dir, prefix: str, *, tamper: str | None = None) -> dict[str, str]:
    """Puts a session's files under ``prefix``; returns key -> sha256 of what was stored."""
    stored = {}
    for p in sorted(session_dir.iterdir()):
        data = p.read_bytes()
        if p.name == tamper:
            data = data[:-10] + b"0123456789"
        await store.put_bytes(prefix + p.name, data, content_type="application/octet-stream")
        stored[prefix + p.name] = hashlib.sha256(data).hexdigest()
    return stored


async def process(stub, **fields):
    return [m async for m in stub.ProcessSession(pb.ProcessSessionRequest(**fields))]


async def test_process_session_streams_progress_and_writes_the_outputs(service, clean_session):
    stub, store = service
    sid = clean_session.session_id
    raw = await upload(store, clean_session.session_dir, f"raw/{sid}/")
    messages = await process(stub, session_id=sid, raw_uri=f"raw/{sid}/", output_uri=f"processed/{sid}/",
                             attempt_id="attempt-1")
    stages = [m.stage for m in messages]
    assert stages[0] == pb.PROCESSING_STAGE_VALIDATE and stages[-1] == pb.PROCESSING_STAGE_DONE
    assert pb.PROCESSING_STAGE_ALIGN in stages and pb.PROCESSING_STAGE_EXPORT in stages
    cleaning = [m for m in messages if m.stage == pb.PROCESSING_STAGE_CLEAN]
    assert len(cleaning) >= 10 and all(m.frames_total == 180 for m in cleaning)
    assert [m.frames_done for m in cleaning] == sorted(m.frames_done for m in cleaning)
    assert not any(m.HasField("result") for m in messages[:-1])
    r = messages[-1].result
    assert not r.rejected and list(r.problems) == []
    assert (r.frames_decoded, r.segments_accepted, r.segments_rejected) == (180, 1, 1)
    assert r.alignment_mode == pb.ALIGNMENT_MODE_FRAME_ID and r.alignment_error_ms == 0.0
    assert r.qc_report_uri == f"processed/{sid}/qc_report.json"
    keys = [o.key async for o in store.list(f"processed/{sid}/")]
    images = [k for k in keys if k.endswith(".jpg")]
    assert len(images) == r.frames_kept and f"processed/{sid}/route_{sid}_000/measurements.json" in keys
    assert {f"processed/{sid}/{n}" for n in ("qc_report.json", "segments.json")} <= set(keys)
    # segments.json names the release that wrote it (SD_PROCESSOR_VERSION), which the catalog records
    assert json.loads((store.root / f"processed/{sid}/segments.json").read_text())["processor_version"] == "2026.12.1"
    # The store's key rules refuse a leading "_": _SUCCESS.json is written beside them (see job.py).
    success_path = store.root / f"processed/{sid}/_SUCCESS.json"
    assert r.success_uri == f"processed/{sid}/_SUCCESS.json"
    success = json.loads(success_path.read_text())
    assert success["attempt_id"] == "attempt-1" and success["segments_accepted"] == 1
    for key, digest in raw.items():  # the raw upload is untouched
        assert await store.sha256(key) == digest

    # A retry with a new attempt id leaves one complete output, now carrying the new attempt.
    again = await process(stub, session_id=sid, raw_uri=f"raw/{sid}", output_uri=f"processed/{sid}",
                          attempt_id="attempt-2")
    assert again[-1].result.frames_kept == r.frames_kept
    assert [o.key async for o in store.list(f"processed/{sid}/")] == keys
    assert json.loads(success_path.read_text())["attempt_id"] == "attempt-2"


async def test_a_bad_session_is_a_named_rejection_not_an_error(service, clean_session):
    stub, store = service
    sid = clean_session.session_id
    raw = await upload(store, clean_session.session_dir, f"raw/{sid}/", tamper="video.webm")
    messages = await process(stub, session_id=sid, raw_uri=f"raw/{sid}/", output_uri=f"processed/{sid}/",
                             attempt_id="a")
    r = messages[-1].result
    assert r.rejected and r.segments_accepted == 0
    assert "file_sha256_mismatch" in [p.code for p in r.problems]
    qc = json.loads(await store.get_bytes(r.qc_report_uri, max_bytes=1 << 20))
    assert qc["rejected"] and qc["problems"][0]["code"] == "file_sha256_mismatch"
    for key, digest in raw.items():
        assert await store.sha256(key) == digest
    other = await process(stub, session_id="someone-else", raw_uri=f"raw/{sid}/", output_uri="processed/x/",
                          attempt_id="a")
    assert other[-1].result.rejected and "manifest_session_mismatch" in [p.code for p in other[-1].result.problems]


@pytest.mark.parametrize("fields,code", [
    (dict(session_id="s1", raw_uri="raw/s1/", output_uri="raw/s1/out/", attempt_id="a"),
     grpc.StatusCode.INVALID_ARGUMENT),
    (dict(session_id="s1", raw_uri="raw/s1/", output_uri="processed/s1/", attempt_id=""),
     grpc.StatusCode.INVALID_ARGUMENT),
    (dict(session_id="../s1", raw_uri="raw/s1/", output_uri="processed/s1/", attempt_id="a"),
     grpc.StatusCode.INVALID_ARGUMENT),
    (dict(session_id="s1", raw_uri="raw/../etc/", output_uri="processed/s1/", attempt_id="a"),
     grpc.StatusCode.INVALID_ARGUMENT),
    (dict(session_id="s1", raw_uri="raw/nothing-here/", output_uri="processed/s1/", attempt_id="a"),
     grpc.StatusCode.NOT_FOUND),
])
async def test_requests_that_cannot_be_served_get_status_codes(service, fields, code):
    stub, _ = service
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await process(stub, **fields)
    assert err.value.code() == code and err.value.details()


async def test_the_s3_path_copies_the_session_and_writes_every_output(moto_server, clean_session):
    """Against an S3-protocol server on loopback: the session is fetched to a temp folder, outputs go to S3."""
    import asyncio
    import uuid

    from aiobotocore.session import get_session

    from sd_common.objectstore.s3 import S3ObjectStore
    from sd_processor.config import ProcessorConfig
    from sd_processor.job import StoreSink, process_from_store

    bucket = f"sd-proc-{uuid.uuid4().hex[:10]}"
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=moto_server) as s3:
        await s3.create_bucket(Bucket=bucket)
        store = S3ObjectStore(bucket, endpoint_url=moto_server, region="us-east-1")
        sid = clean_session.session_id
        raw = await upload(store, clean_session.session_dir, f"raw/{sid}/")
        result = await process_from_store(store, session_id=sid, raw_prefix=f"raw/{sid}/",
                                          sink=StoreSink(store, f"processed/{sid}/", asyncio.get_running_loop()),
                                          config=ProcessorConfig(), attempt_id="s3-1")
        assert not result.rejected and result.segments_accepted == 1
        keys = [o.key async for o in store.list(f"processed/{sid}/")]
        assert f"processed/{sid}/_SUCCESS.json" in keys and len([k for k in keys if k.endswith(".jpg")]) == \
            result.frames_kept
        marker = await s3.get_object(Bucket=bucket, Key=f"processed/{sid}/_SUCCESS.json")
        async with marker["Body"] as body:
            assert json.loads(await body.read())["attempt_id"] == "s3-1"
        for key, digest in raw.items():
            assert await store.sha256(key) == digest
        await store.close()
