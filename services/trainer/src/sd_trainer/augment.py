"""Photometric augmentation of training batches, on the training device (docs/training.md).

What and how strong follows coiltraine (felipecode/coiltraine, input/scheduler.py, the `medium`
schedule; the CIL paper, Codevilla et al. ICRA 2018, lists the same set: contrast, brightness, tone,
Gaussian blur, Gaussian noise, salt-and-pepper noise and region dropout, and no geometric transform,
since the controls are not invariant to them). As there, every transform is applied to each image on
its own with `probability`, draws its value once per image or (with `per_channel_probability`) per
colour channel, and each image takes its transforms in a random order; values are clipped to [0, 1]
after each one, as imgaug clips uint8 pixels. The defaults and the one reading that differs (the noise
scale) are in AugmentConfig.

Only the training split is augmented: the loop calls this on training batches after moving them to the
device, never on validation batches. Nothing moves a pixel, so every label stays valid.

Randomness is a function of (seed, step) alone, so a resumed run augments step N exactly as an
uninterrupted one on the same device: which transform hits which image, in which order and how strongly
is drawn on the CPU; per-pixel noise and dropout masks on the device's own generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sd_trainer.config import AugmentConfig

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as imgaug's Grayscale and OpenCV


class Augmenter:
    """`Augmenter(cfg, seed)(images_uint8, step)` -> float [B, 3, H, W] in [0, 1]."""

    def __init__(self, cfg: AugmentConfig, seed: int):
        for name in ("probability", "per_channel_probability"):
            value = getattr(cfg, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{name} must be in [0, 1], got {value}")
        self.cfg = cfg
        self.seed = int(seed)
        self._calls = 0
        c = cfg
        lo, hi = c.brightness_multiply
        # Each transform: name, whether its strength makes it do anything, and the function.
        table: list[tuple[str, bool, Callable]] = [
            ("gaussian_blur", c.gaussian_blur_sigma_max > 0, self._blur),
            ("gaussian_noise", c.gaussian_noise_std > 0, self._noise),
            ("region_dropout", c.region_dropout_fraction > 0, self._region_dropout),
            ("salt_pepper", c.salt_pepper_fraction > 0, self._pixel_dropout),
            ("brightness", c.brightness > 0, self._add),
            ("brightness_multiply", (lo, hi) != (1.0, 1.0), self._multiply),
            ("contrast", c.contrast > 0, self._contrast),
            ("saturation", c.saturation > 0, self._desaturate),
            ("hue", c.hue_deg > 0, self._hue),
        ]
        self.transforms = [(name, fn) for name, active, fn in table if active] if c.enabled else []

    def __call__(self, images: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Augments a uint8 [B, 3, H, W] batch; `step` (default: calls so far) picks the randomness."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Augmenter takes uint8 [B, 3, H, W] images, got {images.dtype} {list(images.shape)}")
        if step is None:
            step = self._calls
        self._calls = step + 1
        x = images.float().div_(255.0)
        n, t = x.shape[0], len(self.transforms)
        if n == 0 or t == 0:
            return x
        seed = int(np.random.SeedSequence([self.seed, int(step)]).generate_state(1, np.uint64)[0] >> 1)
        cpu = torch.Generator().manual_seed(seed)
        dev = torch.Generator(device=x.device).manual_seed(seed)
        applied = torch.rand(n, t, generator=cpu) < self.cfg.probability
        if self.cfg.random_order:
            order = torch.argsort(torch.rand(n, t, generator=cpu), dim=1)
        else:
            order = torch.arange(t).expand(n, t)
        for slot in range(t):
            for k, (_, fn) in enumerate(self.transforms):
                rows = torch.nonzero(applied[:, k] & (order[:, slot] == k)).flatten()
                if rows.numel() == 0:
                    continue
                per_channel = torch.rand(rows.numel(), generator=cpu) < self.cfg.per_channel_probability
                idx = rows.to(x.device)
                x[idx] = fn(x[idx], per_channel, cpu, dev).clamp_(0.0, 1.0)
        return x

    # ---- the transforms: x is float [n, 3, H, W] in [0, 1]; per_channel is bool [n] on the CPU -------

    @staticmethod
    def _values(per_channel: torch.Tensor, lo: float, hi: float, cpu: torch.Generator, device) -> torch.Tensor:
        """U(lo, hi) as [n, 3, 1, 1]: one value per image, or one per channel where per_channel."""
        v = lo + (hi - lo) * torch.rand(per_channel.numel(), 3, generator=cpu)
        v = torch.where(per_channel[:, None], v, v[:, :1].expand_as(v))
        return v.to(device)[:, :, None, None]

    @staticmethod
    def _spread(field: torch.Tensor, per_channel: torch.Tensor) -> torch.Tensor:
        """A per-pixel random field [n, 3, H, W] whose channels are equal except where per_channel."""
        pc = per_channel.to(field.device)[:, None, None, None]
        return torch.where(pc, field, field[:, :1].expand_as(field))

    def _add(self, x, per_channel, cpu, dev):
        b = self.cfg.brightness
        return x + self._values(per_channel, -b, b, cpu, x.device)

    def _multiply(self, x, per_channel, cpu, dev):
        lo, hi = self.cfg.brightness_multiply
        return x * self._values(per_channel, lo, hi, cpu, x.device)

    def _contrast(self, x, per_channel, cpu, dev):
        c = self.cfg.contrast
        return (x - 0.5) * self._values(per_channel, 1.0 - c, 1.0 + c, cpu, x.device) + 0.5

    def _desaturate(self, x, per_channel, cpu, dev):
        alpha = (self.cfg.saturation * torch.rand(x.shape[0], generator=cpu)).to(x.device)[:, None, None, None]
        luma = torch.tensor(_LUMA, device=x.device)[None, :, None, None]
        grey = (x * luma).sum(dim=1, keepdim=True)
        return x * (1.0 - alpha) + grey * alpha

    def _hue(self, x, per_channel, cpu, dev):
        # A rotation of the chroma plane (I, Q of YIQ) keeps luma and saturation, turns the hue.
        angle = torch.deg2rad((2 * torch.rand(x.shape[0], generator=cpu) - 1) * self.cfg.hue_deg)
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(x.shape[0], 3, 3)
        rot[:, 0, 0] = 1.0
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(x.device)
        return torch.einsum("nij,njhw->nihw", m, x)

    def _blur(self, x, per_channel, cpu, dev):
        n, c, h, w = x.shape
        sigma_max = self.cfg.gaussian_blur_sigma_max
        radius = max(1, math.ceil(3 * sigma_max))
        radius = min(radius, (min(h, w) - 1) // 2) or 1
        sigma = (sigma_max * torch.rand(n, generator=cpu)).clamp_(min=1e-3)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).to(x.device)
        kernel = kernel.repeat_interleave(c, dim=0)  # [n * 3, 2r + 1]: one kernel per image, per channel
        flat = x.reshape(1, n * c, h, w)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
        return flat.reshape(n, c, h, w)

    def _noise(self, x, per_channel, cpu, dev):
        std = (self.cfg.gaussian_noise_std * torch.rand(x.shape[0], generator=cpu)).to(x.device)
        field = torch.randn(x.shape, generator=dev, device=x.device)
        return x + self._spread(field, per_channel) * std[:, None, None, None]

    def _pixel_dropout(self, x, per_channel, cpu, dev):
        p = (self.cfg.salt_pepper_fraction * torch.rand(x.shape[0], generator=cpu)).to(x.device)
        field = torch.rand(x.shape, generator=dev, device=x.device)
        return x * (self._spread(field, per_channel) >= p[:, None, None, None])

    def _region_dropout(self, x, per_channel, cpu, dev):
        n, c, h, w = x.shape
        lo, hi = self.cfg.region_dropout_size
        p = self.cfg.region_dropout_fraction * torch.rand(n, generator=cpu)
        size = lo + (hi - lo) * torch.rand(n, generator=cpu)
        out = torch.empty_like(x)
        for i in range(n):  # each image has its own mask resolution; few images are hit per batch
            gh, gw = max(1, round(h * float(size[i]))), max(1, round(w * float(size[i])))
            field = self._spread(torch.rand(1, c, gh, gw, generator=dev, device=x.device), per_channel[i:i + 1])
            # Nearest-neighbour upsampling of the coarse mask: pixel (r, q) takes cell (r * gh // h, q * gw // w).
            rows = torch.arange(h, device=x.device) * gh // h
            cols = torch.arange(w, device=x.device) * gw // w
            keep = (field[0] >= float(p[i]))[:, rows[:, None], cols[None, :]]
            torch.mul(x[i], keep, out=out[i])
        return out
