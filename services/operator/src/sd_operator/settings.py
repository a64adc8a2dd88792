"""Settings of the operator, from `SD_OPERATOR_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sd_common.settings import ServiceSettings


def _words(value: str) -> list[str]:
    return [w.strip() for w in value.split(",") if w.strip()]


class OperatorSettings(ServiceSettings):
    """Where the operator watches, what its Jobs run, and how it waits and retries."""

    model_config = SettingsConfigDict(env_prefix="SD_OPERATOR_", extra="ignore", frozen=True)

    grpc_port: int = Field(50057, ge=0, le=65535)
    # Namespaces watched, comma-separated; empty: the whole cluster (needs the ClusterRole).
    namespaces: str = ""
    # The trainer's image and the ConfigMap holding its settings (SD_TRAINER_*, SD_STORE_*).
    trainer_image: str = "scale-diffusion/trainer:0.1.0"
    trainer_config_map: str = ""
    # The evaluator's image and ConfigMap, for Evaluation Jobs.
    evaluator_image: str = "scale-diffusion/evaluator:0.1.0"
    evaluator_config_map: str = ""
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: str = Field("", description="comma-separated Secret names")
    # Service account of the training and evaluation pods ("" = the namespace's default).
    job_service_account: str = ""
    # AWS keys of the object store, read from this Secret into the Job's env ("" = IRSA or none).
    aws_secret: str = ""
    aws_access_key_id_key: str = "AWS_ACCESS_KEY_ID"
    aws_secret_access_key_key: str = "AWS_SECRET_ACCESS_KEY"
    # Numeric user the images create; pods run as it with a read-only root filesystem.
    run_as_user: int = Field(10001, ge=1)
    # Writable scratch of a training pod (/tmp: the dataset cache and the run's files) and its /dev/shm.
    scratch_size: str = "50Gi"
    shm_size: str = "8Gi"
    # How often a run or evaluation that is not finished is compared with its Job.
    reconcile_interval_s: float = Field(10.0, gt=0)
    # Delay before attempt n+1 of a failed run: retry_backoff_s * 2**n, at most retry_backoff_max_s.
    retry_backoff_s: float = Field(30.0, ge=0)
    retry_backoff_max_s: float = Field(600.0, ge=0)
    # torchrun's c10d rendezvous port on the first pod of a multi-node Job.
    rendezvous_port: int = Field(29400, ge=1, le=65535)

    def namespace_list(self) -> list[str]:
        """The watched namespaces (empty: cluster-wide)."""
        return _words(self.namespaces)

    def pull_secrets(self) -> list[str]:
        """Names of the image pull Secrets of every Job."""
        return _words(self.image_pull_secrets)
