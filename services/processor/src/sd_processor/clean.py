"""CLEAN: per-frame picture rules and per-segment driving rules, each with a named reason.

Per frame (on the output picture, full-range luma): blurred, frozen, black, overexposed, flicker.
Per segment (on the logged states of its kept frames): too few good frames, stationary the whole
time, pose teleports, controls that no car and player produce. Thresholds are in CleanConfig.

Frame metrics are read from the Y plane as NumPy views; the frame-to-frame tests compare 64x64
thumbnails. Flicker needs the next frame, so a frame's verdict is given one frame late.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from .align import Pairing
from .config import CleanConfig
from .decode import DecodedFrame
from .framelog import LINE_CONTROLS_INVALID, FrameLog

R_BLURRED = "blurred"
R_FROZEN = "frozen"
R_BLACK = "black"
R_OVEREXPOSED = "overexposed"
R_FLICKER = "flicker"

S_TOO_SHORT = "too_short"
S_FEW_GOOD = "too_few_good_frames"
S_STATIONARY = "stationary"
S_TELEPORT = "pose_teleport"
S_CONTROLS = "controls_implausible"

THUMB = 64


@dataclass
class FrameMetrics:
    """What the per-frame rules look at."""

    laplacian_var: float
    mean_luma: float
    bright_share: float
    thumb: np.ndarray  # THUMB x THUMB uint8


def frame_metrics(y: np.ndarray) -> FrameMetrics:
    """Blur, exposure and a thumbnail of one output luma plane (H x W uint8, full range)."""
    lap = cv2.Laplacian(y, cv2.CV_16S, ksize=1)
    _, std = cv2.meanStdDev(lap)
    mean = cv2.mean(y)[0]
    bright = cv2.countNonZero(cv2.compare(y, 250, cv2.CMP_GE)) / y.size
    thumb = cv2.resize(y, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return FrameMetrics(float(std[0, 0]) ** 2, float(mean), float(bright), thumb)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two equally sized uint8 images, in luma levels."""
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


@dataclass
class Candidate:
    """A decoded frame on its way through clean and splice: its line, metrics and drop reasons."""

    frame: DecodedFrame
    line: int | None
    reasons: list[str] = field(default_factory=list)
    metrics: FrameMetrics | None = None
    jpeg: bytes | None = None

    @property
    def good(self) -> bool:
        """Paired with a usable line and no rule tripped."""
        return self.line is not None and not self.reasons


class FrameCleaner:
    """Applies the per-frame rules; a frame's verdict is complete once the frame after it was seen."""

    def __init__(self, log: FrameLog, cfg: CleanConfig) -> None:
        self.log = log
        self.cfg = cfg
        self._history: deque[float] = deque(maxlen=cfg.history_frames)  # Laplacian variances
        self._motion: deque[float] = deque(maxlen=cfg.history_frames)  # frame-to-frame differences
        self._before: Candidate | None = None  # the frame before the pending one
        self._pending: Candidate | None = None  # the newest frame with a picture, verdict not final

    def push(self, frame: DecodedFrame, pairing: Pairing) -> list[Candidate]:
        """Takes the next decoded frame; returns the frames whose verdicts are now final, in order."""
        cand = Candidate(frame, pairing.line, [pairing.reason] if pairing.reason else [])
        done: list[Candidate] = []
        if frame.y is None:  # no picture: it ends the neighbourhood the frame-to-frame rules look at
            done += self.finish()
            self._before = None
            done.append(cand)
            return done
        cand.metrics = frame_metrics(frame.y)
        self._picture_rules(cand)
        if self._pending is not None:
            self._flicker_rule(self._before, self._pending, cand)
            done.append(self._pending)
        self._before, self._pending = self._pending, cand
        return done

    def finish(self) -> list[Candidate]:
        """The last pending frame (its flicker test has no next frame)."""
        done, self._pending = self._pending, None
        return [done] if done is not None else []

    def _picture_rules(self, cand: Candidate) -> None:
        m, cfg = cand.metrics, self.cfg
        if m.mean_luma < cfg.black_max_mean:
            cand.reasons.append(R_BLACK)
        elif m.bright_share >= cfg.overexposed_min_share:
            cand.reasons.append(R_OVEREXPOSED)
        else:
            history = self._history
            median = float(np.median(history)) if len(history) >= 5 else None
            if m.laplacian_var < cfg.blur_min_laplacian_var or (
                    median is not None and m.laplacian_var < cfg.blur_ratio * median):
                cand.reasons.append(R_BLURRED)
            history.append(m.laplacian_var)
        prev = self._pending
        if prev is None:
            return
        diff = mean_abs_diff(m.thumb, prev.metrics.thumb)
        motion = self._motion
        scene = float(np.median(motion)) if len(motion) >= 5 else None
        motion.append(diff)
        if scene is not None and diff < cfg.frozen_max_mad and diff < cfg.frozen_ratio * scene and \
                cand.line is not None and prev.line is not None and self._moved(prev.line, cand.line):
            cand.reasons.append(R_FROZEN)

    def _moved(self, a: int, b: int) -> bool:
        log, cfg = self.log, self.cfg
        dx = log.col("cam_x_m")[b] - log.col("cam_x_m")[a]
        dy = log.col("cam_y_m")[b] - log.col("cam_y_m")[a]
        dz = log.col("cam_z_m")[b] - log.col("cam_z_m")[a]
        turn = abs((log.col("cam_yaw_deg")[b] - log.col("cam_yaw_deg")[a] + 180.0) % 360.0 - 180.0)
        return math.sqrt(dx * dx + dy * dy + dz * dz) >= cfg.frozen_min_motion_m or turn >= cfg.frozen_min_turn_deg

    def _flicker_rule(self, before: Candidate | None, mid: Candidate, after: Candidate) -> None:
        if before is None:
            return
        cfg = self.cfg
        d_prev = mean_abs_diff(mid.metrics.thumb, before.metrics.thumb)
        d_next = mean_abs_diff(mid.metrics.thumb, after.metrics.thumb)
        d_skip = mean_abs_diff(before.metrics.thumb, after.metrics.thumb)
        if min(d_prev, d_next) > cfg.flicker_ratio * d_skip + cfg.flicker_floor:
            mid.reasons.append(R_FLICKER)


