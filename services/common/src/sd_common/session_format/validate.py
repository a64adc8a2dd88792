"""Checks a raw session directory against format v1 and says precisely what is wrong.

Everything is streamed: JSONL files line by line, the video picture by picture. Any input, however
broken, yields problems rather than an exception; a check that fails unexpectedly becomes a problem
coded ``<check>_unreadable`` (``video_undecodable`` for the video) and the other checks still run.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from sd_common.problems import Problem, ProblemError

from . import barcode
from .spec import (
    EVENTS_NAME,
    FRAMES_NAME,
    JSONL_LINE_MAX_BYTES,
    LATENCY_NAME,
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    REQUIRED_FILES,
    VIDEO_NAME,
    FrameRecord,
    InputEvent,
    LatencyProbe,
    Manifest,
    file_sha256,
    file_size_limit,
    parse_manifest,
    problems_from_validation_error,
)

# Tolerances. Below them a defect is a warning (the session is usable); above, a problem.
MAX_DROPPED_FRACTION = 0.02  # logged frames with no video frame
MAX_DUPLICATED_FRACTION = 0.02  # video frames repeating an earlier frame id
MAX_UNREADABLE_FRACTION = 0.01  # video frames whose barcode does not read
MAX_CLOCK_OFFSET_MS = 500.0  # |median(pts - t_capture_ms)|: the log clock starts with the recorder
MAX_CLOCK_DRIFT = 0.01  # |slope - 1| of pts against t_capture_ms ...
MAX_CLOCK_DRIFT_MS = 250.0  # ... and the drift it accumulates over the session
DURATION_SLACK_S = 1.0
MIN_PAIRS_FOR_CLOCK = 10
PROBLEMS_PER_CODE = 10  # individual reports per code before one summary
MAX_DIRECTORY_ENTRIES = 1000

_LINE_CODES = ("line_not_json", "line_not_object", "line_too_long", "field_missing", "field_unknown",
               "value_invalid", "value_not_finite", "value_out_of_range")
# Every code this module (and parse_manifest) can report; docs/session-format.md lists the same set.
PROBLEM_CODES = frozenset({
    "manifest_missing", "manifest_too_large", "manifest_not_json", "manifest_not_object",
    "manifest_field_missing", "manifest_field_unknown", "manifest_value_invalid", "manifest_value_not_finite",
    "manifest_value_out_of_range", "manifest_schema_version_unsupported", "manifest_file_path_invalid",
    "manifest_file_path_duplicate", "manifest_file_not_listed", "manifest_file_too_large",
    "manifest_content_type_mismatch", "manifest_camera_inconsistent", "manifest_barcode_does_not_fit",
    "manifest_unreadable",
    "session_not_found", "file_missing", "file_unlisted", "file_not_regular", "file_too_large",
    "file_size_mismatch", "file_sha256_mismatch", "file_unreadable",
    *(f"{prefix}_{code}" for prefix in ("frame", "event", "latency") for code in _LINE_CODES),
    "frame_id_not_increasing", "frame_time_not_monotonic", "frame_count_mismatch", "frames_empty",
    "event_time_not_monotonic", "latency_time_not_monotonic", "latency_frame_not_logged",
    "frames_unreadable", "events_unreadable", "latency_unreadable", "duration_mismatch", "duration_unreadable",
    "video_unreadable", "video_container_mismatch", "video_truncated", "video_no_stream", "video_codec_mismatch",
    "video_resolution_mismatch", "video_undecodable", "video_empty", "video_barcode_unreadable",
    "video_frames_dropped", "video_frames_duplicated", "video_frames_out_of_order", "video_frame_not_logged",
    "video_clock_offset", "video_clock_drift",
})


@dataclass
class ValidationStats:
    """What the validator counted on the way."""

    frames_logged: int = 0
    events_logged: int = 0
    latency_probes: int = 0
    frames_decoded: int = 0
    barcodes_read: int = 0
    barcodes_unreadable: int = 0
    # A canvas recording (captureStream(0)) starts with the canvas as it was when recording began:
    # a warm-up picture without a barcode, which does not count against MAX_UNREADABLE_FRACTION.
    first_frame_unreadable: bool = False
    frames_dropped: int = 0
    frames_duplicated: int = 0
    video_codec: str | None = None
    video_width: int | None = None
    video_height: int | None = None
    video_duration_s: float | None = None  # last pts minus first pts
    clock_offset_ms: float | None = None
    clock_drift: float | None = None
    duration_s: float | None = None  # as the manifest states it
    elapsed_s: float = 0.0


@dataclass
class ValidationReport:
    """The verdict on one session: problems make it invalid, warnings do not."""

    session_dir: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    stats: ValidationStats = field(default_factory=ValidationStats)

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def codes(self) -> set[str]:
        """The distinct problem codes (not warnings)."""
        return {p.code for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "session_dir": self.session_dir,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
            "stats": asdict(self.stats),
        }


class _Collector:
    """Keeps the first few problems of each code and counts the rest into one summary."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self._counts: Counter[str] = Counter()
        self._where: dict[str, str] = {}

    def add(self, problem: Problem, *, warning: bool = False) -> None:
        self._counts[problem.code] += 1
        self._where.setdefault(problem.code, problem.path.split(":", 1)[0])
        if self._counts[problem.code] <= PROBLEMS_PER_CODE:
            (self.warnings if warning else self.problems).append(problem)

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self.add(p)

    def finish(self) -> None:
        for code, count in self._counts.items():
            if count > PROBLEMS_PER_CODE:
                self.problems.append(Problem(code, self._where[code],
                                             f"{count - PROBLEMS_PER_CODE} more problems coded {code} "
                                             f"in {self._where[code]} are not listed"))


