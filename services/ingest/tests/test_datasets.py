"""Dataset versions: content address, split by session, statistics, plots, the LeRobot v3.0 layout,
and the API and CLI that make and show them."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc
from sd_ingest.catalog import SessionState
from sd_ingest.datasets import canonical_json, split_sessions
from sd_ingest.lerobot import data_schema
from test_pipeline import Harness

from conftest import put_session

SDCTL = str(Path(sys.executable).parent / "sdctl")
S = SessionState


def test_the_split_is_by_session_deterministic_and_stable():
    sids = [f"s{i:02d}" for i in range(20)]
    a = split_sessions(sids, 0.25, seed=7)
    assert a == split_sessions(list(reversed(sids)), 0.25, seed=7)
    assert sum(v == "val" for v in a.values()) == 5
    assert a != split_sessions(sids, 0.25, seed=8)
    assert list(split_sessions(["only"], 0.5, 1).values()) == ["train"]
    assert sorted(split_sessions(["a", "b"], 0.01, 1).values()) == ["train", "val"]
    with pytest.raises(ValueError, match="val_fraction"):
        split_sessions(sids, 1.0, 0)


@pytest.fixture
async def processed(tmp_path, session_6s):
    """An ingest whose catalog holds three processed sessions of two players."""
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")
    await h.start_processor(["ok"])
    ingest = await h.start_ingest()
    for sid, player in (("sess-1", "alice"), ("sess-2", "bob"), ("sess-3", "alice")):
        await put_session(h.store, session_6s, sid, player)
    for sid in ("sess-1", "sess-2", "sess-3"):
        assert (await h.wait_state(sid, S.PROCESSED, S.FAILED)).state == S.PROCESSED
    yield h, ingest
    await h.close()


async def _bytes(store, key: str) -> bytes:
    return await store.get_bytes(key, max_bytes=256 << 20)


async def test_a_dataset_version_is_content_addressed_split_by_session_and_exported(processed):
    h, ingest = processed
    rec, created = await ingest.service.create_dataset("first", 0.34, 3)
    assert created and rec.segments == 3 and rec.sessions == 3 and rec.players == 2
    assert rec.train_segments + rec.val_segments == 3 and rec.val_segments == 1
    root = f"datasets/{rec.dataset_id}/"
    raw = await _bytes(h.store, root + "manifest.json")
    assert hashlib.sha256(raw).hexdigest() == rec.dataset_id
    manifest = json.loads(raw)
    assert canonical_json(manifest) == raw
    assert manifest["totals"]["segments"] == 3 and manifest["totals"]["frames"] == 450
    assert abs(manifest["totals"]["hours"] - 15 / 3600) < 1e-6
    assert sum(manifest["command_histogram"].values()) == 450
    assert sum(manifest["speed_histogram_mps"]["counts"]) == 450 and sum(manifest["steer_histogram"]["counts"]) == 450
    by_session = {}
    for seg in manifest["segments"]:
        by_session.setdefault(seg["session_id"], set()).add(seg["split"])
        assert len(seg["files_sha256"]) == 64
    assert all(len(v) == 1 for v in by_session.values())  # never split inside a session
    assert manifest["split"]["sessions"] == {sid: next(iter(v)) for sid, v in by_session.items()}
    stats = json.loads(await _bytes(h.store, root + "stats.json"))
    assert stats["dataset_id"] == rec.dataset_id and stats["players"] == 2
    for name in ("commands", "speed", "steer", "split"):
        png = await _bytes(h.store, f"{root}plots/{name}.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000

    # Same content, same id: nothing new; another seed is another version.
    again, created = await ingest.service.create_dataset("renamed", 0.34, 3)
    assert not created and again.dataset_id == rec.dataset_id and again.name == "first"
    other, created = await ingest.service.create_dataset("", 0.0, 3)
    assert created and other.dataset_id != rec.dataset_id and other.val_segments == 0

    # LeRobot v3.0 layout, checked with pyarrow against the documented schema.
    lr = root + "lerobot/"
    info = json.loads(await _bytes(h.store, lr + "meta/info.json"))
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 450, 1)
    assert info["splits"] == {"train": "0:2", "val": "2:3"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["features"]["observation.images.front"] == {
        "dtype": "image", "shape": [32, 64, 3], "names": ["height", "width", "channels"]}
    data = pq.read_table(io.BytesIO(await _bytes(h.store, lr + "data/chunk-000/file-000.parquet")))
    assert data.schema.equals(data_schema(), check_metadata=False)
    assert set(data.column_names) == set(info["features"])  # exactly the declared features
    assert data.num_rows == 450
    assert data.column("index").to_pylist() == list(range(450))
    assert data.column("frame_index").to_pylist()[:3] == [0, 1, 2]
    ts = data.column("timestamp").to_pylist()
    assert ts[1] == pytest.approx(1 / 30) and ts[150] == 0.0
    img = data.column("observation.images.front")[0].as_py()
    assert img["bytes"].startswith(b"\xff\xd8") and img["path"].endswith("00000.jpg")
    pf = pq.ParquetFile(io.BytesIO(await _bytes(h.store, lr + "data/chunk-000/file-000.parquet")))
    assert pf.num_row_groups == 3  # one row group per episode
    episodes = pq.read_table(io.BytesIO(await _bytes(h.store, lr + "meta/episodes/chunk-000/file-000.parquet")))
    rows = episodes.to_pylist()
    assert [r["episode_index"] for r in rows] == [0, 1, 2]
    assert [(r["dataset_from_index"], r["dataset_to_index"], r["length"]) for r in rows] == [
        (0, 150, 150), (150, 300, 150), (300, 450, 150)]
    assert [r["split"] for r in rows] == ["train", "train", "val"]
    assert all(r["tasks"] == [rows[0]["tasks"][0]] and r["data/chunk_index"] == 0 and r["data/file_index"] == 0
               for r in rows)
    assert rows[0]["stats/action/count"] == [150] and len(rows[0]["stats/observation.state/mean"]) == 4
    tasks = pq.read_table(io.BytesIO(await _bytes(h.store, lr + "meta/tasks.parquet")))
    assert tasks.column("task_index").to_pylist() == [0] and tasks.column("task").to_pylist() == [rows[0]["tasks"][0]]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    lstats = json.loads(await _bytes(h.store, lr + "meta/stats.json"))
    assert lstats["action"]["count"] == [450] and len(lstats["action"]["q50"]) == 3
    assert len(lstats["observation.images.front"]["mean"]) == 3  # per channel, shaped (3, 1, 1)
    assert lstats["observation.images.front"]["mean"][0][0][0] <= 1.0


async def test_creating_a_dataset_with_nothing_processed_says_why(tmp_path):
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")
    ingest = await h.start_ingest(processor_target="")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest.grpc_port}") as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateDataset(pb.CreateDatasetRequest(name="x"))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no accepted segments" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateDataset(pb.CreateDatasetRequest(val_fraction=1.5))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id="nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetDataset(pb.GetDatasetRequest(dataset_id="../x"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await h.close()


async def _sdctl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(SDCTL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_the_api_and_sdctl_show_the_catalog_and_datasets(processed):
    h, ingest = processed
    target = f"127.0.0.1:{ingest.grpc_port}"
    async with grpc.aio.insecure_channel(target) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        page = await stub.ListCatalogSessions(pb.ListCatalogSessionsRequest(page_size=2))
        assert [s.session_id for s in page.sessions] == ["sess-1", "sess-2"] and page.next_page_token
        rest = await stub.ListCatalogSessions(pb.ListCatalogSessionsRequest(page_token=page.next_page_token))
        assert [s.session_id for s in rest.sessions] == ["sess-3"] and not rest.next_page_token
        one = (await stub.GetSessionStatus(pb.GetSessionStatusRequest(session_id="sess-2"))).session
        assert one.catalog_state == pb.CATALOG_STATE_PROCESSED and one.player_id == "bob"
        assert one.segments_accepted == 1 and one.attempts == 1 and one.raw_uri == "raw/sess-2/"
        by_state = await stub.ListCatalogSessions(pb.ListCatalogSessionsRequest(catalog_state=pb.CATALOG_STATE_FAILED))
        assert list(by_state.sessions) == []

    code, out, err = await _sdctl("dataset", "create", "--ingest", target, "--name", "cli", "--seed", "1", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["created"] is True and made["dataset"]["segments"] == 3
    dataset_id = made["dataset"]["dataset_id"]
    code, out, err = await _sdctl("dataset", "list", "--ingest", target)
    assert code == 0 and dataset_id in out and "3 segments" in out, out + err
    code, out, _ = await _sdctl("dataset", "show", dataset_id, "--ingest", target, "--json")
    assert json.loads(out)["name"] == "cli"
    code, out, _ = await _sdctl("catalog", "list", "--ingest", target, "--state", "PROCESSED")
    assert code == 0 and out.count("PROCESSED") == 3
    code, out, _ = await _sdctl("catalog", "reprocess", "sess-1", "--ingest", target)
    assert code == 0 and json.loads(out)["catalog_state"] == "CATALOG_STATE_VALIDATED"
    assert (await h.wait_state("sess-1", S.PROCESSED)).attempts == 1
    code, _, err = await _sdctl("catalog", "show", "nope", "--ingest", target)
    assert code == 1 and "NOT_FOUND" in err
