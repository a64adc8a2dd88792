"""The loop's pieces on their own: clipping, the LR step decay, the image size, the resize on the device."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sd_trainer import data
from sd_trainer.config import ConfigError, ModelConfig, OptimConfig, TrainConfig
from sd_trainer.model import CILRS
from sd_trainer.train import build_optimization, image_size, optimizer_step, prepare_images

TINY = ModelConfig(backbone="resnet18", base_width=8)


def _batch(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g), torch.rand(n, generator=g) * 10,
            torch.randint(0, 4, (n,), generator=g), torch.rand(n, 3, generator=g))


def _update_size(clip: float) -> float:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TrainConfig(), model=TINY, optim=OptimConfig(grad_clip_norm=clip))
    model = CILRS(cfg.model).eval()  # eval: no dropout, so both runs see the same gradients
    before = [p.detach().clone() for p in model.parameters()]
    optimizer, scheduler, scaler, autocast = build_optimization(model, cfg, torch.device("cpu"))
    optimizer_step(model, optimizer, scheduler, scaler, cfg, autocast, *_batch())
    return sum(float((p.detach() - b).abs().sum()) for p, b in zip(model.parameters(), before, strict=True))


def test_gradient_clipping_limits_the_update():
    free = _update_size(0.0)
    clipped = _update_size(1e-9)  # gradients far below Adam's epsilon: the step nearly vanishes
    assert free > 0 and clipped < 0.05 * free


def test_learning_rate_decays_in_steps():
    cfg = dataclasses.replace(TrainConfig(), model=TINY,
                              optim=OptimConfig(learning_rate=1e-3, lr_decay_every_steps=2, lr_decay_factor=0.5))
    model = CILRS(cfg.model)
    optimizer, scheduler, scaler, autocast = build_optimization(model, cfg, torch.device("cpu"))
    lrs = []
    for _ in range(5):
        optimizer_step(model, optimizer, scheduler, scaler, cfg, autocast, *_batch())
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    assert not scaler.is_enabled()  # no GradScaler on the CPU (nor for bfloat16 on CUDA)


def test_image_size_comes_from_the_version_unless_the_config_sets_one(tmp_path: Path):
    geometry = data.Geometry(width=96, height=64, intrinsics=None, crop=None)
    version = data.LocalVersion(dataset_id="x", root=tmp_path, manifest={}, geometry=geometry, frames={})
    assert image_size(TrainConfig(), version) == (64, 96)
    sized = dataclasses.replace(TrainConfig(), model=dataclasses.replace(TINY, image_height=32, image_width=48))
    assert image_size(sized, version) == (32, 48)
    half = dataclasses.replace(TrainConfig(), model=dataclasses.replace(TINY, image_height=32))
    with pytest.raises(ConfigError, match="both be set"):
        image_size(half, version)


def test_images_are_resized_only_when_asked():
    image = _batch()[0]
    assert prepare_images(image, (64, 64), None) is image  # the version's size: untouched uint8
    small = prepare_images(image, (32, 48), None)
    assert small.shape == (4, 3, 32, 48) and small.dtype == torch.float32
    assert 0 <= float(small.min()) and float(small.max()) <= 1
    assert abs(float(small.mean()) - float(image.float().mean() / 255)) < 0.02
