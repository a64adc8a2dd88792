"""Scores of a closed-loop run, computed as CARLA Leaderboard 2.0 and Bench2Drive compute them.

Per route: route completion RC (percent of the planned route driven), infraction penalty IP (the
product of one factor per infraction) and the driving score DS = RC x IP. Over a run: the means of the
per-route values over the number of routes the run was asked to drive (a route with no record adds 0),
their standard deviations, and infractions per km driven. Bench2Drive adds its DS over a fixed route
count (220), its success rate and its driving efficiency. See docs/evaluation.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

from sd_evaluator.results import INFRACTION_KEYS, SCORE_KEYS, GlobalRecord, Results, RouteRecord

ROUND_DIGITS = 3
ROUND_DIGITS_SCORE = 6

# Infractions that multiply IP by a fixed factor, each time they happen.
FIXED_PENALTY_FACTORS: dict[str, float] = {
    "collisions_pedestrian": 0.50,
    "collisions_vehicle": 0.60,
    "collisions_layout": 0.65,
    "red_light": 0.70,
    "stop_infraction": 0.80,
    "scenario_timeouts": 0.70,
    "yield_emergency_vehicle_infractions": 0.70,
}
# Minimum speed: each checkpoint below 100% of the surrounding traffic's mean speed multiplies IP by
# 1 - (1 - 0.7) * (1 - p/100), i.e. 0.7 at standstill, 1 at the traffic's speed.
MIN_SPEED_PENALTY_BASE = 0.7
# Outside the route's lanes: a factor 1 - (1 - 0) * p/100 for p percent of the driven route outside them;
# the leaderboard discounts that part of the route this way rather than with a fixed penalty.
OUTSIDE_LANES_PENALTY_BASE = 0.0
# Infractions that end the route; they do not change IP, RC stays where the agent was.
STOPPING_FAILURE_MESSAGES: dict[str, str] = {
    "route_dev": "Agent deviated from the route",
    "vehicle_blocked": "Agent got blocked",
}
ROUTE_TIMEOUT_MESSAGE = "Route timeout."
ROUTE_TIMEOUT_FAILURE = "Agent timed out"

# The global record's `values` and their `labels`, in the leaderboard's order: the three mean scores,
# then these infraction keys per km.
LABELS: tuple[str, ...] = (
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
)
VALUE_INFRACTION_KEYS: tuple[str, ...] = (
    "collisions_pedestrian",
    "collisions_vehicle",
    "collisions_layout",
    "red_light",
    "stop_infraction",
    "outside_route_lanes",
    "route_dev",
    "route_timeout",
    "vehicle_blocked",
    "yield_emergency_vehicle_infractions",
    "scenario_timeouts",
    "min_speed_infractions",
)

BENCH2DRIVE_ROUTE_COUNT = 220
# Bench2Drive's success ignores minimum-speed messages (its runs record one at every checkpoint).
BENCH2DRIVE_SUCCESS_IGNORED = frozenset({"min_speed_infractions"})
# Checkpoint percentages above this are left out of Bench2Drive's efficiency (near-standstill traffic).
BENCH2DRIVE_EFFICIENCY_MAX_PCT = 1000.0

_PERCENT = re.compile(r"\b(\d+(?:\.\d*)?)%")
_OUTSIDE_LANES = re.compile(r"for about (\d+(?:\.\d*)?) meters \((\d+(?:\.\d*)?)% of the completed route\)")


class ScoringError(ValueError):
    """Input the leaderboard's scoring cannot take (an unknown infraction, a missing percentage …)."""


class Protocol(str, Enum):
    """Whose scoring rules: the leaderboard's, or Bench2Drive's fork of it."""

    # Minimum-speed checkpoints below 100% are infractions and penalised.
    LEADERBOARD_2_0 = "leaderboard-2.0"
    # Every minimum-speed checkpoint is recorded (it feeds the efficiency metric) and none is penalised.
    BENCH2DRIVE = "bench2drive"


@dataclass(frozen=True)
class RouteEvent:
    """One infraction of a route: its record key (INFRACTION_KEYS), message, percentage if any."""

    kind: str
    message: str
    percentage: float | None = None


def min_speed_event(percentage: float) -> RouteEvent:
    """A minimum-speed checkpoint at `percentage` of the surrounding traffic's mean speed (to 0.01)."""
    pct = round(percentage, 2)
    return RouteEvent(
        "min_speed_infractions", f"Average speed is {pct}% of the surrounding traffic's one", pct
    )


