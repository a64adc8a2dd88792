"""The game's infractions as CARLA Leaderboard 2.0 infractions, and a route's outcome from its log.

| game (InfractionDetector)  | leaderboard record key | penalty |
| collision_pedestrian       | collisions_pedestrian  | 0.50    |
| collision_vehicle          | collisions_vehicle     | 0.60    |
| collision_static           | collisions_layout      | 0.65    |
| red_light                  | red_light              | 0.70    |
| stop_sign                  | stop_infraction        | 0.80    |
| off_road, wrong_way        | outside_route_lanes    | 1 - percent outside / 100, one event per route |

Off-road and wrong-way are not events of their own on the leaderboard: its OutsideRouteLanesTest
measures how much of the driven route the car spent outside its lanes (criteria.RouteCriteria). The
minimum-speed checkpoints and the route's end (deviation, blocked, timeout) come from the criteria too.
"""

from __future__ import annotations

from typing import Any, Iterable

from sd_evaluator.scoring import Protocol, RouteEvent, RouteOutcome, min_speed_events

from sd_evaluator.city.criteria import RouteCriteria, RouteEnd

# Game infraction kind -> leaderboard record key, for the kinds that are one event each.
EVENT_KINDS: dict[str, str] = {
    "collision_pedestrian": "collisions_pedestrian",
    "collision_vehicle": "collisions_vehicle",
    "collision_static": "collisions_layout",
    "red_light": "red_light",
    "stop_sign": "stop_infraction",
}
# Game infraction kinds the leaderboard measures as distance outside the route's lanes.
OUTSIDE_LANES_KINDS = frozenset({"off_road", "wrong_way"})
GAME_KINDS = frozenset(EVENT_KINDS) | OUTSIDE_LANES_KINDS
# The object type a collision message names, in CARLA's blueprint terms.
_COLLISION_TYPES = {"collision_pedestrian": "walker", "collision_vehicle": "vehicle", "collision_static": "static"}


class InfractionMappingError(ValueError):
    """A game infraction this mapping does not know (the game and the evaluator disagree)."""


def _where(infraction: dict[str, Any]) -> str:
    return f"(x={round(float(infraction['x_m']), 3)}, y={round(float(infraction['y_m']), 3)}, z=0.0)"


def map_infraction(infraction: dict[str, Any]) -> RouteEvent | None:
    """The leaderboard event for one game infraction; None for off-road and wrong-way (measured instead)."""
    kind = infraction.get("kind")
    if kind in OUTSIDE_LANES_KINDS:
        return None
    if kind not in EVENT_KINDS:
        raise InfractionMappingError(
            f"unknown game infraction kind {kind!r}; expected one of {', '.join(sorted(GAME_KINDS))}"
        )
    details = infraction.get("details") or {}
    where = _where(infraction)
    if kind in _COLLISION_TYPES:
        message = (
            f"Agent collided against object with type={_COLLISION_TYPES[kind]} and id={details.get('other_id', '')} "
            f"at {where}"
        )
    elif kind == "red_light":
        message = f"Agent ran a red light {details.get('node_id', '')} at {where}"
    else:
        message = f"Agent ran a stop with id={details.get('node_id', '')} at {where}"
    return RouteEvent(EVENT_KINDS[kind], message)


def route_outcome(
    route_id: str,
    route_length_m: float,
    game_log: Iterable[dict[str, Any]],
    criteria: RouteCriteria,
    end: RouteEnd | None,
    *,
    protocol: Protocol = Protocol.LEADERBOARD_2_0,
    duration_system_s: float = 0.0,
    failure_message: str = "",
    extra: dict[str, Any] | None = None,
) -> RouteOutcome:
    """The route's outcome: the game's infractions mapped, then outside-lanes, minimum speed and the end."""
    criteria.finish()
    events = [e for e in (map_infraction(i) for i in game_log) if e is not None]
    outside = criteria.outside_lanes()
    if outside is not None:
        events.append(outside)
    events.extend(min_speed_events(criteria.checkpoint_values, protocol))
    timed_out = end is not None and end.reason == "route_timeout"
    if end is not None and end.event is not None:
        events.append(end.event)
    return RouteOutcome(
        route_id=route_id,
        route_completion_pct=criteria.route_completion_pct,
        route_length_m=route_length_m,
        events=events,
        timed_out=timed_out,
        failure_message=failure_message,
        duration_game_s=criteria.t_s,
        duration_system_s=duration_system_s,
        extra=dict(extra or {}),
    )
