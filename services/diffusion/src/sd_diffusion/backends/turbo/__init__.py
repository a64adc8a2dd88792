"""The turbo backend: few-step per-frame image-to-image with an SD-Turbo-class model (see backend.py).

Needs the `models` extra (torch, diffusers, transformers): imported here, so a missing one is an
ImportError that make_backend turns into a BackendError naming the extra.
"""

from sd_diffusion.backends.turbo.backend import TurboBackend, TurboStream
from sd_diffusion.backends.turbo.config import TurboConfig

__all__ = ["TurboBackend", "TurboConfig", "TurboStream"]
