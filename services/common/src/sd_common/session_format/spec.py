"""Raw session format v1: file names, limits, and the typed records of every file.

docs/session-format.md is the prose form of this module; when they disagree, fix both.
Every parse error becomes a :class:`~sd_common.problems.Problem` with a stable code and a path
such as ``manifest.json:files[2].sha256`` or ``frames.jsonl:37``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from sd_common.problems import Problem, ProblemError

SCHEMA_VERSION = "1"

MANIFEST_NAME = "manifest.json"
VIDEO_NAME = "video.webm"
FRAMES_NAME = "frames.jsonl"
EVENTS_NAME = "events.jsonl"
LATENCY_NAME = "latency.jsonl"

# Files every v1 session lists, with the media type (before any ";" parameters) each must declare.
REQUIRED_FILES: dict[str, str] = {
    VIDEO_NAME: "video/webm",
    FRAMES_NAME: "application/x-ndjson",
    EVENTS_NAME: "application/x-ndjson",
    LATENCY_NAME: "application/x-ndjson",
}

MIB = 1024 * 1024
MANIFEST_MAX_BYTES = 1 * MIB
VIDEO_MAX_BYTES = 2 * 1024 * MIB
JSONL_MAX_BYTES = 64 * MIB
OTHER_FILE_MAX_BYTES = 64 * MIB
JSONL_LINE_MAX_BYTES = 64 * 1024
MAX_LISTED_FILES = 32
MAX_DURATION_S = 3600.0
MAX_INFRACTIONS_PER_FRAME = 16
MAX_PAIRING_MS = 60_000.0  # diffusion.pairing_latency_ms and pairing_error_ms

BARCODE_DATA_BITS = 20
BARCODE_MARKER = (1, 0)
BARCODE_CELLS = len(BARCODE_MARKER) + BARCODE_DATA_BITS + 1  # markers, data, parity
BARCODE_THRESHOLD = 127
MAX_FRAME_ID = (1 << BARCODE_DATA_BITS) - 1


def file_sha256(path: Path) -> str:
    """Lowercase hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_size_limit(path: str) -> int:
    """The largest size v1 accepts for a listed file."""
    if path == VIDEO_NAME:
        return VIDEO_MAX_BYTES
    if path.endswith(".jsonl"):
        return JSONL_MAX_BYTES
    return OTHER_FILE_MAX_BYTES


class RoadOption(IntEnum):
    """Navigation command, numbered exactly as CARLA's agents.navigation.local_planner.RoadOption."""

    VOID = -1
    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


INFRACTION_KINDS = (
    "collision_vehicle",
    "collision_pedestrian",
    "collision_static",
    "red_light",
    "stop_sign",
    "off_road",
    "wrong_way",
)
InfractionKind = Literal[
    "collision_vehicle",
    "collision_pedestrian",
    "collision_static",
    "red_light",
    "stop_sign",
    "off_road",
    "wrong_way",
]


# --- value types with messages a client author can act on -------------------------------------------


