"""coiltraine's branched loss: only the command's branch learns, weights as configured, speed in /12 units."""

from __future__ import annotations

import pytest
import torch

from sd_trainer.config import LossConfig
from sd_trainer.losses import branched_loss
from sd_trainer.model import CILRSOutput


def _output(branches: torch.Tensor, speed_norm: torch.Tensor) -> CILRSOutput:
    return CILRSOutput(branches=branches, speed_mps=speed_norm * 12.0, speed_normalized=speed_norm)


def test_value_by_hand():
    branches = torch.zeros(2, 4, 3)
    branches[0, 1] = torch.tensor([0.5, 0.2, 0.0])  # sample 0, command branch 1 (left)
    branches[1, 3] = torch.tensor([-0.1, 0.0, 1.0])  # sample 1, command branch 3 (straight)
    branches[0, 0] = torch.tensor([9.0, 9.0, 9.0])  # another branch: must not count
    out = _output(branches, torch.tensor([0.5, 0.0]))
    controls = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.5, 0.0]])
    speed = torch.tensor([3.0, 12.0])  # normalised targets 0.25 and 1.0
    parts = branched_loss(out, torch.tensor([1, 3]), controls, speed, LossConfig(), 12.0)
    s0 = 0.5 * 0.5 + 0.45 * 0.2 + 0.05 * 0.0
    s1 = 0.5 * 0.2 + 0.45 * 0.5 + 0.05 * 1.0
    controls_loss = (s0 + s1) / 2
    speed_loss = (0.25 + 1.0) / 2
    assert parts.controls.item() == pytest.approx(controls_loss)
    assert parts.speed.item() == pytest.approx(speed_loss)
    assert parts.total.item() == pytest.approx(0.95 * controls_loss + 0.05 * speed_loss)
    assert parts.per_control["steer"].item() == pytest.approx((0.5 + 0.2) / 2)
    assert parts.per_control["brake"].item() == pytest.approx(0.5)
    assert set(parts.as_floats()) == {"total", "controls", "speed", "steer", "throttle", "brake"}


def test_only_the_command_branch_gets_gradient():
    branches = torch.randn(3, 4, 3, requires_grad=True)
    speed_norm = torch.randn(3, requires_grad=True)
    out = _output(branches, speed_norm)
    command = torch.tensor([0, 2, 2])
    branched_loss(out, command, torch.rand(3, 3), torch.rand(3) * 10, LossConfig(), 12.0).total.backward()
    grad_norm = branches.grad.abs().sum(dim=2)  # [B, 4]
    for b, c in enumerate(command.tolist()):
        assert grad_norm[b, c] > 0
        assert all(grad_norm[b, k] == 0 for k in range(4) if k != c)
    assert (speed_norm.grad != 0).all()


def test_l2_and_weights_come_from_the_config():
    branches = torch.zeros(1, 4, 3)
    out = _output(branches, torch.tensor([0.0]))
    controls = torch.tensor([[0.5, 0.0, 0.0]])
    cfg = LossConfig(kind="l2", branch_weight=1.0, speed_weight=0.0, steer_weight=1.0)
    parts = branched_loss(out, torch.tensor([0]), controls, torch.tensor([6.0]), cfg, 12.0)
    assert parts.total.item() == pytest.approx(0.25)
    assert parts.speed.item() == pytest.approx(0.25)  # (6 / 12)^2
