"""A dataset version as training batches: read by its manifest, split by session, JPEGs decoded fast.

The version is a folder laid out like the object store (docs/datasets.md): `datasets/<id>/manifest.json`
and, per session, `processed/<sid>/segments.json` and the segment folders it names. The split is the
manifest's own (`segments[].split`, decided by session when the version was made); nothing here
re-splits, so a validation session never lends a frame to training.

A version in the object store is first copied into a local cache in the same layout
(`fetch_version`, async; `fetch_version_sync` builds the store from `SD_STORE_*` settings): every byte
is checked against the version id through the manifest's per-segment listing digests and the objects'
ETags, and only complete, checked files ever get their final names.

Frames are decoded in the DataLoader's workers by libjpeg-turbo (simplejpeg) straight into a uint8
array, and batches stay uint8 until the training device: normalisation and augmentation run there.
When the model asks for another input size than the version's, the worker resizes (see FrameDataset).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from sd_common.objectstore import ObjectInfo, ObjectStore, make_store, validate_key, validate_prefix
from sd_common.processed_format import listing_digest
from sd_common.settings import StoreSettings
from torch.utils.data import DataLoader, Dataset, Sampler
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
    source: dict[str, int] | None = None  # the recording's size
    mount: dict[str, float] | None = None  # the recording camera's pose on the car (absent in older documents)

    def camera(self, height: int, width: int) -> dict[str, Any] | None:
        """The checkpoint's `camera` entry for a network taking `height` x `width` (docs/training.md,
        "Checkpoints"); None when segments.json lacks the mount, source, crop or intrinsics."""
        if not (self.mount and self.source and self.crop and self.intrinsics and "fx" in self.intrinsics):
            return None
        # The output's fx is the recording's scaled by output/crop width; the recording spans its whole width.
        fx_recording = self.intrinsics["fx"] * self.crop["width"] / self.width
        fov_deg = 2 * math.degrees(math.atan(self.source["width"] / (2 * fx_recording)))
        return {
            "recording": {"width": int(self.source["width"]), "height": int(self.source["height"]), "fov_deg": fov_deg},
            "mount": {k: float(v) for k, v in self.mount.items()},
            "crop": {k: int(self.crop[k]) for k in ("x", "y", "width", "height")},
            "output": {"width": self.width, "height": self.height},
            "input": {"width": int(width), "height": int(height)},
        }

    def scaled_to(self, height: int, width: int) -> Geometry:
        """The camera of these frames resized to `height` x `width` (the whole frame scaled, nothing cropped)."""
        if (height, width) == (self.height, self.width) or self.intrinsics is None:
            return replace(self, height=height, width=width)
        sx, sy = width / self.width, height / self.height
        k = dict(self.intrinsics)
        for name, scale in (("fx", sx), ("cx", sx), ("fy", sy), ("cy", sy)):
            if name in k:
                k[name] = k[name] * scale
        if "fx" in k:
            k["fov_deg"] = math.degrees(2 * math.atan(width / (2 * k["fx"])))
        return replace(self, height=height, width=width, intrinsics=k)


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
                    crop=doc.get("crop"), source=doc.get("source"), mount=doc.get("mount"))


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


def decode_jpeg_resized(data: bytes, height: int, width: int) -> torch.Tensor:
    """uint8 [3, height, width] from JPEG bytes, as the loader resizes a frame for the model: decoded at the
    smallest libjpeg-turbo DCT scale still at least that size, then antialiased bilinear, rounded."""
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=height, min_width=width)
    chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    if chw.shape[1:] == (height, width):
        return chw
    resized = F.interpolate(chw[None].float(), size=(height, width), mode="bilinear", antialias=True,
                            align_corners=False)[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


class FrameDataset(Dataset):
    """Frames of one split as dicts of tensors (docs/training.md, "A batch").

    `height` x `width` is the version's frame size; `out_height` x `out_width` (0: the same) is what the
    model takes. Only when they differ is a frame resized, here in the worker: libjpeg-turbo decodes at the
    smallest DCT scale (1/2, 1/4, 1/8) still at least the asked size, then an antialiased bilinear resize
    (torch, on the uint8 picture as float, rounded back to uint8) gives the exact size.
    """

    def __init__(self, frames: list[FrameRecord], height: int, width: int, out_height: int = 0, out_width: int = 0):
        self.frames = frames
        self.height = height
        self.width = width
        self.out_height = out_height or height
        self.out_width = out_width or width
        if self.out_height < 1 or self.out_width < 1:
            raise DatasetError(f"input size {out_width}x{out_height} is not a picture size")

    @property
    def resizes(self) -> bool:
        """Whether frames are resized for the model."""
        return (self.out_height, self.out_width) != (self.height, self.width)

    def __len__(self) -> int:
        return len(self.frames)

    def picture(self, index: int) -> torch.Tensor:
        """Frame `index` as uint8 [3, H, W] at the model's input size."""
        f = self.frames[index]
        with open(f.path, "rb") as fh:
            data = fh.read()
        h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        if (h, w) != (self.height, self.width):
            raise DatasetError(f"{f.path} is {w}x{h}, the version's frames are {self.width}x{self.height}")
        if not self.resizes:
            return torch.from_numpy(np.ascontiguousarray(decode_jpeg(data).transpose(2, 0, 1)))
        return decode_jpeg_resized(data, self.out_height, self.out_width)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        f = self.frames[index]
        return {
            "image": self.picture(index),
            "speed_mps": torch.tensor(f.speed_mps, dtype=torch.float32),
            "command": torch.tensor(f.command, dtype=torch.int64),
            "branch": torch.tensor(f.branch, dtype=torch.int64),
            "controls": torch.tensor((f.steer, f.throttle, f.brake), dtype=torch.float32),
        }


