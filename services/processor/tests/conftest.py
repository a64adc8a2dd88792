"""Synthetic sessions (made once per run) and small builders for the processor's tests."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sd_common.session_format.synth import SynthConfig, SynthTruth, synth_session
from sd_processor.export import DirectorySink
from sd_processor.framelog import FrameLog
from sd_processor.pipeline import process_session


@pytest.fixture(scope="session")
def clean_session(tmp_path_factory) -> SynthTruth:
    """A clean 6 s 256x144 session: one full 5 s segment and a short rest."""
    return synth_session(tmp_path_factory.mktemp("clean"), SynthConfig(width=256, height=144, duration_s=6.0, seed=3))


@pytest.fixture(scope="session")
def processed_clean(clean_session, tmp_path_factory):
    """(result, output dir) of the clean session processed with the default configuration."""
    out = tmp_path_factory.mktemp("clean-out")
    return process_session(clean_session.session_dir, DirectorySink(out), attempt_id="a-1"), out


def run(session_dir: Path, out: Path, **kw):
    """Processes a session into ``out``; returns (result, qc_report dict)."""
    result = process_session(session_dir, DirectorySink(out), attempt_id=kw.pop("attempt_id", "t"), **kw)
    return result, json.loads((out / "qc_report.json").read_text())


def exported(qc: dict) -> list[tuple[int, int]]:
    """(frame_id, pts_ms) of every exported image, in order."""
    return [(f, p) for s in qc["segment_details"] if s["accepted"] for f, p in zip(s["frame_ids"], s["pts_ms"])]


def dropped_ids(qc: dict, reason: str) -> set[int]:
    """Frame ids dropped with ``reason``."""
    return {d["frame_id"] for d in qc["dropped_frames"] if reason in d["reasons"] and "frame_id" in d}


def log_lines(session_dir: Path) -> dict[int, dict]:
    """frames.jsonl as frame_id -> line object (lines that parse)."""
    out = {}
    for line in (session_dir / "frames.jsonl").read_text().splitlines():
        try:
            obj = json.loads(line)
            out[obj["frame_id"]] = obj
        except (ValueError, KeyError, TypeError):
            pass
    return out


def make_log(n: int, *, speed_mps: float = 5.0, fps: float = 30.0, steer=None, speed=None, x=None,
             yaw_deg=None, status=None) -> FrameLog:
    """A hand-built FrameLog of ``n`` usable lines: straight east at ``speed_mps`` unless arrays are given."""
    t = np.arange(n) * 1000.0 / fps
    speed = np.full(n, speed_mps) if speed is None else np.asarray(speed, float)
    x = np.cumsum(np.concatenate([[0.0], speed[:-1] / fps])) if x is None else np.asarray(x, float)
    zeros = np.zeros(n)
    values = {"t_render_ms": t, "t_capture_ms": t + 2.0, "sim_t_ms": t, "x_m": x, "y_m": zeros.copy(),
              "yaw_deg": zeros.copy() if yaw_deg is None else np.asarray(yaw_deg, float), "cam_x_m": x + 1.3,
              "cam_y_m": zeros.copy(), "cam_z_m": zeros + 2.3, "cam_yaw_deg": zeros.copy(), "speed_mps": speed,
              "steer": zeros.copy() if steer is None else np.asarray(steer, float), "throttle": zeros + 0.3,
              "brake": zeros.copy(), "route_progress": np.linspace(0.0, 0.5, n)}
    log = FrameLog(frame_id=np.arange(n, dtype=np.int64), command=np.full(n, 4, dtype=np.int8),
                   diffusion_frame_id=np.full(n, -1, dtype=np.int64), values=values,
                   status=list(status) if status is not None else [""] * n)
    log.index_of = {i: i for i in range(n)}
    log.handoff_ms = values["t_capture_ms"].copy()
    return log


def wrap_rad(deg: float) -> float:
    """Degrees (counter-clockwise, city frame) to CARLA's heading in radians, wrapped to [-pi, pi)."""
    theta = math.radians(-deg)
    return (theta + math.pi) % (2 * math.pi) - math.pi


def rewrite_video(session_dir: Path, edit) -> None:
    """Re-encodes video.webm through ``edit`` and re-hashes the manifest, as a recorder that did so would.

    ``edit`` takes the decoded pictures as a list of (I420 planes, pts_ms) and returns the list to encode.
    """
    import av
    from sd_common.session_format.spec import file_sha256
    from sd_common.session_format.video import VideoWriter

    video = session_dir / "video.webm"
    with av.open(str(video)) as container:
        pictures = [(f.to_ndarray(format="yuv420p"), round(f.pts * f.time_base * 1000))
                    for f in container.decode(video=0)]
    height, width = pictures[0][0].shape[0] * 2 // 3, pictures[0][0].shape[1]
    with VideoWriter(video, width, height, bitrate=int(2_500_000 * width * height / (1280 * 720))) as writer:
        for planes, pts in edit(pictures):
            writer.write_i420(planes, pts)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == "video.webm":
            entry["size_bytes"], entry["sha256"] = video.stat().st_size, file_sha256(video)
    (session_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def rewrite_file(session_dir: Path, name: str, data: bytes) -> None:
    """Replaces one file of a session and re-hashes the manifest, as an uploader that edited it would."""
    from sd_common.session_format.spec import file_sha256

    path = session_dir / name
    path.write_bytes(data)
    manifest = json.loads((session_dir / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry["size_bytes"], entry["sha256"] = path.stat().st_size, file_sha256(path)
    (session_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def rewrite_lines(session_dir: Path, name: str, edit) -> None:
    """Rewrites a JSONL file of a session line by line through ``edit`` (object -> object) and re-hashes it."""
    lines = [json.loads(line) for line in (session_dir / name).read_text().splitlines()]
    out = [edit(i, obj) for i, obj in enumerate(lines)]
    rewrite_file(session_dir, name, "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in out).encode())


def warm_up_picture(planes: np.ndarray) -> np.ndarray:
    """The picture a canvas recorder starts with before the first render: black, no barcode."""
    out = np.zeros_like(planes)
    out[planes.shape[0] * 2 // 3:] = 128  # neutral chroma
    return out


def erase_barcode(planes: np.ndarray, cell_px: int) -> np.ndarray:
    """The picture with its barcode strip painted mid-grey (it no longer reads)."""
    out = planes.copy()
    height = planes.shape[0] * 2 // 3
    out[height - cell_px:height, : 23 * cell_px] = 128
    return out
