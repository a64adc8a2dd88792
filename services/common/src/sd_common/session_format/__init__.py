"""Raw session format v1: the spec as types, the frame-index barcode, a validator and a generator.

The prose spec is docs/session-format.md. Importing this package needs only pydantic; the barcode
needs NumPy, and the validator's deep check, the generator and the video helpers need the ``media``
extra (PyAV, OpenCV).
"""

from .spec import (
    BARCODE_CELLS,
    BARCODE_DATA_BITS,
    EVENTS_NAME,
    FRAMES_NAME,
    LATENCY_NAME,
    MANIFEST_MAX_BYTES,
    MANIFEST_NAME,
    MAX_FRAME_ID,
    REQUIRED_FILES,
    SCHEMA_VERSION,
    VIDEO_NAME,
    FileEntry,
    FrameRecord,
    InputEvent,
    LatencyProbe,
    Manifest,
    RoadOption,
    file_sha256,
    iter_records,
    parse_manifest,
)

__all__ = [
    "BARCODE_CELLS",
    "BARCODE_DATA_BITS",
    "EVENTS_NAME",
    "FRAMES_NAME",
    "LATENCY_NAME",
    "MANIFEST_MAX_BYTES",
    "MANIFEST_NAME",
    "MAX_FRAME_ID",
    "REQUIRED_FILES",
    "SCHEMA_VERSION",
    "VIDEO_NAME",
    "FileEntry",
    "FrameRecord",
    "InputEvent",
    "LatencyProbe",
    "Manifest",
    "RoadOption",
    "file_sha256",
    "iter_records",
    "parse_manifest",
]
