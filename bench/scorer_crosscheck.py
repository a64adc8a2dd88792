"""Cross-check of the evaluator's scorer against the leaderboard's and Bench2Drive's own code, on random runs.

Needs checkouts of carla-simulator/leaderboard (branch leaderboard-2.0), carla-simulator/scenario_runner
(branch leaderboard-2.0) and, for the comfort check, Thinklab-SJTU/Bench2Drive with scipy installed. Their
code is imported from those folders and run beside ours; nothing of theirs is kept here.

    python bench/scorer_crosscheck.py --leaderboard LB --scenario-runner SR [--bench2drive B2D] [--runs 200]

Per random route: the record our score_route writes equals (as JSON text) the one the leaderboard's
StatisticsManager.compute_route_statistics writes from the same traffic events. Per random run: the
global record, values and labels equal those of its compute_global_statistics. Per random ego motion:
our comfort equals Bench2Drive's seg_compute_comfort_metric.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from sd_evaluator.comfort import EgoMotion, route_comfort
from sd_evaluator.results import Results
from sd_evaluator.scoring import (
    RouteEvent,
    RouteOutcome,
    finalize_results,
    min_speed_event,
    outside_lanes_event,
    score_route,
)

FIXED = (
    "collisions_pedestrian",
    "collisions_vehicle",
    "collisions_layout",
    "red_light",
    "stop_infraction",
    "scenario_timeouts",
    "yield_emergency_vehicle_infractions",
)


def random_route(rng: random.Random, route: int):
    """(our outcome, the equivalent traffic events as (kind, message, dict)) for one random route."""
    events, raw = [], []
    for _ in range(rng.randint(0, 6)):
        kind = rng.choice(FIXED + ("min", "out", "min"))
        if kind == "min":
            e = min_speed_event(rng.uniform(0, 99.99))
        elif kind == "out":
            e = outside_lanes_event(rng.uniform(0, 300), rng.uniform(0, 40))
        else:
            e = RouteEvent(kind, f"Agent did {kind} at (x={rng.uniform(-99, 99):.3f}, y=0.0, z=0.0)")
        events.append(e)
        raw.append((e.kind, e.message, None if e.percentage is None else {"percentage": e.percentage}))
    rc = 100.0 if rng.random() < 0.4 else round(rng.uniform(0, 100), 2)
    if rc < 100 and rng.random() < 0.5:
        stop = RouteEvent(
            rng.choice(("route_dev", "vehicle_blocked")), "Agent stopped at (x=1.0, y=2.0, z=0.0)"
        )
        events.append(stop)
        raw.append((stop.kind, stop.message, None))
    outcome = RouteOutcome(
        f"RouteScenario_{route}_rep0",
        rc,
        round(rng.uniform(50, 9000), 3),
        events,
        timed_out=rc < 100 and rng.random() < 0.2,
        failure_message=rng.choice(("", "", "Agent crashed")),
        duration_game_s=rng.uniform(1, 900),
        duration_system_s=rng.uniform(1, 2000),
    )
    return outcome, raw


def check_leaderboard(lb_dir: Path, sr_dir: Path, runs: int, seed: int) -> str:
    sys.path[:0] = [str(lb_dir), str(sr_dir)]
    if importlib.util.find_spec("dictor") is None:  # the leaderboard's path getter, used only to read files
        sys.modules["dictor"] = types.SimpleNamespace(dictor=lambda d, p: None)
    from leaderboard.utils.statistics_manager import PENALTY_NAME_DICT, StatisticsManager, to_route_record
    from srunner.scenariomanager.traffic_events import TrafficEvent, TrafficEventType

    type_of = {name: t for t, name in PENALTY_NAME_DICT.items()}
    rng = random.Random(seed)
    routes = 0
    with tempfile.TemporaryDirectory() as tmp:
        endpoint, debug = str(Path(tmp) / "r.json"), str(Path(tmp) / "d.txt")
        for _ in range(runs):
            total = rng.randint(1, 8)
            ours = []
            for i in range(rng.randint(1, total)):
                outcome, raw = random_route(rng, i)
                events = [TrafficEvent(type_of[k], 0, m, d) for k, m, d in raw]
                events.append(
                    TrafficEvent(
                        TrafficEventType.ROUTE_COMPLETION,
                        0,
                        "",
                        {"route_completed": outcome.route_completion_pct},
                    )
                )
                sm = StatisticsManager(endpoint, debug)
                sm.create_route_data(outcome.route_id, 0)
                sm._scenario = types.SimpleNamespace(
                    timeout_node=types.SimpleNamespace(timeout=outcome.timed_out),
                    get_criteria=lambda ev=events: [types.SimpleNamespace(events=ev)],
                )
                sm._route_length = outcome.route_length_m
                sm.compute_route_statistics(
                    0, outcome.duration_system_s, outcome.duration_game_s, outcome.failure_message
                )
                theirs = sm._results.checkpoint.records[0].to_json()
                mine = score_route(outcome, 0)
                if json.dumps(theirs) != json.dumps(mine.to_json()):
                    raise AssertionError(
                        f"route differs:\n leaderboard {theirs}\n ours        {mine.to_json()}"
                    )
                mine.index = i
                ours.append(mine)
                routes += 1
            results = Results(records=ours, progress=[len(ours), total], sensors=["carla_camera"])
            finalize_results(results, crashed=len(ours) != total)
            sm = StatisticsManager(endpoint, debug)
            sm._results.checkpoint.records = [to_route_record(r.to_json()) for r in ours]
            sm.save_progress(len(ours), total)
            sm.compute_global_statistics()
            theirs = sm._results
            if json.dumps(theirs.checkpoint.global_record.to_json()) != json.dumps(
                results.global_record.to_json()
            ):
                raise AssertionError("global record differs")
            if theirs.values != results.values or theirs.labels != results.labels:
                raise AssertionError(f"values differ: {theirs.values} vs {results.values}")
    return f"leaderboard: {routes} random routes and {runs} random runs, records and global records identical"


def check_comfort(b2d_dir: Path, runs: int, seed: int) -> str:
    spec = importlib.util.spec_from_file_location(
        "b2d_smooth", b2d_dir / "tools" / "efficiency_smoothness_benchmark.py"
    )
    theirs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(theirs)  # needs scipy
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(runs):
        n = int(rng.integers(7, 130))
        t = np.arange(n) * 0.1
        acc = np.stack(
            [
                rng.uniform(0, 4) * np.sin(2 * np.pi * rng.uniform(0, 1) * t) + rng.normal(0, 0.3, n),
                rng.normal(0, rng.uniform(0, 3), n),
                np.zeros(n),
            ],
            1,
        )
        yaw_rate = np.cumsum(rng.normal(0, 0.2, n)) * rng.uniform(0, 1)
        ang = np.stack([np.zeros(n), np.zeros(n), yaw_rate], 1)
        heading = np.cumsum(yaw_rate) * 0.1
        fwd = np.stack([np.cos(heading), np.sin(heading), np.zeros(n)], 1)
        right = np.stack([-np.sin(heading), np.cos(heading), np.zeros(n)], 1)
        expected = theirs.seg_compute_comfort_metric(acc, ang, fwd, right, np.zeros((n, 3)), np.zeros((n, 3)))
        got = route_comfort(EgoMotion(acc, ang, fwd, right))
        if abs(expected - got) > 1e-12:
            raise AssertionError(f"comfort differs: Bench2Drive {expected}, ours {got}")
        values.append(got)
    return f"comfort: {runs} random routes identical to Bench2Drive's (mean {np.mean(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaderboard", type=Path, required=True)
    parser.add_argument("--scenario-runner", type=Path, required=True)
    parser.add_argument("--bench2drive", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(check_leaderboard(args.leaderboard, args.scenario_runner, args.runs, args.seed))
    if args.bench2drive:
        print(check_comfort(args.bench2drive, args.runs, args.seed))


if __name__ == "__main__":
    main()
