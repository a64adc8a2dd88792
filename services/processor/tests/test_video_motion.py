"""The video-motion rule: the turns the video shows (optical flow) must be the turns the log states."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from sd_common.session_format.scene import City, Renderer, rotation
from sd_common.session_format.synth import SynthConfig, synth_session
from sd_processor.config import MotionConfig
from sd_processor.geometry import plan_crop
from sd_processor.motion import MotionMeter

from .conftest import rewrite_file, run

MOTION = "video_motion_contradicts_log"
# Seed 1's route turns right at its first crossing, 5-10 s into the drive; seed 2's goes straight on.
TURNING, STRAIGHT = 1, 2


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    """Two genuine 10 s drives of the same length: one takes a turn in its second segment, one does not."""
    return {seed: synth_session(tmp_path_factory.mktemp(f"drive{seed}"),
                                SynthConfig(width=256, height=144, duration_s=10.0, seed=seed)).session_dir
            for seed in (TURNING, STRAIGHT)}


def _reasons(qc: dict) -> list[list[str]]:
    return [s["reasons"] for s in qc["segment_details"]]


def _logged_turn_deg(session_dir, frame_ids: list[int]) -> float:
    lines = {json.loads(line)["frame_id"]: json.loads(line) for line in (session_dir / "frames.jsonl").read_text().splitlines()}
    a, b = lines[frame_ids[0]]["camera"]["yaw_deg"], lines[frame_ids[-1]]["camera"]["yaw_deg"]
    return (b - a + 180) % 360 - 180


def test_genuine_drives_show_the_turns_they_log(drives, tmp_path):
    for seed, d in drives.items():
        result, qc = run(d, tmp_path / f"out{seed}")
        assert result.segments_accepted == 2, _reasons(qc)
        assert not any(MOTION in r for r in _reasons(qc))
    second = json.loads((tmp_path / f"out{TURNING}" / "qc_report.json").read_text())["segment_details"][1]
    assert abs(_logged_turn_deg(drives[TURNING], second["frame_ids"])) > 45  # it does turn there


@pytest.mark.parametrize("logs,video", [(TURNING, STRAIGHT), (STRAIGHT, TURNING)])
def test_a_video_from_another_drive_contradicts_the_logged_turns(drives, tmp_path, logs, video):
    d = tmp_path / "session"
    shutil.copytree(drives[logs], d)
    rewrite_file(d, "video.webm", (drives[video] / "video.webm").read_bytes())
    result, qc = run(d, tmp_path / "out")
    assert not result.rejected  # every frame still pairs with a line: the barcodes are 0..299 in both
    reasons = _reasons(qc)
    # The segment where one drive turns and the other goes on straight is rejected with the motion reason.
    # The first five seconds cannot be told apart by ego motion: both drives start from rest the same way
    # down a straight street (docs/verification.md says what the rule can and cannot see).
    assert reasons[1] == [MOTION] and MOTION not in reasons[0]


def _meter(size: int = 256) -> tuple[MotionMeter, Renderer, float]:
    fx = (size / 2) / math.tan(math.radians(65) / 2)
    plan = plan_crop(width=size, height=size, fx=fx, fy=fx, cx=size / 2, cy=size / 2, excluded_bottom_rows=0,
                     output_width=size, output_height=size, fov_deg=None)
    return MotionMeter(plan, MotionConfig()), Renderer(City(5), size, size, fx, fx, size / 2, size / 2), fx


@pytest.mark.parametrize("turn_deg", [-1.2, -0.5, 0.4, 1.0])
def test_the_flow_measures_a_turn_and_not_a_forward_move(turn_deg):
    meter, renderer, _ = _meter()
    position = np.array([-20.0, -1.75, 2.3])

    def luma(pos, yaw):
        bgr = renderer.render(pos, rotation(yaw, 0.0, 0.0))
        return np.ascontiguousarray(bgr[..., 1])  # any one channel is a fine luma stand-in

    meter.push(luma(position, 0.0), 0)
    meter.push(luma(position, turn_deg), 1)
    meter.push(None, None)  # a frame without a picture ends the run: no pair across it
    meter.push(luma(position, 0.0), 2)
    meter.push(luma(position + np.array([0.3, 0.0, 0.0]), 0.0), 3)  # 0.3 m ahead, no turn
    turned, moved = meter.pairs
    assert (turned.line_a, turned.line_b, moved.line_a, moved.line_b) == (0, 1, 2, 3)
    assert turned.video_turn_deg == pytest.approx(turn_deg, abs=0.05 + 0.1 * abs(turn_deg))
    assert abs(moved.video_turn_deg) < 0.05
