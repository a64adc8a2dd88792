"""The processor's fuzz corpus: broken sessions made from the synthetic generator and from byte edits.

Each case is a name and a recipe. A recipe starts from a small clean session (made once per test run)
or from the generator with one corruption knob set, and breaks one thing: a file cut, emptied,
replaced or removed, a manifest that lies, a log with junk, NaN, reordered or over-long lines, path
tricks in the manifest, a video whose bytes rot. ``resign`` re-lists the edited files' sizes and hashes
in the manifest, so a content edit reaches the decoder and the log parser instead of stopping at the
hash check. Clean cases (``bad=False``) must process; every bad case must end in named problems.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sd_common.session_format.synth import CORRUPTIONS, SynthConfig, synth_session


@dataclass(frozen=True)
class Case:
    """One fuzz case: ``build(workdir) -> session dir``; ``expect`` is a problem code it must produce."""

    name: str
    build: Callable[[Path, dict[str, Path]], Path]
    bad: bool | None = True  # True: must end in named problems; False: must have none; None: either
    expect: str | None = None  # a problem code it must produce
    clean: bool = False  # must process with no problem and export at least one segment
    dropped: str | None = None  # a frame drop reason the QC report must count (cleaner-only knobs)
    segment_rejected: str | None = None  # a segment rejection reason the QC report must count


BASES = {  # name -> SynthConfig of a clean session every byte-edit case starts from
    "small": SynthConfig(width=160, height=90, duration_s=2.5, seed=21),
    "wide": SynthConfig(width=256, height=144, duration_s=3.0, seed=22),
}


def make_bases(root: Path) -> dict[str, Path]:
    """Synthesizes the base sessions once; returns name -> session dir."""
    out = {}
    for name, cfg in BASES.items():
        synth_session(root / name, cfg)
        out[name] = root / name / "session"
    return out


def _copy(bases: dict[str, Path], work: Path, base: str = "small") -> Path:
    dst = work / "session"
    shutil.copytree(bases[base], dst, symlinks=True)
    return dst


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, m: dict | str | bytes) -> None:
    data = m if isinstance(m, (bytes, str)) else json.dumps(m, indent=1)
    (d / "manifest.json").write_bytes(data if isinstance(data, bytes) else data.encode())


def resign(d: Path) -> None:
    """Re-lists every listed file's size and sha256, as a client that wrote the broken file would."""
    m = _manifest(d)
    for f in m["files"]:
        p = d / f["path"]
        if p.is_file():
            f["size_bytes"] = p.stat().st_size
            f["sha256"] = hashlib.sha256(p.read_bytes()).hexdigest()
    _write_manifest(d, m)


# --- recipes -----------------------------------------------------------------------------------------


def synth_knob(knob: str, value, width: int = 160, height: int = 90, duration_s: float = 2.5, seed: int = 31):
    def build(work: Path, bases: dict[str, Path]) -> Path:
        cfg = SynthConfig(width=width, height=height, duration_s=duration_s, seed=seed)
        return synth_session(work, cfg.with_corruption(knob, value)).session_dir
    return build


def clean_synth(**kw):
    def build(work: Path, bases: dict[str, Path]) -> Path:
        return synth_session(work, SynthConfig(**kw)).session_dir
    return build


def edit(fn: Callable[[Path], None], *, base: str = "small", sign: bool = False):
    def build(work: Path, bases: dict[str, Path]) -> Path:
        d = _copy(bases, work, base)
        fn(d)
        if sign:
            resign(d)
        return d
    return build


def truncate(name: str, fraction: float = 0.0, keep_bytes: int | None = None):
    def fn(d: Path) -> None:
        p = d / name
        size = p.stat().st_size
        new = keep_bytes if keep_bytes is not None else int(size * (1 - fraction))
        with open(p, "r+b") as f:
            f.truncate(max(0, min(size, new)))
    return fn


def replace_bytes(name: str, data: bytes):
    return lambda d: (d / name).write_bytes(data)


def remove(name: str):
    return lambda d: (d / name).unlink()