def split_dataset(version: LocalVersion, split: str, *, height: int = 0, width: int = 0) -> FrameDataset:
    """The FrameDataset of one split; `height`/`width` as ModelConfig's image_height/image_width (0: the version's)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; splits are {SPLITS}")
    return FrameDataset(version.frames[split], version.geometry.height, version.geometry.width, height, width)


def standing_weights(frames: list[FrameRecord], standing_speed_mps: float) -> torch.Tensor:
    """Per-frame draw weights that make standing frames pulling away as likely as standing frames holding.

    A frame stands when its speed is below `standing_speed_mps`; it pulls away when its throttle is above
    its brake, and holds otherwise. The standing frames keep their share of all draws (the speed input
    already tells them from moving frames) and it is split evenly between the two kinds, so the L1 loss
    no longer rewards "hold" as the answer for every standing picture (in demonstrations the car mostly
    stands waiting) and only the picture can decide. Moving frames weigh 1. With no frame of one kind, all
    weights are 1.
    """
    if not standing_speed_mps > 0:
        raise DatasetError(f"standing_speed_mps must be positive, got {standing_speed_mps}")
    speed = torch.tensor([f.speed_mps for f in frames], dtype=torch.float64)
    pulls = torch.tensor([f.throttle > f.brake for f in frames])
    standing = speed.abs() < standing_speed_mps
    weights = torch.ones(len(frames), dtype=torch.float64)
    n_pull = int((standing & pulls).sum())
    n_hold = int((standing & ~pulls).sum())
    if n_pull and n_hold:
        n_standing = n_pull + n_hold
        weights[standing & pulls] = n_standing / (2 * n_pull)
        weights[standing & ~pulls] = n_standing / (2 * n_hold)
    return weights


class WeightedEpochSampler(Sampler[int]):
    """Frame indices drawn with replacement by weight, one shard's worth per rank and epoch.

    Each epoch draws `len(weights) // world_size` indices from a generator seeded by (seed, epoch, rank)
    alone, so a resumed run sees the same batches and ranks draw independently.
    """

    def __init__(self, weights: torch.Tensor, *, seed: int, rank: int = 0, world_size: int = 1):
        self.weights = weights
        self.seed = seed
        self.rank = rank
        self.num_samples = max(1, len(weights) // world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank)
        return iter(torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist())


def make_loader(dataset: FrameDataset, cfg: DataConfig, *, train: bool, seed: int, rank: int = 0,
                world_size: int = 1, device_type: str = "cpu") -> DataLoader:
    """Batches of a split: drawn per epoch for training (one shard per rank under DDP), in order for validation.

    Training draws follow `cfg.sampling`: shuffled epochs, or weighted draws (`standing_weights`).
    """
    sampler: Sampler[int] | None = None
    if train and cfg.sampling == "standing":
        sampler = WeightedEpochSampler(standing_weights(dataset.frames, cfg.standing_speed_mps), seed=seed,
                                       rank=rank, world_size=world_size)
    elif train and cfg.sampling != "uniform":
        raise DatasetError(f"unknown sampling {cfg.sampling!r}")
    elif world_size > 1:
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


# ---- a version from the object store -----------------------------------------------------------

COMPLETE_MARKER = ".complete.json"  # written last: the cache holds the whole version, every file checked
_PARTIAL_DIR = ".partial"  # bodies being downloaded; renamed into place only once complete and checked
_FETCH_CONCURRENCY = 16
_MANIFEST_MAX_BYTES = 256 * 1024 * 1024
_SEGMENTS_JSON_MAX_BYTES = 64 * 1024 * 1024


def _plain_md5(etag: str) -> str | None:
    """The MD5 an ETag stands for, or None for a multipart ETag (`<hex>-<parts>`), which hashes the parts."""
    value = etag.strip().strip('"')
    return value if len(value) == 32 and "-" not in value else None


def _local_path(root: Path, key: str) -> Path:
    validate_key(key)  # no '..', no leading '/', no hidden names: a key stays inside root
    return root / key


def _write_atomically(root: Path, path: Path, data: bytes) -> None:
    tmp = root / _PARTIAL_DIR / secrets.token_hex(16)
    with open(tmp, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)


def _file_matches(path: Path, info: ObjectInfo) -> bool:
    """A file already in the cache is kept only if its size and (for single-part objects) MD5 match the ETag."""
    try:
        if path.stat().st_size != info.size_bytes:
            return False
    except FileNotFoundError:
        return False
    expected = _plain_md5(info.etag)
    if expected is None:
        return True
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            md5.update(chunk)
    return md5.hexdigest() == expected


async def _download(store: ObjectStore, root: Path, info: ObjectInfo, segment_id: str) -> bool:
    """Copies one object into the cache unless a checked copy is there; True if it was downloaded."""
    path = _local_path(root, info.key)
    if await asyncio.to_thread(_file_matches, path, info):
        return False
    tmp = root / _PARTIAL_DIR / secrets.token_hex(16)
    md5 = hashlib.md5()
    size = 0
    out = await asyncio.to_thread(open, tmp, "xb")
    try:
        async for chunk in store.iter_bytes(info.key):
            md5.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(out.write, chunk)
        await asyncio.to_thread(out.flush)
        await asyncio.to_thread(os.fsync, out.fileno())
    finally:
        out.close()
    expected = _plain_md5(info.etag)
    if size != info.size_bytes or (expected is not None and md5.hexdigest() != expected):
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"segment {segment_id}: {info.key} arrived as {size} bytes with MD5 {md5.hexdigest()}, "
                           f"the listing says {info.size_bytes} bytes, ETag {info.etag}: the object changed "
                           "while it was read")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, path)
    return True


@dataclass(frozen=True)
class FetchReport:
    """What one fetch_version call did."""

    root: Path
    reused: bool  # the cache was already complete: nothing was listed or downloaded
    objects: int  # objects of the version's segments
    downloaded: int  # of which this call downloaded (the others were already in the cache, checked)


async def fetch_version_report(store: ObjectStore, dataset_id: str, cache_dir: Path) -> FetchReport:
    """fetch_version, also saying whether the cache was reused and how many objects were downloaded."""
    if not (len(dataset_id) == 64 and all(c in "0123456789abcdef" for c in dataset_id)):
        raise DatasetError(f"dataset id {dataset_id!r} is not a lowercase hex SHA-256 (64 characters)")
    root = Path(cache_dir) / dataset_id
    marker = root / COMPLETE_MARKER
    manifest_key = f"datasets/{dataset_id}/manifest.json"
    manifest_path = root / manifest_key
    if marker.is_file() and manifest_path.is_file():
        if hashlib.sha256(manifest_path.read_bytes()).hexdigest() == dataset_id:
            return FetchReport(root, True, json.loads(marker.read_text()).get("objects", 0), 0)
    # Bodies left by an interrupted fetch were never renamed into place: they are simply discarded.
    shutil.rmtree(root / _PARTIAL_DIR, ignore_errors=True)
    (root / _PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
    if await store.head(manifest_key) is None:
        raise DatasetError(f"dataset version {dataset_id!r} not found: no {manifest_key} in the store")
    raw = await store.get_bytes(manifest_key, max_bytes=_MANIFEST_MAX_BYTES)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != dataset_id:
        raise DatasetError(f"{manifest_key} has SHA-256 {digest}, not the version id {dataset_id}: the file was changed")
    manifest = json.loads(raw)
    segments = manifest.get("segments") or []
    for sid in sorted({seg["session_id"] for seg in segments}):
        key = f"processed/{sid}/segments.json"
        if await store.head(key) is None:
            raise DatasetError(f"session {sid}: {key} is missing from the store")
        data = await store.get_bytes(key, max_bytes=_SEGMENTS_JSON_MAX_BYTES)
        await asyncio.to_thread(_write_atomically, root, _local_path(root, key), data)
    # Every segment's listing is checked before anything is downloaded, so a changed segment fails fast.
    work: list[tuple[ObjectInfo, str]] = []
    for seg in segments:
        seg_id, uri = seg["segment_id"], seg["uri"]
        if not uri.endswith("/"):
            raise DatasetError(f"segment {seg_id}: uri {uri!r} is not a folder prefix")
        validate_prefix(uri)
        objects = [info async for info in store.list(uri)]
        if not objects:
            raise DatasetError(f"segment {seg_id}: no objects under {uri} in the store")
        found = listing_digest(uri, objects)
        if found != seg.get("files_sha256"):
            raise DatasetError(f"segment {seg_id}: the files under {uri} have listing digest {found}, the version "
                               f"recorded {seg.get('files_sha256')}: the segment changed since the version was made")
        work.extend((info, seg_id) for info in objects)
    limit = asyncio.Semaphore(_FETCH_CONCURRENCY)

    async def one(info: ObjectInfo, seg_id: str) -> bool:
        async with limit:
            return await _download(store, root, info, seg_id)

    downloaded = sum(await asyncio.gather(*(one(info, seg_id) for info, seg_id in work)))
    # The manifest goes in after everything it names, then the marker: either means "all here, all checked".
    await asyncio.to_thread(_write_atomically, root, manifest_path, raw)
    await asyncio.to_thread(_write_atomically, root, marker, json.dumps(
        {"dataset_id": dataset_id, "objects": len(work)}).encode())
    shutil.rmtree(root / _PARTIAL_DIR, ignore_errors=True)
    return FetchReport(root, False, len(work), downloaded)


async def fetch_version(store: ObjectStore, dataset_id: str, cache_dir: Path) -> Path:
    """Copies a version from the object store into `cache_dir/<id>/` (the store's layout) and returns that folder.

    Async. The manifest is checked against its id, each segment's object listing against the manifest's
    `files_sha256`, and each downloaded body against its listed size and ETag (MD5 for single-part
    objects). A cache completed earlier is reused without listing the store; an interrupted one is resumed:
    files already in place are kept if their size and MD5 still match, partial bodies are discarded.
    """
    return (await fetch_version_report(store, dataset_id, cache_dir)).root


def fetch_version_sync(settings: StoreSettings, dataset_id: str, cache_dir: Path) -> Path:
    """fetch_version from the store `settings` describe (SD_STORE_*), for a caller without an event loop."""

    async def run() -> Path:
        async with make_store(settings) as store:
            return await fetch_version(store, dataset_id, cache_dir)

    return asyncio.run(run())
