"""coiltraine's branched loss for CILRS: the command's branch and the speed branch, weighted.

Only the branch of each sample's command learns from that sample (a mask over the four branches);
its error is weighted per control (steer 0.5, throttle 0.45, brake 0.05); the speed branch learns the
measured speed in the same units the network reads it (speed / speed_factor_mps). The total is
branch_weight · controls + speed_weight · speed (0.95 / 0.05), both averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sd_trainer.config import CONTROL_NAMES, LossConfig
from sd_trainer.model import CILRSOutput


@dataclass
class LossParts:
    """The total to minimise and its named parts (each a scalar tensor, batch means)."""

    total: torch.Tensor
    controls: torch.Tensor  # the per-control-weighted error of the command branch
    speed: torch.Tensor  # the speed branch's error, in speed / speed_factor_mps
    per_control: dict[str, torch.Tensor]  # unweighted error of each control on the command branch

    def as_floats(self) -> dict[str, float]:
        """Plain numbers for logs: total, controls, speed and one entry per control."""
        out = {"total": float(self.total.detach()), "controls": float(self.controls), "speed": float(self.speed)}
        out.update({name: float(v) for name, v in self.per_control.items()})
        return out


def _error(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    diff = pred - target
    return diff.abs() if kind == "l1" else diff * diff


def branched_loss(out: CILRSOutput, branch: torch.Tensor, controls: torch.Tensor, speed_mps: torch.Tensor,
                  cfg: LossConfig, speed_factor_mps: float) -> LossParts:
    """The CILRS loss of one batch: branch int64 [B], controls float [B, 3], measured speed float [B]."""
    mask = torch.zeros_like(out.branches)
    mask[torch.arange(branch.shape[0], device=branch.device), branch] = 1.0
    # Error of every branch against the targets, zeroed outside each sample's command branch.
    err = _error(out.branches.float(), controls.float().unsqueeze(1), cfg.kind) * mask
    per_control_err = err.sum(dim=1)  # [B, 3]: only one branch is non-zero per sample
    weights = torch.tensor([cfg.steer_weight, cfg.throttle_weight, cfg.brake_weight], device=err.device)
    controls_loss = (per_control_err * weights).sum(dim=1).mean()
    speed_target = speed_mps.float() / speed_factor_mps
    speed_loss = _error(out.speed_normalized.float(), speed_target, cfg.kind).mean()
    total = cfg.branch_weight * controls_loss + cfg.speed_weight * speed_loss
    per_control = {name: per_control_err[:, i].mean().detach() for i, name in enumerate(CONTROL_NAMES)}
    return LossParts(total=total, controls=controls_loss.detach(), speed=speed_loss.detach(),
                     per_control=per_control)
