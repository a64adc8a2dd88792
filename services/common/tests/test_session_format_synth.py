"""The generator's jobs draw from their own streams: a knob changes what it owns and nothing else."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import av
import numpy as np
import pytest
from sd_common.session_format.spec import MANIFEST_NAME, parse_manifest
from sd_common.session_format.synth import (
    CORRUPTIONS,
    FRAME_PICKS,
    SynthConfig,
    build_manifest,
    drive,
    plan_session,
    stream,
    synth_session,
)
from sd_common.session_format.validate import validate_session
from sd_common.session_format.video import iter_frames

# Every per-frame knob on at once, so each one's frames are there to be disturbed.
BUSY = SynthConfig(width=128, height=72, fps=15.0, duration_s=6.0, seed=4,
                   **{knob: 2 for knob in FRAME_PICKS})


def _owned_by(knob: str) -> set[str]:
    """The knob and every pick that keeps clear of it (directly or through another pick)."""
    owned = {knob}
    while more := {k for k, avoid in FRAME_PICKS.items() if owned & set(avoid)} - owned:
        owned |= more
    return owned


def _drive_of(plan) -> list[tuple]:
    return [(t.s_m, t.x_m, t.y_m, t.yaw_rad, t.speed_mps, t.steer, t.throttle, t.brake, int(t.command))
            for t in drive(plan)]


def _plan_state(plan) -> dict:
    return {"route": plan.route.points.tolist(), "crossings": plan.route.crossings,
            "pts": plan.pts_ms.tolist(), "drive": _drive_of(plan)}


@pytest.mark.parametrize("knob", sorted(FRAME_PICKS))
def test_a_frame_knob_moves_only_its_own_frames(knob: str) -> None:
    base = plan_session(BUSY)
    more = plan_session(dataclasses.replace(BUSY, **{knob: getattr(BUSY, knob) + 3}))
    assert len(more.picks[knob]) == len(base.picks[knob]) + 3
    for other in FRAME_PICKS.keys() - _owned_by(knob):
        assert more.picks[other] == base.picks[other], f"{knob} moved the frames of {other}"
    assert _plan_state(more) == _plan_state(base)
    if knob != "non_monotonic_timestamps":  # the one pick that edits the page clock itself
        assert np.array_equal(more.t_render_ms, base.t_render_ms)
        assert np.array_equal(more.t_capture_ms, base.t_capture_ms)


@pytest.mark.parametrize("knob", sorted(CORRUPTIONS.keys() - FRAME_PICKS.keys()))
def test_every_other_knob_leaves_the_plan_and_the_drive_alone(knob: str) -> None:
    base = plan_session(BUSY)
    other = plan_session(BUSY.with_corruption(knob))
    assert other.picks == base.picks
    assert _plan_state(other) == _plan_state(base)
    assert np.array_equal(other.t_render_ms, base.t_render_ms)


def test_streams_are_named_and_seeded() -> None:
    assert stream(1, "drive").random() == stream(1, "drive").random()
    assert stream(1, "drive").random() != stream(2, "drive").random()
    assert stream(1, "drive").random() != stream(1, "events").random()
    # Different seeds give different sessions.
    assert _plan_state(plan_session(dataclasses.replace(BUSY, seed=5))) != _plan_state(plan_session(BUSY))


def _read(d: Path, name: str) -> bytes:
    return (d / name).read_bytes()


def _pictures(d: Path) -> list[tuple[int | None, bytes]]:
    """(pts_ms, SHA-256 of the luma plane) of every decoded frame of the session's video."""
    with av.open(str(d / "video.webm")) as container:
        return [(f.pts_ms, hashlib.sha256(f.luma.tobytes()).digest()) for f in iter_frames(container)]


@pytest.fixture(scope="module")
def clean_pair(tmp_path_factory):
    cfg = SynthConfig(width=128, height=72, fps=15.0, duration_s=4.0, seed=6)
    return cfg, synth_session(tmp_path_factory.mktemp("clean"), cfg)


LINE_KNOBS = ("nan_controls", "out_of_range_controls", "bad_command", "repeated_frame_ids", "garbage_lines")


@pytest.mark.parametrize("knob", LINE_KNOBS)
def test_a_log_line_knob_leaves_the_drive_events_and_video_as_they_were(clean_pair, tmp_path, knob) -> None:
    cfg, clean = clean_pair
    broken = synth_session(tmp_path, cfg.with_corruption(knob))
    a, b = clean.session_dir, broken.session_dir
    assert broken.video_frames == clean.video_frames
    assert _pictures(b) == _pictures(a)  # the file's bytes differ: the muxer writes a random segment UID
    assert _read(b, "events.jsonl") == _read(a, "events.jsonl")
    assert _read(b, "latency.jsonl") == _read(a, "latency.jsonl")
    lines_a, lines_b = _read(a, "frames.jsonl").splitlines(), _read(b, "frames.jsonl").splitlines()
    changed = [i for i, (x, y) in enumerate(zip(lines_a, lines_b, strict=True)) if x != y]
    assert changed == plan_session(cfg.with_corruption(knob)).picks[knob]
    assert len(changed) == CORRUPTIONS[knob].on_value
    if knob == "nan_controls":
        for i in changed:  # the NaN is the only difference on those lines
            x, y = json.loads(lines_a[i]), json.loads(lines_b[i])
            assert y["controls"]["throttle"] != y["controls"]["throttle"]
            y["controls"]["throttle"] = x["controls"]["throttle"]
            assert x == y


def test_a_video_knob_leaves_every_log_as_it_was(clean_pair, tmp_path) -> None:
    cfg, clean = clean_pair
    broken = synth_session(tmp_path, cfg.with_corruption("drop_frames"))
    for name in ("frames.jsonl", "events.jsonl", "latency.jsonl"):
        assert _read(broken.session_dir, name) == _read(clean.session_dir, name), name
    dropped = CORRUPTIONS["drop_frames"].on_value
    assert len(_pictures(broken.session_dir)) == len(_pictures(clean.session_dir)) - dropped
    assert len(broken.video_frames) == len(clean.video_frames) - CORRUPTIONS["drop_frames"].on_value
    assert [f for f in clean.video_frames if f[0] not in broken.dropped_frame_ids] == broken.video_frames


def test_the_manifest_is_the_spec_model_and_the_session_validates(clean_pair) -> None:
    cfg, clean = clean_pair
    written = parse_manifest(_read(clean.session_dir, MANIFEST_NAME))
    assert written == build_manifest(plan_session(cfg), clean.session_dir)
    assert written.frame_count == clean.frame_count and written.session_id == clean.session_id
    assert validate_session(clean.session_dir).problems == []
