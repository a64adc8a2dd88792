"""The city frame's projection against an independent geodesic solution (Vincenty's inverse formula)."""

from __future__ import annotations

import math

import pytest
from sd_common.city.projection import LocalFrame, position_error_bound_m

A_M = 6378137.0
F = 1 / 298.257223563
B_M = A_M * (1 - F)
ORIGIN = (-73.980422, 40.731021)  # the shared sample's box centre


def vincenty_inverse(lon1: float, lat1: float, lon2: float, lat2: float) -> tuple[float, float]:
    """Geodesic distance (m) and initial azimuth (radians clockwise from north) on WGS84."""
    big_l = math.radians(lon2 - lon1)
    u1 = math.atan((1 - F) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - F) * math.tan(math.radians(lat2)))
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    lam = big_l
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        s_sig = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        if s_sig == 0:
            return 0.0, 0.0
        c_sig = su1 * su2 + cu1 * cu2 * cl
        sig = math.atan2(s_sig, c_sig)
        s_alpha = cu1 * cu2 * sl / s_sig
        c2_alpha = 1 - s_alpha * s_alpha
        c2_sm = c_sig - 2 * su1 * su2 / c2_alpha if c2_alpha else 0.0
        c = F / 16 * c2_alpha * (4 + F * (4 - 3 * c2_alpha))
        previous = lam
        lam = big_l + (1 - c) * F * s_alpha * (sig + c * s_sig * (c2_sm + c * c_sig * (-1 + 2 * c2_sm * c2_sm)))
        if abs(lam - previous) < 1e-13:
            break
    u_sq = c2_alpha * (A_M * A_M - B_M * B_M) / (B_M * B_M)
    k_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    k_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    d_sig = k_b * s_sig * (c2_sm + k_b / 4 * (c_sig * (-1 + 2 * c2_sm * c2_sm)
                                             - k_b / 6 * c2_sm * (-3 + 4 * s_sig * s_sig) * (-3 + 4 * c2_sm * c2_sm)))
    azimuth = math.atan2(cu2 * math.sin(lam), cu1 * su2 - su1 * cu2 * math.cos(lam))
    return B_M * k_a * (sig - d_sig), azimuth


def test_city_projection_origin_is_zero_and_axes_point_east_and_north() -> None:
    frame = LocalFrame(*ORIGIN)
    assert frame.to_local(*ORIGIN) == pytest.approx((0.0, 0.0), abs=1e-9)
    x, y = frame.to_local(ORIGIN[0] + 0.001, ORIGIN[1])
    assert x > 80 and abs(y) < 0.01  # 0.001 degree of longitude is about 84 m here
    x, y = frame.to_local(ORIGIN[0], ORIGIN[1] + 0.001)
    assert y > 110 and abs(x) < 1e-9


@pytest.mark.parametrize("distance_m", [100.0, 1000.0, 2000.0, 5000.0, 10000.0])
def test_city_projection_matches_geodesics_within_its_documented_bound(distance_m: float) -> None:
    """Points placed by the inverse land where Vincenty's geodesic says, within s^3/(6 R^2)."""
    frame = LocalFrame(*ORIGIN)
    worst = 0.0
    for k in range(24):
        azimuth = 2 * math.pi * k / 24
        x, y = distance_m * math.sin(azimuth), distance_m * math.cos(azimuth)
        lon, lat = frame.to_wgs84(x, y)
        assert frame.to_local(lon, lat) == pytest.approx((x, y), abs=1e-6)  # exact inverse
        s, alpha = vincenty_inverse(*ORIGIN, lon, lat)
        # Where an exact azimuthal-equidistant map would put the point.
        true_x, true_y = s * math.sin(alpha), s * math.cos(alpha)
        worst = max(worst, math.hypot(true_x - x, true_y - y))
    assert worst <= position_error_bound_m(distance_m) + 1e-6  # plus a micrometre of rounding
    if distance_m <= 5000:
        assert worst < 0.001  # under a millimetre across any city box of 10 km


def test_city_projection_keeps_local_lengths_and_areas() -> None:
    """A 10 m square 3 km from the origin keeps its side lengths to 1e-6 (area to 2e-6)."""
    frame = LocalFrame(*ORIGIN)
    far = LocalFrame(*frame.to_wgs84(2100.0, -2100.0))
    corners = [far.to_wgs84(dx, dy) for dx, dy in ((0, 0), (10, 0), (10, 10), (0, 10))]
    for (lon1, lat1), (lon2, lat2) in zip(corners, corners[1:] + corners[:1]):
        x1, y1 = frame.to_local(lon1, lat1)
        x2, y2 = frame.to_local(lon2, lat2)
        geodesic, _ = vincenty_inverse(lon1, lat1, lon2, lat2)
        assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(geodesic, rel=1e-6)


def test_city_projection_refuses_a_bad_origin() -> None:
    with pytest.raises(ValueError, match="not a WGS84"):
        LocalFrame(-73.98, 95.0)
