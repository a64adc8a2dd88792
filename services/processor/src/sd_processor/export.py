"""EXPORT: accepted segments as CILRS route folders, written through a sink (a folder or the object store).

``route_<session>_<nnn>/rgb_front/00000.jpg …`` holds the frames (JPEG straight from the output
picture's Y/U/V planes with libjpeg-turbo) and ``route_<session>_<nnn>/measurements.json`` one entry
per image: the logged state the picture shows and the player's own inputs, never synthesized. Poses are converted to
CARLA's left-handed world frame (y and the heading negated, as docs/session-format.md §2 says).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import simplejpeg

from .framelog import FrameLog
from sd_common.processed_format import MEASUREMENTS_NAME, QC_REPORT_NAME, RGB_DIR, SEGMENTS_NAME, SUCCESS_NAME

_MAX_SEGMENT_CHARS = 128  # object-store key segments (sd_common.objectstore.keys)


class OutputSink(Protocol):
    """Where outputs go: relative keys such as ``route_x_000/rgb_front/00000.jpg``."""

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Writes every (key, bytes) pair; returns when all are stored."""

    def begin(self) -> None:
        """Called before the first write of a run (a retry starts here too)."""

    def finish(self, keys: set[str]) -> None:
        """Called after the last output but before the success marker, with every key this run wrote."""


class DirectorySink:
    """Outputs as files under a local folder (``sdctl process --out``); stale outputs of earlier runs go."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def begin(self) -> None:
        """Removes the success marker first, so a run that dies half-way never looks complete."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / SUCCESS_NAME).unlink(missing_ok=True)

    def put_many(self, items: list[tuple[str, bytes]]) -> None:
        """Writes each file through a temporary name and a rename."""
        made: set[Path] = set()
        for key, data in items:
            path = self.root / key
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)

    def finish(self, keys: set[str]) -> None:
        """Deletes route folders and top-level files an earlier run left that this run did not write."""
        tops = {k.split("/", 1)[0] for k in keys}
        for entry in self.root.iterdir():
            if entry.name in tops or entry.name == SUCCESS_NAME:
                continue
            if entry.is_dir() and entry.name.startswith("route_"):
                shutil.rmtree(entry)
            elif entry.is_file() and entry.name in (QC_REPORT_NAME, SEGMENTS_NAME):
                entry.unlink()


def route_folder(session_id: str, index: int) -> str:
    """``route_<session>_<nnn>``; a session id too long for one key segment is shortened with a hash."""
    name = f"route_{session_id}_{index:03d}"
    if len(name) <= _MAX_SEGMENT_CHARS:
        return name
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:12]
    keep = _MAX_SEGMENT_CHARS - len(f"route__{index:03d}") - len(digest) - 1
    return f"route_{session_id[:keep]}-{digest}_{index:03d}"


def encode_jpeg(y, u, v, quality: int) -> bytes:
    """JPEG (JFIF) from full-range 4:2:0 planes, without a colour conversion."""
    return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)


def measurement(log: FrameLog, line: int, frame: int, *, pictured: int | None = None,
                label: str = "shown") -> dict[str, Any]:
    """One measurements.json entry for image number ``frame``: the picture on screen at ``line``.

    The pose, speed and command are those of ``pictured``, the line whose state the picture shows (the
    line itself without the diffusion view). Both sets of controls are kept: those applied while the
    picture was on screen (``line``) and those at the render it was made from (``pictured``);
    ``label`` ("shown" or "rendered") says which are the entry's steer, throttle and brake.
    """
    pic = line if pictured is None else pictured
    yaw = float(log.col("yaw_deg")[pic])
    theta = math.radians(-yaw)
    theta = (theta + math.pi) % (2 * math.pi) - math.pi
    y = float(log.col("y_m")[pic])
    shown, rendered = _controls(log, line), _controls(log, pic)
    return {
        "frame": frame,
        "x": float(log.col("x_m")[pic]),
        "y": -y if y else 0.0,
        "theta": theta,
        "speed": float(log.col("speed_mps")[pic]),
        **(shown if label == "shown" else rendered),
        "command": int(log.command[pic]),
        "frame_id": int(log.frame_id[line]),
        "pictured_frame_id": int(log.frame_id[pic]),
        "display_latency_ms": round(float(log.col("t_capture_ms")[line] - log.col("t_render_ms")[pic]), 3),
        "controls_shown": shown,
        "controls_rendered": rendered,
    }


def _controls(log: FrameLog, line: int) -> dict[str, float]:
    return {k: float(log.col(k)[line]) for k in ("steer", "throttle", "brake")}


def segment_items(folder: str, log: FrameLog, frames: list, *, label: str = "shown") -> list[tuple[str, bytes]]:
    """The (key, bytes) pairs of one route folder: its images, then measurements.json."""
    items = [(f"{folder}/{RGB_DIR}/{k:05d}.jpg", c.jpeg) for k, c in enumerate(frames)]
    rows = [measurement(log, c.line, k, pictured=c.pictured, label=label) for k, c in enumerate(frames)]
    items.append((f"{folder}/{MEASUREMENTS_NAME}", json_bytes(rows)))
    return items


def json_bytes(obj: Any) -> bytes:
    """Compact, deterministic JSON with a final newline; NaN is refused (JSON has none)."""
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=True) + "\n").encode()
