"""The pricing facts of each segment in segments.json: infractions, diffusion pictures, route progress."""

from __future__ import annotations

import json

from sd_common.session_format.synth import DIFFUSION_LAG_FRAMES, SynthConfig, synth_session

from .conftest import log_lines, run

LOST_AT = 90  # the diffusion stream is lost here; synth's one infraction is logged on frame_count // 2 = 90


def test_each_segment_counts_its_infractions_diffusion_pictures_and_route_progress(tmp_path):
    cfg = SynthConfig(width=256, height=144, duration_s=6.0, seed=31, diffusion=True, diffusion_lost_at=LOST_AT,
                      infractions=True)
    truth = synth_session(tmp_path / "s", cfg)
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert not result.rejected
    lines = log_lines(truth.session_dir)
    doc = json.loads((tmp_path / "out" / "segments.json").read_text())
    details = {d["segment_id"]: d for d in qc["segment_details"]}
    seen_infraction = 0
    for seg in doc["segments"]:
        detail = details[seg["segment_id"]]
        pictured = detail["pictured_frame_ids"]
        # a frame before the loss shows a diffusion picture; from it on, the frame's own render
        assert seg["diffusion_frames"] == sum(1 for f in detail["frame_ids"] if f < LOST_AT)
        assert seg["route_progress_start"] == lines[pictured[0]]["route"]["progress"]
        assert seg["route_progress_end"] == lines[pictured[-1]]["route"]["progress"]
        if pictured[0] <= truth.frame_count // 2 <= pictured[-1]:
            assert seg["infractions"] == {"collision_static": 1}
            seen_infraction += 1
        else:
            assert seg["infractions"] == {}
    assert seen_infraction == 1
    first = doc["segments"][0]
    assert 0 < first["diffusion_frames"] < first["frames"]  # the loss falls inside the first segment
    assert details[first["segment_id"]]["frame_ids"][0] == DIFFUSION_LAG_FRAMES  # no picture before the lag
    assert 0.0 <= first["route_progress_start"] < first["route_progress_end"] <= doc["segments"][-1][
        "route_progress_end"]
