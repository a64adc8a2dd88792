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
    """A model that makes frames a chunk at a time (a causal video model): `push` instead of `process`."""

    info: BackendInfo

    def new_stream(self, width: int, height: int, prompt: str) -> Any:
        """Per-stream state for frames of this size."""

    def set_prompt(self, state: Any, prompt: str) -> None:
        """Changes the prompt of a running stream from its next chunk on."""

    def push(self, state: Any, frame: np.ndarray, index: int) -> list[tuple[int, np.ndarray]]:
        """Takes input `frame`, the stream's `index`-th; returns the output frames ready now, in order,
        each with the index of the input it was made from (none until a chunk is complete)."""


BACKENDS = ("look",)


def make_backend(name: str, **options: Any) -> Backend:
    """The backend called `name`; BackendError names the known ones."""
    if name == "look":
        from sd_diffusion.backends.look import LookBackend

        return LookBackend(**options)
    raise BackendError(f"unknown diffusion backend {name!r}; known: {', '.join(BACKENDS)}")
