"""The wan backend's configuration: the model's sizes and the streaming schedule, in one frozen dataclass.

`WanConfig()` is Wan2.1-T2V-1.3B as StreamDiffusionV2 runs it; `WanConfig.wan_14b()` is Wan2.1-T2V-14B
(meant for a pipeline over several GPUs, `devices`); `WanConfig.tiny()` is a model of a few thousand
parameters with the same structure, for the CPU tests (random weights, no files).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from sd_diffusion.backends import BackendError

PRESETS = ("1.3b", "14b", "tiny")


@dataclass(frozen=True)
class WanConfig:
    # --- the transformer (diffusers' WanTransformer3DModel) ---
    num_layers: int = 30
    num_heads: int = 12
    head_dim: int = 128
    ffn_dim: int = 8960
    text_dim: int = 4096  # the text encoder's width (umt5-xxl)
    freq_dim: int = 256  # sinusoidal timestep features
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width) per token
    latent_channels: int = 16
    rope_max_seq_len: int = 1024  # RoPE table length: bounds latent frames in view and tokens per side
    # --- the VAE (diffusers' AutoencoderKLWan): 8x spatial, 4x temporal ---
    vae_base_dim: int = 96
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_num_res_blocks: int = 2
    vae_temporal_downsample: tuple[bool, ...] = (False, True, True)
    # --- the text encoder (transformers' UMT5EncoderModel) ---
    text_len_tokens: int = 512  # prompts are padded (with zeros past their end) to this many tokens
    # --- streaming ---
    first_chunk_frames: int = 5  # pixel frames in the first chunk: 1 + 4k (Wan's causal VAE)
    chunk_frames: int = 4  # pixel frames in every later chunk: one latent frame
    step_list: tuple[int, ...] = (700, 500, 400, 200)  # denoising timesteps; the last goes to t = 0
    num_steps: int = 2  # the first num_steps of step_list are run (StreamDiffusionV2's --step)
    noise_scale: float = 0.8  # SDEdit: noise*s + latent*(1-s) for a still input
    motion_gain: float = 0.1  # s drops by this times the motion d (0..1) ...
    motion_full_scale: float = 0.2  # ... d = the largest frame-to-frame RMS difference (pixels in -1..1) / this
    motion_smoothing: float = 0.1  # ... and s is smoothed: s = new*(1-m) + previous*m
    noise_scale_min: float = 0.65  # keeps the first step (1000s - 100) above the second (500)
    noise_scale_max: float = 0.95
    kv_cache_frames: int = 6  # latent frames of keys/values each block keeps, sinks included
    sink_frames: int = 3  # the stream's first latent frames, kept for ever (attention sinks)
    adapt_sink_threshold: float = 0.2  # a new frame whose keys/values are less similar (cosine) than this
    # to a sink's replaces that sink (the scene has changed); -1: the sinks never change
    stream_batch: bool = True  # the chunks in flight at different steps run as one batch
    seed: int = 0  # the stream's noise generator
    devices: tuple[str, ...] = ()  # two or more: the transformer's blocks in a pipeline over them (pipeline.py);
    # a comma-separated string is split ("cuda:0,cuda:1"); given, it sets device to its first; empty: `device`
    device: str = "auto"  # "auto": cuda:0 when there is one, else cpu
    weights_dir: str | None = None  # a local directory in the layout of weights.py; None: random
    # a TAEHV decoder weights file (taew2_1.pth; taehv.py) decodes instead of the VAE, which still encodes;
    # "random": a random tiny one, with random weights only (tests); None: the VAE decodes
    tiny_vae_decoder: str | None = None

    def __post_init__(self) -> None:
        errors = []
        if self.first_chunk_frames < 1 or (self.first_chunk_frames - 1) % 4:
            errors.append(f"first_chunk_frames must be 1 + 4k, got {self.first_chunk_frames}")
        if self.chunk_frames < 4 or self.chunk_frames % 4:
            errors.append(f"chunk_frames must be a positive multiple of 4, got {self.chunk_frames}")
        if not 1 <= self.num_steps <= len(self.step_list):
            errors.append(f"num_steps must be within 1..{len(self.step_list)}, got {self.num_steps}")
        if list(self.step_list) != sorted(self.step_list, reverse=True) or not all(0 < t < 1000 for t in self.step_list):
            errors.append(f"step_list must fall strictly within 0..1000, got {self.step_list}")
        if not 0.0 < self.noise_scale_min <= self.noise_scale <= self.noise_scale_max < 1.0:
            errors.append(f"noise scales must satisfy 0 < min <= noise_scale <= max < 1, got "
                          f"{self.noise_scale_min}, {self.noise_scale}, {self.noise_scale_max}")
        if self.num_steps > 1 and 1000 * self.noise_scale_min - 100 <= self.step_list[1]:
            errors.append(f"noise_scale_min {self.noise_scale_min} would start below the second step "
                          f"(1000*s - 100 must exceed {self.step_list[1]})")
        if isinstance(self.devices, str):
            object.__setattr__(self, "devices", tuple(d.strip() for d in self.devices.split(",") if d.strip()))
        if self.devices:  # the pipeline's first device is the one the VAE, the text encoder and the inputs use
            object.__setattr__(self, "device", self.devices[0])
        if not 0 <= self.sink_frames < self.kv_cache_frames:
            errors.append(f"sink_frames must be within 0..kv_cache_frames-1, got {self.sink_frames} "
                          f"with kv_cache_frames {self.kv_cache_frames}")
        if self.kv_cache_frames + self.max_chunk_latent_frames > self.rope_max_seq_len:
            errors.append(f"kv_cache_frames + the first chunk's latent frames exceed rope_max_seq_len "
                          f"{self.rope_max_seq_len}")
        if self.head_dim % 2 or self.head_dim < 6:
            errors.append(f"head_dim must be even and at least 6 (RoPE's frame/height/width parts), got {self.head_dim}")
        if self.tiny_vae_decoder == "":
            errors.append("tiny_vae_decoder must be a weights file's path, 'random' or unset, got ''")
        if self.tiny_vae_decoder == "random" and self.weights_dir is not None:
            errors.append("tiny_vae_decoder='random' goes with random weights only (the tiny preset, no "
                          "weights_dir); with real weights give the decoder's weights file (taew2_1.pth)")
        if errors:
            raise BackendError("wan config: " + "; ".join(errors))

    @property
    def max_chunk_latent_frames(self) -> int:
        return max(1 + (self.first_chunk_frames - 1) // 4, self.chunk_frames // 4)

    @property
    def timesteps(self) -> tuple[int, ...]:
        """The denoising steps run per chunk (the first one moves with the motion-aware noise scale)."""
        return self.step_list[: self.num_steps]

    @property
    def pixels_per_token(self) -> int:
        """Pixel side of one token: the VAE's 8x times the patch's 2x."""
        return 8 * self.patch_size[1]

    @classmethod
    def tiny(cls, **overrides: Any) -> WanConfig:
        """A few-thousand-parameter model of the same structure, for tests on the CPU."""
        tiny = dict(num_layers=2, num_heads=2, head_dim=12, ffn_dim=32, text_dim=32, rope_max_seq_len=32,
                    vae_base_dim=3, vae_dim_mult=(1, 1, 1, 1), vae_num_res_blocks=1, text_len_tokens=8,
                    kv_cache_frames=4, sink_frames=1, adapt_sink_threshold=-1.0, device="cpu")
        return cls(**{**tiny, **overrides})

    @classmethod
    def wan_14b(cls, **overrides: Any) -> WanConfig:
        """Wan2.1-T2V-14B: 40 layers of 40 heads x 128 (dim 5120), ffn 13824; the rest as the 1.3B."""
        return cls(**{**dict(num_layers=40, num_heads=40, ffn_dim=13824), **overrides})

    @classmethod
    def from_options(cls, preset: str = "1.3b", **options: Any) -> WanConfig:
        """make_backend("wan", preset=…, <any field>=…); BackendError names an unknown option."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise BackendError(f"unknown wan backend option(s) {', '.join(unknown)}; known: preset, "
                               f"{', '.join(sorted(known))}")
        if "," in str(options.get("device", "")) and "devices" not in options:  # SD_DIFFUSION_DEVICE=cuda:0,cuda:1
            options["devices"] = options.pop("device")
        for key in ("patch_size", "vae_dim_mult", "vae_temporal_downsample", "step_list", "devices"):
            if key in options and isinstance(options[key], list):
                options[key] = tuple(options[key])
        if preset == "1.3b":
            return cls(**options)
        if preset == "14b":
            return cls.wan_14b(**options)
        if preset == "tiny":
            return cls.tiny(**options)
        raise BackendError(f"unknown wan preset {preset!r}; known: {', '.join(PRESETS)}")

    def with_(self, **changes: Any) -> WanConfig:
        return replace(self, **changes)