def min_speed_events(checkpoint_percentages: Iterable[float], protocol: Protocol) -> list[RouteEvent]:
    """A run's minimum-speed checkpoints as events: below 100% on the leaderboard, all on Bench2Drive."""
    events = [min_speed_event(p) for p in checkpoint_percentages]
    if protocol is Protocol.LEADERBOARD_2_0:
        events = [e for e in events if e.percentage < 100]
    return events


def outside_lanes_event(distance_m: float, percentage: float) -> RouteEvent:
    """The route's one outside-lanes event: `distance_m` outside its lanes, `percentage` of the route."""
    return RouteEvent(
        "outside_route_lanes",
        f"Agent went outside its route lanes for about {round(distance_m, 3)} meters "
        f"({round(percentage, 2)}% of the completed route)",
        percentage,
    )


@dataclass
class RouteOutcome:
    """What happened on one route, as the leaderboard's criteria report it at the route's end."""

    route_id: str
    route_completion_pct: float
    route_length_m: float
    events: list[RouteEvent] = field(default_factory=list)
    timed_out: bool = False
    # Set when something outside the criteria stopped the route (results.FAILURE_MESSAGES).
    failure_message: str = ""
    duration_game_s: float = 0.0
    duration_system_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def event_factor(event: RouteEvent, protocol: Protocol) -> float:
    """The factor one infraction multiplies IP by (1 for infractions that only end the route)."""
    if event.kind in FIXED_PENALTY_FACTORS:
        return FIXED_PENALTY_FACTORS[event.kind]
    if event.kind == "min_speed_infractions":
        pct = _required_percentage(event)
        if protocol is Protocol.BENCH2DRIVE:
            return 1.0
        if pct >= 100:
            raise ScoringError(
                f"minimum speed at {pct}%: the leaderboard records a minimum-speed infraction only below "
                f"100% (Bench2Drive records every checkpoint: score its runs with protocol "
                f"{Protocol.BENCH2DRIVE.value!r})"
            )
        return 1 - (1 - MIN_SPEED_PENALTY_BASE) * (1 - pct / 100)
    if event.kind == "outside_route_lanes":
        return 1 - (1 - OUTSIDE_LANES_PENALTY_BASE) * _required_percentage(event) / 100
    if event.kind in STOPPING_FAILURE_MESSAGES:
        return 1.0
    raise ScoringError(
        f"unknown infraction kind {event.kind!r}; expected one of {', '.join(INFRACTION_KEYS[:-1])}"
    )


def score_route(
    outcome: RouteOutcome, index: int, protocol: Protocol = Protocol.LEADERBOARD_2_0
) -> RouteRecord:
    """The route's record: messages, RC, IP, DS, status and meta, as the leaderboard writes them."""
    if not 0 <= outcome.route_completion_pct <= 100:
        raise ScoringError(
            f"{outcome.route_id}: route completion {outcome.route_completion_pct}% is not in [0, 100]"
        )
    record = RouteRecord(route_id=outcome.route_id, index=index, extra=dict(outcome.extra))
    failure_message = outcome.failure_message
    if outcome.timed_out:
        record.infractions["route_timeout"].append(ROUTE_TIMEOUT_MESSAGE)
        failure_message = ROUTE_TIMEOUT_FAILURE
    score_penalty = 1.0
    for event in outcome.events:
        score_penalty *= event_factor(event, protocol)
        record.infractions[event.kind].append(event.message)
        if event.kind in STOPPING_FAILURE_MESSAGES:
            failure_message = STOPPING_FAILURE_MESSAGES[event.kind]
    score_route = outcome.route_completion_pct
    record.scores = {
        "score_route": round(score_route, ROUND_DIGITS_SCORE),
        "score_penalty": round(score_penalty, ROUND_DIGITS_SCORE),
        "score_composed": round(max(score_route * score_penalty, 0.0), ROUND_DIGITS_SCORE),
    }
    record.meta = {
        "route_length": round(outcome.route_length_m, ROUND_DIGITS),
        "duration_game": round(outcome.duration_game_s, ROUND_DIGITS),
        "duration_system": round(outcome.duration_system_s, ROUND_DIGITS),
    }
    record.num_infractions = sum(len(v) for v in record.infractions.values())
    if score_route >= 100:
        record.status = "Completed" if record.num_infractions > 0 else "Perfect"
    else:
        record.status = "Failed" + (f" - {failure_message}" if failure_message else "")
    return record


