"""Settings of the processor service, from `SD_PROCESSOR_*` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class ProcessorSettings(ServiceSettings):
    """Listening address and logging of the processor service."""

    model_config = SettingsConfigDict(env_prefix="SD_PROCESSOR_", extra="ignore", frozen=True)

    grpc_port: int = Field(50053, ge=0, le=65535)