@dataclass
class _Context:
    root: Path
    out: _Collector
    stats: ValidationStats
    manifest: Manifest | None = None
    logged_ids: dict[int, float] = field(default_factory=dict)  # frame_id -> t_capture_ms
    last_capture_ms: float | None = None
    readable: set[str] = field(default_factory=set)  # files present, in limits, worth parsing
    lines: dict[str, int] = field(default_factory=dict)  # non-blank lines per JSONL file


def validate_session(path: Path, *, deep: bool = True, threads: int = 1) -> ValidationReport:
    """Checks one session directory; ``deep`` also decodes the whole video and reads every barcode."""
    started = time.perf_counter()
    root = Path(path)
    report = ValidationReport(session_dir=str(root))
    ctx = _Context(root=root, out=_Collector(), stats=report.stats)
    if not root.is_dir():
        ctx.out.add(Problem("session_not_found", str(root), f"{root} is not a directory"))
    else:
        _guarded(ctx, "manifest_unreadable", MANIFEST_NAME, _check_manifest)
        _guarded(ctx, "file_unreadable", "", _check_files)
        _guarded(ctx, "frames_unreadable", FRAMES_NAME, _check_frames)
        _guarded(ctx, "events_unreadable", EVENTS_NAME, _check_events)
        _guarded(ctx, "latency_unreadable", LATENCY_NAME, _check_latency)
        if deep:
            _guarded(ctx, "video_undecodable", VIDEO_NAME, lambda c: _check_video(c, threads))
        _guarded(ctx, "duration_unreadable", MANIFEST_NAME, lambda c: _check_duration(c, deep))
    ctx.out.finish()
    report.problems, report.warnings = ctx.out.problems, ctx.out.warnings
    report.stats.elapsed_s = round(time.perf_counter() - started, 3)
    return report


def _guarded(ctx: _Context, code: str, where: str, check: Callable[[_Context], None]) -> None:
    try:
        check(ctx)
    except Exception as exc:  # noqa: BLE001 - any input must end in a report, never a crash
        # OSError's text names server paths; its strerror does not.
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:300]
        ctx.out.add(Problem(code, where, f"{where or 'session'} could not be checked: "
                                         f"{type(exc).__name__}: {detail}"))


