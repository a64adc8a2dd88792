"""The cluster code path: a session uploaded through the gateway lands in S3 and its events reach SQS.

The S3+SQS protocol server runs on loopback; it does not check signatures (see the object-store tests
for the embedded store's signature checks).
"""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from aiobotocore.session import get_session

from sd_common.objectstore import SqsEventQueue, parse_s3_event
from sd_common.settings import StoreSettings
from sd_common.upload_client import GatewayClient, GatewayHttpError
from sd_gateway.assembly import start_gateway
from sd_gateway.settings import GatewaySettings

REGION = "us-east-1"


async def test_session_upload_lands_in_s3_with_events(moto_server, bucket_and_queue, synthetic_session_dir, tmp_path):
    bucket, queue_url = bucket_and_queue
    store_settings = StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION,
                                   queue_url=queue_url)
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             store_settings)
    client = GatewayClient(gw.base_url)
    try:
        result = await client.upload_session(synthetic_session_dir)
        assert result.accepted, result.problems
        manifest = json.loads((synthetic_session_dir / "manifest.json").read_text())
        prefix = f"raw/{result.session_id}/"
        expected = {prefix + f["path"] for f in manifest["files"]} | {prefix + "manifest.json"}
        # the objects are in S3 with the manifest's bytes
        async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
            for f in manifest["files"]:
                obj = await s3.get_object(Bucket=bucket, Key=prefix + f["path"])
                body = await obj["Body"].read()
                assert hashlib.sha256(body).hexdigest() == f["sha256"]
        # and S3 announced each one on the queue
        queue = SqsEventQueue(queue_url, endpoint_url=moto_server, region=REGION)
        seen: set[str] = set()
        deadline = time.monotonic() + 20
        try:
            while seen != expected and time.monotonic() < deadline:
                for m in await queue.receive(max_messages=10, wait_s=1, visibility_timeout_s=30):
                    for ev in parse_s3_event(m.body):
                        assert ev.bucket == bucket and ev.event_name.startswith("ObjectCreated:")
                        seen.add(ev.key)
                    await queue.delete(m.receipt)
        finally:
            await queue.close()
        assert seen == expected
    finally:
        await client.close()
        await gw.stop()


async def test_completion_over_s3_names_the_missing_file(moto_server, bucket_and_queue, synthetic_session_dir, tmp_path):
    bucket, _ = bucket_and_queue
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION))
    client = GatewayClient(gw.base_url)
    try:
        await client.create_player()
        sess = await client.create_session()
        manifest = json.loads((synthetic_session_dir / "manifest.json").read_text())
        manifest["session_id"], manifest["player_id"] = sess["session_id"], sess["player_id"]
        blobs = {f["path"]: (synthetic_session_dir / f["path"]).read_bytes() for f in manifest["files"]
                 if f["path"] != "latency.jsonl"}
        blobs["manifest.json"] = json.dumps(manifest).encode()
        targets = await client.upload_urls(sess["session_id"], [{"path": p, "size_bytes": len(b)} for p, b in blobs.items()])
        for t in targets:
            await client.put_file(t, blobs[t["path"]])
        r = await client.complete_session(sess["session_id"])
        assert r["accepted"] is False
        assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_missing", "latency.jsonl")]
    finally:
        await client.close()
        await gw.stop()


async def _upload_keeping_targets(client: GatewayClient, session_dir, *, replace=None):
    await client.create_player()
    sess = await client.create_session()
    manifest = json.loads((session_dir / "manifest.json").read_text())
    manifest["session_id"], manifest["player_id"] = sess["session_id"], sess["player_id"]
    blobs = {f["path"]: (session_dir / f["path"]).read_bytes() for f in manifest["files"]}
    blobs["manifest.json"] = json.dumps(manifest).encode()
    targets = {t["path"]: t for t in await client.upload_urls(
        sess["session_id"], [{"path": p, "size_bytes": len(b)} for p, b in blobs.items()])}
    for path, data in blobs.items():
        await client.put_file(targets[path], (replace or {}).get(path, data))
    return sess["session_id"], targets, blobs, manifest


async def _what_readers_see(store, prefix: str, tmp_path) -> dict[str, bytes]:
    """The session's files as ingest's validator and the processor fetch them."""
    from sd_ingest.completion import staged_session
    from sd_processor.job import _fetch

    async with staged_session(store, prefix, tmp_path / "ingest-scratch") as folder:
        staged = {p.name: p.read_bytes() for p in folder.iterdir()}
    fetched_dir = tmp_path / "processor-fetch"
    fetched_dir.mkdir()
    await _fetch(store, prefix, fetched_dir)
    fetched = {p.name: p.read_bytes() for p in fetched_dir.iterdir()}
    assert staged == fetched
    return staged


