"""A recorded session made over as someone re-uploading it for a second reward would.

``reupload_copy`` copies a session folder with its video re-encoded (another bitrate), every page-
clock time and the video's pts shifted by one amount, and, optionally, each input event's time moved
by a small random amount, so the copy's files are byte-for-byte different from the original while
its drive is the same. The manifest is rewritten with the new sizes and hashes (and a new session id
when one is given). The ingest's replay check must still recognize such a copy (tests, and the
measurements in docs/verification.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np

from .spec import EVENTS_NAME, FRAMES_NAME, LATENCY_NAME, MANIFEST_NAME, VIDEO_NAME, file_sha256
from .video import VideoWriter, pts_ms

# Page-clock fields of each log (docs/session-format.md): all move with a shifted clock.
_CLOCK_FIELDS = {FRAMES_NAME: ("t_render_ms", "t_capture_ms"), EVENTS_NAME: ("t_ms",),
                 LATENCY_NAME: ("t_ms", "sent_ms", "received_ms")}


def reencode_video(src: Path, dst: Path, *, bitrate: int, shift_ms: int = 0) -> int:
    """Decodes ``src`` and encodes every picture into ``dst`` at ``bitrate`` with its pts moved by
    ``shift_ms``; returns the number of frames."""
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        n = 0
        with VideoWriter(dst, width, height, bitrate=bitrate) as writer:
            for frame in container.decode(video=0):
                writer.write_i420(frame.to_ndarray(format="yuv420p"), pts_ms(frame) + shift_ms)
                n += 1
    return n


def _shift_lines(src: Path, dst: Path, fields: tuple[str, ...], shift_ms: float,
                 jitter: np.ndarray | None = None) -> None:
    out = []
    last = -np.inf
    for k, line in enumerate(src.read_text().splitlines()):
        obj = json.loads(line)
        for name in fields:
            if isinstance(obj.get(name), (int, float)):
                value = obj[name] + shift_ms + (float(jitter[k]) if jitter is not None else 0.0)
                if jitter is not None:  # a log's times never go back
                    value = max(value, last)
                    last = value
                obj[name] = round(value, 3)
        out.append(json.dumps(obj, separators=(",", ":")))
    dst.write_text("".join(line + "\n" for line in out))


def reupload_copy(src: Path, dst: Path, *, bitrate: int, shift_ms: int = 0, event_jitter_ms: float = 0.0,
                  session_id: str | None = None, seed: int = 0) -> Path:
    """Writes a re-uploaded copy of the session folder ``src`` into ``dst`` (made anew); returns ``dst``.

    ``event_jitter_ms`` > 0 moves each input event's time by up to that much, which changes the log
    fingerprint but not the drive.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    manifest = json.loads((src / MANIFEST_NAME).read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    for entry in manifest["files"]:
        name = entry["path"]
        if name == VIDEO_NAME:
            reencode_video(src / name, dst / name, bitrate=bitrate, shift_ms=shift_ms)
        elif name in _CLOCK_FIELDS:
            lines = len((src / name).read_text().splitlines())
            jitter = None
            if name == EVENTS_NAME and event_jitter_ms > 0:
                jitter = np.random.default_rng(seed).uniform(0.0, event_jitter_ms, lines)
            _shift_lines(src / name, dst / name, _CLOCK_FIELDS[name], float(shift_ms), jitter)
        else:
            shutil.copyfile(src / name, dst / name)
        entry["size_bytes"], entry["sha256"] = (dst / name).stat().st_size, file_sha256(dst / name)
    for extra in src.iterdir():
        if extra.name not in listed and extra.name != MANIFEST_NAME and extra.is_file():
            shutil.copyfile(extra, dst / extra.name)
    if session_id is not None:
        manifest["session_id"] = session_id
    (dst / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return dst
