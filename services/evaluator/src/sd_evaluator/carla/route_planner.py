"""The navigation command along the leaderboard's global plan, advanced as the car drives.

The leaderboard hands a SENSORS-track agent its route as a list of (point, RoadOption): the point as
GNSS (`{"lat", "lon", "z"}`, converted from the world by the leaderboard's Mercator projection around
the map's geo-reference) or as a world transform. The car knows where it is from its GNSS sensor,
whose projection depends on the CARLA version (`TransverseMercator` for 0.9.16, `GeoReference` for the
leaderboard's own conversion and CARLA 0.9.15; they disagree on the sign of y).
`RoutePlanner.step(position)` drops every waypoint the car has come within `reached_radius_m` of
(looking no further than `lookahead_m` along the route, so a route that passes near itself is not
cut short) and answers the RoadOption of the next waypoint still ahead: the command the dataset's
frames were labelled with (approaching or inside a junction: its turn; elsewhere: follow the lane).

Pure Python: no CARLA server or `carla` package needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sd_common.session_format.spec import RoadOption

EARTH_RADIUS_EQUA_M = 6378137.0  # the leaderboard's (and CARLA's GNSS sensor's) equatorial radius
# The geo-reference the leaderboard assumes when a map's OpenDRIVE header names none.
DEFAULT_LAT_REF_DEG = 42.0
DEFAULT_LON_REF_DEG = 2.0


class RoutePlanError(ValueError):
    """A global plan the planner cannot use (empty, or a point or option of an unknown form)."""


@dataclass(frozen=True)
class GeoReference:
    """The Mercator projection between CARLA's world (x east, y south: left-handed, metres) and GNSS degrees,
    around a reference latitude/longitude, as the leaderboard converts its route to GNSS."""

    lat_ref_deg: float = DEFAULT_LAT_REF_DEG
    lon_ref_deg: float = DEFAULT_LON_REF_DEG

    @property
    def _scale(self) -> float:
        return math.cos(math.radians(self.lat_ref_deg))

    def _mercator(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        s = self._scale
        east = s * EARTH_RADIUS_EQUA_M * math.radians(lon_deg)
        north = s * EARTH_RADIUS_EQUA_M * math.log(math.tan(math.radians(90.0 + lat_deg) / 2))
        return east, north

    def to_world(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """World (x, y) in metres of a GNSS reading; exact when the reference is the map's own."""
        east, north = self._mercator(lat_deg, lon_deg)
        east0, north0 = self._mercator(self.lat_ref_deg, self.lon_ref_deg)
        return east - east0, -(north - north0)  # CARLA's y points south

    def to_gnss(self, x_m: float, y_m: float) -> tuple[float, float]:
        """(lat, lon) in degrees of a world position (the leaderboard's conversion of its route)."""
        s = self._scale
        east0, north0 = self._mercator(self.lat_ref_deg, self.lon_ref_deg)
        east, north = east0 + x_m, north0 - y_m
        lon = math.degrees(east / (EARTH_RADIUS_EQUA_M * s))
        lat = math.degrees(2 * math.atan(math.exp(north / (EARTH_RADIUS_EQUA_M * s)))) - 90.0
        return lat, lon


