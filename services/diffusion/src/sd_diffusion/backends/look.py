"""The CPU look backend: a classical photo-look transform, not a diffusion model.

For `make run`, the tests and machines without a GPU. Each frame gets, in order: a filmic tone curve
with a warm white balance (one lookup table per channel), a saturation change about the luma, bloom
(the bright parts blurred at a quarter of the size and added back), lens vignetting with a slight
lateral chromatic aberration, and luma film grain that changes every frame (seeded by the frame index,
so a stream is reproducible). All of it is OpenCV and NumPy on uint8/float32 planes; at 640x360 it
runs in a few milliseconds. The manifest's `diffusion.model` says what made the frames (MODEL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from sd_diffusion.backends import BackendError, BackendInfo

MODEL = "look-v1: classical photo-look transform (tone curve, bloom, grain, lens); not a diffusion model"


def _tone_luts(warmth: float, contrast: float) -> list[np.ndarray]:
    """Per-channel (R, G, B) lookup tables: a filmic S-curve, warm gains, a lifted black."""
    x = np.linspace(0.0, 1.0, 256, dtype=np.float64)
    s = 1.0 / (1.0 + np.exp(-contrast * (x - 0.5)))
    s = (s - s[0]) / (s[-1] - s[0])
    curve = 0.03 + 0.95 * s
    gains = (1.0 + 0.06 * warmth, 1.0 + 0.01 * warmth, 1.0 - 0.07 * warmth)
    return [np.clip(curve * g * 255.0 + 0.5, 0, 255).astype(np.uint8) for g in gains]


@dataclass
class LookState:
    """Per stream: the frame size, its vignette, the prompt (which sets the grade's warmth)."""

    width: int
    height: int
    prompt: str
    vignette: np.ndarray = field(repr=False)
    luts: list[np.ndarray] = field(repr=False)


class LookBackend:
    """See the module docstring. `strength` 0 leaves frames as they came; 1 is the full look."""

    def __init__(self, *, strength: float = 1.0, grain: float = 4.0, seed: int = 0, delay_ms: float = 0.0) -> None:
        if not 0.0 <= strength <= 1.0:
            raise BackendError(f"look strength must be within 0..1, got {strength}")
        if not 0.0 <= delay_ms <= 5000.0:
            raise BackendError(f"look delay must be within 0..5000 ms, got {delay_ms}")
        self.strength = strength
        # Each frame takes at least this long, standing in for a model's latency (tests of the path
        # from the picture on screen to the state it shows use a known one).
        self.delay_ms = delay_ms
        self.grain = grain
        self.seed = seed
        self.info = BackendInfo(name="look", model=MODEL, device="cpu")

    @staticmethod
    def _warmth(prompt: str) -> float:
        """Warmer for day and sun, cooler for night and rain: the one thing a prompt changes here."""
        p = prompt.lower()
        cool = any(w in p for w in ("night", "rain", "winter", "snow", "dusk", "overcast"))
        warm = any(w in p for w in ("sun", "afternoon", "golden", "summer", "bright"))
        return 1.0 if warm and not cool else (-1.0 if cool and not warm else 0.3)

    def new_stream(self, width: int, height: int, prompt: str) -> LookState:
        if width < 2 or height < 2:
            raise BackendError(f"frames of {width}x{height} are too small")
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        r2 = ((xx - width / 2) / (width / 2)) ** 2 + ((yy - height / 2) / (height / 2)) ** 2
        vignette = (1.0 - 0.22 * self.strength * np.clip(r2 / 2.0, 0, 1) ** 1.5).astype(np.float32)
        return LookState(width, height, prompt, vignette[..., None], _tone_luts(self._warmth(prompt), 6.0))

    def set_prompt(self, state: LookState, prompt: str) -> None:
        state.prompt = prompt
        state.luts = _tone_luts(self._warmth(prompt), 6.0)

    def process(self, state: LookState, frame: np.ndarray, index: int) -> np.ndarray:
        if self.delay_ms:
            time.sleep(self.delay_ms / 1000.0)
        h, w = frame.shape[:2]
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise BackendError(f"expected an H x W x 3 uint8 frame, got {frame.dtype} {frame.shape}")
        if (w, h) != (state.width, state.height):
            raise BackendError(f"this stream's frames are {state.width}x{state.height}, got {w}x{h}")
        if self.strength == 0.0:
            return frame.copy()
        graded = cv2.merge([cv2.LUT(c, lut) for c, lut in zip(cv2.split(frame), state.luts)])
        img = graded.astype(np.float32)
        luma = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        img = luma[..., None] + (img - luma[..., None]) * (1.0 + 0.15 * self.strength)  # saturation
        # bloom: what is brighter than 200 glows, blurred at a quarter of the size
        small = cv2.resize(np.maximum(img - 200.0, 0.0), (max(1, w // 4), max(1, h // 4)),
                           interpolation=cv2.INTER_AREA)
        glow = cv2.resize(cv2.GaussianBlur(small, (0, 0), 3.0), (w, h), interpolation=cv2.INTER_LINEAR)
        img += 0.6 * self.strength * glow
        img *= state.vignette
        # lateral chromatic aberration: red a touch larger, blue a touch smaller, about the centre
        k = 0.002 * self.strength
        if k > 0:
            for ch, scale in ((0, 1.0 + k), (2, 1.0 - k)):
                m = np.array([[scale, 0, (1 - scale) * w / 2], [0, scale, (1 - scale) * h / 2]], dtype=np.float32)
                img[..., ch] = cv2.warpAffine(img[..., ch], m, (w, h), flags=cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE)
        if self.grain > 0:
            rng = np.random.default_rng((self.seed, index))
            img += (rng.standard_normal((h, w), dtype=np.float32) * (self.grain * self.strength))[..., None]
        out = np.clip(img, 0.0, 255.0).astype(np.uint8)
        if self.strength < 1.0:
            out = cv2.addWeighted(out, self.strength, frame, 1.0 - self.strength, 0.0)
        return out
