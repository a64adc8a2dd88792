"""Dataset versions: an immutable, content-addressed snapshot of the accepted segments.

``datasets/<dataset_id>/`` holds ``manifest.json`` (the dataset: every segment, where its files
are and a digest of them, the train/val split, the statistics), ``stats.json``, ``plots/*.png`` and
``lerobot/`` (the same version in the LeRobotDataset v3.0 layout). ``dataset_id`` is the SHA-256 of
the manifest's canonical JSON, so the same segments with the same split give the same id, and
creating it again changes nothing. The manifest is written last: its presence means the version is
whole. The layout is documented in docs/datasets.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog
from sd_common.objectstore import ObjectStore

from sd_ingest.catalog import Catalog, DatasetRecord, SegmentRecord
from sd_common.processed_format import RGB_DIR, SEGMENTS_NAME, listing_digest
from sd_ingest.outputs import read_json, read_measurements

log = structlog.get_logger()

MANIFEST_SCHEMA_VERSION = 1
SPEED_EDGES_MPS = [float(v) for v in range(31)]  # 1 m/s bins; faster frames land in the last bin
STEER_EDGES = [round(-1.0 + 0.1 * i, 1) for i in range(21)]
SPLIT_METHOD = "sessions ranked by sha256('<seed>:<session_id>'); the first round(n * val_fraction) are val"


class NothingToSnapshot(Exception):
    """No accepted segment exists yet."""


class DatasetInputInvalid(ValueError):
    """A request that cannot make a dataset (a bad fraction, an unknown id)."""


def canonical_json(obj: Any) -> bytes:
    """The bytes a manifest is addressed by: sorted keys, no spaces, UTF-8, finite numbers only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def dataset_id_of(manifest: dict) -> str:
    """The content address of a manifest."""
    return hashlib.sha256(canonical_json(manifest)).hexdigest()


def split_sessions(session_ids: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Session id → "train" or "val". Deterministic for a seed, and never splits a session.

    Sessions are ranked by a hash of (seed, session id); the first ``round(n * val_fraction)`` are
    validation — at least one when the fraction is positive and there are two or more sessions, and
    never all of them.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetInputInvalid(f"val_fraction must be in [0, 1), got {val_fraction}")
    ranked = sorted(set(session_ids), key=lambda sid: hashlib.sha256(f"{seed}:{sid}".encode()).hexdigest())
    n = len(ranked)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    elif n < 2:
        n_val = 0
    return {sid: ("val" if i < n_val else "train") for i, sid in enumerate(ranked)}


def _histogram(values: list[float], edges: list[float]) -> dict[str, list]:
    clipped = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(edges))
    return {"edges": edges, "counts": [int(c) for c in counts]}


def _round(x: float, digits: int = 6) -> float:
    return float(round(x, digits))


@dataclass
class _SegmentData:
    record: SegmentRecord
    measurements: list[dict[str, Any]]
    frame_keys: list[str]
    files_sha256: str


async def _gather(store: ObjectStore, seg: SegmentRecord) -> _SegmentData:
    measurements = await read_measurements(store, seg.uri)
    objects = [info async for info in store.list(seg.uri)]
    frames = [o.key for o in objects if o.key.startswith(f"{seg.uri}{RGB_DIR}/") and o.key.endswith(".jpg")]
    return _SegmentData(seg, measurements, sorted(frames), listing_digest(seg.uri, objects))


def _stats(segs: list[_SegmentData], split_of: dict[str, str]) -> dict[str, Any]:
    speeds = [float(m["speed"]) for s in segs for m in s.measurements]
    steers = [float(m["steer"]) for s in segs for m in s.measurements]
    commands = Counter(str(int(m["command"])) for s in segs for m in s.measurements)
    splits = {}
    for name in ("train", "val"):
        part = [s for s in segs if split_of[s.record.session_id] == name]
        splits[name] = {
            "segments": len(part), "sessions": len({s.record.session_id for s in part}),
            "players": len({s.record.player_id for s in part}), "frames": sum(len(s.measurements) for s in part),
            "hours": _round(sum(s.record.duration_s for s in part) / 3600),
        }
    return {
        "hours": _round(sum(s.record.duration_s for s in segs) / 3600),
        "segments": len(segs),
        "sessions": len({s.record.session_id for s in segs}),
        "players": len({s.record.player_id for s in segs}),
        "frames": len(speeds),
        "distance_m": _round(sum(s.record.distance_m for s in segs), 3),
        "command_histogram": dict(sorted(commands.items(), key=lambda kv: int(kv[0]))),
        "speed_histogram_mps": _histogram(speeds, SPEED_EDGES_MPS),
        "steer_histogram": _histogram(steers, STEER_EDGES),
        "speed_mps": {"mean": _round(float(np.mean(speeds))), "max": _round(float(np.max(speeds)))} if speeds else {},
        "steer": {"mean": _round(float(np.mean(steers))), "std": _round(float(np.std(steers)))} if steers else {},
        "splits": splits,
    }


