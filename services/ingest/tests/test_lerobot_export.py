"""The LeRobot export of a version made by the real pipeline, checked file by file against what the
real processor wrote (its 256x256 JPEGs and measurements.json), with pyarrow and numpy.

The processor runs as its own process (`python -m sd_processor`, default settings); nothing here is a
stand-in. `make lerobot-check` loads the same kind of export with LeRobot's own loader.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from real_export import build_real_export, decode_rgb, expected_episodes, make_sessions
from sd_ingest.lerobot import IMAGE_KEY, TASK, data_schema


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """One version of three sessions, made once for this module (about 20 s)."""
    work = tmp_path_factory.mktemp("real-export")
    export = asyncio.run(build_real_export(work, make_sessions(work / "sessions")))
    return export, expected_episodes(export)


def test_the_export_holds_exactly_the_processors_frames_and_measurements(real):
    export, episodes = real
    lr = export.lerobot_root
    info = json.loads((lr / "meta" / "info.json").read_text())
    n_frames = sum(len(e.measurements) for e in episodes)
    assert len(episodes) == export.manifest["totals"]["segments"] == 3
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, n_frames, 1)
    assert info["fps"] == export.manifest["fps"] == 30
    assert info["features"][IMAGE_KEY]["shape"] == [256, 256, 3]
    assert info["video_path"] is None and not (lr / "videos").exists()  # images in the data files, no MP4
    n_train = sum(e.split == "train" for e in episodes)
    assert info["splits"] == {"train": f"0:{n_train}", "val": f"{n_train}:3"} and 0 < n_train < 3

    table = pq.read_table(lr / "data" / "chunk-000" / "file-000.parquet")
    assert table.schema.equals(data_schema(), check_metadata=False)
    assert table.num_rows == n_frames
    assert pq.ParquetFile(lr / "data" / "chunk-000" / "file-000.parquet").num_row_groups == 3
    rows = table.to_pylist()
    fps = info["fps"]
    i = 0
    for ep_index, ep in enumerate(episodes):
        # Every accepted frame has its image and its measurement: the two lists agree in length.
        assert len(ep.jpegs) == len(ep.measurements) > 100, ep.segment_id
        for k, (jpeg, m) in enumerate(zip(ep.jpegs, ep.measurements, strict=True)):
            row = rows[i]
            assert row[IMAGE_KEY]["bytes"] == jpeg  # the processor's JPEG, bit for bit
            assert row[IMAGE_KEY]["path"] == f"{ep.segment_id}/{k:05d}.jpg"
            assert m["frame"] == k
            assert row["observation.state"] == np.array([m["x"], m["y"], m["theta"], m["speed"]],
                                                        np.float32).tolist()
            assert row["action"] == np.array([m["steer"], m["throttle"], m["brake"]], np.float32).tolist()
            assert row["observation.command"] == m["command"]
            assert (row["episode_index"], row["frame_index"], row["index"], row["task_index"]) == (ep_index, k, i, 0)
            assert row["timestamp"] == np.float32(k / fps)
            i += 1
    assert i == n_frames
    first = decode_rgb(rows[0][IMAGE_KEY]["bytes"])
    assert first.shape == (256, 256, 3) and first.dtype == np.uint8 and first.std() > 5  # a picture, not a fill


def test_the_episode_tasks_and_stats_files_describe_the_data(real):
    export, episodes = real
    lr = export.lerobot_root
    meta = pq.read_table(lr / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    start = 0
    for ep_index, (row, ep) in enumerate(zip(meta, episodes, strict=True)):
        n = len(ep.measurements)
        assert (row["episode_index"], row["length"], row["dataset_from_index"], row["dataset_to_index"]) == (
            ep_index, n, start, start + n)
        assert (row["segment_id"], row["session_id"], row["split"]) == (ep.segment_id, ep.session_id, ep.split)
        assert row["tasks"] == [TASK] and (row["data/chunk_index"], row["data/file_index"]) == (0, 0)
        action = np.array([[m["steer"], m["throttle"], m["brake"]] for m in ep.measurements], np.float64)
        # Stats come from the measurements as logged (float64); the data file holds them as float32.
        assert row["stats/action/min"] == action.min(axis=0).tolist()
        assert row["stats/action/max"] == action.max(axis=0).tolist()
        assert row["stats/action/count"] == [n]
        np.testing.assert_allclose(row["stats/action/mean"], action.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(row["stats/action/q50"], np.quantile(action, 0.5, axis=0), rtol=1e-12)
        start += n
    tasks = pq.read_table(lr / "meta" / "tasks.parquet")
    assert tasks.column("task").to_pylist() == [TASK] and tasks.column("task_index").to_pylist() == [0]

    stats = json.loads((lr / "meta" / "stats.json").read_text())
    speeds = np.array([m["speed"] for e in episodes for m in e.measurements], np.float64)
    assert stats["observation.state"]["max"][3] == speeds.max()
    assert stats["observation.state"]["count"] == [len(speeds)]
    # Image stats: per channel in [0, 1] over every 10th frame of each episode, shaped (3, 1, 1).
    sampled = np.concatenate([decode_rgb(j).reshape(-1, 3) for e in episodes for j in e.jpegs[::10]]) / 255.0
    img = stats[IMAGE_KEY]
    assert np.array(img["mean"]).shape == (3, 1, 1) and img["count"] == [sum(len(e.jpegs[::10]) for e in episodes)]
    # Pillow here, OpenCV in the export: two libjpeg builds may round a pixel differently.
    np.testing.assert_allclose(np.array(img["mean"]).ravel(), sampled.mean(axis=0), atol=2e-3)
    np.testing.assert_allclose(np.array(img["max"]).ravel(), sampled.max(axis=0), atol=2 / 255)
