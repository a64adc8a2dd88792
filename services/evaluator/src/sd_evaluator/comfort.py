"""Bench2Drive's comfort ("driving smoothness") from a route's per-tick ego motion.

A CARLA run alone does not give it: Bench2Drive's agent wrapper writes each route's ego acceleration,
angular velocity and heading vectors per tick into `<save_name>/metric_info.json`. A route is cut into
20-tick segments (the last, shorter one dropped; a route of at most 20 ticks is one segment); a segment
is comfortable when its smoothed longitudinal and lateral acceleration, jerks, yaw rate and "yaw
acceleration" all stay strictly inside the bounds below. A route's comfort is the share of comfortable
segments; the run's is the mean over routes. As in Bench2Drive, the yaw-acceleration check is applied to
the smoothed yaw rate (its filter takes no derivative there), and the bounds are compared with the
angular velocity as recorded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_ABS_MAG_JERK_MPS3 = 8.37
MAX_ABS_LAT_ACCEL_MPS2 = 4.89
MAX_LON_ACCEL_MPS2 = 2.40
MIN_LON_ACCEL_MPS2 = -4.05
MAX_ABS_YAW_ACCEL_RADPS2 = 1.93
MAX_ABS_LON_JERK_MPS3 = 4.13
MAX_ABS_YAW_RATE_RADPS = 0.95

FILTER_WINDOW_TICKS = 7
FILTER_POLY_ORDER = 2
TICK_S = 0.1
SEGMENT_TICKS = 20


class ComfortError(ValueError):
    """Ego-motion input the comfort metric cannot use; the message names the file or the field."""


@dataclass(frozen=True)
class EgoMotion:
    """Per-tick ego motion of one route, each an (N, 3) array in the world frame."""

    acceleration: np.ndarray
    angular_velocity: np.ndarray
    forward_vector: np.ndarray
    right_vector: np.ndarray

    def __len__(self) -> int:
        return len(self.acceleration)

    def ticks(self, start: int, stop: int) -> EgoMotion:
        """The ticks [start, stop) of this motion."""
        return EgoMotion(
            *(
                a[start:stop]
                for a in (self.acceleration, self.angular_velocity, self.forward_vector, self.right_vector)
            )
        )


def read_metric_info(path: str | Path) -> EgoMotion:
    """The ego motion in a Bench2Drive metric_info.json (ticks in order, each with four vectors)."""
    path = Path(path)
    try:
        ticks = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ComfortError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(ticks, dict) or not ticks:
        raise ComfortError(f"{path}: expected an object of ticks")
    columns = {}
    for name in ("acceleration", "angular_velocity", "forward_vector", "right_vector"):
        try:
            columns[name] = np.array([tick[name] for tick in ticks.values()], dtype=float)
        except (KeyError, TypeError, ValueError) as exc:
            raise ComfortError(f"{path}: every tick needs a 3-vector {name!r}") from exc
        if columns[name].ndim != 2 or columns[name].shape[1] != 3:
            raise ComfortError(f"{path}: every tick needs a 3-vector {name!r}")
    return EgoMotion(**columns)


def savgol(y: np.ndarray, window: int, poly_order: int, deriv: int = 0, delta: float = 1.0) -> np.ndarray:
    """Savitzky-Golay filter: each point from a least-squares polynomial over the window centred on it;
    the first and last half-windows from the polynomial fitted to the first and last full window."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if not poly_order < window <= n:
        raise ComfortError(
            f"the filter needs poly_order < window <= samples, got {poly_order}, {window}, {n}"
        )
    t = np.arange(window, dtype=float)
    scale = math.factorial(deriv) / delta**deriv

    def fitted(values: np.ndarray, at: np.ndarray) -> np.ndarray:
        coeffs = np.polynomial.polynomial.polyfit(t, values, poly_order)
        return (
            np.polynomial.polynomial.polyval(at, np.polynomial.polynomial.polyder(coeffs, deriv))
            * delta**-deriv
        )

    if window == n:
        return fitted(y, t)
    if window % 2 == 0:
        raise ComfortError(f"the filter window must be odd when shorter than the signal, got {window}")
    half = window // 2
    # Row `deriv` of the least-squares fit at the window's centre.
    vander = np.vander(t - half, poly_order + 1, increasing=True)
    weights = np.linalg.pinv(vander)[deriv] * scale
    out = np.empty(n)
    out[half : n - half] = np.lib.stride_tricks.sliding_window_view(y, window) @ weights
    out[:half] = fitted(y[:window], t[:half])
    out[n - half :] = fitted(y[n - window :], t[window - half :])
    return out


def is_comfortable(motion: EgoMotion, tick_s: float = TICK_S) -> bool:
    """Whether every smoothed acceleration, jerk and yaw value of these ticks is inside the bounds."""
    window = min(FILTER_WINDOW_TICKS, len(motion))
    acc = motion.acceleration[:, :2]
    lon = np.einsum("ij,ij->i", acc, motion.forward_vector[:, :2])
    lat = np.einsum("ij,ij->i", acc, motion.right_vector[:, :2])
    magnitude = np.hypot(acc[:, 0], acc[:, 1])
    yaw_rate = _unwrap(motion.angular_velocity[:, 2])

    def smooth(y: np.ndarray, deriv: int = 0) -> np.ndarray:
        return savgol(y, window, FILTER_POLY_ORDER, deriv, tick_s)

    lon_s, lat_s, magnitude_s, yaw_rate_s = smooth(lon), smooth(lat), smooth(magnitude), smooth(yaw_rate)
    checks = (
        (lon_s, MIN_LON_ACCEL_MPS2, MAX_LON_ACCEL_MPS2),
        (lat_s, -MAX_ABS_LAT_ACCEL_MPS2, MAX_ABS_LAT_ACCEL_MPS2),
        (smooth(magnitude_s, 1), -MAX_ABS_MAG_JERK_MPS3, MAX_ABS_MAG_JERK_MPS3),
        (smooth(lon_s, 1), -MAX_ABS_LON_JERK_MPS3, MAX_ABS_LON_JERK_MPS3),
        (yaw_rate_s, -MAX_ABS_YAW_ACCEL_RADPS2, MAX_ABS_YAW_ACCEL_RADPS2),  # Bench2Drive's "yaw acceleration"
        (yaw_rate_s, -MAX_ABS_YAW_RATE_RADPS, MAX_ABS_YAW_RATE_RADPS),
    )
    return all(bool(np.all((v > lo) & (v < hi))) for v, lo, hi in checks)


def route_comfort(motion: EgoMotion) -> float:
    """The share of the route's full 20-tick segments that are comfortable (<= 20 ticks: 1 or 0)."""
    if len(motion) <= SEGMENT_TICKS:
        return 1.0 if is_comfortable(motion) else 0.0
    starts = range(0, len(motion) - SEGMENT_TICKS + 1, SEGMENT_TICKS)
    return sum(is_comfortable(motion.ticks(s, s + SEGMENT_TICKS)) for s in starts) / len(starts)


def _unwrap(headings: np.ndarray) -> np.ndarray:
    # Successive values brought within pi of each other by whole turns, as Bench2Drive does to the yaw rate.
    adjustments = np.zeros_like(headings)
    adjustments[1:] = np.cumsum(np.round(np.diff(headings) / (2 * np.pi)))
    return headings - 2 * np.pi * adjustments
