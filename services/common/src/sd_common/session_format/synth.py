"""Synthetic sessions: a car driving a procedural city, recorded exactly as the game records a player.

``synth_session(out_dir, config)`` writes ``out_dir/session/`` (the files a client uploads) and
``out_dir/truth.json`` beside it (what the generator knows and the uploader never sends): for every
encoded video frame the frame id it shows and its pts, and which corruptions were applied. The
corruption knobs make each kind of broken upload on purpose, for the validator and the cleaner.

The work is split into a plan (:func:`plan_session`), the drive (:func:`drive`), the video
(:func:`write_video`), the logs (:func:`write_logs`) and the manifest (:func:`build_manifest`, the
spec's model); each draws from its own named stream (:func:`stream`), so setting one knob changes
only what that knob touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import dynamics
from . import barcode
from .scene import BLOCK_PITCH_M, LANE_OFFSET_M, ROAD_HALF_WIDTH_M, City, Renderer, rotation
from .spec import (
    EVENTS_NAME,
    FRAMES_NAME,
    LATENCY_NAME,
    MANIFEST_NAME,
    MAX_FRAME_ID,
    REQUIRED_FILES,
    SCHEMA_VERSION,
    VIDEO_NAME,
    BarcodeSpec,
    Camera,
    Client,
    Diffusion,
    FileEntry,
    Intrinsics,
    Manifest,
    Mount,
    Point,
    Recording,
    RoadOption,
    RoutePlan,
    file_sha256,
)
from .spec import City as CityRef
from .video import VideoWriter

SESSION_DIR_NAME = "session"
TRUTH_NAME = "truth.json"

CRUISE_MPS = 9.0
TURN_MPS = 4.5


@dataclass(frozen=True)
class Knob:
    """A corruption: the value ``--corrupt NAME`` alone sets, and the problem code it must cause."""

    on_value: Any
    expected_code: str | None  # None: the session stays valid (e.g. blur is for the cleaner)
    help: str


CORRUPTIONS: dict[str, Knob] = {
    "truncate_video_fraction": Knob(0.3, "video_truncated", "cut this fraction of video.webm off its end"),
    "truncate_video_bytes": Knob(1000, "video_truncated", "cut this many bytes off the end of video.webm"),
    "drop_frames": Knob(10, "video_frames_dropped", "leave this many logged frames out of the video"),
    "duplicate_frames": Knob(10, "video_frames_duplicated", "encode this many frames twice"),
    "clock_skew_ms": Knob(1000.0, "video_clock_offset", "shift every page-clock time in the logs"),
    "clock_drift": Knob(0.2, "video_clock_drift", "scale every page-clock time by (1 + drift)"),
    "blur_frames": Knob(10, None, "blur this many rendered frames (before the barcode is drawn)"),
    "black_frames": Knob(3, None, "render this many frames black (before the barcode is drawn)"),
    "overexposed_frames": Knob(3, None, "render this many frames nearly white (before the barcode is drawn)"),
    "flicker_frames": Knob(3, None, "show this many frames as a colour negative for one frame (flicker)"),
    "frozen_frames": Knob(3, None, "repeat the previous picture on this many frames (new barcode, old image)"),
    "no_barcode": Knob(True, "video_barcode_unreadable", "draw no barcode, as a recorder without one would"),
    "nan_controls": Knob(3, "frame_value_not_finite", "write NaN as throttle on this many lines"),
    "out_of_range_controls": Knob(3, "frame_value_out_of_range", "write steer 1.7 on this many lines"),
    "bad_command": Knob(3, "frame_value_invalid", "write command 0 (not a RoadOption) on this many lines"),
    "non_monotonic_timestamps": Knob(2, "frame_time_not_monotonic",
                                     "swap the times of this many pairs of adjacent lines"),
    "repeated_frame_ids": Knob(2, "frame_id_not_increasing", "repeat the previous frame_id on this many lines"),
    "garbage_lines": Knob(2, "frame_line_not_json", "replace this many frames.jsonl lines with junk"),
    "unlogged_frame_ids": Knob(3, "video_frame_not_logged", "barcode this many video frames with ids no line has"),
    "frame_count_off": Knob(5, "frame_count_mismatch", "add this to the manifest's frame_count"),
    "wrong_hash": Knob(VIDEO_NAME, "file_sha256_mismatch", "list a wrong sha256 for this file"),
    "wrong_size": Knob(FRAMES_NAME, "file_size_mismatch", "list a wrong size_bytes for this file"),
    "missing_file": Knob(LATENCY_NAME, "file_missing", "list this file but do not write it"),
    "unlisted_file": Knob("notes.txt", "file_unlisted", "write this extra file without listing it"),
    "wrong_resolution": Knob(True, "video_resolution_mismatch", "manifest states twice the real size"),
    "wrong_codec": Knob(True, "video_codec_mismatch", "encode VP9 instead of VP8"),
    "garbage_video": Knob(True, "video_unreadable", "replace video.webm with random bytes"),
}


@dataclass
class SynthConfig:
    """What to generate; every corruption is off unless set (see CORRUPTIONS)."""

    width: int = 1280
    height: int = 720
    fps: float = 30.0
    duration_s: float = 3.0
    seed: int = 0
    bitrate: int | None = None  # bits/s; None scales 2.5 Mbps at 720p30 by pixel rate
    cell_px: int | None = None  # None: barcode.default_cell_px(height)
    fov_deg: float = 100.0
    diffusion: bool = False  # each picture shows the render of an earlier frame (pictured_frame)
    diffusion_every: int = 1  # with diffusion: a new picture every this many frames, repeated in between
    diffusion_lost_at: int | None = None  # with diffusion: the stream is lost here; the plain render from it on
    infractions: bool = False
    # The steady player's pace: scales the speeds it aims for and how hard it accelerates, so another
    # value drives the same city and route otherwise (never at the same speed but when standing still).
    pace: float = 1.0
    # corruptions
    truncate_video_fraction: float = 0.0
    truncate_video_bytes: int = 0
    drop_frames: int = 0
    duplicate_frames: int = 0
    clock_skew_ms: float = 0.0
    clock_drift: float = 0.0
    blur_frames: int = 0
    black_frames: int = 0
    overexposed_frames: int = 0
    flicker_frames: int = 0
    frozen_frames: int = 0
    no_barcode: bool = False
    nan_controls: int = 0
    out_of_range_controls: int = 0
    bad_command: int = 0
    non_monotonic_timestamps: int = 0
    repeated_frame_ids: int = 0
    garbage_lines: int = 0
    unlogged_frame_ids: int = 0
    frame_count_off: int = 0
    wrong_hash: str | None = None
    wrong_size: str | None = None
    missing_file: str | None = None
    unlisted_file: str | None = None
    wrong_resolution: bool = False
    wrong_codec: bool = False
    garbage_video: bool = False

    def corruptions(self) -> dict[str, Any]:
        """The corruption knobs that are on, with their values."""
        defaults = SynthConfig()
        return {k: getattr(self, k) for k in CORRUPTIONS if getattr(self, k) != getattr(defaults, k)}

    def with_corruption(self, name: str, value: Any = None) -> SynthConfig:
        """A copy with one knob set; ``value=None`` takes the knob's usual 'on' value."""
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
        return dataclasses.replace(self, **{name: CORRUPTIONS[name].on_value if value is None else value})


