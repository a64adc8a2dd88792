"""The cluster code path: a session uploaded through the gateway lands in S3 and its events reach SQS.

The S3+SQS protocol server runs on loopback; it does not check signatures (see the object-store tests
for the embedded store's signature checks).
"""

from __future__ import annotations

import hashlib
import json
import time

from aiobotocore.session import get_session

from sd_common.objectstore import SqsEventQueue, parse_s3_event
from sd_common.settings import StoreSettings
from sd_common.upload_client import GatewayClient
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
