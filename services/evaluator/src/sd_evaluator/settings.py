"""Settings of the evaluator service, from `SD_EVALUATOR_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class EvaluatorSettings(ServiceSettings):
    """Where the evaluator listens, how it launches evaluations, and where it keeps them."""

    model_config = SettingsConfigDict(env_prefix="SD_EVALUATOR_", extra="ignore", frozen=True)

    grpc_port: int = Field(50056, ge=0, le=65535)
    # subprocess: an evaluation is a child process of this service (the embedded stack); kubernetes: an
    # Evaluation resource that the operator runs as a Job beside a CARLA server (docs/operator.md).
    launcher: Literal["subprocess", "kubernetes"] = "subprocess"
    # subprocess launcher: records (<state_dir>/records/<id>.json) and each evaluation's files
    # (<state_dir>/evaluations/<id>/, the evaluation process's --out).
    state_dir: Path = Path(".run/evaluator")
    # Evaluations at once (each drives a browser or a simulator); more wait as PENDING, in order.
    max_concurrent_evaluations: int = Field(1, ge=1, le=64)
    # Cancel and shutdown: SIGTERM, then SIGKILL after this long (the process stops between two steps).
    stop_grace_s: float = Field(10.0, ge=0)
    # An evaluation whose process was gone after a restart of this service starts again from its first
    # route at most this many times, then is recorded as failed.
    max_restarts: int = Field(1, ge=0, le=100)
    # The CARLA server the subprocess launcher's leaderboard runs talk to.
    carla_host: str = "127.0.0.1"
    carla_port: int = Field(2000, ge=1, le=65535)
    # kubernetes launcher: the namespace of the Evaluation resources, the API server ("" = the in-cluster
    # service account, or ~/.kube/config outside a cluster) and the CARLA image each Job runs.
    namespace: str = "default"
    kube_api_url: str = ""
    carla_image: str = "carlasim/carla:0.9.16"
