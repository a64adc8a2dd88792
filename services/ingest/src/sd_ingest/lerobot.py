"""Exports a dataset version in the LeRobotDataset v3.0 layout, with pyarrow only.

Layout (``codebase_version: "v3.0"``)::

    meta/info.json                              features, fps, totals, splits, path templates
    meta/stats.json                             per-feature min/max/mean/std/count and quantiles
    meta/tasks.parquet                          task_index, indexed by the task text (pandas index "task")
    meta/episodes/chunk-000/file-000.parquet    one row per episode: where its frames are, its stats
    data/chunk-000/file-000.parquet             one row per frame; the front camera embedded as JPEG

One episode is one accepted segment; train episodes come first, then validation ones, and
``splits`` in info.json names the two ranges. Images are stored in the data files (feature dtype
``image``: an Arrow struct ``{bytes, path}``, as Hugging Face ``datasets.Image`` writes it), not as
MP4 videos, so the processor's JPEGs are kept bit for bit. See docs/datasets.md for what was verified.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
TASK = "Drive along the planned route, following the navigation command."
IMAGE_KEY = "observation.images.front"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
# HF datasets' Image() feature as Arrow stores it.
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@dataclass(frozen=True)
class Episode:
    """One accepted segment to export: its frames (JPEG bytes in order) come from ``load_frames``."""

    segment_id: str
    session_id: str
    player_id: str
    split: str  # "train" or "val"
    measurements: list[dict[str, Any]]
    frame_keys: list[str]  # store keys of rgb_front/*.jpg in frame order


def features(height: int, width: int) -> dict[str, dict]:
    """The ``features`` block of info.json."""
    scalar = lambda dtype: {"dtype": dtype, "shape": [1], "names": None}
    return {
        IMAGE_KEY: {"dtype": "image", "shape": [height, width, 3], "names": ["height", "width", "channels"]},
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "theta", "speed"]},
        "observation.command": {"dtype": "int64", "shape": [1], "names": None},
        "action": {"dtype": "float32", "shape": [3], "names": ["steer", "throttle", "brake"]},
        "timestamp": scalar("float32"),
        "frame_index": scalar("int64"),
        "episode_index": scalar("int64"),
        "index": scalar("int64"),
        "task_index": scalar("int64"),
    }


def data_schema() -> pa.Schema:
    """Arrow schema of the data files (the columns LeRobot's loader expects for ``features``)."""
    return pa.schema([
        (IMAGE_KEY, IMAGE_TYPE),
        ("observation.state", pa.list_(pa.float32(), 4)),
        ("observation.command", pa.int64()),
        ("action", pa.list_(pa.float32(), 3)),
        ("timestamp", pa.float32()),
        ("frame_index", pa.int64()),
        ("episode_index", pa.int64()),
        ("index", pa.int64()),
        ("task_index", pa.int64()),
    ])


def _stats(values: np.ndarray) -> dict[str, list]:
    """min/max/mean/std/count and quantiles per dimension of a (frames, dims) array."""
    values = values.astype(np.float64).reshape(len(values), -1)
    out = {
        "min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist(), "count": [len(values)],
    }
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0).tolist()
    return out


def _image_stats(images: list[np.ndarray]) -> dict[str, list]:
    """Per-channel stats of RGB images scaled to [0, 1], shaped (3, 1, 1) as LeRobot keeps them."""
    pixels = np.concatenate([img.reshape(-1, 3) for img in images]).astype(np.float64) / 255.0
    shaped = lambda v: [[[float(x)]] for x in v]
    out = {"min": shaped(pixels.min(axis=0)), "max": shaped(pixels.max(axis=0)),
           "mean": shaped(pixels.mean(axis=0)), "std": shaped(pixels.std(axis=0)), "count": [len(images)]}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = shaped(np.quantile(pixels, q, axis=0))
    return out


def _decode_rgb(jpeg: bytes) -> np.ndarray:
    import cv2  # the media extra; only needed for image statistics

    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a frame is not a decodable JPEG")
    return bgr[:, :, ::-1]


def _parquet_bytes(table: pa.Table, *, row_group_per_episode: bool) -> bytes:
    buf = io.BytesIO()
    writer = pq.ParquetWriter(buf, table.schema, compression="snappy")
    if row_group_per_episode and table.num_rows:
        episodes = table.column("episode_index").to_numpy()
        starts = np.concatenate(([0], np.nonzero(np.diff(episodes))[0] + 1, [len(episodes)]))
        for a, b in zip(starts[:-1], starts[1:]):
            writer.write_table(table.slice(int(a), int(b - a)))
    else:
        writer.write_table(table)
    writer.close()
    return buf.getvalue()


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet: ``task_index`` with the task text as the pandas index named ``task``."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _chunk_file(n: int) -> tuple[int, int]:
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def _path(kind: str, n: int) -> str:
    chunk, file = _chunk_file(n)
    return f"{kind}/chunk-{chunk:03d}/file-{file:03d}.parquet"


