"""Settings of the evaluator service, from `SD_EVALUATOR_*` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class EvaluatorSettings(ServiceSettings):
    """Listening address and logging of the evaluator service."""

    model_config = SettingsConfigDict(env_prefix="SD_EVALUATOR_", extra="ignore", frozen=True)

    grpc_port: int = Field(50056, ge=0, le=65535)