def _show(value: Any) -> str:
    """A short, safe rendering of an offending value for a message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return ascii(text)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Any:
    """A finite JSON number, optionally bounded; NaN and out-of-range values get precise messages."""
    if lo is not None and hi is not None:
        expected = f"a number in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
    elif lo is not None:
        expected = f"a number {'>' if lo_open else '>='} {_fmt(lo)}"
    elif hi is not None:
        expected = f"a number <= {_fmt(hi)}"
    else:
        expected = "a finite number"

    def check(v: float) -> float:
        if not math.isfinite(v):
            raise PydanticCustomError("not_finite", "is {value}; expected {expected}",
                                      {"value": _show(v), "expected": expected})
        below = lo is not None and (v <= lo if lo_open else v < lo)
        if below or (hi is not None and v > hi):
            raise PydanticCustomError("out_of_range", "is {value}; expected {expected}",
                                      {"value": _show(v), "expected": expected})
        return v

    return Annotated[float, Field(allow_inf_nan=True), AfterValidator(check)]


def _pattern(regex: str, expected: str, *, max_length: int = 256) -> Any:
    compiled = re.compile(regex)

    def check(v: str) -> str:
        if len(v) > max_length or not compiled.fullmatch(v):
            raise PydanticCustomError("value_invalid", "is {value}; expected {expected}",
                                      {"value": _show(v), "expected": expected})
        return v

    return Annotated[str, AfterValidator(check)]


Identifier = _pattern(r"[A-Za-z0-9][A-Za-z0-9._-]*",
                      "1-128 characters of letters, digits, '.', '_' or '-', not starting with '.', "
                      "'_' or '-'", max_length=128)
Sha256Hex = _pattern(r"[0-9a-f]{64}", "64 lowercase hexadecimal digits")
ContentType = _pattern(r"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*(;.*)?", "a media type such as video/webm",
                       max_length=128)
ShortText = Annotated[str, Field(max_length=256)]
SnakeName = _pattern(r"[a-z][a-z0-9_]*", "a snake_case name such as diffusion_rtt", max_length=64)

_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)")


def _rfc3339_utc(v: Any) -> Any:
    if not isinstance(v, str) or not _RFC3339_UTC.fullmatch(v):
        raise PydanticCustomError("value_invalid", "is {value}; expected an RFC 3339 UTC timestamp "
                                  "such as 2025-05-01T12:00:00.000Z", {"value": _show(v)})
    return v


def _as_utc(v: datetime) -> datetime:
    return v.astimezone(UTC)


# The string is checked first; the datetime parser then runs in lax mode because it sees a Python str.
UtcTimestamp = Annotated[datetime, Field(strict=False), BeforeValidator(_rfc3339_utc), AfterValidator(_as_utc)]


# The one rule for a session file's name, used by the manifest (``files[i].path``) and by the
# gateway's upload checks: one plain name, no folders — also exactly one valid object-key segment.
FILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FILE_NAME_RULE = ("one plain name of at most 128 characters: letters, digits, '.', '_' and '-', starting with "
                  "a letter or digit, no '..'")


def file_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a file of a session, or None if it can."""
    if not name:
        return "is empty"
    if not name.isascii():
        return "has non-ASCII characters"
    if "\x00" in name:
        return "contains a NUL character"
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        return "contains a control character"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is absolute"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "has an empty, '.' or '..' segment"
    if "/" in name:
        return "has a folder part; session files are flat"
    if len(name) > 128:
        return "is longer than 128 characters"
    if ".." in name or not FILE_NAME_RE.fullmatch(name):
        return f"is not {FILE_NAME_RULE}"
    return None


def _safe_relative_path(v: str) -> str:
    reason = file_name_problem(v)
    if reason is None and v == MANIFEST_NAME:
        reason = "names the manifest itself, which is never listed"
    if reason:
        raise PydanticCustomError("file_path_invalid", "{value} {reason}; expected a plain "
                                  "name such as video.webm", {"value": _show(v), "reason": reason})
    return v


SafeRelativePath = Annotated[str, AfterValidator(_safe_relative_path)]

_ROAD_OPTIONS_TEXT = ", ".join(f"{o.value} ({o.name})" for o in RoadOption)


def _road_option(v: Any) -> Any:
    if isinstance(v, RoadOption):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return RoadOption(v)
        except ValueError:
            pass
    raise PydanticCustomError("value_invalid", "is {value}; expected a CARLA RoadOption: {options}",
                              {"value": _show(v), "options": _ROAD_OPTIONS_TEXT})


Command = Annotated[RoadOption, BeforeValidator(_road_option)]


_R = TypeVar("_R", bound=BaseModel)


class _Record(BaseModel):
    # strict: JSON types must be exact ("3" is not 3, 3.0 is not a frame id); extra fields are typos.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- manifest.json -----------------------------------------------------------------------------------


class Client(_Record):
    """The game build that recorded the session."""

    build: Annotated[str, Field(min_length=1, max_length=128)]
    user_agent: Annotated[str, Field(max_length=512)]


class City(_Record):
    """Which city was driven: a procedural seed, a named source asset, or both."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    source: ShortText | None = None


class Point(_Record):
    """A position in the city's local frame (x east, y north, z up), metres."""

    x_m: _number(-1e6, 1e6)
    y_m: _number(-1e6, 1e6)
    z_m: _number(-1e6, 1e6) = 0.0


