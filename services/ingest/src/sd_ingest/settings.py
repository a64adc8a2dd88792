"""Settings of the ingest service, from `SD_INGEST_*` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Listening address and logging of the ingest service."""

    model_config = SettingsConfigDict(env_prefix="SD_INGEST_", extra="ignore", frozen=True)

    grpc_port: int = Field(50052, ge=0, le=65535)
