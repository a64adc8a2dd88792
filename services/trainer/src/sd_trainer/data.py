"""A dataset version as training batches: read by its manifest, split by session, JPEGs decoded fast.

The version is a folder laid out like the object store (docs/datasets.md): `datasets/<id>/manifest.json`
and, per session, `processed/<sid>/segments.json` and the segment folders it names. The split is the
manifest's own (`segments[].split`, decided by session when the version was made); nothing here
re-splits, so a validation session never lends a frame to training.

Frames are decoded in the DataLoader's workers by libjpeg-turbo (simplejpeg) straight into a uint8
array, and batches stay uint8 until the training device: normalisation and augmentation run there.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from sd_trainer.config import ROAD_OPTION_TO_BRANCH, DataConfig

SPLITS = ("train", "val")
_MEASUREMENT_KEYS = ("frame", "speed", "steer", "throttle", "brake", "command")


class DatasetError(ValueError):
    """The version is missing, inconsistent with its manifest, or has an unusable frame (named)."""


@dataclass(frozen=True)
class Geometry:
    """The exported camera of a version's frames (from the sessions' segments.json)."""

    width: int
    height: int
    intrinsics: dict[str, float] | None
    crop: dict[str, int] | None


@dataclass(frozen=True)
class FrameRecord:
    """One image and its labels."""

    path: str
    speed_mps: float
    command: int
    branch: int
    steer: float
    throttle: float
    brake: float
    session_id: str
    segment_id: str


@dataclass(frozen=True)
class LocalVersion:
    """A version read from a local folder: its manifest, geometry, and frames per split."""

    dataset_id: str
    root: Path
    manifest: dict[str, Any]
    geometry: Geometry
    frames: dict[str, list[FrameRecord]]

    def sessions(self, split: str) -> set[str]:
        """Sessions whose frames are in `split`."""
        return {f.session_id for f in self.frames[split]}


def read_manifest(root: Path, dataset_id: str) -> dict[str, Any]:
    """The manifest of `dataset_id` under `root`, checked against its content address."""
    path = Path(root) / "datasets" / dataset_id / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"dataset version {dataset_id!r} not found: no {path}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != dataset_id:
        raise DatasetError(f"{path} has SHA-256 {digest}, not the version id {dataset_id}: the file was changed")
    manifest = json.loads(raw)
    if manifest.get("kind") != "scale_diffusion.cilrs" or manifest.get("schema_version") != 1:
        raise DatasetError(f"{path} is not a version-1 CILRS manifest (kind {manifest.get('kind')!r}, "
                           f"schema_version {manifest.get('schema_version')!r})")
    return manifest


def open_local_version(root: Path, dataset_id: str) -> LocalVersion:
    """Reads a version's manifest, geometry and every frame's labels (not the pictures)."""
    root = Path(root)
    manifest = read_manifest(root, dataset_id)
    split_of_session = manifest["split"]["sessions"]
    frames: dict[str, list[FrameRecord]] = {s: [] for s in SPLITS}
    geometry: Geometry | None = None
    seen_sessions: set[str] = set()
    for seg in manifest["segments"]:
        sid, seg_id, split = seg["session_id"], seg["segment_id"], seg["split"]
        if split not in SPLITS or split_of_session.get(sid) != split:
            raise DatasetError(f"segment {seg_id}: split {split!r} disagrees with the manifest's split of "
                               f"session {sid} ({split_of_session.get(sid)!r})")
        if sid not in seen_sessions:
            seen_sessions.add(sid)
            g = _session_geometry(root, sid)
            if geometry is None:
                geometry = g
            elif (g.width, g.height) != (geometry.width, geometry.height):
                raise DatasetError(f"session {sid} has {g.width}x{g.height} frames, others "
                                   f"{geometry.width}x{geometry.height}")
        frames[split].extend(_segment_frames(root, seg))
    if geometry is None:
        raise DatasetError(f"dataset version {dataset_id} has no segments")
    out = manifest.get("output") or {}
    if (out.get("width"), out.get("height")) != (geometry.width, geometry.height):
        raise DatasetError(f"manifest output {out} disagrees with the segments' {geometry.width}x{geometry.height}")
    return LocalVersion(dataset_id=dataset_id, root=root, manifest=manifest, geometry=geometry, frames=frames)


def _session_geometry(root: Path, sid: str) -> Geometry:
    path = root / "processed" / sid / "segments.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"session {sid}: {path} is missing") from None
    out = doc.get("output") or {}
    if not out.get("width") or not out.get("height"):
        raise DatasetError(f"session {sid}: {path} names no output size")
    return Geometry(width=int(out["width"]), height=int(out["height"]), intrinsics=doc.get("intrinsics"),
                    crop=doc.get("crop"))


def _segment_frames(root: Path, seg: dict[str, Any]) -> Iterator[FrameRecord]:
    folder = root / seg["uri"]
    seg_id = seg["segment_id"]
    try:
        entries = json.loads((folder / "measurements.json").read_text())
    except FileNotFoundError:
        raise DatasetError(f"segment {seg_id}: {folder / 'measurements.json'} is missing") from None
    if len(entries) != seg["frames"]:
        raise DatasetError(f"segment {seg_id}: measurements.json has {len(entries)} entries, the manifest "
                           f"says {seg['frames']} frames")
    for k, m in enumerate(entries):
        missing = [key for key in _MEASUREMENT_KEYS if key not in m]
        if missing:
            raise DatasetError(f"segment {seg_id} frame {k}: measurements lack {missing}")
        if m["frame"] != k:
            raise DatasetError(f"segment {seg_id}: entry {k} is frame {m['frame']}; entries must run 0, 1, 2, …")
        values = [m["speed"], m["steer"], m["throttle"], m["brake"]]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise DatasetError(f"segment {seg_id} frame {k}: speed/steer/throttle/brake not finite numbers: {values}")
        if m["command"] not in ROAD_OPTION_TO_BRANCH:
            raise DatasetError(f"segment {seg_id} frame {k}: route command {m['command']!r} has no CILRS branch")
        path = folder / "rgb_front" / f"{k:05d}.jpg"
        if not path.is_file():
            raise DatasetError(f"segment {seg_id}: image {path} is missing")
        yield FrameRecord(path=str(path), speed_mps=float(m["speed"]), command=int(m["command"]),
                          branch=ROAD_OPTION_TO_BRANCH[m["command"]], steer=float(m["steer"]),
                          throttle=float(m["throttle"]), brake=float(m["brake"]), session_id=seg["session_id"],
                          segment_id=seg_id)


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 HxWx3 from JPEG bytes, by libjpeg-turbo."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


class FrameDataset(Dataset):
    """Frames of one split as dicts of tensors (docs/training.md, "A batch")."""

    def __init__(self, frames: list[FrameRecord], height: int, width: int):
        self.frames = frames
        self.height = height
        self.width = width

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        f = self.frames[index]
        with open(f.path, "rb") as fh:
            rgb = decode_jpeg(fh.read())
        if rgb.shape[:2] != (self.height, self.width):
            raise DatasetError(f"{f.path} is {rgb.shape[1]}x{rgb.shape[0]}, the version's frames are "
                               f"{self.width}x{self.height}")
        return {
            "image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "speed_mps": torch.tensor(f.speed_mps, dtype=torch.float32),
            "command": torch.tensor(f.command, dtype=torch.int64),
            "branch": torch.tensor(f.branch, dtype=torch.int64),
            "controls": torch.tensor((f.steer, f.throttle, f.brake), dtype=torch.float32),
        }


def split_dataset(version: LocalVersion, split: str) -> FrameDataset:
    """The FrameDataset of one split of a version."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; splits are {SPLITS}")
    return FrameDataset(version.frames[split], version.geometry.height, version.geometry.width)


def make_loader(dataset: FrameDataset, cfg: DataConfig, *, train: bool, seed: int, rank: int = 0,
                world_size: int = 1, device_type: str = "cpu") -> DataLoader:
    """Batches of a split: shuffled per epoch for training (one shard per rank under DDP), in order for validation."""
    sampler = None
    if world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                     drop_last=train)
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        drop_last=train and len(dataset) >= cfg.batch_size * world_size,
        num_workers=workers,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=workers > 0,
        pin_memory=cfg.pin_memory and device_type == "cuda",
        generator=generator,
    )