class RoutePlan(_Record):
    """The planned route the commands come from."""

    route_id: Identifier
    start: Point
    goal: Point
    length_m: _number(0, 1e6, lo_open=True)


class Recording(_Record):
    """What the recorder was asked for; the video itself is the truth for what it delivered."""

    width: Annotated[int, Field(ge=16, le=7680, multiple_of=2)]
    height: Annotated[int, Field(ge=16, le=4320, multiple_of=2)]
    fps_target: _number(0, 240, lo_open=True) = 30.0
    codec: Literal["vp8"] = "vp8"
    container: Literal["webm"] = "webm"


class Intrinsics(_Record):
    """Pinhole intrinsics in pixels of the recorded video; fov_deg is horizontal."""

    fov_deg: _number(0, 180, lo_open=True)
    fx: _number(0, 1e6, lo_open=True)
    fy: _number(0, 1e6, lo_open=True)
    cx: _number(0, 7680)
    cy: _number(0, 4320)


class Mount(_Record):
    """Camera pose relative to the vehicle (x forward, y left, z up). Defaults: CARLA evaluator agent."""

    x_m: _number(-20, 20) = 1.3
    y_m: _number(-20, 20) = 0.0
    z_m: _number(-20, 20) = 2.3
    pitch_deg: _number(-90, 90) = 0.0
    yaw_deg: _number(-180, 180) = 0.0
    roll_deg: _number(-180, 180) = 0.0


class Camera(_Record):
    """The rendering camera."""

    intrinsics: Intrinsics
    mount: Mount = Mount()


class BarcodeSpec(_Record):
    """Geometry of the frame-index barcode drawn on every recorded frame (fixed in v1 but cell_px)."""

    cells: Literal[23] = BARCODE_CELLS
    cell_px: Annotated[int, Field(ge=2, le=64)]
    bits: Literal[20] = BARCODE_DATA_BITS
    marker: tuple[Literal[1], Literal[0]] = BARCODE_MARKER
    parity: Literal["even"] = "even"
    origin: Literal["bottom-left"] = "bottom-left"
    threshold: Literal[127] = BARCODE_THRESHOLD


class Diffusion(_Record):
    """Whether the player saw the diffusion view, and which model produced it."""

    enabled: bool
    backend: ShortText | None = None
    prompt: Annotated[str, Field(max_length=4096)] | None = None
    model: ShortText | None = None
    # The stream was lost mid-drive and the game showed (and recorded) its plain render from this frame
    # on; null when the diffusion view lasted the whole drive.
    plain_from_frame_id: Annotated[int, Field(ge=0, le=MAX_FRAME_ID)] | None = None
    # How frames' diffusion_frame_id were found (§3): null or "barcode", read from the barcode on each
    # picture; "latency", estimated, for a hosted model that does not keep the barcode, as the render sent
    # pairing_latency_ms before the picture, within pairing_error_ms.
    pairing: Literal["barcode", "latency"] | None = None
    pairing_error_ms: _number(0, MAX_PAIRING_MS) | None = None
    pairing_latency_ms: _number(0, MAX_PAIRING_MS) | None = None
    # Barcode reads the latency was measured from; 0: none read, the game's configured latency was used.
    pairing_samples: Annotated[int, Field(ge=0, le=MAX_FRAME_ID + 1)] | None = None


class FileEntry(_Record):
    """One uploaded file other than the manifest."""

    path: SafeRelativePath
    size_bytes: Annotated[int, Field(ge=0)]
    sha256: Sha256Hex
    content_type: ContentType


class Manifest(_Record):
    """manifest.json: who, where, how it was recorded, and the exact bytes of every other file."""

    schema_version: str
    session_id: Identifier
    player_id: Identifier
    created_at: UtcTimestamp
    client: Client
    city: City
    route: RoutePlan
    recording: Recording
    camera: Camera
    barcode: BarcodeSpec
    diffusion: Diffusion
    duration_s: _number(0, MAX_DURATION_S, lo_open=True)
    frame_count: Annotated[int, Field(ge=1, le=MAX_FRAME_ID + 1)]
    files: Annotated[list[FileEntry], Field(min_length=1, max_length=MAX_LISTED_FILES)]

    def file(self, path: str) -> FileEntry | None:
        """The entry listing ``path``, if any."""
        return next((f for f in self.files if f.path == path), None)


