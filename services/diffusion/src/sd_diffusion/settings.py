"""Settings of the diffusion service, from `SD_DIFFUSION_*` environment variables."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from sd_common.settings import ServiceSettings


class DiffusionSettings(ServiceSettings):
    """Listening address and logging of the diffusion service."""

    model_config = SettingsConfigDict(env_prefix="SD_DIFFUSION_", extra="ignore", frozen=True)

    grpc_port: int = Field(50054, ge=0, le=65535)