async def test_bytes_overwritten_after_acceptance_are_never_read(moto_server, bucket_and_queue, synthetic_session_dir,
                                                                 tmp_path):
    from sd_common.objectstore import S3ObjectStore
    from sd_ingest.completion import check_completeness

    bucket, _ = bucket_and_queue
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION))
    client = GatewayClient(gw.base_url)
    reader = S3ObjectStore(bucket, endpoint_url=moto_server, region=REGION)  # a fresh process's view, as ingest's
    try:
        sid, targets, blobs, manifest = await _upload_keeping_targets(client, synthetic_session_dir)
        assert (await client.complete_session(sid))["accepted"] is True
        # A presigned URL cannot be revoked: the player replaces the video and a manifest that agrees with it
        evil_video = bytes(b ^ 0xFF for b in blobs["video.webm"][:64]) + blobs["video.webm"][64:]
        evil_manifest = dict(manifest, files=[dict(f, sha256=hashlib.sha256(evil_video).hexdigest())
                                              if f["path"] == "video.webm" else f for f in manifest["files"]])
        evil_manifest_bytes = json.dumps(evil_manifest).encode().ljust(len(blobs["manifest.json"]))[
            :len(blobs["manifest.json"])]
        await client.put_file(targets["video.webm"], evil_video)  # S3 takes them (same size, URL not expired)
        await client.put_file(targets["manifest.json"], evil_manifest_bytes)
        prefix = f"raw/{sid}/"
        async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
            latest = await (await s3.get_object(Bucket=bucket, Key=prefix + "video.webm"))["Body"].read()
        assert latest == evil_video  # the overwrite happened in the bucket ...
        # ... but every reader gets the checked bytes
        assert await reader.get_bytes(prefix + "manifest.json", max_bytes=1 << 20) == blobs["manifest.json"]
        assert await reader.sha256(prefix + "video.webm") == hashlib.sha256(blobs["video.webm"]).hexdigest()
        assert (await reader.head(prefix + "video.webm")).etag == \
            '"' + hashlib.md5(blobs["video.webm"]).hexdigest() + '"'
        report = await check_completeness(reader, prefix)
        assert report.complete and report.manifest_sha256 == hashlib.sha256(blobs["manifest.json"]).hexdigest()
        assert await _what_readers_see(reader, prefix, tmp_path) == blobs
        # a key added after the seal is not part of the session for any reader
        assert await reader.head(prefix + "extra.bin") is None
    finally:
        await reader.close()
        await client.close()
        await gw.stop()


async def test_a_rejected_session_uploads_again_on_s3(moto_server, bucket_and_queue, synthetic_session_dir, tmp_path):
    from sd_common.objectstore import S3ObjectStore

    bucket, _ = bucket_and_queue
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION))
    client = GatewayClient(gw.base_url)
    reader = S3ObjectStore(bucket, endpoint_url=moto_server, region=REGION)
    try:
        events = (synthetic_session_dir / "events.jsonl").read_bytes()
        wrong = events[:-2] + (b"X\n" if events[-2:] != b"X\n" else b"Y\n")
        sid, targets, blobs, _ = await _upload_keeping_targets(client, synthetic_session_dir,
                                                               replace={"events.jsonl": wrong})
        r = await client.complete_session(sid)
        assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_sha256_mismatch", "events.jsonl")]
        await client.put_file(targets["events.jsonl"], events)  # the fix, through the same URL
        assert (await client.complete_session(sid))["accepted"] is True
        assert await _what_readers_see(reader, f"raw/{sid}/", tmp_path) == blobs
    finally:
        await reader.close()
        await client.close()
        await gw.stop()


async def test_completion_on_a_bucket_without_versioning_is_refused_with_the_fix(moto_server, synthetic_session_dir,
                                                                                 tmp_path):
    import uuid

    bucket = f"sd-unversioned-{uuid.uuid4().hex[:8]}"
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        await s3.create_bucket(Bucket=bucket)
    gw = await start_gateway(GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw"),
                             StoreSettings(backend="s3", bucket=bucket, endpoint_url=moto_server, region=REGION))
    client = GatewayClient(gw.base_url, retries=0)
    try:
        sid, _, _, _ = await _upload_keeping_targets(client, synthetic_session_dir)
        with pytest.raises(GatewayHttpError) as refused:
            await client.complete_session(sid)
        assert refused.value.status == 503, refused.value.body
        error = refused.value.body["error"]
        assert error["code"] == "unavailable" and "versioning" in error["message"]
        assert (await client.get(f"/v1/sessions/{sid}"))["state"] == "OPEN"  # nothing accepted unprotected
        async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
            listed = await s3.list_objects_v2(Bucket=bucket, Prefix=".seals/")
        assert listed.get("KeyCount", 0) == 0
    finally:
        await client.close()
        await gw.stop()