# --- frames.jsonl, events.jsonl, latency.jsonl -------------------------------------------------------


class Pose(_Record):
    """A rigid pose in the city's local frame: x east, y north, z up (metres); angles in degrees."""

    x_m: _number(-1e6, 1e6)
    y_m: _number(-1e6, 1e6)
    z_m: _number(-1e6, 1e6)
    yaw_deg: _number(-180, 180)
    pitch_deg: _number(-90, 90)
    roll_deg: _number(-180, 180)


class Controls(_Record):
    """The player's own inputs at this frame."""

    steer: _number(-1, 1)
    throttle: _number(0, 1)
    brake: _number(0, 1)


class RouteState(_Record):
    """Progress along the planned route."""

    progress: _number(0, 1)
    distance_remaining_m: _number(0, 1e6)


class Infraction(BaseModel):
    """A rule broken at this frame; any further keys are kind-specific details."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    kind: InfractionKind


class FrameRecord(_Record):
    """One line of frames.jsonl: everything known about one rendered and recorded frame."""

    frame_id: Annotated[int, Field(ge=0, le=MAX_FRAME_ID)]
    t_render_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    t_capture_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    sim_t_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    vehicle: Pose
    camera: Pose
    speed_mps: _number(0, 150)
    controls: Controls
    command: Command
    route: RouteState
    infractions: Annotated[list[Infraction], Field(max_length=MAX_INFRACTIONS_PER_FRAME)]
    diffusion_frame_id: Annotated[int, Field(ge=0)] | None


class InputEvent(_Record):
    """One line of events.jsonl: a raw keyboard or gamepad event."""

    t_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    device: Literal["keyboard", "gamepad"]
    kind: Literal["keydown", "keyup", "axis", "button"]
    code: Annotated[str, Field(min_length=1, max_length=64)]
    value: _number(-1, 1)
    # The simulation time the event took effect at: the game's step starting then was the first to see
    # it. Optional (older clients do not write it); without it a replay cannot know the step.
    sim_t_ms: _number(0, MAX_DURATION_S * 1000 * 2) | None = None


class LatencyProbe(_Record):
    """One line of latency.jsonl: a timed round trip or hand-off."""

    t_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    kind: SnakeName
    sent_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    received_ms: _number(0, MAX_DURATION_S * 1000 * 2)
    frame_id: Annotated[int, Field(ge=0, le=MAX_FRAME_ID)] | None = None


# --- pydantic errors -> Problems ---------------------------------------------------------------------

_GENERIC_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "none_required": "null",
}


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _detail(err: Any) -> tuple[str, str]:
    """(code suffix, message detail) for one pydantic error."""
    etype = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if etype == "missing":
        return "field_missing", "is missing"
    if etype == "extra_forbidden":
        return "field_unknown", "is not a field of format v1 (check the spelling)"
    if etype == "not_finite":
        return "value_not_finite", err["msg"]
    if etype == "out_of_range":
        return "value_out_of_range", err["msg"]
    if etype in ("value_invalid", "file_path_invalid"):
        return etype, err["msg"]
    if etype in _GENERIC_EXPECTED:
        return "value_invalid", f"is {_show(value)}; expected {_GENERIC_EXPECTED[etype]}"
    if etype in ("literal_error", "enum"):
        return "value_invalid", f"is {_show(value)}; expected {ctx.get('expected', 'a listed value')}"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if etype in bounds:
        bound = next(iter(ctx.values()), "?")
        return "value_out_of_range", f"is {_show(value)}; expected {bounds[etype]} {bound}"
    if etype == "multiple_of":
        return "value_invalid", f"is {_show(value)}; expected a multiple of {ctx.get('multiple_of')}"
    if etype in ("string_too_long", "too_long"):
        unit = "characters" if etype == "string_too_long" else "items"
        return "value_invalid", f"is too long; expected at most {ctx.get('max_length')} {unit}"
    if etype in ("string_too_short", "too_short"):
        unit = "characters" if etype == "string_too_short" else "items"
        return "value_invalid", f"is too short; expected at least {ctx.get('min_length')} {unit}"
    return "value_invalid", f"is {_show(value)}; {err['msg']}"


def problems_from_validation_error(
    exc: ValidationError, *, file: str, prefix: str, line: int | None = None, limit: int = 50
) -> list[Problem]:
    """Translates a pydantic error into Problems coded ``<prefix>_<what>`` with file:field or file:line paths."""
    problems: list[Problem] = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = tuple(err["loc"])
        where = f"{file} line {line}" if line is not None else file
        if err["type"] == "json_invalid":
            problems.append(Problem(f"{prefix}_not_json", f"{file}:{line}" if line else file,
                                    f"{where} is not valid UTF-8 JSON ({err.get('ctx', {}).get('error', '')})"))
            continue
        if not loc and err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            problems.append(Problem(f"{prefix}_not_object", f"{file}:{line}" if line else file,
                                    f"{where} is {_show(err.get('input'))}; expected a JSON object"))
            continue
        field = _loc_text(loc)
        suffix, detail = _detail(err)
        path = f"{file}:{line}" if line is not None else (f"{file}:{field}" if field else file)
        problems.append(Problem(f"{prefix}_{suffix}", path, f"{where}: {field or 'value'} {detail}"))
    return problems


# --- manifest parsing --------------------------------------------------------------------------------


def parse_manifest(data: bytes) -> Manifest:
    """Parses and checks manifest.json bytes; raises ProblemError listing every problem found."""
    where = MANIFEST_NAME
    if len(data) > MANIFEST_MAX_BYTES:
        raise ProblemError([Problem("manifest_too_large", where,
                                    f"{where} is {len(data)} bytes; the limit is {MANIFEST_MAX_BYTES} bytes")])
    if not data.strip():
        raise ProblemError([Problem("manifest_not_json", where, f"{where} is empty; expected a JSON object")])
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        problems = problems_from_validation_error(exc, file=where, prefix="manifest")
        version = _peek_schema_version(data)
        if isinstance(version, str) and version != SCHEMA_VERSION:
            # Another version's fields would only produce noise: say the one thing that matters.
            problems = [_unsupported_version(version)]
        raise ProblemError(problems) from None
    problems = manifest_cross_checks(manifest)
    if problems:
        raise ProblemError(problems)
    return manifest


def _peek_schema_version(data: bytes) -> Any:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return obj.get("schema_version") if isinstance(obj, dict) else None


def _unsupported_version(version: Any) -> Problem:
    return Problem("manifest_schema_version_unsupported", f"{MANIFEST_NAME}:schema_version",
                   f"{MANIFEST_NAME}: schema_version is {_show(version)}; this validator reads version "
                   f"\"{SCHEMA_VERSION}\" only")


def manifest_cross_checks(m: Manifest) -> list[Problem]:
    """Rules that relate several manifest fields to each other."""
    w = MANIFEST_NAME
    problems: list[Problem] = []
    if m.schema_version != SCHEMA_VERSION:
        return [_unsupported_version(m.schema_version)]
    seen: dict[str, int] = {}
    for i, f in enumerate(m.files):
        if f.path in seen:
            problems.append(Problem("manifest_file_path_duplicate", f"{w}:files[{i}].path",
                                    f"{w}: files[{i}].path {_show(f.path)} is already listed at "
                                    f"files[{seen[f.path]}]; list each file once"))
        else:
            seen[f.path] = i
        limit = file_size_limit(f.path)
        if f.size_bytes > limit:
            problems.append(Problem("manifest_file_too_large", f"{w}:files[{i}].size_bytes",
                                    f"{w}: files[{i}].size_bytes is {f.size_bytes}; the limit for "
                                    f"{f.path} is {limit} bytes"))
        expected_type = REQUIRED_FILES.get(f.path)
        declared = f.content_type.split(";", 1)[0].strip()
        if expected_type and declared != expected_type:
            problems.append(Problem("manifest_content_type_mismatch", f"{w}:files[{i}].content_type",
                                    f"{w}: files[{i}].content_type is {_show(f.content_type)}; "
                                    f"{f.path} must be {expected_type}"))
    for name in REQUIRED_FILES:
        if name not in seen:
            problems.append(Problem("manifest_file_not_listed", f"{w}:files",
                                    f"{w}: files does not list {name}; every v1 session uploads "
                                    f"{', '.join(REQUIRED_FILES)}"))
    rec, intr = m.recording, m.camera.intrinsics
    fx_expected = (rec.width / 2) / math.tan(math.radians(intr.fov_deg) / 2)
    if abs(intr.fx - fx_expected) > 0.01 * fx_expected:
        problems.append(Problem("manifest_camera_inconsistent", f"{w}:camera.intrinsics.fx",
                                f"{w}: camera.intrinsics.fx is {intr.fx:.3f} but fov_deg {intr.fov_deg} at "
                                f"width {rec.width} gives {fx_expected:.3f}; they must agree within 1%"))
    if intr.cx > rec.width or intr.cy > rec.height:
        problems.append(Problem("manifest_camera_inconsistent", f"{w}:camera.intrinsics",
                                f"{w}: principal point ({intr.cx}, {intr.cy}) lies outside the "
                                f"{rec.width}x{rec.height} image"))
    strip_px = m.barcode.cells * m.barcode.cell_px
    if strip_px > rec.width or m.barcode.cell_px > rec.height:
        problems.append(Problem("manifest_barcode_does_not_fit", f"{w}:barcode.cell_px",
                                f"{w}: a barcode of {m.barcode.cells} cells of {m.barcode.cell_px} px is "
                                f"{strip_px} px wide; the video is {rec.width}x{rec.height}"))
    if m.diffusion.enabled:
        for name in ("backend", "model"):
            if getattr(m.diffusion, name) is None:
                problems.append(Problem("manifest_field_missing", f"{w}:diffusion.{name}",
                                        f"{w}: diffusion.{name} is missing; it is required when "
                                        f"diffusion.enabled is true"))
    elif m.diffusion.plain_from_frame_id is not None:
        problems.append(Problem("manifest_value_invalid", f"{w}:diffusion.plain_from_frame_id",
                                f"{w}: diffusion.plain_from_frame_id is set but diffusion.enabled is false; "
                                f"only a drive that showed the diffusion view can fall back from it"))
    problems += _pairing_problems(m.diffusion)
    if m.city.seed is None and m.city.source is None:
        problems.append(Problem("manifest_field_missing", f"{w}:city",
                                f"{w}: city has neither seed nor source; give at least one"))
    return problems


def _pairing_problems(d: Diffusion) -> list[Problem]:
    """The diffusion.pairing* fields agree with each other and with diffusion.enabled."""
    w = MANIFEST_NAME
    named = [n for n in ("pairing", "pairing_error_ms", "pairing_latency_ms", "pairing_samples")
             if getattr(d, n) is not None]
    if not d.enabled:
        return [Problem("manifest_value_invalid", f"{w}:diffusion.{n}",
                        f"{w}: diffusion.{n} is set but diffusion.enabled is false; only pictures of the "
                        f"diffusion view are paired") for n in named]
    if d.pairing == "latency":
        return [Problem("manifest_field_missing", f"{w}:diffusion.{n}",
                        f"{w}: diffusion.{n} is missing; a latency pairing states the latency it used and "
                        f"its error") for n in ("pairing_latency_ms", "pairing_error_ms") if getattr(d, n) is None]
    if d.pairing_error_ms:
        return [Problem("manifest_value_invalid", f"{w}:diffusion.pairing_error_ms",
                        f"{w}: diffusion.pairing_error_ms is {_fmt(d.pairing_error_ms)} but the pairing is by "
                        f"barcode, which reads each id exactly; give 0, or pairing \"latency\"")]
    return []


def iter_records(path: Path, model: type[_R]) -> Iterator[_R]:
    """Typed records of a JSONL file, streamed; raises ProblemError at the first bad line."""
    name = Path(path).name
    prefix = {FrameRecord: "frame", InputEvent: "event", LatencyProbe: "latency"}.get(model, "record")
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as exc:
                raise ProblemError(problems_from_validation_error(exc, file=name, prefix=prefix,
                                                                  line=number)) from None
