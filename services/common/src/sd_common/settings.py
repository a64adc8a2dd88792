"""Typed settings read once from environment variables; defaults are the embedded local stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service reads: where it listens, how it logs, how long it drains on shutdown.

    Each service subclasses this with its own prefix (``SD_GATEWAY_`` …) and default ports, so the
    six services can run side by side on loopback with no configuration at all.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics; 0 picks a free port")
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_grace_s: float = Field(10.0, ge=0)


class StoreSettings(BaseSettings):
    """The object store, shared by every service that reads or writes session files (``SD_STORE_``)."""

    model_config = SettingsConfigDict(env_prefix="SD_STORE_", extra="ignore", frozen=True)

    backend: Literal["local", "s3"] = "local"
    # local: files under root; upload URLs point at the gateway and are HMAC-signed with signing_key
    root: Path = Path(".run/store")
    signing_key: SecretStr | None = Field(
        None, description="HMAC key for local upload URLs; generated and kept under root if unset"
    )
    public_base_url: str = Field("http://127.0.0.1:8080", description="gateway URL that serves local uploads")
    # s3
    bucket: str = "scale-diffusion-raw"
    endpoint_url: str | None = None
    region: str = "us-east-1"
    queue_url: str | None = Field(None, description="SQS queue receiving the bucket's object-created events")
    notify_prefix: str = Field("raw/", description="only objects under this prefix announce themselves "
                               "(the local store's equivalent of an S3 notification prefix filter)")
    # both
    url_expiry_s: int = Field(900, ge=1, le=7 * 24 * 3600)
    multipart_threshold_bytes: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)
    multipart_part_bytes: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024)
    max_object_bytes: int = Field(2 * 1024**3, ge=1)
