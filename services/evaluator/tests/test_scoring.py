"""The scorer against routes with known infractions; every expected number is worked out by hand here.

Penalty factors (leaderboard 2.0): pedestrian 0.50, vehicle 0.60, static 0.65, red light 0.70, stop sign 0.80,
scenario timeout 0.70, yield to emergency vehicle 0.70; a minimum-speed checkpoint at p% gives
0.7 + 0.3 p/100.
"""

from __future__ import annotations

import math

import pytest

from sd_evaluator.results import Results
from sd_evaluator.scoring import (
    Protocol,
    RouteEvent,
    RouteOutcome,
    ScoringError,
    bench2drive_scores,
    driving_efficiency,
    finalize_results,
    global_statistics,
    is_bench2drive_success,
    km_driven,
    min_speed_event,
    min_speed_events,
    outside_lanes_event,
    rescore_record,
    score_route,
)


def outcome(route: int, rc: float, length_m: float, *events: RouteEvent, **kw) -> RouteOutcome:
    return RouteOutcome(f"RouteScenario_{route}_rep0", rc, length_m, list(events), **kw)


def ev(kind: str) -> RouteEvent:
    return RouteEvent(kind, f"Agent did {kind} at (x=1.0, y=2.0, z=0.0)")


@pytest.mark.parametrize(
    ("kind", "expected_ip"),
    [
        ("collisions_pedestrian", 0.5),
        ("collisions_vehicle", 0.6),
        ("collisions_layout", 0.65),
        ("red_light", 0.7),
        ("stop_infraction", 0.8),
        ("scenario_timeouts", 0.7),
        ("yield_emergency_vehicle_infractions", 0.7),
    ],
)
def test_each_fixed_penalty_on_a_completed_route(kind, expected_ip):
    record = score_route(outcome(0, 100.0, 500.0, ev(kind)), index=0)
    assert record.scores == {
        "score_route": 100.0,
        "score_penalty": expected_ip,
        "score_composed": 100 * expected_ip,
    }
    assert record.status == "Completed"
    assert record.num_infractions == 1
    assert record.infractions[kind] == [f"Agent did {kind} at (x=1.0, y=2.0, z=0.0)"]


def test_penalties_multiply_per_count_and_ds_is_rc_times_ip():
    # 0.6 * 0.6 * 0.7 = 0.252; DS = 80 * 0.252 = 20.16
    record = score_route(
        outcome(3, 80.0, 1200.0, ev("collisions_vehicle"), ev("collisions_vehicle"), ev("red_light")), index=0
    )
    assert record.scores["score_penalty"] == 0.252
    assert record.scores["score_composed"] == 20.16
    assert record.scores["score_route"] == 80.0
    assert record.num_infractions == 3
    assert record.status == "Failed"  # RC < 100 with no stopping event: the leaderboard adds no reason


def test_a_route_without_infractions_is_perfect():
    record = score_route(outcome(1, 100.0, 10.0), index=0)
    assert record.status == "Perfect"
    assert record.scores == {"score_route": 100.0, "score_penalty": 1.0, "score_composed": 100.0}


def test_minimum_speed_penalty_depends_on_the_percentage():
    # 50% -> 1 - 0.3 * 0.5 = 0.85; 80% -> 1 - 0.3 * 0.2 = 0.94; IP = 0.85 * 0.94 = 0.799
    record = score_route(
        outcome(2, 100.0, 800.0, *min_speed_events([50.0, 80.0, 120.0], Protocol.LEADERBOARD_2_0)), 0
    )
    assert record.infractions["min_speed_infractions"] == [
        "Average speed is 50.0% of the surrounding traffic's one",
        "Average speed is 80.0% of the surrounding traffic's one",
    ]  # 120% is not an infraction on the leaderboard
    assert record.scores["score_penalty"] == 0.799
    assert record.scores["score_composed"] == 79.9
    assert record.status == "Completed"


def test_minimum_speed_at_standstill_is_the_base_factor():
    record = score_route(outcome(2, 100.0, 800.0, min_speed_event(0.0)), 0)
    assert record.scores["score_penalty"] == 0.7


def test_minimum_speed_at_or_above_traffic_speed_is_refused_on_the_leaderboard():
    with pytest.raises(ScoringError, match="only below 100%"):
        score_route(outcome(2, 100.0, 800.0, min_speed_event(100.0)), 0)


def test_bench2drive_records_every_speed_checkpoint_and_penalises_none():
    events = min_speed_events([50.0, 80.0, 120.0], Protocol.BENCH2DRIVE)
    record = score_route(outcome(2, 100.0, 800.0, *events), 0, protocol=Protocol.BENCH2DRIVE)
    assert len(record.infractions["min_speed_infractions"]) == 3
    assert record.scores["score_penalty"] == 1.0
    assert record.scores["score_composed"] == 100.0
    assert record.status == "Completed"  # it has infraction messages
    assert is_bench2drive_success(record)  # ... that Bench2Drive's success ignores
    assert driving_efficiency([record]) == pytest.approx((50 + 80 + 120) / 3)