# --- manifest and files ------------------------------------------------------------------------------


def _check_manifest(ctx: _Context) -> None:
    p = ctx.root / MANIFEST_NAME
    if not p.is_file() or p.is_symlink():
        ctx.out.add(Problem("manifest_missing", MANIFEST_NAME,
                            f"{MANIFEST_NAME} is missing or not a regular file; every session has one"))
        return
    size = p.stat().st_size
    if size > MANIFEST_MAX_BYTES:  # never read an oversized manifest
        ctx.out.add(Problem("manifest_too_large", MANIFEST_NAME,
                            f"{MANIFEST_NAME} is {size} bytes; the limit is {MANIFEST_MAX_BYTES} bytes"))
        return
    try:
        ctx.manifest = parse_manifest(p.read_bytes())
    except ProblemError as exc:
        ctx.out.extend(exc.problems)
        return
    ctx.stats.duration_s = ctx.manifest.duration_s


def _walk(root: Path) -> Iterator[tuple[str, os.DirEntry]]:
    """(relative path, entry) of everything under root except directories, at most a bounded number."""
    stack, seen = [(root, "")], 0
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                seen += 1
                if seen > MAX_DIRECTORY_ENTRIES:
                    return
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), rel + "/"))
                else:
                    yield rel, entry



def _check_files(ctx: _Context) -> None:
    listed = {f.path: f for f in ctx.manifest.files} if ctx.manifest else {}
    present: dict[str, os.DirEntry] = {}
    for rel, entry in _walk(ctx.root):
        if rel == MANIFEST_NAME:
            continue
        if not entry.is_file(follow_symlinks=False):
            ctx.out.add(Problem("file_not_regular", rel, f"{rel} is a link or special file; upload plain files only"))
            continue
        present[rel] = entry
        if ctx.manifest and rel not in listed:
            ctx.out.add(Problem("file_unlisted", rel, f"{rel} is in the session but not in {MANIFEST_NAME} "
                                                      "files; list it with its size and sha256 or remove it"))
    names = listed or {name: None for name in REQUIRED_FILES}
    for i, name in enumerate(names):
        entry = present.get(name)
        where = f"{MANIFEST_NAME}:files[{i}]" if listed else name
        if entry is None:
            ctx.out.add(Problem("file_missing", name, f"{name} is {'listed in ' + MANIFEST_NAME if listed else 'required'} "
                                                      "but not in the session; upload it"))
            continue
        size = entry.stat(follow_symlinks=False).st_size
        limit = file_size_limit(name)
        if size > limit:
            ctx.out.add(Problem("file_too_large", name, f"{name} is {size} bytes; the limit is {limit} bytes"))
            continue
        ctx.readable.add(name)
        item = listed.get(name)
        if item is None:
            continue
        if size != item.size_bytes:
            ctx.out.add(Problem("file_size_mismatch", f"{where}.size_bytes",
                                f"{name} is {size} bytes but {MANIFEST_NAME} lists {item.size_bytes}; the upload "
                                "is incomplete or the manifest is stale"))
            continue
        digest = file_sha256(ctx.root / name)
        if digest != item.sha256:
            ctx.out.add(Problem("file_sha256_mismatch", f"{where}.sha256",
                                f"{name} has sha256 {digest} but {MANIFEST_NAME} lists {item.sha256}; the "
                                "file changed or was corrupted in transit"))


# --- JSONL files -------------------------------------------------------------------------------------


