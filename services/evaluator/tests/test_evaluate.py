"""The evaluation process (python -m sd_evaluator.evaluate) with every agent driving the corridor kind
(corridor.py): files, the side-by-side report, progress after every route, the store mirror, exit codes,
SIGTERM. The real runners (city, CARLA) are tested in their own modules."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import corridor
import pytest

from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_evaluator import evaluate
from sd_evaluator.report import build_report
from sd_evaluator.results import read_results
from sd_evaluator.route_file import read_route_file

SCRIPT = Path(__file__).with_name("scripted_evaluation.py")


@pytest.fixture
def env(tmp_path, monkeypatch):
    corridor.install(monkeypatch)
    store_root = tmp_path / "store"
    monkeypatch.setenv("SD_STORE_ROOT", str(store_root))
    log = tmp_path / "termination-log"
    monkeypatch.setenv("SD_EVALUATOR_TERMINATION_LOG", str(log))
    checkpoint = tmp_path / "model.json"
    checkpoint.write_text(json.dumps({"throttle": 0.05, "camera": {"width": 24, "height": 12}}))
    return {"store": store_root, "log": log, "checkpoint": checkpoint, "out": tmp_path / "ev"}


def stored(root: Path, key: str) -> bytes:
    async def get() -> bytes:
        async with make_store(StoreSettings(root=root)) as store:
            return await store.get_bytes(key, max_bytes=1 << 24)
    return asyncio.run(get())


def test_every_agent_drives_the_same_routes_and_the_report_puts_them_side_by_side(env):
    out = env["out"]
    code = evaluate.main(["--checkpoint", str(env["checkpoint"]), "--benchmark", "corridor-2", "--out", str(out),
                          "--evaluation-id", "ev-one"], load_model=corridor.load_model)
    assert code == 0
    agents = ["model", "autopilot", "constant-throttle"]
    results = {a: read_results(out / a / "results.json") for a in agents}
    # The same two routes, driven with the model's camera by every agent.
    for a in agents:
        assert [r.route_id for r in results[a].records] == ["RouteScenario_1_rep0", "RouteScenario_2_rep0"]
        assert all(r.extra["camera"] == {"width": 24, "height": 12} for r in results[a].records)
        assert (out / a / "routes.xml").read_bytes() == (out / "routes.xml").read_bytes()
    # Constant throttle runs the red light on both routes (IP 0.7, RC 100); the autopilot waits (perfect).
    const = results["constant-throttle"].global_record.scores_mean
    assert (const["score_composed"], const["score_route"], const["score_penalty"]) == (70.0, 100.0, 0.7)
    auto = results["autopilot"].global_record.scores_mean
    assert (auto["score_composed"], auto["score_route"], auto["score_penalty"]) == (100.0, 100.0, 1.0)
    model_records = results["model"].records
    assert model_records[0].status == "Failed - Agent timed out" and 0 < model_records[0].scores["score_route"] < 100

    report = json.loads((out / "report.json").read_text())
    assert report["agents"] == agents and report["route_count"] == 2 and report["routes_in_run"] == 2
    assert report["route_file"] == str(out / "routes.xml") and report["towns"] == ["Corridor"]
    route_file = read_route_file(out / "routes.xml")
    for a in agents:  # the side-by-side numbers are each agent's own report's
        own = build_report(results[a], route_file)
        assert report["scores"][a]["driving_score"] == own["leaderboard"]["driving_score"]
        assert report["scores"][a]["km_driven"] == own["km_driven"]
        assert json.loads((out / a / "report.json").read_text())["leaderboard"] == own["leaderboard"]
    assert report["km_driven"]["constant-throttle"] == 0.1  # 60 m + 40 m
    md = (out / "report.md").read_text()
    assert "| constant-throttle | 70.000 | 100.000 | 0.7000 |" in md
    assert (out / "ds_per_route_per_agent.png").stat().st_size > 0

    result = json.loads((out / "result.json").read_text())
    assert result["state"] == "succeeded" and result["agents"] == agents
    assert result["scores"]["driving_score"] == report["scores"]["model"]["driving_score"]
    assert set(result["scores"]["agents"]) == set(agents)
    assert result["report_uri"] == "evaluations/ev-one/report.md"
    # The operator reads the termination log: the same result, compact.
    assert json.loads(env["log"].read_text()) == result
    # Every file is mirrored to the store under evaluations/<id>/.
    for rel in ("result.json", "report.md", "progress.json", "model/results.json", "autopilot/report.json"):
        assert stored(env["store"], f"evaluations/ev-one/{rel}") == (out / rel).read_bytes(), rel


def test_progress_is_written_after_every_route_of_every_agent(env):
    out = env["out"]
    assert evaluate.main(["--checkpoint", str(env["checkpoint"]), "--benchmark", "corridor-3", "--out", str(out),
                          "--evaluation-id", "ev-progress"], load_model=corridor.load_model) == 0
    # What the runner saw in progress.json at the start of each route.
    seen = {a: [json.loads(line) for line in (out / a / "progress_seen.jsonl").read_text().splitlines()]
            for a in ("model", "autopilot", "constant-throttle")}
    assert [s["per_agent"]["model"]["routes_done"] for s in seen["model"]] == [0, 1, 2]
    assert [s["routes_done"] for s in seen["autopilot"]] == [3, 4, 5]
    assert [s["agent"] for s in seen["constant-throttle"]] == ["constant-throttle"] * 3
    # After the autopilot's first route its partial DS counts the two routes not driven as 0.
    assert seen["autopilot"][1]["per_agent"]["autopilot"]["driving_score"] == pytest.approx(100 / 3, abs=1e-5)
    final = json.loads((out / "progress.json").read_text())
    assert final["state"] == "succeeded" and final["fraction_done"] == 1.0
    # Bench2Drive's rule: corridor-3 says a complete run has 5 routes, so missing ones count 0.
    report = json.loads((out / "report.json").read_text())
    assert report["scores"]["autopilot"]["bench2drive_driving_score"] == pytest.approx(300 / 5)


@pytest.mark.parametrize("argv, reason, text", [
    (["--benchmark", "nope"], "UnknownBenchmark", "corridor: corridor-2, corridor-3"),
    (["--benchmark", "corridor-2", "--agents", "model,constant-throttle"], "EvaluationInputError",
     "add autopilot"),
    (["--benchmark", "corridor-2", "--agents", "model,autopilot,constant-throttle,flying"], "EvaluationInputError",
     "unknown agent(s) flying"),
    (["--benchmark", "corridor-2", "--checkpoint", "/nonexistent/model.json"], "EvaluationInputError",
     "/nonexistent/model.json"),
    (["--benchmark", "corridor-2"], "EvaluationInputError", "--checkpoint is required"),
])
def test_bad_input_exits_2_and_names_it(env, argv, reason, text):
    out = env["out"]
    if "--checkpoint" not in argv and reason != "EvaluationInputError":
        argv = argv + ["--checkpoint", str(env["checkpoint"])]
    code = evaluate.main(argv + ["--out", str(out), "--evaluation-id", "ev-bad"], load_model=corridor.load_model)
    assert code == 2
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "failed" and progress["reason"] == reason and text in progress["message"]
    assert json.loads(env["log"].read_text())["reason"] == reason
    assert not (out / "result.json").exists() and not any(p.is_dir() for p in out.iterdir())  # nobody drove


def test_a_bad_evaluation_id_makes_no_folder(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert evaluate.main(["--benchmark", "corridor-2", "--evaluation-id", "../up"],
                         load_model=corridor.load_model) == 2
    assert not (tmp_path / ".run").exists() and not (tmp_path / "up").exists()
    assert "evaluation_id '../up'" in json.loads(env["log"].read_text())["message"]


def test_baselines_alone_need_no_checkpoint(env):
    out = env["out"]
    assert evaluate.main(["--benchmark", "corridor-2", "--agents", "constant-throttle,autopilot", "--out", str(out),
                          "--evaluation-id", "ev-base"], load_model=corridor.load_model) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["agents"] == ["autopilot", "constant-throttle"] and "driving_score" not in result["scores"]
    assert not (out / "model").exists()


def test_a_runner_that_fails_exits_1_with_the_reason(env, monkeypatch):
    def broken(bench, run):
        raise RuntimeError("the simulator went away")
    monkeypatch.setitem(evaluate.RUNNERS, corridor.KIND, broken)
    out = env["out"]
    assert evaluate.main(["--checkpoint", str(env["checkpoint"]), "--benchmark", "corridor-2", "--out", str(out),
                          "--evaluation-id", "ev-broken"], load_model=corridor.load_model) == 1
    progress = json.loads((out / "progress.json").read_text())
    assert (progress["state"], progress["reason"]) == ("failed", "RuntimeError")
    assert "went away" in progress["message"]
    assert json.loads(stored(env["store"], "evaluations/ev-broken/progress.json"))["state"] == "failed"


def test_sigterm_stops_between_steps_and_exits_143(env):
    out = env["out"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--checkpoint", str(env["checkpoint"]), "--benchmark",
                             "corridor-2", "--out", str(out), "--evaluation-id", "ev-stop"],
                            env={**os.environ, "CORRIDOR_STEP_S": "0.05"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "model" / "progress_seen.jsonl").exists():  # the model is driving its first route
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "stopped" and progress["reason"] == "Terminated"
    assert not (out / "result.json").exists() and not (out / "autopilot").exists()
    assert json.loads(env["log"].read_text())["state"] == "stopped"


def test_resolve_finds_a_name_in_its_kinds_table_and_lists_every_name_otherwise(monkeypatch):
    from sd_evaluator import benchmarks

    corridor.install(monkeypatch)
    monkeypatch.setitem(benchmarks.SOURCES, "other", lambda: {"other-1": object()})
    found = benchmarks.resolve("corridor-3")
    assert (found.kind, found.name, found.expected_routes) == ("corridor", "corridor-3", 5)
    assert benchmarks.resolve("corridor-2").expected_routes is None
    assert benchmarks.resolve("other-1").kind == "other"
    with pytest.raises(benchmarks.UnknownBenchmark) as err:
        benchmarks.resolve("city-2000")
    assert "corridor: corridor-2, corridor-3" in str(err.value) and "other: other-1" in str(err.value)


def test_a_kind_whose_modules_are_missing_is_named_not_fatal(monkeypatch):
    from sd_evaluator import benchmarks

    corridor.install(monkeypatch)
    monkeypatch.setitem(benchmarks.SOURCES, "ghost", benchmarks._table("sd_evaluator.no_such_module", "X"))
    assert benchmarks.resolve("corridor-2").kind == "corridor"
    with pytest.raises(benchmarks.UnknownBenchmark) as err:
        benchmarks.resolve("nope")
    assert "not installed: " in str(err.value) and "ghost (No module named 'sd_evaluator.no_such_module')" in str(err.value)


def test_ctrl_c_stops_it_as_sigterm_does(env):
    out = env["out"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--benchmark", "corridor-2", "--agents",
                             "autopilot,constant-throttle", "--out", str(out), "--evaluation-id", "ev-int"],
                            env={**os.environ, "CORRIDOR_STEP_S": "0.05"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "autopilot" / "progress_seen.jsonl").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((out / "progress.json").read_text())["state"] == "stopped"


def test_agents_that_drove_different_route_files_are_not_compared(env, monkeypatch):
    def shifted(bench, run):  # the constant-throttle agent gets other routes than the others
        if run.agent.name == "constant-throttle":
            bench = corridor.CorridorBenchmark(bench.name, routes=(("1", 61.0), ("2", 40.0)))
        return corridor.run_corridor(bench, run)
    monkeypatch.setitem(evaluate.RUNNERS, corridor.KIND, shifted)
    out = env["out"]
    assert evaluate.main(["--checkpoint", str(env["checkpoint"]), "--benchmark", "corridor-2", "--out", str(out),
                          "--evaluation-id", "ev-shift"], load_model=corridor.load_model) == 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["reason"] == "ComparisonError" and "different route files" in progress["message"]
    assert not (out / "report.json").exists() and not (out / "result.json").exists()


def test_a_termination_log_keeps_the_headline_within_4_kib(tmp_path):
    path = tmp_path / "log"
    big = {"evaluation_id": "ev-1", "state": "succeeded", "benchmark": "city-20", "report_uri": "evaluations/x",
           "route_file": "r" * 5000, "scores": {"driving_score": 12.5, "agents": {"model": {"driving_score": 12.5}}}}
    evaluate.write_termination_log(path, big)
    doc = json.loads(path.read_text())
    assert len(path.read_bytes()) <= 4096 and doc["scores"] == {"driving_score": 12.5}
    assert doc["evaluation_id"] == "ev-1" and "route_file" not in doc


def test_resume_goes_on_only_with_the_same_evaluation_and_keeps_its_record(env):
    out, ck = env["out"], str(env["checkpoint"])
    argv = ["--checkpoint", ck, "--benchmark", "corridor-2", "--out", str(out), "--evaluation-id", "ev-re"]
    # nothing to go on with yet
    assert evaluate.main(argv + ["--resume"], load_model=corridor.load_model) == 2
    assert "there is no evaluation to go on with" in json.loads((out / "progress.json").read_text())["message"]
    assert evaluate.main(argv, load_model=corridor.load_model) == 0
    first = (out / "model" / "results.json").read_bytes()
    # another checkpoint, another benchmark, other agents: refused, and the folder keeps what it had
    other = out.parent / "other.json"
    other.write_text(env["checkpoint"].read_text())
    for changed in (["--checkpoint", str(other)], ["--benchmark", "corridor-3"], ["--agents", "autopilot,constant-throttle"]):
        args = list(argv)
        flag = changed[0]
        if flag in args:
            args[args.index(flag) + 1] = changed[1]
        else:
            args += changed
        assert evaluate.main(args + ["--resume"], load_model=corridor.load_model) == 2, changed
        progress = json.loads((out / "progress.json").read_text())
        assert progress["reason"] == "EvaluationInputError" and "--resume" in progress["message"]
        assert (progress["benchmark"], progress["checkpoint_uri"]) == ("corridor-2", ck)  # what it was, kept
        assert (out / "model" / "results.json").read_bytes() == first
    # the same evaluation goes on (this test kind drives its routes again; the city keeps them: test_city_closed_loop)
    assert evaluate.main(argv + ["--resume"], load_model=corridor.load_model) == 0


def test_resume_is_refused_for_a_carla_benchmark(env, monkeypatch):
    from sd_evaluator.evaluate import AgentRun, EvaluationInputError, _run_carla

    run = AgentRun(corridor.load_model(str(env["checkpoint"])), env["out"], None, "", "127.0.0.1", 2000,
                   lambda p: None, None, resume=True)
    with pytest.raises(EvaluationInputError, match="only city benchmarks resume"):
        _run_carla(object(), run)


def test_the_torch_thread_count_is_a_setting(env, monkeypatch):
    import torch

    before = torch.get_num_threads()
    want = 3 if before != 3 else 2  # not what the process has already (`make test` runs with one)
    monkeypatch.setenv("SD_EVALUATOR_TORCH_THREADS", str(want))
    try:
        assert evaluate.main(["--benchmark", "corridor-2", "--agents", "autopilot,constant-throttle",
                              "--out", str(env["out"]), "--evaluation-id", "ev-threads"]) == 0
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
