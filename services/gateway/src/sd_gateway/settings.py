"""Settings of the gateway, from `SD_GATEWAY_*` environment variables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import NoDecode, SettingsConfigDict
from pydantic import field_validator, model_validator
from typing import Annotated, Literal
from urllib.parse import urlsplit

from sd_common.ice import IceServer, parse_turn_urls
from sd_common.settings import ServiceSettings
from sd_common.siws import SiwsError, build_message


class GatewaySettings(ServiceSettings):
    """Listening addresses, identity, limits and neighbours of the gateway."""

    # hide_input_in_errors: a refused setting's error must not echo the inputs, which hold the secrets.
    model_config = SettingsConfigDict(env_prefix="SD_GATEWAY_", extra="ignore", frozen=True, hide_input_in_errors=True)

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
    # Where those buckets live: "memory" (this replica alone: one gateway, as `make run` starts) or
    # "database" (the gateway's database, shared by every replica, so N replicas admit a burst once).
    rate_limit_store: Literal["memory", "database"] = "memory"
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
        return parse_turn_urls(v)

    @field_validator("diffusion_target")
    @classmethod
    def _check_targets(cls, v: str | None) -> str | None:
        from sd_gateway.signaling import parse_targets  # raises ValueError naming a bad entry
        parse_targets(v)
        return v
    # Hosted diffusion (docs/diffusion.md, "Hosted (Mirage)"): "mirage" lets the game stream to Decart's
    # Mirage directly, with a short-lived client token the gateway mints from the API key below for
    # each drive (POST /v1/diffusion/hosted-token). "off": that endpoint answers 409.
    hosted_diffusion: Literal["off", "mirage"] = "off"
    # Server-side only: sent to the token endpoint, never logged, never in a response.
    mirage_api_key: SecretStr | None = None
    mirage_api_url: str = Field("https://api.decart.ai", description="token endpoint base: POST <url>/v1/client/tokens")
    mirage_realtime_url: str = Field("wss://api3.decart.ai/v1/stream", description="the game's WebSocket signaling")
    mirage_model: str = Field("mirage_v2", min_length=1, max_length=128)
    mirage_token_ttl_s: int = Field(60, ge=1, le=3600, description="client token lifetime (the provider allows 1-3600)")
    mirage_timeout_s: float = Field(5.0, gt=0, description="deadline of one call to the token endpoint")
    # Per-player limit on minted tokens (a token bucket, like the others): each one can open a paid stream.
    hosted_tokens_per_minute: float = Field(6.0, gt=0)
    hosted_tokens_burst: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check_hosted(self) -> "GatewaySettings":
        if self.hosted_diffusion == "mirage":
            if self.mirage_api_key is None or not self.mirage_api_key.get_secret_value().strip():
                raise ValueError("SD_GATEWAY_HOSTED_DIFFUSION=mirage needs SD_GATEWAY_MIRAGE_API_KEY")
            for name, schemes in (("mirage_api_url", ("http", "https")), ("mirage_realtime_url", ("ws", "wss"))):
                parts = urlsplit(getattr(self, name))
                if parts.scheme not in schemes or not parts.netloc:
                    raise ValueError(f"SD_GATEWAY_{name.upper()} must be a {' or '.join(schemes)} URL")
        return self

    # The ingest's gRPC (host:port), which keeps the rewards ledger and the linked wallets: the game's
    # /v1/wallet*, /v1/players/me/contributions, /v1/leaderboard and session outcome endpoints call it.
    # Unset: those endpoints answer 503.
    ingest_target: str | None = None
    ingest_timeout_s: float = Field(5.0, gt=0, description="deadline of one call to the ingest")
    # Sign-In With Solana (docs/wallets.md): what the challenge message names and the link checks. The
    # domain and URI are where players load the game (the wallet shows the domain and may compare it
    # with the page's origin); the chain id is the cluster the payouts are sent on.
    siws_domain: str = Field("127.0.0.1:8080", min_length=1, max_length=255)
    siws_uri: str = Field("http://127.0.0.1:8080", min_length=1, max_length=512)
    siws_chain_id: str = Field("devnet", min_length=1, max_length=64)
    siws_nonce_ttl_s: int = Field(600, ge=30, le=86400, description="how long a challenge can be signed and sent")
    wallet_challenges_per_minute: float = Field(6.0, gt=0)
    wallet_challenges_burst: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check_siws(self) -> "GatewaySettings":
        now = datetime.now(UTC)
        try:
            build_message(domain=self.siws_domain, address="1" * 32, statement="x", uri=self.siws_uri,
                          chain_id=self.siws_chain_id, nonce="a" * 16, issued_at=now,
                          expiration_time=now + timedelta(seconds=self.siws_nonce_ttl_s))
        except SiwsError as exc:  # the same checks a link applies
            raise ValueError(f"SD_GATEWAY_SIWS_* settings do not make a valid Sign-In With Solana message: {exc}")
        return self

    # Built web game (web/dist) served at /; unset or missing means a page that says how to build it.
    web_dir: Path | None = None

    @field_validator("cors_origins", "csp_connect_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v
