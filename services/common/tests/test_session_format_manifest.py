"""parse_manifest and the JSONL record types: what is accepted, and exactly how everything else is named."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sd_common.problems import ProblemError
from sd_common.session_format import (
    MANIFEST_MAX_BYTES,
    FrameRecord,
    Manifest,
    RoadOption,
    parse_manifest,
)
from sd_common.session_format.spec import InputEvent, LatencyProbe, iter_records

REPO = Path(__file__).resolve().parents[3]
SHA = "a" * 64


def valid_manifest() -> dict:
    return {
        "schema_version": "1",
        "session_id": "0b7e4c1e-4a57-4d7e-9a0f-5f1d2c3b4a59",
        "player_id": "p-42",
        "created_at": "2025-05-01T12:00:00.000Z",
        "client": {"build": "web-2025.05.01", "user_agent": "Mozilla/5.0"},
        "city": {"name": "grid", "seed": 7},
        "route": {"route_id": "r-1", "start": {"x_m": 0, "y_m": 0, "z_m": 0},
                  "goal": {"x_m": 100.5, "y_m": -40, "z_m": 0}, "length_m": 180.0},
        "recording": {"width": 1280, "height": 720, "fps_target": 30, "codec": "vp8", "container": "webm"},
        "camera": {"intrinsics": {"fov_deg": 100, "fx": 537.0, "fy": 537.0, "cx": 640, "cy": 360},
                   "mount": {"x_m": 1.3, "y_m": 0, "z_m": 2.3, "pitch_deg": 0, "yaw_deg": 0, "roll_deg": 0}},
        "barcode": {"cells": 23, "cell_px": 16, "bits": 20, "marker": [1, 0], "parity": "even",
                    "origin": "bottom-left", "threshold": 127},
        "diffusion": {"enabled": False, "backend": None, "prompt": None, "model": None},
        "duration_s": 61.2,
        "frame_count": 1820,
        "files": [
            {"path": "video.webm", "size_bytes": 40_000_000, "sha256": SHA, "content_type": "video/webm;codecs=vp8"},
            {"path": "frames.jsonl", "size_bytes": 900_000, "sha256": SHA, "content_type": "application/x-ndjson"},
            {"path": "events.jsonl", "size_bytes": 20_000, "sha256": SHA, "content_type": "application/x-ndjson"},
            {"path": "latency.jsonl", "size_bytes": 9_000, "sha256": SHA, "content_type": "application/x-ndjson"},
        ],
    }


def problems_of(doc) -> list:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(ProblemError) as info:
        parse_manifest(data)
    return info.value.problems


def test_a_valid_manifest_parses_into_typed_fields():
    m = parse_manifest(json.dumps(valid_manifest()).encode())
    assert isinstance(m, Manifest)
    assert m.session_id == "0b7e4c1e-4a57-4d7e-9a0f-5f1d2c3b4a59" and m.player_id == "p-42"
    assert [f.path for f in m.files] == ["video.webm", "frames.jsonl", "events.jsonl", "latency.jsonl"]
    assert m.files[0].size_bytes == 40_000_000 and m.files[0].sha256 == SHA
    assert m.files[0].content_type == "video/webm;codecs=vp8"
    assert m.duration_s == 61.2 and m.frame_count == 1820
    assert m.created_at.utcoffset().total_seconds() == 0
    assert m.camera.mount.x_m == 1.3 and m.camera.mount.z_m == 2.3
    assert m.file("frames.jsonl").size_bytes == 900_000


def test_mount_defaults_are_the_carla_agent_camera():
    doc = valid_manifest()
    del doc["camera"]["mount"]
    m = parse_manifest(json.dumps(doc).encode())
    assert (m.camera.mount.x_m, m.camera.mount.z_m, m.camera.mount.pitch_deg) == (1.3, 2.3, 0.0)


@pytest.mark.parametrize("path, reason", [
    ("../video.webm", "'..'"),
    ("/etc/passwd", "absolute"),
    ("a\x00b", "NUL"),
    ("dir\\video.webm", "backslash"),
    ("vidéo.webm", "non-ASCII"),
    ("", "empty"),
    ("a//b", "'..'"),
    ("./video.webm", "'..'"),
    ("manifest.json", "manifest"),
])
def test_path_tricks_are_rejected_with_the_entry_named(path, reason):
    doc = valid_manifest()
    doc["files"].append({"path": path, "size_bytes": 1, "sha256": SHA, "content_type": "text/plain"})
    problems = problems_of(doc)
    assert [(p.code, p.path) for p in problems] == [("manifest_file_path_invalid", "manifest.json:files[4].path")]
    assert reason in problems[0].message


def test_duplicate_paths_are_rejected_at_the_second_entry():
    doc = valid_manifest()
    doc["files"].append(copy.deepcopy(doc["files"][1]))
    problems = problems_of(doc)
    assert [(p.code, p.path) for p in problems] == [("manifest_file_path_duplicate", "manifest.json:files[4].path")]
    assert "files[1]" in problems[0].message


@pytest.mark.parametrize("mutate, code, path", [
    (lambda d: d["files"][2].update(sha256="ABC"), "manifest_value_invalid", "manifest.json:files[2].sha256"),
    (lambda d: d["files"][2].update(sha256="A" * 64), "manifest_value_invalid", "manifest.json:files[2].sha256"),
    (lambda d: d["files"][0].update(size_bytes="12"), "manifest_value_invalid", "manifest.json:files[0].size_bytes"),
    (lambda d: d["files"][0].update(size_bytes=-1), "manifest_value_out_of_range",
     "manifest.json:files[0].size_bytes"),
    (lambda d: d["files"][0].update(size_bytes=1.5), "manifest_value_invalid", "manifest.json:files[0].size_bytes"),
    (lambda d: d.update(frame_count=True), "manifest_value_invalid", "manifest.json:frame_count"),
    (lambda d: d.update(duration_s="61"), "manifest_value_invalid", "manifest.json:duration_s"),
    (lambda d: d.update(duration_s=0), "manifest_value_out_of_range", "manifest.json:duration_s"),
    (lambda d: d.pop("player_id"), "manifest_field_missing", "manifest.json:player_id"),
    (lambda d: d.update(sesion_id="x"), "manifest_field_unknown", "manifest.json:sesion_id"),
    (lambda d: d["camera"]["intrinsics"].update(fov=100), "manifest_field_unknown",
     "manifest.json:camera.intrinsics.fov"),
    (lambda d: d.update(created_at="2025-05-01T12:00:00+02:00"), "manifest_value_invalid", "manifest.json:created_at"),
    (lambda d: d.update(created_at="2025-05-01"), "manifest_value_invalid", "manifest.json:created_at"),
    (lambda d: d["recording"].update(codec="vp9"), "manifest_value_invalid", "manifest.json:recording.codec"),
    (lambda d: d["recording"].update(width=1279), "manifest_value_invalid", "manifest.json:recording.width"),
    (lambda d: d.update(session_id="../x"), "manifest_value_invalid", "manifest.json:session_id"),
    (lambda d: d.update(files=[]), "manifest_value_invalid", "manifest.json:files"),
    (lambda d: d.update(files={}), "manifest_value_invalid", "manifest.json:files"),
    (lambda d: d["files"][0].update(content_type="video/mp4"), "manifest_content_type_mismatch",
     "manifest.json:files[0].content_type"),
    (lambda d: d["files"][0].update(size_bytes=3 * 1024**3), "manifest_file_too_large",
     "manifest.json:files[0].size_bytes"),
    (lambda d: d["files"].pop(3), "manifest_file_not_listed", "manifest.json:files"),
    (lambda d: d["camera"]["intrinsics"].update(fx=400.0), "manifest_camera_inconsistent",
     "manifest.json:camera.intrinsics.fx"),
    (lambda d: d["barcode"].update(cell_px=64, cells=23), "manifest_barcode_does_not_fit",
     "manifest.json:barcode.cell_px"),
    (lambda d: d["barcode"].update(bits=16), "manifest_value_invalid", "manifest.json:barcode.bits"),
    (lambda d: d["diffusion"].update(enabled=True), "manifest_field_missing", "manifest.json:diffusion.backend"),
    (lambda d: d["diffusion"].update(plain_from_frame_id=40), "manifest_value_invalid",
     "manifest.json:diffusion.plain_from_frame_id"),
    (lambda d: d["diffusion"].update(enabled=True, backend="webrtc", model="m", plain_from_frame_id=-1),
     "manifest_value_out_of_range", "manifest.json:diffusion.plain_from_frame_id"),
    (lambda d: d["city"].pop("seed"), "manifest_field_missing", "manifest.json:city"),
    (lambda d: d["diffusion"].update(pairing="latency"), "manifest_value_invalid", "manifest.json:diffusion.pairing"),
    (lambda d: d["diffusion"].update(enabled=True, backend="mirage", model="m", pairing="guess"),
     "manifest_value_invalid", "manifest.json:diffusion.pairing"),
    (lambda d: d["diffusion"].update(enabled=True, backend="mirage", model="m", pairing="latency",
                                     pairing_latency_ms=180.0), "manifest_field_missing",
     "manifest.json:diffusion.pairing_error_ms"),
    (lambda d: d["diffusion"].update(enabled=True, backend="mirage", model="m", pairing="latency",
                                     pairing_error_ms=20), "manifest_field_missing",
     "manifest.json:diffusion.pairing_latency_ms"),
    (lambda d: d["diffusion"].update(enabled=True, backend="mirage", model="m", pairing="latency",
                                     pairing_latency_ms=180.0, pairing_error_ms=-1), "manifest_value_out_of_range",
     "manifest.json:diffusion.pairing_error_ms"),
    (lambda d: d["diffusion"].update(enabled=True, backend="webrtc", model="m", pairing="barcode",
                                     pairing_error_ms=12.5), "manifest_value_invalid",
     "manifest.json:diffusion.pairing_error_ms"),
    (lambda d: d["diffusion"].update(enabled=True, backend="mirage", model="m", pairing="latency",
                                     pairing_latency_ms=180.0, pairing_error_ms=20, pairing_samples=1.5),
     "manifest_value_invalid", "manifest.json:diffusion.pairing_samples"),
])
def test_wrong_fields_are_named_precisely(mutate, code, path):
    doc = valid_manifest()
    mutate(doc)
    problems = problems_of(doc)
    assert (code, path) in [(p.code, p.path) for p in problems], problems
    assert all(p.message.startswith("manifest.json") for p in problems)


def test_a_latency_pairing_with_its_error_is_valid():
    doc = valid_manifest()
    doc["diffusion"] = {"enabled": True, "backend": "mirage", "prompt": "p", "model": "mirage_v2",
                        "pairing": "latency", "pairing_latency_ms": 182.5, "pairing_error_ms": 41, "pairing_samples": 0}
    m = parse_manifest(json.dumps(doc).encode())
    assert (m.diffusion.pairing, m.diffusion.pairing_latency_ms, m.diffusion.pairing_error_ms) == ("latency", 182.5, 41)
    doc["diffusion"].update(pairing="barcode", pairing_error_ms=0)
    assert parse_manifest(json.dumps(doc).encode()).diffusion.pairing == "barcode"


def test_nan_is_not_a_number_here():
    data = json.dumps(valid_manifest()).replace('"duration_s": 61.2', '"duration_s": NaN').encode()
    [p] = problems_of(data)
    assert (p.code, p.path) == ("manifest_value_not_finite", "manifest.json:duration_s")
    assert "NaN" in p.message


def test_every_wrong_field_is_reported_at_once():
    doc = valid_manifest()
    doc["files"][1]["sha256"] = "nope"
    doc["frame_count"] = -3
    doc.pop("client")
    codes = {(p.code, p.path) for p in problems_of(doc)}
    assert codes == {("manifest_value_invalid", "manifest.json:files[1].sha256"),
                     ("manifest_value_out_of_range", "manifest.json:frame_count"),
                     ("manifest_field_missing", "manifest.json:client")}


def test_another_schema_version_is_one_clear_problem():
    doc = valid_manifest()
    doc["schema_version"] = "2"
    doc["new_v2_field"] = {"x": 1}
    [p] = problems_of(doc)
    assert (p.code, p.path) == ("manifest_schema_version_unsupported", "manifest.json:schema_version")


@pytest.mark.parametrize("data, code", [
    (b"", "manifest_not_json"),
    (b"   \n", "manifest_not_json"),
    (json.dumps(valid_manifest()).encode()[:200], "manifest_not_json"),
    (b"\xff\xfe\x00garbage", "manifest_not_json"),
    (b"[1, 2]", "manifest_not_object"),
    (b"null", "manifest_not_object"),
    (b"[" * 100_000, "manifest_not_json"),
    (b" " * (MANIFEST_MAX_BYTES + 1), "manifest_too_large"),
    (b"{" + b'"a":1,' * 900_000 + b'"b":2}', "manifest_too_large"),  # about 5 MiB
])
def test_garbage_manifests_are_problems_not_crashes(data, code):
    problems = problems_of(data)
    assert [p.code for p in problems] == [code]
    assert problems[0].path == "manifest.json"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_any_bytes_either_parse_or_raise_problem_error(data):
    try:
        parse_manifest(data)
    except ProblemError as exc:
        assert exc.problems
        assert all(p.code.startswith("manifest_") and p.path.startswith("manifest.json") for p in exc.problems)
    else:  # only a complete manifest may parse
        assert set(json.loads(data)) == set(Manifest.model_fields), data


@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=30))
@example(5)
@example(None)
@example(float("nan"))
@example({"intrinsics": {}})
@example("2025-05-01T12:00:00Z")
def test_any_json_value_in_any_field_is_a_problem_not_a_crash(value):
    doc = valid_manifest()
    for key in ("files", "camera", "route", "frame_count", "created_at"):
        broken = copy.deepcopy(doc)
        broken[key] = value
        try:
            manifest = parse_manifest(json.dumps(broken).encode())
        except ProblemError as exc:
            # Named at the field that was replaced (or, for NaN/Infinity, as JSON the format forbids).
            assert exc.problems
            for p in exc.problems:
                assert p.code.startswith("manifest_") and p.message, p
                at = f"manifest.json:{key}"
                assert p.path == at or p.path.startswith((f"{at}.", f"{at}[")), (key, p)
            assert not _must_parse(key, value), (key, value, exc.problems)
        else:
            assert _could_be_valid(key, value), f"{key}={value!r} was accepted"
            if key == "frame_count":
                assert manifest.frame_count == value


def _could_be_valid(key: str, value) -> bool:
    """A necessary condition, written apart from the model, for ``value`` to be a valid ``key``."""
    if key == "frame_count":
        return _must_parse(key, value)
    if key == "created_at":
        rfc3339_utc = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)"
        return isinstance(value, str) and re.fullmatch(rfc3339_utc, value) is not None
    if key == "route":
        return isinstance(value, dict) and {"route_id", "start", "goal", "length_m"} <= set(value)
    if key == "camera":
        return isinstance(value, dict) and "intrinsics" in value
    # files: at least the four files every session lists, each a complete entry
    return isinstance(value, list) and len(value) >= 4 and all(isinstance(f, dict) and len(f) == 4
                                                               for f in value)


def _must_parse(key: str, value) -> bool:
    """Values the field certainly accepts: a frame count in range (no other field here is that simple)."""
    return key == "frame_count" and type(value) is int and 1 <= value <= 2**20


def test_road_option_numbering_is_carlas():
    assert {o.name: o.value for o in RoadOption} == {
        "VOID": -1, "LEFT": 1, "RIGHT": 2, "STRAIGHT": 3, "LANEFOLLOW": 4, "CHANGELANELEFT": 5, "CHANGELANERIGHT": 6}


def _doc_json_blocks(kind: str) -> list[str]:
    text = (REPO / "docs" / "session-format.md").read_text()
    return re.findall(rf"```json {kind}\n(.*?)```", text, flags=re.DOTALL)


def test_the_worked_examples_in_the_spec_are_valid():
    [manifest] = _doc_json_blocks("manifest")
    parse_manifest(manifest.encode())
    frames = _doc_json_blocks("frame")
    assert frames
    for line in frames:
        rec = FrameRecord.model_validate_json(line)
        assert rec.command == RoadOption.LEFT
    events, probes = _doc_json_blocks("event"), _doc_json_blocks("latency")
    assert events and probes  # a spec without examples would pass the loops below for nothing
    for line in events:
        InputEvent.model_validate_json(line)
    for line in probes:
        LatencyProbe.model_validate_json(line)


def test_iter_records_streams_and_names_the_bad_line(tmp_path):
    [frame] = _doc_json_blocks("frame")
    good = json.dumps(json.loads(frame))
    bad = json.loads(frame)
    bad["frame_id"] += 1
    bad["controls"]["brake"] = 2
    path = tmp_path / "frames.jsonl"
    path.write_text(good + "\n\n" + json.dumps(bad) + "\n")
    it = iter_records(path, FrameRecord)
    assert next(it).frame_id == json.loads(frame)["frame_id"]
    with pytest.raises(ProblemError) as info:
        next(it)
    [p] = info.value.problems
    assert (p.code, p.path) == ("frame_value_out_of_range", "frames.jsonl:3")
    assert p.message == "frames.jsonl line 3: controls.brake is 2.0; expected a number in [0, 1]"
