"""The city's criteria and infraction mapping on known game logs; every number is worked out by hand.

Penalties: vehicle 0.60, red light 0.70, a minimum-speed checkpoint at p% 0.7 + 0.3 p/100, outside the
route's lanes for p% of the driven route 1 - p/100.
"""

from __future__ import annotations

import pytest

from sd_evaluator.city.criteria import (
    BLOCKED_MAX_TIME_S,
    CriteriaError,
    RouteCriteria,
    route_timeout_s,
)
from sd_evaluator.city.infractions import InfractionMappingError, map_infraction, route_outcome
from sd_evaluator.scoring import Protocol, score_route

DT = 3 / 60  # one agent step: 3 ticks of the game's 60 Hz


def state(k: int, *, speed: float, progress: float, traffic: list[float], in_lanes: bool = True,
          off_route: float = 0.5, finished: bool = False, x: float = 1.0, y: float = 2.0) -> dict:
    return {"t_s": k * DT, "speed_mps": speed, "progress_m": progress, "route_length_m": 100.0,
            "finished": finished, "distance_off_route_m": off_route, "in_route_lanes": in_lanes,
            "traffic_speeds_mps": traffic, "pose": {"x_m": x, "y_m": y, "yaw_deg": 0.0}, "infractions": []}


def infraction(kind: str, **details) -> dict:
    return {"t_s": 1.0, "kind": kind, "x_m": 10.25, "y_m": -3.5, "details": details}


def test_each_game_infraction_maps_to_its_leaderboard_kind():
    cases = {
        "collision_pedestrian": ("collisions_pedestrian", {"other_id": "p-3", "speed_mps": 4.0},
                                 "Agent collided against object with type=walker and id=p-3 at (x=10.25, y=-3.5, z=0.0)"),
        "collision_vehicle": ("collisions_vehicle", {"other_id": "c-1", "speed_mps": 2.0},
                              "Agent collided against object with type=vehicle and id=c-1 at (x=10.25, y=-3.5, z=0.0)"),
        "collision_static": ("collisions_layout", {"other_id": "b-7", "speed_mps": 9.0},
                             "Agent collided against object with type=static and id=b-7 at (x=10.25, y=-3.5, z=0.0)"),
        "red_light": ("red_light", {"node_id": "n12", "edge_id": "e4"},
                      "Agent ran a red light n12 at (x=10.25, y=-3.5, z=0.0)"),
        "stop_sign": ("stop_infraction", {"node_id": "n3", "min_speed_mps": 3.1},
                      "Agent ran a stop with id=n3 at (x=10.25, y=-3.5, z=0.0)"),
    }
    for kind, (key, details, message) in cases.items():
        event = map_infraction(infraction(kind, **details))
        assert (event.kind, event.message) == (key, message)
    # Off road and wrong way are measured as distance outside the lanes, not counted one by one.
    assert map_infraction(infraction("off_road")) is None
    assert map_infraction(infraction("wrong_way", edge_id="e1")) is None
    with pytest.raises(InfractionMappingError, match="unknown game infraction kind 'speeding'"):
        map_infraction(infraction("speeding"))


def test_a_completed_route_with_collisions_min_speed_and_outside_lanes():
    # 100 m at 5 m/s, 0.25 m per step. Traffic around: two cars at 10 m/s until 50.5 m, then one at 5 m/s.
    # Checkpoints close once progress passes each quarter: at 25.25, 50.5 and 75.75 m, the last at the end.
    # Their windows: [0.25, 25] and [25.25, 50.25] at 50%, [50.5, 75.5] and [75.75, 100] at 100%.
    # Outside the lanes while progressing from 60 to 70 m: 10 m of the 100 m driven, 10%.
    crit = RouteCriteria(route_length_m=100.0, speed_limit_mps=10.0)
    end = None
    for k in range(1, 401):
        p = k * 0.25
        end = crit.update(state(k, speed=5.0, progress=p, traffic=[10.0, 10.0] if p < 50.5 else [5.0],
                                in_lanes=not 60 < p <= 70, finished=k == 400))
        if end:
            break
    assert end.reason == "completed" and k == 400
    log = [infraction("collision_vehicle", other_id="c-1"), infraction("off_road"),
           infraction("red_light", node_id="n2")]
    outcome = route_outcome("RouteScenario_0_rep0", 100.0, log, crit, end)
    assert crit.checkpoint_values == [50.0, 50.0, 100.0, 100.0]
    record = score_route(outcome, 0)
    assert record.infractions["collisions_vehicle"] == [
        "Agent collided against object with type=vehicle and id=c-1 at (x=10.25, y=-3.5, z=0.0)"]
    assert record.infractions["red_light"] == ["Agent ran a red light n2 at (x=10.25, y=-3.5, z=0.0)"]
    assert record.infractions["outside_route_lanes"] == [
        "Agent went outside its route lanes for about 10.0 meters (10.0% of the completed route)"]
    assert record.infractions["min_speed_infractions"] == [
        "Average speed is 50.0% of the surrounding traffic's one"] * 2
    # IP = 0.6 * 0.7 * 0.9 * 0.85 * 0.85 = 0.273105; RC 100; DS 27.3105.
    assert record.scores == {"score_route": 100.0, "score_penalty": 0.273105, "score_composed": 27.3105}
    assert record.status == "Completed"
    assert record.meta["duration_game"] == 20.0 and record.meta["route_length"] == 100.0
    # Bench2Drive keeps every checkpoint (and penalises none of them).
    crit_b2d = RouteCriteria(100.0, 10.0)
    for k in range(1, 401):
        p = k * 0.25
        crit_b2d.update(state(k, speed=5.0, progress=p, traffic=[10.0, 10.0] if p < 50.5 else [5.0],
                              in_lanes=not 60 < p <= 70, finished=k == 400))
    b2d = score_route(route_outcome("RouteScenario_0_rep0", 100.0, log, crit_b2d, end, protocol=Protocol.BENCH2DRIVE),
                      0, Protocol.BENCH2DRIVE)
    assert len(b2d.infractions["min_speed_infractions"]) == 4
    assert b2d.scores["score_penalty"] == round(0.6 * 0.7 * 0.9, 6)


