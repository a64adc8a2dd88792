"""Wan's causal VAE (diffusers' AutoencoderKLWan) run chunk by chunk, its convolution caches kept per stream.

diffusers' encode/decode clear the causal convolutions' caches on every call, which is right for a whole
clip. A stream encodes 1 + 4k frames, then 4 at a time, and decodes one latent frame at a time, so the
caches live in a VAEStream and are passed to the encoder and decoder explicitly (nothing is kept on the
shared module, so streams never see each other's frames). Latents are normalised with the VAE's
latents_mean / latents_std as diffusers' Wan pipelines do.

With a tiny decoder (taehv.py, TAEHV's taew2_1), `decode` runs it instead of the VAE's decoder (encoding
stays the VAE's): it takes the normalised latents as they are, keeps its own per-stream memory in the
VAEStream, and gives the same frame counts (1 + 4(F-1) first, then 4F), so a chunk decodes to as many
frames either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sd_diffusion.backends.wan.taehv import TinyDecoderState, TinyVideoDecoder


@dataclass
class VAEStream:
    """One stream's causal-convolution caches and how far it has got."""

    encoder_cache: list = field(default_factory=list)
    decoder_cache: list = field(default_factory=list)
    frames_encoded: int = 0
    latents_decoded: int = 0
    tiny_decoder: TinyDecoderState | None = None  # the tiny decoder's memory, when there is one


class StreamingVAE:
    """Encode and decode chunks of one stream at a time; see the module docstring."""

    def __init__(self, vae: nn.Module, tiny_decoder: TinyVideoDecoder | None = None) -> None:
        if getattr(vae.config, "patch_size", None) is not None:
            raise ValueError("a patchified (Wan2.2) VAE is not supported; this is Wan2.1's")
        self.vae = vae
        z = vae.config.z_dim
        if tiny_decoder is not None and (tiny_decoder.config.latent_channels != z
                                         or tiny_decoder.config.time_factor != 4):
            tc = tiny_decoder.config
            raise ValueError(f"the tiny decoder takes {tc.latent_channels} channels and makes "
                             f"{tc.time_factor} frames a latent; the VAE has {z} and 4")
        self.tiny_decoder = tiny_decoder
        param = next(vae.parameters())
        self.z_dim = z
        self.mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(1, z, 1, 1, 1).to(param.device)
        self.std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(1, z, 1, 1, 1).to(param.device)
        self._counts = vae._cached_conv_counts  # causal convolutions in the encoder and the decoder

    def new_stream(self) -> VAEStream:
        if self.tiny_decoder is not None:
            return VAEStream([None] * self._counts["encoder"], tiny_decoder=self.tiny_decoder.new_state())
        return VAEStream([None] * self._counts["encoder"], [None] * self._counts["decoder"])

    def encode(self, stream: VAEStream, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels 1 x 3 x T x H x W in [-1, 1] (T = 1 + 4k first, then 4k) to normalised latents 1 x z x T' x h x w."""
        t = pixels.shape[2]
        first = 1 if stream.frames_encoded == 0 else 0
        if (t - first) % 4:
            raise ValueError(f"a chunk after frame {stream.frames_encoded} must be {'1 + ' if first else ''}4k frames, got {t}")
        bounds = ([0, 1] if first else [0]) + list(range(first + 4, t + 1, 4))
        outs = []
        for lo, hi in zip(bounds, bounds[1:]):
            outs.append(self.vae.encoder(pixels[:, :, lo:hi], feat_cache=stream.encoder_cache, feat_idx=[0]))
        stream.frames_encoded += t
        moments = self.vae.quant_conv(torch.cat(outs, dim=2))
        mu = moments[:, : self.z_dim].float()  # the posterior's mean: no sampling in a stream
        return (mu - self.mean) / self.std

    def decode(self, stream: VAEStream, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents 1 x z x F x h x w to pixels 1 x 3 x T x H x W in [-1, 1] (1 + 4(F-1) first, then 4F)."""
        if self.tiny_decoder is not None:
            dtype = next(self.tiny_decoder.parameters()).dtype
            pixels = self.tiny_decoder.decode(stream.tiny_decoder, latents.to(dtype))
            stream.latents_decoded += latents.shape[2]
            return pixels * 2.0 - 1.0  # TAEHV's [0, 1]
        dtype = next(self.vae.parameters()).dtype
        z = (latents.float() * self.std + self.mean).to(dtype)
        x = self.vae.post_quant_conv(z)
        outs = []
        for i in range(x.shape[2]):
            outs.append(self.vae.decoder(x[:, :, i:i + 1], feat_cache=stream.decoder_cache, feat_idx=[0],
                                         first_chunk=stream.latents_decoded == 0))
            stream.latents_decoded += 1
        return torch.cat(outs, dim=2).clamp(-1.0, 1.0)