@dataclass
class SynthTruth:
    """What the generator knows about a session it wrote; never part of the upload."""

    session_dir: Path
    session_id: str
    frame_count: int  # lines in frames.jsonl
    video_frames: list[tuple[int, int]]  # (frame id shown by the barcode, pts_ms) per encoded frame
    dropped_frame_ids: list[int] = field(default_factory=list)
    duplicated_frame_ids: list[int] = field(default_factory=list)
    blurred_frame_ids: list[int] = field(default_factory=list)
    # frame ids whose picture was replaced on purpose, per knob (black_frames, flicker_frames, ...)
    picture_frame_ids: dict[str, list[int]] = field(default_factory=dict)
    corruptions: dict[str, Any] = field(default_factory=dict)
    expected_problem_codes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to truth.json."""
        d = dataclasses.asdict(self)
        d["session_dir"] = str(self.session_dir)
        d["video_frames"] = [{"frame_id": f, "pts_ms": p} for f, p in self.video_frames]
        return d

    @classmethod
    def load(cls, path: Path) -> SynthTruth:
        """Reads a truth.json written by :func:`synth_session`."""
        d = json.loads(Path(path).read_text())
        d["session_dir"] = Path(d["session_dir"])
        d["video_frames"] = [(v["frame_id"], v["pts_ms"]) for v in d["video_frames"]]
        return cls(**d)


# --- route and motion --------------------------------------------------------------------------------


@dataclass
class _Route:
    points: np.ndarray  # lane centre polyline, (N, 2)
    cum: np.ndarray  # arc length at each point
    crossings: list[tuple[float, RoadOption]]  # (arc length of the crossing, what the route does there)

    @property
    def length_m(self) -> float:
        return float(self.cum[-1])

    def point_at(self, s: float) -> np.ndarray:
        s = min(max(s, 0.0), self.length_m)
        k = int(np.searchsorted(self.cum, s, side="right") - 1)
        k = min(k, len(self.points) - 2)
        seg = self.cum[k + 1] - self.cum[k]
        t = 0.0 if seg == 0 else (s - self.cum[k]) / seg
        return self.points[k] + t * (self.points[k + 1] - self.points[k])

    def project(self, p: np.ndarray, hint: int) -> tuple[float, int]:
        best = (math.inf, 0.0, hint)
        for k in range(max(0, hint - 1), min(len(self.points) - 1, hint + 3)):
            a, b = self.points[k], self.points[k + 1]
            ab = b - a
            t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-9), 0.0, 1.0))
            d = float(np.sum((a + t * ab - p) ** 2))
            if d < best[0]:
                best = (d, float(self.cum[k] + t * np.linalg.norm(ab)), k)
        return best[1], best[2]


def _make_route(rng: np.random.Generator, min_length_m: float) -> _Route:
    """A random walk over the road grid, starting mid-block and turning at some crossings."""
    dirs = [np.array(d, float) for d in ((1, 0), (0, 1), (-1, 0), (0, -1))]  # E, N, W, S
    heading = int(rng.integers(4))
    node = np.zeros(2)
    right = lambda h: np.array([dirs[h][1], -dirs[h][0]])
    start = node - dirs[heading] * BLOCK_PITCH_M / 2
    points = [start + right(heading) * LANE_OFFSET_M]
    crossings: list[tuple[np.ndarray, RoadOption]] = []
    length = BLOCK_PITCH_M / 2
    while length < min_length_m:
        blocks = int(rng.integers(1, 4))
        for k in range(blocks - 1):  # straight through the crossings before the turn
            crossings.append((node + dirs[heading] * BLOCK_PITCH_M * k, RoadOption.STRAIGHT))
        node = node + dirs[heading] * BLOCK_PITCH_M * (blocks - 1)
        turn_left = bool(rng.random() < 0.5)
        new_heading = (heading + (1 if turn_left else -1)) % 4
        corner = node + right(heading) * LANE_OFFSET_M + right(new_heading) * LANE_OFFSET_M
        points.append(corner)
        crossings.append((node, RoadOption.LEFT if turn_left else RoadOption.RIGHT))
        length += BLOCK_PITCH_M * blocks
        heading = new_heading
        node = node + dirs[heading] * BLOCK_PITCH_M
    points.append(node - dirs[heading] * BLOCK_PITCH_M / 2 + right(heading) * LANE_OFFSET_M)
    pts = np.array(points)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    route = _Route(pts, cum, [])
    hint = 0
    for where, option in crossings:
        s, hint = route.project(where, hint)
        route.crossings.append((s, option))
    return route


def _controls(route: _Route, car: dynamics.VehicleState, s: float, rng: np.random.Generator,
              pace: float = 1.0) -> tuple[float, float, float]:
    """Pure pursuit for the wheel and a speed controller for the pedals, as a steady player drives."""
    p = dynamics.SEDAN
    lookahead = max(6.0, 0.8 * car.v)
    target = route.point_at(s + lookahead)
    dx, dy = target[0] - car.x, target[1] - car.y
    fwd = math.cos(car.yaw) * dx + math.sin(car.yaw) * dy
    left = -math.sin(car.yaw) * dx + math.cos(car.yaw) * dy
    alpha = math.atan2(left, fwd)
    delta_left = math.atan(2 * p.wheelbase_m * math.sin(alpha) / lookahead)
    # The game turns input -1 (left) into the largest wheel angle the speed allows (dynamics.steer_limit).
    steer = float(np.clip(-delta_left / dynamics.steer_limit(p, car.v) + rng.normal(0, 0.005), -1, 1))
    near_turn = any(-8.0 < c - s < 30.0 for c, o in route.crossings if o in (RoadOption.LEFT, RoadOption.RIGHT))
    v_target = (TURN_MPS if near_turn else CRUISE_MPS) * pace
    if s > route.length_m - 15:
        v_target = 0.0
    accel = float(np.clip(1.5 * (v_target - car.v), -6.0, 3.0 * pace))
    if accel >= -0.2:
        speed = abs(car.v)
        resist = p.drag_per_mass_pm * car.v * speed + (p.rolling_resistance_mps2 if speed > 0.01 else 0.0)
        engine = min(p.max_accel_mps2, p.power_per_mass_wpkg / speed if speed > 0.5 else math.inf)
        throttle = float(np.clip((accel + resist) / engine, 0, 1))
        brake = 0.0
    else:
        throttle, brake = 0.0, float(np.clip(-accel / p.max_brake_mps2, 0, 1))
    return steer, throttle, brake


def _stick(steer: float) -> float:
    """The stick position whose input the game maps (past its dead zone) to ``steer``."""
    if steer == 0:
        return 0.0
    dz = dynamics.GAMEPAD_DEAD_ZONE
    return math.copysign(abs(steer) * (1 - dz) + dz, steer)


def _command(route: _Route, s: float) -> RoadOption:
    for c, option in route.crossings:
        if c - 25.0 <= s <= c + ROAD_HALF_WIDTH_M:  # approaching or inside the crossing
            return option
    return RoadOption.LANEFOLLOW


# --- clocks ------------------------------------------------------------------------------------------


def _clocks(n: int, fps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_render_ms, t_capture_ms, pts_ms): a page loop with jitter and hitches, a recorder clock apart."""
    period = 1000.0 / fps
    t_render = 8.0 + np.arange(n) * period + np.clip(rng.normal(0, 1.5, n), -4, 4)
    hitches = rng.random(n) < 0.01
    t_render[hitches] += rng.uniform(15, 25, int(hitches.sum()))
    for i in range(1, n):
        t_render[i] = max(t_render[i], t_render[i - 1] + 1.0)
    t_capture = t_render + rng.uniform(1.0, 4.0, n)
    # The recorder stamps frames on its own wall clock: tens of ms apart from the page, wandering slowly.
    offset = 25.0 + 12.0 * np.sin(2 * np.pi * np.arange(n) / (fps * 20)) + rng.normal(0, 1.0, n)
    pts = np.round(t_capture + offset).astype(np.int64)
    for i in range(1, n):
        pts[i] = max(pts[i], pts[i - 1] + 2)
    return np.round(t_render, 3), np.round(t_capture, 3), pts


