"""REPLAY: the session's raw input events, run through the game's dynamics, must give its logged states.

The game drives its car only from the input events it logs (docs/session-format.md §7), through a
deterministic 60 Hz step (``sd_common.dynamics``, the game's own code ported and held to it by shared
vectors). So the processor replays events.jsonl from the first frame (the car at rest at simulation
time 0, at that frame's logged pose) and compares, at every usable line's ``sim_t_ms``, the replayed
pose and speed with the logged ones, and the controls the replayed mapper gives that step with the
logged controls. What the replay cannot know is what the world did to the car: a collision restores
the pose of the step before and stops it, a pedestrian hit slows it. From a line that logs a
collision the replay is re-anchored on the log at every line (the pose and speed a line states, the
wheel angle and the mapper replayed) and each interval is judged from the line before: loosely while
the car may be blocked, until the replayed and logged motion agree again for ``resync_s``, and with the
free tolerances from then on. (It cannot run free again: the logged speed it restarts from is rounded,
and that error turns the replayed path a little more in every bend.) Tolerances and their
justification: docs/verification.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sd_common import dynamics
from sd_common.session_format.spec import EVENTS_NAME, FRAMES_NAME, InputEvent

from .config import ReplayConfig
from .framelog import FrameLog

S_POSE = "pose_not_from_inputs"
S_CONTROLS = "controls_not_from_inputs"
S_UNREPLAYABLE = "inputs_not_replayable"

COLLISIONS = frozenset({"collision_static", "collision_vehicle", "collision_pedestrian"})

# Per line: how the replay judged it.
JUDGED = 0  # compared with the replay running free from the first line
ANCHORED = 1  # in a contact: the logged pose must lie on the way replayed from the line before
UNJUDGED = 2  # unusable line, or a collision line (the world changed the state since the line before)
STEPPED = 3  # after a contact: compared with the replay of one interval from the line before

# Phases of the replay.
FREE, CONTACT, LOCAL = "free", "contact", "local"


@dataclass
class ReplayResult:
    """Per log line: how it was judged and its deviations from the replay; or why nothing could be."""

    unreplayable: str | None = None  # why the session's events cannot be replayed at all
    mode: np.ndarray | None = None  # JUDGED / ANCHORED / UNJUDGED per line
    pose_bad: np.ndarray | None = None  # bool per line
    controls_bad: np.ndarray | None = None  # bool per line
    position_m: np.ndarray | None = None  # deviation per line (nan where not compared)
    yaw_deg: np.ndarray | None = None
    speed_mps: np.ndarray | None = None
    controls: np.ndarray | None = None

    def segment_reasons(self, lines: list[int]) -> list[str]:
        """The replay's reasons to reject a segment whose frames name (or picture) these lines."""
        if self.unreplayable is not None:
            return [S_UNREPLAYABLE]
        if not lines:
            return []
        lo, hi = min(lines), max(lines) + 1
        reasons = []
        if self.pose_bad[lo:hi].any():
            reasons.append(S_POSE)
        if self.controls_bad[lo:hi].any():
            reasons.append(S_CONTROLS)
        return reasons


def read_events(path: Path) -> tuple[list[tuple[int, str, str, str, float]], str | None]:
    """(step, device, kind, code, value) of every event in file order, or why they cannot be replayed."""
    events: list[tuple[int, str, str, str, float]] = []
    if not path.is_file():
        return [], f"{EVENTS_NAME} is missing"
    last = -1
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                ev = InputEvent.model_validate_json(line)
            except ValidationError:
                return [], f"{EVENTS_NAME} line {number} is not a valid event: an input is unknown"
            if ev.sim_t_ms is None:
                return [], (f"{EVENTS_NAME} line {number} has no sim_t_ms: the step it took effect at is "
                            "unknown (a client older than the field)")
            step = dynamics.step_of_sim_ms(ev.sim_t_ms)
            if abs(step * 1000.0 / dynamics.SIM_HZ - ev.sim_t_ms) > 0.01:
                return [], f"{EVENTS_NAME} line {number}: sim_t_ms {ev.sim_t_ms} is not the start of a step"
            if step < last:
                return [], f"{EVENTS_NAME} line {number}: sim_t_ms goes back"
            last = step
            events.append((step, ev.device, ev.kind, ev.code, ev.value))
    return events, None


