"""Settings of the trainer service, from `SD_TRAINER_*` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Listening address and logging of the trainer service."""

    model_config = SettingsConfigDict(env_prefix="SD_TRAINER_", extra="ignore", frozen=True)

    grpc_port: int = Field(50055, ge=0, le=65535)
