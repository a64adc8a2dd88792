"""Closed-loop runs of one short city route in headless Chromium, and the check of a record against the
game's own infraction log (`_check_against_game_log`) that test_evaluate_city.py applies to each agent
of a whole evaluation — the model and both baselines.

The game (web/dist, rebuilt here when older than its sources) is served on loopback and driven in
agent mode by the runner; Debian's Chromium and the playwright package must be installed. Missing, the
test skips on a developer's machine and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sd_evaluator.agents import ConstantThrottleAgent, Control, Observation
from sd_evaluator.city.benchmarks import city_benchmark
from sd_evaluator.city.browser import CHROMIUM_CANDIDATES
from sd_evaluator.city.infractions import EVENT_KINDS, OUTSIDE_LANES_KINDS, map_infraction
from sd_evaluator.city.runner import run_city
from sd_evaluator.report import build_report
from sd_evaluator.results import read_results
from sd_evaluator.route_file import read_route_file
from sd_evaluator.scoring import rescore_record

REPO = Path(__file__).resolve().parents[3]
WEB = REPO / "web"
IN_CI = os.environ.get("CI", "").lower() == "true"
# Keys a record may hold that are not game infractions: the criteria's own results.
CRITERIA_KEYS = {"min_speed_infractions", "route_dev", "vehicle_blocked", "route_timeout"}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not any(Path(p).is_file() for p in CHROMIUM_CANDIDATES) and not os.environ.get("SD_CHROMIUM"):
        return "Chromium is not installed (apt-get install chromium)"
    if not (WEB / "dist" / "index.html").is_file() and shutil.which("npm") is None:
        return "web/dist is not built and npm is missing"
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None and not IN_CI, reason=f"city closed-loop test needs: {MISSING}")


@pytest.fixture(scope="module", autouse=True)
def built_game():
    if MISSING is not None:  # only under CI=true, where the test must not skip
        pytest.fail(f"city closed-loop test needs: {MISSING}")
    dist = WEB / "dist" / "index.html"
    sources = [p for d in ("src", "public", "index.html", "package.json", "vite.config.ts")
               for p in ((WEB / d).rglob("*") if (WEB / d).is_dir() else [WEB / d]) if p.is_file()]
    if not dist.exists() or dist.stat().st_mtime < max(p.stat().st_mtime for p in sources):
        subprocess.run(["npm", "--prefix", str(WEB), "run", "build"], check=True, capture_output=True, timeout=300)


def _check_against_game_log(out: Path, agent_name: str) -> dict:
    results = read_results(out / "results.json")
    assert results.entry_status == "Finished" and results.progress == [1, 1]
    (record,) = results.records
    (line,) = [json.loads(x) for x in (out / "game_log.jsonl").read_text().splitlines()]
    assert line["route_id"] == record.route_id == "RouteScenario_0_rep0"
    # The game's own log, read back from the page's World.history after the route (not from the steps).
    game_log = line["infractions"]
    # Every game infraction that is an event appears as its leaderboard message, in order; nothing else.
    # (The message's position is where the car was; the log has none, so compare up to " at (".)
    for game_kind, key in EVENT_KINDS.items():
        expected = [map_infraction({**i, "x_m": 0, "y_m": 0}).message.split(" at (")[0]
                    for i in game_log if i["kind"] == game_kind]
        assert [m.split(" at (")[0] for m in record.infractions[key]] == expected, (agent_name, key)
    assert {i["kind"] for i in game_log} <= set(EVENT_KINDS) | OUTSIDE_LANES_KINDS
    # Outside-lanes is measured, never invented: only when the game counted the car off road or wrong way.
    if record.infractions["outside_route_lanes"]:
        assert any(i["kind"] in OUTSIDE_LANES_KINDS for i in game_log)
        assert len(record.infractions["outside_route_lanes"]) == 1
    if not any(i["kind"] in OUTSIDE_LANES_KINDS for i in game_log):
        assert record.infractions["outside_route_lanes"] == []
    others = {k for k, v in record.infractions.items() if v} - set(EVENT_KINDS.values()) - {"outside_route_lanes"}
    assert others <= CRITERIA_KEYS
    # The written scores are the scorer's own arithmetic on the written messages (exact but for the
    # outside-lanes message, whose percentage is rounded to 0.01: a relative 5e-5 at most).
    if record.infractions["outside_route_lanes"]:
        assert rescore_record(record) == pytest.approx(record.scores, rel=1e-4)
    else:
        assert rescore_record(record) == record.scores
    # The route file names the city as the town, and the report reads both unchanged.
    routes = read_route_file(out / "routes.xml")
    assert routes.towns == ("east-village",) and len(routes.routes) == 1
    report = build_report(results, routes)
    assert report["towns"] == report["towns_driven"] == ["east-village"]
    return {"record": record, "game_log": game_log}


class _LookingConstant:
    """The constant-throttle control, from an agent that asks for the picture (to test frames)."""

    name = "looking"
    privileged = False
    needs_image = True

    def __init__(self, stop_after: int | None = None, stop: threading.Event | None = None):
        self.shapes: set[tuple[int, ...]] = set()
        self.means: list[float] = []
        self.commands: set[int] = set()
        self.calls = 0
        self._stop_after, self._stop = stop_after, stop

    def reset(self, route_id: str) -> None:
        pass

    def act(self, obs: Observation) -> Control:
        self.calls += 1
        if self._stop_after is not None and self.calls >= self._stop_after:
            self._stop.set()
        assert obs.image is not None and obs.image.dtype == np.uint8
        self.shapes.add(obs.image.shape)
        self.means.append(float(obs.image.mean()))
        self.commands.add(obs.command)
        return Control(0.0, 0.5, 0.0)


def test_an_agent_that_looks_gets_frames_and_rendering_changes_nothing(tmp_path):
    # A route of the same size on which going straight leaves the route early (a short run with frames).
    bench = replace(city_benchmark("city-smoke"), name="city-smoke-frames", seed=26)
    looking = _LookingConstant()
    seen = run_city(bench, looking, tmp_path / "looking")
    blind = run_city(bench, ConstantThrottleAgent(), tmp_path / "blind")
    assert looking.shapes == {(bench.render_height, bench.render_width, 3)}
    # Real pictures that change as the car drives, not one blank frame.
    assert min(looking.means) > 20 and np.std(looking.means) > 1
    # The route's navigation command as the game's tracker gives it (RoadOption numbers; this route starts
    # on the approach to a right turn, which the car never gets through).
    assert looking.commands == {2}
    assert seen.sensors == ["sd_city_camera", "sd_city_speedometer"]
    assert blind.sensors == ["sd_city_speedometer"]
    # The same controls drive the same route whether frames are rendered or not.
    a, b = seen.records[0], blind.records[0]
    assert (a.infractions, a.scores, a.meta["duration_game"]) == (b.infractions, b.scores, b.meta["duration_game"])


def test_a_stop_between_steps_ends_the_run_without_a_record(tmp_path):
    stop = threading.Event()
    agent = _LookingConstant(stop_after=5, stop=stop)
    results = run_city(city_benchmark("city-smoke"), agent, tmp_path / "stopped", stop=stop)
    assert agent.calls == 5
    assert results.records == [] and results.progress == [0, 1]
    assert (results.entry_status, results.eligible) == ("Started", False)
    assert read_results(tmp_path / "stopped" / "results.json").records == []


def test_a_stopped_run_resumes_where_it_stopped_and_records_what_an_uninterrupted_one_does(tmp_path):
    from sd_evaluator.results import ResumeMismatch

    bench = replace(city_benchmark("city-smoke"), name="city-smoke-2", routes=2)
    full = run_city(bench, ConstantThrottleAgent(), tmp_path / "full")
    stop = threading.Event()
    part = tmp_path / "part"
    stopped = run_city(bench, ConstantThrottleAgent(), part, stop=stop, progress=lambda p: stop.set())
    assert len(stopped.records) == 1 and stopped.entry_status == "Started"
    resumed = run_city(bench, ConstantThrottleAgent(), part, resume=True)
    assert [r.route_id for r in resumed.records] == [r.route_id for r in full.records]
    for a, b in zip(resumed.records, full.records):
        assert (a.status, a.infractions, a.scores, a.extra) == (b.status, b.infractions, b.scores, b.extra)
        assert a.meta["duration_game"] == b.meta["duration_game"]
    assert resumed.entry_status == full.entry_status and resumed.global_record.scores_mean == full.global_record.scores_mean
    assert (part / "routes.xml").read_bytes() == (tmp_path / "full" / "routes.xml").read_bytes()
    assert (part / "game_log.jsonl").read_text() == (tmp_path / "full" / "game_log.jsonl").read_text()
    before = (part / "results.json").read_bytes()
    # another agent's folder, or other routes, are not resumed, and the file is left as it was
    with pytest.raises(ResumeMismatch, match="sensors"):
        run_city(bench, _LookingConstant(), part, resume=True)
    with pytest.raises(ResumeMismatch, match="game route"):
        run_city(replace(bench, seed=bench.seed + 1), ConstantThrottleAgent(), part, resume=True)
    assert (part / "results.json").read_bytes() == before
