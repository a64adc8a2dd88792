"""Bench2Drive's comfort on ego motions whose answer follows from its bounds (lon. accel. in
(-4.05, 2.40) m/s², lat. |a| < 4.89 m/s², lon. jerk |j| < 4.13 m/s³, yaw rate |w| < 0.95, 20-tick
segments of 0.1 s)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from leaderboard_files import ROUTES_XML, leaderboard_file

from sd_evaluator.comfort import (
    ComfortError,
    EgoMotion,
    is_comfortable,
    read_metric_info,
    route_comfort,
    savgol,
)
from sd_evaluator.report import build_report
from sd_evaluator.results import Results
from sd_evaluator.route_file import read_route_file


def straight(n: int, lon_accel=0.0, lat_accel=0.0, yaw_rate=0.0) -> EgoMotion:
    """Heading +x: forward (1, 0, 0), right (0, 1, 0); accelerations per tick (scalars or arrays)."""
    acc = np.zeros((n, 3))
    acc[:, 0], acc[:, 1] = lon_accel, lat_accel
    ang = np.zeros((n, 3))
    ang[:, 2] = yaw_rate
    return EgoMotion(acc, ang, np.tile([1.0, 0.0, 0.0], (n, 1)), np.tile([0.0, 1.0, 0.0], (n, 1)))


def test_savgol_keeps_a_quadratic_and_its_derivative_exactly():
    t = np.arange(15) * 0.1
    y = 3 * t**2 + 2 * t + 1
    np.testing.assert_allclose(savgol(y, 7, 2), y, atol=1e-9)
    np.testing.assert_allclose(savgol(y, 7, 2, deriv=1, delta=0.1), 6 * t + 2, atol=1e-9)
    np.testing.assert_allclose(savgol(y, 15, 2, deriv=1, delta=0.1), 6 * t + 2, atol=1e-9)  # window = signal


def test_savgol_uses_the_seven_point_quadratic_weights():
    # The 7-point quadratic smoothing weights are (-2, 3, 6, 7, 6, 3, -2) / 21; on +-1 alternating
    # samples each inside point becomes +-(2 + 3 - 6 + 7 - 6 + 3 + 2) / 21 = +-5/21.
    y = np.where(np.arange(21) % 2 == 0, 1.0, -1.0)
    np.testing.assert_allclose(savgol(y, 7, 2)[3:-3], 5 / 21 * y[3:-3], atol=1e-12)


def test_cruising_is_comfortable_everywhere():
    assert route_comfort(straight(60)) == 1.0


def test_one_hard_braking_segment_of_three():
    lon = np.zeros(65)
    lon[20:40] = -6.0  # below -4.05 for the whole second segment; ticks 60-64 make no full segment
    assert route_comfort(straight(65, lon_accel=lon)) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("kw", "comfortable"),
    [
        ({"lon_accel": 2.3}, True),
        ({"lon_accel": 2.5}, False),
        ({"lon_accel": -4.0}, True),
        ({"lon_accel": -4.1}, False),
        ({"lat_accel": 4.8}, True),
        ({"lat_accel": -5.0}, False),
        ({"yaw_rate": 0.9}, True),
        ({"yaw_rate": 1.0}, False),
    ],
)
def test_each_bound(kw, comfortable):
    assert is_comfortable(straight(20, **kw)) is comfortable


@pytest.mark.parametrize(("freq_hz", "comfortable"), [(0.2, True), (0.6, False)])
def test_longitudinal_jerk(freq_hz, comfortable):
    # lon. a = 2 sin(2 pi f t): jerk peaks at 2 * 2 pi f = 2.5 m/s³ at 0.2 Hz (inside 4.13), 7.5 at
    # 0.6 Hz (outside); lat. a = 2 cos(2 pi f t) keeps |a| at 2, so the magnitude's jerk is 0 and only
    # the longitudinal one counts
    phase = 2 * np.pi * freq_hz * np.arange(20) * 0.1
    motion = straight(20, lon_accel=2 * np.sin(phase), lat_accel=2 * np.cos(phase))
    assert is_comfortable(motion) is comfortable


def test_a_short_route_is_one_segment():
    assert route_comfort(straight(15)) == 1.0
    assert route_comfort(straight(15, lon_accel=3.0)) == 0.0


def metric_info(motion: EgoMotion) -> dict:
    return {
        str(i): {
            "acceleration": list(motion.acceleration[i]),
            "angular_velocity": list(motion.angular_velocity[i]),
            "forward_vector": list(motion.forward_vector[i]),
            "right_vector": list(motion.right_vector[i]),
            "location": [0.0, 0.0, 0.0],
            "rotation": [0.0, 0.0, 0.0],
        }
        for i in range(len(motion))
    }


def test_report_takes_comfort_from_each_routes_metric_info(tmp_path):
    lon = np.zeros(40)
    lon[:20] = -6.0
    for save_name, motion in (
        ("ParkedObstacle_1711_3", straight(40)),
        ("HardBreakRoute_2084_9", straight(40, lon)),
    ):
        (tmp_path / "metrics" / save_name).mkdir(parents=True)
        (tmp_path / "metrics" / save_name / "metric_info.json").write_text(json.dumps(metric_info(motion)))
    routes = tmp_path / "routes.xml"
    routes.write_text(ROUTES_XML)
    report = build_report(
        Results.from_json(leaderboard_file()), read_route_file(routes), metric_dir=tmp_path / "metrics"
    )
    assert report["bench2drive"]["comfort"] == pytest.approx((1.0 + 0.5) / 2)
    assert "bench2drive_comfort" not in report["not_computed"]
    (tmp_path / "metrics" / "HardBreakRoute_2084_9" / "metric_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="HardBreakRoute_2084_9"):
        build_report(
            Results.from_json(leaderboard_file()), read_route_file(routes), metric_dir=tmp_path / "metrics"
        )


def test_bad_metric_info_is_named(tmp_path):
    path = tmp_path / "metric_info.json"
    path.write_text(json.dumps({"0": {"acceleration": [0, 0, 0]}}))
    with pytest.raises(ComfortError, match="every tick needs a 3-vector 'angular_velocity'"):
        read_metric_info(path)
    path.write_text("{")
    with pytest.raises(ComfortError, match="not JSON"):
        read_metric_info(path)