# --- random streams --------------------------------------------------------------------------------


def stream(seed: int, name: str) -> np.random.Generator:
    """The generator of one job of a seeded session, derived from the seed and the job's name alone.

    Each job draws from its own stream, so turning a knob on (or adding one) changes only what that
    knob's job draws: the drive, the clocks and every other corruption's frames stay as they were.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


# Per-frame corruptions: the picks each one keeps clear of, so two never land on one frame where one
# would hide the other. A knob's frames depend on its own stream and on the picks it lists here, only.
FRAME_PICKS: dict[str, tuple[str, ...]] = {
    "non_monotonic_timestamps": (),
    "drop_frames": (),
    "duplicate_frames": ("drop_frames",),
    "unlogged_frame_ids": ("drop_frames", "duplicate_frames"),
    "blur_frames": (),
    "black_frames": ("blur_frames",),
    "overexposed_frames": ("blur_frames", "black_frames"),
    "flicker_frames": ("blur_frames", "black_frames", "overexposed_frames"),
    "frozen_frames": ("blur_frames", "black_frames", "overexposed_frames", "flicker_frames"),
    "nan_controls": (),
    "out_of_range_controls": (),
    "bad_command": (),
    "repeated_frame_ids": (),
    "garbage_lines": (),
}
PICTURE_KNOBS = ("black_frames", "overexposed_frames", "flicker_frames", "frozen_frames")
PICTURE_APART = 2  # frames between two picture corruptions, at least


def _pick(rng: np.random.Generator, n: int, count: int, *, exclude: set[int] = frozenset(),
          margin: int = 2, apart: int = 0) -> list[int]:
    """``count`` distinct indices from the middle of 0..n-1, avoiding ``exclude``; with ``apart`` > 0,
    none within ``apart`` frames of an excluded index or of another pick."""
    near = {i + d for i in exclude for d in range(-apart, apart + 1)}
    pool = [i for i in range(margin, n - margin) if i not in near]
    if not apart:
        count = min(count, len(pool))
        return sorted(int(i) for i in rng.choice(pool, size=count, replace=False)) if count else []
    chosen: list[int] = []
    for i in rng.permutation(pool) if pool else []:
        if len(chosen) == count:
            break
        if all(abs(int(i) - j) > apart for j in chosen):
            chosen.append(int(i))
    return sorted(chosen)


# --- plan: everything decided before a pixel is drawn or a byte written ----------------------------

MOUNT = Mount()  # the CARLA evaluator agent's front camera, the format's default
DIFFUSION_LAG_FRAMES = 5


def pictured_frame(cfg: SynthConfig, i: int) -> int | None:
    """With diffusion: the frame whose render the picture of frame ``i`` is made from (None: none yet).

    The stand-in diffusion service answers ``DIFFUSION_LAG_FRAMES`` frames late and, with
    ``diffusion_every`` above 1, makes a picture of only every that many renders, shown until the next.
    """
    if not cfg.diffusion or i < DIFFUSION_LAG_FRAMES or (cfg.diffusion_lost_at is not None and i >= cfg.diffusion_lost_at):
        return None
    every = max(1, cfg.diffusion_every)
    return (i - DIFFUSION_LAG_FRAMES) // every * every


@dataclass(frozen=True)
class SessionPlan:
    """The sizes, the route, the clocks and the frames every corruption touches, for one config."""

    config: SynthConfig
    frame_count: int
    cell_px: int
    fx: float
    bitrate: int
    route: _Route
    t_render_ms: np.ndarray  # page clock, before clock skew and drift (swapped pairs already swapped)
    t_capture_ms: np.ndarray
    pts_ms: np.ndarray  # the recorder's clock; page-clock corruptions never touch it
    picks: dict[str, list[int]]  # knob of FRAME_PICKS -> sorted frame indices

    def page_ms(self, t: float) -> float:
        """A page-clock time as the logs state it (with the clock_skew_ms and clock_drift knobs)."""
        return float(t) * (1.0 + self.config.clock_drift) + self.config.clock_skew_ms

    def picked(self, knob: str) -> set[int]:
        """The frames ``knob`` touches."""
        return set(self.picks[knob])


def plan_session(cfg: SynthConfig) -> SessionPlan:
    """Checks the config; draws the route, the clocks and each corruption's frames, each from its stream."""
    w, h, fps = cfg.width, cfg.height, cfg.fps
    if w % 2 or h % 2:
        raise ValueError(f"width and height must be even, got {w}x{h}")
    if not 0 < fps <= dynamics.SIM_HZ:
        raise ValueError(f"fps {fps} must be in (0, {dynamics.SIM_HZ}]: the game renders at most one frame a step")
    n = max(1, round(cfg.duration_s * fps))
    if n > MAX_FRAME_ID:
        raise ValueError(f"{n} frames exceed the barcode's {MAX_FRAME_ID + 1}")
    route = _make_route(stream(cfg.seed, "route"), CRUISE_MPS * n / fps + 120.0)
    t_render, t_capture, pts = _clocks(n, fps, stream(cfg.seed, "clocks"))
    picks: dict[str, list[int]] = {}
    for knob, avoid in FRAME_PICKS.items():
        taken = set().union(*(picks[a] for a in avoid))
        pool = n - 1 if knob == "non_monotonic_timestamps" else n  # a swap takes frame i and i + 1
        # A picture corruption keeps clean neighbours: the frame-to-frame rules (flicker, frozen, blur
        # against its neighbours) judge a frame by the frames beside it, and a clean frame between two
        # flickered ones would itself look like a flicker, so the truth would be ambiguous.
        picture = knob in PICTURE_KNOBS or knob == "blur_frames"
        picks[knob] = _pick(stream(cfg.seed, f"pick:{knob}"), pool, getattr(cfg, knob), exclude=taken,
                            margin=3 if picture else 2, apart=PICTURE_APART if picture else 0)
    for i in picks["non_monotonic_timestamps"]:
        t_render[[i, i + 1]] = t_render[[i + 1, i]]
        t_capture[[i, i + 1]] = t_capture[[i + 1, i]]
    return SessionPlan(
        config=cfg, frame_count=n, cell_px=cfg.cell_px or barcode.default_cell_px(h),
        fx=(w / 2) / math.tan(math.radians(cfg.fov_deg) / 2),
        bitrate=cfg.bitrate or int(2_500_000 * (w * h * fps) / (1280 * 720 * 30)),
        route=route, t_render_ms=t_render, t_capture_ms=t_capture, pts_ms=pts, picks=picks)