async def export(episodes: list[Episode], *, fps: int, height: int, width: int,
                 load_frame: Callable[[str], Awaitable[bytes]],
                 write: Callable[[str, bytes, str], Awaitable[None]],
                 image_stats_every: int = 10) -> dict[str, Any]:
    """Writes the LeRobot layout through ``write(relative_path, bytes, content_type)``; returns info.json.

    Frames are read one episode at a time and a data file is written whenever it reaches
    DATA_FILES_SIZE_IN_MB, so memory holds at most one data file.
    """
    feats = features(height, width)
    schema = data_schema()
    columns: dict[str, list] = {name: [] for name in schema.names}
    pending_bytes = 0
    data_file = 0
    global_index = 0
    episode_rows: list[dict[str, Any]] = []
    all_numeric: dict[str, list[np.ndarray]] = {k: [] for k in feats if feats[k]["dtype"] != "image"}
    sampled_images: list[np.ndarray] = []

    async def flush() -> None:
        nonlocal pending_bytes, data_file, columns
        if not columns["index"]:
            return
        table = pa.table(columns, schema=schema)
        await write(_path("data", data_file), _parquet_bytes(table, row_group_per_episode=True),
                    "application/vnd.apache.parquet")
        data_file += 1
        pending_bytes = 0
        columns = {name: [] for name in schema.names}

    for ep_index, ep in enumerate(episodes):
        n = min(len(ep.measurements), len(ep.frame_keys))
        if n == 0:
            raise ValueError(f"segment {ep.segment_id} has no frames")
        if pending_bytes > DATA_FILES_SIZE_IN_MB * 1024 * 1024:
            await flush()
        start = global_index
        per_episode: dict[str, list] = {k: [] for k in all_numeric}
        for i in range(n):
            m = ep.measurements[i]
            jpeg = await load_frame(ep.frame_keys[i])
            if i % image_stats_every == 0:
                sampled_images.append(_decode_rgb(jpeg))
            state = [float(m["x"]), float(m["y"]), float(m["theta"]), float(m["speed"])]
            action = [float(m["steer"]), float(m["throttle"]), float(m["brake"])]
            row = {
                IMAGE_KEY: {"bytes": jpeg, "path": f"{ep.segment_id}/{ep.frame_keys[i].rsplit('/', 1)[-1]}"},
                "observation.state": state, "observation.command": int(m["command"]), "action": action,
                "timestamp": i / fps, "frame_index": i, "episode_index": ep_index, "index": global_index,
                "task_index": 0,
            }
            for name, value in row.items():
                columns[name].append(value)
                if name in per_episode:
                    per_episode[name].append(value)
            pending_bytes += len(jpeg) + 64
            global_index += 1
        chunk, file = _chunk_file(data_file)
        ep_row: dict[str, Any] = {
            "episode_index": ep_index, "tasks": [TASK], "length": n,
            "data/chunk_index": chunk, "data/file_index": file,
            "dataset_from_index": start, "dataset_to_index": global_index,
            "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
            "segment_id": ep.segment_id, "session_id": ep.session_id, "player_id": ep.player_id,
            "split": ep.split,
        }
        for name, values in per_episode.items():
            arr = np.asarray(values, dtype=np.float64)
            all_numeric[name].append(arr.reshape(len(arr), -1))
            for stat, value in _stats(arr).items():
                ep_row[f"stats/{name}/{stat}"] = value
        episode_rows.append(ep_row)
    await flush()

    # meta/episodes: one small file (a million episodes would still fit well under the size limit).
    keys = list(episode_rows[0]) if episode_rows else []
    episodes_table = pa.table({k: [r[k] for r in episode_rows] for k in keys})
    await write(_path("meta/episodes", 0), _parquet_bytes(episodes_table, row_group_per_episode=False),
                "application/vnd.apache.parquet")
    await write("meta/tasks.parquet", _parquet_bytes(tasks_table([TASK]), row_group_per_episode=False),
                "application/vnd.apache.parquet")

    stats: dict[str, Any] = {name: _stats(np.concatenate(parts)) for name, parts in all_numeric.items() if parts}
    if sampled_images:
        stats[IMAGE_KEY] = _image_stats(sampled_images)
    await write("meta/stats.json", json.dumps(stats, indent=1).encode(), "application/json")

    n_train = sum(1 for ep in episodes if ep.split == "train")
    splits = {"train": f"0:{n_train}"}
    if n_train < len(episodes):
        splits["val"] = f"{n_train}:{len(episodes)}"
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": "scale_diffusion_car",
        "total_episodes": len(episodes),
        "total_frames": global_index,
        "total_tasks": 1,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": splits,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": feats,
    }
    await write("meta/info.json", json.dumps(info, indent=1).encode(), "application/json")
    return info
