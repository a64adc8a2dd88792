"""`sdctl evaluate` in the foreground (the real evaluation process, with the corridor kind of corridor.py)
and `sdctl evaluate start|show|list|cancel` against a real evaluator service over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import corridor
import pytest

from evaluator_service import evaluator_service, process_env
from sd_common.cli.main import main as sdctl_main
from sd_evaluator import commands

SDCTL = str(Path(sys.executable).parent / "sdctl")
SCRIPT = str(Path(__file__).with_name("scripted_evaluation.py"))


@pytest.fixture
def ckpt(tmp_path, monkeypatch):
    corridor.install(monkeypatch)
    monkeypatch.setenv("SD_STORE_ROOT", str(tmp_path / "store"))
    monkeypatch.setattr(commands, "EVALUATE_PROGRAM", [sys.executable, SCRIPT])
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"throttle": 0.05, "camera": {"width": 24, "height": 12}}))
    return str(path)


def test_foreground_shows_every_route_of_every_agent_then_the_scores_side_by_side(tmp_path, ckpt, capfd):
    out = tmp_path / "ev"
    code = sdctl_main(["evaluate", "--checkpoint", ckpt, "--benchmark", "corridor-2", "--out", str(out),
                       "--evaluation-id", "ev-here"])
    stdout, stderr = capfd.readouterr()
    assert code == 0, stderr
    routes = re.findall(r"^(\S+)\s+route (\d)/2 (RouteScenario_\d_rep0): DS", stderr, re.M)
    assert routes == [(a, str(i), f"RouteScenario_{i}_rep0") for a in ("model", "autopilot", "constant-throttle")
                      for i in (1, 2)]
    result = json.loads((out / "result.json").read_text())
    for agent, s in result["scores"]["agents"].items():
        assert f"  {agent:<17} DS {s['driving_score']:7.3f}  RC {s['route_completion']:7.3f}" in stdout
    assert "constant-throttle DS  70.000  RC 100.000  IP 0.7000  km 0.100" in stdout
    assert f"report   {out / 'report.md'}" in stdout


def test_foreground_bad_input_exits_2_and_says_why(tmp_path, ckpt, capfd):
    code = sdctl_main(["evaluate", "--checkpoint", ckpt, "--benchmark", "corridor-2", "--agents", "model",
                       "--out", str(tmp_path / "ev")])
    _, stderr = capfd.readouterr()
    assert code == 2 and "bad input (exit code 2)" in stderr and "add autopilot, constant-throttle" in stderr
    assert sdctl_main(["evaluate"]) == 2 and "give --benchmark" in capfd.readouterr().err


async def sdctl(*args: str, env: dict | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(SDCTL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_start_follow_show_list_and_cancel_over_grpc(tmp_path, ckpt):
    store = tmp_path / "store"
    async with evaluator_service(tmp_path / "evaluator", store, env=process_env(store, step_s=0.001)) as ev:
        code, out, err = await sdctl("evaluate", "start", "--checkpoint", ckpt, "--benchmark", "corridor-2",
                                     "--follow", "--interval-s", "0.1", "--evaluator", ev.target)
        assert code == 0, err
        evaluation_id = out.split()[0]
        assert "SUCCEEDED" in out and "100.0%" in out and "autopilot         DS 100.000" in out
        assert "constant-throttle DS  70.000" in out and f"report evaluations/{evaluation_id}/report.md" in out
        assert "100%" in err  # the bar reached the end

        host, port = ev.target.rsplit(":", 1)  # $SD_EVALUATOR_TARGET plus --port-offset finds the service
        env = {**os.environ, "SD_EVALUATOR_TARGET": f"{host}:{int(port) - 7}"}
        code, out, err = await sdctl("evaluate", "show", evaluation_id, "--json", "--port-offset", "7", env=env)
        assert code == 0, err
        shown = json.loads(out)
        assert shown["state"] == "EVALUATION_STATE_SUCCEEDED"
        assert [s["agent"] for s in shown["agents_summary"]] == ["model", "autopilot", "constant-throttle"]

        slow = process_env(store, step_s=0.05)
        ev.evaluations.launcher.env = slow  # the next one drives slowly enough to be cancelled while it runs
        code, out, err = await sdctl("evaluate", "start", "--benchmark", "corridor-2", "--agents",
                                     "autopilot,constant-throttle", "--json", "--evaluator", ev.target)
        assert code == 0, err
        second = json.loads(out)["evaluation_id"]
        code, out, err = await sdctl("evaluate", "list", "--json", "--evaluator", ev.target)
        assert [e["evaluation_id"] for e in json.loads(out)] == [second, evaluation_id]
        await ev.wait(second, 2)  # RUNNING
        code, out, err = await sdctl("evaluate", "cancel", second, "--evaluator", ev.target)
        assert code == 0 and "CANCELLED" in out, out + err
        code, out, err = await sdctl("evaluate", "cancel", second, "--evaluator", ev.target)
        assert code == 1 and "FAILED_PRECONDITION" in err and "already cancelled" in err
        code, out, err = await sdctl("evaluate", "show", "ev-nope", "--evaluator", ev.target)
        assert code == 1 and "NOT_FOUND" in err
        code, out, err = await sdctl("evaluate", "start", "--checkpoint", ckpt, "--benchmark", "nope",
                                     "--evaluator", ev.target)
        assert code == 1 and "INVALID_ARGUMENT" in err and "unknown benchmark 'nope'" in err