def _lines(path: Path, ctx: _Context, prefix: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes) of each line; blank and oversized lines become problems."""
    name = path.name
    with open(path, "rb") as f:
        number = 0
        while True:
            line = f.readline(JSONL_LINE_MAX_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > JSONL_LINE_MAX_BYTES and not line.endswith(b"\n"):
                ctx.out.add(Problem(f"{prefix}_line_too_long", f"{name}:{number}",
                                    f"{name} line {number} is longer than {JSONL_LINE_MAX_BYTES} bytes"))
                while line and not line.endswith(b"\n"):  # skip the rest of it
                    line = f.readline(1 << 20)
                continue
            if line.strip():
                ctx.lines[name] = ctx.lines.get(name, 0) + 1
            else:
                if line.endswith(b"\n") or number > 1:
                    ctx.out.add(Problem(f"{prefix}_line_not_json", f"{name}:{number}",
                                        f"{name} line {number} is blank; write one JSON object per line"))
                continue
            yield number, line


def _records(ctx: _Context, name: str, prefix: str, model: type[BaseModel],
             salvage: Callable[[bytes], None] | None = None) -> Iterator[tuple[int, Any]]:
    """Typed records of a JSONL file; a bad line becomes problems (and goes to ``salvage``, if given)."""
    for number, line in _lines(ctx.root / name, ctx, prefix):
        try:
            record = model.model_validate_json(line)
        except ValidationError as exc:
            ctx.out.extend(problems_from_validation_error(
                exc, file=name, prefix=f"{prefix}_line" if _is_syntax(exc) else prefix, line=number))
            if salvage:
                salvage(line)
            continue
        yield number, record


def _is_syntax(exc: ValidationError) -> bool:
    errors = exc.errors(include_url=False)
    return bool(errors) and not errors[0]["loc"] and errors[0]["type"] in (
        "json_invalid", "model_type", "model_attributes_type", "dict_type")


def _check_frames(ctx: _Context) -> None:
    if FRAMES_NAME not in ctx.readable:
        return
    prev: FrameRecord | None = None
    prev_line = 0
    count = 0

    def salvage(line: bytes) -> None:
        # A line with a bad field still names a frame: keep its id so the video pairing stays exact.
        try:
            obj = json.loads(line)
        except ValueError:
            return
        fid, t = (obj.get("frame_id"), obj.get("t_capture_ms")) if isinstance(obj, dict) else (None, None)
        if isinstance(fid, int) and not isinstance(fid, bool) and fid not in ctx.logged_ids:
            ctx.logged_ids[fid] = t if isinstance(t, (int, float)) and math.isfinite(t) else math.nan

    for number, rec in _records(ctx, FRAMES_NAME, "frame", FrameRecord, salvage):
        where = f"{FRAMES_NAME}:{number}"
        if rec.t_capture_ms < rec.t_render_ms:
            ctx.out.add(Problem("frame_time_not_monotonic", where,
                                f"{FRAMES_NAME} line {number}: t_capture_ms {rec.t_capture_ms} is before "
                                f"t_render_ms {rec.t_render_ms}; a frame is captured after it is rendered"))
        if prev is not None:
            if rec.frame_id <= prev.frame_id:
                ctx.out.add(Problem("frame_id_not_increasing", where,
                                    f"{FRAMES_NAME} line {number}: frame_id {rec.frame_id} does not exceed "
                                    f"{prev.frame_id} on line {prev_line}; frame ids strictly increase"))
            for name in ("t_render_ms", "t_capture_ms", "sim_t_ms"):
                now, before = getattr(rec, name), getattr(prev, name)
                if now < before:
                    ctx.out.add(Problem("frame_time_not_monotonic", where,
                                        f"{FRAMES_NAME} line {number}: {name} {now} is before {before} on line "
                                        f"{prev_line}; times never go backwards"))
        if rec.frame_id not in ctx.logged_ids:
            ctx.logged_ids[rec.frame_id] = rec.t_capture_ms
        prev, prev_line = rec, number
    count = ctx.stats.frames_logged = ctx.lines.get(FRAMES_NAME, 0)
    ctx.last_capture_ms = prev.t_capture_ms if prev else None
    if not ctx.logged_ids:
        ctx.out.add(Problem("frames_empty", FRAMES_NAME, f"{FRAMES_NAME} has no valid frame line"))
    if ctx.manifest and ctx.manifest.frame_count != count:
        ctx.out.add(Problem("frame_count_mismatch", f"{MANIFEST_NAME}:frame_count",
                            f"{MANIFEST_NAME} frame_count is {ctx.manifest.frame_count} but {FRAMES_NAME} has "
                            f"{count} lines"))


def _check_time_order(ctx: _Context, name: str, prefix: str, model: type[BaseModel],
                      extra: Callable[[int, Any], None] | None = None) -> int:
    prev_t, count = None, 0
    for number, rec in _records(ctx, name, prefix, model):
        count += 1
        if prev_t is not None and rec.t_ms < prev_t:
            ctx.out.add(Problem(f"{prefix}_time_not_monotonic", f"{name}:{number}",
                                f"{name} line {number}: t_ms {rec.t_ms} is before {prev_t} on the line "
                                "before; write lines in time order"))
        prev_t = rec.t_ms
        if extra:
            extra(number, rec)
    return count


def _check_events(ctx: _Context) -> None:
    if EVENTS_NAME not in ctx.readable:
        return
    latest = {"sim_t_ms": -math.inf}

    def sim_order(number: int, rec: InputEvent) -> None:
        if rec.sim_t_ms is None:
            return
        if rec.sim_t_ms < latest["sim_t_ms"]:
            ctx.out.add(Problem("event_time_not_monotonic", f"{EVENTS_NAME}:{number}",
                                f"{EVENTS_NAME} line {number}: sim_t_ms {rec.sim_t_ms} is before "
                                f"{latest['sim_t_ms']} on an earlier line; write lines in time order"))
        latest["sim_t_ms"] = max(latest["sim_t_ms"], rec.sim_t_ms)

    ctx.stats.events_logged = _check_time_order(ctx, EVENTS_NAME, "event", InputEvent, sim_order)


def _check_latency(ctx: _Context) -> None:
    if LATENCY_NAME not in ctx.readable:
        return

    def probe(number: int, rec: LatencyProbe) -> None:
        where = f"{LATENCY_NAME}:{number}"
        if rec.received_ms < rec.sent_ms:
            ctx.out.add(Problem("latency_value_out_of_range", where,
                                f"{LATENCY_NAME} line {number}: received_ms {rec.received_ms} is before sent_ms "
                                f"{rec.sent_ms}"))
        if rec.frame_id is not None and ctx.logged_ids and rec.frame_id not in ctx.logged_ids:
            ctx.out.add(Problem("latency_frame_not_logged", where,
                                f"{LATENCY_NAME} line {number}: frame_id {rec.frame_id} is not in {FRAMES_NAME}"))

    ctx.stats.latency_probes = _check_time_order(ctx, LATENCY_NAME, "latency", LatencyProbe, probe)


# --- video -------------------------------------------------------------------------------------------


def _check_video(ctx: _Context, threads: int) -> None:
    import av

    from .video import iter_frames, stream_codec, webm_structure

    if VIDEO_NAME not in ctx.readable:
        return
    path = ctx.root / VIDEO_NAME
    st = ctx.stats
    if path.stat().st_size == 0:
        ctx.out.add(Problem("video_unreadable", VIDEO_NAME, f"{VIDEO_NAME} is empty"))
        return
    structure = webm_structure(path)
    try:
        container = av.open(str(path), "r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__  # never echo server paths
        ctx.out.add(Problem("video_unreadable", VIDEO_NAME,
                            f"{VIDEO_NAME} cannot be opened as a video ({structure.detail}; {reason}); "
                            "record VP8 in WebM with MediaRecorder"))
        return
    with container:
        if structure.doc_type != "webm":
            ctx.out.add(Problem("video_container_mismatch", VIDEO_NAME,
                                f"{VIDEO_NAME} is not a WebM file (EBML DocType {structure.doc_type!r}; "
                                f"{structure.detail})"))
        if structure.truncated:
            ctx.out.add(Problem("video_truncated", VIDEO_NAME,
                                f"{VIDEO_NAME} is cut short: {structure.detail}; the upload or the recording "
                                "ended early"))
        if not container.streams.video:
            ctx.out.add(Problem("video_no_stream", VIDEO_NAME, f"{VIDEO_NAME} has no video stream"))
            return
        stream = container.streams.video[0]
        st.video_codec = stream_codec(stream.codec_context)
        st.video_width, st.video_height = stream.codec_context.width, stream.codec_context.height
        m = ctx.manifest
        if st.video_codec != "vp8":
            ctx.out.add(Problem("video_codec_mismatch", VIDEO_NAME,
                                f"{VIDEO_NAME} is coded {st.video_codec}; format v1 requires vp8"))
        expected = (m.recording.width, m.recording.height) if m else None
        cell_px = m.barcode.cell_px if m else barcode.default_cell_px(st.video_height or 0)
        errors: list[str] = []
        seen: set[int] = set()
        pairs_t, pairs_pts = [], []
        first_pts = last_pts = None
        last_id = -1
        size_reported = False
        for frame in iter_frames(container, threads=threads, errors=errors):
            st.frames_decoded += 1
            h, w = frame.luma.shape
            if expected and (w, h) != expected and not size_reported:
                size_reported = True
                ctx.out.add(Problem("video_resolution_mismatch", VIDEO_NAME,
                                    f"{VIDEO_NAME} frame {frame.index} is {w}x{h} but {MANIFEST_NAME} recording "
                                    f"says {expected[0]}x{expected[1]}"))
            if frame.pts_ms is not None:
                first_pts = frame.pts_ms if first_pts is None else first_pts
                last_pts = frame.pts_ms
            fid = barcode.read(frame.luma, cell_px)
            if fid is None:
                st.barcodes_unreadable += 1
                if frame.index == 0:
                    st.first_frame_unreadable = True
                continue
            st.barcodes_read += 1
            at = f"{VIDEO_NAME}:frame[{frame.index}]"
            if fid in seen:
                st.frames_duplicated += 1
                continue
            seen.add(fid)
            t_capture = ctx.logged_ids.get(fid)
            if t_capture is None and ctx.logged_ids:
                ctx.out.add(Problem("video_frame_not_logged", at,
                                    f"{VIDEO_NAME} frame {frame.index} (pts {frame.pts_ms} ms) shows frame_id "
                                    f"{fid}, which no {FRAMES_NAME} line has"))
                continue
            if fid < last_id:
                ctx.out.add(Problem("video_frames_out_of_order", at,
                                    f"{VIDEO_NAME} frame {frame.index} (pts {frame.pts_ms} ms) shows frame_id {fid} "
                                    f"after {last_id}; frames must be recorded in render order"))
            last_id = max(last_id, fid)
            if t_capture is not None and frame.pts_ms is not None and not math.isnan(t_capture):
                pairs_t.append(t_capture)
                pairs_pts.append(frame.pts_ms)
        if errors:
            ctx.out.add(Problem("video_undecodable", VIDEO_NAME,
                                f"{VIDEO_NAME} has {len(errors)} packets the VP8 decoder rejects (first: {errors[0]})"))
        if first_pts is not None and last_pts is not None:
            st.video_duration_s = round((last_pts - first_pts) / 1000.0, 3)
    _judge_pairing(ctx, seen, pairs_t, pairs_pts)


def _judge_pairing(ctx: _Context, seen: set[int], pairs_t: list[float], pairs_pts: list[int]) -> None:
    st = ctx.stats
    if st.frames_decoded == 0:
        ctx.out.add(Problem("video_empty", VIDEO_NAME, f"{VIDEO_NAME} has no decodable frame"))
        return
    if st.barcodes_unreadable:
        warm_up = int(st.first_frame_unreadable and st.barcodes_read > 0)
        counted = st.barcodes_unreadable - warm_up
        share = counted / max(1, st.frames_decoded - warm_up)
        detail = " (the first, the recorder's warm-up picture, is not counted)" if warm_up else ""
        ctx.out.add(Problem("video_barcode_unreadable", VIDEO_NAME,
                            f"{VIDEO_NAME} has {st.barcodes_unreadable} of {st.frames_decoded} frames whose barcode "
                            f"does not read{detail}; {share:.1%} counted; draw it after the render, in pure black "
                            "and white, and draw frame 0 before the recorder starts"),
                    warning=share <= MAX_UNREADABLE_FRACTION)
    if st.frames_duplicated:
        share = st.frames_duplicated / st.frames_decoded
        ctx.out.add(Problem("video_frames_duplicated", VIDEO_NAME,
                            f"{VIDEO_NAME} has {st.frames_duplicated} frames ({share:.1%}) repeating an earlier "
                            "frame_id; hand each rendered frame to the recorder once"),
                    warning=share <= MAX_DUPLICATED_FRACTION)
    if ctx.logged_ids:
        missing = [fid for fid in ctx.logged_ids if fid not in seen]
        st.frames_dropped = len(missing)
        if missing:
            share = len(missing) / len(ctx.logged_ids)
            ctx.out.add(Problem("video_frames_dropped", VIDEO_NAME,
                                f"{VIDEO_NAME} lacks {len(missing)} of {len(ctx.logged_ids)} logged frames "
                                f"({share:.1%}), the first being frame_id {missing[0]}"),
                        warning=share <= MAX_DROPPED_FRACTION)
    if len(pairs_t) >= MIN_PAIRS_FOR_CLOCK:
        t = np.asarray(pairs_t, dtype=np.float64)
        pts = np.asarray(pairs_pts, dtype=np.float64)
        offset = float(statistics.median(pts - t))
        span = float(t.max() - t.min())
        slope = float(np.polyfit(t, pts, 1)[0]) if span > 0 else 1.0
        st.clock_offset_ms, st.clock_drift = round(offset, 3), round(slope - 1.0, 6)
        if abs(offset) > MAX_CLOCK_OFFSET_MS:
            ctx.out.add(Problem("video_clock_offset", FRAMES_NAME,
                                f"video pts run {offset:+.0f} ms from {FRAMES_NAME} t_capture_ms (limit "
                                f"{MAX_CLOCK_OFFSET_MS:.0f} ms); log times must count from the recorder's start"))
        if abs(slope - 1.0) > MAX_CLOCK_DRIFT and abs(slope - 1.0) * span > MAX_CLOCK_DRIFT_MS:
            ctx.out.add(Problem("video_clock_drift", FRAMES_NAME,
                                f"video pts advance {slope:.4f} ms per logged ms, {abs(slope - 1) * span:.0f} ms "
                                f"apart over the session; log times must be wall-clock milliseconds"))


def _check_duration(ctx: _Context, deep: bool) -> None:
    m = ctx.manifest
    if m is None:
        return
    if deep and ctx.stats.video_duration_s is not None:
        end_s, source = ctx.stats.video_duration_s, f"{VIDEO_NAME} runs"
    elif ctx.last_capture_ms is not None:
        end_s, source = ctx.last_capture_ms / 1000.0, f"the last frame in {FRAMES_NAME} is captured at"
    else:
        return
    if end_s > m.duration_s + DURATION_SLACK_S or m.duration_s > 2 * end_s + 10.0:
        ctx.out.add(Problem("duration_mismatch", f"{MANIFEST_NAME}:duration_s",
                            f"{MANIFEST_NAME} duration_s is {m.duration_s} but {source} {end_s:.3f} s"))