async def create_dataset(catalog: Catalog, store: ObjectStore, *, name: str, val_fraction: float, split_seed: int,
                         datasets_prefix: str = "datasets/", processed_prefix: str = "processed/",
                         ) -> tuple[DatasetRecord, bool]:
    """Snapshots every accepted segment into a dataset version; returns (the version, True if new)."""
    # Imported here: pyarrow and matplotlib are only needed while a snapshot is made.
    from sd_ingest import lerobot
    from sd_ingest.plots import render_plots

    if not 0.0 <= val_fraction < 1.0 or math.isnan(val_fraction):
        raise DatasetInputInvalid(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= split_seed < 2**63:
        raise DatasetInputInvalid(f"split_seed must be in [0, 2^63), got {split_seed}")
    accepted = await asyncio.to_thread(catalog.accepted_segments)
    if not accepted:
        raise NothingToSnapshot("no accepted segments yet: a dataset needs at least one processed session")
    segs = [await _gather(store, seg) for seg in accepted]
    split_of = split_sessions([s.record.session_id for s in segs], val_fraction, split_seed)
    # Geometry of the exported frames, from the processor's segments.json of each session.
    geometry: dict[str, dict] = {}
    for sid in sorted(split_of):
        doc = await read_json(store, f"{processed_prefix}{sid}/{SEGMENTS_NAME}") or {}
        geometry[sid] = {k: doc.get(k) for k in ("output", "intrinsics", "crop", "source")}
    outputs = {json.dumps(g["output"], sort_keys=True) for g in geometry.values()}
    if len(outputs) != 1:
        raise DatasetInputInvalid(f"accepted segments have different output sizes ({sorted(outputs)}); "
                                  "reprocess the older sessions first")
    out = next(iter(geometry.values()))["output"] or {}
    fps_values = Counter(round(s.record.frames / s.record.duration_s) for s in segs if s.record.duration_s > 0)
    fps = fps_values.most_common(1)[0][0] if fps_values else 30
    stats = _stats(segs, split_of)

    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": "scale_diffusion.cilrs",
        "split": {"seed": split_seed, "val_fraction": _round(val_fraction), "method": SPLIT_METHOD,
                  "sessions": {sid: split_of[sid] for sid in sorted(split_of)}},
        "output": out,
        "fps": fps,
        "totals": {k: stats[k] for k in ("hours", "segments", "sessions", "players", "frames", "distance_m")},
        "command_histogram": stats["command_histogram"],
        "speed_histogram_mps": stats["speed_histogram_mps"],
        "steer_histogram": stats["steer_histogram"],
        "splits": stats["splits"],
        "segments": [{
            "segment_id": s.record.segment_id, "session_id": s.record.session_id,
            "player_id": s.record.player_id, "split": split_of[s.record.session_id], "uri": s.record.uri,
            "frames": len(s.measurements), "duration_s": _round(s.record.duration_s),
            "distance_m": _round(s.record.distance_m, 3), "mean_speed_mps": _round(s.record.mean_speed_mps),
            "command_counts": dict(sorted(s.record.command_counts.items())),
            "processor_attempt_id": s.record.attempt_id, "files_sha256": s.files_sha256,
        } for s in segs],
    }
    dataset_id = dataset_id_of(manifest)
    existing = await asyncio.to_thread(catalog.get_dataset, dataset_id)
    if existing is not None:
        return existing, False
    root = f"{datasets_prefix}{dataset_id}/"
    bound = log.bind(dataset_id=dataset_id)

    async def write(rel: str, data: bytes, content_type: str) -> None:
        await store.put_bytes(root + rel, data, content_type=content_type)

    await write("stats.json", json.dumps({"dataset_id": dataset_id, **stats}, indent=1).encode(), "application/json")
    for fname, png in render_plots(stats).items():
        await write(f"plots/{fname}", png, "image/png")
    order = sorted(segs, key=lambda s: (split_of[s.record.session_id] != "train", s.record.segment_id))
    episodes = [lerobot.Episode(s.record.segment_id, s.record.session_id, s.record.player_id,
                                split_of[s.record.session_id], s.measurements, s.frame_keys) for s in order]

    async def load_frame(key: str) -> bytes:
        return await store.get_bytes(key, max_bytes=64 * 1024 * 1024)

    async def write_lerobot(rel: str, data: bytes, content_type: str) -> None:
        await write(f"lerobot/{rel}", data, content_type)

    await lerobot.export(episodes, fps=fps, height=int(out.get("height", 0)), width=int(out.get("width", 0)),
                         load_frame=load_frame, write=write_lerobot)
    await write("manifest.json", canonical_json(manifest), "application/json")
    record = DatasetRecord(
        dataset_id=dataset_id, name=name or f"dataset-{dataset_id[:12]}", created_at=datetime.now(UTC),
        hours=stats["hours"], segments=stats["segments"], players=stats["players"], sessions=stats["sessions"],
        frames=stats["frames"], train_segments=stats["splits"]["train"]["segments"],
        val_segments=stats["splits"]["val"]["segments"], val_fraction=val_fraction, split_seed=split_seed,
        manifest_uri=root + "manifest.json", stats_uri=root + "stats.json", lerobot_uri=root + "lerobot/")
    stored, created = await asyncio.to_thread(catalog.add_dataset, record)
    bound.info("dataset created", segments=stats["segments"], hours=stats["hours"], created=created)
    return stored, created