# --- drive: the car along the route, one tick per rendered frame ------------------------------------


@dataclass(frozen=True)
class DriveTick:
    """The car at one rendered frame: where it is, what the player pressed, what the route says.

    ``sim_step`` steps of the game's dynamics (60 Hz) lie behind it; ``sent`` are the gamepad values the
    player changed right after this frame was shown, which the step that follows is the first to see;
    steer, throttle and brake are the controls that step applied (what the game logs).
    """

    s_m: float  # arc length along the route
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    steer: float
    throttle: float
    brake: float
    command: RoadOption
    vehicle_r: np.ndarray
    camera_p: np.ndarray
    camera_r: np.ndarray
    sim_step: int = 0
    sent: tuple[tuple[str, float], ...] = ()


def sim_step_of_frame(fps: float, i: int) -> int:
    """The simulation step the game shows at rendered frame ``i`` of a session rendered at ``fps``."""
    return round(i * dynamics.SIM_HZ / fps)


def drive(plan: SessionPlan) -> list[DriveTick]:
    """A steady player's drive along the plan's route, on the game's dynamics, from the gamepad.

    At each rendered frame the player looks at the car and moves the stick and the triggers where a
    change is worth it (more than 0.02); the game's ControlMapper and 60 Hz vehicle step
    (:mod:`sd_common.dynamics`) drive the car from those events, as the game does, so the logged poses
    follow from the logged events exactly. The controls' noise has its own stream.
    """
    route, fps = plan.route, plan.config.fps
    rng = stream(plan.config.seed, "drive")
    mount_r = rotation(MOUNT.yaw_deg, MOUNT.pitch_deg, MOUNT.roll_deg)
    mount_t = np.array([MOUNT.x_m, MOUNT.y_m, MOUNT.z_m])
    d0 = route.points[1] - route.points[0]
    car = dynamics.make_vehicle(float(route.points[0][0]), float(route.points[0][1]), math.atan2(d0[1], d0[0]))
    mapper = dynamics.ControlMapper()
    held = {dynamics.STEER_AXIS: 0.0, dynamics.THROTTLE_BUTTON: 0.0, dynamics.BRAKE_BUTTON: 0.0}
    hint, s_prev, step = 0, 0.0, 0
    ticks: list[DriveTick] = []
    for i in range(plan.frame_count):
        s, hint = route.project(np.array([car.x, car.y]), hint)
        s = max(s, s_prev)
        s_prev = s
        steer, throttle, brake = _controls(route, car, s, rng, plan.config.pace)
        sent = []
        for code, value in ((dynamics.STEER_AXIS, _stick(steer)), (dynamics.THROTTLE_BUTTON, throttle),
                            (dynamics.BRAKE_BUTTON, brake)):
            value = dynamics.event_value(value)
            if abs(value - held[code]) > 0.02 or (value == 0 and held[code] != 0 and code != dynamics.STEER_AXIS):
                kind = "axis" if code.startswith("axis") else "button"
                mapper.apply("gamepad", kind, code, value)
                held[code] = value
                sent.append((code, value))
        yaw_deg = dynamics.wrap_deg(car.yaw * 180 / math.pi)
        vehicle_r = rotation(yaw_deg, 0.0, 0.0)
        pose = (s, car.x, car.y, car.yaw, abs(car.v))
        camera_p = np.array([car.x, car.y, 0.0]) + vehicle_r @ mount_t
        # The steps up to the next frame; the first one's controls are this frame's (docs/session-format.md §6.2).
        until = sim_step_of_frame(fps, i + 1)  # above `step`: plan_session keeps fps at most 60
        controls = None
        while step < until:
            c = mapper.step(dynamics.SIM_DT_S)
            if controls is None:
                controls = c
            dynamics.step_vehicle(car, c, dynamics.SIM_DT_S)
            step += 1
        ticks.append(DriveTick(*pose, controls.steer, controls.throttle, controls.brake, _command(route, s),
                               vehicle_r, camera_p, vehicle_r @ mount_r, sim_step_of_frame(fps, i), tuple(sent)))
    return ticks


