"""CILRS (Codevilla et al., "Exploring the Limitations of Behavior Cloning for Autonomous Driving", ICCV 2019).

The network as coiltraine configures it for CILRS:

    image ─ ResNet-34 ─ fc → 512 perception features ──┬─ join FC 512 ─┬─ branch follow   FC 256-256 → 3
    speed / 12 m/s ─ FC 128-128 ───────────────────────┘               ├─ branch left     FC 256-256 → 3
                                                                        ├─ branch right    FC 256-256 → 3
                                                                        └─ branch straight FC 256-256 → 3
    perception features ─ speed branch FC 256-256 → 1 (predicted speed / 12 m/s)

Every hidden layer is Linear → Dropout → ReLU; the last layer of a branch is a plain Linear. Each
branch predicts (steer, throttle, brake); the route command picks the branch (config.BRANCH_NAMES,
config.ROAD_OPTION_TO_BRANCH). The speed branch reads the perception features only, so it pushes the
image features to encode the car's motion (the paper's remedy for inertia).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sd_trainer.config import BRANCH_NAMES, CONTROL_NAMES, ModelConfig
from sd_trainer.resnet import build_resnet, load_torchvision_state_dict

# ImageNet statistics, as torchvision's pretrained ResNets expect their input.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def mlp(sizes: list[int], dropouts: list[float], *, end_layer: bool) -> nn.Sequential:
    """Linear → Dropout → ReLU per layer; with `end_layer` the last layer is a plain Linear (outputs)."""
    if len(dropouts) != len(sizes) - 1:
        raise ValueError(f"{len(sizes) - 1} layers need as many dropouts, got {len(dropouts)}")
    layers: list[nn.Module] = []
    for i, p in enumerate(dropouts):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        last = i == len(dropouts) - 1
        if end_layer and last:
            break
        layers += [nn.Dropout(p), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


@dataclass
class CILRSOutput:
    """Every branch's controls [B, 4, 3] (steer, throttle, brake) and the predicted speed [B] in m/s."""

    branches: torch.Tensor
    speed_mps: torch.Tensor
    speed_normalized: torch.Tensor  # the speed branch's raw output (speed / speed_factor_mps)

    def select(self, branch: torch.Tensor) -> torch.Tensor:
        """The controls [B, 3] of each sample's command branch (branch: int64 [B])."""
        return self.branches[torch.arange(self.branches.shape[0], device=branch.device), branch]


class CILRS(nn.Module):
    """Conditional imitation learning with ResNet perception and speed prediction."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.perception = build_resnet(cfg.backbone, num_outputs=cfg.perception_features,
                                       base_width=cfg.base_width)
        # What loading the local pretrained file did (None: random initialisation).
        self.pretrained_report = (load_torchvision_state_dict(self.perception, cfg.pretrained_path)
                                  if cfg.pretrained_path else None)
        self.measurements = mlp([1, *cfg.measurements_neurons], [0.0] * len(cfg.measurements_neurons),
                                end_layer=False)
        joined = cfg.perception_features + cfg.measurements_neurons[-1]
        self.join = mlp([joined, *cfg.join_neurons], [0.0] * len(cfg.join_neurons), end_layer=False)
        self.branches = nn.ModuleList(
            mlp([cfg.join_neurons[-1], *cfg.branch_neurons, len(CONTROL_NAMES)], [*cfg.branch_dropouts, 0.0],
                end_layer=True)
            for _ in BRANCH_NAMES)
        self.speed_branch = mlp([cfg.perception_features, *cfg.speed_branch_neurons, 1],
                                [*cfg.speed_branch_dropouts, 0.0], end_layer=True)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] (0–255) or float in [0, 1] → ImageNet-normalised float."""
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor, speed_mps: torch.Tensor) -> CILRSOutput:
        """Controls of all four branches and the predicted speed, from images and measured speeds [B]."""
        features = self.perception(self.normalize(image))
        measured = self.measurements((speed_mps.float() / self.cfg.speed_factor_mps).unsqueeze(1))
        joined = self.join(torch.cat([features, measured], dim=1))
        branches = torch.stack([branch(joined) for branch in self.branches], dim=1)
        speed = self.speed_branch(features).squeeze(1)
        return CILRSOutput(branches=branches, speed_mps=speed * self.cfg.speed_factor_mps, speed_normalized=speed)
