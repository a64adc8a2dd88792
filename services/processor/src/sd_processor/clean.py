"""CLEAN: per-frame picture rules and per-segment driving rules, each with a named reason.

Per frame (on the output picture, full-range luma): blurred, frozen, black, overexposed, flicker.
Per segment (on the logged states of its kept frames): too few good frames, stationary the whole
time, pose teleports, controls that no car and player produce. Thresholds are in CleanConfig.

With the diffusion view on, a picture shows the state of an earlier frame (``FrameLog.pictured``): the
frame-to-frame rules measure motion between the states the pictures show, so a diffusion picture shown
on several frames in a row is a repeat of the same state, not a frozen one.

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

    sharpness: float  # edge sharpness: 16 x mean(Laplacian^2) / mean(|Sobel gradient|^2); nan without edges
    edge_energy: float  # mean squared luma gradient, (levels / px)^2: how much edge there is to judge
    mean_luma: float
    bright_share: float
    thumb: np.ndarray  # THUMB x THUMB uint8


def frame_metrics(y: np.ndarray, detail_size: tuple[int, int] | None = None) -> FrameMetrics:
    """Sharpness, exposure and a thumbnail of one output luma plane (H x W uint8, full range).

    ``detail_size`` (width, height): the picture's real detail, when the output was enlarged from a
    smaller crop; sharpness is measured at that size, where a sharp edge is one pixel wide again.
    """
    mean = cv2.mean(y)[0]
    bright = cv2.countNonZero(cv2.compare(y, 250, cv2.CMP_GE)) / y.size
    thumb = cv2.resize(y, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    detail = y if detail_size is None else cv2.resize(y, detail_size, interpolation=cv2.INTER_AREA)
    f = detail.astype(np.float32)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3)
    lap = cv2.Laplacian(f, cv2.CV_32F, ksize=1)
    grad2 = float(cv2.mean(cv2.multiply(gx, gx) + cv2.multiply(gy, gy))[0])  # Sobel has gain 4: /16 is levels/px
    lap2 = float(cv2.mean(cv2.multiply(lap, lap))[0])
    sharpness = 16.0 * lap2 / grad2 if grad2 > 0 else math.nan
    return FrameMetrics(sharpness, grad2 / 16.0, float(mean), float(bright), thumb)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two equally sized uint8 images, in luma levels."""
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


@dataclass
class Candidate:
    """A decoded frame on its way through clean and splice: its line, metrics and drop reasons."""

    frame: DecodedFrame
    line: int | None  # the log line of the frame on screen (its barcode)
    reasons: list[str] = field(default_factory=list)
    pictured: int | None = None  # the log line whose state the picture shows (``line`` without diffusion)
    diffusion_picture: bool = False  # the picture is the diffusion view's (not the frame's own render)
    metrics: FrameMetrics | None = None
    jpeg: bytes | None = None
    change: float | None = None  # thumbnail difference to the picture before it (None: none before)
    moved_share: float | None = None  # share of its pixels that changed by more than codec noise since then
    blur_judged: bool = False  # exposed normally and with enough edges for the blur test

    @property
    def good(self) -> bool:
        """Paired with a usable line and no rule tripped."""
        return self.line is not None and not self.reasons