# --- video: render, corrupt the picture, draw the barcode, encode ------------------------------------


def write_video(plan: SessionPlan, ticks: list[DriveTick], path: Path) -> list[tuple[int, int]]:
    """Renders and encodes every tick as the recorder would; returns (shown id, pts_ms) per encoded frame."""
    cfg, n, pts = plan.config, plan.frame_count, plan.pts_ms
    w, h = cfg.width, cfg.height
    dropped, duplicated, unlogged = (plan.picked(k) for k in ("drop_frames", "duplicate_frames",
                                                              "unlogged_frame_ids"))
    blurred = plan.picked("blur_frames")
    picture = {k: plan.picked(k) for k in PICTURE_KNOBS}
    blur_sigma = max(2.5, h / 160)  # a defocus of several pixels at any resolution
    renderer = Renderer(City(cfg.seed), w, h, plan.fx, plan.fx, w / 2, h / 2)
    video_frames: list[tuple[int, int]] = []
    last_image: np.ndarray | None = None
    with VideoWriter(path, w, h, codec="libvpx-vp9" if cfg.wrong_codec else "libvpx", bitrate=plan.bitrate,
                     fps_hint=round(cfg.fps)) as writer:
        for i, tick in enumerate(ticks):
            plain = not cfg.diffusion or (cfg.diffusion_lost_at is not None and i >= cfg.diffusion_lost_at)
            shows = i if plain else pictured_frame(cfg, i)
            source = ticks[0 if shows is None else shows]  # before any picture: the first render
            image = renderer.render(source.camera_p, source.camera_r)
            if i in blurred:
                image = cv2.GaussianBlur(image, (0, 0), blur_sigma)
            if not plain:
                image = cv2.applyColorMap(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLORMAP_TWILIGHT)
            if i in picture["black_frames"]:
                image = np.zeros_like(image)
            elif i in picture["overexposed_frames"]:
                image = cv2.add(image, np.full_like(image, 220))
            elif i in picture["flicker_frames"]:
                image = 255 - image
            elif i in picture["frozen_frames"] and last_image is not None:
                image = last_image.copy()
            if cfg.frozen_frames:
                last_image = image.copy()
            shown_id = i + 500_000 if i in unlogged else i
            if not cfg.no_barcode:
                barcode.draw(image, shown_id, plan.cell_px)
            if i in dropped:
                continue
            writer.write_bgr(image, int(pts[i]))
            video_frames.append((shown_id, int(pts[i])))
            if i in duplicated:
                gap = (int(pts[i + 1]) - int(pts[i])) if i + 1 < n else 34
                dup_pts = int(pts[i]) + max(1, gap // 2)
                writer.write_bgr(image, dup_pts)
                video_frames.append((shown_id, dup_pts))
    return video_frames


def damage_video(plan: SessionPlan, path: Path) -> None:
    """The byte-level video knobs: replace the file with random bytes, cut its end off."""
    cfg = plan.config
    size = path.stat().st_size
    if cfg.garbage_video:
        path.write_bytes(stream(cfg.seed, "garbage_video").bytes(size))
    cut = cfg.truncate_video_bytes + int(size * cfg.truncate_video_fraction)
    if cut:
        with open(path, "r+b") as f:
            f.truncate(max(0, size - cut))


# --- logs: frames.jsonl, events.jsonl, latency.jsonl ------------------------------------------------


def _num(v: float, digits: int) -> float:
    """A number as the game's log writes it (session.ts ``num``): rounded half up, never -0."""
    f = 10.0 ** digits
    r = dynamics.js_round(v * f) / f
    return 0.0 if r == 0 else r


def _vehicle_pose(t: DriveTick) -> dict[str, float]:
    """camera.ts ``vehiclePose``, rounded as session.ts writes it."""
    return {"x_m": _num(t.x_m, 4), "y_m": _num(t.y_m, 4), "z_m": 0.0,
            "yaw_deg": _num(dynamics.wrap_deg(t.yaw_rad * 180 / math.pi), 3), "pitch_deg": 0.0, "roll_deg": 0.0}


def _camera_pose(t: DriveTick) -> dict[str, float]:
    """camera.ts ``cameraPose`` with the mount, rounded as session.ts writes it."""
    c, s, m = math.cos(t.yaw_rad), math.sin(t.yaw_rad), MOUNT
    return {"x_m": _num(t.x_m + c * m.x_m - s * m.y_m, 4), "y_m": _num(t.y_m + s * m.x_m + c * m.y_m, 4),
            "z_m": _num(m.z_m, 4), "yaw_deg": _num(dynamics.wrap_deg(t.yaw_rad * 180 / math.pi + m.yaw_deg), 3),
            "pitch_deg": _num(m.pitch_deg, 3), "roll_deg": _num(m.roll_deg, 3)}


def frame_lines(plan: SessionPlan, ticks: list[DriveTick]) -> Iterator[str]:
    """frames.jsonl, line by line, with the log corruptions the plan picked."""
    cfg, route = plan.config, plan.route
    nan_lines, range_lines, command_lines, repeat_lines, garbage = (plan.picked(k) for k in (
        "nan_controls", "out_of_range_controls", "bad_command", "repeated_frame_ids", "garbage_lines"))
    infraction_frame = plan.frame_count // 2 if cfg.infractions else -1
    for i, t in enumerate(ticks):
        if i in garbage:
            yield "{not json"
            continue
        record: dict[str, Any] = {
            "frame_id": i - 1 if i in repeat_lines else i,
            "t_render_ms": round(plan.page_ms(plan.t_render_ms[i]), 3),
            "t_capture_ms": round(plan.page_ms(plan.t_capture_ms[i]), 3),
            "sim_t_ms": _num(t.sim_step * 1000 / dynamics.SIM_HZ, 3),
            "vehicle": _vehicle_pose(t),
            "camera": _camera_pose(t),
            "speed_mps": _num(t.speed_mps, 4),
            "controls": {"steer": _num(t.steer, 4), "throttle": _num(t.throttle, 4), "brake": _num(t.brake, 4)},
            "command": int(t.command),
            "route": {"progress": round(min(1.0, t.s_m / route.length_m), 6),
                      "distance_remaining_m": round(max(0.0, route.length_m - t.s_m), 3)},
            "infractions": [{"kind": "collision_static", "actor": "building", "impulse_ns": 850.0}]
            if i == infraction_frame else [],
            "diffusion_frame_id": pictured_frame(cfg, i),
        }
        if i in nan_lines:
            record["controls"]["throttle"] = float("nan")
        if i in range_lines:
            record["controls"]["steer"] = 1.7
        if i in command_lines:
            record["command"] = 0
        yield json.dumps(record, separators=(",", ":"))


def input_events(plan: SessionPlan, ticks: list[DriveTick]) -> list[dict[str, Any]]:
    """events.jsonl: the gamepad changes the player made (each a little after the frame it answers) and
    one horn press (a key the game ignores), each with the simulation time it took effect at."""
    rng = stream(plan.config.seed, "events")
    horn_down, horn_up = plan.frame_count // 3, min(plan.frame_count - 1, plan.frame_count // 3 + 6)
    events: list[dict[str, Any]] = []
    last_t = 0.0
    for i, t in enumerate(ticks):
        sim_ms = _num(t.sim_step * 1000 / dynamics.SIM_HZ, 3)
        lines = [("gamepad", "axis" if code.startswith("axis") else "button", code, value) for code, value in t.sent]
        if i == horn_down:
            lines.append(("keyboard", "keydown", "KeyH", 1))
        if i == horn_up:
            lines.append(("keyboard", "keyup", "KeyH", 0))
        for device, kind, code, value in lines:
            # As the game's log does, a time never goes back (an event is logged when it is handled).
            last_t = max(last_t, round(plan.page_ms(plan.t_render_ms[i] + rng.uniform(1, 8)), 3))
            events.append({"t_ms": last_t, "device": device, "kind": kind, "code": code, "value": value,
                           "sim_t_ms": sim_ms})
    return events


def latency_probes(plan: SessionPlan) -> list[dict[str, Any]]:
    """latency.jsonl: a frame-present probe every tenth frame, and the diffusion round trip when it is on."""
    cfg, page = plan.config, plan.page_ms
    probes: list[dict[str, Any]] = []
    for i in range(plan.frame_count):
        if i % 10 == 0:
            probes.append({"t_ms": round(page(plan.t_capture_ms[i]), 3), "kind": "frame_present",
                           "sent_ms": round(page(plan.t_render_ms[i]), 3),
                           "received_ms": round(page(plan.t_capture_ms[i]), 3), "frame_id": i})
        shows = pictured_frame(cfg, i)
        if shows is not None and shows != pictured_frame(cfg, i - 1):  # a new picture arrived
            probes.append({"t_ms": round(page(plan.t_render_ms[i]), 3), "kind": "diffusion_rtt",
                           "sent_ms": round(page(plan.t_render_ms[shows]), 3),
                           "received_ms": round(page(plan.t_render_ms[i]) - 1.0, 3),
                           "frame_id": shows})
    probes.sort(key=lambda p: p["t_ms"])
    return probes


def write_logs(plan: SessionPlan, ticks: list[DriveTick], session_dir: Path) -> None:
    """Writes frames.jsonl, events.jsonl and latency.jsonl."""
    def compact(records: list[dict[str, Any]]) -> Iterator[str]:
        return (json.dumps(r, separators=(",", ":")) for r in records)

    for name, lines in ((FRAMES_NAME, frame_lines(plan, ticks)), (EVENTS_NAME, compact(input_events(plan, ticks))),
                        (LATENCY_NAME, compact(latency_probes(plan)))):
        with open(session_dir / name, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)


# --- manifest: the spec's own model, with the manifest knobs' lies ----------------------------------


def session_id_of(cfg: SynthConfig) -> str:
    """The session id a config's session carries."""
    return f"synth-{cfg.seed:x}-{cfg.width}x{cfg.height}"


def build_manifest(plan: SessionPlan, session_dir: Path) -> Manifest:
    """The manifest of the files in ``session_dir``, as a :class:`~.spec.Manifest`."""
    cfg, route = plan.config, plan.route
    files = []
    for name in (VIDEO_NAME, FRAMES_NAME, EVENTS_NAME, LATENCY_NAME):
        p = session_dir / name
        sha, size = file_sha256(p), p.stat().st_size
        if name == cfg.wrong_hash:
            sha = hashlib.sha256(b"not the file" + sha.encode()).hexdigest()
        if name == cfg.wrong_size:
            size += 1
        files.append(FileEntry(path=name, size_bytes=size, sha256=sha, content_type=REQUIRED_FILES[name]))
    mw, mh = (cfg.width * 2, cfg.height * 2) if cfg.wrong_resolution else (cfg.width, cfg.height)
    mfx = round((mw / 2) / math.tan(math.radians(cfg.fov_deg) / 2), 4)
    created = datetime(2025, 5, 1, 12, 0, tzinfo=UTC) + timedelta(minutes=cfg.seed % 100_000)
    start, goal = route.points[0], route.points[-1]
    return Manifest(
        schema_version=SCHEMA_VERSION,
        session_id=session_id_of(cfg),
        player_id="synth-player",
        created_at=created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        client=Client(build="synth-1", user_agent="sd_common.session_format.synth"),
        city=CityRef(name="grid", seed=cfg.seed),
        route=RoutePlan(route_id=f"route-{cfg.seed:x}",
                        start=Point(x_m=round(float(start[0]), 3), y_m=round(float(start[1]), 3)),
                        goal=Point(x_m=round(float(goal[0]), 3), y_m=round(float(goal[1]), 3)),
                        length_m=round(route.length_m, 3)),
        recording=Recording(width=mw, height=mh, fps_target=float(cfg.fps)),
        camera=Camera(intrinsics=Intrinsics(fov_deg=float(cfg.fov_deg), fx=mfx, fy=mfx, cx=mw / 2, cy=mh / 2),
                      mount=MOUNT),
        barcode=BarcodeSpec(cell_px=plan.cell_px),
        diffusion=Diffusion(enabled=True, backend="webrtc", prompt="a rainy evening street, photorealistic",
                            model="synth-colormap", plain_from_frame_id=cfg.diffusion_lost_at)
        if cfg.diffusion else Diffusion(enabled=False),
        duration_s=round(float(plan.t_capture_ms[-1]) / 1000.0 + 0.5, 3),
        frame_count=plan.frame_count + cfg.frame_count_off,
        files=files,
    )


def write_manifest(manifest: Manifest, session_dir: Path) -> None:
    """manifest.json as a client writes it (UTF-8 JSON, two-space indent)."""
    (session_dir / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")


# --- the session -------------------------------------------------------------------------------------


def synth_session(out_dir: Path, config: SynthConfig | None = None) -> SynthTruth:
    """Writes ``out_dir/session/`` and ``out_dir/truth.json``; returns the truth."""
    cfg = config or SynthConfig()
    started = time.perf_counter()
    plan = plan_session(cfg)
    out_dir = Path(out_dir)
    session_dir = out_dir / SESSION_DIR_NAME
    if session_dir.exists():
        shutil.rmtree(session_dir)
    session_dir.mkdir(parents=True)

    ticks = drive(plan)
    video_frames = write_video(plan, ticks, session_dir / VIDEO_NAME)
    write_logs(plan, ticks, session_dir)
    damage_video(plan, session_dir / VIDEO_NAME)
    write_manifest(build_manifest(plan, session_dir), session_dir)
    if cfg.missing_file:
        (session_dir / cfg.missing_file).unlink(missing_ok=True)
    if cfg.unlisted_file:
        (session_dir / cfg.unlisted_file).write_text("not listed in the manifest\n")

    corruptions = cfg.corruptions()
    truth = SynthTruth(
        session_dir=session_dir,
        session_id=session_id_of(cfg),
        frame_count=plan.frame_count,
        video_frames=video_frames,
        dropped_frame_ids=plan.picks["drop_frames"],
        duplicated_frame_ids=plan.picks["duplicate_frames"],
        blurred_frame_ids=plan.picks["blur_frames"],
        picture_frame_ids={k: plan.picks[k] for k in PICTURE_KNOBS if plan.picks[k]},
        corruptions=corruptions,
        expected_problem_codes=sorted({c for k in corruptions if (c := CORRUPTIONS[k].expected_code)}),
        config=dataclasses.asdict(cfg),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    (out_dir / TRUTH_NAME).write_text(json.dumps(truth.to_dict(), indent=1) + "\n", encoding="utf-8")
    return truth
