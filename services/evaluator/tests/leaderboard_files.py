"""A result file as leaderboard_evaluator.py writes it, for two Bench2Drive routes, written by hand.

Its records carry Bench2Drive's extra keys. Its numbers are worked out by hand:
- route 1711: completed, one vehicle collision (0.6), one minimum-speed checkpoint at 85% (1 - 0.3 * 0.15 =
  0.955): IP 0.573, DS 57.3; 1520.5 m.
- route 2084: blocked at 42.5%: IP 1, DS 42.5; 800 m.
- means over 2 routes: DS 49.9, RC 71.25, IP 0.7865; km driven 1.5205 + 0.8 * 0.425 = 1.8605, so each
  single infraction is 1 / 1.8605 = 0.537 per km.
"""

from __future__ import annotations

from sd_evaluator.results import INFRACTION_KEYS

# The route file of those two routes, and one more that was not driven.
ROUTES_XML = """<?xml version='1.0' encoding='utf-8'?>
<routes>
  <route id="1711" town="Town12">
    <waypoints><position x="-512.0" y="101.0" z="0.0"/><position x="-300.0" y="101.0" z="0.0"/></waypoints>
    <scenarios><scenario name="ParkedObstacle_1" type="ParkedObstacle"/></scenarios>
  </route>
  <route id="2084" town="Town13">
    <waypoints><position x="10.0" y="-3.0" z="0.0"/><position x="600.0" y="-3.0" z="0.0"/></waypoints>
    <scenarios><scenario name="HardBreakRoute_1" type="HardBreakRoute"/></scenarios>
  </route>
  <route id="3100" town="Town12">
    <waypoints><position x="0.0" y="0.0" z="0.0"/><position x="90.0" y="0.0" z="0.0"/></waypoints>
    <scenarios/>
  </route>
</routes>
"""


def empty_infractions() -> dict:
    return {k: [] for k in INFRACTION_KEYS}


def leaderboard_file() -> dict:
    r0 = empty_infractions()
    r0["collisions_vehicle"] = [
        "Agent collided against object with type=vehicle.tesla.model3 and id=412 at "
        "(x=-512.3, y=101.2, z=0.1)"
    ]
    r0["min_speed_infractions"] = ["Average speed is 85.0% of the surrounding traffic's one"]
    r1 = empty_infractions()
    r1["vehicle_blocked"] = ["Agent got blocked at (x=12.0, y=-3.5, z=0.0)"]
    g_infractions = {k: 0.0 for k in INFRACTION_KEYS}
    g_infractions.update(collisions_vehicle=0.537, min_speed_infractions=0.537, vehicle_blocked=0.537)
    return {
        "_checkpoint": {
            "global_record": {
                "index": -1,
                "route_id": -1,
                "status": "Failed",
                "infractions": g_infractions,
                "scores_mean": {"score_composed": 49.9, "score_route": 71.25, "score_penalty": 0.7865},
                "scores_std_dev": {"score_composed": 10.465, "score_route": 40.659, "score_penalty": 0.302},
                "meta": {
                    "total_length": 2320.5,
                    "duration_game": 301.5,
                    "duration_system": 612.25,
                    "exceptions": [["RouteScenario_2084_rep0", 1, "Failed - Agent got blocked"]],
                },
            },
            "progress": [2, 2],
            "records": [
                {
                    "index": 0,
                    "route_id": "RouteScenario_1711_rep0",
                    "status": "Completed",
                    "num_infractions": 2,
                    "infractions": r0,
                    "scores": {"score_route": 100.0, "score_penalty": 0.573, "score_composed": 57.3},
                    "meta": {"route_length": 1520.5, "duration_game": 180.5, "duration_system": 400.0},
                    "scenario_name": "ParkedObstacle",
                    "weather_id": 3,
                    "save_name": "ParkedObstacle_1711_3",
                    "town_name": "Town12",
                },
                {
                    "index": 1,
                    "route_id": "RouteScenario_2084_rep0",
                    "status": "Failed - Agent got blocked",
                    "num_infractions": 1,
                    "infractions": r1,
                    "scores": {"score_route": 42.5, "score_penalty": 1.0, "score_composed": 42.5},
                    "meta": {"route_length": 800.0, "duration_game": 121.0, "duration_system": 212.25},
                    "scenario_name": "HardBreakRoute",
                    "weather_id": 9,
                    "save_name": "HardBreakRoute_2084_9",
                    "town_name": "Town13",
                },
            ],
        },
        "entry_status": "Finished",
        "eligible": True,
        "sensors": ["carla_camera", "carla_speedometer"],
        "values": [
            "49.9",
            "71.25",
            "0.7865",
            "0.0",
            "0.537",
            "0.0",
            "0.0",
            "0.0",
            "0.0",
            "0.0",
            "0.0",
            "0.537",
            "0.0",
            "0.0",
            "0.537",
        ],
        "labels": [
            "Avg. driving score",
            "Avg. route completion",
            "Avg. infraction penalty",
            "Collisions with pedestrians",
            "Collisions with vehicles",
            "Collisions with layout",
            "Red lights infractions",
            "Stop sign infractions",
            "Off-road infractions",
            "Route deviations",
            "Route timeouts",
            "Agent blocked",
            "Yield emergency vehicles infractions",
            "Scenario timeouts",
            "Min speed infractions",
        ],
    }
