"""The leaderboard's route criteria, evaluated on the game's agent-mode states once per agent step.

CARLA Leaderboard 2.0 ticks its criteria with the simulation at 20 Hz, the rate the city benchmarks
step the agent at, so each agent step is one criteria tick here. What ends a route, as LB2.0's route
scenario sets it up:

- completed: the game's route tracker reached the goal;
- route deviation (InRouteTest, offroad_max 30 m): farther than 30 m from the route;
- agent blocked (ActorBlockedTest, min_speed 0.1 m/s, max_time 180 s): slower than 0.1 m/s for more
  than 180 s of simulation;
- route timeout (RouteTimeoutBehavior): 300 s, plus for every metre of route progress 1 / (10% of the
  speed limit) seconds.

Two criteria that do not end a route and are computed here, not in the game:

- minimum speed (MinSpeedRouteTest, 4 checkpoints): over each quarter of the route, the mean speed of
  the car over the mean speed of the surrounding traffic, in percent (100 when no traffic was around);
  the last checkpoint is closed at the end if more than 95% of the route was driven;
- outside route lanes (OutsideRouteLanesTest): the route progress made while the car was outside its
  lanes (the game counting it off the road or against the traffic), in metres and as a percentage of
  the progress made; one event per route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sd_evaluator.scoring import RouteEvent, outside_lanes_event

ROUTE_DEVIATION_MAX_M = 30.0
BLOCKED_MIN_SPEED_MPS = 0.1
BLOCKED_MAX_TIME_S = 180.0
TIMEOUT_MIN_S = 300.0
TIMEOUT_ROUTE_PERCENT_OF_LIMIT = 10.0
MIN_SPEED_CHECKPOINTS = 4
MIN_SPEED_LAST_CHECKPOINT_FRACTION = 0.95


class CriteriaError(ValueError):
    """A state from the game that the criteria cannot read (a missing or non-numeric field)."""


def route_timeout_s(progress_m: float, speed_limit_mps: float) -> float:
    """LB2.0's route timeout after `progress_m` of progress on a road with this speed limit."""
    if speed_limit_mps <= 0:
        raise CriteriaError(f"speed limit must be positive, got {speed_limit_mps}")
    return TIMEOUT_MIN_S + progress_m / (speed_limit_mps * TIMEOUT_ROUTE_PERCENT_OF_LIMIT / 100)


@dataclass
class RouteEnd:
    """Why a route ended: `completed`, `route_dev`, `vehicle_blocked` or `route_timeout`, and the event."""

    reason: str
    event: RouteEvent | None = None


@dataclass
class RouteCriteria:
    """Follows one route's states and says when it ends, with its min-speed and outside-lanes results."""

    route_length_m: float
    speed_limit_mps: float
    checkpoints: int = MIN_SPEED_CHECKPOINTS
    checkpoint_values: list[float] = field(default_factory=list)
    progress_m: float = 0.0
    t_s: float = 0.0
    outside_m: float = 0.0
    _blocked_since_s: float | None = None
    _checkpoint_start_m: float = 0.0
    _ego_speed_sum: float = 0.0
    _traffic_speed_sum: float = 0.0
    _speed_points: int = 0
    end: RouteEnd | None = None

    def __post_init__(self) -> None:
        if self.route_length_m <= 0:
            raise CriteriaError(f"route length must be positive, got {self.route_length_m}")

    def update(self, state: dict[str, Any]) -> RouteEnd | None:
        """Takes the state after one agent step; returns how the route ended, or None while it goes on."""
        if self.end is not None:
            return self.end
        t_s = _number(state, "t_s")
        speed = _number(state, "speed_mps")
        progress = max(self.progress_m, _number(state, "progress_m"))
        off_route = _number(state, "distance_off_route_m")
        in_lanes = state.get("in_route_lanes")
        if not isinstance(in_lanes, bool):
            raise CriteriaError(f"state field in_route_lanes must be true or false, got {in_lanes!r}")
        traffic = state.get("traffic_speeds_mps")
        if not isinstance(traffic, list):
            raise CriteriaError(f"state field traffic_speeds_mps must be a list, got {traffic!r}")
        advanced = progress - self.progress_m
        if not in_lanes:
            self.outside_m += advanced
        self.progress_m = progress
        self.t_s = t_s
        # Minimum speed: close a checkpoint once a quarter of the route is driven, then record this tick.
        if self.progress_m - self._checkpoint_start_m > self.route_length_m / self.checkpoints:
            self._close_checkpoint()
            self._checkpoint_start_m = self.progress_m
        if traffic:
            self._traffic_speed_sum += sum(float(v) for v in traffic) / len(traffic)
            self._ego_speed_sum += speed
            self._speed_points += 1
        pose = state.get("pose") or {}
        where = f"(x={round(float(pose.get('x_m', 0.0)), 3)}, y={round(float(pose.get('y_m', 0.0)), 3)}, z=0.0)"
        if state.get("finished") is True:
            self.end = RouteEnd("completed")
        elif off_route > ROUTE_DEVIATION_MAX_M:
            self.end = RouteEnd("route_dev", RouteEvent("route_dev", f"Agent deviated from the route at {where}"))
        else:
            if speed < BLOCKED_MIN_SPEED_MPS:
                if self._blocked_since_s is None:
                    self._blocked_since_s = t_s
                elif t_s - self._blocked_since_s > BLOCKED_MAX_TIME_S:
                    self.end = RouteEnd(
                        "vehicle_blocked", RouteEvent("vehicle_blocked", f"Agent got blocked at {where}")
                    )
            else:
                self._blocked_since_s = None
            if self.end is None and t_s > route_timeout_s(self.progress_m, self.speed_limit_mps):
                self.end = RouteEnd("route_timeout")
        return self.end

    def _close_checkpoint(self) -> None:
        if self._speed_points > 0 and self._traffic_speed_sum:
            value = round(
                (self._ego_speed_sum / self._speed_points) / (self._traffic_speed_sum / self._speed_points) * 100, 2
            )
        else:
            value = 100.0
        self.checkpoint_values.append(value)
        self._ego_speed_sum = self._traffic_speed_sum = 0.0
        self._speed_points = 0

    def finish(self) -> None:
        """At the route's end: closes the last minimum-speed checkpoint if the route is nearly driven."""
        if self.progress_m / self.route_length_m > MIN_SPEED_LAST_CHECKPOINT_FRACTION:
            self._close_checkpoint()

    @property
    def route_completion_pct(self) -> float:
        """The route driven, in percent of its length (exactly 100 once the game says it is finished)."""
        if self.end is not None and self.end.reason == "completed":
            return 100.0  # 100 * x / x is not always 100.0 in floating point
        return min(100.0, 100.0 * self.progress_m / self.route_length_m)

    def outside_lanes(self) -> RouteEvent | None:
        """The route's one outside-lanes event, or None when the car stayed in its lanes while progressing."""
        if self.outside_m <= 0 or self.progress_m <= 0:
            return None
        return outside_lanes_event(self.outside_m, 100.0 * self.outside_m / self.progress_m)


def _number(state: dict[str, Any], key: str) -> float:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CriteriaError(f"state field {key} must be a number, got {value!r}")
    return float(value)