@dataclass(frozen=True)
class TransverseMercator:
    """CARLA 0.9.16's GNSS projection: a spherical transverse Mercator (scale 0.9996) around the map's
    geo-reference, with latitude growing towards CARLA's +y. (CARLA 0.9.15 and the leaderboard's route
    conversion use `GeoReference`'s Mercator, in which latitude grows towards -y: the two disagree on
    the sign of y, so a 0.9.16 GNSS reading must not be read back through the leaderboard's formula.)"""

    lat_ref_deg: float
    lon_ref_deg: float
    scale: float = 0.9996

    def to_world(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """World (x, y) in metres of a GNSS reading of the sensor."""
        phi, dlam = math.radians(lat_deg), math.radians(lon_deg - self.lon_ref_deg)
        b = math.cos(phi) * math.sin(dlam)
        x = 0.5 * self.scale * EARTH_RADIUS_EQUA_M * math.log((1 + b) / (1 - b))
        y = self.scale * EARTH_RADIUS_EQUA_M * (math.atan2(math.tan(phi), math.cos(dlam))
                                                - math.radians(self.lat_ref_deg))
        return x, y


def reference_from_plan(plan_gnss: Sequence[tuple[Any, Any]], plan_world: Sequence[tuple[Any, Any]]) -> GeoReference:
    """The map's geo-reference, recovered from the leaderboard's two forms of one route (its GNSS points are
    its world points through `GeoReference.to_gnss`), which a SENSORS-track agent is otherwise not told."""
    if not plan_gnss or len(plan_gnss) != len(plan_world) or not _is_gnss(plan_gnss[0][0]):
        raise RoutePlanError("the GNSS and world plans must be the same non-empty route")
    world = [_world_xy(p) for p, _ in plan_world]
    x0, y0 = world[0]
    lat0, lon0 = float(plan_gnss[0][0]["lat"]), float(plan_gnss[0][0]["lon"])
    # Longitude is linear in x with slope 1 / (R cos(lat_ref)): the point farthest along x gives the scale.
    far = max(range(len(world)), key=lambda i: abs(world[i][0] - x0))
    dlon = float(plan_gnss[far][0]["lon"]) - lon0
    if abs(world[far][0] - x0) >= 1.0 and dlon != 0.0:
        scale = (world[far][0] - x0) / (EARTH_RADIUS_EQUA_M * math.radians(dlon))
    else:  # a route along y alone: the route's own latitude gives the scale to a part in 10^5
        scale = math.cos(math.radians(lat0))
    lon_ref = lon0 - math.degrees(x0 / (EARTH_RADIUS_EQUA_M * scale))
    north_ref = scale * EARTH_RADIUS_EQUA_M * math.log(math.tan(math.radians(90.0 + lat0) / 2)) + y0
    lat_ref = math.degrees(2 * math.atan(math.exp(north_ref / (EARTH_RADIUS_EQUA_M * scale)))) - 90.0
    return GeoReference(lat_ref, lon_ref)


def road_option(value: Any) -> int:
    """The RoadOption number of a plan's option: an int, a RoadOption of any enum class (the leaderboard's
    `agents.navigation.local_planner.RoadOption`), or its name."""
    if isinstance(value, bool):
        raise RoutePlanError(f"route option {value!r} is not a RoadOption")
    if isinstance(value, int):
        number = int(value)
    elif hasattr(value, "value") and isinstance(value.value, int):
        number = int(value.value)
    elif isinstance(value, str) and value.upper() in RoadOption.__members__:
        number = int(RoadOption[value.upper()])
    else:
        raise RoutePlanError(f"route option {value!r} is not a RoadOption")
    if number not in {int(o) for o in RoadOption}:
        raise RoutePlanError(f"route option {value!r} is not one of CARLA's RoadOption numbers")
    return number


def _is_gnss(point: Any) -> bool:
    return isinstance(point, dict) and "lat" in point and "lon" in point


def _world_xy(point: Any) -> tuple[float, float]:
    """(x, y) of a world point: a carla.Transform or Location, or an (x, y[, z]) sequence."""
    location = getattr(point, "location", point)
    if hasattr(location, "x") and hasattr(location, "y"):
        return float(location.x), float(location.y)
    if isinstance(point, Sequence) and not isinstance(point, str) and len(point) >= 2:
        return float(point[0]), float(point[1])
    raise RoutePlanError(f"route point {point!r} is neither GNSS ({{lat, lon, z}}) nor a world position")


class RoutePlanner:
    """Advances through a global plan as the car moves and answers the current navigation command."""

    def __init__(self, plan: Iterable[tuple[Any, Any]], *, reached_radius_m: float = 7.5,
                 lookahead_m: float = 50.0, geo: GeoReference | None = None,
                 gnss_projection: TransverseMercator | GeoReference | None = None):
        entries = list(plan)
        if not entries:
            raise RoutePlanError("the global plan is empty")
        if reached_radius_m <= 0 or lookahead_m < reached_radius_m:
            raise RoutePlanError(f"reached radius {reached_radius_m} m and lookahead {lookahead_m} m must satisfy "
                                 "0 < radius <= lookahead")
        self.gnss = _is_gnss(entries[0][0])
        if self.gnss and geo is None:
            # Distances need only a reference near the route: the first waypoint's latitude gives the
            # projection's scale within a part in 10^4 of the map's own over a CARLA town.
            first = entries[0][0]
            geo = GeoReference(float(first["lat"]), float(first["lon"]))
        self.geo = geo
        # With a world plan: how the car's GNSS readings become world positions (None: positions are given
        # in world coordinates).
        self.gnss_projection = gnss_projection
        self.reached_radius_m = float(reached_radius_m)
        self.lookahead_m = float(lookahead_m)
        self._points: list[tuple[float, float]] = []
        self._options: list[int] = []
        for i, (point, option) in enumerate(entries):
            if _is_gnss(point) != self.gnss:
                raise RoutePlanError(f"route point {i} mixes GNSS and world positions")
            self._points.append(self.position(point))
            self._options.append(road_option(option))
        self._index = 0  # the last waypoint reached; the next one is the target

    def position(self, point: Any) -> tuple[float, float]:
        """Planar metres of a GNSS reading ({lat, lon}, or [lat, lon, alt] as the GNSS sensor gives it) or
        of a world position, in the plan's frame. A world plan reads GNSS through `gnss_projection`."""
        if self.gnss:
            if _is_gnss(point):
                lat, lon = float(point["lat"]), float(point["lon"])
            elif isinstance(point, Sequence) or hasattr(point, "__len__"):
                lat, lon = float(point[0]), float(point[1])
            else:
                raise RoutePlanError(f"position {point!r} is not a GNSS reading")
            return self.geo.to_world(lat, lon)
        if self.gnss_projection is not None and not hasattr(point, "x") and not hasattr(point, "location"):
            lat, lon = (float(point["lat"]), float(point["lon"])) if _is_gnss(point) else (float(point[0]),
                                                                                         float(point[1]))
            return self.gnss_projection.to_world(lat, lon)
        return _world_xy(point)

    @property
    def remaining(self) -> int:
        """Waypoints not yet reached (the last one always counts until the route ends)."""
        return len(self._points) - self._index

    @property
    def target_index(self) -> int:
        """The index in the plan of the waypoint the car is heading for."""
        return min(self._index + 1, len(self._points) - 1)

    def step(self, position: Any) -> int:
        """The command (RoadOption number) at `position` (GNSS reading or world position)."""
        x, y = self.position(position)
        travelled, last_reached = 0.0, None
        for i in range(self._index + 1, len(self._points)):
            px, py = self._points[i]
            qx, qy = self._points[i - 1]
            travelled += math.hypot(px - qx, py - qy)
            if i > self._index + 1 and travelled > self.lookahead_m:
                break
            if math.hypot(px - x, py - y) <= self.reached_radius_m:
                last_reached = i
        if last_reached is not None:
            # Keep the final waypoint as the target: the route's end is its own command.
            self._index = min(last_reached, len(self._points) - 2) if len(self._points) > 1 else 0
        return self._options[self.target_index]
