"""A small benchmark kind for the evaluation process's tests: straight corridors with one traffic light.

The real runners (the city in headless Chromium, the leaderboard against CARLA) come with their own
modules and tests; this one is registered into `benchmarks.SOURCES` and `evaluate.RUNNERS` by
`install()` so evaluate.py's process, files, store mirror, signals and reports can be tested with every
agent actually driving. Physics: 10 Hz steps, acceleration 5 m/s² x throttle − 8 m/s² x brake, at most
15 m/s. The light at `light_m` is red for the first `red_s` seconds; passing it then is a red-light
infraction. The route times out after `timeout_s`. Records are built with scoring.score_route.

The model agent here reads a JSON "checkpoint" ({"throttle": x, "camera": {"width", "height"}}): the
trained CheckpointAgent (policy.py) is another module's, tested there.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sd_evaluator import benchmarks, evaluate
from sd_evaluator.agents import AUTOPILOT, CONSTANT, MODEL, AgentError, Control, Observation, RouteProgress
from sd_evaluator.results import Results, write_results
from sd_evaluator.scoring import RouteEvent, RouteOutcome, finalize_results, score_route

KIND = "corridor"
DT_S = 0.1
TOWN = "Corridor"


@dataclass(frozen=True)
class CorridorBenchmark:
    name: str
    routes: tuple[tuple[str, float], ...] = (("1", 60.0), ("2", 40.0))
    light_m: float = 20.0
    red_s: float = 6.0
    timeout_s: float = 20.0
    expected_routes: int | None = None


BENCHMARKS = {
    "corridor-2": CorridorBenchmark("corridor-2"),
    "corridor-3": CorridorBenchmark("corridor-3", routes=(("1", 60.0), ("2", 40.0), ("7", 30.0)), expected_routes=5),
}


@dataclass(frozen=True)
class Camera:
    width: int
    height: int

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height}


@dataclass
class JsonModelAgent:
    """The model's stand-in: a fixed throttle, and it checks it is shown its own camera's picture."""

    throttle: float
    camera: Camera
    name: str = MODEL
    privileged: bool = False
    needs_image: bool = True
    seen: list = field(default_factory=list)

    def reset(self, route_id: str) -> None:
        pass

    def act(self, obs: Observation) -> Control:
        if obs.image is None or obs.image.shape != (self.camera.height, self.camera.width, 3):
            raise AgentError(f"the model was shown {None if obs.image is None else obs.image.shape}")
        return Control(0.0, self.throttle, 0.0)


def load_model(checkpoint: str) -> JsonModelAgent:
    """The test's checkpoint loader (a missing file is FileNotFoundError, as for a real one)."""
    doc = json.loads(Path(checkpoint).read_text())
    if "throttle" not in doc:
        raise AgentError(f"{checkpoint}: no throttle in this checkpoint")
    return JsonModelAgent(float(doc["throttle"]), Camera(**doc.get("camera", {"width": 32, "height": 16})))


def _autopilot(bench: CorridorBenchmark, t_s: float, pos_m: float, speed_mps: float) -> Control:
    """Privileged: it knows the light's state and stops before it while red."""
    if t_s < bench.red_s and pos_m < bench.light_m:
        stopping_m = speed_mps**2 / (2 * 8.0) + speed_mps * DT_S
        if pos_m + stopping_m >= bench.light_m - 1.0:
            return Control(0.0, 0.0, 1.0)
    return Control(0.0, 0.5, 0.0)


def routes_xml(bench: CorridorBenchmark) -> str:
    root = ET.Element("routes")
    for route_id, length_m in bench.routes:
        route = ET.SubElement(root, "route", id=route_id, town=TOWN)
        wps = ET.SubElement(route, "waypoints")
        ET.SubElement(wps, "position", x="0.0", y="0.0", z="0.0")
        ET.SubElement(wps, "position", x=str(length_m), y="0.0", z="0.0")
        ET.SubElement(route, "scenarios")
    return ET.tostring(root, encoding="unicode")


def drive_route(bench: CorridorBenchmark, route_id: str, length_m: float, agent, camera, stop) -> RouteOutcome | None:
    """One route; None when stopped before its end."""
    agent.reset(route_id)
    t_s = pos_m = speed_mps = 0.0
    events: list[RouteEvent] = []
    step_s = float(os.environ.get("CORRIDOR_STEP_S", "0"))
    size = (camera.height, camera.width) if camera is not None else (16, 32)
    while pos_m < length_m and t_s < bench.timeout_s:
        if stop is not None and stop.is_set():
            return None
        if agent.privileged:
            control = _autopilot(bench, t_s, pos_m, speed_mps)
        else:
            image = np.full((*size, 3), int(pos_m) % 256, np.uint8) if agent.needs_image else None
            control = agent.act(Observation(image, speed_mps, 4, t_s))
        speed_mps = min(15.0, max(0.0, speed_mps + (5.0 * control.throttle - 8.0 * control.brake) * DT_S))
        before = pos_m
        pos_m = min(length_m, pos_m + speed_mps * DT_S)
        t_s = round(t_s + DT_S, 6)
        if before < bench.light_m <= pos_m and t_s < bench.red_s:
            events.append(RouteEvent("red_light", f"Agent ran a red light 1 at (x={bench.light_m}, y=0.0, z=0.0)"))
        if step_s:
            time.sleep(step_s)
    rc = 100.0 * pos_m / length_m
    return RouteOutcome(f"RouteScenario_{route_id}_rep0", rc, length_m, events, timed_out=rc < 100,
                        duration_game_s=t_s, extra={"camera": camera.to_dict() if camera is not None else None})


def run_corridor(bench: CorridorBenchmark, run: evaluate.AgentRun) -> Results:
    """The runner of the corridor kind, with the contract's files: results.json and routes.xml."""
    out = Path(run.out_dir)
    (out / "routes.xml").write_text(routes_xml(bench))
    results = Results(progress=[0, len(bench.routes)], sensors=["camera", "speedometer"])
    seen = out / "progress_seen.jsonl"
    for i, (route_id, length_m) in enumerate(bench.routes):
        progress = out.parent / "progress.json"  # what a reader sees at this route's start
        with seen.open("a") as f:
            f.write(progress.read_text().replace("\n", " ") + "\n")
        outcome = drive_route(bench, route_id, length_m, run.agent, run.camera, run.stop)
        if outcome is None:
            break
        record = score_route(outcome, i)
        results.records.append(record)
        results.progress = [i + 1, len(bench.routes)]
        run.progress(RouteProgress(i, len(bench.routes), record.route_id, run.agent.name, record))
    finalize_results(results, crashed=run.stop.is_set())
    write_results(results, out / "results.json")
    return results


def install(monkeypatch=None) -> None:
    """Registers the corridor kind (with the city's baselines: autopilot and constant throttle)."""
    entries = ((benchmarks.SOURCES, KIND, lambda: BENCHMARKS), (evaluate.RUNNERS, KIND, run_corridor),
               (evaluate.BASELINES, KIND, (AUTOPILOT, CONSTANT)))
    for table, key, value in entries:
        if monkeypatch is not None:
            monkeypatch.setitem(table, key, value)
        else:
            table[key] = value
