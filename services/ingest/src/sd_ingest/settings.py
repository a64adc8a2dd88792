"""Settings of the ingest service, from `SD_INGEST_*` environment variables."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sd_common.endpoints import parse_targets
from sd_common.settings import ServiceSettings

from sd_ingest.ledger import LedgerConfig
from sd_ingest.pricing import PricingRule


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
    # Sign-In With Solana: a wallet link is refused unless its message names these, as the gateway's
    # SD_GATEWAY_SIWS_* do (the chart sets both from gateway.siws).
    siws_domain: str = Field("127.0.0.1:8080", min_length=1, max_length=255)
    siws_uri: str = Field("http://127.0.0.1:8080", min_length=1, max_length=512)
    siws_chain_id: str = Field("devnet", min_length=1, max_length=64)

    @field_validator("processor_target")
    @classmethod
    def _targets(cls, v: str) -> str:
        parse_targets(v, "processor target")  # raises ValueError naming a bad entry
        return v

    def sqlalchemy_url(self) -> str:
        """The catalog's database URL (SQLite under state_dir unless database_url is set)."""
        return self.database_url or f"sqlite:///{self.state_dir / 'catalog.db'}"


class RewardsSettings(BaseSettings):
    """The contribution ledger's constants, from `SD_INGEST_REWARDS_*` (docs/rewards.md)."""

    model_config = SettingsConfigDict(env_prefix="SD_INGEST_REWARDS_", extra="ignore", frozen=True)

    # Rule segment-v1 (sd_ingest.pricing): base rate and the quality and scarcity constants.
    millipoints_per_s: int = Field(1000, ge=0)
    diffusion_bonus: float = Field(0.5, ge=0)
    clean_floor: float = Field(0.1, ge=0, le=1)
    # JSON object kind → penalty per infraction, merged over the defaults (e.g. {"red_light": 0.3}).
    infraction_penalties: str = ""
    progress_bonus: float = Field(0.25, ge=0)
    progress_rate_full_per_s: float = Field(0.005, gt=0)
    # JSON object class → the share of accepted seconds the dataset wants (follow, straight, turn, lane_change).
    target_shares: str = ""
    scarcity_max: float = Field(3.0, ge=1)
    scarcity_prior_s: float = Field(600.0, ge=0)
    # Per player and UTC day; credits beyond it are recorded with what was cut (0 = no cap).
    daily_cap_millipoints: int = Field(3_600_000, ge=0)
    # Payouts: the token's decimals and how many base units one point is worth (a multiple of 1000, so
    # every millipoint converts exactly).
    token_decimals: int = Field(6, ge=0, le=18)
    base_units_per_point: int = Field(1_000_000, ge=0)
    # Leaderboard labels are a keyed hash of the player id; set a secret so they cannot be guessed back.
    label_secret: str = ""

    @field_validator("base_units_per_point")
    @classmethod
    def _exact(cls, v: int) -> int:
        if v % 1000:
            raise ValueError("base_units_per_point must be a multiple of 1000 (millipoints convert exactly)")
        return v

    def pricing_rule(self) -> PricingRule:
        """The segment-v1 constants these settings give."""
        penalties = dict(PricingRule().penalties)
        penalties.update(_json_map(self.infraction_penalties, "SD_INGEST_REWARDS_INFRACTION_PENALTIES"))
        targets = dict(PricingRule().target_shares)
        targets.update(_json_map(self.target_shares, "SD_INGEST_REWARDS_TARGET_SHARES"))
        return PricingRule(millipoints_per_s=self.millipoints_per_s, diffusion_bonus=self.diffusion_bonus,
                           clean_floor=self.clean_floor, penalties=penalties, progress_bonus=self.progress_bonus,
                           progress_rate_full_per_s=self.progress_rate_full_per_s, target_shares=targets,
                           scarcity_max=self.scarcity_max, scarcity_prior_s=self.scarcity_prior_s)

    def ledger_config(self) -> LedgerConfig:
        """What the ledger needs: the rule, the cap and the token conversion."""
        return LedgerConfig(rule=self.pricing_rule(), daily_cap_millipoints=self.daily_cap_millipoints,
                            token_decimals=self.token_decimals, base_units_per_point=self.base_units_per_point)


def _json_map(text: str, name: str) -> dict[str, float]:
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        return {str(k): float(v) for k, v in doc.items()}
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a JSON object of names to numbers: {exc}") from None
