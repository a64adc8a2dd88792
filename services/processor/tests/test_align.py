"""ALIGN: frame-exact pairing by barcode, and the timestamp fallback measured against the generator's truth."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sd_common.session_format.synth import SynthConfig, _clocks, synth_session
from sd_processor.align import match_by_intervals

from .conftest import dropped_ids, erase_barcode, exported, log_lines, rewrite_video, run, warm_up_picture

# The fallback's stated bound, on synthetic sessions with browser-like jitter, hitches and a recorder
# clock wandering 25 +- 12 ms from the page clock: at least 98 % of exported frames paired with their
# true state, and a mean error (hand-off time of the paired state minus that of the true state) of at
# most 2 ms.
FALLBACK_MIN_EXACT = 0.98
FALLBACK_MAX_MEAN_ERROR_MS = 2.0


def test_frame_exact_alignment_pairs_every_kept_frame_with_its_state(tmp_path):
    cfg = SynthConfig(width=256, height=144, duration_s=6.0, seed=5, drop_frames=3, duplicate_frames=3)
    truth = synth_session(tmp_path / "s", cfg)
    result, qc = run(truth.session_dir, tmp_path / "out")
    shown_at = {pts: fid for fid, pts in truth.video_frames}
    pairs = exported(qc)
    assert pairs and result.frames_kept == len(pairs)
    assert all(shown_at[pts] == fid for fid, pts in pairs)  # 100 %: every image with the state it shows
    assert qc["alignment"] == {**qc["alignment"], "mode": "frame_id", "estimated_error_ms": 0.0}
    assert dropped_ids(qc, "not_in_video") == set(truth.dropped_frame_ids)
    duplicates = [d for d in qc["dropped_frames"] if "duplicate_frame_id" in d["reasons"]]
    assert len(duplicates) == 3
    assert {p.code for p in result.problems} == {"video_frames_dropped", "video_frames_duplicated"}


@pytest.mark.parametrize("seed,drops", [(8, 0), (9, 4)])
def test_timestamp_fallback_error_is_measured_and_bounded(tmp_path, seed, drops):
    cfg = SynthConfig(width=256, height=144, duration_s=6.0, seed=seed, no_barcode=True, drop_frames=drops)
    truth = synth_session(tmp_path / "s", cfg)
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert qc["alignment"]["mode"] == "timestamp" and result.alignment_mode == "timestamp"
    shown_at = {pts: fid for fid, pts in truth.video_frames}
    handoff = {fid: line["t_capture_ms"] for fid, line in log_lines(truth.session_dir).items()}
    pairs = exported(qc)
    errors = np.array([abs(handoff[fid] - handoff[shown_at[pts]]) for fid, pts in pairs])
    exact = float(np.mean(errors == 0))
    print(f"\ntimestamp fallback (seed {seed}, {drops} dropped): {len(pairs)} frames, exact {exact:.1%}, "
          f"mean error {errors.mean():.2f} ms, max {errors.max():.1f} ms; estimated error "
          f"{result.alignment_error_ms:.2f} ms (bound: >= {FALLBACK_MIN_EXACT:.0%} exact, mean <= "
          f"{FALLBACK_MAX_MEAN_ERROR_MS} ms)")
    assert len(pairs) >= 0.8 * len(truth.video_frames)
    assert exact >= FALLBACK_MIN_EXACT
    assert errors.mean() <= FALLBACK_MAX_MEAN_ERROR_MS
    assert 0 < result.alignment_error_ms < 10.0  # the estimate is reported, and small
    assert "video_barcode_unreadable" in {p.code for p in result.problems} and not result.rejected


def test_interval_matching_recovers_drops_and_jitter():
    rng = np.random.default_rng(4)
    _, t_capture, pts = _clocks(900, 30.0, rng)
    keep = np.ones(900, bool)
    keep[rng.choice(np.arange(5, 895), 25, replace=False)] = False
    match = match_by_intervals(pts[keep].astype(float), t_capture)
    assert np.array_equal(match, np.nonzero(keep)[0])


def test_interval_matching_is_not_fooled_by_a_constant_frame_rate_guess():
    # Perfectly regular frames carry no fingerprint: the ends still anchor the pairing.
    t = np.arange(100) * 33.333
    match = match_by_intervals(t + 40.0, t)
    assert np.array_equal(match, np.arange(100))


def test_with_some_barcodes_read_those_frames_keep_their_id_and_leading_frames_are_never_paired(tmp_path):
    # The browser dropped the first 3 frames, the recorder's warm-up picture comes first, and only about a
    # third of the frames after the sixth show a readable barcode: too few in the first frames for
    # frame-id mode, so the timestamp fallback runs with the readable ones as anchors.
    truth = synth_session(tmp_path / "s", SynthConfig(width=256, height=144, duration_s=6.0, seed=21))
    cell = json.loads((truth.session_dir / "manifest.json").read_text())["barcode"]["cell_px"]
    rng = np.random.default_rng(2)
    shown: list[tuple[int | None, int]] = []  # (frame id the picture belongs to, pts) per encoded frame
    anchors: set[int] = set()

    def edit(pictures):
        kept = pictures[3:]
        out = [(warm_up_picture(kept[0][0]), kept[0][1] - 20)]
        shown.append((None, kept[0][1] - 20))
        for j, (planes, pts) in enumerate(kept, start=1):
            fid = truth.video_frames[j + 2][0]
            readable = j == 6 or (j > 6 and rng.random() < 0.3)
            out.append((planes if readable else erase_barcode(planes, cell), pts))
            shown.append((fid, pts))
            if readable:
                anchors.add(pts)
        return out

    rewrite_video(truth.session_dir, edit)
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert qc["alignment"]["mode"] == "timestamp" and not result.rejected
    assert qc["alignment"]["frames_before_first_barcode"] == 6  # the warm-up picture and 5 without a barcode
    assert qc["frames"]["dropped"]["before_first_barcode"] == 6
    assert qc["alignment"]["frames_paired_by_barcode"] == len(anchors)
    leading = {pts for _, pts in shown[:6]}
    shown_at = dict((pts, fid) for fid, pts in shown)
    pairs = exported(qc)
    assert not leading & {pts for _, pts in pairs}  # never paired with an id they do not show
    by_barcode = [(fid, pts) for fid, pts in pairs if pts in anchors]
    assert by_barcode and all(shown_at[pts] == fid for fid, pts in by_barcode)  # every anchor keeps its id
    exact = np.mean([shown_at[pts] == fid for fid, pts in pairs])
    assert len(pairs) >= 0.8 * (len(shown) - 6) and exact >= FALLBACK_MIN_EXACT, (len(pairs), exact)


def test_anchored_interval_matching_runs_from_one_known_pair_to_the_next():
    t = np.arange(12) * 33.0 + np.array([0, 3, -2, 5, 0, 1, -4, 2, 0, 6, -1, 0])
    pts = t[[0, 2, 3, 5, 6, 8, 11]] + 40.0  # lines 1, 4, 7, 9 and 10 are not in the video
    assert np.array_equal(match_by_intervals(pts, t, start_anchored=True, end_anchored=True), [0, 2, 3, 5, 6, 8, 11])
    # Fixed ends hold even where a free pairing would start elsewhere.
    match = match_by_intervals(np.array([0.0, 33.0, 66.0]), np.array([0.0, 10.0, 33.0, 66.0]), start_anchored=True,
                               end_anchored=True)
    assert match[0] == 0 and match[-1] == 3
    # No pairing within the step limits: nothing is paired.
    assert np.all(match_by_intervals(np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]), np.array([0.0, 300.0]),
                                     start_anchored=True, end_anchored=True) == -1)


def test_the_warm_up_picture_alone_does_not_make_a_short_session_a_problem(tmp_path):
    from sd_common.session_format.validate import validate_session

    # 2 s (61 frames with the warm-up): one unreadable frame is 1.6 %, over the validator's 1 % limit.
    truth = synth_session(tmp_path / "s", SynthConfig(width=256, height=144, duration_s=2.0, seed=22))
    rewrite_video(truth.session_dir, lambda pics: [(warm_up_picture(pics[0][0]), pics[0][1] - 20), *pics])
    report = validate_session(truth.session_dir, deep=True)
    assert report.ok, [p.to_dict() for p in report.problems]
    assert [w.code for w in report.warnings] == ["video_barcode_unreadable"]
    assert "warm-up" in report.warnings[0].message and report.stats.barcodes_unreadable == 1
    result, qc = run(truth.session_dir, tmp_path / "out")
    assert qc["alignment"]["mode"] == "frame_id" and qc["alignment"]["frames_before_first_barcode"] == 1
    assert result.problems == [] and qc["frames"]["dropped"] == {"before_first_barcode": 1, "black": 1}
    assert result.frames_kept == truth.frame_count
    # A second picture without a barcode is counted against the limit again.
    rewrite_video(truth.session_dir, lambda pics: [pics[0], (warm_up_picture(pics[1][0]), pics[1][1]), *pics[2:]])
    assert "video_barcode_unreadable" in {p.code for p in validate_session(truth.session_dir).problems}
