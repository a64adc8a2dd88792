"""Settings of the processor service, from `SD_PROCESSOR_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from sd_common.settings import ServiceSettings

from .config import ProcessorConfig, package_version


class ProcessorSettings(ServiceSettings):
    """Listening address, logging, concurrency, and the processing configuration (see config.py)."""

    model_config = SettingsConfigDict(env_prefix="SD_PROCESSOR_", extra="ignore", frozen=True)

    grpc_port: int = Field(50053, ge=0, le=65535)
    # Written into every segments.json as processor_version; the chart sets the image tag. The catalog
    # records it per session, so a corpus reprocessing can select what one release processed.
    version: str = Field(default_factory=package_version, min_length=1, max_length=128)
    max_concurrent_sessions: int = Field(1, ge=1, le=64, description="sessions processed at once; more wait")
    work_dir: Path | None = Field(None, description="where sessions fetched from S3 are copied (default: system temp)")
    output_width: int = Field(256, ge=16, le=4096)
    output_height: int = Field(256, ge=16, le=4096)
    output_fov_deg: float | None = Field(None, gt=0, lt=180, description="None: the largest undistorted crop")
    jpeg_quality: int = Field(90, ge=1, le=100)
    segment_s: float = Field(5.0, gt=0)
    min_segment_s: float = Field(2.0, gt=0)
    max_gap_frames: int = Field(2, ge=0)
    max_gap_ms: float = Field(250.0, gt=0)
    label_controls: Literal["shown", "rendered"] = Field(
        "shown", description="controls that label a picture: applied while it was shown, or at its render")
    # Clean thresholds by name (config.CleanConfig), as JSON: SD_PROCESSOR_CLEAN='{"blur_ratio": 0.3}'.
    clean: dict[str, float] = Field(default_factory=dict)

    def processing_config(self) -> ProcessorConfig:
        """The ProcessorConfig these settings describe; raises ValueError naming a bad value."""
        return ProcessorConfig(
            output_width=self.output_width, output_height=self.output_height, output_fov_deg=self.output_fov_deg,
            jpeg_quality=self.jpeg_quality, segment_s=self.segment_s, min_segment_s=self.min_segment_s,
            max_gap_frames=self.max_gap_frames, max_gap_ms=self.max_gap_ms, label_controls=self.label_controls,
        ).with_clean(**self.clean)