def record_events(record: RouteRecord) -> list[RouteEvent]:
    """The infractions of a written record, with the percentages its messages carry."""
    events = []
    for kind, messages in record.infractions.items():
        if kind == "route_timeout":
            continue
        for message in messages:
            pct = None
            if kind == "min_speed_infractions":
                pct = _message_percentage(message, record.route_id)
            elif kind == "outside_route_lanes":
                pct = float(_outside_lanes_match(message, record.route_id).group(2))
            events.append(RouteEvent(kind, message, pct))
    return events


def rescore_record(record: RouteRecord, protocol: Protocol = Protocol.LEADERBOARD_2_0) -> dict[str, float]:
    """IP and DS recomputed from a record's messages and its RC, to check a file's scores.

    Exact except for outside-lanes infractions, whose message rounds the percentage to 0.01.
    """
    score_penalty = 1.0
    for event in record_events(record):
        score_penalty *= event_factor(event, protocol)
    score_route = float(record.scores["score_route"])
    return {
        "score_route": round(score_route, ROUND_DIGITS_SCORE),
        "score_penalty": round(score_penalty, ROUND_DIGITS_SCORE),
        "score_composed": round(max(score_route * score_penalty, 0.0), ROUND_DIGITS_SCORE),
    }


def km_driven(records: Iterable[RouteRecord]) -> float:
    """Kilometers driven: each route's length times its completion, summed."""
    return sum(r.route_length_m / 1000 * float(r.scores["score_route"]) / 100 for r in records)


@dataclass
class GlobalStatistics:
    """The run's global record with its `values`/`labels`, the entry status and the km driven."""

    global_record: GlobalRecord
    values: list[str]
    labels: list[str]
    entry_status: str
    km_driven: float


def global_statistics(records: list[RouteRecord], total_routes: int) -> GlobalStatistics:
    """The global record over `total_routes` routes (a route with no record counts 0), as the leaderboard."""
    if total_routes < 1:
        raise ScoringError(f"total_routes must be at least 1, got {total_routes}")
    if len(records) > total_routes:
        raise ScoringError(f"{len(records)} route records but the run has only {total_routes} routes")
    g = GlobalRecord()
    status = "Perfect"
    for r in records:
        for key in SCORE_KEYS:
            g.scores_mean[key] += r.scores[key] / total_routes
        g.meta["total_length"] += r.meta["route_length"]
        g.meta["duration_game"] += r.meta["duration_game"]
        g.meta["duration_system"] += r.meta["duration_system"]
        route_result = "Failed" if "Failed" in r.status else r.status
        if route_result == "Failed":
            g.meta["exceptions"].append([r.route_id, r.index, r.status])
            status = "Failed"
        elif status == "Perfect" and route_result != "Perfect":
            status = route_result
    for key in SCORE_KEYS:
        g.scores_mean[key] = round(g.scores_mean[key], ROUND_DIGITS_SCORE)
    g.status = status
    # As the leaderboard: squared deviations of the records present, over total_routes - 1.
    if total_routes == 1:
        g.scores_std_dev = {k: 0 for k in g.scores_std_dev}
    else:
        for key in SCORE_KEYS:
            squares = sum(math.pow(r.scores[key] - g.scores_mean[key], 2) for r in records)
            g.scores_std_dev[key] = round(math.sqrt(squares / float(total_routes - 1)), ROUND_DIGITS)
    driven_km = km_driven(records)
    per_km_denominator = max(driven_km, 0.001)
    for key in INFRACTION_KEYS:
        total = sum(_global_infraction_value(r, key) for r in records)
        # Outside-lanes is a distance (km outside the lanes), not a count: not divided by the km driven.
        if key != "outside_route_lanes":
            total /= per_km_denominator
        g.infractions[key] = round(total, ROUND_DIGITS)
    values = [
        str(g.scores_mean["score_composed"]),
        str(g.scores_mean["score_route"]),
        str(g.scores_mean["score_penalty"]),
    ]
    values += [str(g.infractions[k]) for k in VALUE_INFRACTION_KEYS]
    entry_status = "Finished"
    for r in records:
        if "Simulation crashed" in r.status:
            entry_status = "Crashed"
        elif "Agent's sensors were invalid" in r.status:
            entry_status = "Rejected"
    return GlobalStatistics(g, values, list(LABELS), entry_status, driven_km)


