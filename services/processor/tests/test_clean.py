"""CLEAN: each rule tripped by frames built to trip it, and passed by frames built to pass it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sd_common.session_format.synth import SynthConfig, synth_session
from sd_processor.align import Pairing
from sd_processor.clean import FrameCleaner, segment_reasons
from sd_processor.config import CleanConfig
from sd_processor.decode import DecodedFrame
from sd_processor.framelog import LINE_CONTROLS_INVALID

from .conftest import dropped_ids, make_log, run

CFG = CleanConfig()


def textured(seed: int, shift: int = 0) -> np.ndarray:
    """A sharp 256x256 picture (blocks of random grey), moved ``shift`` pixels to the left."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(40, 220, (40, 48), dtype=np.uint8)
    big = np.kron(blocks, np.ones((8, 8), np.uint8))
    return np.ascontiguousarray(big[:256, shift:shift + 256])


def feed(frames: list[np.ndarray], log=None, lines=None) -> dict[int, list[str]]:
    """Runs hand-built luma planes through the cleaner; returns index -> reasons."""
    log = log or make_log(len(frames))
    cleaner = FrameCleaner(log, CFG)
    out: dict[int, list[str]] = {}
    for i, y in enumerate(frames):
        line = i if lines is None else lines[i]
        for cand in cleaner.push(DecodedFrame(i, i * 33, i, y, None, None), Pairing(line, None)):
            out[cand.frame.index] = cand.reasons
    for cand in cleaner.finish():
        out[cand.frame.index] = cand.reasons
    return out


def moving(n: int) -> list[np.ndarray]:
    return [textured(1, shift=2 * i) for i in range(n)]


def test_sharp_moving_frames_pass_every_rule():
    assert all(not r for r in feed(moving(20)).values())


def test_blur_is_judged_against_the_scene():
    import cv2
    frames = moving(20)
    frames[12] = cv2.GaussianBlur(frames[12], (0, 0), 3.0)
    reasons = feed(frames)
    assert reasons[12] == ["blurred"] and all(not r for i, r in reasons.items() if i != 12)


def test_black_and_overexposed_frames():
    frames = moving(20)
    frames[8] = np.full((256, 256), 5, np.uint8)
    frames[14] = np.full((256, 256), 255, np.uint8)
    frames[14][:40] = 120  # mostly, not entirely, blown out
    reasons = feed(frames)
    assert "black" in reasons[8] and "overexposed" in reasons[14]
    assert not reasons[7] and not reasons[15]


def test_a_one_frame_jump_is_flicker_but_a_lasting_change_is_not():
    frames = moving(24)
    frames[6] = 255 - frames[6]  # one frame of another style
    for i in range(15, 24):  # the scene changes for good at 15
        frames[i] = textured(2, shift=2 * i)
    reasons = feed(frames)
    assert reasons[6] == ["flicker"]
    assert all(not reasons[i] for i in range(24) if i != 6)


def test_a_frozen_picture_while_the_car_moves_is_frozen_but_not_while_it_stands():
    frames = moving(20)
    frames[10] = frames[9].copy()
    assert feed(frames)[10] == ["frozen"]
    parked = make_log(20, speed_mps=0.0)
    still = [textured(1)] * 20
    assert all(not r for r in feed(still, log=parked).values())


@pytest.mark.parametrize("knob,reason", [("blur_frames", "blurred"), ("black_frames", "black"),
                                         ("overexposed_frames", "overexposed"), ("flicker_frames", "flicker")])
def test_generator_picture_knobs_trip_their_rule(tmp_path, knob, reason):
    truth = synth_session(tmp_path / "s", SynthConfig(width=256, height=144, duration_s=4.0, seed=13)
                          .with_corruption(knob, 4))
    result, qc = run(truth.session_dir, tmp_path / "out")
    spoiled = set(truth.blurred_frame_ids) if knob == "blur_frames" else set(truth.picture_frame_ids[knob])
    assert len(spoiled) == 4
    assert spoiled <= dropped_ids(qc, reason)
    assert not result.problems  # a valid session: frames are dropped, nothing is wrong with the upload


def test_generator_frozen_frames_are_dropped(tmp_path):
    truth = synth_session(tmp_path / "s", SynthConfig(width=640, height=360, duration_s=6.0, seed=5,
                                                      frozen_frames=4))
    _, qc = run(truth.session_dir, tmp_path / "out")
    frozen = set(truth.picture_frame_ids["frozen_frames"])
    found = dropped_ids(qc, "frozen")
    assert found <= frozen and len(found) >= len(frozen) - 1, (found, frozen)


