"""Photometric augmentation: coiltraine's transforms, per image with their probability, seeded, never geometric."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sd_trainer.augment import Augmenter
from sd_trainer.config import AugmentConfig, TrainConfig
from sd_trainer.data import open_local_version, split_dataset

# Every transform off: each test turns on the one it is about.
OFF = AugmentConfig(probability=1.0, per_channel_probability=0.0, brightness=0.0, brightness_multiply=(1.0, 1.0),
                    contrast=0.0, saturation=0.0, hue_deg=0.0, gaussian_blur_sigma_max=0.0, gaussian_noise_std=0.0,
                    salt_pepper_fraction=0.0, region_dropout_fraction=0.0)


def _only(**changes) -> AugmentConfig:
    return dataclasses.replace(OFF, **changes)


def _batch(n: int = 16, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(40, 216, size=(n, 3, h, w), dtype=np.uint8))


def _changed(out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (out - images.float() / 255).abs().flatten(1).amax(dim=1) > 1e-6


def test_defaults_are_coiltraines_medium_schedule_and_apply_per_image():
    cfg = TrainConfig().data.augment
    assert cfg.enabled and cfg.probability == pytest.approx(0.05 + 66_667 / 1e6, abs=1e-3)
    assert cfg.brightness_multiply == (0.879, 1.333) and cfg.gaussian_blur_sigma_max == pytest.approx(0.833)
    images = _batch(n=400)
    out = Augmenter(cfg, seed=3)(images, step=0)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    hit = int(_changed(out, images).sum())
    # Eight transforms, each with p = 0.117 on its own: 1 - 0.883^8 = 63 % of images get at least one.
    assert 0.55 * 400 < hit < 0.71 * 400


def test_off_means_only_the_scale_to_unit_range():
    images = _batch()
    for cfg in (dataclasses.replace(AugmentConfig(), enabled=False), OFF,
                dataclasses.replace(AugmentConfig(), probability=0.0)):
        assert torch.equal(Augmenter(cfg, seed=0)(images), images.float() / 255)


def test_each_image_is_hit_with_the_probability():
    images = _batch(n=1000, h=8, w=8)
    out = Augmenter(dataclasses.replace(_only(brightness=0.2), probability=0.3), seed=1)(images, step=5)
    assert 250 < int(_changed(out, images).sum()) < 350


def test_same_seed_and_step_same_result_other_seed_or_step_other_result():
    cfg = dataclasses.replace(AugmentConfig(), probability=0.6, per_channel_probability=0.5, hue_deg=20.0)
    images = _batch()
    a = Augmenter(cfg, seed=7)(images, step=11)
    assert torch.equal(a, Augmenter(cfg, seed=7)(images, step=11))
    assert not torch.equal(a, Augmenter(cfg, seed=8)(images, step=11))
    assert not torch.equal(a, Augmenter(cfg, seed=7)(images, step=12))
    # Without a step the augmenter counts its calls: a resumed run passing the step repeats them exactly.
    fresh = Augmenter(cfg, seed=7)
    fresh(images)
    assert torch.equal(fresh(images), Augmenter(cfg, seed=7)(images, step=1))


def test_brightness_contrast_and_saturation_do_what_they_say():
    flat = torch.full((8, 3, 16, 16), 100, dtype=torch.uint8)
    shifted = Augmenter(_only(brightness=0.1), seed=0)(flat)
    delta = (shifted - 100 / 255).mean(dim=(1, 2, 3))
    assert float(delta.abs().max()) <= 0.1 + 1e-6 and float(delta.std()) > 0.01  # one shift per image
    assert float((shifted - shifted.mean(dim=(2, 3), keepdim=True)).abs().max()) < 1e-6  # uniform within it
    scaled = Augmenter(_only(brightness_multiply=(0.5, 0.6)), seed=0)(flat)
    ratio = scaled.mean(dim=(1, 2, 3)) / (100 / 255)
    assert float(ratio.min()) >= 0.5 - 1e-5 and float(ratio.max()) <= 0.6 + 1e-5
    images = _batch()
    contrasted = Augmenter(_only(contrast=0.5), seed=0)(images)
    spread = (contrasted - 0.5).abs().mean(dim=(1, 2, 3)) / (images.float() / 255 - 0.5).abs().mean(dim=(1, 2, 3))
    assert float(spread.min()) >= 0.5 - 1e-4 and float(spread.max()) <= 1.5 + 1e-4 and float(spread.std()) > 0.05
    grey = Augmenter(_only(saturation=1.0), seed=0)(images)
    chroma_before = (images.float() / 255).std(dim=1).mean(dim=(1, 2))
    chroma_after = grey.std(dim=1).mean(dim=(1, 2))
    assert bool((chroma_after <= chroma_before + 1e-6).all()) and float((chroma_after / chroma_before).min()) < 0.2


def test_per_channel_draws_shift_the_colour():
    flat = torch.full((64, 3, 4, 4), 120, dtype=torch.uint8)
    once = Augmenter(_only(brightness=0.2), seed=0)(flat)
    assert float(once.std(dim=1).max()) < 1e-6  # one value for all three channels: no colour change
    tinted = Augmenter(_only(brightness=0.2, per_channel_probability=1.0), seed=0)(flat)
    assert float(tinted.std(dim=1).amin(dim=(1, 2)).min()) > 1e-4  # every image's channels moved apart


def test_blur_noise_and_dropouts():
    images = _batch(n=8, h=48, w=48)
    x = images.float() / 255

    def roughness(t: torch.Tensor) -> torch.Tensor:  # mean absolute difference of horizontal neighbours
        return (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))

    blurred = Augmenter(_only(gaussian_blur_sigma_max=2.0), seed=0)(images)
    assert bool((roughness(blurred) < roughness(x)).all())
    assert torch.allclose(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.01)  # light is kept, not moved
    flat = torch.full((8, 3, 48, 48), 128, dtype=torch.uint8)
    noisy = Augmenter(_only(gaussian_noise_std=0.1), seed=0)(flat)
    std = noisy.std(dim=(1, 2, 3))
    assert float(std.max()) < 0.1 * 1.1 and float(std.min()) > 0.0
    bright = torch.full((32, 3, 64, 64), 200, dtype=torch.uint8)
    dropped = Augmenter(_only(salt_pepper_fraction=0.2), seed=0)(bright)
    black = (dropped == 0).all(dim=1).float().mean(dim=(1, 2))
    assert float(black.max()) <= 0.2 * 1.15 and float(black.mean()) > 0.05
    regions = Augmenter(_only(region_dropout_fraction=0.3), seed=0)(bright)
    holes = (regions == 0).all(dim=1)
    assert float(holes.float().mean()) > 0.05
    # Region dropout removes rectangles: a dropped pixel's neighbour is mostly dropped too, unlike salt-and-pepper.
    pepper = (dropped == 0).all(dim=1)
    same_as_right = lambda m: float((m[..., 1:] & m[..., :-1]).sum() / m[..., :-1].sum())  # noqa: E731
    assert same_as_right(holes) > 0.7 and same_as_right(pepper) < 0.35


def test_nothing_moves_the_labelled_picture(tiny_version):
    """On the test version's pictures the steer bar stays in its column and the command patch in its corner."""
    v = open_local_version(tiny_version.root, tiny_version.dataset_id)
    ds = split_dataset(v, "train")
    images = torch.stack([ds[i]["image"] for i in range(48)])
    strong = dataclasses.replace(AugmentConfig(), probability=1.0, per_channel_probability=0.0)
    out = Augmenter(strong, seed=0)(images, step=0)
    for i in range(48):
        f = ds.frames[i]
        cols = out[i, :, 12:48, :].mean(dim=(0, 1))
        assert abs(int(cols.argmax()) - round((f.steer + 1) / 2 * 63)) <= 2, i


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"uint8 \[B, 3, H, W\].*float32"):
        Augmenter(AugmentConfig(), 0)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="augment.probability must be in"):
        Augmenter(dataclasses.replace(AugmentConfig(), probability=1.5), 0)


def test_the_new_ranges_are_overridable_like_every_key():
    cfg = TrainConfig.from_overrides({"data": {"augment": {"brightness_multiply": [0.9, 1.1], "random_order": False,
                                                           "region_dropout_size": [0.1, 0.1]}}}).data.augment
    assert cfg.brightness_multiply == (0.9, 1.1) and cfg.random_order is False
    assert cfg.region_dropout_size == (0.1, 0.1)
    out = Augmenter(dataclasses.replace(cfg, probability=1.0), seed=0)(_batch(n=4))
    assert out.shape == (4, 3, 32, 32)
