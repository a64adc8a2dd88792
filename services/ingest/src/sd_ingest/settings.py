"""Settings of the ingest service, from `SD_INGEST_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict
from sd_common.endpoints import parse_targets
from sd_common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Where the ingest listens, its catalog, its processor, and how hard it retries."""

    model_config = SettingsConfigDict(env_prefix="SD_INGEST_", extra="ignore", frozen=True)

    grpc_port: int = Field(50052, ge=0, le=65535)
    state_dir: Path = Path(".run/ingest")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in state_dir")
    # The processors' gRPC, comma-separated: host:port (one pod) or dns:///name:port (each address of a
    # headless Service is a pod, resolved again every processor_resolve_every_s); sessions are spread
    # over the pods (dispatch.py). Empty means sessions wait in VALIDATED until one is configured.
    processor_target: str = "127.0.0.1:50053"
    processor_resolve_every_s: float = Field(10.0, gt=0)
    # Sessions this replica has on one processor pod at once (match SD_PROCESSOR_MAX_CONCURRENT_SESSIONS).
    processor_slots_per_pod: int = Field(1, ge=1, le=64)
    # Sessions processed at once by this replica over all pods (each is one ProcessSession stream).
    concurrency: int = Field(2, ge=1, le=256)
    # Deep validations (video decoding) at once: CPU-bound, so few.
    validation_concurrency: int = Field(1, ge=1, le=64)
    # Dispatches of one session before it is FAILED (a killed processor or an expired lease is one).
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles per attempt")
    retry_backoff_max_s: float = Field(300.0, ge=0)
    # A processor stream that sends nothing for this long is cancelled and retried.
    dispatch_idle_timeout_s: float = Field(300.0, gt=0)
    dispatch_timeout_s: float = Field(3600.0, gt=0, description="whole ProcessSession call")
    # How long a replica owns a session it works on without renewing; renewed every third of it.
    lease_s: float = Field(60.0, gt=0)
    # Event queue: long polling, visibility timeout, and dead-lettering of messages that keep failing.
    receive_wait_s: float = Field(10.0, ge=0, le=20)
    receive_batch: int = Field(10, ge=1, le=10)
    visibility_timeout_s: float = Field(60.0, gt=0, description="SQS rounds up to whole seconds")
    dead_letter_after_receives: int = Field(5, ge=1, description="receives of a failing message before it is set aside")
    # Catalog scan for work (a nudge from the event consumer wakes it sooner).
    scan_interval_s: float = Field(2.0, gt=0)
    # Store prefixes the ingest watches and writes.
    raw_prefix: str = "raw/"
    processed_prefix: str = "processed/"
    datasets_prefix: str = "datasets/"
    # In a cluster with the operator: announce every dataset version as a DatasetVersion resource
    # (docs/operator.md), in this namespace ("" = the pod's own), with this policy (JSON of spec.policy,
    # e.g. {"train": {"enabled": true}}; "" = none).
    dataset_version_resources: bool = False
    dataset_version_namespace: str = ""
    dataset_version_policy: str = ""

    @field_validator("processor_target")
    @classmethod
    def _targets(cls, v: str) -> str:
        parse_targets(v, "processor target")  # raises ValueError naming a bad entry
        return v

    def sqlalchemy_url(self) -> str:
        """The catalog's database URL (SQLite under state_dir unless database_url is set)."""
        return self.database_url or f"sqlite:///{self.state_dir / 'catalog.db'}"
