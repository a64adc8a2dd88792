"""MOTION: the video's own ego motion, from dense optical flow, against the logged motion of its states.

Between two consecutive output pictures the camera turned by the difference of the logged camera yaws
of the states they show. Dense optical flow (OpenCV's Farneback) on the pictures' luma at a low
resolution measures it independently of the log: for a camera that turns about its vertical axis by
``w`` and moves along its optical axis, a pixel at normalised coordinates (x, y) = ((u - cx) / fx,
(v - cy) / fy) flows by ``du = fx (1 + x^2) w + x fx T/Z`` and ``dv = fx x y w + y fy T/Z``, so
``(du - (x / y) dv) / fx = w`` whatever the pixel's depth Z. The median over the textured pixels away
from the horizon is the video's turn. A segment whose video turns differ from its logged turns by more
than noise allows (``MotionConfig``) shows another drive than the one logged.

What it cannot tell: two drives that both go straight at similar speeds look alike to it; the replay
rule (sd_processor.replay) is what ties the states to the inputs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from .config import MotionConfig
from .framelog import FrameLog
from .geometry import CropPlan

S_MOTION = "video_motion_contradicts_log"


@dataclass
class MotionPair:
    """Two consecutive pictures: the log lines of the states they show and the turn the video shows."""

    line_a: int
    line_b: int
    video_turn_deg: float  # nan where too little of the picture is textured to tell


@dataclass
class MotionMeter:
    """Measures the turn between consecutive pictures as they stream past (call ``push`` in decode order)."""

    plan: CropPlan
    cfg: MotionConfig
    pairs: deque[MotionPair] = field(default_factory=deque)  # measured, not yet behind a closed segment

    def __post_init__(self) -> None:
        out = self.plan.output
        w = self.cfg.flow_width
        self.scale = w / self.plan.output_width
        self.size = (w, max(8, round(self.plan.output_height * self.scale)))
        h = self.size[1]
        fx, fy = out.fx * self.scale, out.fy * self.scale
        cx, cy = out.cx * self.scale - 0.5, out.cy * self.scale - 0.5  # pixel centres of the small picture
        xs = (np.arange(w, dtype=np.float32) - cx) / fx
        ys = (np.arange(h, dtype=np.float32) - cy) / fy
        self.xn, self.yn = np.meshgrid(xs, ys)
        self.fx = fx
        self.away = np.abs(self.yn) >= self.cfg.min_abs_y  # the horizon row divides by ~0
        self.ratio = np.where(self.away, self.xn / np.where(self.away, self.yn, 1.0), 0.0).astype(np.float32)
        self._prev: tuple[np.ndarray, int] | None = None

    def push(self, y: np.ndarray | None, pictured: int | None) -> None:
        """The next decoded output picture (full-range luma) and the line whose state it shows."""
        if y is None or pictured is None:
            self._prev = None
            return
        small = cv2.resize(y, self.size, interpolation=cv2.INTER_AREA)
        prev = self._prev
        self._prev = (small, pictured)
        if prev is None or prev[1] == pictured:
            return  # the same state shown again (a repeated diffusion picture): no motion to compare
        self.pairs.append(MotionPair(prev[1], pictured, self.turn_deg(prev[0], small)))

    def take(self, lines: list[int]) -> list[MotionPair]:
        """The measured pairs inside the span of a closing segment's lines; forgets the pairs before it
        (segments close in order, so no later segment reaches back to them)."""
        if not lines:
            return []
        lo, hi = min(lines), max(lines)
        while self.pairs and self.pairs[0].line_a < lo:
            self.pairs.popleft()
        return [p for p in self.pairs if p.line_b <= hi and p.line_a < p.line_b]

    def turn_deg(self, a: np.ndarray, b: np.ndarray) -> float:
        """The camera's turn from picture a to picture b, degrees counter-clockwise (nan: not enough texture)."""
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
        gx = cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3)
        use = ((gx * gx + gy * gy) >= self.cfg.min_gradient2) & self.away
        if use.mean() < self.cfg.min_textured_share:
            return math.nan
        w = (flow[..., 0][use] - self.ratio[use] * flow[..., 1][use]) / self.fx
        return math.degrees(float(np.median(w)))


def logged_turns_deg(log: FrameLog, pairs: list[MotionPair]) -> np.ndarray:
    """The logged camera yaw change of each pair, degrees, wrapped to [-180, 180)."""
    yaw = log.col("cam_yaw_deg")
    a = np.array([p.line_a for p in pairs], dtype=np.int64)
    b = np.array([p.line_b for p in pairs], dtype=np.int64)
    return (yaw[b] - yaw[a] + 180.0) % 360.0 - 180.0


def segment_motion(log: FrameLog, pairs: list[MotionPair], trim_share: float = 0.0) -> dict[str, float] | None:
    """The video's and the log's turns over a segment's pairs (MotionMeter.take); None without any.

    ``residual_rms_deg`` leaves out the ``trim_share`` of pairs that differ most: a cut in the picture (a
    diffusion stream that falls back to the plain render, a flicker) makes a flow of one pair meaningless.
    """
    inside = [p for p in pairs if math.isfinite(p.video_turn_deg)]
    if not inside:
        return None
    video = np.array([p.video_turn_deg for p in inside])
    logged = logged_turns_deg(log, inside)
    residual = np.sort(np.abs(video - logged))
    kept = residual[:max(1, len(residual) - int(trim_share * len(residual)))]
    return {"pairs": float(len(inside)), "video_rms_deg": float(np.sqrt(np.mean(video ** 2))),
            "log_rms_deg": float(np.sqrt(np.mean(logged ** 2))),
            "residual_rms_deg": float(np.sqrt(np.mean(kept ** 2))),
            "log_turn_deg": float(np.sum(logged)), "video_turn_deg": float(np.sum(video))}


def segment_reasons(stats: dict[str, float] | None, cfg: MotionConfig) -> list[str]:
    """``video_motion_contradicts_log`` when the video's turns differ from the log's beyond noise."""
    if stats is None or stats["pairs"] < cfg.min_pairs:
        return []
    allowed = cfg.residual_floor_deg + cfg.residual_share * stats["log_rms_deg"]
    return [S_MOTION] if stats["residual_rms_deg"] > allowed else []