def test_outside_route_lanes_discounts_its_percentage():
    # 10% outside: factor 1 - 0.10 = 0.9
    record = score_route(outcome(4, 100.0, 300.0, outside_lanes_event(30.0, 10.0)), 0)
    assert record.infractions["outside_route_lanes"] == [
        "Agent went outside its route lanes for about 30.0 meters (10.0% of the completed route)"
    ]
    assert record.scores["score_penalty"] == 0.9
    assert record.scores["score_composed"] == 90.0


@pytest.mark.parametrize(
    ("kw", "events", "status", "timeout_messages"),
    [
        ({}, [ev("route_dev")], "Failed - Agent deviated from the route", []),
        ({}, [ev("vehicle_blocked")], "Failed - Agent got blocked", []),
        ({"timed_out": True}, [], "Failed - Agent timed out", ["Route timeout."]),
        ({"failure_message": "Simulation crashed"}, [], "Failed - Simulation crashed", []),
        ({"failure_message": "Agent crashed"}, [], "Failed - Agent crashed", []),
    ],
)
def test_stopping_statuses_keep_rc_and_do_not_penalise(kw, events, status, timeout_messages):
    record = score_route(outcome(5, 35.5, 1000.0, *events, **kw), 0)
    assert record.status == status
    assert record.scores == {"score_route": 35.5, "score_penalty": 1.0, "score_composed": 35.5}
    assert record.infractions["route_timeout"] == timeout_messages
    assert record.num_infractions == len(events) + len(timeout_messages)


def test_a_timed_out_route_that_reached_the_end_is_completed_not_failed():
    record = score_route(outcome(5, 100.0, 1000.0, timed_out=True), 0)
    assert record.status == "Completed"


def three_of_four_routes():
    """Routes 0-2 driven, route 3 never recorded (the simulation crashed before it)."""
    return [
        score_route(outcome(0, 100.0, 1000.0), 0),  # DS 100, IP 1
        score_route(outcome(1, 50.0, 2000.0, ev("collisions_vehicle"), ev("route_dev")), 1),  # IP 0.6, DS 30
        score_route(
            outcome(2, 100.0, 500.0, ev("collisions_pedestrian"), ev("red_light")), 2
        ),  # IP 0.35, DS 35
    ]


def test_global_means_count_a_missing_route_as_zero():
    stats = global_statistics(three_of_four_routes(), total_routes=4)
    g = stats.global_record
    assert g.scores_mean == {"score_composed": 41.25, "score_route": 62.5, "score_penalty": 0.4875}
    # (100 + 30 + 35) / 4, (100 + 50 + 100) / 4, (1 + 0.6 + 0.35) / 4
    assert g.status == "Failed"
    assert g.meta["exceptions"] == [["RouteScenario_1_rep0", 1, "Failed - Agent deviated from the route"]]
    assert g.meta["total_length"] == 3500.0
    # std dev of DS as the leaderboard computes it: the present routes' squared deviations over N - 1
    assert g.scores_std_dev["score_composed"] == round(math.sqrt((58.75**2 + 11.25**2 + 6.25**2) / 3), 3)


def test_infractions_per_km_use_the_driven_km():
    records = three_of_four_routes()
    # 1.0 km * 100% + 2.0 km * 50% + 0.5 km * 100% = 2.5 km
    assert km_driven(records) == pytest.approx(2.5)
    stats = global_statistics(records, total_routes=4)
    per_km = stats.global_record.infractions
    assert per_km["collisions_vehicle"] == 0.4  # 1 / 2.5
    assert per_km["collisions_pedestrian"] == 0.4
    assert per_km["red_light"] == 0.4
    assert per_km["route_dev"] == 0.4
    assert per_km["stop_infraction"] == 0.0
    assert stats.values == [
        "41.25",
        "62.5",
        "0.4875",
        "0.4",
        "0.4",
        "0.0",
        "0.4",
        "0.0",
        "0.0",
        "0.4",
        "0.0",
        "0.0",
        "0.0",
        "0.0",
        "0.0",
    ]
    assert stats.labels[0] == "Avg. driving score" and stats.labels[-1] == "Min speed infractions"


