"""Closed-loop evaluation in the game's own city: each route of a benchmark driven in headless Chromium.

Per route: the game draws the route from its seed (`reset`), then the loop runs — the page returns the
state after the last step (and the front camera's frame for agents that look at it), the agent answers
with a control, the page advances `step_ticks` fixed 60 Hz steps. The simulation moves only when the
agent has answered. The leaderboard's criteria (criteria.py) end the route; the game's own infraction
log, mapped to the leaderboard's kinds (infractions.py), and the criteria's results make the route's
record, scored by `scoring.score_route`. The run writes `results.json` (the leaderboard's schema),
`routes.xml` (a leaderboard route file whose town is the city) and `game_log.jsonl` (the game's own
infractions, one line per route).

With `resume=True` a run that was stopped goes on where it stopped, as the leaderboard's `--resume`
does: the records already in `results.json` are kept (each checked against its route, drawn again
from the benchmark's seed), and driving starts at the first route without one. Routes are independent
(each is drawn and reset from its own seed), so a resumed run records what an uninterrupted one would.
"""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sd_evaluator.agents import Agent, AgentError, Control, Observation, RouteProgress
from sd_evaluator.results import Results, ResumeMismatch, RouteRecord, read_results, write_results
from sd_evaluator.scoring import Protocol, finalize_results, score_route

from sd_evaluator.city.benchmarks import CityBenchmark
from sd_evaluator.city.browser import GamePage, PageConfig, decode_frame
from sd_evaluator.city.criteria import RouteCriteria
from sd_evaluator.city.infractions import route_outcome
from sd_evaluator.city.settings import CitySettings

if TYPE_CHECKING:
    from sd_evaluator.camera_input import CameraSpec

RESULTS_FILE = "results.json"
ROUTES_FILE = "routes.xml"
GAME_LOG_FILE = "game_log.jsonl"
# What a record's `sensors` lists: the front camera when the agent looks at it, and the speedometer.
CAMERA_SENSOR = "sd_city_camera"
SPEED_SENSOR = "sd_city_speedometer"


def page_config(benchmark: CityBenchmark, camera: CameraSpec | None) -> PageConfig:
    """The page's URL settings: the benchmark's render size, or the dataset camera's recording size, FOV
    and mount (x, y, z forward/left/up in m; pitch, yaw, roll in degrees)."""
    if camera is None:
        return PageConfig(benchmark.city, benchmark.render_width, benchmark.render_height)
    m = camera.mount
    return PageConfig(benchmark.city, int(camera.recording_width), int(camera.recording_height),
                      float(camera.fov_deg),
                      (float(m.x_m), float(m.y_m), float(m.z_m), float(m.pitch_deg), float(m.yaw_deg),
                       float(m.roll_deg)))


