"""A dataset version copied from the object store into a local cache: checked, reused, resumed, refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from version_factory import make_version

from sd_common.objectstore import LocalObjectStore, S3ObjectStore, make_store
from sd_common.settings import StoreSettings
from sd_trainer.data import (
    COMPLETE_MARKER,
    DatasetError,
    FetchReport,
    fetch_version,
    fetch_version_report,
    fetch_version_sync,
    open_local_version,
)

REGION = "us-east-1"


def _store(root: Path) -> LocalObjectStore:
    return make_store(StoreSettings(backend="local", root=root))


def _version_files(root: Path) -> dict[str, bytes]:
    """Every file of the version under a store-layout folder: manifest, segments.json, segment objects."""
    out = {}
    for sub in ("datasets", "processed"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _labels(root: Path, dataset_id: str) -> dict[str, list[tuple]]:
    v = open_local_version(root, dataset_id)
    return {split: [(Path(f.path).relative_to(root).as_posix(), f.speed_mps, f.command, f.steer, f.throttle,
                     f.brake, f.session_id) for f in frames] for split, frames in v.frames.items()}


async def test_copy_from_the_embedded_store_is_the_version_byte_for_byte(tmp_path):
    v = make_version(tmp_path / "store")
    async with _store(v.root) as store:
        report = await fetch_version_report(store, v.dataset_id, tmp_path / "cache")
    assert report.root == tmp_path / "cache" / v.dataset_id
    assert not report.reused and report.downloaded == report.objects == 4 * 2 * (20 + 1)
    assert _version_files(report.root) == _version_files(v.root)
    assert _labels(report.root, v.dataset_id) == {
        split: [(path, *rest) for path, *rest in labels] for split, labels in _labels(v.root, v.dataset_id).items()}
    assert not (report.root / ".partial").exists()


async def test_a_complete_cache_is_reused_without_the_store(tmp_path):
    v = make_version(tmp_path / "store")
    async with _store(v.root) as store:
        first = await fetch_version_report(store, v.dataset_id, tmp_path / "cache")
    # The store loses the segments: a reused cache never lists or downloads, so this still works.
    for sub in (v.root / "processed").iterdir():
        for p in sorted(sub.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    async with _store(v.root) as store:
        again = await fetch_version_report(store, v.dataset_id, tmp_path / "cache")
    assert again.reused and again.downloaded == 0 and again.root == first.root
    assert len(open_local_version(again.root, v.dataset_id).frames["train"]) > 0


class _FailingStore:
    """The real local store, whose reads fail after `ok` objects (a fetch killed half-way)."""

    def __init__(self, store: LocalObjectStore, ok: int):
        self._store, self._left = store, ok

    def __getattr__(self, name):
        return getattr(self._store, name)

    def iter_bytes(self, key, chunk_bytes=1 << 20, *, version_id=""):
        self._left -= 1
        if self._left < 0:
            raise ConnectionResetError("connection lost")
        return self._store.iter_bytes(key, 7)  # small chunks: bodies are written in several pieces


async def test_an_interrupted_fetch_leaves_no_bad_file_and_resumes(tmp_path):
    v = make_version(tmp_path / "store")
    cache = tmp_path / "cache"
    async with _store(v.root) as store:
        with pytest.raises(ConnectionResetError):
            await fetch_version(_FailingStore(store, 60), v.dataset_id, cache)
        root = cache / v.dataset_id
        assert not (root / COMPLETE_MARKER).exists()
        assert not (root / "datasets" / v.dataset_id / "manifest.json").exists()  # written last
        expected = _version_files(v.root)
        placed = {k: b for k, b in _version_files(root).items()}
        assert 0 < len(placed) < len(expected)
        assert all(expected[k] == b for k, b in placed.items())  # nothing half-written under a final name
        # A file damaged in the cache meanwhile (same size, other bytes) is not taken as good.
        jpgs = sorted(k for k in placed if k.endswith(".jpg"))
        damaged = root / jpgs[0]
        damaged.write_bytes(bytes(len(expected[jpgs[0]])))
        resumed = await fetch_version_report(store, v.dataset_id, cache)
    assert not resumed.reused
    # Only what was missing, and the damaged file, were downloaded again.
    assert resumed.downloaded == resumed.objects - (len([k for k in placed if "/route_" in k]) - 1)
    assert _version_files(root) == expected
    assert (root / COMPLETE_MARKER).is_file() and not (root / ".partial").exists()


async def test_a_segment_changed_since_the_version_is_refused_by_name(tmp_path):
    v = make_version(tmp_path / "store")
    seg = v.manifest["segments"][3]
    (v.root / seg["uri"] / "rgb_front" / "00007.jpg").write_bytes(b"\xff\xd8 another picture")
    async with _store(v.root) as store:
        with pytest.raises(DatasetError, match=f"segment {seg['segment_id']}: .*changed since the version was made"):
            await fetch_version(store, v.dataset_id, tmp_path / "cache")
    assert not (tmp_path / "cache" / v.dataset_id / COMPLETE_MARKER).exists()
    assert not list((tmp_path / "cache" / v.dataset_id).rglob("*.jpg"))  # listings are checked before any copy


async def test_an_object_that_changes_while_read_is_refused(tmp_path):
    v = make_version(tmp_path / "store")

    class Swapping(_FailingStore):
        async def _swapped(self, key):
            async for chunk in self._store.iter_bytes(key):
                yield chunk[:-1] + bytes([chunk[-1] ^ 1]) if key.endswith("00003.jpg") else chunk

        def iter_bytes(self, key, chunk_bytes=1 << 20, *, version_id=""):
            return self._swapped(key)

    async with _store(v.root) as store:
        with pytest.raises(DatasetError, match="00003.jpg arrived as .* the object changed while it was read"):
            await fetch_version(Swapping(store, 10**6), v.dataset_id, tmp_path / "cache")
    assert not list((tmp_path / "cache" / v.dataset_id).rglob("00003.jpg"))


async def test_unknown_and_changed_manifests_are_refused(tmp_path):
    v = make_version(tmp_path / "store")
    async with _store(v.root) as store:
        with pytest.raises(DatasetError, match="not found"):
            await fetch_version(store, "0" * 64, tmp_path / "cache")
        with pytest.raises(DatasetError, match="not a lowercase hex SHA-256"):
            await fetch_version(store, "../etc", tmp_path / "cache")
        path = v.root / "datasets" / v.dataset_id / "manifest.json"
        path.write_bytes(path.read_bytes().replace(b'"val"', b'"train"', 1))
        with pytest.raises(DatasetError, match="was changed"):
            await fetch_version(store, v.dataset_id, tmp_path / "cache")


def test_sync_entry_point_reads_the_store_settings(tmp_path):
    v = make_version(tmp_path / "store")
    root = fetch_version_sync(StoreSettings(backend="local", root=v.root), v.dataset_id, tmp_path / "cache")
    assert _version_files(root) == _version_files(v.root)


async def test_copy_from_s3_on_loopback(moto_server, tmp_path):
    from aiobotocore.session import get_session

    v = make_version(tmp_path / "local", sessions=3, frames=8)
    bucket = f"sd-train-{uuid.uuid4().hex[:10]}"
    async with get_session().create_client("s3", region_name=REGION, endpoint_url=moto_server) as s3:
        await s3.create_bucket(Bucket=bucket)
    store = S3ObjectStore(bucket, endpoint_url=moto_server, region=REGION)
    try:
        files = _version_files(v.root)
        for key, data in files.items():
            info = await store.put_bytes(key, data, content_type="application/octet-stream")
            assert info.etag == f'"{hashlib.md5(data).hexdigest()}"'  # what the version's listing digests hold
        report = await fetch_version_report(store, v.dataset_id, tmp_path / "cache")
        assert report.downloaded == report.objects == 3 * 2 * (8 + 1)
        assert _version_files(report.root) == files
        assert (await fetch_version_report(store, v.dataset_id, tmp_path / "cache")).reused
        # A segment rewritten in the bucket no longer matches the version.
        seg = v.manifest["segments"][1]
        await store.put_bytes(f"{seg['uri']}measurements.json", json.dumps([]).encode(),
                              content_type="application/json")
        with pytest.raises(DatasetError, match=f"segment {seg['segment_id']}"):
            await fetch_version(store, v.dataset_id, tmp_path / "cache2")
    finally:
        await store.close()


def _copied_frames(root: Path) -> bool:
    return (root / "processed").is_dir() and any((root / "processed").rglob("*.jpg"))


def test_a_fetch_killed_with_sigkill_leaves_no_bad_file_and_resumes(tmp_path):
    """A real kill of the fetching process (as a pod is killed), then a fetch into the same cache."""
    v = make_version(tmp_path / "store", sessions=4, segments_per_session=2, frames=100, height=128, width=128)
    cache = tmp_path / "cache"
    root = cache / v.dataset_id
    code = ("import sys; from pathlib import Path; from sd_common.settings import StoreSettings; "
            "from sd_trainer.data import fetch_version_sync; "
            "fetch_version_sync(StoreSettings(backend='local', root=Path(sys.argv[1])), sys.argv[2], Path(sys.argv[3]))")
    child = subprocess.Popen([sys.executable, "-c", code, str(v.root), v.dataset_id, str(cache)])
    try:
        deadline = time.monotonic() + 120
        while not _copied_frames(root):  # kill it as soon as the first frame has its final name
            assert child.poll() is None, f"the fetch ended ({child.returncode}) before any frame was copied"
            assert time.monotonic() < deadline, "no frame was copied within 120 s"
            time.sleep(0.001)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (root / COMPLETE_MARKER).exists(), "the fetch finished before it was killed: nothing interrupted"
    expected = _version_files(v.root)
    placed = _version_files(root)
    assert 0 < len(placed) < len(expected)
    assert all(expected[k] == b for k, b in placed.items())  # whatever has its final name is whole

    async def resume() -> FetchReport:
        async with _store(v.root) as store:
            return await fetch_version_report(store, v.dataset_id, cache)

    report = asyncio.run(resume())
    assert not report.reused and 0 < report.downloaded < report.objects
    assert _version_files(root) == expected and (root / COMPLETE_MARKER).is_file()
