"""The embedded store, in process: signed upload URLs, streaming receipt, multipart, events."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from sd_common.objectstore import (
    IncompleteBody,
    InvalidKey,
    LocalEventQueue,
    LocalObjectStore,
    MultipartInvalid,
    ObjectNotFound,
    ObjectSealed,
    ObjectTooLarge,
    S3ObjectStore,
    SignatureInvalid,
    SqsEventQueue,
    UrlExpired,
    make_event_queue,
    make_store,
    parse_s3_event,
)
from sd_common.objectstore.factory import EVENTS_DIR, SIGNING_KEY_FILE
from sd_common.settings import StoreSettings

MiB = 1024 * 1024
BASE_URL = "http://127.0.0.1:8080"


class Clock:
    """A settable clock, so expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def events(tmp_path: Path) -> LocalEventQueue:
    return LocalEventQueue(tmp_path / "store" / ".events")


@pytest.fixture
async def local_store(store_root: Path, events: LocalEventQueue, clock: Clock) -> AsyncIterator[LocalObjectStore]:
    store = LocalObjectStore(store_root, b"s" * 32, BASE_URL, events, 64 * MiB, bucket="raw", region="eu-west-1",
                             clock=clock)
    yield store
    await store.close()


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """(key, query) as the gateway's route sees them."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == BASE_URL
    assert parts.path.startswith("/v1/store/")
    return unquote(parts.path.removeprefix("/v1/store/")), dict(parse_qsl(parts.query))


async def body_of(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


async def never_read() -> AsyncIterator[bytes]:
    raise AssertionError("the body was read although the upload should be refused before reading")
    yield b""  # pragma: no cover


async def upload(store: LocalObjectStore, url: str, data: bytes, *, content_length: int | None = -1):
    key, query = split_url(url)
    length = len(data) if content_length == -1 else content_length
    return await store.receive_upload(key=key, query=query, content_length=length, body=body_of(data))


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def unchanged(local_store: LocalObjectStore, tmp_path: Path):
    """Call it after refused requests: every file under the test's folder (objects, parts, temp files,
    metadata, the event queue) and the folders beside it are exactly as when the test started."""
    before, beside = contents(tmp_path), set(tmp_path.parent.iterdir())

    def check() -> None:
        assert contents(tmp_path) == before
        assert set(tmp_path.parent.iterdir()) == beside

    return check


async def drain(queue: LocalEventQueue) -> list:
    records = []
    for message in await queue.receive(wait_s=0):
        records.extend(parse_s3_event(message.body))
        await queue.delete(message.receipt)
    return records


# ---- single PUT ---------------------------------------------------------------------------------


async def test_presigned_put_round_trip(local_store: LocalObjectStore, events: LocalEventQueue) -> None:
    data = os.urandom(300_000)
    request = await local_store.presign_put("sessions/s1/video.webm", size_bytes=len(data),
                                            content_type="video/webm", expires_s=900)
    assert request.method == "PUT"
    assert request.headers == {"Content-Type": "video/webm", "Content-Length": str(len(data))}
    assert request.expires_at.timestamp() == 1_800_000_900
    key, query = split_url(request.url)
    assert key == "sessions/s1/video.webm"
    assert set(query) == {"X-SD-Expires", "X-SD-Max-Bytes", "X-SD-Signature"}
    assert query["X-SD-Max-Bytes"] == str(len(data))

    info = await upload(local_store, request.url, data)
    assert info.key == key and info.size_bytes == len(data)
    assert info.etag == f'"{hashlib.md5(data).hexdigest()}"'

    assert await local_store.head(key) == info
    assert await local_store.get_bytes(key, max_bytes=len(data)) == data
    assert await local_store.sha256(key) == hashlib.sha256(data).hexdigest()
    assert b"".join([c async for c in local_store.iter_bytes(key, chunk_bytes=4096)]) == data
    assert [i.key async for i in local_store.list("sessions/")] == [key]
    assert (local_store.root / key).read_bytes() == data
    assert os.listdir(local_store.root / ".tmp") == []

    (created,) = await drain(events)
    assert (created.bucket, created.key, created.size_bytes, created.etag, created.event_name) == (
        "raw", key, len(data), info.etag, "ObjectCreated:Put")


@pytest.mark.parametrize("claimed", [None, 10, 100], ids=["absent", "honest", "lying"])
async def test_a_body_shorter_than_signed_is_refused(local_store: LocalObjectStore, claimed: int | None, unchanged) -> None:
    # S3 refuses a body of any other size than the signed Content-Length; so does the local store.
    request = await local_store.presign_put("a/b", size_bytes=100, content_type="text/plain", expires_s=60)
    with pytest.raises(IncompleteBody, match="signed for exactly 100|Content-Length announced 100") as raised:
        await upload(local_store, request.url, b"x" * 10, content_length=claimed)
    assert raised.value.http_status == 400
    assert await local_store.head("a/b") is None
    assert os.listdir(local_store.root / ".tmp") == []
    unchanged()


async def test_forged_signature_is_refused(local_store: LocalObjectStore, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    key, query = split_url(request.url)
    signature = query["X-SD-Signature"]
    for forged in (signature[:-1] + ("0" if signature[-1] != "0" else "1"), "0" * 64, signature.upper(), "",
                   signature + "00", "\u0660" * 64):
        with pytest.raises(SignatureInvalid) as raised:
            await local_store.receive_upload(key=key, query={**query, "X-SD-Signature": forged},
                                             content_length=10, body=never_read())
        assert raised.value.http_status == 403
    for missing in ("X-SD-Signature", "X-SD-Expires", "X-SD-Max-Bytes"):
        incomplete = {k: v for k, v in query.items() if k != missing}
        with pytest.raises(SignatureInvalid, match=missing):
            await local_store.receive_upload(key=key, query=incomplete, content_length=10, body=never_read())
    assert await local_store.head("a/b") is None
    unchanged()


async def test_a_store_with_another_key_refuses_the_url(local_store: LocalObjectStore, tmp_path: Path, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    other = LocalObjectStore(local_store.root, b"t" * 32, BASE_URL, None, MiB)
    key, query = split_url(request.url)
    with pytest.raises(SignatureInvalid):
        await other.receive_upload(key=key, query=query, content_length=10, body=never_read())
    unchanged()


async def test_expired_url_is_refused(local_store: LocalObjectStore, clock: Clock, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    key, query = split_url(request.url)
    clock.now += 61
    with pytest.raises(UrlExpired, match=r"expired at 2027-01-15T08:01:00\+00:00 \(1 s ago\)") as raised:
        await local_store.receive_upload(key=key, query=query, content_length=10, body=never_read())
    assert raised.value.http_status == 403
    # Pushing the expiry forward breaks the signature.
    with pytest.raises(SignatureInvalid):
        await local_store.receive_upload(key=key, query={**query, "X-SD-Expires": str(int(clock.now) + 600)},
                                         content_length=10, body=never_read())
    unchanged()
    clock.now -= 1  # exactly at the expiry second it is still valid
    assert (await upload(local_store, request.url, b"0123456789")).size_bytes == 10


async def test_a_url_for_one_key_does_not_work_for_another(local_store: LocalObjectStore, unchanged) -> None:
    request = await local_store.presign_put("sessions/mine/video.webm", size_bytes=10, content_type="video/webm",
                                            expires_s=60)
    _, query = split_url(request.url)
    for target in ("sessions/theirs/video.webm", "sessions/mine/video.webmx", "sessions/mine/Video.webm"):
        with pytest.raises(SignatureInvalid, match="does not match key"):
            await local_store.receive_upload(key=target, query=query, content_length=10, body=never_read())
        assert await local_store.head(target) is None
    unchanged()


async def test_tampered_max_bytes_is_refused(local_store: LocalObjectStore, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    key, query = split_url(request.url)
    for tampered in ("11", "1000000", "010", "-1", "1e9", " 10"):
        with pytest.raises(SignatureInvalid):
            await local_store.receive_upload(key=key, query={**query, "X-SD-Max-Bytes": tampered},
                                             content_length=10, body=never_read())
    # A single-PUT URL cannot be turned into a part upload either.
    with pytest.raises(SignatureInvalid):
        await local_store.receive_upload(key=key, query={**query, "uploadId": "0" * 32, "partNumber": "1"},
                                         content_length=10, body=never_read())
    unchanged()


async def test_content_length_over_the_signed_size_is_refused_before_reading(local_store: LocalObjectStore, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    key, query = split_url(request.url)
    with pytest.raises(ObjectTooLarge, match="Content-Length is 11 bytes; this URL accepts at most 10") as raised:
        await local_store.receive_upload(key=key, query=query, content_length=11, body=never_read())
    assert raised.value.http_status == 413
    unchanged()


@pytest.mark.parametrize("claimed", [None, 10], ids=["absent", "lying"])
async def test_a_body_over_the_signed_size_is_cut_off(local_store: LocalObjectStore, claimed: int | None, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    key, query = split_url(request.url)
    delivered = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal delivered
        while True:
            delivered += 4
            yield b"abcd"

    with pytest.raises(ObjectTooLarge, match="longer than the 10 bytes this URL accepts"):
        await local_store.receive_upload(key=key, query=query, content_length=claimed, body=endless())
    assert delivered <= 12  # stopped at the first chunk past the limit, not at the end of the stream
    assert await local_store.head(key) is None
    assert os.listdir(local_store.root / ".tmp") == []
    unchanged()


async def test_a_body_shorter_than_its_content_length_is_refused(local_store: LocalObjectStore, unchanged) -> None:
    request = await local_store.presign_put("a/b", size_bytes=10, content_type="text/plain", expires_s=60)
    with pytest.raises(IncompleteBody, match="had 4 bytes but its Content-Length announced 10"):
        await upload(local_store, request.url, b"abcd", content_length=10)
    with pytest.raises(IncompleteBody, match="Content-Length is 4 bytes; this URL was signed for exactly 10"):
        await local_store.receive_upload(key="a/b", query=split_url(request.url)[1], content_length=4,
                                         body=never_read())
    assert await local_store.head("a/b") is None
    unchanged()


async def test_presign_refuses_objects_over_the_store_limit(local_store: LocalObjectStore, unchanged) -> None:
    with pytest.raises(ObjectTooLarge, match="larger than this store accepts"):
        await local_store.presign_put("a/b", size_bytes=64 * MiB + 1, content_type="video/webm", expires_s=60)
    with pytest.raises(ObjectTooLarge):
        await local_store.create_multipart("a/b", size_bytes=64 * MiB + 1, part_bytes=8 * MiB,
                                           content_type="video/webm", expires_s=60)
    unchanged()


# ---- keys and the file system -------------------------------------------------------------------

BAD_KEYS = ["..", "../outside", "a/../../outside", "/tmp/outside", "a\x00b", "a\\..\\b", "\uff0e\uff0e/outside",
            "a\u202eb", "caf\u00e9", "cafe\u0301", "a//b", ".tmp/x", ".events/ready/x", ".signing-key"]


@pytest.mark.parametrize("key", BAD_KEYS, ids=[ascii(k) for k in BAD_KEYS])
async def test_bad_keys_are_refused_everywhere(local_store: LocalObjectStore, key: str, tmp_path: Path, unchanged) -> None:
    before = files_under(tmp_path)
    with pytest.raises(InvalidKey):
        await local_store.presign_put(key, size_bytes=1, content_type="text/plain", expires_s=60)
    with pytest.raises(InvalidKey):
        await local_store.create_multipart(key, size_bytes=1, part_bytes=5 * MiB, content_type="x", expires_s=60)
    with pytest.raises(InvalidKey):
        await local_store.receive_upload(key=key, query={}, content_length=1, body=never_read())
    with pytest.raises(InvalidKey):
        await local_store.put_bytes(key, b"x", content_type="text/plain")
    with pytest.raises(InvalidKey):
        await local_store.head(key)
    with pytest.raises(InvalidKey):
        await local_store.get_bytes(key, max_bytes=10)
    with pytest.raises(InvalidKey):
        await local_store.sha256(key)
    assert files_under(tmp_path) == before
    unchanged()  # nothing in the store, its queue, or beside the test's folder (where "a/../../x" would go)
    assert not Path("/tmp/outside").exists()


async def test_nothing_is_written_outside_root(local_store: LocalObjectStore, tmp_path: Path) -> None:
    beside = set(tmp_path.parent.iterdir())
    outside = tmp_path / "outside"
    outside.mkdir()
    # A symlink planted inside root must not become a way out.
    (local_store.root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKey, match="resolves outside the store"):
        await local_store.put_bytes("escape/x", b"x", content_type="text/plain")
    with pytest.raises(InvalidKey):
        await local_store.presign_put("escape/x", size_bytes=1, content_type="text/plain", expires_s=60)
    for key in ("a", "b/c", "b/d/e"):
        request = await local_store.presign_put(key, size_bytes=3, content_type="text/plain", expires_s=60)
        await upload(local_store, request.url, b"abc")
    await local_store.put_bytes("f/g", b"fg", content_type="text/plain")
    assert os.listdir(outside) == []
    assert {p.name for p in tmp_path.iterdir()} == {"store", "outside"}
    assert set(tmp_path.parent.iterdir()) == beside  # and nothing above the store's parent
    objects = {name for name in files_under(local_store.root) if not name.startswith(".")}
    assert objects == {"a", "b/c", "b/d/e", "f/g"}
    assert [i.key async for i in local_store.list("")] == ["a", "b/c", "b/d/e", "f/g"]


async def test_a_key_cannot_be_both_an_object_and_a_prefix(local_store: LocalObjectStore) -> None:
    await local_store.put_bytes("a/b", b"1", content_type="text/plain")
    with pytest.raises(InvalidKey, match="prefix of other objects"):
        await local_store.put_bytes("a", b"2", content_type="text/plain")
    request = await local_store.presign_put("a/b/c", size_bytes=1, content_type="text/plain", expires_s=60)
    with pytest.raises(InvalidKey, match="'a/b' is an object"):
        await local_store.receive_upload(key="a/b/c", query=split_url(request.url)[1], content_length=1,
                                         body=never_read())
    assert await local_store.get_bytes("a/b", max_bytes=1) == b"1"


# ---- reads, writes, listing ---------------------------------------------------------------------


async def test_put_bytes_head_and_reads(local_store: LocalObjectStore, events: LocalEventQueue) -> None:
    summary = b'{"ok":true}'
    info = await local_store.put_bytes("derived/s1/summary.json", summary, content_type="application/json")
    assert info.etag == f'"{hashlib.md5(summary).hexdigest()}"'
    assert await local_store.head("derived/s1/summary.json") == info
    assert await local_store.head("derived/s1/nothing.json") is None
    assert await local_store.head("derived/s1") is None  # a prefix is not an object
    with pytest.raises(ObjectTooLarge, match="larger than the 5 bytes"):
        await local_store.get_bytes("derived/s1/summary.json", max_bytes=5)
    for read in (local_store.sha256("nope"), local_store.get_bytes("nope", max_bytes=1)):
        with pytest.raises(ObjectNotFound) as raised:
            await read
        assert raised.value.http_status == 404
    with pytest.raises(ObjectNotFound):
        [chunk async for chunk in local_store.iter_bytes("nope")]
    (created,) = await drain(events)
    assert created.event_name == "ObjectCreated:Put" and created.key == "derived/s1/summary.json"


async def test_list_is_in_key_order_and_honours_the_prefix(local_store: LocalObjectStore) -> None:
    for key in ("a/b", "a-b", "a/a/z", "a.c", "b", "ab/x", "a0"):
        await local_store.put_bytes(key, key.encode(), content_type="text/plain")
    everything = [i.key async for i in local_store.list("")]
    assert everything == sorted(everything) == ["a-b", "a.c", "a/a/z", "a/b", "a0", "ab/x", "b"]
    assert [i.key async for i in local_store.list("a/")] == ["a/a/z", "a/b"]
    assert [i.key async for i in local_store.list("a")] == ["a-b", "a.c", "a/a/z", "a/b", "a0", "ab/x"]
    assert [i.key async for i in local_store.list("a/a")] == ["a/a/z"]
    assert [i.key async for i in local_store.list("zz/")] == []
    sizes = {i.key: i.size_bytes async for i in local_store.list("")}
    assert sizes["a/a/z"] == 5


async def test_etags_survive_a_restart_and_follow_changes(local_store: LocalObjectStore, store_root: Path) -> None:
    info = await local_store.put_bytes("a/b", b"first", content_type="text/plain")
    again = LocalObjectStore(store_root, b"s" * 32, BASE_URL, None, MiB)
    assert await again.head("a/b") == info
    (store_root / "a" / "b").write_bytes(b"changed by hand")  # same inode, new size and mtime
    assert (await again.head("a/b")).etag == f'"{hashlib.md5(b"changed by hand").hexdigest()}"'


# ---- multipart ----------------------------------------------------------------------------------


async def test_multipart_round_trip_out_of_order(local_store: LocalObjectStore, events: LocalEventQueue) -> None:
    data = os.urandom(12 * MiB + 12345)
    upload_ = await local_store.create_multipart("sessions/s2/video.webm", size_bytes=len(data), part_bytes=5 * MiB,
                                                 content_type="video/webm", expires_s=900)
    assert [(p.part_number, p.offset_bytes, p.size_bytes) for p in upload_.parts] == [
        (1, 0, 5 * MiB), (2, 5 * MiB, 5 * MiB), (3, 10 * MiB, 2 * MiB + 12345)]
    etags = {}
    for part in reversed(upload_.parts):
        _, query = split_url(part.url)
        assert query["uploadId"] == upload_.upload_id and query["partNumber"] == str(part.part_number)
        info = await upload(local_store, part.url, data[part.offset_bytes:part.offset_bytes + part.size_bytes])
        etags[part.part_number] = info.etag
    assert await local_store.head("sessions/s2/video.webm") is None  # nothing visible before completion

    done = await local_store.complete_multipart("sessions/s2/video.webm", upload_.upload_id,
                                                [(2, etags[2]), (3, etags[3].strip('"')), (1, etags[1])])
    digests = b"".join(hashlib.md5(data[o:o + 5 * MiB]).digest() for o in range(0, len(data), 5 * MiB))
    assert done.etag == f'"{hashlib.md5(digests).hexdigest()}-3"'  # S3's multipart ETag
    assert done.size_bytes == len(data)
    assert await local_store.sha256("sessions/s2/video.webm") == hashlib.sha256(data).hexdigest()
    assert await local_store.head("sessions/s2/video.webm") == done
    assert os.listdir(local_store.root / ".multipart") == []
    (created,) = await drain(events)
    assert (created.event_name, created.key, created.size_bytes, created.etag) == (
        "ObjectCreated:CompleteMultipartUpload", "sessions/s2/video.webm", len(data), done.etag)


async def test_multipart_refusals(local_store: LocalObjectStore) -> None:
    data = os.urandom(10 * MiB + 1)
    upload_ = await local_store.create_multipart("m/x", size_bytes=len(data), part_bytes=5 * MiB,
                                                 content_type="video/webm", expires_s=900)
    one, two, three = upload_.parts
    chunks = {p.part_number: data[p.offset_bytes:p.offset_bytes + p.size_bytes] for p in upload_.parts}
    etag1 = (await upload(local_store, one.url, chunks[1])).etag
    etag3 = (await upload(local_store, three.url, chunks[3])).etag

    # A part's URL cannot be replayed as another part, another upload or another key.
    key, query = split_url(one.url)
    for tampered in ({**query, "partNumber": "2"}, {**query, "uploadId": "f" * 32}):
        with pytest.raises(SignatureInvalid):
            await local_store.receive_upload(key=key, query=tampered, content_length=1, body=never_read())
    with pytest.raises(SignatureInvalid):
        await local_store.receive_upload(key="m/y", query=query, content_length=1, body=never_read())
    with pytest.raises(ObjectTooLarge):
        await upload(local_store, three.url, b"xx")  # part 3 is planned as 1 byte

    with pytest.raises(MultipartInvalid, match="missing \\[2\\]"):
        await local_store.complete_multipart("m/x", upload_.upload_id, [(1, etag1), (3, etag3)])
    with pytest.raises(MultipartInvalid, match="part 2 of upload .* was never uploaded"):
        await local_store.complete_multipart("m/x", upload_.upload_id, [(1, etag1), (2, etag1), (3, etag3)])
    with pytest.raises(MultipartInvalid, match="planned in 3 parts; completion listed 2"):
        await local_store.complete_multipart("m/x", upload_.upload_id, [(1, etag1), (2, etag1)])
    etag2 = (await upload(local_store, two.url, chunks[2])).etag
    with pytest.raises(MultipartInvalid, match="part 2: the listed ETag"):
        await local_store.complete_multipart("m/x", upload_.upload_id, [(1, etag1), (2, etag1), (3, etag3)])
    with pytest.raises(MultipartInvalid, match="is for key 'm/x', not 'm/y'"):
        await local_store.complete_multipart("m/y", upload_.upload_id, [(1, etag1), (2, etag2), (3, etag3)])
    with pytest.raises(MultipartInvalid, match="not an upload id"):
        await local_store.complete_multipart("m/x", "../../etc", [(1, etag1)])
    assert await local_store.head("m/x") is None

    await local_store.abort_multipart("m/x", upload_.upload_id)
    assert os.listdir(local_store.root / ".multipart") == []
    with pytest.raises(MultipartInvalid, match="completed, aborted or never started") as raised:
        await local_store.complete_multipart("m/x", upload_.upload_id, [(1, etag1), (2, etag2), (3, etag3)])
    assert raised.value.http_status == 400
    with pytest.raises(MultipartInvalid, match="completed, aborted or never started"):
        await upload(local_store, two.url, chunks[2])


async def test_multipart_plans_follow_s3_part_rules(local_store: LocalObjectStore) -> None:
    with pytest.raises(MultipartInvalid, match="outside S3's limits"):
        await local_store.create_multipart("a", size_bytes=10 * MiB, part_bytes=MiB, content_type="x", expires_s=60)
    with pytest.raises(MultipartInvalid, match="at least 1 byte"):
        await local_store.create_multipart("a", size_bytes=0, part_bytes=5 * MiB, content_type="x", expires_s=60)
    small = await local_store.create_multipart("a", size_bytes=3, part_bytes=5 * MiB, content_type="x", expires_s=60)
    assert [(p.part_number, p.offset_bytes, p.size_bytes) for p in small.parts] == [(1, 0, 3)]


# ---- events -------------------------------------------------------------------------------------


async def test_events_have_s3s_shape(local_store: LocalObjectStore, events: LocalEventQueue) -> None:
    info = await local_store.put_bytes("sessions/s3/manifest.json", b"{}", content_type="application/json")
    (message,) = await events.receive(wait_s=0)
    body = json.loads(message.body)
    (record,) = body["Records"]
    assert record["eventVersion"] == "2.1"
    assert record["eventSource"] == "aws:s3"
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["eventTime"].endswith("Z") and len(record["eventTime"]) == len("2026-01-01T00:00:00.000Z")
    assert record["s3"]["bucket"]["name"] == "raw"
    obj = record["s3"]["object"]
    assert obj["key"] == "sessions/s3/manifest.json"
    assert obj["size"] == 2
    assert obj["eTag"] == info.etag.strip('"')  # S3 events carry the ETag without quotes
    assert len(obj["sequencer"]) >= 16 and int(obj["sequencer"], 16) > 0
    assert parse_s3_event(message.body)[0].etag == info.etag


async def test_sequencers_increase(local_store: LocalObjectStore, events: LocalEventQueue) -> None:
    for n in range(3):
        await local_store.put_bytes("k", str(n).encode(), content_type="text/plain")
    records = await drain(events)
    sequencers = [int(r.sequencer, 16) for r in records]
    assert len(sequencers) == 3 and sequencers == sorted(sequencers)


# ---- factory ------------------------------------------------------------------------------------


async def test_factory_keeps_a_generated_signing_key(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path / "s", public_base_url=BASE_URL)
    first = make_store(settings)
    assert isinstance(first, LocalObjectStore)
    key_file = tmp_path / "s" / SIGNING_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    request = await first.presign_put("raw/a/b", size_bytes=1, content_type="text/plain", expires_s=60)
    restarted = make_store(settings)  # a restart reads the same key, so earlier URLs still work
    assert (await upload(restarted, request.url, b"x")).size_bytes == 1
    # outside the notification prefix (settings.notify_prefix, "raw/"), objects are silent
    await restarted.put_bytes("processed/a/b", b"y", content_type="text/plain")
    queue = make_event_queue(settings)
    assert isinstance(queue, LocalEventQueue) and queue.directory == tmp_path / "s" / EVENTS_DIR
    (created,) = [r for m in await queue.receive(wait_s=0) for r in parse_s3_event(m.body)]
    assert created.key == "raw/a/b"


async def test_factory_uses_a_configured_signing_key(tmp_path: Path) -> None:
    settings = StoreSettings(root=tmp_path / "s", signing_key="configured-key-of-enough-length!")
    store = make_store(settings)
    assert not (tmp_path / "s" / SIGNING_KEY_FILE).exists()
    request = await store.presign_put("a", size_bytes=1, content_type="t", expires_s=60)
    manual = LocalObjectStore(tmp_path / "s", b"configured-key-of-enough-length!", settings.public_base_url, None, MiB)
    key, query = split_url(request.url.replace(settings.public_base_url, BASE_URL))
    assert (await manual.receive_upload(key=key, query=query, content_length=1, body=body_of(b"x"))).size_bytes == 1


async def test_factory_s3_backend(tmp_path: Path) -> None:
    settings = StoreSettings(backend="s3", bucket="b", endpoint_url="http://127.0.0.1:9", queue_url="http://q")
    store = make_store(settings)
    assert isinstance(store, S3ObjectStore) and store.bucket == "b"
    assert isinstance(make_event_queue(settings), SqsEventQueue)
    with pytest.raises(ValueError, match="SD_STORE_QUEUE_URL"):
        make_event_queue(StoreSettings(backend="s3"))
    await store.close()


# ---- sealing ------------------------------------------------------------------------------------


async def test_a_sealed_prefix_refuses_every_write_and_stays_sealed(
        local_store: LocalObjectStore, events: LocalEventQueue, store_root: Path, tmp_path: Path) -> None:
    single = await local_store.presign_put("raw/s1/video.webm", size_bytes=4, content_type="video/webm",
                                           expires_s=600)
    parts = await local_store.create_multipart("raw/s1/big.bin", size_bytes=6 * MiB, part_bytes=5 * MiB,
                                               content_type="application/octet-stream", expires_s=600)
    await upload(local_store, single.url, b"good")
    await drain(events)
    snapshot = await local_store.freeze("raw/s1")
    assert snapshot.prefix == "raw/s1/" and [o.key for o in snapshot.objects] == ["raw/s1/video.webm"]
    await local_store.seal(snapshot)
    before = contents(tmp_path)
    key, query = split_url(single.url)
    with pytest.raises(ObjectSealed, match="raw/s1/ is sealed"):  # refused before a byte is read
        await local_store.receive_upload(key=key, query=query, content_length=4, body=never_read())
    key, query = split_url(parts.parts[0].url)
    with pytest.raises(ObjectSealed):
        await local_store.receive_upload(key=key, query=query, content_length=5 * MiB, body=never_read())
    with pytest.raises(ObjectSealed):
        await local_store.complete_multipart("raw/s1/big.bin", parts.upload_id, [(1, "a"), (2, "b")])
    with pytest.raises(ObjectSealed):
        await local_store.put_bytes("raw/s1/video.webm", b"evil", content_type="video/webm")
    with pytest.raises(ObjectSealed):
        await local_store.put_bytes("raw/s1/new.txt", b"new", content_type="text/plain")
    with pytest.raises(ObjectSealed):
        await local_store.presign_put("raw/s1/video.webm", size_bytes=4, content_type="video/webm", expires_s=60)
    await local_store.thaw(snapshot)  # thawing a sealed prefix does not unseal it
    with pytest.raises(ObjectSealed):
        await local_store.put_bytes("raw/s1/video.webm", b"evil", content_type="video/webm")
    # a store opened afresh on the same root (a restarted gateway) keeps the seal
    again = LocalObjectStore(store_root, b"s" * 32, BASE_URL, None, 64 * MiB)
    with pytest.raises(ObjectSealed):
        await upload(again, single.url, b"evil")
    assert contents(tmp_path) == before  # objects, parts, queue, metadata: all unchanged
    assert await drain(events) == []
    await local_store.put_bytes("raw/s2/video.webm", b"fine", content_type="video/webm")  # other prefixes write


async def test_a_body_arriving_while_its_prefix_is_frozen_never_lands(
        local_store: LocalObjectStore, events: LocalEventQueue, store_root: Path) -> None:
    request = await local_store.presign_put("raw/s1/frames.jsonl", size_bytes=8, content_type="text/plain",
                                            expires_s=600)
    await local_store.put_bytes("raw/s1/frames.jsonl", b"checked!", content_type="text/plain")
    await drain(events)
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"evil"
        halfway.set()
        await go_on.wait()
        yield b"evil"

    key, query = split_url(request.url)
    arriving = asyncio.create_task(local_store.receive_upload(key=key, query=query, content_length=8,
                                                              body=slow_body()))
    await halfway.wait()
    snapshot = await local_store.freeze("raw/s1/")  # the completion check starts while the body arrives
    go_on.set()
    with pytest.raises(ObjectSealed):
        await arriving
    assert (store_root / "raw/s1/frames.jsonl").read_bytes() == b"checked!"
    assert os.listdir(store_root / ".tmp") == []
    assert await drain(events) == []
    # a check that rejects thaws the prefix: the player may upload again
    await local_store.thaw(snapshot)
    await upload(local_store, request.url, b"fixed!!!")
    assert (store_root / "raw/s1/frames.jsonl").read_bytes() == b"fixed!!!"


async def test_only_folders_can_be_frozen(local_store: LocalObjectStore) -> None:
    for prefix in ("", "/", "../x"):
        with pytest.raises(InvalidKey):
            await local_store.freeze(prefix)
