"""The S3 store and SQS queue against a real S3+SQS protocol server (moto_server) on loopback.

Clients upload with plain HTTP through the presigned URLs, exactly as the browser does. moto does
NOT verify request signatures (a tampered presigned URL still uploads there), so the tests of URL
signing, expiry and signed sizes live with the embedded store (test_objectstore_local.py); on this
path those checks are S3's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from aiobotocore.session import get_session
from sd_common.objectstore import (
    InvalidKey,
    MultipartInvalid,
    ObjectCreated,
    ObjectNotFound,
    ObjectTooLarge,
    S3ObjectStore,
    SqsEventQueue,
    VersioningRequired,
    parse_s3_event,
)

MiB = 1024 * 1024
REGION = "us-east-1"


@dataclass
class S3Env:
    store: S3ObjectStore
    events: SqsEventQueue
    bucket: str


@pytest.fixture
async def s3_env(moto_server: str) -> AsyncIterator[S3Env]:
    """A fresh bucket whose object-created events go to a fresh SQS queue."""
    name = f"sd-{uuid.uuid4().hex[:12]}"
    session = get_session()
    async with session.create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        await s3.create_bucket(Bucket=name)
    async with session.create_client("sqs", region_name=REGION, endpoint_url=moto_server) as sqs:
        queue_url = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        queue_arn = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"]))[
            "Attributes"]["QueueArn"]
    store = S3ObjectStore(name, endpoint_url=moto_server, region=REGION, max_object_bytes=64 * MiB)
    events = SqsEventQueue(queue_url, endpoint_url=moto_server, region=REGION)
    await store.configure_event_notifications(queue_arn)
    yield S3Env(store, events, name)
    await store.close()
    await events.close()


async def created_events(
    queue: SqsEventQueue, count: int, until: Callable[[ObjectCreated], bool] = lambda record: True
) -> list[ObjectCreated]:
    """Receives until ``count`` records matching ``until`` arrived, deleting each message."""
    found: list[ObjectCreated] = []
    deadline = time.monotonic() + 10
    while sum(map(until, found)) < count and time.monotonic() < deadline:
        for message in await queue.receive(wait_s=1, visibility_timeout_s=30):
            found.extend(parse_s3_event(message.body))  # the s3:TestEvent parses to nothing
            await queue.delete(message.receipt)
    return found


async def test_presigned_put_with_plain_http(s3_env: S3Env) -> None:
    data = os.urandom(200_000)
    key = "sessions/s1/video.webm"
    request = await s3_env.store.presign_put(key, size_bytes=len(data), content_type="video/webm", expires_s=300)
    assert "X-Amz-Signature=" in request.url
    assert "content-length%3Bcontent-type%3Bhost" in request.url  # the size and type are signed
    async with httpx.AsyncClient() as http:
        response = await http.request(request.method, request.url, content=data,
                                      headers={"Content-Type": request.headers["Content-Type"]})
    assert response.status_code == 200, response.text

    info = await s3_env.store.head(key)
    assert info is not None
    assert info.size_bytes == len(data) and info.etag == f'"{hashlib.md5(data).hexdigest()}"'
    assert info.etag == response.headers["ETag"]
    assert await s3_env.store.sha256(key) == hashlib.sha256(data).hexdigest()
    assert await s3_env.store.get_bytes(key, max_bytes=len(data)) == data
    assert b"".join([c async for c in s3_env.store.iter_bytes(key, chunk_bytes=8192)]) == data
    assert [i async for i in s3_env.store.list("sessions/")] == [info]

    (created,) = await created_events(s3_env.events, 1)
    # moto encodes '/' in event keys as %2F; the parser decodes it back.
    assert (created.bucket, created.key, created.size_bytes, created.etag, created.event_name) == (
        s3_env.bucket, key, len(data), info.etag, "ObjectCreated:Put")


async def test_presigned_multipart_with_plain_http(s3_env: S3Env) -> None:
    data = os.urandom(11 * MiB + 321)
    key = "sessions/s2/video.webm"
    upload = await s3_env.store.create_multipart(key, size_bytes=len(data), part_bytes=5 * MiB,
                                                 content_type="video/webm", expires_s=300)
    assert [p.size_bytes for p in upload.parts] == [5 * MiB, 5 * MiB, MiB + 321]
    etags = []
    async with httpx.AsyncClient(timeout=30) as http:
        for part in reversed(upload.parts):  # any order works
            response = await http.put(part.url, content=data[part.offset_bytes:part.offset_bytes + part.size_bytes])
            assert response.status_code == 200, response.text
            etags.append((part.part_number, response.headers["ETag"]))
    done = await s3_env.store.complete_multipart(key, upload.upload_id, etags)
    digests = b"".join(hashlib.md5(data[o:o + 5 * MiB]).digest() for o in range(0, len(data), 5 * MiB))
    assert done.etag == f'"{hashlib.md5(digests).hexdigest()}-3"'
    assert done.size_bytes == len(data)
    assert await s3_env.store.sha256(key) == hashlib.sha256(data).hexdigest()

    # S3 sends one CompleteMultipartUpload event; moto also sends a Put for the same object, which
    # consumers tolerate anyway (delivery is at least once).
    records = await created_events(s3_env.events, 1, until=lambda r: r.event_name.endswith("CompleteMultipartUpload"))
    (created,) = [r for r in records if r.event_name == "ObjectCreated:CompleteMultipartUpload"]
    assert (created.key, created.size_bytes, created.etag) == (key, len(data), done.etag)


async def test_multipart_without_its_last_part_is_refused(s3_env: S3Env) -> None:
    data = os.urandom(5 * MiB + 10)
    upload = await s3_env.store.create_multipart("m/x", size_bytes=len(data), part_bytes=5 * MiB,
                                                 content_type="video/webm", expires_s=300)
    first = upload.parts[0]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.put(first.url, content=data[:first.size_bytes])
    with pytest.raises(MultipartInvalid, match="planned as 5242890 bytes but its parts make 5242880"):
        await s3_env.store.complete_multipart("m/x", upload.upload_id, [(1, response.headers["ETag"])])
    assert await s3_env.store.head("m/x") is None
    with pytest.raises(MultipartInvalid, match="missing \\[2\\]"):
        await s3_env.store.complete_multipart("m/x", upload.upload_id, [(1, "a"), (3, "b")])
    # (An unknown upload id is NoSuchUpload on S3 but an internal error on moto, so it is not tested here.)


async def test_abort_multipart(s3_env: S3Env, moto_server: str) -> None:
    upload = await s3_env.store.create_multipart("m/y", size_bytes=10, part_bytes=5 * MiB, content_type="x",
                                                 expires_s=60)
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        listed = await s3.list_multipart_uploads(Bucket=s3_env.bucket)
        assert [u["UploadId"] for u in listed.get("Uploads", [])] == [upload.upload_id]
        await s3_env.store.abort_multipart("m/y", upload.upload_id)
        assert (await s3.list_multipart_uploads(Bucket=s3_env.bucket)).get("Uploads", []) == []


async def test_server_side_reads_and_writes(s3_env: S3Env) -> None:
    summary = b'{"ok":true}'
    info = await s3_env.store.put_bytes("derived/s1/summary.json", summary, content_type="application/json")
    assert info.etag == f'"{hashlib.md5(summary).hexdigest()}"'
    assert await s3_env.store.head("derived/s1/summary.json") == info
    assert await s3_env.store.head("derived/s1/missing.json") is None
    with pytest.raises(ObjectTooLarge):
        await s3_env.store.get_bytes("derived/s1/summary.json", max_bytes=3)
    with pytest.raises(ObjectNotFound):
        await s3_env.store.sha256("derived/s1/missing.json")
    with pytest.raises(ObjectNotFound):
        [c async for c in s3_env.store.iter_bytes("derived/s1/missing.json")]
    for key in ("a/b", "a-b", "a/a/z"):
        await s3_env.store.put_bytes(key, b"x", content_type="text/plain")
    assert [i.key async for i in s3_env.store.list("a")] == ["a-b", "a/a/z", "a/b"]
    with pytest.raises(ObjectTooLarge):
        await s3_env.store.presign_put("big", size_bytes=64 * MiB + 1, content_type="x", expires_s=60)
    records = await created_events(s3_env.events, 4)
    assert sorted(r.key for r in records) == ["a-b", "a/a/z", "a/b", "derived/s1/summary.json"]


async def test_sqs_redelivers_until_deleted(s3_env: S3Env) -> None:
    message_id = await s3_env.events.send(json.dumps({"hello": 1}))
    (first,) = [m for m in await s3_env.events.receive(wait_s=5, visibility_timeout_s=0)
                if m.message_id == message_id]
    assert first.receive_count == 1
    (second,) = [m for m in await s3_env.events.receive(wait_s=5, visibility_timeout_s=30)
                 if m.message_id == message_id]
    assert second.receive_count == 2 and second.body == first.body
    await s3_env.events.delete(second.receipt)
    assert [m for m in await s3_env.events.receive(wait_s=0) if m.message_id == message_id] == []


# ---- sealing ------------------------------------------------------------------------------------


async def test_a_seal_pins_versions_and_is_written_once(s3_env: S3Env, moto_server: str) -> None:
    store = s3_env.store
    with pytest.raises(VersioningRequired, match="enable versioning"):
        await store.freeze("raw/s1/")
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        await s3.put_bucket_versioning(Bucket=s3_env.bucket, VersioningConfiguration={"Status": "Enabled"})
    await store.put_bytes("raw/s1/a.txt", b"checked", content_type="text/plain")
    await store.put_bytes("raw/s1/b.txt", b"also", content_type="text/plain")
    snapshot = await store.freeze("raw/s1")
    assert [o.key for o in snapshot.objects] == ["raw/s1/a.txt", "raw/s1/b.txt"]
    assert all(o.version_id for o in snapshot.objects)
    await store.put_bytes("raw/s1/a.txt", b"changed", content_type="text/plain")  # between freeze and seal
    assert await store.get_bytes("raw/s1/a.txt", max_bytes=100,
                                 version_id=snapshot.objects[0].version_id) == b"checked"
    await store.seal(snapshot)
    later = await store.freeze("raw/s1/")  # a sealed prefix answers with its seal, not the new versions
    assert later == snapshot
    await store.seal(later.__class__("raw/s1/", later.objects[1:]))  # a second seal does not replace the first
    fresh = S3ObjectStore(s3_env.bucket, endpoint_url=moto_server, region=REGION)
    try:
        for reader in (store, fresh):
            assert await reader.get_bytes("raw/s1/a.txt", max_bytes=100) == b"checked"
            assert [o.key async for o in reader.list("raw/s1/")] == ["raw/s1/a.txt", "raw/s1/b.txt"]
            assert (await reader.head("raw/s1/a.txt")).size_bytes == len(b"checked")
            assert b"".join([c async for c in reader.iter_bytes("raw/s1/a.txt")]) == b"checked"
        await store.put_bytes("raw/s1/c.txt", b"late", content_type="text/plain")
        assert await fresh.head("raw/s1/c.txt") is None
        with pytest.raises(ObjectNotFound):
            await fresh.get_bytes("raw/s1/c.txt", max_bytes=100)
        await store.put_bytes("raw/s2/c.txt", b"open", content_type="text/plain")  # other prefixes are unsealed
        assert await fresh.get_bytes("raw/s2/c.txt", max_bytes=100) == b"open"
    finally:
        await fresh.close()
    with pytest.raises(InvalidKey):
        await store.freeze("processed/s1/")  # only client uploads (raw/) are sealed
