"""The wan backend: StreamDiffusionV2-style causal video-to-video on Wan2.1-T2V-1.3B (see backend.py).

Needs the `models` extra (torch, diffusers, transformers); flash-attn (the `flash` extra) when on a GPU.
"""

from sd_diffusion.backends.wan.backend import WanBackend, WanStream
from sd_diffusion.backends.wan.config import WanConfig

__all__ = ["WanBackend", "WanConfig", "WanStream"]
