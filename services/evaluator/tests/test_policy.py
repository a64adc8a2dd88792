"""CheckpointAgent: a tiny trainer checkpoint (base width 8, CPU) loaded from a file, from the embedded
store by key, and refused with a named error when missing, corrupt or without a camera; each control is
the network's own output for the prepared frame, the speed and the command's branch, only clipped."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_trainer.checkpoints import save_checkpoint
from sd_trainer.config import ROAD_OPTION_TO_BRANCH, TrainConfig
from sd_trainer.model import CILRS

from sd_evaluator.agents import AgentError, Control, Observation
from sd_evaluator.camera_input import CameraMount, CameraSpec, Crop
from sd_evaluator.policy import CheckpointAgent, CheckpointError

TINY = {"model": {"backbone": "resnet18", "base_width": 8, "perception_features": 32,
                  "measurements_neurons": [16, 16], "join_neurons": [32], "branch_neurons": [16, 16],
                  "speed_branch_neurons": [16, 16]}}
CAMERA = CameraSpec(recording_width=160, recording_height=90, fov_deg=100.0,
                    mount=CameraMount(1.3, 0.0, 2.3, 0.0, 0.0, 0.0), crop=Crop(36, 0, 88, 88),
                    output_width=64, output_height=64, input_width=48, input_height=48)


def _state(seed: int = 0, camera: dict | None = CAMERA.to_dict()) -> dict:
    torch.manual_seed(seed)
    cfg = TrainConfig.from_overrides(TINY)
    return {"model": CILRS(cfg.model).state_dict(), "config": cfg.to_dict(), "step": 7, "camera": camera}


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 160, dtype=np.float32)[None, :, None] * np.ones((90, 1, 3), np.float32)
    return np.clip(base + rng.normal(0, 25, (90, 160, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint file written by the trainer's own writer."""
    name = save_checkpoint(tmp_path / "run", 7, _state())
    return tmp_path / "run" / name


def test_each_control_is_the_networks_output_for_the_commands_branch(checkpoint):
    agent = CheckpointAgent.load(checkpoint)
    assert (agent.name, agent.privileged, agent.needs_image) == ("model", False, True)
    assert agent.camera == CAMERA and not agent.model.training
    # the network rebuilt independently from the same file
    state = torch.load(checkpoint, weights_only=False)
    net = CILRS(TrainConfig.from_overrides(state["config"]).model)
    net.load_state_dict(state["model"])
    net.eval()
    seen = set()
    for step, command in enumerate((4, 1, 2, 3, 5, 6)):
        frame, speed = _frame(step), 0.5 + 2.0 * step
        control = agent.act(Observation(image=frame, speed_mps=speed, command=command, t_s=step * 0.05))
        x = torch.from_numpy(CAMERA.prepare(frame)).permute(2, 0, 1)[None]
        with torch.no_grad():
            raw = net(x, torch.tensor([speed])).branches[0, ROAD_OPTION_TO_BRANCH[command]].tolist()
        assert control == Control.clipped(*raw)
        seen.add(tuple(raw))
    assert len(seen) == 6  # frames, speeds and branches all reach the output


def test_the_output_is_only_clipped_never_overridden(checkpoint):
    agent = CheckpointAgent.load(checkpoint)
    # Make every branch's last layer a constant: steer -0.3, throttle 0 (standing still!), brake 0.9 for
    # follow; out-of-range values for left.
    for branch, bias in ((0, (-0.3, 0.0, 0.9)), (1, (-1.7, 2.5, -0.4))):
        last = agent.model.branches[branch][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.copy_(torch.tensor(bias))
    stopped = agent.act(Observation(image=_frame(1), speed_mps=0.0, command=4, t_s=0.0))
    assert stopped.steer == pytest.approx(-0.3, abs=1e-6) and stopped.throttle == 0.0
    assert stopped.brake == pytest.approx(0.9, abs=1e-6)
    assert agent.act(Observation(image=_frame(2), speed_mps=0.0, command=1, t_s=0.0)) == Control(-1.0, 1.0, 0.0)


def test_loads_from_the_store_by_key_as_the_trainer_names_it(checkpoint, tmp_path):
    settings = StoreSettings(root=tmp_path / "store")
    key = "training/run-1/checkpoints/step-000000007.pt"

    async def put():
        store = make_store(settings)
        await store.put_bytes(key, checkpoint.read_bytes(), content_type="application/octet-stream")
        await store.close()

    asyncio.run(put())
    agent = CheckpointAgent.load(key, store_settings=settings)
    frame = _frame(3)
    local = CheckpointAgent.load(checkpoint)
    obs = Observation(image=frame, speed_mps=3.0, command=2, t_s=0.0)
    assert agent.act(obs) == local.act(obs)
    with pytest.raises(CheckpointError, match="not found.*no object 'training/run-1/checkpoints/nope.pt'"):
        CheckpointAgent.load("training/run-1/checkpoints/nope.pt", store_settings=settings)
    with pytest.raises(CheckpointError, match="bucket 'other'.*SD_STORE_BACKEND=s3"):
        CheckpointAgent.load("s3://other/" + key, store_settings=settings)


def test_a_missing_corrupt_or_camera_less_checkpoint_is_named(tmp_path, checkpoint):
    missing = tmp_path / "gone.pt"
    with pytest.raises(CheckpointError, match="gone.pt not found"):
        CheckpointAgent.load(missing, store_settings=StoreSettings(root=tmp_path / "store"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt.pt cannot be read as a trainer checkpoint"):
        CheckpointAgent.load(corrupt)
    cameraless = tmp_path / "run2" / save_checkpoint(tmp_path / "run2", 1, _state(camera=None))
    with pytest.raises(CheckpointError, match="names no camera"):
        CheckpointAgent.load(cameraless)
    broken = tmp_path / "run3" / save_checkpoint(tmp_path / "run3", 1, _state(camera={"recording": {}}))
    with pytest.raises(CheckpointError, match=r"camera is unusable: camera.recording lacks"):
        CheckpointAgent.load(broken)
    state = _state()
    state["config"] = {**state["config"], "model": {**state["config"]["model"], "base_width": 16}}
    wrong = tmp_path / "run4" / save_checkpoint(tmp_path / "run4", 1, state)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        CheckpointAgent.load(wrong)


def test_no_frame_or_a_void_command_is_an_error(checkpoint):
    agent = CheckpointAgent.load(checkpoint)
    with pytest.raises(AgentError, match="needs the camera frame"):
        agent.act(Observation(image=None, speed_mps=0.0, command=4, t_s=0.0))
    with pytest.raises(AgentError, match="route command -1 has no CILRS branch"):
        agent.act(Observation(image=_frame(0), speed_mps=0.0, command=-1, t_s=0.0))