def flip_bytes(name: str, start_fraction: float, count: int, seed: int):
    def fn(d: Path) -> None:
        p = d / name
        data = bytearray(p.read_bytes())
        rnd = hashlib.sha256(f"{seed}".encode()).digest() * (count // 32 + 1)
        at = int(len(data) * start_fraction)
        for k in range(min(count, len(data) - at)):
            data[at + k] ^= rnd[k] | 1
        p.write_bytes(bytes(data))
    return fn


def lines_edit(name: str, fn: Callable[[list[bytes]], list[bytes]]):
    def run(d: Path) -> None:
        p = d / name
        lines = p.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines = lines[:-1]
        p.write_bytes(b"\n".join(fn(lines)) + b"\n")
    return run


def set_line(index: int, text: bytes):
    def fn(lines: list[bytes]) -> list[bytes]:
        lines[index] = text
        return lines
    return fn


def frame_field(index: int, path: tuple, value_json: str):
    """Sets a field of one frames.jsonl line to a raw JSON token (NaN, 1e999, "x" ...)."""
    def fn(lines: list[bytes]) -> list[bytes]:
        obj = json.loads(lines[index])
        target = obj
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = "__TOKEN__"
        lines[index] = json.dumps(obj, separators=(",", ":")).replace('"__TOKEN__"', value_json).encode()
        return lines
    return fn


def manifest_edit(fn: Callable[[dict], None]):
    def run(d: Path) -> None:
        m = _manifest(d)
        fn(m)
        _write_manifest(d, m)
    return run


def set_key(*path_and_value):
    *path, value = path_and_value

    def fn(m: dict) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return fn


def del_key(*path):
    def fn(m: dict) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return fn


def file_path(index: int, value: str):
    def fn(m: dict) -> None:
        m["files"][index]["path"] = value
    return fn


def corpus() -> list[Case]:
    """Every case, in a stable order (names are test ids)."""
    cases: list[Case] = []
    add = cases.append
    # Clean sessions of several shapes: they must process.
    for i, kw in enumerate([dict(width=160, height=90, duration_s=2.5, seed=41),
                            dict(width=256, height=144, duration_s=3.0, seed=42),
                            dict(width=256, height=144, duration_s=6.0, seed=43),
                            dict(width=320, height=180, duration_s=2.5, seed=44, diffusion=True),
                            dict(width=160, height=90, duration_s=4.0, seed=45, fps=24.0),
                            dict(width=160, height=120, duration_s=2.5, seed=46)]):
        add(Case(f"clean_{i}", clean_synth(**kw), bad=False, clean=True))
    # Every generator knob, at its usual value and at a second one, on two sizes.
    second = {"truncate_video_fraction": 0.9, "truncate_video_bytes": 7, "drop_frames": 40, "duplicate_frames": 30,
              "clock_skew_ms": 2500.0, "clock_drift": -0.3, "blur_frames": 30, "black_frames": 20,
              "overexposed_frames": 20, "flicker_frames": 20, "frozen_frames": 20, "no_barcode": True,
              "nan_controls": 40, "out_of_range_controls": 40, "bad_command": 40, "non_monotonic_timestamps": 20,
              "repeated_frame_ids": 20, "garbage_lines": 40, "unlogged_frame_ids": 30, "frame_count_off": -3,
              "wrong_hash": "frames.jsonl", "wrong_size": "video.webm", "missing_file": "video.webm",
              "unlisted_file": "extra.bin", "wrong_resolution": True, "wrong_codec": True, "garbage_video": True}
    # Knobs that leave the session valid but spoil pictures: no problem, but counted drops.
    drops = {"blur_frames": "blurred", "black_frames": "black", "overexposed_frames": "overexposed",
             "flicker_frames": "flicker"}
    for knob, k in sorted(CORRUPTIONS.items()):
        cleaner_only = k.expected_code is None
        add(Case(f"knob_{knob}", synth_knob(knob, k.on_value), bad=not cleaner_only, expect=k.expected_code,
                 dropped=drops.get(knob)))
        add(Case(f"knob_{knob}_2", synth_knob(knob, second[knob], width=256, height=144, duration_s=2.0, seed=32),
                 bad=not cleaner_only, expect=k.expected_code, dropped=drops.get(knob)))
    # Files missing, empty, replaced by junk, cut, rotting; raw (hash check) and re-signed (deep).
    junk = {"zeros": b"\0" * 4096, "text": b"hello\n", "json": b'{"a": 1}\n', "binary": os.urandom(0) + bytes(range(256)) * 8,
            "utf16": "\ufeff{}".encode("utf-16")}
    for name in ("video.webm", "frames.jsonl", "events.jsonl", "latency.jsonl", "manifest.json"):
        stem = name.split(".")[0]
        add(Case(f"missing_{stem}", edit(remove(name))))
        add(Case(f"empty_{stem}", edit(replace_bytes(name, b""))))
        # An empty events or latency log is valid (nothing pressed, no probe); the others are not.
        add(Case(f"empty_{stem}_signed", edit(replace_bytes(name, b""), sign=name != "manifest.json"),
                 bad=None if name in ("events.jsonl", "latency.jsonl") else True))
        for jn, data in junk.items():
            add(Case(f"junk_{jn}_{stem}", edit(replace_bytes(name, data))))
            if name != "manifest.json":
                add(Case(f"junk_{jn}_{stem}_signed", edit(replace_bytes(name, data), sign=True)))
    for frac in (0.01, 0.05, 0.2, 0.5, 0.8, 0.97, 0.999):
        add(Case(f"truncate_video_{frac}", edit(truncate("video.webm", frac))))
        add(Case(f"truncate_video_{frac}_signed", edit(truncate("video.webm", frac), sign=True), expect="video_truncated"
                 if frac < 0.999 else None))
    for keep in (1, 4, 40, 200, 1000):
        add(Case(f"video_first_{keep}_bytes_signed", edit(truncate("video.webm", keep_bytes=keep), sign=True)))
    for k, (start, count) in enumerate([(0.3, 64), (0.5, 2000), (0.7, 16), (0.9, 5000), (0.02, 8), (0.1, 400)]):
        add(Case(f"rot_video_{k}", edit(flip_bytes("video.webm", start, count, k))))
        # Re-signed rot decodes to damaged pictures or fails packets: it must not crash; it may pass.
        add(Case(f"rot_video_{k}_signed", edit(flip_bytes("video.webm", start, count, k), sign=True), bad=None))
    for frac in (0.3, 0.7, 0.99):
        add(Case(f"truncate_frames_{frac}_signed", edit(truncate("frames.jsonl", frac), sign=True)))
        add(Case(f"truncate_events_{frac}_signed", edit(truncate("events.jsonl", frac), sign=True)))
    # frames.jsonl lines: junk, NaN tokens, wrong types, order, size; all re-signed so they are parsed.
    line_cases = {
        "garbage_first": set_line(0, b"\x00\xff garbage"),
        "garbage_middle": set_line(30, b"[1, 2, 3]"),
        "blank_line": set_line(20, b""),
        "crlf": lambda ls: [x + b"\r" for x in ls],
        "bom": lambda ls: [b"\xef\xbb\xbf" + ls[0]] + ls[1:],
        "huge_line": set_line(25, b'{"frame_id": 25, "pad": "' + b"x" * 70_000 + b'"}'),
        "deep_nesting": set_line(26, b"[" * 5000 + b"]" * 5000),
        "nan_token": frame_field(10, ("controls", "throttle"), "NaN"),
        "inf_token": frame_field(11, ("speed_mps",), "Infinity"),
        "huge_number": frame_field(12, ("vehicle", "x_m"), "1e999"),
        "null_steer": frame_field(13, ("controls", "steer"), "null"),
        "string_brake": frame_field(14, ("controls", "brake"), '"0.5"'),
        "float_frame_id": frame_field(15, ("frame_id",), "15.0"),
        "negative_frame_id": frame_field(16, ("frame_id",), "-16"),
        "huge_frame_id": frame_field(17, ("frame_id",), "99999999"),
        "command_zero": frame_field(18, ("command",), "0"),
        "command_void": frame_field(19, ("command",), "-1"),
        "command_string": frame_field(20, ("command",), '"LEFT"'),
        "speed_negative": frame_field(21, ("speed_mps",), "-3"),
        "yaw_out_of_range": frame_field(22, ("vehicle", "yaw_deg"), "720"),
        "unknown_field": frame_field(23, ("controls", "handbrake"), "1"),
        "reversed_lines": lambda ls: ls[::-1],
        "shuffled_pair": lambda ls: ls[:5] + [ls[6], ls[5]] + ls[7:],
        "duplicated_lines": lambda ls: ls[:10] + ls[5:10] + ls[10:],
        "only_first_line": lambda ls: ls[:1],
        "many_frames_dropped": lambda ls: ls[::3],
        "teleport": lambda ls: ls[:30] + [json.dumps({**json.loads(x), "vehicle": {**json.loads(x)["vehicle"],
                                                       "x_m": json.loads(x)["vehicle"]["x_m"] + 500}}).encode()
                                           for x in ls[30:33]] + ls[33:],
        "unicode_junk": set_line(40, "{\"frame_id\": \"\u202e\u0000\ud7ff\"}".encode("utf-8", "surrogatepass")),
    }
    valid_edits = {"crlf": {}, "command_void": {"dropped": "command_void"},
                   "teleport": {"segment_rejected": "pose_teleport"}}  # the format allows these
    for name, fn in line_cases.items():
        extra = valid_edits.get(name)
        add(Case(f"frames_{name}", edit(lines_edit("frames.jsonl", fn), sign=True),
                 bad=extra is None, **(extra or {})))
    add(Case("events_garbage", edit(lines_edit("events.jsonl", set_line(0, b"nope")), sign=True)))
    nan_event = b'{"t_ms":NaN,"device":"keyboard","kind":"keyup","code":"KeyW","value":0}'
    add(Case("events_nan", edit(lines_edit("events.jsonl", lambda ls: ls[:1] + [nan_event] + ls[1:]), sign=True)))
    add(Case("latency_garbage", edit(lines_edit("latency.jsonl", set_line(0, b"{]")), sign=True)))
    add(Case("latency_unknown_frame", edit(lines_edit("latency.jsonl", lambda ls: ls + [
        b'{"t_ms":99999,"kind":"frame_present","sent_ms":1,"received_ms":2,"frame_id":777777}']), sign=True)))
    # The manifest lies, or tries paths, unicode, sizes and types it must not.
    manifest_cases = {
        "huge": lambda d: _write_manifest(d, b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'),
        "huge_valid_json_array": lambda d: _write_manifest(d, b"[" + b"0," * 600_000 + b"0]"),
        "not_json": lambda d: _write_manifest(d, b"{schema_version: 1"),
        "not_object": lambda d: _write_manifest(d, b"[1, 2]"),
        "null": lambda d: _write_manifest(d, b"null"),
        "deep": lambda d: _write_manifest(d, b'{"a":' * 3000 + b"1" + b"}" * 3000),
        "nan": lambda d: _write_manifest(d, (d / "manifest.json").read_bytes().replace(b'"duration_s": ',
                                                                                         b'"duration_s": NaN, "x": ')),
        "latin1": lambda d: _write_manifest(d, (d / "manifest.json").read_text().replace("synth-player",
                                                                                          "pl\u00e4yer").encode("latin-1")),
    }
    for name, fn in manifest_cases.items():
        add(Case(f"manifest_{name}", edit(fn)))
    edits = {
        "schema_2": set_key("schema_version", "2"),
        "schema_int": set_key("schema_version", 1),
        "session_unicode": set_key("session_id", "s\u0435ssion"),
        "session_rtl": set_key("session_id", "abc\u202edcba"),
        "session_traversal": set_key("session_id", "../../etc"),
        "session_long": set_key("session_id", "s" * 129),
        "session_empty": set_key("session_id", ""),
        "player_slash": set_key("player_id", "a/b"),
        "path_traversal": file_path(0, "../video.webm"),
        "path_absolute": file_path(1, "/etc/passwd"),
        "path_backslash": file_path(2, "a\\b.jsonl"),
        "path_nul": file_path(3, "latency\u0000.jsonl"),
        "path_fullwidth": file_path(0, "\uff56ideo.webm"),
        "path_rtl": file_path(1, "frames\u202e.jsonl"),
        "path_dot": file_path(2, "./events.jsonl"),
        "path_manifest": file_path(3, "manifest.json"),
        "path_duplicate": file_path(3, "video.webm"),
        "path_empty": file_path(0, ""),
        "size_negative": lambda m: m["files"][0].__setitem__("size_bytes", -1),
        "size_huge": lambda m: m["files"][1].__setitem__("size_bytes", 10 ** 12),
        "size_string": lambda m: m["files"][1].__setitem__("size_bytes", "100"),
        "sha_upper": lambda m: m["files"][0].__setitem__("sha256", m["files"][0]["sha256"].upper()),
        "content_type_wrong": lambda m: m["files"][0].__setitem__("content_type", "video/mp4"),
        "files_empty": set_key("files", []),
        "files_many": lambda m: m["files"].extend({"path": f"x{i}.bin", "size_bytes": 0, "sha256": "0" * 64,
                                                   "content_type": "application/octet-stream"} for i in range(40)),
        "width_odd": set_key("recording", "width", 161),
        "width_huge": set_key("recording", "width", 100000),
        "fov_zero": set_key("camera", "intrinsics", "fov_deg", 0),
        "fov_mismatch": set_key("camera", "intrinsics", "fov_deg", 60),
        "cx_outside": set_key("camera", "intrinsics", "cx", 5000),
        "cell_px_huge": set_key("barcode", "cell_px", 64),
        "cell_px_small": set_key("barcode", "cell_px", 2),
        "frame_count_zero": set_key("frame_count", 0),
        "frame_count_float": set_key("frame_count", 75.0),
        "duration_negative": set_key("duration_s", -1),
        "duration_huge": set_key("duration_s", 1e9),
        "created_local_time": set_key("created_at", "2025-05-01T12:00:00+02:00"),
        "unknown_field": set_key("extra", {"a": 1}),
        "missing_camera": del_key("camera"),
        "missing_files": del_key("files"),
        "diffusion_incomplete": set_key("diffusion", {"enabled": True}),
        "city_empty": set_key("city", {"name": "x"}),
        "route_nan_length": set_key("route", "length_m", "NaN"),
    }
    for name, fn in edits.items():
        add(Case(f"manifest_{name}", edit(manifest_edit(fn))))
    # Files that are not plain files, and strays.
    add(Case("video_is_symlink", edit(lambda d: (d / "video.webm").rename(d / "v.bin") or
                                      (d / "video.webm").symlink_to(d / "v.bin"))))
    add(Case("video_is_directory", edit(lambda d: (d / "video.webm").unlink() or (d / "video.webm").mkdir())))
    add(Case("stray_nested_file", edit(lambda d: (d / "sub").mkdir() or (d / "sub" / "x.txt").write_text("x"))))
    add(Case("stray_unicode_name", edit(lambda d: (d / "\u202enotes.txt").write_text("x"))))
    add(Case("video_from_other_session", edit(lambda d, b=None: None, base="small")))  # placeholder, replaced below
    cases.pop()
    add(Case("video_swapped_resolution", _swap_video, bad=True))
    return cases


def _swap_video(work: Path, bases: dict[str, Path]) -> Path:
    """The video of a 256x144 session under a 160x90 manifest, re-signed: the size must be caught."""
    d = _copy(bases, work, "small")
    shutil.copy(bases["wide"] / "video.webm", d / "video.webm")
    resign(d)
    return d


def tree_digest(root: Path) -> str:
    """A digest of every name, link target and byte under ``root`` (the raw files must not change)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]):
            p = os.path.join(dirpath, name)
            h.update(os.path.relpath(p, root).encode("utf-8", "surrogateescape"))
            if os.path.islink(p):
                h.update(b"link:" + os.readlink(p).encode("utf-8", "surrogateescape"))
            else:
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()
