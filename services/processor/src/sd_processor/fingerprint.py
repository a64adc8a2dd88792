"""Fingerprints that let the ingest recognize a replayed upload: picture hashes and a log fingerprint.

Picture hashes: a 64-bit perceptual hash (imagehash's DCT ``phash``) of the output picture of a few
frames a second of each segment — the first frame at or after its start and after each further
``1 / frame_hashes_per_s`` seconds of its video time. A re-encoded copy of a video keeps its hashes
within a few bits; a different drive's pictures are far apart (docs/verification.md, "Duplicates and
replays", has the measured distances). The picture is shrunk 4:1 by area first: phash reads a 32x32
thumbnail anyway, and shrinking with OpenCV costs far less than PIL's Lanczos filter on the whole
picture (0.2 ms a hash instead of 0.5 ms).

The log fingerprint: SHA-256 over the session's input events, each as its time and simulation time
relative to the first event, its device, kind, code and value, after one line with the first event's
time relative to the first logged frame and the pose of that frame's car. A re-upload under another
session id, or with every page-clock time shifted, hashes the same; a drive with other inputs does not.
Fewer than ``MIN_FINGERPRINT_EVENTS`` events say too little to tell two drives apart: no fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import imagehash
import numpy as np
from PIL import Image
from pydantic import ValidationError
from sd_common.session_format.spec import InputEvent

from .framelog import FrameLog

HASH_THUMB = 64  # the picture is shrunk to this square before phash's own 32x32 resize
MIN_FINGERPRINT_EVENTS = 8


def picture_hash(y: np.ndarray) -> str:
    """The 64-bit perceptual hash of a luma plane, as 16 hex digits."""
    thumb = cv2.resize(y, (HASH_THUMB, HASH_THUMB), interpolation=cv2.INTER_AREA)
    return str(imagehash.phash(Image.fromarray(thumb)))


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hashes given as hex."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


class SegmentSampler:
    """Decides which kept frames of a segment are hashed: ``per_s`` a second of its video time."""

    def __init__(self, per_s: float) -> None:
        self.period_ms = 1000.0 / per_s if per_s > 0 else None
        self._segment = None
        self._next_ms = 0.0

    def due(self, segment, pts_ms: float) -> bool:
        """Whether the frame at ``pts_ms``, just added to ``segment``, is the next one to hash."""
        if self.period_ms is None:
            return False
        if segment is not self._segment:
            self._segment, self._next_ms = segment, float(segment.t_start_ms)
        if pts_ms < self._next_ms:
            return False
        while self._next_ms <= pts_ms:
            self._next_ms += self.period_ms
        return True


def _first_usable(log: FrameLog) -> int | None:
    return next((i for i in range(len(log)) if log.usable(i)), None)


def _num(v: float | None) -> str:
    return "null" if v is None else f"{v:.3f}"


def log_fingerprint(events_path: Path, log: FrameLog) -> str:
    """The session's log fingerprint (hex SHA-256), or "" with too few events or no usable frame line."""
    events: list[InputEvent] = []
    if events_path.is_file():
        with open(events_path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    events.append(InputEvent.model_validate_json(line))
                except (ValidationError, ValueError):
                    continue  # the validator reports it; a bad line is left out of the fingerprint
    first = _first_usable(log)
    if len(events) < MIN_FINGERPRINT_EVENTS or first is None:
        return ""
    t0 = events[0].t_ms
    sim0 = next((e.sim_t_ms for e in events if e.sim_t_ms is not None), 0.0)
    digest = hashlib.sha256()
    x, y, yaw = (float(log.col(c)[first]) for c in ("x_m", "y_m", "yaw_deg"))
    digest.update(f"start\t{t0 - float(log.col('t_render_ms')[first]):.3f}\t{x:.3f}\t{y:.3f}\t{yaw:.3f}\n".encode())
    for e in events:
        sim = None if e.sim_t_ms is None else e.sim_t_ms - sim0
        value = json.dumps(round(float(e.value), 6))
        digest.update(f"{e.t_ms - t0:.3f}\t{_num(sim)}\t{e.device}\t{e.kind}\t{e.code}\t{value}\n".encode())
    return digest.hexdigest()
