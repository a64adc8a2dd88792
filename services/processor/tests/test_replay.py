"""The replay rule: a segment's logged states must follow from the session's raw input events.

Two kinds of evidence: drives the game itself recorded (web/tests/fixtures/game_drives.json, made by
the game's World, recorder and frame loop, with a pause, hitches and a crash into a building), and
synthetic sessions processed end to end, genuine and edited.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from sd_common.session_format.synth import SynthConfig, synth_session
from sd_processor.config import ProcessorConfig, ReplayConfig
from sd_processor.framelog import read_frame_log
from sd_processor.replay import ANCHORED, JUDGED, STEPPED, UNJUDGED, replay_session

from .conftest import rewrite_file, rewrite_lines, run

DRIVES = Path(__file__).resolve().parents[3] / "web" / "tests" / "fixtures" / "game_drives.json"
REPLAY_REASONS = {"pose_not_from_inputs", "controls_not_from_inputs", "inputs_not_replayable"}


def _drive(name: str, tmp_path: Path, edit=None):
    drive = next(d for d in json.loads(DRIVES.read_text())["drives"] if d["name"] == name)
    frames = [json.loads(line) for line in drive["frames"]]
    if edit:
        frames = [edit(f) for f in frames]
    (tmp_path / "frames.jsonl").write_text("".join(json.dumps(f) + "\n" for f in frames))
    (tmp_path / "events.jsonl").write_text("".join(line + "\n" for line in drive["events"]))
    log = read_frame_log(tmp_path / "frames.jsonl")
    return log, replay_session(tmp_path, log, ReplayConfig()), frames


def test_the_games_own_drive_replays_to_the_logs_rounding(tmp_path):
    log, r, frames = _drive("autopilot_traffic", tmp_path)
    assert r.unreplayable is None and (r.mode == JUDGED).all()
    assert not r.pose_bad.any() and not r.controls_bad.any()
    # Through a pause, hitches of up to ten steps a frame and traffic: nothing but the log's rounding
    # (positions 0.1 mm per axis, headings 0.001 degrees, speeds and controls 4 decimals).
    # Twice the rounding for the pose: the first line's, where the replay starts, and the line's own.
    assert np.nanmax(r.position_m) <= 2 * math.hypot(5e-5, 5e-5)
    assert np.nanmax(r.yaw_deg) <= 2 * 5e-4
    assert np.nanmax(r.speed_mps) <= 5e-5 + 1e-9 and np.nanmax(r.controls) <= 5e-5 + 1e-9
    assert max(f["speed_mps"] for f in frames) > 7  # it drove (the scripted driver cruises below 9.5 m/s)


def test_a_crash_is_anchored_on_the_log_and_replayed_again_once_free(tmp_path):
    log, r, frames = _drive("keyboard_crash", tmp_path)
    assert r.unreplayable is None and not r.pose_bad.any() and not r.controls_bad.any()
    hits = [i for i, f in enumerate(frames) if any(x["kind"] == "collision_static" for x in f["infractions"])]
    assert hits and r.mode[hits[0]] == UNJUDGED and (r.mode[:hits[0]] == JUDGED).all()
    assert r.mode[hits[0] + 1] == ANCHORED
    # Once free of the wall, every interval is held to the free tolerances again (from the line before).
    after = r.mode[hits[0]:]
    assert (after[np.argmax(after == STEPPED):] == STEPPED).all() and (after == STEPPED).sum() > 150
    assert np.nanmax(r.position_m[r.mode == STEPPED]) < 1e-3 and np.nanmax(r.speed_mps[r.mode == STEPPED]) < 1e-4
    # The car stood against the wall (logged speed 0) while the player held the throttle.
    assert sum(1 for f in frames[hits[0]:] if f["speed_mps"] == 0 and f["controls"]["throttle"] > 0.5) > 20


def test_a_crash_with_its_collision_erased_does_not_follow_from_the_inputs(tmp_path):
    def erase(f):
        f["infractions"] = [x for x in f["infractions"] if not x["kind"].startswith("collision_")]
        return f

    log, r, _ = _drive("keyboard_crash", tmp_path, erase)
    assert r.unreplayable is None and (r.mode != ANCHORED).all()
    assert r.pose_bad.any()  # the replayed car drives on through the building; the logged one stopped
    assert not r.controls_bad.any()  # the inputs themselves are the drive's


def test_after_a_contact_an_edited_pose_is_still_caught(tmp_path):
    def shift(f):
        if 400 <= f["frame_id"] < 403:  # well after the crash, while the car drives away
            f["vehicle"]["x_m"] = round(f["vehicle"]["x_m"] + 0.05, 4)
        return f

    log, r, _ = _drive("keyboard_crash", tmp_path, shift)
    assert (r.mode[395:410] == STEPPED).all()
    # Interval by interval, the jumps into and out of the shifted stretch are what shows.
    assert list(np.flatnonzero(r.pose_bad)) == [400, 403]


@pytest.fixture(scope="module")
def other_session(tmp_path_factory):
    """Another clean session of the same length (another seed), to take parts from."""
    return synth_session(tmp_path_factory.mktemp("other"), SynthConfig(width=256, height=144, duration_s=6.0, seed=4))


def _copy(truth, tmp_path: Path) -> Path:
    d = tmp_path / "session"
    shutil.copytree(truth.session_dir, d)
    return d


def _segment_reasons(qc: dict) -> list[list[str]]:
    return [s["reasons"] for s in qc["segment_details"]]


def test_a_genuine_session_passes_the_replay(clean_session, processed_clean):
    result, out = processed_clean
    qc = json.loads((out / "qc_report.json").read_text())
    assert result.segments_accepted == 1
    assert not REPLAY_REASONS & {r for reasons in _segment_reasons(qc) for r in reasons}
    log = read_frame_log(clean_session.session_dir / "frames.jsonl")
    r = replay_session(clean_session.session_dir, log, ReplayConfig())
    assert (r.mode == JUDGED).all() and not r.pose_bad.any() and not r.controls_bad.any()


def test_edited_poses_are_not_from_the_inputs(clean_session, tmp_path):
    d = _copy(clean_session, tmp_path)
    moved = {40, 41, 42}

    def shift(i, f):
        if f["frame_id"] in moved:  # 5 cm sideways: far below what pose_teleport sees (a metre)
            f["vehicle"]["x_m"] = round(f["vehicle"]["x_m"] + 0.05, 4)
            f["camera"]["x_m"] = round(f["camera"]["x_m"] + 0.05, 4)
        return f

    rewrite_lines(d, "frames.jsonl", shift)
    result, qc = run(d, tmp_path / "out")
    assert not result.rejected and result.segments_accepted == 0
    first = qc["segment_details"][0]
    assert moved <= set(first["frame_ids"]) and first["reasons"] == ["pose_not_from_inputs"]


def test_events_from_another_session_do_not_drive_this_one(clean_session, other_session, tmp_path):
    d = _copy(clean_session, tmp_path)
    rewrite_file(d, "events.jsonl", (other_session.session_dir / "events.jsonl").read_bytes())
    result, qc = run(d, tmp_path / "out")
    assert not result.rejected and result.segments_accepted == 0
    for reasons in _segment_reasons(qc):
        assert {"pose_not_from_inputs", "controls_not_from_inputs"} <= set(reasons), reasons


def test_controls_from_another_session_are_not_what_the_inputs_gave(clean_session, other_session, tmp_path):
    d = _copy(clean_session, tmp_path)
    theirs = [json.loads(line)["controls"] for line in
              (other_session.session_dir / "frames.jsonl").read_text().splitlines()]

    def swap(i, f):
        f["controls"] = theirs[i]
        return f

    rewrite_lines(d, "frames.jsonl", swap)
    result, qc = run(d, tmp_path / "out")
    assert result.segments_accepted == 0
    for reasons in _segment_reasons(qc):
        assert "controls_not_from_inputs" in reasons and "pose_not_from_inputs" not in reasons, reasons


def test_events_that_do_not_say_their_step_cannot_be_replayed(clean_session, tmp_path):
    d = _copy(clean_session, tmp_path)
    rewrite_lines(d, "events.jsonl", lambda i, e: {k: v for k, v in e.items() if k != "sim_t_ms"})
    result, qc = run(d, tmp_path / "out")
    assert result.segments_accepted == 0
    assert all("inputs_not_replayable" in reasons for reasons in _segment_reasons(qc))
    # The rule can be switched off (a deployment that still takes older clients' sessions).
    result, qc = run(d, tmp_path / "off", config=ProcessorConfig(replay=ReplayConfig(enabled=False)))
    assert result.segments_accepted == 1
