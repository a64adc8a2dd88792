"""Small dataset versions for the trainer's tests, in the exact layout the ingest writes.

A version is written to a folder laid out like the object store (docs/datasets.md,
docs/dataset-format.md): `datasets/<id>/manifest.json` (canonical JSON, id = its SHA-256, the split by
session from the ingest's own `split_sessions`), and per session `processed/<sid>/segments.json` and
`processed/<sid>/route_<sid>_<nnn>/{rgb_front/NNNNN.jpg, measurements.json}`.

The pictures carry the labels, so a network can learn them and a lowered validation loss means
something: a vertical bar whose horizontal position is the steer, an overall brightness that rises
with the throttle, a bottom strip lit when braking, and a corner patch whose colour is the command.
Each session has its own texture noise, so validation sessions are new scenes, not copies.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg

from sd_ingest.datasets import canonical_json, dataset_id_of, split_sessions

COMMANDS = (4, 1, 2, 3, 5, 6)  # LANEFOLLOW, LEFT, RIGHT, STRAIGHT, CHANGELANELEFT, CHANGELANERIGHT
# The recording camera's pose on the car that every session's segments.json names (not the default one).
MOUNT = {"x_m": 1.5, "y_m": 0.25, "z_m": 2.0, "pitch_deg": -4.0, "yaw_deg": 3.0, "roll_deg": 0.5}
_COMMAND_RGB = {4: (0, 0, 0), 5: (0, 0, 0), 6: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0), 3: (0, 0, 255)}


@dataclass(frozen=True)
class Version:
    """What make_version wrote: the id, the root folder, and the split it used."""

    dataset_id: str
    root: Path
    manifest: dict
    split: dict[str, str]  # session id -> "train" | "val"


def picture(steer: float, throttle: float, brake: float, command: int, rng: np.random.Generator,
            height: int, width: int) -> np.ndarray:
    """An RGB uint8 picture that shows its labels (see the module docstring)."""
    base = 40 + 120 * throttle
    img = np.clip(base + rng.normal(0, 12, size=(height, width, 3)), 0, 255)
    bar_x = int(round((steer + 1) / 2 * (width - 1)))
    half = max(1, width // 32)
    img[:, max(0, bar_x - half):bar_x + half + 1, :] = 250
    if brake > 0.5:
        img[height - max(2, height // 10):, :, :] = (255, 255, 0)
    patch = max(4, height // 6)
    img[:patch, :patch, :] = _COMMAND_RGB[command]
    return img.astype(np.uint8)


def make_version(root: Path, *, sessions: int = 4, segments_per_session: int = 2, frames: int = 20,
                 height: int = 64, width: int = 64, val_fraction: float = 0.25, seed: int = 0,
                 players: int = 2) -> Version:
    """Writes a version under `root` and returns it; the same arguments always give the same bytes."""
    root = Path(root)
    session_ids = [f"sess-{seed:02d}-{i:02d}" for i in range(sessions)]
    split = split_sessions(session_ids, val_fraction, seed)
    manifest_segments = []
    all_commands: dict[str, int] = {}
    totals_frames = 0
    for s_index, sid in enumerate(session_ids):
        rng = np.random.default_rng([seed, s_index])
        player = f"player-{s_index % players}"
        seg_docs = []
        for g in range(segments_per_session):
            seg_id = f"route_{sid}_{g:03d}"
            folder = root / "processed" / sid / seg_id
            (folder / "rgb_front").mkdir(parents=True, exist_ok=True)
            measurements = []
            x = y = 0.0
            counts: dict[str, int] = {}
            for k in range(frames):
                t = k / max(1, frames - 1)
                steer = float(np.clip(math.sin(2 * math.pi * (t + 0.37 * g + 0.11 * s_index)) * 0.8, -1, 1))
                throttle = float(np.clip(0.5 + 0.5 * math.cos(2 * math.pi * t + s_index), 0, 1))
                brake = 1.0 if (k + g + s_index) % 7 == 0 else 0.0
                command = COMMANDS[(k // 4 + g + s_index) % len(COMMANDS)]
                speed = float(5.0 + 4.0 * throttle)
                x += speed / 20.0
                y += steer * 0.1
                measurements.append({"frame": k, "x": x, "y": y, "theta": steer * 0.1, "speed": speed,
                                     "steer": steer, "throttle": throttle, "brake": brake, "command": command})
                counts[str(command)] = counts.get(str(command), 0) + 1
                img = picture(steer, throttle, brake, command, rng, height, width)
                (folder / "rgb_front" / f"{k:05d}.jpg").write_bytes(
                    simplejpeg.encode_jpeg(img, quality=90, colorspace="RGB"))
            (folder / "measurements.json").write_text(json.dumps(measurements))
            for c, n in counts.items():
                all_commands[c] = all_commands.get(c, 0) + n
            totals_frames += frames
            files = sorted(p for p in folder.rglob("*") if p.is_file())
            # The ETag as the store lists it: the quoted MD5 of a single-part object (sd_ingest.datasets._gather).
            listing = "".join(f"{p.relative_to(folder).as_posix()}\t{p.stat().st_size}\t"
                              f"\"{hashlib.md5(p.read_bytes()).hexdigest()}\"\n" for p in files)
            seg_doc = {"segment_id": seg_id, "index": g, "accepted": True, "reasons": [], "frames": frames,
                       "duration_s": frames / 20.0, "t_start_ms": 0.0, "t_end_ms": frames * 50.0,
                       "distance_m": round(x, 3), "mean_speed_mps": 7.0,
                       "command_counts": dict(sorted(counts.items()))}
            seg_docs.append(seg_doc)
            manifest_segments.append({
                "segment_id": seg_id, "session_id": sid, "player_id": player, "split": split[sid],
                "uri": f"processed/{sid}/{seg_id}/", "frames": frames, "duration_s": frames / 20.0,
                "distance_m": round(x, 3), "mean_speed_mps": 7.0, "command_counts": dict(sorted(counts.items())),
                "processor_attempt_id": f"attempt-{sid}",
                "files_sha256": hashlib.sha256(listing.encode()).hexdigest()})
        fx = width / (2 * math.tan(math.radians(64.66) / 2))
        (root / "processed" / sid / "segments.json").write_text(json.dumps({
            "schema_version": 1, "session_id": sid, "player_id": player, "attempt_id": f"attempt-{sid}",
            "source": {"width": 1280, "height": 720}, "crop": {"x": 300, "y": 20, "width": 680, "height": 680},
            "output": {"width": width, "height": height},
            "intrinsics": {"fx": fx, "fy": fx, "cx": width / 2, "cy": height / 2, "fov_deg": 64.66},
            "mount": dict(MOUNT), "segments": seg_docs, "config": {}}))
    manifest_segments.sort(key=lambda s: s["segment_id"])
    parts = {}
    for part in ("train", "val"):
        segs = [s for s in manifest_segments if s["split"] == part]
        parts[part] = {"segments": len(segs), "sessions": len({s["session_id"] for s in segs}),
                       "players": len({s["player_id"] for s in segs}), "frames": sum(s["frames"] for s in segs),
                       "hours": round(sum(s["duration_s"] for s in segs) / 3600, 6)}
    manifest = {
        "schema_version": 1, "kind": "scale_diffusion.cilrs",
        "split": {"seed": seed, "val_fraction": val_fraction, "method": "sha256(seed:session_id) rank",
                  "sessions": dict(sorted(split.items()))},
        "output": {"width": width, "height": height}, "fps": 20,
        "totals": {"hours": round(totals_frames / 20 / 3600, 6), "segments": len(manifest_segments),
                   "sessions": sessions, "players": min(players, sessions), "frames": totals_frames,
                   "distance_m": round(sum(s["distance_m"] for s in manifest_segments), 3)},
        "command_histogram": dict(sorted(all_commands.items())),
        "speed_histogram_mps": {"edges": [float(i) for i in range(31)], "counts": [0] * 30},
        "steer_histogram": {"edges": [round(-1 + 0.1 * i, 6) for i in range(21)], "counts": [0] * 20},
        "splits": parts,
        "segments": manifest_segments,
    }
    dataset_id = dataset_id_of(manifest)
    (root / "datasets" / dataset_id).mkdir(parents=True, exist_ok=True)
    (root / "datasets" / dataset_id / "manifest.json").write_bytes(canonical_json(manifest))
    return Version(dataset_id=dataset_id, root=root, manifest=manifest, split=split)
