"""The turbo backend's configuration: where the model comes from and how each frame is denoised."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from sd_diffusion.backends import BackendError

PRESETS = ("sd-turbo", "tiny")  # sd-turbo: weights from model_dir; tiny: a small random model (tests only)
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True)
class TurboConfig:
    model_dir: str | None = None  # a local directory in stabilityai/sd-turbo's layout (weights.py); None: random
    tiny_vae_dir: str | None = None  # a local AutoencoderTiny (taesd) directory: it decodes instead of the VAE
    strength: float = 0.5  # SDEdit: how far into the noise each frame is taken (1: all the way, the input ignored)
    num_steps: int = 1  # denoising steps (UNet calls) per frame
    seed: int = 0  # the stream's noise: drawn once per stream from this seed, the same for every frame
    device: str = "auto"  # "auto": cuda:0 when there is one, else cpu
    dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on the CPU
    prompts_kept: int = 8  # text embeddings kept (one per prompt, least recently used out first)

    def __post_init__(self) -> None:
        errors = []
        if not 1 <= self.num_steps <= 4:
            errors.append(f"num_steps must be within 1..4, got {self.num_steps}")
        if not 0.0 < self.strength <= 1.0:
            errors.append(f"strength must be within (0, 1], got {self.strength}")
        if self.dtype not in DTYPES:
            errors.append(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.prompts_kept < 1:
            errors.append(f"prompts_kept must be at least 1, got {self.prompts_kept}")
        if errors:
            raise BackendError("turbo config: " + "; ".join(errors))

    @property
    def schedule_steps(self) -> int:
        """The scheduler's schedule length N: diffusers' img2img at num_inference_steps=N and this strength
        runs exactly num_steps of it (int(N * strength) == num_steps), the last ones; SD-Turbo's recipe
        (steps x strength >= 1) read from the side of the steps actually run."""
        n = math.ceil(self.num_steps / self.strength - 1e-9)
        while int(n * self.strength) < self.num_steps:  # float rounding of n * strength
            n += 1
        return n

    @classmethod
    def from_options(cls, preset: str = "sd-turbo", **options: Any) -> TurboConfig:
        """make_backend("turbo", preset=…, <any field>=…); BackendError names an unknown option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BackendError(f"unknown turbo backend option(s) {', '.join(unknown)}; known: preset, "
                               f"{', '.join(sorted(known))}")
        if preset not in PRESETS:
            raise BackendError(f"unknown turbo preset {preset!r}; known: {', '.join(PRESETS)}")
        config = cls(**options)
        if preset == "sd-turbo" and config.model_dir is None:
            raise BackendError("the turbo backend needs model_dir (SD_DIFFUSION_MODEL_DIR: a local directory in "
                               "stabilityai/sd-turbo's diffusers layout, see sd_diffusion.backends.turbo.weights); "
                               "random weights only with preset='tiny'")
        if preset == "tiny" and config.model_dir is not None:
            raise BackendError("the tiny turbo preset builds random weights: leave model_dir unset, or use "
                               "preset='sd-turbo' to load it")
        return config

    def with_(self, **changes: Any) -> TurboConfig:
        return replace(self, **changes)
