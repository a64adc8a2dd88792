"""The whole evaluation process on the city, end to end: a trainer checkpoint, `python -m
sd_evaluator.evaluate --benchmark city-smoke`, the three agents in headless Chromium, the side-by-side
report — the acceptance run of the city with each baseline, every record checked against the game's own
infraction log. Needs what test_city_closed_loop.py needs (Chromium, playwright, the game's build); under
CI=true a missing one fails.

The checkpoint is a real CILRS whose branch heads answer one fixed control (steer 0, throttle 0.5,
brake 0: their last layers' weights are zero, their biases that control). It runs through the model
agent's whole path — the checkpoint file, the camera in it, the rendered frames prepared as the dataset
was, the forward pass, the branch of the route's command — and must then drive exactly as the
constant-throttle agent does: the simulation is deterministic, so any difference in what the model
agent sends, or in the routes each agent drove, shows up in the records.
"""

from __future__ import annotations

import json

import pytest
import torch
from sd_trainer.checkpoints import save_checkpoint
from sd_trainer.config import TrainConfig
from sd_trainer.model import CILRS
from test_city_closed_loop import _check_against_game_log, built_game, pytestmark  # noqa: F401
from test_policy import TINY  # the model agent's tests' tiny CILRS

from sd_evaluator import evaluate
from sd_evaluator.agents import AUTOPILOT, CONSTANT, MODEL
from sd_evaluator.camera_input import CameraMount, CameraSpec, Crop
from sd_evaluator.city.benchmarks import city_benchmark
from sd_evaluator.results import read_results

# A small recording so the model's rendered steps stay cheap on the test machine.
CAMERA = CameraSpec(recording_width=192, recording_height=108, fov_deg=100.0,
                    mount=CameraMount(1.3, 0.0, 2.3, 0.0, 0.0, 0.0), crop=Crop(46, 0, 100, 100),
                    output_width=64, output_height=64, input_width=48, input_height=48)


@pytest.fixture
def fixed_control_checkpoint(tmp_path):
    torch.manual_seed(3)
    cfg = TrainConfig.from_overrides(TINY)
    model = CILRS(cfg.model)
    with torch.no_grad():
        for branch in model.branches:
            last = branch[-1]
            last.weight.zero_()
            last.bias.copy_(torch.tensor([0.0, 0.5, 0.0]))
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "step": 1, "camera": CAMERA.to_dict()}
    name = save_checkpoint(tmp_path / "run", 1, state)
    return tmp_path / "run" / name


def test_evaluate_city_smoke_runs_the_model_beside_both_baselines(tmp_path, fixed_control_checkpoint):
    out = tmp_path / "ev"
    code = evaluate.main(["--checkpoint", str(fixed_control_checkpoint), "--benchmark", "city-smoke",
                          "--evaluation-id", "ev-city-smoke", "--out", str(out)])
    assert code == 0, (out / "termination.log").read_text() if (out / "termination.log").exists() else code

    checked = {name: _check_against_game_log(out / name, name) for name in (MODEL, AUTOPILOT, CONSTANT)}
    # Every agent drove the same route file.
    routes = {(out / name / "routes.xml").read_bytes() for name in (MODEL, AUTOPILOT, CONSTANT)}
    assert len(routes) == 1
    # The fixed-control model drives exactly as the constant-throttle agent: same infractions, same scores.
    model, const = checked[MODEL]["record"], checked[CONSTANT]["record"]
    assert checked[MODEL]["game_log"] == checked[CONSTANT]["game_log"]
    assert model.infractions == const.infractions and model.scores == const.scores
    assert model.meta["route_length"] == const.meta["route_length"]
    # The model saw the dataset's camera: CameraSpec.prepare refuses a frame of any other size than the
    # checkpoint's 192x108 recording, so driving at all means the city rendered at that size.
    assert checked[MODEL]["record"].meta["duration_game"] > 0
    # The autopilot, the upper bound, completes this route. Straight ahead at a fixed throttle, the lower
    # bound goes through a red light and into a pedestrian and cars (the game's log says so, and the
    # record carries each as its leaderboard infraction).
    auto = checked[AUTOPILOT]["record"]
    assert auto.scores["score_route"] == 100.0 and auto.status in ("Perfect", "Completed")
    assert auto.extra["seed"] == const.extra["seed"] == city_benchmark("city-smoke").route_seed(0)
    kinds = {i["kind"] for i in checked[CONSTANT]["game_log"]}
    assert {"red_light", "collision_pedestrian", "collision_vehicle"} <= kinds
    assert const.scores["score_penalty"] < 0.5
    # The report puts the three side by side.
    report = json.loads((out / "report.json").read_text())
    text = json.dumps(report)
    for name in (MODEL, AUTOPILOT, CONSTANT):
        assert name in text
    md = (out / "report.md").read_text()
    assert "east-village" in md and "routes.xml" in md
    result = json.loads((out / "result.json").read_text())
    assert result["state"] == "succeeded"
    ds = {name: read_results(out / name / "results.json").records[0].scores["score_composed"]
          for name in (MODEL, AUTOPILOT, CONSTANT)}
    assert ds[MODEL] == ds[CONSTANT] < ds[AUTOPILOT]
