"""The route planner driven along a synthetic global plan (straight, left turn, lane follow, right turn,
lane change, straight through a junction): the command at every step is the option of the route a
reached-radius ahead of the car, both with the leaderboard's GNSS plan and GNSS readings and with a
world-coordinate plan."""

from __future__ import annotations

import enum
import math

import carla
import numpy as np
import pytest

from sd_evaluator.carla.route_planner import (
    EARTH_RADIUS_EQUA_M,
    GeoReference,
    RoutePlanError,
    RoutePlanner,
    TransverseMercator,
    reference_from_plan,
    road_option,
)

LEFT, RIGHT, STRAIGHT, FOLLOW, CHANGE_LEFT = 1, 2, 3, 4, 5
RADIUS_M = 7.5


class LeaderboardRoadOption(enum.Enum):
    """Stands for `agents.navigation.local_planner.RoadOption`, which the plan's options are in a real run."""

    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5


def synthetic_route(hop_m: float = 1.0) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(points [N, 2] in CARLA world metres, option per point, arc length per point) at `hop_m` spacing."""
    pieces: list[tuple[int, np.ndarray]] = []
    pos, heading = np.array([10.0, -20.0]), 0.0  # heading in CARLA's yaw: clockwise from +x (y points south)

    def straight(length, option):
        nonlocal pos
        n = max(1, round(length / hop_m))
        d = np.array([math.cos(heading), math.sin(heading)])
        pts = pos + np.outer(np.arange(1, n + 1) * (length / n), d)
        pieces.append((option, pts))
        pos = pts[-1]

    def turn(radius, degrees, option):
        nonlocal pos, heading
        sign = 1.0 if degrees > 0 else -1.0  # positive: clockwise (a right turn in CARLA's frame)
        centre = pos + radius * np.array([-math.sin(heading), math.cos(heading)]) * sign
        start = math.atan2(pos[1] - centre[1], pos[0] - centre[0])
        n = max(2, round(abs(math.radians(degrees)) * radius / hop_m))
        angles = start + sign * np.linspace(0, abs(math.radians(degrees)), n + 1)[1:]
        pts = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        pieces.append((option, pts))
        pos, heading = pts[-1], heading + math.radians(degrees)

    def lane_change(length, offset, option):
        nonlocal pos
        n = round(length / hop_m)
        d = np.array([math.cos(heading), math.sin(heading)])
        side = np.array([math.sin(heading), -math.cos(heading)])  # to the left in CARLA's frame
        t = np.arange(1, n + 1) / n
        pts = pos + np.outer(t * length, d) + np.outer(offset * (3 * t**2 - 2 * t**3), side)
        pieces.append((option, pts))
        pos = pts[-1]

    straight(40, FOLLOW)
    turn(12, -90, LEFT)
    straight(30, FOLLOW)
    turn(12, 90, RIGHT)
    straight(20, FOLLOW)
    lane_change(15, 3.5, CHANGE_LEFT)
    straight(20, FOLLOW)
    straight(20, STRAIGHT)
    straight(30, FOLLOW)
    points = [np.array([10.0, -20.0])]
    options = [FOLLOW]
    for option, pts in pieces:
        points.extend(pts)
        options.extend([option] * len(pts))
    points = np.array(points)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return points, options, arc


def _drive(planner: RoutePlanner, points, options, arc, reading) -> tuple[int, list[int]]:
    """Drives along the route in 0.5 m steps; returns (steps checked, the distinct commands in order)."""
    checked, sequence = 0, []
    boundaries = arc[[i for i in range(1, len(options)) if options[i] != options[i - 1]]]
    for s in np.arange(0.0, arc[-1] - RADIUS_M - 1.0, 0.5):
        x = np.interp(s, arc, points[:, 0])
        y = np.interp(s, arc, points[:, 1])
        command = planner.step(reading(x, y))
        if not sequence or sequence[-1] != command:
            sequence.append(command)
        # The command is the option of the route a reached-radius ahead (chord and arc differ by < 0.2 m on
        # these turns); near a boundary either side is right.
        ahead = s + RADIUS_M
        if np.min(np.abs(boundaries - ahead)) < 1.5:
            continue
        expected = options[int(np.searchsorted(arc, ahead, side="right"))]
        assert command == expected, f"at {s:.1f} m along the route: command {command}, expected {expected}"
        checked += 1
    return checked, sequence


EXPECTED_SEQUENCE = [FOLLOW, LEFT, FOLLOW, RIGHT, FOLLOW, CHANGE_LEFT, FOLLOW, STRAIGHT, FOLLOW]


def test_gnss_plan_and_gnss_readings_give_each_steps_command():
    points, options, arc = synthetic_route()
    geo = GeoReference(49.0, 8.0)  # the map's geo-reference, which a SENSORS agent is never told
    plan = []
    for (x, y), option in zip(points, options):
        lat, lon = geo.to_gnss(x, y)
        plan.append(({"lat": lat, "lon": lon, "z": 0.0}, LeaderboardRoadOption(option)))
    planner = RoutePlanner(plan, reached_radius_m=RADIUS_M)

    def gnss(x, y):
        lat, lon = geo.to_gnss(x, y)
        return np.array([lat, lon, 0.3])  # as the GNSS sensor's reading: [lat, lon, altitude]

    checked, sequence = _drive(planner, points, options, arc, gnss)
    assert sequence == EXPECTED_SEQUENCE and checked > 300
    assert planner.target_index > len(points) - 12  # near the end of the 1 m route


def test_world_plan_with_carla_transforms():
    points, options, arc = synthetic_route(hop_m=2.0)
    plan = [(carla.Transform(carla.Location(x=float(x), y=float(y), z=0.0)), option)
            for (x, y), option in zip(points, options)]
    planner = RoutePlanner(plan, reached_radius_m=RADIUS_M)
    checked, sequence = _drive(planner, points, options, arc, lambda x, y: carla.Location(x=x, y=y, z=0.0))
    assert sequence == EXPECTED_SEQUENCE and checked > 300


def test_the_route_end_stays_the_target_and_a_far_car_does_not_advance():
    planner = RoutePlanner([((0, 0), 4), ((10, 0), 1), ((20, 0), 4)], reached_radius_m=3.0)
    assert planner.step((0.0, 50.0)) == 1 and planner.target_index == 1  # nothing within reach: no progress
    assert planner.step((9.0, 0.5)) == 4 and planner.target_index == 2
    assert planner.step((20.0, 0.0)) == 4 and planner.target_index == 2  # the last waypoint stays the target


def test_lookahead_keeps_a_route_that_passes_near_itself():
    # Out 30 m east, back 4 m to the south: the way back passes within the radius of the start.
    out = [((float(x), 0.0), 4) for x in range(0, 31, 2)]
    back = [((float(x), 4.0), 2 if x > 20 else 4) for x in range(30, -1, -2)]
    planner = RoutePlanner(out + back, reached_radius_m=5.0, lookahead_m=20.0)
    planner.step((0.0, 0.0))
    assert planner.target_index <= 3  # not jumped to the way back's end near the start


def test_geo_reference_is_the_leaderboards_projection():
    geo = GeoReference(42.0, 2.0)
    assert geo.to_gnss(0.0, 0.0) == pytest.approx((42.0, 2.0), abs=1e-12)
    scale = math.cos(math.radians(42.0))
    lat, lon = geo.to_gnss(1000.0, 0.0)
    assert lon == pytest.approx(2.0 + math.degrees(1000.0 / (EARTH_RADIUS_EQUA_M * scale)), abs=1e-12)
    assert lat == pytest.approx(42.0, abs=1e-12)
    lat, _ = geo.to_gnss(0.0, 1000.0)  # CARLA's +y is south
    assert lat < 42.0
    for x, y in ((123.4, -567.8), (-2500.0, 1800.0)):
        assert geo.to_world(*geo.to_gnss(x, y)) == pytest.approx((x, y), abs=1e-6)


def test_bad_plans_are_named():
    with pytest.raises(RoutePlanError, match="empty"):
        RoutePlanner([])
    with pytest.raises(RoutePlanError, match="not one of CARLA's RoadOption"):
        RoutePlanner([((0, 0), 9)])
    with pytest.raises(RoutePlanError, match="mixes GNSS and world"):
        RoutePlanner([({"lat": 1.0, "lon": 2.0, "z": 0.0}, 4), ((0, 0), 4)])
    assert road_option("changelaneright") == 6 and road_option(LeaderboardRoadOption.LEFT) == 1


# A one-road OpenDRIVE map with a geo-reference: `carla.Map` (the client library, no server) converts world
# positions to GNSS exactly as CARLA 0.9.16's map, and so its GNSS sensor, does.
XODR = """<?xml version="1.0" standalone="yes"?>
<OpenDRIVE>
  <header revMajor="1" revMinor="4" name="probe" version="1" north="0" south="0" east="0" west="0">
    <geoReference><![CDATA[+proj=tmerc +lat_0={lat} +lon_0={lon} +k=1 +x_0=0 +y_0=0 +datum=WGS84 +units=m]]></geoReference>
  </header>
  <road name="r" length="100" id="1" junction="-1">
    <link/>
    <planView><geometry s="0" x="0" y="0" hdg="0" length="100"><line/></geometry></planView>
    <elevationProfile/><lateralProfile/>
    <lanes><laneSection s="0">
      <center><lane id="0" type="driving" level="false"><link/></lane></center>
      <right><lane id="-1" type="driving" level="false"><link/><width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane></right>
    </laneSection></lanes>
  </road>
