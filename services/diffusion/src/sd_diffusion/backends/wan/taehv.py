"""A tiny causal video decoder of the TAEHV kind (madebyollin/taehv; its Wan2.1 weights are `taew2_1.pth`).

It turns Wan latents (16 channels, 8x smaller in space, 4x in time) into RGB frames with 2D
convolutions run frame by frame: 9.84 M parameters, against 73.3 M in the full Wan VAE's decoder (both
counted here on the meta device). Time enters in two ways only:
- a MemBlock convolves each frame's features together with the previous frame's features at the same
  layer (zeros before a stream's first frame), so information only flows forwards in time;
- a TGrow turns every frame into `stride` frames (a 1x1 convolution to stride x channels, split in order).

The layout, in the order of `TinyVideoDecoder.decoder` (nn.Sequential; the indices are the state dict's
names, `decoder.<i>.…`, as in the published files):

    soft clamp (3 tanh(x/3)), conv 3x3 latent -> c0, ReLU
    3 stages s = 0, 1, 2:  `blocks` MemBlocks of width c_s, nearest upsample x2,
                           TGrow(c_s, 2 if time_upscale[s] else 1), conv 3x3 c_s -> c_{s+1} (no bias)
    ReLU, conv 3x3 c3 -> 3

The real size (`TinyDecoderConfig()`) is the published taew2_1 decoder: channels (256, 128, 64, 64),
3 MemBlocks a stage, time upscale (False, True, True): x4 in time, x8 in space.

Frame counts. Each latent frame becomes 4 pixel frames (2 x 2 from the two TGrows), the i-th latent's
being raw frames 4i..4i+3 in order. Wan's causal VAE encodes 1 + 4k pixel frames into 1 + k latents:
the first latent holds one frame, each later one four. So the first 3 raw frames of a stream are
dropped: the first latent frame yields 1 pixel frame (its last raw one), every later latent frame 4,
so latent 0 is pixel frame 0 and latent i >= 1 pixel frames 4i-3 .. 4i, as the encoder grouped them.
A first chunk of F latents decodes to 1 + 4(F - 1) frames (5 pixel frames -> 2 latents -> 5 frames),
every later chunk of F latents to 4F, the full VAE's arithmetic, so the backend's chunks come back
whole either way.

Streaming: a TinyDecoderState keeps, per MemBlock, the features of the last frame it saw. Decoding a
chunk runs its frames as one batch per layer, each MemBlock pairing every frame with the frame before
it (the state's for the chunk's first). The state holds exactly what the next frame needs, so a stream
decoded chunk by chunk gives what decoding it whole gives, up to float rounding: the convolutions run
over batches of other sizes (on the CPU here the frames differ by up to 6e-8 on pixels in 0..1).

Conventions differ from diffusers': the decoder takes the latents exactly as the diffusion model sees
them (the normalised ones, no latents_mean/std: TAEHV's README; not checked here against real weights)
and returns pixels in [0, 1] (StreamingVAE converts).

`load_decoder` reads a whole TAEHV file (its `encoder.*` keys are ignored: the full Wan VAE encodes)
or a decoder-only one, strictly: every `decoder.*` key of the layout, of the layout's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sd_diffusion.backends import BackendError

RANDOM = "random"  # tiny_vae_decoder="random": a random decoder of the tiny size (tests, random weights)


@dataclass(frozen=True)
class TinyDecoderConfig:
    latent_channels: int = 16
    image_channels: int = 3
    channels: tuple[int, int, int, int] = (256, 128, 64, 64)  # the three stages' widths, then the last conv's
    blocks: int = 3  # MemBlocks per stage
    time_upscale: tuple[bool, bool, bool] = (False, True, True)  # which stages double the frames

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f"channels must be four positive widths, got {self.channels}")
        if len(self.time_upscale) != 3 or self.blocks < 1:
            raise ValueError(f"time_upscale must have three entries and blocks be >= 1, got "
                             f"{self.time_upscale}, {self.blocks}")

    @property
    def time_factor(self) -> int:
        """Raw frames per latent frame."""
        return 2 ** sum(self.time_upscale)

    @classmethod
    def tiny(cls, **overrides: Any) -> TinyDecoderConfig:
        """A decoder of the same structure with about 13 thousand parameters, for tests on the CPU."""
        return cls(**{"channels": (8, 8, 4, 4), "blocks": 2, **overrides})


def _conv3(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """3 tanh(x / 3): latents far outside the trained range saturate instead of blowing up."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3.0) * 3.0


class MemBlock(nn.Module):
    """A residual block over a frame and the previous frame's input to this block (channels concatenated)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv3(2 * n_in, n_out), nn.ReLU(), _conv3(n_out, n_out), nn.ReLU(),
                                  _conv3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TGrow(nn.Module):
    """Every frame into `stride` frames: a 1x1 convolution to stride x channels, split in order."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(channels, channels * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        return self.conv(x).reshape(nt * self.stride, c, h, w)


@dataclass
class TinyDecoderState:
    """One stream's decoder memory: per MemBlock (by layer index) the last frame it saw, N x 1 x C x H x W."""

    memory: dict[int, torch.Tensor] = field(default_factory=dict)
    latents_decoded: int = 0


