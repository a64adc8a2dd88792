"""ResNet-18/34/50 (He et al., 2016) with torchvision's parameter names, and loading its state dicts.

torchvision does not load beside the CPU torch this project pins, so the three networks CILRS can use
are written here. Their parameter names are exactly torchvision's (`conv1`, `bn1`, `layer1.0.conv1`,
`layer2.0.downsample.0`, …, `fc`), so a torchvision-format state dict on local disk loads by name.
`base_width` scales every stage's channels (64 in the published networks) for tiny test models.
Nothing here ever downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class PretrainedWeightsError(ValueError):
    """A pretrained-weights file is missing, unreadable, or does not fit the network (keys named)."""


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as torchvision's "ResNet v1.5"), 1x1 expand by 4, and a shortcut (ResNet-50)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * self.expansion)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


# Blocks per stage of the published networks.
ARCHITECTURES: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """Stem (7x7/2 conv, 3x3/2 max-pool), four stages, global average pool, `fc` to `num_outputs`."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 num_outputs: int = 1000, base_width: int = 64):
        super().__init__()
        self.in_ch = base_width
        self.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(block, base_width, layers[0], stride=1)
        self.layer2 = self._stage(block, base_width * 2, layers[1], stride=2)
        self.layer3 = self._stage(block, base_width * 4, layers[2], stride=2)
        self.layer4 = self._stage(block, base_width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_channels = base_width * 8 * block.expansion
        self.fc = nn.Linear(self.feature_channels, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, block: type[BasicBlock | Bottleneck], width: int, blocks: int,
               stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_ch != width * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.in_ch, width * block.expansion, stride),
                                       nn.BatchNorm2d(width * block.expansion))
        stage = [block(self.in_ch, width, stride, downsample)]
        self.in_ch = width * block.expansion
        stage += [block(self.in_ch, width) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet(name: str, num_outputs: int = 1000, base_width: int = 64) -> ResNet:
    """`resnet18`, `resnet34` or `resnet50`, its `fc` giving `num_outputs` values."""
    try:
        block, layers = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {sorted(ARCHITECTURES)}") from None
    return ResNet(block, layers, num_outputs=num_outputs, base_width=base_width)


@dataclass(frozen=True)
class LoadReport:
    """What loading a state dict did: tensors loaded, and names skipped or missing on either side."""

    loaded: tuple[str, ...]
    skipped_shape: tuple[str, ...]  # in both, shapes differ (only `fc.*` is allowed to)
    missing: tuple[str, ...]  # in the network, not in the file
    unexpected: tuple[str, ...]  # in the file, not in the network


def load_torchvision_state_dict(model: ResNet, path: str | Path) -> LoadReport:
    """Loads a torchvision-format ResNet state dict from a local file by parameter name.

    `fc.*` is skipped when its shape differs (CILRS replaces the 1000-class head by 512 outputs); any
    other shape mismatch, a missing tensor or an unexpected one is a PretrainedWeightsError naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights {path} not found (weights are never downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise PretrainedWeightsError(f"pretrained weights {path} are not a readable state dict: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"pretrained weights {path} are not a mapping of names to tensors")
    own = model.state_dict()
    loaded, skipped, bad = [], [], []
    for name, tensor in state.items():
        if name not in own:
            continue
        if tensor.shape != own[name].shape:
            (skipped if name.startswith("fc.") else bad).append(name)
            continue
        loaded.append(name)
    missing = sorted(set(own) - set(state) - {n for n in own if n.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(own))
    if bad or missing or unexpected:
        raise PretrainedWeightsError(
            f"pretrained weights {path} do not fit this network: shape differs for {bad or 'none'}, "
            f"missing {missing[:20] or 'none'}, unexpected {unexpected[:20] or 'none'}")
    with torch.no_grad():
        for name in loaded:
            own[name].copy_(state[name])
    return LoadReport(loaded=tuple(loaded), skipped_shape=tuple(skipped), missing=tuple(missing),
                      unexpected=tuple(unexpected))
