"""WGS84 longitude/latitude to the city's local metric frame, and back.

The local frame is the east-north-up (ENU) tangent plane of the WGS84 ellipsoid at the origin:
a point is placed on the ellipsoid (height 0), converted to Earth-centred coordinates and projected
orthogonally onto the plane that touches the ellipsoid at the origin; ``x`` is east and ``y`` north of
the origin, in metres. The mapping is exact geometry (no series truncation); its only error as a map
is the curvature of the Earth: a point a distance ``s`` from the origin lands ``s**3 / (6 R**2)``
short of its true distance (R ≈ 6.34e6 m at worst), i.e. 0.5 mm at 5 km and 4 mm at 10 km, and
lengths and areas near it shrink by at most ``s**2 / (2 R**2)`` (3e-7 at 5 km). See docs/city-format.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# WGS84 ellipsoid.
A_M = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
B_M = A_M * (1 - F)

# The smallest radius of curvature anywhere on the ellipsoid (meridian, at the equator): using it makes
# the curvature term below an upper bound for every origin.
MIN_RADIUS_M = A_M * (1 - E2)


def position_error_bound_m(distance_m: float) -> float:
    """Bound on how far a point ``distance_m`` from the origin lands from its true (geodesic) place."""
    return distance_m**3 / (6 * MIN_RADIUS_M**2)


class LocalFrame:
    """The ENU tangent plane at ``(origin_lon, origin_lat)``: to_local(lon, lat) -> (x_m, y_m) and back."""

    def __init__(self, origin_lon: float, origin_lat: float) -> None:
        if not (-180.0 <= origin_lon <= 180.0 and -90.0 < origin_lat < 90.0):
            raise ValueError(f"origin ({origin_lon}, {origin_lat}) is not a WGS84 longitude/latitude")
        self.origin_lon = origin_lon
        self.origin_lat = origin_lat
        phi0 = math.radians(origin_lat)
        self._lam0 = math.radians(origin_lon)
        self._sin0, self._cos0 = math.sin(phi0), math.cos(phi0)
        n0 = A_M / math.sqrt(1 - E2 * self._sin0**2)
        # Earth-centred coordinates of the origin in a frame turned so that the origin's meridian is
        # longitude 0: working with longitude differences keeps the large terms from cancelling badly.
        self._x0 = n0 * self._cos0
        self._z0 = n0 * (1 - E2) * self._sin0

    def to_local(self, lon: float, lat: float) -> tuple[float, float]:
        """(x_m east, y_m north) of a WGS84 point."""
        phi = math.radians(lat)
        dlam = math.radians(lon) - self._lam0
        sin_phi, cos_phi = math.sin(phi), math.cos(phi)
        n = A_M / math.sqrt(1 - E2 * sin_phi * sin_phi)
        p = n * cos_phi
        dx = p * math.cos(dlam) - self._x0
        dz = n * (1 - E2) * sin_phi - self._z0
        return p * math.sin(dlam), self._cos0 * dz - self._sin0 * dx

    def ring_to_local(self, ring: list[list[float]]) -> list[tuple[float, float]]:
        """Projects a list of [lon, lat, ...] positions (extra ordinates are ignored)."""
        to_local = self.to_local
        return [to_local(pos[0], pos[1]) for pos in ring]

    def flat_to_local(self, flat: Sequence[float]) -> list[tuple[float, float]]:
        """Projects a flat [lon0, lat0, lon1, lat1, ...] sequence."""
        to_local = self.to_local
        return [to_local(lon, lat) for lon, lat in zip(flat[0::2], flat[1::2], strict=True)]

    def to_wgs84(self, x_m: float, y_m: float) -> tuple[float, float]:
        """(lon, lat) of the ellipsoid point whose projection is (x_m, y_m): the exact inverse."""
        s0, c0 = self._sin0, self._cos0
        # The point on the plane, then along the origin's up vector (c0, 0, s0) down to the ellipsoid.
        ax = self._x0 - s0 * y_m
        ay = x_m
        az = self._z0 + c0 * y_m
        a2, b2 = A_M * A_M, B_M * B_M
        qa = c0 * c0 / a2 + s0 * s0 / b2
        qb = 2 * (ax * c0 / a2 + az * s0 / b2)
        qc = (ax * ax + ay * ay) / a2 + az * az / b2 - 1
        disc = qb * qb - 4 * qa * qc
        if disc < 0:
            raise ValueError(f"({x_m}, {y_m}) is farther from the origin than the Earth is wide")
        u = -2 * qc / (qb + math.sqrt(disc))  # the root near zero, without cancellation
        px, py, pz = ax + u * c0, ay, az + u * s0
        # On the ellipsoid surface the normal gives the geodetic latitude in closed form.
        lat = math.degrees(math.atan2(pz, (1 - E2) * math.hypot(px, py)))
        lon = math.degrees(self._lam0 + math.atan2(py, px))
        if lon > 180.0:
            lon -= 360.0
        elif lon < -180.0:
            lon += 360.0
        return lon, lat