def collision_frame_ids(path: Path) -> set[int]:
    """The frame ids of frames.jsonl lines that log a collision (read leniently: other lines are skipped)."""
    ids: set[int] = set()
    with open(path, "rb") as f:
        for line in f:
            if b"collision_" not in line:
                continue
            try:
                obj = json.loads(line)
                if any(isinstance(i, dict) and i.get("kind") in COLLISIONS for i in obj.get("infractions", [])):
                    ids.add(int(obj["frame_id"]))
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
    return ids


def replay_session(session_dir: Path, log: FrameLog, cfg: ReplayConfig) -> ReplayResult:
    """Replays the session's events against its frame log."""
    events, why = read_events(session_dir / EVENTS_NAME)
    if why is not None:
        return ReplayResult(unreplayable=why)
    return replay_log(log, events, collision_frame_ids(session_dir / FRAMES_NAME), cfg)


def _logged_state(log: FrameLog, i: int) -> tuple[float, float, float, float]:
    return (float(log.col("x_m")[i]), float(log.col("y_m")[i]), math.radians(float(log.col("yaw_deg")[i])),
            float(log.col("speed_mps")[i]))


def replay_log(log: FrameLog, events: list[tuple[int, str, str, str, float]], collisions: set[int],
               cfg: ReplayConfig) -> ReplayResult:
    """Replays ``events`` (step, device, kind, code, value) against ``log``; ``collisions`` are frame ids."""
    n = len(log)
    usable = [i for i in range(n) if log.usable(i)]
    sim = log.col("sim_t_ms")
    steps = {i: dynamics.step_of_sim_ms(float(sim[i])) for i in usable}
    off_step = [i for i in usable if abs(steps[i] * 1000.0 / dynamics.SIM_HZ - sim[i]) > 0.01]
    if off_step:
        return ReplayResult(unreplayable=f"frame {int(log.frame_id[off_step[0]])}: sim_t_ms {sim[off_step[0]]} "
                            "is not a whole simulation step")
    if not usable or steps[usable[0]] != 0 or log.col("speed_mps")[usable[0]] != 0:
        return ReplayResult(unreplayable="the first usable line is not the car at rest at simulation time 0, "
                            "where the replay starts")
    res = ReplayResult(mode=np.full(n, UNJUDGED, dtype=np.int8), pose_bad=np.zeros(n, bool),
                       controls_bad=np.zeros(n, bool), position_m=np.full(n, np.nan), yaw_deg=np.full(n, np.nan),
                       speed_mps=np.full(n, np.nan), controls=np.full(n, np.nan))
    x0, y0, yaw0, _ = _logged_state(log, usable[0])
    car = dynamics.make_vehicle(x0, y0, yaw0)
    mapper = dynamics.ControlMapper()
    step, k = 0, 0
    current = None  # the controls of step `step`, once the events before it are applied
    previous = dynamics.Controls()  # the controls of the step before
    path_m = 0.0  # driven since the last anchor: the anchor's rounded heading displaces by this much
    phase = FREE
    agree_s = 0.0  # in a contact: how long the anchored intervals have agreed
    contact_since = 0.0
    prev_state = None
    last_line = usable[-1]

    trail: list[tuple[float, float, float]] = []  # in a contact: the replayed poses since the last line

    for i in usable:
        target = steps[i]
        while True:
            if current is None:
                while k < len(events) and events[k][0] <= step:
                    _, device, kind, code, value = events[k]
                    mapper.apply(device, kind, code, value)
                    k += 1
                current = mapper.step(dynamics.SIM_DT_S)
            if step >= target:
                break
            before = (car.x, car.y)
            dynamics.step_vehicle(car, current, dynamics.SIM_DT_S)
            path_m += math.hypot(car.x - before[0], car.y - before[1])
            if phase == CONTACT:
                trail.append((car.x, car.y, car.yaw))
            previous, current = current, None
            step += 1
        # Controls: what the mapper gives the step after this line. The game logs the last line with the
        # controls of the step before it (nothing follows it), which the replay also accepts there.
        c = current
        logged_c = (log.col("steer")[i], log.col("throttle")[i], log.col("brake")[i])
        dc = max(abs(c.steer - logged_c[0]), abs(c.throttle - logged_c[1]), abs(c.brake - logged_c[2]))
        if i == last_line:
            dp = max(abs(previous.steer - logged_c[0]), abs(previous.throttle - logged_c[1]),
                     abs(previous.brake - logged_c[2]))
            dc = min(dc, dp)
        res.controls[i] = dc
        res.controls_bad[i] = dc > cfg.controls_tolerance

        x, y, yaw, speed = _logged_state(log, i)
        dpos = math.hypot(car.x - x, car.y - y)
        dyaw = abs(math.degrees(dynamics.wrap_angle(car.yaw - yaw)))
        dv = abs(abs(car.v) - speed)
        res.position_m[i], res.yaw_deg[i], res.speed_mps[i] = dpos, dyaw, dv
        t_s = step * dynamics.SIM_DT_S
        within = dpos <= cfg.position_tolerance_m + cfg.heading_rounding_rad * path_m and \
            dyaw <= cfg.yaw_tolerance_deg and dv <= cfg.speed_tolerance_mps
        if int(log.frame_id[i]) in collisions:
            phase, agree_s, contact_since = CONTACT, 0.0, t_s
        elif phase == FREE:
            res.mode[i] = JUDGED
            res.pose_bad[i] = not within
        elif phase == LOCAL:
            res.mode[i] = STEPPED
            res.pose_bad[i] = not within
        else:
            # A blocked step restores the pose before it and stops the car: the logged pose may lie anywhere
            # on the replayed way from the line before (at its start when every step was blocked).
            res.mode[i] = ANCHORED
            dt_s = t_s - prev_state[0]
            off_path = _distance_to_path(x, y, trail)
            turn = min(abs(math.degrees(dynamics.wrap_angle(p[2] - yaw))) for p in trail)
            ok = off_path <= cfg.anchored_position_tolerance_m and turn <= cfg.anchored_yaw_rate_dps * dt_s
            res.position_m[i], res.yaw_deg[i] = off_path, turn
            res.pose_bad[i] = not ok or t_s - contact_since > cfg.max_contact_s and agree_s < cfg.resync_s
            agree_s = agree_s + dt_s if within and speed > cfg.resync_min_speed_mps else 0.0
            if agree_s >= cfg.resync_s:
                phase = LOCAL
        if phase != FREE:
            # Re-anchor on the logged state (the speed it logs is rounded, so the replay cannot run free from
            # it: the error would grow with every turn); the gear from the direction the car logged moving in.
            if prev_state is not None and speed > 0.05:
                px, py = prev_state[1], prev_state[2]
                ahead = (x - px) * math.cos(yaw) + (y - py) * math.sin(yaw)
                car.gear = 1 if ahead >= 0 else -1
            car.x, car.y, car.yaw, car.v = x, y, yaw, car.gear * speed
            path_m = 0.0
            trail = [(x, y, yaw)]
        prev_state = (t_s, x, y)
    return res


def _distance_to_path(x: float, y: float, path: list[tuple[float, float, float]]) -> float:
    """Distance from (x, y) to the polyline through the path's points."""
    best = math.hypot(x - path[0][0], y - path[0][1])
    for (ax, ay, _), (bx, by, _) in zip(path, path[1:]):
        dx, dy = bx - ax, by - ay
        len2 = dx * dx + dy * dy
        t = 0.0 if len2 == 0 else min(1.0, max(0.0, ((x - ax) * dx + (y - ay) * dy) / len2))
        best = min(best, math.hypot(ax + t * dx - x, ay + t * dy - y))
    return best