def write_route_file(benchmark: CityBenchmark, routes: list[dict[str, Any]], path: Path) -> None:
    """A leaderboard-format route file of the routes driven: id = index, town = the city, the plan's points."""
    root = ET.Element("routes")
    for i, info in enumerate(routes):
        route = ET.SubElement(root, "route", id=str(i), town=benchmark.city)
        ET.SubElement(route, "weathers")
        waypoints = ET.SubElement(route, "waypoints")
        # The start, every junction's entry and the goal, as the leaderboard's sparse waypoints.
        plan = info["plan"]
        picks = [plan[0], *(plan[min(len(plan) - 1, int(j["s_enter_m"] // 2))] for j in info["junctions"]), plan[-1]]
        for p in picks:
            ET.SubElement(waypoints, "position", x=f"{p['x_m']:.3f}", y=f"{p['y_m']:.3f}", z="0.0")
        ET.SubElement(route, "scenarios")
    ET.indent(root)
    path.write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def run_city(
    benchmark: CityBenchmark,
    agent: Agent,
    out_dir: str | Path,
    *,
    camera: CameraSpec | None = None,
    progress: Callable[[RouteProgress], None] | None = None,
    stop: threading.Event | None = None,
    settings: CitySettings | None = None,
    protocol: Protocol = Protocol.LEADERBOARD_2_0,
    resume: bool = False,
) -> Results:
    """Drives every route of `benchmark` with `agent`; writes results.json, routes.xml and game_log.jsonl.

    `resume`: keep the records of an earlier, stopped run in `out_dir` and drive only the routes after
    them (ResumeMismatch when they are another run's).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sensors = ([CAMERA_SENSOR] if agent.needs_image else []) + [SPEED_SENSOR]
    results = Results(sensors=sensors, progress=[0, benchmark.routes])
    routes: list[dict[str, Any]] = []
    log_path = out / GAME_LOG_FILE
    results_path = out / RESULTS_FILE
    kept = _resumable_records(benchmark, sensors, results_path) if resume else []
    # One line per recorded route: a line written for a route whose record never was is dropped.
    lines = log_path.read_text().splitlines(keepends=True)[:len(kept)] if kept and log_path.is_file() else []
    if len(lines) < len(kept):
        raise ResumeMismatch(f"{log_path} has {len(lines)} lines for {len(kept)} recorded routes")
    log_path.write_text("".join(lines))
    with GamePage(page_config(benchmark, camera), settings) as page:
        for index, record in enumerate(kept):
            info = page.reset(benchmark.reset_options(index))
            if (info["id"], info["seed"]) != (record.extra.get("game_route_id"), record.extra.get("seed")):
                raise ResumeMismatch(f"{results_path}: {record.route_id} was driven on game route "
                                     f"{record.extra.get('game_route_id')}, {benchmark.name} draws {info['id']}")
            routes.append(info)
            results.records.append(record)
        results.progress = [len(kept), benchmark.routes]
        for index in range(len(kept), benchmark.routes):
            if stop is not None and stop.is_set():
                break
            driven = _drive_route(page, benchmark, index, agent, protocol, stop)
            if driven is None:  # stopped mid-route: the route is not recorded
                break
            record, info = driven
            # The game's own log, read from the game itself, beside the record built from the steps.
            game_log = page.history()
            routes.append(info)
            with log_path.open("a") as f:
                f.write(json.dumps({"route_id": record.route_id, "game_route_id": info["id"],
                                    "seed": info["seed"], "infractions": game_log}) + "\n")
            results.records.append(record)
            results.progress = [index + 1, benchmark.routes]
            write_route_file(benchmark, routes, out / ROUTES_FILE)
            write_results(results, results_path)
            if progress is not None:
                progress(RouteProgress(index, benchmark.routes, record.route_id, agent.name, record))
    if not routes:
        write_route_file(benchmark, [], out / ROUTES_FILE)
    finalize_results(results, crashed=len(results.records) < benchmark.routes)
    if len(results.records) < benchmark.routes:
        # Stopped before the last route: the entry stays Started (not eligible), as an interrupted run.
        results.set_entry_status("Started")
    write_results(results, results_path)
    return results


def _resumable_records(benchmark: CityBenchmark, sensors: list[str], path: Path) -> list[RouteRecord]:
    """The records of the earlier run in `path`, in route order; none when there is no file."""
    if not path.is_file():
        return []
    before = read_results(path)
    if before.sensors != sensors:
        raise ResumeMismatch(f"{path} was written by an agent with sensors {before.sensors}, not {sensors}")
    records = before.records
    if len(records) > benchmark.routes:
        raise ResumeMismatch(f"{path} has {len(records)} records; {benchmark.name} has {benchmark.routes} routes")
    for index, record in enumerate(records):
        if record.route_id != benchmark.route_id(index) or record.index != index:
            raise ResumeMismatch(f"{path}: record {index} is {record.route_id}, {benchmark.name} has "
                                 f"{benchmark.route_id(index)} there")
    return records


def _drive_route(
    page: GamePage,
    benchmark: CityBenchmark,
    index: int,
    agent: Agent,
    protocol: Protocol,
    stop: threading.Event | None,
) -> tuple[RouteRecord, dict[str, Any]] | None:
    route_id = benchmark.route_id(index)
    started = time.monotonic()
    info = page.reset(benchmark.reset_options(index))
    agent.reset(route_id)
    criteria = RouteCriteria(float(info["length_m"]), float(info["speed_limit_mps"]))
    reported: list[dict[str, Any]] = []
    render = agent.needs_image and not agent.privileged
    # The state before the first control: one tick with the brake held, as a car waits at its start.
    state = page.step({"steer": 0.0, "throttle": 0.0, "brake": 1.0}, 1, render)
    end = None
    while True:
        reported.extend(state["infractions"])
        end = criteria.update(state)
        if end is not None:
            break
        if stop is not None and stop.is_set():
            return None
        if agent.privileged:
            action: dict[str, Any] = {"autopilot": True}
        else:
            image = decode_frame(state["frame_b64"]) if render else None
            obs = Observation(image=image, speed_mps=float(state["speed_mps"]), command=int(state["command"]),
                              t_s=float(state["t_s"]))
            control = agent.act(obs)
            if not isinstance(control, Control):
                raise AgentError(f"agent {agent.name} answered {control!r}, not a Control")
            action = control.to_dict()
        state = page.step(action, benchmark.step_ticks, render)
    outcome = route_outcome(
        route_id, float(info["length_m"]), reported, criteria, end, protocol=protocol,
        duration_system_s=time.monotonic() - started,
        extra={"town_name": benchmark.city, "game_route_id": info["id"], "seed": info["seed"]},
    )
    return score_route(outcome, index, protocol), info


def main(argv: list[str] | None = None) -> int:
    """Command line: a city benchmark with the baseline agents that need no checkpoint, and their reports."""
    import argparse

    from sd_evaluator.agents import AUTOPILOT, CONSTANT, ConstantThrottleAgent, GameAutopilot
    from sd_evaluator.city.benchmarks import BENCHMARKS, BenchmarkError, city_benchmark
    from sd_evaluator.report import build_report, write_report
    from sd_evaluator.route_file import read_route_file

    ap = argparse.ArgumentParser(prog="python -m sd_evaluator.city.runner", description=main.__doc__)
    ap.add_argument("--benchmark", default="city-smoke", help=f"one of {', '.join(sorted(BENCHMARKS))}")
    ap.add_argument("--agents", default=f"{AUTOPILOT},{CONSTANT}",
                    help="comma-separated; the trained model runs through python -m sd_evaluator.evaluate")
    ap.add_argument("--out", required=True, help="writes <out>/<agent>/results.json, routes.xml, game_log.jsonl, report.*")
    args = ap.parse_args(argv)
    makers = {AUTOPILOT: GameAutopilot, CONSTANT: ConstantThrottleAgent}
    try:
        benchmark = city_benchmark(args.benchmark)
        names = [n for n in args.agents.split(",") if n]
        unknown = [n for n in names if n not in makers]
        if unknown:
            raise BenchmarkError(f"unknown agent(s) {', '.join(unknown)}; here: {', '.join(makers)}")
    except BenchmarkError as exc:
        ap.error(str(exc))
    for name in names:
        out = Path(args.out) / name
        started = time.monotonic()

        def show(p: RouteProgress) -> None:
            scores = p.record.scores if p.record else {}
            print(f"{p.agent} {p.route_index + 1}/{p.routes_total} {p.route_id}: {p.record.status if p.record else '-'} "
                  f"DS {scores.get('score_composed', 0):.2f} RC {scores.get('score_route', 0):.2f}", flush=True)

        results = run_city(benchmark, makers[name](), out, progress=show)
        write_report(build_report(results, read_route_file(out / ROUTES_FILE), results_name=str(out / RESULTS_FILE)), out)
        g = results.global_record
        print(f"{name}: DS {g.scores_mean['score_composed']:.2f} RC {g.scores_mean['score_route']:.2f} "
              f"IP {g.scores_mean['score_penalty']:.3f} over {benchmark.routes} routes in "
              f"{time.monotonic() - started:.0f} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