def segment_reasons(log: FrameLog, lines: list[int], *, duration_s: float, holes: int, cfg: CleanConfig,
                    min_segment_s: float) -> list[str]:
    """Why a segment made of these kept lines (in order) must be rejected; empty when it is accepted."""
    reasons: list[str] = []
    if duration_s < min_segment_s:
        reasons.append(S_TOO_SHORT)
    if len(lines) / (len(lines) + holes) < cfg.min_good_share:
        reasons.append(S_FEW_GOOD)
    idx = np.asarray(lines, dtype=np.int64)
    x, y = log.col("x_m")[idx], log.col("y_m")[idx]
    speed = log.col("speed_mps")[idx]
    step = np.hypot(np.diff(x), np.diff(y))
    if speed.max() < cfg.stationary_max_speed_mps and step.sum() < cfg.stationary_max_distance_m:
        reasons.append(S_STATIONARY)
    if len(idx) >= 2:
        dt = _step_seconds(log, idx)
        fastest = np.maximum(speed[1:], speed[:-1])
        yaw = log.col("yaw_deg")[idx]
        turn = np.abs((np.diff(yaw) + 180.0) % 360.0 - 180.0)
        if np.any(step > fastest * dt * 1.5 + cfg.teleport_slack_m) or \
                np.any(turn > cfg.teleport_max_turn_dps * dt + 10.0):
            reasons.append(S_TELEPORT)
        accel = np.abs(np.diff(speed)) / np.maximum(dt, 1e-3)
        steer_rate = np.abs(np.diff(log.col("steer")[idx])) / np.maximum(dt, 1e-3)
        span = log.status[int(idx[0]):int(idx[-1]) + 1]
        if np.any(accel > cfg.max_accel_mps2) or np.any(steer_rate > cfg.max_steer_rate_per_s) or \
                LINE_CONTROLS_INVALID in span:
            reasons.append(S_CONTROLS)
    elif LINE_CONTROLS_INVALID == log.status[int(idx[0])]:
        reasons.append(S_CONTROLS)
    return reasons


def _step_seconds(log: FrameLog, idx: np.ndarray) -> np.ndarray:
    """Time between consecutive kept states: simulation time, or the capture clock where it stands still."""
    sim = np.diff(log.col("sim_t_ms")[idx]) / 1000.0
    cap = np.diff(log.col("t_capture_ms")[idx]) / 1000.0
    return np.where(sim > 0, sim, np.maximum(cap, 0.0))
