"""SPLICE on hand-built frame streams, and `sdctl process` end to end."""

from __future__ import annotations

import json

from sd_common.cli.main import main as sdctl
from sd_processor.clean import Candidate
from sd_processor.decode import DecodedFrame
from sd_processor.splice import Splicer


def stream(lines_and_pts, good=None):
    """Candidates for (line, pts_ms) pairs; ``good`` picks which are kept (default: all)."""
    out = []
    for k, (line, pts) in enumerate(lines_and_pts):
        cand = Candidate(DecodedFrame(k, pts, line, None, None, None), line)
        if good is not None and not good(k):
            cand.reasons.append("blurred")
        out.append(cand)
    return out


def splice(cands, **kw):
    s = Splicer(segment_s=kw.get("segment_s", 5.0), max_gap_frames=kw.get("max_gap_frames", 2),
                max_gap_ms=kw.get("max_gap_ms", 250.0), period_ms=33.3)
    segs = [seg for c in cands for seg in s.add(c)] + s.finish()
    return [(len(seg.frames), seg.holes) for seg in segs]


def test_segments_are_cut_every_five_seconds_on_frame_boundaries():
    frames = stream([(i, round(i * 1000 / 30)) for i in range(400)])
    assert splice(frames) == [(150, 0), (150, 0), (100, 0)]


def test_small_gaps_are_holes_and_large_ones_end_the_segment():
    # two frames lost (lines 10, 11): a hole; three lost (lines 50-52): a new segment
    kept = [(i, round(i * 1000 / 30)) for i in range(100) if i not in (10, 11, 50, 51, 52)]
    assert splice(stream(kept)) == [(48, 2), (47, 0)]
    # dropped frames count as well: three blurred frames in a row end the segment
    frames = stream([(i, round(i * 1000 / 30)) for i in range(60)], good=lambda k: k not in (20, 21, 22))
    assert splice(frames) == [(20, 0), (37, 0)]


def test_a_time_hole_ends_a_segment_even_without_missing_lines():
    frames = stream([(i, round(i * 1000 / 30) + (400 if i >= 30 else 0)) for i in range(60)])
    assert splice(frames) == [(30, 0), (30, 0)]


def test_sdctl_process_runs_one_session(clean_session, tmp_path, capsys):
    out = tmp_path / "out"
    assert sdctl(["process", str(clean_session.session_dir), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["segments_accepted"] == 1 and not printed["rejected"]
    assert (out / "_SUCCESS.json").is_file()
    assert sdctl(["process", str(tmp_path / "missing"), "--out", str(out)]) == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    assert sdctl(["process", str(broken), "--out", str(tmp_path / "o2")]) == 1
    assert "manifest_not_json" in capsys.readouterr().out
