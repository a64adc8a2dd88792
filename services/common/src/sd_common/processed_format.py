"""The processor's output contract (docs/dataset-format.md): one model for its writer and its readers.

The processor writes these documents under `processed/<session_id>/`; the ingest reads them to
register segments and build dataset versions. Within schema version 1 fields are only added, so
readers ignore fields they do not know.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = 1
SEGMENTS_NAME = "segments.json"
QC_REPORT_NAME = "qc_report.json"
SUCCESS_NAME = "_SUCCESS.json"
MEASUREMENTS_NAME = "measurements.json"
RGB_DIR = "rgb_front"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SegmentEntry(_Doc):
    """One segment of a session, accepted (exported) or rejected with its reasons."""

    segment_id: str = Field(pattern=r"^route_[A-Za-z0-9._-]+_\d{3,}$")
    index: int = Field(ge=0)
    accepted: bool
    reasons: list[str] = []
    frames: int = Field(ge=0)
    duration_s: float = Field(ge=0)
    t_start_ms: float
    t_end_ms: float
    distance_m: float = Field(ge=0)
    mean_speed_mps: float
    command_counts: dict[str, int] = {}
    # The pricing facts (docs/dataset-format.md §4); absent, as their defaults, in older documents.
    infractions: dict[str, int] = {}  # kind (session format INFRACTION_KINDS) -> count on the pictured states
    diffusion_frames: int = Field(default=0, ge=0)  # frames whose picture is the diffusion view's
    route_progress_start: float = Field(default=0.0, ge=0, le=1)  # route.progress of the first pictured state
    route_progress_end: float = Field(default=0.0, ge=0, le=1)  # ... and of the last
    # 64-bit perceptual hashes (16 hex digits) of sampled pictures, and each one's video pts, in order
    frame_hashes: list[Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]] = []
    frame_hash_t_ms: list[int] = []

    @model_validator(mode="after")
    def _hashes_have_times(self) -> SegmentEntry:
        if len(self.frame_hashes) != len(self.frame_hash_t_ms):
            raise ValueError(f"frame_hashes has {len(self.frame_hashes)} entries but frame_hash_t_ms "
                             f"{len(self.frame_hash_t_ms)}")
        return self


class SegmentsDocument(_Doc):
    """segments.json: the session's segments, the crop, the output camera's intrinsics and the camera mount."""

    schema_version: Literal[1] = SCHEMA_VERSION
    session_id: str | None  # None only for a rejected session whose manifest named none
    player_id: str | None = None
    attempt_id: str
    source: dict[str, Any] | None = None
    crop: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    intrinsics: dict[str, Any] | None = None
    # The recording camera's pose on the car (x_m, y_m, z_m, pitch_deg, yaw_deg, roll_deg); absent in
    # documents written before it was recorded.
    mount: dict[str, float] | None = None
    segments: list[SegmentEntry]
    config: dict[str, Any] = {}
    # SHA-256 of the session's input events, normalized so that a re-upload under another session id
    # or with shifted clocks hashes the same (docs/dataset-format.md §4); "" when too few to tell.
    log_fingerprint: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    # The processor release that wrote the document (its image tag in a cluster); "" in documents
    # written before it was recorded. The catalog keeps it per session, to select sessions to reprocess.
    processor_version: str = Field(default="", max_length=128)


class SuccessMarker(_Doc):
    """_SUCCESS.json, written last: the attempt whose outputs are complete."""

    attempt_id: str
    finished_at: str
    segments_accepted: int = Field(ge=0)


class ProcessedFormatError(ValueError):
    """A document does not follow the contract; the message names the document and the field."""


def parse(model: type[_Doc], data: bytes | str | dict, where: str) -> Any:
    """Validates a document against `model`; ProcessedFormatError names `where` and each bad field."""
    try:
        if isinstance(data, dict):
            return model.model_validate(data)
        return model.model_validate_json(data)
    except ValidationError as e:
        fields = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(document)'}: {err['msg']}"
                           for err in e.errors()[:10])
        raise ProcessedFormatError(f"{where}: {fields}") from None


def listing_digest(prefix: str, objects: Iterable[Any]) -> str:
    """A segment's `files_sha256` (docs/datasets.md): SHA-256 over one `<key relative to prefix>\\t<size>\\t<ETag>\\n`
    line per object (ObjectInfo-like: key, size_bytes, etag), in key order."""
    digest = hashlib.sha256()
    for info in sorted(objects, key=lambda o: o.key):
        digest.update(f"{info.key[len(prefix):]}\t{info.size_bytes}\t{info.etag}\n".encode())
    return digest.hexdigest()
