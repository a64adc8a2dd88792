"""EXPORT and the output layout: exact measurements, undistorted 256x256 images, one complete output per run."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from sd_common.session_format import barcode
from sd_common.session_format.video import VideoWriter
from sd_processor.config import ProcessorConfig
from sd_processor.decode import FrameDecoder
from sd_processor.geometry import CropError, plan_crop

from .conftest import exported, log_lines, run, wrap_rad


def test_output_layout(processed_clean, clean_session):
    result, out = processed_clean
    sid = clean_session.session_id
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS.json", "qc_report.json", f"route_{sid}_000",
                                                     "segments.json"]
    seg = json.loads((out / "segments.json").read_text())
    assert {k: seg[k] for k in ("schema_version", "session_id", "player_id", "attempt_id")} == \
        {"schema_version": 1, "session_id": sid, "player_id": "synth-player", "attempt_id": "a-1"}
    assert seg["source"] == {"width": 256, "height": 144} and seg["output"] == {"width": 256, "height": 256}
    assert set(seg["crop"]) == {"x", "y", "width", "height"} and set(seg["intrinsics"]) == {"fx", "fy", "cx", "cy",
                                                                                          "fov_deg"}
    # The recording's camera mount, as its manifest gives it, for the evaluator's camera.
    assert seg["mount"] == json.loads((clean_session.session_dir / "manifest.json").read_text())["camera"]["mount"]
    first, rest = seg["segments"]
    assert first["segment_id"] == f"route_{sid}_000" and first["accepted"] and first["reasons"] == []
    assert 4.9 <= first["duration_s"] <= 5.05 and first["frames"] >= 145
    assert set(first) == {"segment_id", "index", "accepted", "reasons", "frames", "duration_s", "t_start_ms",
                          "t_end_ms", "distance_m", "mean_speed_mps", "command_counts", "infractions",
                          "diffusion_frames", "route_progress_start", "route_progress_end", "frame_hashes",
                          "frame_hash_t_ms"}
    # four hashed pictures a second, the first at the segment's start, each 16 hex digits, in pts order
    assert len(first["frame_hashes"]) == len(first["frame_hash_t_ms"]) == 20
    assert first["frame_hash_t_ms"][0] == first["t_start_ms"] and first["frame_hash_t_ms"] == sorted(
        first["frame_hash_t_ms"]) and all(len(h) == 16 for h in first["frame_hashes"])
    assert len(seg["log_fingerprint"]) == 64
    assert rest["segment_id"] == f"route_{sid}_001" and rest["reasons"] == ["too_short"]
    qc = json.loads((out / "qc_report.json").read_text())
    assert qc["schema_version"] == 1 and qc["alignment"]["mode"] == "frame_id"
    assert qc["frames"]["decoded"] == 180 and qc["frames"]["kept"] == result.frames_kept == first["frames"]
    assert qc["segments"] == {"accepted": 1, "rejected": {"too_short": 1}}
    assert sum(qc["frames"]["dropped"].values()) >= 180 - qc["frames"]["kept"]
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["attempt_id"] == "a-1" and success["segments_accepted"] == 1 and success["finished_at"]
    images = sorted((out / first["segment_id"] / "rgb_front").iterdir())
    assert [p.name for p in images[:2]] == ["00000.jpg", "00001.jpg"] and len(images) == first["frames"]


def test_measurements_are_the_logged_state_and_inputs_exactly(processed_clean, clean_session):
    _, out = processed_clean
    lines = log_lines(clean_session.session_dir)
    qc = json.loads((out / "qc_report.json").read_text())
    seg = qc["segment_details"][0]
    rows = json.loads((out / seg["segment_id"] / "measurements.json").read_text())
    assert [r["frame"] for r in rows] == list(range(len(rows))) == list(range(len(seg["frame_ids"])))
    for row, fid in zip(rows, seg["frame_ids"]):
        line = lines[fid]
        assert set(row) == {"frame", "x", "y", "theta", "speed", "steer", "throttle", "brake", "command", "frame_id",
                            "pictured_frame_id", "display_latency_ms", "controls_shown", "controls_rendered"}
        # without the diffusion view a picture shows its own frame: one state, one set of controls
        assert row["frame_id"] == row["pictured_frame_id"] == fid
        assert row["controls_shown"] == row["controls_rendered"] == line["controls"]
        assert row["display_latency_ms"] == pytest.approx(line["t_capture_ms"] - line["t_render_ms"], abs=1e-3)
        assert (row["steer"], row["throttle"], row["brake"]) == (line["controls"]["steer"],
                                                                line["controls"]["throttle"], line["controls"]["brake"])
        assert row["command"] == line["command"] and row["speed"] == line["speed_mps"]
        assert row["x"] == line["vehicle"]["x_m"] and row["y"] == -line["vehicle"]["y_m"]
        assert row["theta"] == pytest.approx(wrap_rad(line["vehicle"]["yaw_deg"]))
    commands = {r["command"] for r in rows}
    assert commands <= {1, 2, 3, 4, 5, 6}
    image = cv2.imread(str(out / seg["segment_id"] / "rgb_front" / "00000.jpg"))
    assert image.shape == (256, 256, 3)


def test_crop_of_a_16_9_recording_is_square_centred_and_above_the_barcode():
    fx = 640 / math.tan(math.radians(50))
    plan = plan_crop(width=1280, height=720, fx=fx, fy=fx, cx=640, cy=360, excluded_bottom_rows=20,
                     output_width=256, output_height=256)
    assert (plan.width, plan.height) == (680, 680) and plan.y + plan.height <= 700
    assert all(v % 2 == 0 for v in (plan.x, plan.y, plan.width, plan.height))
    out = plan.output
    assert out.fx == pytest.approx(out.fy) and (out.cx, out.cy) == pytest.approx((128, 128))
    assert out.fov_deg == pytest.approx(2 * math.degrees(math.atan(340 / fx)))
    # A 3-D point projects to the same output pixel through the source camera and the crop, or directly.
    for X, Y, Z in [(1.0, 0.5, 4.0), (-2.0, -1.0, 6.0), (0.3, 0.9, 2.5)]:
        u, v = fx * X / Z + 640, fx * Y / Z + 360
        assert plan.to_output(u, v) == pytest.approx((out.fx * X / Z + out.cx, out.fy * Y / Z + out.cy), abs=1e-6)


def test_a_configured_fov_and_aspect_give_an_undistorted_crop():
    fx = 640 / math.tan(math.radians(50))
    plan = plan_crop(width=1280, height=720, fx=fx, fy=fx, cx=640, cy=360, excluded_bottom_rows=20,
                     output_width=320, output_height=240, fov_deg=60)
    assert plan.width == pytest.approx(2 * fx * math.tan(math.radians(30)), abs=2)
    assert plan.width / plan.height == pytest.approx(320 / 240, rel=0.01)
    assert plan.output.fov_deg == pytest.approx(60, abs=0.2)
    assert plan.output.fx == pytest.approx(plan.output.fy, rel=0.01)
    with pytest.raises(CropError, match="does not fit"):
        plan_crop(width=1280, height=720, fx=fx, fy=fx, cx=640, cy=360, excluded_bottom_rows=20,
                  output_width=256, output_height=256, fov_deg=90)


def test_a_circle_in_the_recording_stays_a_circle(tmp_path):
    width, height, cell = 1280, 720, 16
    fx = 640 / math.tan(math.radians(50))
    path = tmp_path / "circle.webm"
    with VideoWriter(path, width, height, bitrate=4_000_000) as writer:
        for i in range(3):
            image = np.full((height, width, 3), 30, np.uint8)
            cv2.circle(image, (640, 360), 200, (255, 255, 255), -1, lineType=cv2.LINE_AA)
            barcode.draw(image, i, cell)
            writer.write_bgr(image, i * 33)
    cfg = ProcessorConfig()
    plan = plan_crop(width=width, height=height, fx=fx, fy=fx, cx=640, cy=360,
                     excluded_bottom_rows=cell + cfg.barcode_margin_px, output_width=256, output_height=256)
    frames = list(FrameDecoder(path, plan, cell_px=cell, read_barcodes=True).frames())
    assert [f.frame_id for f in frames] == [0, 1, 2]
    y = frames[-1].y
    assert y.shape == (256, 256)
    contours, _ = cv2.findContours((y > 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    (cx, cy), (a, b), _ = cv2.fitEllipse(max(contours, key=cv2.contourArea))
    assert max(a, b) / min(a, b) == pytest.approx(1.0, abs=0.01)  # not squashed
    assert (a + b) / 2 == pytest.approx(400 * 256 / plan.width, rel=0.02)
    assert (cx, cy) == pytest.approx(plan.to_output(640, 360), abs=0.7)


def test_a_retry_leaves_exactly_one_complete_output(clean_session, tmp_path):
    out = tmp_path / "out"
    run(clean_session.session_dir, out, attempt_id="first", config=ProcessorConfig(segment_s=2.0, min_segment_s=1.5))
    assert len(list(out.glob("route_*"))) >= 2
    first_path = next(out.glob("route_*_000/rgb_front/00010.jpg"))
    first_image = first_path.read_bytes()
    run(clean_session.session_dir, out, attempt_id="second")
    run(clean_session.session_dir, out, attempt_id="third")
    segments = json.loads((out / "segments.json").read_text())
    accepted = sorted(s["segment_id"] for s in segments["segments"] if s["accepted"])
    assert sorted(p.name for p in out.glob("route_*")) == accepted  # the 2 s run's extra folders are gone
    assert len(accepted) == 1
    assert json.loads((out / "_SUCCESS.json").read_text())["attempt_id"] == "third" == segments["attempt_id"]
    again = tmp_path / "again"
    run(clean_session.session_dir, again, attempt_id="x")
    for p in sorted(again.glob("route_*/**/*")):
        if p.is_file():
            assert (out / p.relative_to(again)).read_bytes() == p.read_bytes()  # deterministic
    # The retries rewrote the frames the first run had written too, with the same pictures (the stale
    # segment folders went, the picture of frame 10 of the first segment stayed what it was).
    assert first_path.read_bytes() == first_image
    decoded = cv2.imdecode(np.frombuffer(first_image, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape == (256, 256, 3)


def test_exported_pairs_follow_the_video_order(processed_clean):
    _, out = processed_clean
    pairs = exported(json.loads((out / "qc_report.json").read_text()))
    assert [f for f, _ in pairs] == sorted(f for f, _ in pairs)
    assert [p for _, p in pairs] == sorted(p for _, p in pairs)