class FrameCleaner:
    """Applies the per-frame rules; a frame's verdict is complete once the frame after it was seen.

    The rules judge the picture against what the session itself shows: blur against the session's
    own sharpness (a measure that does not depend on how many edges a scene has), a frozen picture
    against the change the logged motion brings in the frames around it.
    """

    def __init__(self, log: FrameLog, cfg: CleanConfig, *, detail_size: tuple[int, int] | None = None,
                 diffusion: bool = False, plain_from: int | None = None) -> None:
        self.log = log
        self.cfg = cfg
        self.diffusion = diffusion
        self.plain_from = plain_from  # the manifest's diffusion.plain_from_frame_id (FrameLog.pictured)
        self.detail_size = detail_size
        self._sharpness: deque[float] = deque(maxlen=cfg.history_frames)  # of the frames judged for blur
        self._changes: deque[float] = deque(maxlen=cfg.history_frames)  # frame-to-frame thumbnail differences
        self._before: Candidate | None = None  # the frame before the pending one
        self._pending: Candidate | None = None  # the newest frame with a picture, verdict not final

    def push(self, frame: DecodedFrame, pairing: Pairing) -> list[Candidate]:
        """Takes the next decoded frame; returns the frames whose verdicts are now final, in order."""
        cand = Candidate(frame, pairing.line, [pairing.reason] if pairing.reason else [])
        if cand.line is not None:
            cand.pictured, why = self.log.pictured(cand.line, self.diffusion, self.plain_from)
            if why and not cand.reasons:
                cand.reasons.append(why)
            # FrameLog.pictured answers the line itself, with no reason, only for a plain render
            cand.diffusion_picture = self.diffusion and not why and int(self.log.diffusion_frame_id[cand.line]) >= 0
        done: list[Candidate] = []
        if frame.y is None:  # no picture: it ends the neighbourhood the frame-to-frame rules look at
            done += self.finish()
            self._before = None
            done.append(cand)
            return done
        cand.metrics = frame_metrics(frame.y, self.detail_size)
        self._picture_rules(cand)
        if self._pending is not None:
            prev = self._pending
            cand.change = mean_abs_diff(cand.metrics.thumb, prev.metrics.thumb)
            self._changes.append(cand.change)
            moved = cv2.compare(cv2.absdiff(frame.y, prev.frame.y), self.cfg.frozen_pixel_levels, cv2.CMP_GT)
            cand.moved_share = cv2.countNonZero(moved) / moved.size
            self._blur_rule(self._before, self._pending, cand)
            self._frozen_rule(self._before, self._pending, cand)
            self._flicker_rule(self._before, self._pending, cand)
            done.append(self._pending)
        self._before, self._pending = self._pending, cand
        return done

    def finish(self) -> list[Candidate]:
        """The last pending frame (its blur test has one neighbour; flicker and frozen tests need two)."""
        done, self._pending = self._pending, None
        if done is not None:
            self._blur_rule(self._before, done, None)
        return [done] if done is not None else []

    def _blur_rule(self, before: Candidate | None, mid: Candidate, after: Candidate | None) -> None:
        # Blur lowers the sharpness of the edges and, on the same scene, the edge energy. A frame is
        # blurred when its sharpness is far below the session's own (strong evidence alone), or
        # below it while its edge energy also falls well short of both neighbours' (the same scene
        # a frame apart), which a scene with fewer edges does not do.
        if not mid.blur_judged:
            return
        cfg, m = self.cfg, mid.metrics
        history = self._sharpness
        median = float(np.median(history)) if len(history) >= 5 else None
        history.append(m.sharpness)
        if m.sharpness < cfg.blur_min_sharpness or \
                (median is not None and m.sharpness < cfg.blur_strong_ratio * median):
            mid.reasons.append(R_BLURRED)
            return
        judged = [c for c in (before, after) if c is not None and c.blur_judged]
        around = [c.metrics.edge_energy for c in judged]
        if median is not None and around and m.sharpness < cfg.blur_ratio * median and \
                m.edge_energy < cfg.blur_edge_ratio * min(around):
            mid.reasons.append(R_BLURRED)
        elif len(judged) == 2 and all(self._fades(m, c.metrics) for c in judged):
            # a blurred copy of the scene on both sides: needs no session history (the first frames)
            mid.reasons.append(R_BLURRED)

    def _fades(self, m: FrameMetrics, ref: FrameMetrics) -> bool:
        """Whether picture ``m`` looks like a blurred copy of ``ref``: less sharp and with less edge energy."""
        cfg = self.cfg
        return m.sharpness < cfg.blur_ratio * ref.sharpness and m.edge_energy < cfg.blur_edge_ratio * ref.edge_energy

    def _picture_rules(self, cand: Candidate) -> None:
        m, cfg = cand.metrics, self.cfg
        if m.mean_luma < cfg.black_max_mean:
            cand.reasons.append(R_BLACK)
        elif m.bright_share >= cfg.overexposed_min_share:
            cand.reasons.append(R_OVEREXPOSED)
        elif m.edge_energy >= cfg.blur_min_edge_energy:  # too little edge to tell sharp from blurred
            cand.blur_judged = True

    def _step_m(self, a: int, b: int) -> float:
        """How far the camera went between two logged states, turning counted as metres."""
        log = self.log
        dx = log.col("cam_x_m")[b] - log.col("cam_x_m")[a]
        dy = log.col("cam_y_m")[b] - log.col("cam_y_m")[a]
        dz = log.col("cam_z_m")[b] - log.col("cam_z_m")[a]
        turn = abs((log.col("cam_yaw_deg")[b] - log.col("cam_yaw_deg")[a] + 180.0) % 360.0 - 180.0)
        return math.sqrt(dx * dx + dy * dy + dz * dz) + turn * self.cfg.frozen_m_per_deg

    def _frozen_rule(self, before: Candidate | None, mid: Candidate, after: Candidate) -> None:
        # A repeated picture changes no pixel by more than the codec's refinement although the camera
        # moved (any real motion moves some edge by a pixel), and the next picture then catches up.
        # Per metre of logged motion the frame's change must be far below the next one's, which must
        # itself be an ordinary visible change (not a cut, a flicker, a blur or an exposure failure).
        cfg = self.cfg
        if before is None or mid.change is None or after.change is None or \
                None in (before.pictured, mid.pictured, after.pictured):
            return
        if {R_BLACK, R_OVEREXPOSED} & set(after.reasons) or {R_BLACK, R_OVEREXPOSED} & set(before.reasons):
            return
        if after.blur_judged and mid.blur_judged and self._fades(after.metrics, mid.metrics):
            return  # the next picture is blurred: its change says nothing about this frame's
        step_in, step_out = self._step_m(before.pictured, mid.pictured), self._step_m(mid.pictured, after.pictured)
        if step_in < cfg.frozen_min_motion_m or step_out < cfg.frozen_min_motion_m:
            return
        if len(self._changes) < 5:
            return
        usual = float(np.median(self._changes))
        d_in, d_out = mid.change, after.change
        if d_in < cfg.frozen_max_mad and mid.moved_share <= cfg.frozen_max_moved_share and \
                cfg.frozen_min_next_mad <= d_out <= cfg.frozen_max_next_ratio * usual and \
                d_in / step_in < cfg.frozen_ratio * (d_out / step_out):
            mid.reasons.append(R_FROZEN)

    def _flicker_rule(self, before: Candidate | None, mid: Candidate, after: Candidate) -> None:
        if before is None:
            return
        cfg = self.cfg
        d_prev = mid.change
        d_next = after.change
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
