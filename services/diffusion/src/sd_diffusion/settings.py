"""Settings of the diffusion service, from `SD_DIFFUSION_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sd_common.ice import IceServer, parse_turn_urls
from sd_common.settings import ServiceSettings

__all__ = ["DiffusionSettings", "IceServer"]


class DiffusionSettings(ServiceSettings):
    """Listening address, backend, stream slots, WebRTC and logging of the diffusion service."""

    model_config = SettingsConfigDict(env_prefix="SD_DIFFUSION_", extra="ignore", frozen=True)

    grpc_port: int = Field(50054, ge=0, le=65535)
    # Which model makes the frames (sd_diffusion.backends.BACKENDS).
    backend: str = "look"
    # Streams served at once: each holds a slot from CreateStream until it closes.
    max_streams: int = Field(2, ge=1)
    # ICE servers, as JSON (SD_DIFFUSION_ICE_SERVERS='[{"urls": ["stun:stun.example.org:3478"]}]').
    # Empty: host candidates only, which is all a pod reachable from the players' network needs.
    ice_servers: list[IceServer] = Field(default_factory=list)
    # A TURN relay with time-limited credentials (sd_common.ice): comma-separated turn:/turns: URLs and
    # the secret the TURN server shares (coturn's static-auth-secret); each stream gets its own.
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_secret: SecretStr | None = None
    turn_ttl_s: int = Field(3600, ge=60, le=7 * 86400)
    # A stream with no input frame for this long is closed and its slot freed (a closed tab, lost ICE).
    idle_timeout_s: float = Field(3.0, gt=0)
    # A stream that never received a frame is closed after this long.
    connect_timeout_s: float = Field(15.0, gt=0)
    # How often the streams are checked for the two timeouts.
    watchdog_interval_s: float = Field(0.5, gt=0)
    # The retry hint of a busy answer (gRPC trailing metadata `retry-after-s`, HTTP Retry-After).
    busy_retry_after_s: float = Field(5.0, gt=0)
    # The VP8 encoder's bitrate ceiling and frame-rate cap for the returned video (aiortc's are 1.5 Mbps, 30 fps).
    video_max_bitrate_bps: int = Field(6_000_000, ge=250_000)
    video_max_fps: int = Field(60, ge=1, le=120)
    # The look backend: 0 passes frames through, 1 is the full look.
    look_strength: float = Field(1.0, ge=0.0, le=1.0)
    look_delay_ms: float = Field(0.0, ge=0.0, le=5000.0,
                                 description="the look backend takes at least this long per frame (a model's "
                                             "latency, for tests)")
    # The wan backend (docs/diffusion.md): weights from this local directory, never downloaded; the
    # "tiny" preset builds a small random model instead (tests only, and it says so in its model name).
    model_dir: Path | None = None
    wan_preset: Literal["1.3b", "14b", "tiny"] = "1.3b"
    device: str = Field("auto", description="auto (the first GPU, else the CPU), cpu, cuda:N")
    num_steps: int = Field(2, ge=1, le=4, description="denoising steps per chunk")
    # A TAEHV decoder weights file (taew2_1.pth) that decodes instead of the Wan VAE; unset: the VAE decodes.
    wan_tiny_decoder: Path | None = None

    # The turbo backend (docs/diffusion.md): per-frame few-step image-to-image, an SD-Turbo-class model from
    # model_dir (stabilityai/sd-turbo's diffusers layout), never downloaded; the "tiny" preset builds a small
    # random model instead (tests only). It uses device too; num_steps above is wan's.
    turbo_preset: Literal["sd-turbo", "tiny"] = "sd-turbo"
    turbo_strength: float = Field(0.5, gt=0.0, le=1.0, description="SDEdit strength: how far into the noise a "
                                                                   "frame goes")
    turbo_num_steps: int = Field(1, ge=1, le=4, description="denoising steps (UNet calls) per frame")
    turbo_seed: int = Field(0, description="the streams' noise, fixed per stream: a still input stays still")
    turbo_tiny_vae_dir: Path | None = Field(None, description="a local AutoencoderTiny (taesd) that decodes "
                                                              "instead of the VAE")
    turbo_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    @field_validator("turn_urls", mode="before")
    @classmethod
    def _split_turn_urls(cls, v: object) -> object:
        return parse_turn_urls(v)
