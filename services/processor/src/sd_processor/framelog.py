"""frames.jsonl (and the latency probes) as compact columns, keeping every defective line's frame id.

A session's log is small next to its video (about 0.5 KB a frame), but an hour at 240 fps is most of
a million lines, so lines become NumPy columns rather than objects. A line that fails the format
still names a frame when its ``frame_id`` can be read: that frame is then dropped with a reason
instead of silently pairing with nothing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sd_common.session_format.spec import (
    FRAMES_NAME,
    JSONL_LINE_MAX_BYTES,
    LATENCY_NAME,
    MAX_FRAME_ID,
    FrameRecord,
    LatencyProbe,
    problems_from_validation_error,
)

# Why a logged line cannot be used; each becomes a drop reason of the frame it names.
LINE_OK = ""
LINE_INVALID = "log_line_invalid"
LINE_CONTROLS_INVALID = "controls_invalid"
LINE_ID_REPEATED = "log_frame_id_repeated"
LINE_TIME_BACKWARDS = "log_time_not_monotonic"
LINE_NO_COMMAND = "command_void"

# Why the state a diffusion picture shows is unknown; each drops the frame on screen.
PICTURE_UNKNOWN = "picture_unknown"
PICTURE_UNUSABLE = "pictured_frame_unusable"
PICTURE_AHEAD = "pictured_frame_ahead"
PICTURE_AFTER_FALLBACK = "diffusion_picture_after_fallback"

_COLUMNS = ("t_render_ms", "t_capture_ms", "sim_t_ms", "x_m", "y_m", "yaw_deg", "cam_x_m", "cam_y_m",
            "cam_z_m", "cam_yaw_deg", "speed_mps", "steer", "throttle", "brake", "route_progress")


@dataclass
class FrameLog:
    """Columns of frames.jsonl in file order; ``status[i]`` is empty for a usable line, else a drop reason."""

    frame_id: np.ndarray  # int64, -1 where the line names no readable id
    command: np.ndarray  # int8 RoadOption value (0 for unusable lines)
    diffusion_frame_id: np.ndarray  # int64, -1 for null
    values: dict[str, np.ndarray]  # float64 columns named as _COLUMNS
    status: list[str]
    line_codes: Counter = field(default_factory=Counter)  # problem code -> lines
    line_examples: dict[str, str] = field(default_factory=dict)  # problem code -> first message
    handoff_ms: np.ndarray | None = None  # hand-off to the recorder: latency probe if any, else t_capture
    index_of: dict[int, int] = field(default_factory=dict)  # frame_id -> line index (usable or not)
    # line index -> the kinds of the infractions it logs (few lines log any, so only those are kept)
    infractions: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_id)

    def col(self, name: str) -> np.ndarray:
        """One float column."""
        return self.values[name]

    def usable(self, i: int) -> bool:
        """Whether line ``i`` can be paired and exported."""
        return not self.status[i]

    def pictured(self, i: int, diffusion: bool, plain_from: int | None = None) -> tuple[int | None, str]:
        """The line whose world state the picture on screen at line ``i`` shows, or a drop reason.

        Without the diffusion view the picture is the render of the frame itself. With it, the picture is
        the diffusion output of the rendered frame named by ``diffusion_frame_id``: unknown when that is
        null (nothing had come back yet, or the returned picture's barcode did not read), unusable when
        that frame's own line is missing or defective, and impossible when it names a later frame.
        ``plain_from``: the manifest's ``diffusion.plain_from_frame_id``, the first frame the game showed
        its plain render again after losing the stream; from it on the picture is the frame's own render,
        and a line that still names a diffusion picture contradicts the manifest.
        """
        if plain_from is not None and int(self.frame_id[i]) >= plain_from:
            if int(self.diffusion_frame_id[i]) >= 0:
                return None, PICTURE_AFTER_FALLBACK
            return i, LINE_OK
        if not diffusion:
            return i, LINE_OK
        shown = int(self.diffusion_frame_id[i])
        if shown < 0:
            return None, PICTURE_UNKNOWN
        if shown > int(self.frame_id[i]):
            return None, PICTURE_AHEAD
        k = self.index_of.get(shown)
        if k is None or not self.usable(k):
            return None, PICTURE_UNUSABLE
        return k, LINE_OK

    @property
    def usable_count(self) -> int:
        """Lines with no defect."""
        return sum(1 for s in self.status if not s)


def _salvage_id(line: bytes) -> int | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    fid = obj.get("frame_id") if isinstance(obj, dict) else None
    if isinstance(fid, int) and not isinstance(fid, bool) and 0 <= fid <= MAX_FRAME_ID:
        return fid
    return None


def _iter_lines(path: Path):
    """(1-based number, bytes) of each line; an over-long line is yielded truncated (it fails to parse)."""
    with open(path, "rb") as f:
        number = 0
        while True:
            line = f.readline(JSONL_LINE_MAX_BYTES + 1)
            if not line:
                return
            number += 1
            if len(line) > JSONL_LINE_MAX_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):
                    line = f.readline(1 << 20)
                yield number, None
                continue
            if line.strip():
                yield number, line


def read_frame_log(path: Path) -> FrameLog:
    """Parses frames.jsonl leniently: every line becomes a row, defective ones carry a drop reason."""
    ids: list[int] = []
    commands: list[int] = []
    diffusion: list[int] = []
    rows: list[tuple[float, ...]] = []
    status: list[str] = []
    infractions: dict[int, tuple[str, ...]] = {}
    codes: Counter = Counter()
    examples: dict[str, str] = {}
    nan_row = (math.nan,) * len(_COLUMNS)

    def note(code: str, message: str) -> None:
        codes[code] += 1
        examples.setdefault(code, message)

    for number, line in _iter_lines(path):
        if line is None:
            note("frame_line_too_long", f"{FRAMES_NAME} line {number} is longer than {JSONL_LINE_MAX_BYTES} bytes")
            continue
        try:
            r = FrameRecord.model_validate_json(line)
        except ValidationError as exc:
            problems = problems_from_validation_error(exc, file=FRAMES_NAME, prefix="frame", line=number, limit=5)
            for p in problems:
                code = p.code.replace("frame_not_json", "frame_line_not_json").replace(
                    "frame_not_object", "frame_line_not_object")
                note(code, p.message)
            fid = _salvage_id(line)
            if fid is None:
                continue  # names no frame: only the problem is recorded
            locs = [e["loc"] for e in exc.errors(include_url=False)]
            reason = LINE_CONTROLS_INVALID if locs and all(loc and loc[0] == "controls" for loc in locs) \
                else LINE_INVALID
            ids.append(fid)
            commands.append(0)
            diffusion.append(-1)
            rows.append(nan_row)
            status.append(reason)
            continue
        v, c, ctl = r.vehicle, r.camera, r.controls
        if r.infractions:
            infractions[len(ids)] = tuple(x.kind for x in r.infractions)
        ids.append(r.frame_id)
        commands.append(int(r.command))
        diffusion.append(-1 if r.diffusion_frame_id is None else r.diffusion_frame_id)
        rows.append((r.t_render_ms, r.t_capture_ms, r.sim_t_ms, v.x_m, v.y_m, v.yaw_deg, c.x_m, c.y_m, c.z_m,
                     c.yaw_deg, r.speed_mps, ctl.steer, ctl.throttle, ctl.brake, r.route.progress))
        status.append(LINE_NO_COMMAND if int(r.command) < 1 else LINE_OK)

    n = len(ids)
    table = np.array(rows, dtype=np.float64).reshape(n, len(_COLUMNS))
    log = FrameLog(
        frame_id=np.array(ids, dtype=np.int64),
        command=np.array(commands, dtype=np.int8),
        diffusion_frame_id=np.array(diffusion, dtype=np.int64),
        values={name: table[:, k].copy() for k, name in enumerate(_COLUMNS)},
        status=status,
        line_codes=codes,
        line_examples=examples,
        infractions=infractions,
    )
    _mark_order_defects(log, note)
    log.handoff_ms = log.col("t_capture_ms").copy()
    return log


def _mark_order_defects(log: FrameLog, note) -> None:
    """Repeated ids and times going backwards make both lines involved unusable (which one is wrong is unknown)."""
    first_line: dict[int, int] = {}
    for i, fid in enumerate(log.frame_id.tolist()):
        if fid in first_line:
            for k in (first_line[fid], i):
                log.status[k] = LINE_ID_REPEATED
            note("frame_id_not_increasing", f"{FRAMES_NAME}: frame_id {fid} appears on more than one line")
        else:
            first_line[fid] = i
    log.index_of = first_line
    t_render, t_capture, sim_t = log.col("t_render_ms"), log.col("t_capture_ms"), log.col("sim_t_ms")

    def flag(k: int) -> None:
        if log.status[k] in (LINE_OK, LINE_NO_COMMAND):
            log.status[k] = LINE_TIME_BACKWARDS

    prev = None
    for i in range(len(log)):
        if log.status[i] in (LINE_INVALID, LINE_CONTROLS_INVALID):
            continue  # its values are unknown
        if t_capture[i] < t_render[i]:
            flag(i)
            note("frame_time_not_monotonic", f"{FRAMES_NAME}: frame_id {log.frame_id[i]} is captured before "
                 "it is rendered")
        if prev is not None:
            if log.frame_id[i] < log.frame_id[prev]:
                flag(i)
                flag(prev)
                note("frame_id_not_increasing", f"{FRAMES_NAME}: frame_id {log.frame_id[i]} follows "
                     f"{log.frame_id[prev]}; ids strictly increase")
            elif t_render[i] < t_render[prev] or t_capture[i] < t_capture[prev] or sim_t[i] < sim_t[prev]:
                flag(i)
                flag(prev)
                note("frame_time_not_monotonic", f"{FRAMES_NAME}: the times of frame_id {log.frame_id[i]} are "
                     f"before those of frame_id {log.frame_id[prev]}")
        prev = i


def apply_latency_probes(log: FrameLog, path: Path) -> int:
    """Uses ``frame_present`` probes as the hand-off instants of the frames they name; returns how many."""
    used = 0
    if not path.is_file():
        return 0
    for _, line in _iter_lines(path):
        if line is None:
            continue
        try:
            probe = LatencyProbe.model_validate_json(line)
        except ValidationError:
            continue  # recorded by the validator; a bad probe only loses its own hint
        if probe.kind != "frame_present" or probe.frame_id is None:
            continue
        i = log.index_of.get(probe.frame_id)
        if i is not None and log.usable(i) and probe.received_ms >= probe.sent_ms:
            log.handoff_ms[i] = probe.received_ms
            used += 1
    return used


__all__ = ["LATENCY_NAME", "FrameLog", "apply_latency_probes", "read_frame_log"]