def test_outside_lanes_in_the_global_record_is_km_outside_not_a_rate():
    records = [score_route(outcome(0, 50.0, 1000.0, outside_lanes_event(30.0, 6.0)), 0)]
    g = global_statistics(records, total_routes=1).global_record
    assert g.infractions["outside_route_lanes"] == 0.03  # 30 m, not divided by the 0.5 km driven
    assert g.scores_std_dev == {"score_route": 0, "score_penalty": 0, "score_composed": 0}


def test_no_km_driven_divides_by_one_meter():
    records = [score_route(outcome(0, 0.0, 1000.0, ev("collisions_layout")), 0)]
    assert global_statistics(records, 1).global_record.infractions["collisions_layout"] == 1000.0  # 1 / 0.001


def test_a_crashed_run_is_finished_as_crashed_and_valid_without_all_routes():
    records = three_of_four_routes()
    records.append(score_route(outcome(3, 0.0, 700.0, failure_message="Simulation crashed"), 3))
    results = Results(records=records, progress=[4, 5], sensors=["carla_camera", "carla_speedometer"])
    assert finalize_results(results, crashed=True) == ""
    assert results.entry_status == "Crashed" and results.eligible is False
    assert results.global_record.scores_mean["score_composed"] == 33.0  # 165 / 5


def test_a_run_that_stopped_early_without_crashing_is_invalid():
    results = Results(records=three_of_four_routes(), progress=[3, 4], sensors=["carla_camera"])
    assert finalize_results(results) == "'progress' data doesn't match its expected value"
    assert results.entry_status == "Invalid" and results.eligible is False


def test_a_complete_run_is_finished_and_eligible():
    results = Results(records=three_of_four_routes(), progress=[3, 3], sensors=["carla_camera"])
    assert finalize_results(results) == ""
    assert results.entry_status == "Finished" and results.eligible is True
    assert results.global_record.scores_mean["score_composed"] == 55.0  # 165 / 3


def test_bench2drive_divides_by_220_whatever_was_evaluated():
    records = three_of_four_routes()
    b2d = bench2drive_scores(records)
    assert b2d.expected_routes == 220 and b2d.evaluated_routes == 3
    assert b2d.driving_score == pytest.approx(165 / 220)
    # only route 0 succeeds: route 2 completed but collided and ran a red light, route 1 failed
    assert b2d.success_route_ids == ("RouteScenario_0_rep0",)
    assert b2d.success_rate == pytest.approx(1 / 220)
    assert b2d.efficiency_pct is None


def test_bench2drive_efficiency_leaves_out_checkpoints_over_1000_percent():
    a = score_route(
        outcome(0, 100.0, 10.0, *min_speed_events([40.0, 60.0, 1500.0], Protocol.BENCH2DRIVE)),
        0,
        Protocol.BENCH2DRIVE,
    )
    b = score_route(
        outcome(1, 100.0, 10.0, *min_speed_events([110.0], Protocol.BENCH2DRIVE)), 1, Protocol.BENCH2DRIVE
    )
    c = score_route(outcome(2, 100.0, 10.0), 2, Protocol.BENCH2DRIVE)  # no checkpoints: not in the mean
    assert driving_efficiency([a, b, c]) == pytest.approx((50.0 + 110.0) / 2)


def test_rescoring_a_record_from_its_messages_gives_its_scores():
    record = score_route(
        outcome(7, 64.0, 900.0, ev("stop_infraction"), min_speed_event(37.5), outside_lanes_event(12.0, 4.0)),
        0,
    )
    # 0.8 * (1 - 0.3 * 0.625) * 0.96 = 0.8 * 0.8125 * 0.96 = 0.624; DS = 64 * 0.624 = 39.936
    assert record.scores["score_penalty"] == 0.624
    assert record.scores["score_composed"] == 39.936
    assert rescore_record(record) == record.scores
    record.infractions["red_light"].append("Agent ran a red light 52 at (x=0, y=0, z=0)")
    assert rescore_record(record)["score_penalty"] == round(0.624 * 0.7, 6)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (RouteEvent("collisions_unicorn", "?"), "unknown infraction kind 'collisions_unicorn'"),
        (RouteEvent("min_speed_infractions", "Average speed is low"), "needs its percentage"),
        (RouteEvent("outside_route_lanes", "outside"), "needs its percentage"),
    ],
)
def test_bad_events_are_named(bad, match):
    with pytest.raises(ScoringError, match=match):
        score_route(outcome(0, 100.0, 10.0, bad), 0)


def test_bad_totals_and_completions_are_named():
    with pytest.raises(ScoringError, match="not in \\[0, 100\\]"):
        score_route(outcome(0, 101.0, 10.0), 0)
    with pytest.raises(ScoringError, match="3 route records but the run has only 2 routes"):
        global_statistics(three_of_four_routes(), 2)
    with pytest.raises(ScoringError, match="at least 1"):
        bench2drive_scores([], expected_routes=0)
