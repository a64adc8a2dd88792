"""Model backends behind one interface; the server picks one by settings (`SD_DIFFUSION_BACKEND`).

A backend turns one RGB frame (H x W x 3 uint8) into the frame the player sees, of the same size.
It is called from one worker thread per stream, never concurrently for one stream; `process` may
keep per-stream state (a causal model's cache) in the `StreamState` it made. The server, not the
backend, reads the input frame's barcode and draws it on the output (sd_diffusion.stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


class BackendError(RuntimeError):
    """A backend cannot be built (missing weights, a device that is not there) or cannot run."""


def torch_device(name: str, backend: str):
    """The torch device a model backend's `device` setting names: "auto" is the first GPU, else the CPU;
    BackendError when a GPU is asked for and torch sees none. (torch is imported here, not at module
    level: the look backend runs without it.)"""
    import torch

    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"{backend} device {name!r} asked for, but torch sees no CUDA device")
    return device


@dataclass(frozen=True)
class BackendInfo:
    """What the manifest and GetCapacity say about a backend."""

    name: str  # the settings' name: "look", …
    model: str  # what the frames are made by, as the session manifest's diffusion.model records it
    device: str  # "cpu", "cuda:0", …


@runtime_checkable
class Backend(Protocol):
    """One model, shared by the streams of a pod."""

    info: BackendInfo

    def new_stream(self, width: int, height: int, prompt: str) -> Any:
        """Per-stream state for frames of this size (a cache, a prompt embedding)."""

    def set_prompt(self, state: Any, prompt: str) -> None:
        """Changes the prompt of a running stream from its next frame on."""

    def process(self, state: Any, frame: np.ndarray, index: int) -> np.ndarray:
        """The output frame for input `frame` (H x W x 3 uint8 RGB), the stream's `index`-th processed."""


@runtime_checkable
class ChunkedBackend(Protocol):
    """A causal video model that works on chunks of frames (the wan backend: 1 + 4k frames, then 4).

    `push(state, frame, index)` takes one input frame (H x W x 3 uint8 RGB) and returns the output frames
    that are now ready, possibly none, as (index, frame) pairs: `index` is the `index` that the input
    frame this output was made from was pushed with (so the server draws that input's barcode on it),
    and each frame is H x W x 3 uint8 RGB of the input's size. Across calls every pushed frame comes back
    exactly once, in push order, some calls later (the chunk must fill and the denoising pipeline run);
    nothing is returned out of order or twice. The output of an input never depends on a later chunk's
    inputs. `flush(state)` returns what is still in flight (frames short of a chunk are dropped).
    """

    info: BackendInfo

    def new_stream(self, width: int, height: int, prompt: str) -> Any:
        """Per-stream state for frames of this size (caches, the prompt embedding, frames waiting)."""

    def set_prompt(self, state: Any, prompt: str) -> None:
        """Changes the prompt of a running stream from its next chunk on."""

    def push(self, state: Any, frame: np.ndarray, index: int) -> list[tuple[int, np.ndarray]]:
        """The (input index, output frame) pairs ready after this input frame, in input order."""

    def flush(self, state: Any) -> list[tuple[int, np.ndarray]]:
        """The (input index, output frame) pairs of the chunks still in flight: a stream's end."""


BACKENDS = ("look", "wan", "turbo")


def make_backend(name: str, **options: Any) -> Backend:
    """The backend called `name`; BackendError names the known ones."""
    if name == "look":
        from sd_diffusion.backends.look import LookBackend

        return LookBackend(**options)
    if name == "wan":
        try:
            from sd_diffusion.backends.wan import WanBackend, WanConfig
        except ImportError as e:
            raise BackendError(f"the wan backend needs the models extra (pip install 'sd-diffusion[models]'): {e}") from e

        config = WanConfig.from_options(**options)
        if config.weights_dir is None and options.get("preset", "1.3b") != "tiny":
            raise BackendError("the wan backend needs weights_dir (a local Wan2.1 directory, see "
                               "sd_diffusion.backends.wan.weights); random weights only with preset='tiny'")
        return WanBackend(config)
    if name == "turbo":
        try:
            from sd_diffusion.backends.turbo import TurboBackend, TurboConfig
        except ImportError as e:
            raise BackendError("the turbo backend needs the models extra (pip install 'sd-diffusion[models]'): "
                               f"{e}") from e

        return TurboBackend(TurboConfig.from_options(**options))
    raise BackendError(f"unknown diffusion backend {name!r}; known: {', '.join(BACKENDS)}")
