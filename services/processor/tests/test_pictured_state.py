"""With the diffusion view on, a picture shows an earlier render: each exported image carries the state
of the frame it shows (``diffusion_frame_id``), both sets of controls, and its display latency."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from sd_common.session_format.scene import City, Renderer
from sd_common.session_format.synth import DIFFUSION_LAG_FRAMES, SynthConfig, drive, plan_session, synth_session
from sd_processor.config import ProcessorConfig
from sd_processor.framelog import PICTURE_AFTER_FALLBACK, PICTURE_UNKNOWN, read_frame_log

from .conftest import dropped_ids, log_lines, run, wrap_rad

# A new picture every second render, five frames late: each picture is on screen for two frames.
CFG = SynthConfig(width=320, height=180, duration_s=4.0, seed=23, diffusion=True, diffusion_every=2)


@pytest.fixture(scope="module")
def lagging(tmp_path_factory):
    truth = synth_session(tmp_path_factory.mktemp("lagging"), CFG)
    out = tmp_path_factory.mktemp("lagging-out")
    result, qc = run(truth.session_dir, out)
    return truth, result, qc, out


def _rows(qc: dict, out) -> list[tuple[dict, str, int]]:
    """(measurement, segment id, image number) of every exported image."""
    rows = []
    for seg in qc["segment_details"]:
        if seg["accepted"]:
            for k, row in enumerate(json.loads((out / seg["segment_id"] / "measurements.json").read_text())):
                rows.append((row, seg["segment_id"], k))
    return rows


def test_each_picture_carries_the_state_it_shows_and_the_controls_of_both_moments(lagging):
    truth, result, qc, out = lagging
    lines = log_lines(truth.session_dir)
    rows = _rows(qc, out)
    assert not result.rejected and result.segments_accepted >= 1
    # repeated pictures of one state are not frozen ones: nothing but the first frames is dropped
    assert set(qc["frames"]["dropped"]) <= {PICTURE_UNKNOWN, "segment_rejected"}
    assert dropped_ids(qc, PICTURE_UNKNOWN) == set(range(DIFFUSION_LAG_FRAMES))
    assert len(rows) == truth.frame_count - DIFFUSION_LAG_FRAMES - qc["frames"]["dropped"].get("segment_rejected", 0)
    for row, _, _ in rows:
        shown = lines[row["frame_id"]]
        pictured = lines[row["pictured_frame_id"]]
        assert row["pictured_frame_id"] == shown["diffusion_frame_id"] < row["frame_id"]
        assert (row["x"], row["y"]) == (pictured["vehicle"]["x_m"], -pictured["vehicle"]["y_m"])
        assert row["theta"] == pytest.approx(wrap_rad(pictured["vehicle"]["yaw_deg"]))
        assert row["speed"] == pictured["speed_mps"] and row["command"] == pictured["command"]
        assert row["controls_shown"] == shown["controls"] and row["controls_rendered"] == pictured["controls"]
        assert {k: row[k] for k in ("steer", "throttle", "brake")} == shown["controls"]  # the default label
        assert row["display_latency_ms"] == pytest.approx(shown["t_capture_ms"] - pictured["t_render_ms"], abs=1e-3)
        assert row["display_latency_ms"] >= DIFFUSION_LAG_FRAMES * 1000 / CFG.fps * 0.8
    detail = qc["segment_details"][0]
    assert detail["pictured_frame_ids"] == [lines[f]["diffusion_frame_id"] for f in detail["frame_ids"]]
    assert detail["display_latency_ms"]["p50"] > 0


def test_the_exported_picture_is_the_pictured_render_not_the_one_on_screen_at_the_time(lagging):
    """Checked against the generator's own renders of both states, independently of the logged ids."""
    _, _, qc, out = lagging
    segments = json.loads((out / "segments.json").read_text())
    crop, size = segments["crop"], segments["output"]
    plan = plan_session(CFG)
    ticks = drive(plan)
    renderer = Renderer(City(CFG.seed), CFG.width, CFG.height, plan.fx, plan.fx, CFG.width / 2, CFG.height / 2)

    def luma_of(tick: int) -> np.ndarray:
        image = renderer.render(ticks[tick].camera_p, ticks[tick].camera_r)
        image = cv2.applyColorMap(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLORMAP_TWILIGHT)
        window = image[crop["y"]:crop["y"] + crop["height"], crop["x"]:crop["x"] + crop["width"]]
        small = cv2.resize(window, (size["width"], size["height"]), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)

    judged = 0
    for row, segment_id, k in _rows(qc, out)[::5]:
        shown, pictured = row["frame_id"], row["pictured_frame_id"]
        if np.hypot(ticks[shown].x_m - ticks[pictured].x_m, ticks[shown].y_m - ticks[pictured].y_m) < 0.5:
            continue  # the two renders look alike: nothing to tell apart
        picture = cv2.imread(str(out / segment_id / "rgb_front" / f"{k:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
        # of the renders from three frames before the pictured one to the one on screen, the pictured
        # one is the closest to the exported picture
        distance = {t: float(np.abs(picture - luma_of(t)).mean()) for t in range(max(0, pictured - 3), shown + 1)}
        assert min(distance, key=distance.get) == pictured, (row, distance)
        assert distance[pictured] < 0.75 * distance[shown]
        judged += 1
    assert judged >= 5


def test_the_rendered_controls_can_be_the_label(lagging, tmp_path):
    truth = lagging[0]
    _, qc = run(truth.session_dir, tmp_path, config=ProcessorConfig(label_controls="rendered"))
    lines = log_lines(truth.session_dir)
    rows = _rows(qc, tmp_path)
    assert rows
    for row, _, _ in rows:
        assert {k: row[k] for k in ("steer", "throttle", "brake")} == lines[row["pictured_frame_id"]]["controls"]
    assert json.loads((tmp_path / "segments.json").read_text())["config"]["label_controls"] == "rendered"
    with pytest.raises(ValueError, match="label_controls"):
        ProcessorConfig(label_controls="held")


LOST_AT = 60  # the stream is lost here; the game shows its plain render from this frame on
LOST = SynthConfig(width=320, height=180, duration_s=4.0, seed=22, diffusion=True, diffusion_lost_at=LOST_AT)


def test_after_the_stream_is_lost_each_picture_is_the_frames_own_render(tmp_path):
    truth = synth_session(tmp_path / "s", LOST)
    manifest = json.loads((truth.session_dir / "manifest.json").read_text())
    assert manifest["diffusion"]["enabled"] and manifest["diffusion"]["plain_from_frame_id"] == LOST_AT
    lines = log_lines(truth.session_dir)
    assert all(lines[f]["diffusion_frame_id"] is None for f in range(LOST_AT, truth.frame_count))
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert not result.rejected
    # only the frames before the first picture came back have no known picture
    assert dropped_ids(qc, PICTURE_UNKNOWN) == set(range(DIFFUSION_LAG_FRAMES))
    rows = _rows(qc, tmp_path / "out")
    before = [r for r, _, _ in rows if r["frame_id"] < LOST_AT]
    after = [r for r, _, _ in rows if r["frame_id"] >= LOST_AT]
    assert len(before) >= 20 and len(after) >= 40
    assert all(r["pictured_frame_id"] == lines[r["frame_id"]]["diffusion_frame_id"] < r["frame_id"] for r in before)
    for r in after:
        assert r["pictured_frame_id"] == r["frame_id"]
        assert r["controls_shown"] == r["controls_rendered"] == lines[r["frame_id"]]["controls"]
        assert 0 <= r["display_latency_ms"] < 1000 / LOST.fps


def test_a_line_naming_a_diffusion_picture_after_the_fallback_is_dropped(tmp_path):
    truth = synth_session(tmp_path / "s", LOST)
    log = read_frame_log(truth.session_dir / "frames.jsonl")
    i = log.index_of[LOST_AT + 5]
    assert log.pictured(i, True, LOST_AT) == (i, "")
    log.diffusion_frame_id[i] = LOST_AT  # what the manifest says cannot be on screen any more
    assert log.pictured(i, True, LOST_AT) == (None, PICTURE_AFTER_FALLBACK)
    j = log.index_of[LOST_AT - 5]
    assert log.pictured(j, True, LOST_AT) == (log.index_of[LOST_AT - 5 - DIFFUSION_LAG_FRAMES], "")
