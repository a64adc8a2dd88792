"""Settings of the gateway, from `SD_GATEWAY_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import NoDecode, SettingsConfigDict
from pydantic import field_validator
from typing import Annotated

from sd_common.ice import IceServer, check_turn_urls
from sd_common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Listening addresses, identity, limits and neighbours of the gateway."""

    model_config = SettingsConfigDict(env_prefix="SD_GATEWAY_", extra="ignore", frozen=True)

    grpc_port: int = Field(50051, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    # Signs device tokens. Unset: generated once and kept in state_dir, so local restarts keep players.
    token_secret: SecretStr | None = None
    token_ttl_days: int = Field(365, ge=1)
    state_dir: Path = Path(".run/gateway")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in state_dir")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8080", "http://localhost:8080",
                                 "http://127.0.0.1:5173", "http://localhost:5173"],
        description="comma-separated browser origins allowed to call the HTTP API",
    )
    # Per-player limits (token buckets: a burst, refilled at rate per minute).
    players_per_minute_per_ip: float = Field(2.0, gt=0)
    players_burst_per_ip: int = Field(20, ge=1)
    sessions_per_minute: float = Field(4.0, gt=0)
    sessions_burst: int = Field(20, ge=1)
    upload_calls_per_minute: float = Field(120.0, gt=0)
    upload_calls_burst: int = Field(120, ge=1)
    # A JSON request body longer than this is refused with 413 as it arrives (uploads are not JSON).
    max_json_body_bytes: int = Field(1024 * 1024, ge=1024)
    # Origins the game may connect to besides the gateway's own, for its content security policy
    # (comma-separated). With an S3 store its endpoint is added by itself.
    csp_connect_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Bounds on what one session may upload, counted across all its upload-urls calls.
    max_files_per_session: int = Field(16, ge=1)
    max_session_bytes: int = Field(2 * 1024**3, ge=1)
    # The diffusion pods' gRPC, comma-separated: host:port (one pod) or dns:///name:port (each address
    # of a headless Service is a pod); offers go to the pod with the most free slots (signaling.py).
    # Unset means signaling answers UNAVAILABLE.
    diffusion_target: str | None = None
    diffusion_resolve_every_s: float = Field(10.0, gt=0, description="how often dns:/// targets are resolved again")
    # The ICE servers the game's peer connection uses (GET /v1/diffusion/ice-servers), as JSON like the
    # diffusion pods' SD_DIFFUSION_ICE_SERVERS; empty: host candidates only. A TURN relay gets
    # time-limited per-player credentials from the secret it shares with the TURN server (sd_common.ice).
    diffusion_ice_servers: list[IceServer] = Field(default_factory=list)
    turn_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    turn_secret: SecretStr | None = None
    turn_ttl_s: int = Field(3600, ge=60, le=7 * 86400)

    @field_validator("turn_urls", mode="before")
    @classmethod
    def _split_turn_urls(cls, v: object) -> object:
        if isinstance(v, str):
            v = [u.strip() for u in v.split(",") if u.strip()]
        return check_turn_urls(v) if isinstance(v, list) else v

    @field_validator("diffusion_target")
    @classmethod
    def _check_targets(cls, v: str | None) -> str | None:
        from sd_gateway.signaling import parse_targets  # raises ValueError naming a bad entry
        parse_targets(v)
        return v
    # Built web game (web/dist) served at /; unset or missing means a page that says how to build it.
    web_dir: Path | None = None

    @field_validator("cors_origins", "csp_connect_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v