</OpenDRIVE>"""


def carla_map(lat: float, lon: float) -> carla.Map:
    return carla.Map("probe", XODR.format(lat=lat, lon=lon))


@pytest.mark.parametrize("ref", [(49.0, 8.0), (0.0, 0.0), (42.0, 2.0)])
def test_carla_0916_gnss_is_read_back_to_the_world_position(ref):
    world_map = carla_map(*ref)
    projection = TransverseMercator(*ref)
    for x, y in ((0.0, 0.0), (1234.5, -678.9), (-4800.0, 5100.0), (30.0, 2.0)):
        g = world_map.transform_to_geolocation(carla.Location(x=x, y=y, z=0.0))
        assert projection.to_world(g.latitude, g.longitude) == pytest.approx((x, y), abs=1e-4)
        # Read through the leaderboard's formula instead, the y comes back mirrored: why the planner needs it.
        if abs(y) > 100:
            assert GeoReference(*ref).to_world(g.latitude, g.longitude)[1] == pytest.approx(-y, rel=0.01)


@pytest.mark.parametrize("ref", [(49.0, 8.0), (0.0, 0.0), (-33.5, 150.2)])
def test_the_maps_geo_reference_is_recovered_from_the_two_plans(ref):
    points, options, _ = synthetic_route()
    points = points + np.array([2500.0, -1800.0])  # a route far from the map's origin
    geo = GeoReference(*ref)
    plan_gnss = [({"lat": lat, "lon": lon, "z": 0.0}, o) for (lat, lon), o in
                 ((geo.to_gnss(x, y), o) for (x, y), o in zip(points, options))]
    plan_world = [(carla.Location(x=float(x), y=float(y)), o) for (x, y), o in zip(points, options)]
    found = reference_from_plan(plan_gnss, plan_world)
    assert (found.lat_ref_deg, found.lon_ref_deg) == pytest.approx(ref, abs=1e-9)


def test_world_plan_with_carla_0916_gnss_readings_gives_each_steps_command():
    """As the agent runs on CARLA 0.9.16: the world plan, the reference from the two plans, the sensor's GNSS."""
    points, options, arc = synthetic_route()
    geo, world_map = GeoReference(49.0, 8.0), carla_map(49.0, 8.0)
    plan_gnss = [({"lat": a, "lon": b, "z": 0.0}, o) for (a, b), o in ((geo.to_gnss(x, y), o)
                                                                       for (x, y), o in zip(points, options))]
    plan_world = [(carla.Transform(carla.Location(x=float(x), y=float(y))), LeaderboardRoadOption(o))
                  for (x, y), o in zip(points, options)]
    ref = reference_from_plan(plan_gnss, plan_world)
    planner = RoutePlanner(plan_world, reached_radius_m=RADIUS_M,
                           gnss_projection=TransverseMercator(ref.lat_ref_deg, ref.lon_ref_deg))

    def gnss(x, y):
        g = world_map.transform_to_geolocation(carla.Location(x=float(x), y=float(y), z=0.0))
        return np.array([g.latitude, g.longitude, g.altitude])

    checked, sequence = _drive(planner, points, options, arc, gnss)
    assert sequence == EXPECTED_SEQUENCE and checked > 300