class TinyVideoDecoder(nn.Module):
    """See the module docstring; `decode(state, latents)` is the streaming entry."""

    def __init__(self, config: TinyDecoderConfig = TinyDecoderConfig()) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        layers: list[nn.Module] = [SoftClamp(), _conv3(config.latent_channels, c[0]), nn.ReLU()]
        for stage in range(3):
            layers += [MemBlock(c[stage], c[stage]) for _ in range(config.blocks)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       TGrow(c[stage], 2 if config.time_upscale[stage] else 1),
                       _conv3(c[stage], c[stage + 1], bias=False)]
        layers += [nn.ReLU(), _conv3(c[3], config.image_channels)]
        self.decoder = nn.Sequential(*layers)

    def new_state(self) -> TinyDecoderState:
        return TinyDecoderState()

    def decode(self, state: TinyDecoderState, latents: torch.Tensor) -> torch.Tensor:
        """Latents N x C x F x h x w (the next F of the stream) to pixels N x 3 x T x 8h x 8w in [0, 1];
        T = 1 + 4(F - 1) for a stream's first chunk, 4F after (for the real time_upscale)."""
        n, c, f, h, w = latents.shape
        if c != self.config.latent_channels or f < 1:
            raise ValueError(f"expected N x {self.config.latent_channels} x F>=1 x h x w latents, "
                             f"got {tuple(latents.shape)}")
        x = latents.permute(0, 2, 1, 3, 4).reshape(n * f, c, h, w)  # frames as the batch: N*T x C x H x W
        t = f
        for i, layer in enumerate(self.decoder):
            if isinstance(layer, MemBlock):
                frames = x.reshape(n, t, *x.shape[1:])
                before = state.memory.get(i)
                if before is None:
                    before = torch.zeros_like(frames[:, :1])
                elif before.shape != frames[:, :1].shape:
                    raise ValueError(f"this stream's frames were {tuple(before.shape)} at layer {i}, now "
                                     f"{tuple(frames[:, :1].shape)}: one state per stream and frame size")
                past = torch.cat([before, frames[:, :-1]], 1).reshape(x.shape)
                state.memory[i] = frames[:, -1:].clone()  # a copy: the slice would keep the whole chunk alive
                x = layer(x, past)
            else:
                x = layer(x)
                if isinstance(layer, TGrow):
                    t *= layer.stride
        out = x.reshape(n, t, *x.shape[1:]).permute(0, 2, 1, 3, 4)
        if state.latents_decoded == 0:
            out = out[:, :, self.config.time_factor - 1:]  # the warm-up frames before the stream's first one
        state.latents_decoded += f
        return out.clamp(0.0, 1.0)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """A whole clip at once: decode with a fresh state."""
        return self.decode(self.new_state(), latents)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ValueError("not a state dict of named tensors")
    return state


def _some(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", … ({len(keys)} in all)" if len(keys) > n else "")


def load_decoder(path: Path, config: TinyDecoderConfig = TinyDecoderConfig()) -> TinyVideoDecoder:
    """The decoder of `config`'s layout with the weights of a local file (.pth or .safetensors), strictly;
    BackendError names the file and what is missing, unexpected or of the wrong shape."""
    if not path.is_file():
        raise BackendError(f"the tiny VAE decoder's weights are missing: {path} (a TAEHV file for Wan2.1, "
                           f"taew2_1.pth or taew2_1.safetensors; see sd_diffusion.backends.wan.taehv)")
    try:
        state = _read_state_dict(path)
    except Exception as e:  # a truncated download, a text file, a pickle of something else
        raise BackendError(f"{path} cannot be read as the tiny VAE decoder's weights (a .pth saved by "
                           f"torch.save or a .safetensors file of named tensors): {e}") from e
    decoder = TinyVideoDecoder(config)
    want = decoder.state_dict()
    got = {k: v for k, v in state.items() if k.startswith("decoder.")}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    unexpected += sorted(k for k in state if not k.startswith(("decoder.", "encoder.")))
    shapes = [f"{k} {tuple(got[k].shape)} (the layout's: {tuple(want[k].shape)})"
              for k in sorted(set(got) & set(want)) if got[k].shape != want[k].shape]
    if missing or unexpected or shapes:
        problems = [f"{len(missing)} missing keys ({_some(missing)})" if missing else "",
                    f"{len(unexpected)} unexpected keys ({_some(unexpected)})" if unexpected else "",
                    f"{len(shapes)} of another shape ({_some(shapes, 3)})" if shapes else ""]
        raise BackendError(f"{path} does not fit the tiny VAE decoder (channels {config.channels}, "
                           f"{config.blocks} MemBlocks a stage, {config.latent_channels} latent channels): "
                           + "; ".join(p for p in problems if p))
    decoder.load_state_dict(got, strict=True)
    return decoder.eval()


def build_tiny_decoder(spec: str, latent_channels: int, seed: int = 0) -> TinyVideoDecoder:
    """WanConfig.tiny_vae_decoder to a decoder: "random" (the tiny size, seeded) or a weights file's path."""
    if spec == RANDOM:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            return TinyVideoDecoder(TinyDecoderConfig.tiny(latent_channels=latent_channels)).eval()
        finally:
            torch.random.set_rng_state(generator_state)
    return load_decoder(Path(spec), TinyDecoderConfig(latent_channels=latent_channels))
