"""run_leaderboard around its child process, with a stand-in for leaderboard_evaluator.py.

No CARLA server or leaderboard checkout is here: the tests build a checkout folder whose
`leaderboard/leaderboard_evaluator.py` is a stand-in that records its command line and environment and
writes the leaderboard's result file route by route (the hand-worked two-route file of
leaderboard_files.py), then finishes, crashes, or waits to be stopped. Everything the runner does around
the child is real: the command, the agent configuration, the environment, relaying progress from the
growing file, stopping the process group, and finalizing the results with the scorer.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

import pytest
from leaderboard_files import ROUTES_XML, leaderboard_file

from sd_evaluator.agents import AgentError
from sd_evaluator.carla import benchmarks
from sd_evaluator.carla.benchmarks import BenchmarkError, LeaderboardBenchmark
from sd_evaluator.carla.runner import LeaderboardRunError, LeaderboardSettings, run_leaderboard
from sd_evaluator.scoring import Protocol

pytestmark = pytest.mark.timeout(120)

STAND_IN = r'''
import json, os, signal, sys, time
from pathlib import Path

args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
here = Path(__file__).resolve().parent.parent
(here / "invocation.json").write_text(json.dumps({"argv": sys.argv, "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in ("PYTHONPATH", "LEADERBOARD_ROOT", "SCENARIO_RUNNER_ROOT", "CARLA_ROOT")}}))
plan = json.loads((here / "plan.json").read_text())
full = json.loads((here / "full.json").read_text())
out = Path(args["checkpoint"])

def write(k, done):
    doc = json.loads(json.dumps(full))
    doc["_checkpoint"]["records"] = full["_checkpoint"]["records"][:k]
    doc["_checkpoint"]["progress"] = [k, 2]
    if not done:
        doc["_checkpoint"]["global_record"] = {}
        doc["entry_status"], doc["eligible"], doc["values"] = "Started", False, []
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=4))
    os.replace(tmp, out)

write(0, False)
write(1, False)
if plan["mode"] == "crash":
    sys.exit(1)
if plan["mode"] == "hang":
    while True:
        time.sleep(0.1)
# wait until the runner relayed the first route, so the test knows progress is live
deadline = time.time() + 60
while not (here / "continue").exists():
    if time.time() > deadline:
        sys.exit(3)
    time.sleep(0.02)
write(2, True)
'''


@pytest.fixture
def checkout(tmp_path):
    """A leaderboard checkout folder with the stand-in evaluator and a two-route file."""
    root = tmp_path / "leaderboard-checkout"
    (root / "leaderboard").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "leaderboard" / "leaderboard_evaluator.py").write_text(STAND_IN)
    two_routes = re.sub(r'\s*<route id="3100".*?</route>', "", ROUTES_XML, flags=re.S)
    (root / "data" / "two.xml").write_text(two_routes)
    (root / "full.json").write_text(json.dumps(leaderboard_file()))
    return root


BENCH = LeaderboardBenchmark("two-routes", "data/two.xml", Protocol.BENCH2DRIVE)
CONFIG = {"checkpoint": "training/r/checkpoints/step-000000010.pt", "camera": {"recording": {"width": 1280}}}


def _settings(root: Path, tmp_path: Path) -> LeaderboardSettings:
    return LeaderboardSettings(leaderboard_root=root, scenario_runner_root=tmp_path / "scenario_runner",
                               carla_root=tmp_path / "CARLA_0.9.16", python=sys.executable,
                               traffic_manager_port=8123, client_timeout_s=240, poll_interval_s=0.05,
                               stop_grace_s=5)


def test_a_finished_run_relays_each_route_and_scores_the_file(checkout, tmp_path):
    (checkout / "plan.json").write_text(json.dumps({"mode": "finish"}))
    seen = []

    def progress(p):
        seen.append((p.route_index, p.routes_total, p.route_id, p.agent, p.record.scores["score_composed"]))
        (checkout / "continue").touch()  # only now does the stand-in write the second route

    out = tmp_path / "out"
    results = run_leaderboard(BENCH, "model", out, agent_config=CONFIG, carla_host="carla.svc", carla_port=2010,
                              progress=progress, settings=_settings(checkout, tmp_path))
    assert seen == [(0, 2, "RouteScenario_1711_rep0", "model", 57.3), (1, 2, "RouteScenario_2084_rep0", "model", 42.5)]
    assert results.entry_status == "Finished" and results.eligible
    assert results.global_record.scores_mean == {"score_composed": 49.9, "score_route": 71.25, "score_penalty": 0.7865}
    assert results.values == leaderboard_file()["values"]
    # the file in out_dir is the leaderboard's schema, with the route file that was driven beside it
    written = json.loads((out / "results.json").read_text())
    assert written["_checkpoint"]["progress"] == [2, 2] and len(written["_checkpoint"]["records"]) == 2
    assert (out / "routes.xml").read_bytes() == (checkout / "data" / "two.xml").read_bytes()
    assert json.loads((out / "agent_config.json").read_text()) == CONFIG

    call = json.loads((checkout / "invocation.json").read_text())
    agent_file = Path(benchmarks.__file__).with_name("agent.py")
    assert call["argv"][1:] == [
        f"--routes={out / 'routes.xml'}", "--repetitions=1", "--track=SENSORS", f"--agent={agent_file}",
        f"--agent-config={out / 'agent_config.json'}", f"--checkpoint={out / 'results.json'}",
        "--host=carla.svc", "--port=2010", "--traffic-manager-port=8123", "--timeout=240", "--debug=0",
        "--record=", f"--debug-checkpoint={out / 'live_results.txt'}"]
    assert call["argv"][0].endswith("leaderboard/leaderboard_evaluator.py") and call["cwd"] == str(checkout)
    paths = call["env"]["PYTHONPATH"].split(os.pathsep)
    assert paths[:3] == [str(checkout), str(tmp_path / "scenario_runner"),
                         str(tmp_path / "CARLA_0.9.16" / "PythonAPI" / "carla")]
    assert call["env"]["LEADERBOARD_ROOT"] == str(checkout)
    assert call["env"]["CARLA_ROOT"] == str(tmp_path / "CARLA_0.9.16")


def test_resume_and_the_constant_throttle_agent_file(checkout, tmp_path):
    (checkout / "plan.json").write_text(json.dumps({"mode": "finish"}))
    (checkout / "continue").touch()
    run_leaderboard(BENCH, "constant-throttle", tmp_path / "out", agent_config={"throttle": 0.5},
                    carla_host="localhost", carla_port=2000, settings=_settings(checkout, tmp_path), resume=True)
    argv = json.loads((checkout / "invocation.json").read_text())["argv"]
    assert f"--agent={Path(benchmarks.__file__).with_name('constant_agent.py')}" in argv
    assert argv[-1] == "--resume=1"


def test_a_crashed_child_keeps_its_records_and_the_entry_is_crashed(checkout, tmp_path):
    (checkout / "plan.json").write_text(json.dumps({"mode": "crash"}))
    seen = []
    results = run_leaderboard(BENCH, "model", tmp_path / "out", agent_config=CONFIG, carla_host="h", carla_port=1,
                              progress=lambda p: seen.append(p.route_id), settings=_settings(checkout, tmp_path))
    assert seen == ["RouteScenario_1711_rep0"]
    assert results.entry_status == "Crashed" and not results.eligible
    assert [r.route_id for r in results.records] == ["RouteScenario_1711_rep0"]
    # the missing route counts 0 in the means over the run's two routes
    assert results.global_record.scores_mean["score_composed"] == pytest.approx(57.3 / 2)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["entry_status"] == "Crashed" and len(on_disk["_checkpoint"]["records"]) == 1


def test_stop_terminates_the_child_and_keeps_partial_results(checkout, tmp_path):
    (checkout / "plan.json").write_text(json.dumps({"mode": "hang"}))
    stop = threading.Event()
    results = run_leaderboard(BENCH, "model", tmp_path / "out", agent_config=CONFIG, carla_host="h", carla_port=1,
                              progress=lambda p: stop.set(), stop=stop, settings=_settings(checkout, tmp_path))
    assert [r.route_id for r in results.records] == ["RouteScenario_1711_rep0"]
    assert results.entry_status == "Invalid"  # stopped before every route had a record, not a crash
    assert results.progress == [1, 2]


def test_missing_checkout_file_or_agent_are_named(checkout, tmp_path):
    with pytest.raises(BenchmarkError, match="SD_EVALUATOR_LEADERBOARD_ROOT"):
        run_leaderboard(BENCH, "model", tmp_path / "o", agent_config=CONFIG, carla_host="h", carla_port=1,
                        settings=LeaderboardSettings(leaderboard_root=None))
    with pytest.raises(BenchmarkError, match="bench2drive220.xml is missing"):
        run_leaderboard("bench2drive-220", "model", tmp_path / "o", agent_config=CONFIG, carla_host="h",
                        carla_port=1, settings=_settings(checkout, tmp_path))
    with pytest.raises(BenchmarkError, match="has 2 routes, the protocol expects 220"):
        LeaderboardBenchmark("x", "data/two.xml", Protocol.BENCH2DRIVE, 220).read_routes(checkout)
    with pytest.raises(BenchmarkError, match="unknown CARLA benchmark 'b2d'"):
        benchmarks.resolve("b2d")
    with pytest.raises(AgentError, match="only in the city"):
        run_leaderboard(BENCH, "autopilot", tmp_path / "o", agent_config={}, carla_host="h", carla_port=1,
                        settings=_settings(checkout, tmp_path))
    (checkout / "leaderboard" / "leaderboard_evaluator.py").unlink()
    with pytest.raises(LeaderboardRunError, match="leaderboard_evaluator.py is missing"):
        run_leaderboard(BENCH, "model", tmp_path / "o", agent_config=CONFIG, carla_host="h", carla_port=1,
                        settings=_settings(checkout, tmp_path))
    assert not (tmp_path / "o" / "results.json").exists()


def test_the_named_benchmarks_point_at_the_leaderboards_files():
    assert {n: (b.route_file, b.protocol, b.expected_routes) for n, b in benchmarks.BENCHMARKS.items()} == {
        "bench2drive-220": ("data/bench2drive220.xml", Protocol.BENCH2DRIVE, 220),
        "bench2drive-dev10": ("data/drivetransformer_bench2drive_dev10.xml", Protocol.BENCH2DRIVE, 10),
        "lb2-town13": ("data/routes_validation.xml", Protocol.LEADERBOARD_2_0, None),
    }
