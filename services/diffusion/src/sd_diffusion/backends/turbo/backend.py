"""The turbo backend: few-step image-to-image per frame (SD-Turbo class), a lighter real model than wan.

Per frame (`process`, a plain Backend: one frame in, one out):
1. The frame is padded at its right and bottom edges (edge pixels repeated) to a multiple of the VAE's
   8x, never resized, so the aspect ratio is the input's; the output is cropped back.
2. The VAE encodes it (the latent distribution's mean, not a sample: no noise from the encoder).
3. SDEdit as diffusers' StableDiffusionImg2ImgPipeline does it, at guidance scale 0 (SD-Turbo's: one
   UNet call a step, no unconditional pass): the scheduler (the model directory's own) is set to
   config.schedule_steps steps, the last num_steps of them are run, and the latent is noised to the
   first of those with scheduler.add_noise.
4. The VAE decodes, or the tiny VAE (taesd) when there is one; the frame is cropped to the input's size.

The noise is drawn once per stream from the configured seed and used for every frame (and any noise a
scheduler's step draws comes from a generator re-seeded the same way every frame), so the output is a
function of the input frame and the prompt alone: a still input gives a still output, and two streams
of one seed give the same frames. The prompt's text embedding is computed once per prompt and kept
(PromptEmbeddings); set_prompt takes effect from the next frame.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from sd_diffusion.backends import BackendError, BackendInfo, torch_device
from sd_diffusion.backends.turbo.config import TurboConfig
from sd_diffusion.backends.turbo.weights import PromptEmbeddings, describe, load_parts, load_tiny_vae, random_parts

_STEP_SEED_OFFSET = 1_000_003  # a scheduler's step noise is not the initial noise


@dataclass
class TurboStream:
    """Per-stream state: sizes, the prompt's embedding, the fixed noise, its own scheduler."""

    width: int
    height: int
    padded_width: int
    padded_height: int
    prompt: str
    embedding: torch.Tensor  # 1 x tokens x width
    noise: torch.Tensor  # 1 x latent channels x padded_height/8 x padded_width/8, drawn once
    scheduler: SchedulerMixin
    generator: torch.Generator  # re-seeded every frame for a scheduler step's own noise
    timesteps: list[float] = field(default_factory=list)  # the last frame's (the tests read them)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and name != "float32":
        raise BackendError(f"turbo dtype {name} on the CPU: use float32 there (half precision is for CUDA)")
    return getattr(torch, name)


class TurboBackend:
    """See the module docstring. Shared by a pod's streams; each stream is driven by one thread."""

    def __init__(self, config: TurboConfig) -> None:
        self.config = config
        self.device = torch_device(config.device, "turbo")
        self.dtype = _dtype(config.dtype, self.device)
        if config.model_dir is not None:
            root = Path(config.model_dir)
            parts = load_parts(root, self.device, self.dtype)
            source = describe(root)
        else:
            parts = random_parts(self.device, self.dtype)
            source = "turbo tiny random weights (tests only)"
        if config.tiny_vae_dir is not None:
            parts.tiny_vae = load_tiny_vae(Path(config.tiny_vae_dir), self.device, self.dtype)
            if parts.tiny_vae.config.latent_channels != parts.unet.config.in_channels:
                raise BackendError(f"the tiny VAE in {config.tiny_vae_dir} has {parts.tiny_vae.config.latent_channels} "
                                   f"latent channels; the UNet takes {parts.unet.config.in_channels}")
        self.parts = parts
        self.vae_scale = 2 ** (len(parts.vae.config.block_out_channels) - 1)
        self.prompts = PromptEmbeddings(parts.tokenizer, parts.text_encoder, keep=config.prompts_kept)
        step_params = inspect.signature(parts.scheduler.step).parameters
        self._step_takes_generator = "generator" in step_params
        decoder = "decoded by its VAE" if parts.tiny_vae is None else f"decoded by the tiny VAE {config.tiny_vae_dir}"
        self.info = BackendInfo(
            name="turbo", device=str(self.device),
            model=f"{source}: per-frame image-to-image (SDEdit, not a video model), {config.num_steps} step(s) at "
                  f"strength {config.strength:g}, {decoder}")

    # --- the Backend interface ---

    def new_stream(self, width: int, height: int, prompt: str) -> TurboStream:
        if width < 1 or height < 1:
            raise BackendError(f"frames of {width}x{height} are empty")
        f = self.vae_scale
        pw, ph = -(-width // f) * f, -(-height // f) * f
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed)
        shape = (1, self.parts.unet.config.in_channels, ph // f, pw // f)
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=self.dtype)
        scheduler = type(self.parts.scheduler).from_config(self.parts.scheduler.config)
        return TurboStream(width, height, pw, ph, prompt, self.prompts(prompt), noise, scheduler,
                           torch.Generator(device=self.device))

    def set_prompt(self, state: TurboStream, prompt: str) -> None:
        state.prompt = prompt
        state.embedding = self.prompts(prompt)

    def process(self, state: TurboStream, frame: np.ndarray, index: int) -> np.ndarray:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BackendError(f"expected an H x W x 3 uint8 frame, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if (w, h) != (state.width, state.height):
            raise BackendError(f"this stream's frames are {state.width}x{state.height}, got {w}x{h}")
        if (state.padded_width, state.padded_height) != (w, h):
            frame = cv2.copyMakeBorder(frame, 0, state.padded_height - h, 0, state.padded_width - w,
                                       cv2.BORDER_REPLICATE)
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1)[None]
            latents = self.encode(pixels.to(self.dtype) / 127.5 - 1.0)
            latents = self.denoise(state, latents)
            image = self.decode(latents)
            out = ((image[0].float() + 1.0) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            out = out[:h, :w].cpu().numpy()
        return np.ascontiguousarray(out)

    # --- the steps ---

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """1 x 3 x H x W in [-1, 1] -> the UNet's latents (the VAE's mean, shifted and scaled)."""
        cfg = self.parts.vae.config
        z = self.parts.vae.encode(pixels).latent_dist.mode()
        return (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor

    def denoise(self, state: TurboStream, latents: torch.Tensor) -> torch.Tensor:
        """SDEdit: noise the latents to the first of the last num_steps timesteps, then run those steps."""
        scheduler, n = state.scheduler, self.config.schedule_steps
        scheduler.set_timesteps(n, device=self.device)  # also resets the scheduler's step index
        t_start = (n - self.config.num_steps) * scheduler.order
        timesteps = scheduler.timesteps[t_start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start)
        state.timesteps = [float(t) for t in timesteps]
        x = scheduler.add_noise(latents, state.noise, timesteps[:1])
        extra = {}
        if self._step_takes_generator:
            extra["generator"] = state.generator.manual_seed(self.config.seed + _STEP_SEED_OFFSET)
        for t in timesteps:
            eps = self.parts.unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=state.embedding,
                                  return_dict=False)[0]
            x = scheduler.step(eps, t, x, **extra, return_dict=False)[0]
        return x

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The UNet's latents -> 1 x 3 x H x W in about [-1, 1], by the tiny VAE when there is one."""
        vae = self.parts.tiny_vae if self.parts.tiny_vae is not None else self.parts.vae
        cfg = vae.config
        z = latents / cfg.scaling_factor + (getattr(cfg, "shift_factor", None) or 0.0)
        return vae.decode(z.to(vae.dtype), return_dict=False)[0]