def test_a_finished_route_is_exactly_complete():
    # 100 * 435.007 / 435.007 is 99.99999999999999 in floating point: a finished route must still be
    # Completed, not "Failed" at a completion that prints as 100.0.
    length = 435.007
    crit = RouteCriteria(length, 11.18)
    end = crit.update(state(1, speed=9.0, progress=length, traffic=[], finished=True))
    assert end.reason == "completed" and crit.route_completion_pct == 100.0
    record = score_route(route_outcome("RouteScenario_8_rep0", length, [], crit, end), 8)
    assert record.status == "Perfect"


def test_a_route_that_deviates_ends_there():
    crit = RouteCriteria(200.0, 10.0)
    end = None
    for k in range(1, 100):
        end = crit.update(state(k, speed=8.0, progress=min(k, 50) * 1.0, traffic=[],
                                off_route=0.0 if k <= 50 else (k - 50) * 0.75, x=7.0, y=-1.25))
        if end:
            break
    # 30 m is allowed; 30.75 m at k = 91 is not.
    assert (end.reason, k) == ("route_dev", 91)
    record = score_route(route_outcome("RouteScenario_1_rep0", 200.0, [], crit, end), 1)
    assert record.infractions["route_dev"] == ["Agent deviated from the route at (x=7.0, y=-1.25, z=0.0)"]
    assert record.status == "Failed - Agent deviated from the route"
    # RC 25. A checkpoint closes only once progress passes a quarter (50 m), and 25% < 95% closes none
    # at the end: no minimum-speed result, IP 1.
    assert crit.checkpoint_values == []
    assert record.scores == {"score_route": 25.0, "score_penalty": 1.0, "score_composed": 25.0}


def test_a_car_stopped_for_180_seconds_is_blocked():
    crit = RouteCriteria(100.0, 10.0)
    end = None
    k = 0
    while end is None:
        k += 1
        end = crit.update(state(k, speed=0.0 if k > 20 else 1.0, progress=5.0, traffic=[3.0]))
    # Below 0.1 m/s from step 21 on; blocked once more than 180 s have passed since.
    assert end.reason == "vehicle_blocked"
    assert BLOCKED_MAX_TIME_S < crit.t_s - 21 * DT <= BLOCKED_MAX_TIME_S + DT
    record = score_route(route_outcome("RouteScenario_2_rep0", 100.0, [], crit, end), 2)
    assert record.status == "Failed - Agent got blocked"
    assert record.infractions["vehicle_blocked"] == ["Agent got blocked at (x=1.0, y=2.0, z=0.0)"]
    assert record.scores["score_route"] == 5.0
    # The checkpoint was never reached: no minimum-speed result.
    assert record.infractions["min_speed_infractions"] == []


def test_a_slow_car_times_out_after_the_leaderboards_time():
    # 10 m of progress at a 10 m/s limit: 300 s + 10 m / 1 m/s = 310 s.
    assert route_timeout_s(10.0, 10.0) == 310.0
    assert route_timeout_s(0.0, 11.18) == 300.0
    crit = RouteCriteria(100.0, 10.0)
    end = None
    k = 0
    while end is None:
        k += 1
        end = crit.update(state(k, speed=0.5, progress=10.0, traffic=[]))
    assert end.reason == "route_timeout"
    assert 310.0 < crit.t_s <= 310.0 + DT
    record = score_route(route_outcome("RouteScenario_3_rep0", 100.0, [], crit, end), 3)
    assert record.status == "Failed - Agent timed out"
    assert record.infractions["route_timeout"] == ["Route timeout."]
    assert record.scores["score_composed"] == 10.0


def test_states_the_criteria_cannot_read_are_named():
    crit = RouteCriteria(100.0, 10.0)
    bad = state(1, speed=1.0, progress=1.0, traffic=[])
    bad["in_route_lanes"] = "yes"
    with pytest.raises(CriteriaError, match="in_route_lanes"):
        crit.update(bad)
    bad = state(1, speed=1.0, progress=1.0, traffic=[])
    del bad["speed_mps"]
    with pytest.raises(CriteriaError, match="speed_mps must be a number, got None"):
        crit.update(bad)
    with pytest.raises(CriteriaError, match="route length"):
        RouteCriteria(0.0, 10.0)
