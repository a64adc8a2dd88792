"""Settings of the trainer service, from `SD_TRAINER_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Where the trainer listens, how it launches training runs, and where it keeps them."""

    model_config = SettingsConfigDict(env_prefix="SD_TRAINER_", extra="ignore", frozen=True)

    grpc_port: int = Field(50055, ge=0, le=65535)
    # subprocess: a run is a child process of this service (the embedded stack); kubernetes: a run is a
    # TrainingRun resource that the operator turns into a Job (docs/training.md).
    launcher: Literal["subprocess", "kubernetes"] = "subprocess"
    # subprocess launcher: run records (<state_dir>/runs/<run>.json) and each run's files
    # (<state_dir>/training/<run>/, the training process's --out).
    state_dir: Path = Path(".run/trainer")
    # Runs training at once; more wait as PENDING and start in order as others finish.
    max_concurrent_runs: int = Field(1, ge=1, le=64)
    # Cancel and shutdown: SIGTERM, then SIGKILL after this long (the loop checkpoints on SIGTERM).
    stop_grace_s: float = Field(10.0, ge=0)
    # A run whose process was gone after a restart of this service is resumed (the training process
    # continues from its newest checkpoint) at most this many times, then recorded as failed.
    max_resumes: int = Field(3, ge=0, le=100)
    # A folder laid out like the object store to read dataset versions from (the training process's
    # --dataset-root); unset: the object store (SD_STORE_*).
    dataset_root: Path | None = None
    # kubernetes launcher: the namespace of the TrainingRun resources, and the API server ("" = the
    # in-cluster service account, or ~/.kube/config outside a cluster).
    namespace: str = "default"
    kube_api_url: str = ""