def test_a_clean_session_loses_no_frame_to_the_picture_rules(processed_clean):
    _, out = processed_clean
    qc = json.loads((out / "qc_report.json").read_text())
    picture = {"blurred", "frozen", "black", "overexposed", "flicker"}
    lost = sum(n for reason, n in qc["frames"]["dropped"].items() if reason in picture)
    # The frozen test is the noisiest at this size (a 128 px crop of a 256x144 recording): allow 1 %.
    assert lost <= 0.01 * qc["frames"]["decoded"], qc["frames"]


def test_nan_controls_drop_the_frame_and_reject_its_segment(tmp_path):
    truth = synth_session(tmp_path / "s", SynthConfig(width=256, height=144, duration_s=4.0, seed=13, nan_controls=2))
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert "frame_value_not_finite" in {p.code for p in result.problems} and not result.rejected
    assert len(dropped_ids(qc, "controls_invalid")) == 2
    assert qc["segments"]["rejected"].get("controls_implausible") == 1 and qc["segments"]["accepted"] == 0


# --- per-segment rules on hand-built logs --------------------------------------------------------------


def reasons_of(log, lines=None, duration_s=5.0, holes=0):
    lines = list(range(len(log))) if lines is None else lines
    return segment_reasons(log, lines, duration_s=duration_s, holes=holes, cfg=CFG, min_segment_s=2.0)


def test_a_plain_drive_passes_every_segment_rule():
    assert reasons_of(make_log(150)) == []


def test_too_short_and_too_few_good_frames():
    assert reasons_of(make_log(30), duration_s=1.0) == ["too_short"]
    assert reasons_of(make_log(150), holes=60) == ["too_few_good_frames"]
    assert reasons_of(make_log(150), holes=20) == []


def test_stationary_the_whole_time():
    assert reasons_of(make_log(150, speed_mps=0.0)) == ["stationary"]
    stop_and_go = np.concatenate([np.zeros(100), np.linspace(0.0, 3.0, 50)])
    assert reasons_of(make_log(150, speed=stop_and_go)) == []


def test_pose_teleport():
    log = make_log(150)
    log.values["x_m"][80:] += 40.0
    assert reasons_of(log) == ["pose_teleport"]
    spin = np.zeros(150)
    spin[60:] = 170.0
    assert reasons_of(make_log(150, yaw_deg=spin)) == ["pose_teleport"]


def test_implausible_controls():
    speed = np.full(150, 5.0)
    speed[70:] = 15.0  # +10 m/s in one frame: 300 m/s^2
    assert "controls_implausible" in reasons_of(make_log(150, speed=speed))
    steer = np.zeros(150)
    steer[90] = 1.0  # full lock and back within two frames: 30 per second
    assert reasons_of(make_log(150, steer=steer)) == ["controls_implausible"]
    gentle = np.sin(np.arange(150) / 30.0) * 0.5
    assert reasons_of(make_log(150, steer=gentle)) == []
    status = [""] * 150
    status[40] = LINE_CONTROLS_INVALID
    assert reasons_of(make_log(150, status=status), lines=[i for i in range(150) if i != 40], holes=1) == \
        ["controls_implausible"]


def flat_wall(edge_x: float) -> np.ndarray:
    """A flat-shaded view: one untextured wall colour left of a sharp vertical edge, sky colour right of it."""
    y = np.full((256, 256), 90, np.uint8)
    x0 = int(edge_x)
    y[:, x0:] = 190
    if 0 <= x0 < 256:  # the edge pixel is covered in part, as a renderer's anti-aliasing does
        y[:, x0] = round(90 + 100 * (1 - (edge_x - x0)))
    y[200:, :] = 60  # the road
    return y


def test_flat_shaded_sharp_walls_are_neither_blurred_nor_frozen():
    # Textured street, then the wall of a building fills the view (few edges, all sharp). Frame 24 comes
    # 9.5 ms after frame 23 (the page rendered twice within one frame period) while the pose moved
    # 0.19 m: its edge moved one pixel where the others moved five.
    frames = moving(16) + [flat_wall(40 + 5 * k) for k in range(8)] + [flat_wall(76 + 5 * k) for k in range(8)]
    x = np.cumsum(np.full(32, 0.3))
    x[24:] -= 0.11  # frame 24 moved 0.19 m instead of 0.3 m
    reasons = feed(frames, log=make_log(32, x=x))
    assert all(not r for r in reasons.values()), {i: r for i, r in reasons.items() if r}


def test_a_frozen_frame_in_a_flat_scene_is_still_frozen_when_the_next_frame_catches_up():
    frames = [flat_wall(20 + 6 * k) for k in range(20)]
    frames[12] = frames[11].copy()
    reasons = feed(frames)
    assert reasons[12] == ["frozen"] and all(not r for i, r in reasons.items() if i != 12)
