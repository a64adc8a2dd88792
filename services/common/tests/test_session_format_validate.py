"""Synthetic sessions through the validator: clean ones pass, each corruption is named, garbage never crashes."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from sd_common.session_format import barcode
from sd_common import dynamics
from sd_common.session_format.commands import register
from sd_common.session_format.scene import ROAD_HALF_WIDTH_M
from sd_common.session_format.spec import RoadOption
from sd_common.session_format.synth import (
    CORRUPTIONS,
    TRUTH_NAME,
    SynthConfig,
    SynthTruth,
    plan_session,
    synth_session,
)
from sd_common.session_format.validate import PROBLEM_CODES, validate_session
from sd_common.session_format.video import iter_frames, webm_structure

REPO = Path(__file__).resolve().parents[3]
SMALL = SynthConfig(width=256, height=144, duration_s=2.0, seed=11)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> SynthTruth:
    return synth_session(tmp_path_factory.mktemp("clean"), SynthConfig(width=320, height=180, duration_s=3.0, seed=1))


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> SynthTruth:
    """A longer, tiny session: long enough to take at least one turn whatever the seed (the first turn
    of any route is at most 200 m from its start; 40 s covers about 280 m)."""
    return synth_session(tmp_path_factory.mktemp("drive"),
                         SynthConfig(width=128, height=72, fps=15.0, duration_s=40.0, seed=3))


@pytest.fixture
def session(tmp_path) -> Path:
    """A fresh small valid session to break by hand."""
    return synth_session(tmp_path, SMALL).session_dir


def frames_of(truth: SynthTruth) -> list[dict]:
    return [json.loads(line) for line in (truth.session_dir / "frames.jsonl").read_text().splitlines()]


def rewrite_manifest(session: Path, **changes) -> None:
    """Rehashes every listed file (so only the intended defect remains) and applies top-level changes."""
    path = session / "manifest.json"
    doc = json.loads(path.read_text())
    for entry in doc["files"]:
        f = session / entry["path"]
        if f.exists():
            entry["size_bytes"] = f.stat().st_size
            entry["sha256"] = hashlib.sha256(f.read_bytes()).hexdigest()
    doc.update(changes)
    path.write_text(json.dumps(doc))


def codes(report) -> set[str]:
    assert set(report.codes()) <= PROBLEM_CODES, report.problems
    assert {w.code for w in report.warnings} <= PROBLEM_CODES
    return report.codes()


# --- a clean session ---------------------------------------------------------------------------------


def test_a_clean_session_validates_with_no_problem_and_no_warning(clean):
    report = validate_session(clean.session_dir)
    assert report.ok, report.problems
    assert report.problems == [] and report.warnings == []
    s = report.stats
    assert s.frames_logged == s.frames_decoded == s.barcodes_read == clean.frame_count == 90
    assert s.frames_dropped == s.frames_duplicated == s.barcodes_unreadable == 0
    assert (s.video_codec, s.video_width, s.video_height) == ("vp8", 320, 180)
    assert abs(s.clock_offset_ms) < 100 and abs(s.clock_drift) < 0.01
    assert 2.5 < s.video_duration_s < 3.5


def test_decoding_gives_one_frame_per_logged_frame_with_the_truths_ids_and_pts(clean):
    logged = [f["frame_id"] for f in frames_of(clean)]
    cell_px = json.loads((clean.session_dir / "manifest.json").read_text())["barcode"]["cell_px"]
    with av.open(str(clean.session_dir / "video.webm")) as container:
        decoded = [(barcode.read(f.luma, cell_px), f.pts_ms) for f in iter_frames(container)]
    assert [fid for fid, _ in decoded] == logged
    assert decoded == [tuple(v) for v in clean.video_frames]


def test_pts_look_like_a_browser_recorder_not_a_fixed_grid(clean):
    pts = np.array([p for _, p in clean.video_frames])
    steps = np.diff(pts)
    assert np.all(steps > 0)
    assert len(set(steps.tolist())) > 5  # jitter, not 33/34 alternation
    assert abs(steps.mean() - 1000 / 30) < 3
    frames = frames_of(clean)
    capture = np.array([f["t_capture_ms"] for f in frames])
    assert np.all(np.abs(pts - capture) < 60)  # the recorder's clock is near, not equal to, the page's


def test_truth_lives_beside_the_session_and_round_trips(clean):
    out = clean.session_dir.parent
    assert (out / TRUTH_NAME).is_file()
    assert not (clean.session_dir / TRUTH_NAME).exists()
    assert SynthTruth.load(out / TRUTH_NAME) == clean
    assert sorted(p.name for p in clean.session_dir.iterdir()) == [
        "events.jsonl", "frames.jsonl", "latency.jsonl", "manifest.json", "video.webm"]


def test_the_logged_events_drive_the_logged_motion_through_the_games_dynamics(drive):
    frames = frames_of(drive)
    events = [json.loads(line) for line in (drive.session_dir / "events.jsonl").read_text().splitlines()]
    steps = [(dynamics.step_of_sim_ms(e["sim_t_ms"]), e["device"], e["kind"], e["code"], e["value"]) for e in events]
    first = frames[0]["vehicle"]
    start = dynamics.make_vehicle(first["x_m"], first["y_m"], math.radians(first["yaw_deg"]))
    at = {dynamics.step_of_sim_ms(f["sim_t_ms"]): f for f in frames}
    worst = {"position": 0.0, "yaw": 0.0, "speed": 0.0, "controls": 0.0}
    car = start
    for i, car, c in dynamics.replay(start, steps, max(at) + 1):
        f = at.get(i)  # the frame at step i logs the controls of step i, and the state before it
        if f is not None:
            logged = f["controls"]
            worst["controls"] = max(worst["controls"], *(abs(getattr(c, k) - logged[k]) for k in logged))
        f = at.get(i + 1)
        if f is not None:
            v = f["vehicle"]
            worst["position"] = max(worst["position"], math.hypot(car.x - v["x_m"], car.y - v["y_m"]))
            worst["yaw"] = max(worst["yaw"], abs(math.degrees(dynamics.wrap_angle(car.yaw - math.radians(v["yaw_deg"])))))
            worst["speed"] = max(worst["speed"], abs(abs(car.v) - f["speed_mps"]))
    # Nothing but the log's rounding: 0.1 mm, 0.001 degrees, 4 decimals.
    assert worst["position"] < 1e-4 and worst["yaw"] <= 5e-4 and worst["speed"] <= 5e-5 and worst["controls"] <= 5e-5, worst
    assert max(f["speed_mps"] for f in frames) > 5  # it did drive


def test_camera_pose_is_the_vehicle_pose_through_the_mount(drive):
    for f in frames_of(drive)[::37]:
        v, c = f["vehicle"], f["camera"]
        yaw = math.radians(v["yaw_deg"])
        assert c["x_m"] == pytest.approx(v["x_m"] + 1.3 * math.cos(yaw), abs=2e-3)
        assert c["y_m"] == pytest.approx(v["y_m"] + 1.3 * math.sin(yaw), abs=2e-3)
        assert c["z_m"] == pytest.approx(2.3) and c["yaw_deg"] == pytest.approx(v["yaw_deg"], abs=1e-3)


def test_commands_come_from_the_route_and_the_car_then_turns_that_way(drive):
    frames = frames_of(drive)
    cmds = [f["command"] for f in frames]
    assert set(cmds) <= {RoadOption.LANEFOLLOW, RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT}
    runs, start = [], 0
    for i in range(1, len(cmds) + 1):
        if i == len(cmds) or cmds[i] != cmds[start]:
            runs.append((cmds[start], start, i))
            start = i
    turns = [r for r in runs if r[0] in (RoadOption.LEFT, RoadOption.RIGHT) and r[2] < len(cmds)]
    # The generator's own route says which turns the car has passed by the last frame, and which way.
    route = plan_session(SynthConfig(**drive.config)).route
    driven_m = frames[-1]["route"]["progress"] * route.length_m
    expected = [o for c, o in route.crossings
                if o in (RoadOption.LEFT, RoadOption.RIGHT) and c + ROAD_HALF_WIDTH_M < driven_m]
    assert expected, "the fixture drive is too short to take a turn"
    assert [t[0] for t in turns] == expected
    for option, begin, end in turns:
        change = (frames[end]["vehicle"]["yaw_deg"] - frames[begin]["vehicle"]["yaw_deg"] + 180) % 360 - 180
        assert (change > 60) if option == RoadOption.LEFT else (change < -60), (option, change)
        assert frames[begin - 1]["command"] == RoadOption.LANEFOLLOW or begin == 0
    speeds = [f["speed_mps"] for f in frames]
    assert max(speeds) > 7 and min(speeds[30:]) > 2  # cruises, slows for turns, never stops mid-route
    assert all(0 <= f["route"]["progress"] <= 1 for f in frames)
    assert [f["route"]["progress"] for f in frames] == sorted(f["route"]["progress"] for f in frames)


def test_a_diffusion_session_with_infractions_is_valid(tmp_path):
    truth = synth_session(tmp_path, SynthConfig(width=256, height=144, duration_s=1.0, diffusion=True,
                                                infractions=True))
    report = validate_session(truth.session_dir)
    assert report.ok, report.problems
    frames = frames_of(truth)
    assert frames[0]["diffusion_frame_id"] is None and frames[-1]["diffusion_frame_id"] == frames[-1]["frame_id"] - 5
    assert sum(len(f["infractions"]) for f in frames) == 1
    probes = [json.loads(x) for x in (truth.session_dir / "latency.jsonl").read_text().splitlines()]
    assert {"diffusion_rtt", "frame_present"} <= {p["kind"] for p in probes}


# --- corruption knobs --------------------------------------------------------------------------------


@pytest.mark.parametrize("knob", sorted(CORRUPTIONS))
def test_each_corruption_is_reported_with_its_code(tmp_path, knob):
    truth = synth_session(tmp_path, SMALL.with_corruption(knob))
    report = validate_session(truth.session_dir)
    expected = CORRUPTIONS[knob].expected_code
    assert truth.corruptions == {knob: CORRUPTIONS[knob].on_value}
    if expected is None:
        assert report.ok, report.problems
    else:
        assert expected in codes(report), report.problems
        assert truth.expected_problem_codes == [expected]
        assert not report.ok


def test_a_video_in_another_codec_is_named_by_its_codec_not_by_the_decoder(session):
    from sd_common.session_format.video import VideoWriter

    with VideoWriter(session / "video.webm", 256, 144, codec="libsvtav1", realtime=False) as w:
        for i in range(3):
            w.write_bgr(np.full((144, 256, 3), 60 * i, np.uint8), 20 + 33 * i)
    rewrite_manifest(session)
    report = validate_session(session)
    wrong = [p for p in report.problems if p.code == "video_codec_mismatch"]
    assert report.stats.video_codec == "av1"  # PyAV decodes it with libdav1d
    assert [p.message for p in wrong] == ["video.webm is coded av1; format v1 requires vp8"]


def test_blurred_frames_are_blurred_but_keep_a_readable_barcode(tmp_path):
    truth = synth_session(tmp_path, SMALL.with_corruption("blur_frames", 6))
    blurred = set(truth.blurred_frame_ids)
    assert len(blurred) == 6
    sharpness = {}
    with av.open(str(truth.session_dir / "video.webm")) as container:
        for f in iter_frames(container):
            fid = barcode.read(f.luma, 4)
            assert fid is not None
            sharpness[fid] = cv2.Laplacian(f.luma[:-8], cv2.CV_64F).var()
    for fid in blurred:
        neighbours = [sharpness[k] for k in range(fid - 4, fid + 5) if k in sharpness and k not in blurred]
        assert sharpness[fid] < 0.6 * float(np.median(neighbours)), (fid, sharpness[fid], neighbours)


def test_drops_below_the_tolerance_are_a_warning(tmp_path):
    truth = synth_session(tmp_path, SynthConfig(width=256, height=144, duration_s=4.0, drop_frames=1))
    report = validate_session(truth.session_dir)
    assert report.ok
    assert [w.code for w in report.warnings] == ["video_frames_dropped"]
    assert report.stats.frames_dropped == 1


def test_a_shallow_check_skips_the_video(tmp_path):
    truth = synth_session(tmp_path, SMALL.with_corruption("garbage_video"))
    shallow = validate_session(truth.session_dir, deep=False)
    assert shallow.ok and shallow.stats.frames_decoded == 0
    assert "video_unreadable" in validate_session(truth.session_dir).codes()


# --- garbage in, problems out ------------------------------------------------------------------------


def test_empty_video_is_a_problem(session):
    (session / "video.webm").write_bytes(b"")
    rewrite_manifest(session)
    report = validate_session(session)
    assert codes(report) >= {"video_unreadable"}


def test_random_bytes_as_video_are_a_problem(session):
    (session / "video.webm").write_bytes(np.random.default_rng(0).bytes(50_000))
    report = validate_session(session)  # manifest not updated: the hash is wrong too
    found = codes(report)
    assert "video_unreadable" in found and found & {"file_size_mismatch", "file_sha256_mismatch"}


def test_a_webm_header_followed_by_junk_is_a_problem(session):
    data = (session / "video.webm").read_bytes()
    junk = bytearray(data)
    junk[400:] = np.random.default_rng(1).bytes(len(data) - 400)
    (session / "video.webm").write_bytes(bytes(junk))
    rewrite_manifest(session)
    report = validate_session(session)
    assert not report.ok
    assert codes(report) & {"video_truncated", "video_undecodable", "video_empty", "video_frames_dropped",
                            "video_unreadable"}


def test_a_truncated_manifest_is_a_problem(session):
    data = (session / "manifest.json").read_bytes()
    (session / "manifest.json").write_bytes(data[: len(data) // 2])
    report = validate_session(session)
    assert "manifest_not_json" in codes(report)
    assert report.stats.frames_decoded == 60  # the rest is still checked


def test_a_5_mib_manifest_is_rejected_unread(session):
    (session / "manifest.json").write_bytes(b"{" + b" " * (5 * 1024 * 1024) + b"}")
    report = validate_session(session)
    assert [p.code for p in report.problems if p.code.startswith("manifest")] == ["manifest_too_large"]


def test_a_missing_manifest_or_directory_is_a_problem(session, tmp_path):
    (session / "manifest.json").unlink()
    assert "manifest_missing" in codes(validate_session(session))
    assert codes(validate_session(tmp_path / "nope")) == {"session_not_found"}


@pytest.mark.parametrize("content, code", [
    (b"", "frames_empty"),
    (b"\x00\xff\x13garbage\n", "frame_line_not_json"),
    (b"[1,2,3]\n", "frame_line_not_object"),
    (b"\n\n", "frame_line_not_json"),
    (b"[" * 200_000 + b"\n", "frame_line_too_long"),
    (b'{"frame_id":' + b"9" * 5000 + b"}\n", "frame_line_not_json"),
    (b'{"frame_id":' + b"9" * 50 + b"}\n", "frame_value_out_of_range"),
])
def test_garbage_frame_logs_are_problems(session, content, code):
    (session / "frames.jsonl").write_bytes(content)
    rewrite_manifest(session)
    assert code in codes(validate_session(session))


def test_one_bad_line_among_good_ones_is_named_by_line(session):
    path = session / "frames.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[36])
    rec["controls"]["throttle"] = float("nan")
    lines[36] = json.dumps(rec)  # Python writes the NaN token, as a careless client would
    path.write_text("\n".join(lines) + "\n")
    rewrite_manifest(session)
    report = validate_session(session)
    assert [(p.code, p.path, p.message) for p in report.problems] == [
        ("frame_value_not_finite", "frames.jsonl:37",
         "frames.jsonl line 37: controls.throttle is NaN; expected a number in [0, 1]")]


def test_many_bad_lines_are_summarised(session):
    path = session / "frames.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for rec in lines:
        rec["speed_mps"] = -1
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rewrite_manifest(session)
    report = validate_session(session)
    speed = [p for p in report.problems if p.code == "frame_value_out_of_range"]
    assert len(speed) == 11
    assert speed[-1].path == "frames.jsonl" and "50 more" in speed[-1].message


def test_links_and_directories_are_not_session_files(session, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the session")
    os.symlink(secret, session / "notes.txt")
    (session / "nested").mkdir()
    (session / "nested" / "x.bin").write_bytes(b"x")
    report = validate_session(session)
    assert {(p.code, p.path) for p in report.problems} == {("file_not_regular", "notes.txt"),
                                                           ("file_unlisted", "nested/x.bin")}


def test_a_directory_in_place_of_the_video_is_a_problem(session):
    (session / "video.webm").unlink()
    (session / "video.webm").mkdir()
    assert "file_missing" in codes(validate_session(session))


def test_event_and_latency_logs_are_checked(session):
    with open(session / "events.jsonl", "a") as f:
        f.write('{"t_ms":0,"device":"mouse","kind":"keydown","code":"KeyW","value":1}\n')
    with open(session / "latency.jsonl", "a") as f:
        f.write('{"t_ms":99999,"kind":"diffusion_rtt","sent_ms":50,"received_ms":40,"frame_id":777}\n')
    rewrite_manifest(session)
    found = codes(validate_session(session))
    assert {"event_value_invalid", "latency_value_out_of_range", "latency_frame_not_logged"} <= found


def test_an_events_simulation_time_is_optional_but_never_goes_back(session):
    lines = (session / "events.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    with open(session / "events.jsonl", "a") as f:
        f.write(json.dumps({**last, "sim_t_ms": 1e9}) + "\n")  # beyond two hours: out of range
        f.write(json.dumps({k: v for k, v in last.items() if k != "sim_t_ms"}) + "\n")  # absent: allowed
    rewrite_manifest(session)
    assert codes(validate_session(session, deep=False)) == {"event_value_out_of_range"}
    with open(session / "events.jsonl", "a") as f:
        f.write(json.dumps({**last, "sim_t_ms": 0.0}) + "\n")  # before the lines above
    rewrite_manifest(session)
    assert "event_time_not_monotonic" in codes(validate_session(session, deep=False))


def test_duration_must_agree_with_the_video(session):
    rewrite_manifest(session, duration_s=30.0)
    assert codes(validate_session(session)) == {"duration_mismatch"}
    rewrite_manifest(session, duration_s=0.5)
    assert codes(validate_session(session)) == {"duration_mismatch"}


def _ebml(element_id: bytes, payload: bytes | None) -> bytes:
    """One EBML element; payload None writes an unknown size, as a live recorder does."""
    if payload is None:
        return element_id + b"\x01\xff\xff\xff\xff\xff\xff\xff"
    assert len(payload) < 127
    return element_id + bytes([0x80 | len(payload)]) + payload


def _browser_like_webm(doc_type: bytes = b"webm") -> tuple[bytes, list[int]]:
    header = _ebml(b"\x1a\x45\xdf\xa3", _ebml(b"\x42\x82", doc_type))
    body = _ebml(b"\x18\x53\x80\x67", None) + _ebml(b"\x15\x49\xa9\x66", b"\x00" * 8)
    ends = []
    for cluster in range(2):
        body += _ebml(b"\x1f\x43\xb6\x75", None) + _ebml(b"\xe7", bytes([cluster]))
        for _ in range(3):
            body += _ebml(b"\xa3", b"\x81\x00\x00\x80" + b"\x55" * 20)
            ends.append(len(header) + len(body))
    return header + body, ends


def test_webm_structure_finds_a_cut_inside_unknown_size_clusters(tmp_path):
    data, block_ends = _browser_like_webm()
    path = tmp_path / "v.webm"
    path.write_bytes(data)
    assert webm_structure(path).doc_type == "webm" and not webm_structure(path).truncated
    for end in block_ends:
        path.write_bytes(data[:end])  # cut between blocks: indistinguishable from a shorter recording
        assert not webm_structure(path).truncated
        path.write_bytes(data[:end - 7])  # cut inside a block
        assert webm_structure(path).truncated
    path.write_bytes(data[:5])
    assert webm_structure(path).truncated
    path.write_bytes(_browser_like_webm(b"matroska")[0])
    assert webm_structure(path).doc_type == "matroska"
    path.write_bytes(b"\x00" * 64)
    assert webm_structure(path).doc_type is None


# --- the spec and the CLI ----------------------------------------------------------------------------


def test_the_spec_lists_exactly_the_codes_the_validator_reports():
    text = (REPO / "docs" / "session-format.md").read_text()
    section = text[text.index("## 11. Validation"):text.index("## 12.")]
    documented = set()
    for row in re.findall(r"^\| (`[^|]*`) \|", section, flags=re.MULTILINE):
        documented |= set(re.findall(r"`([a-z0-9_]+)`", row))
    # "likewise event_… and latency_…": the row spells out only the frame_ variants.
    line_codes = {f"{p}_{c}" for p in ("event", "latency") for c in
                  ("field_missing", "field_unknown", "value_invalid", "value_not_finite", "value_out_of_range")}
    assert documented | line_codes == PROBLEM_CODES


def _cli(argv: list[str]) -> int:
    """Runs sdctl as installed, through its own parser."""
    from sd_common.cli.main import main

    return main(argv)


def test_register_adds_both_commands_to_any_parser():
    parser = argparse.ArgumentParser(prog="sdctl")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", "x", "--no-deep", "--json"])
    assert (args.dir, args.deep, args.json) == (Path("x"), False, True)
    args = parser.parse_args(["synth", "--out", "o", "--corrupt", "drop_frames=3", "--corrupt", "wrong_codec"])
    assert args.corrupt == ["drop_frames=3", "wrong_codec"] and callable(args.fn)


def test_cli_synth_then_validate(tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(["synth", "--out", str(out), "--duration-s", "1", "--width", "256", "--height", "144",
                 "--seed", "4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(out / "session") and "30 frames logged" in printed[1]
    assert _cli(["validate", str(out / "session")]) == 0
    assert capsys.readouterr().out == ""
    assert _cli(["validate", str(out / "session"), "--json", "--no-deep"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["stats"]["frames_logged"] == 30


def test_cli_reports_corruptions_as_path_and_message(tmp_path, capsys):
    out = tmp_path / "bad"
    assert _cli(["synth", "--out", str(out), "--duration-s", "1", "--width", "256", "--height", "144",
                 "--corrupt", "wrong_hash=frames.jsonl", "--corrupt", "out_of_range_controls=2"]) == 0
    assert "file_sha256_mismatch" in capsys.readouterr().out
    assert _cli(["validate", str(out / "session")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("manifest.json:files[1].sha256: frames.jsonl has sha256") for line in lines)
    assert sum(line.startswith("frames.jsonl:") for line in lines) == 2
    assert _cli(["validate", str(out / "session"), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {p["code"] for p in report["problems"]} == {"file_sha256_mismatch", "frame_value_out_of_range"}


def test_cli_rejects_unknown_knobs_and_bad_values(tmp_path, capsys):
    assert _cli(["synth", "--out", str(tmp_path), "--corrupt", "nonsense"]) == 2
    assert _cli(["synth", "--out", str(tmp_path), "--corrupt", "drop_frames=many"]) == 2
    assert "drop_frames takes an integer" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)