def finalize_results(results: Results, sensors_initialized: bool = True, crashed: bool = False) -> str:
    """Computes the global statistics into `results` and checks it as the leaderboard does before writing.

    Returns the reason the entry was marked Invalid, or "" when it is well formed.
    """
    if results.total_routes is None:
        raise ScoringError("results have no progress [route index, total routes]; the run never started")
    stats = global_statistics(results.records, results.total_routes)
    results.global_record = stats.global_record
    results.values = stats.values
    results.labels = stats.labels
    results.set_entry_status(stats.entry_status)
    error = ""
    index, total = results.progress
    if sensors_initialized and not results.sensors:
        error = "Missing 'sensors' data"
    elif not crashed and (index != total or index != len(results.records)):
        error = "'progress' data doesn't match its expected value"
    elif any(r.status == "Started" for r in results.records):
        error = "Found a route record with missing data"
    if error:
        results.set_entry_status("Invalid")
    return error


def is_bench2drive_success(record: RouteRecord) -> bool:
    """Bench2Drive's success: Completed or Perfect, with no infraction but minimum-speed ones."""
    if record.status not in ("Completed", "Perfect"):
        return False
    return all(
        not messages for key, messages in record.infractions.items() if key not in BENCH2DRIVE_SUCCESS_IGNORED
    )


def driving_efficiency(records: Iterable[RouteRecord]) -> float | None:
    """Bench2Drive's efficiency: per route the mean minimum-speed checkpoint percentage (those <= 1000%),
    over the routes that have any; None when no route has one."""
    per_route = []
    for r in records:
        pcts = [_message_percentage(m, r.route_id) for m in r.infractions.get("min_speed_infractions", [])]
        pcts = [p for p in pcts if p <= BENCH2DRIVE_EFFICIENCY_MAX_PCT]
        if pcts:
            per_route.append(sum(pcts) / len(pcts))
    return sum(per_route) / len(per_route) if per_route else None


@dataclass(frozen=True)
class Bench2DriveScores:
    """Bench2Drive's headline numbers over its fixed route count."""

    driving_score: float
    success_rate: float
    evaluated_routes: int
    expected_routes: int
    success_route_ids: tuple[str, ...]
    efficiency_pct: float | None


def bench2drive_scores(
    records: list[RouteRecord], expected_routes: int = BENCH2DRIVE_ROUTE_COUNT
) -> Bench2DriveScores:
    """DS = sum of score_composed / expected_routes, success = successes / expected_routes (missing: 0)."""
    if expected_routes < 1:
        raise ScoringError(f"expected_routes must be at least 1, got {expected_routes}")
    successes = tuple(r.route_id for r in records if is_bench2drive_success(r))
    return Bench2DriveScores(
        driving_score=sum(float(r.scores["score_composed"]) for r in records) / expected_routes,
        success_rate=len(successes) / expected_routes,
        evaluated_routes=len(records),
        expected_routes=expected_routes,
        success_route_ids=successes,
        efficiency_pct=driving_efficiency(records),
    )


def _global_infraction_value(record: RouteRecord, key: str) -> float:
    messages = record.infractions.get(key, [])
    if key == "outside_route_lanes":
        # The leaderboard reads the meters from the route's (single) outside-lanes message.
        return float(_outside_lanes_match(messages[0], record.route_id).group(1)) / 1000 if messages else 0.0
    return len(messages)


def _required_percentage(event: RouteEvent) -> float:
    if event.percentage is None:
        raise ScoringError(f"a {event.kind} infraction needs its percentage ({event.message!r})")
    return float(event.percentage)


def _message_percentage(message: str, route_id: str) -> float:
    match = _PERCENT.search(message)
    if match is None:
        raise ScoringError(f"{route_id}: no percentage in the minimum-speed message {message!r}")
    return float(match.group(1))


def _outside_lanes_match(message: str, route_id: str) -> re.Match[str]:
    match = _OUTSIDE_LANES.search(message)
    if match is None:
        raise ScoringError(
            f"{route_id}: the outside-lanes message {message!r} has no distance and percentage"
        )
    return match
