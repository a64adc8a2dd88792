"""Reading what the processor wrote under ``processed/<session_id>/`` (the processor's output contract).

``segments.json`` describes every segment; each accepted one has ``route_<session>_<nnn>/rgb_front/*.jpg``
and ``measurements.json``; ``_SUCCESS.json`` ``{attempt_id, finished_at, segments_accepted}`` is
written last, so its presence with our attempt id means the output of that attempt is whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sd_common.objectstore import ObjectNotFound, ObjectStore

from sd_ingest.catalog import SegmentRecord
from sd_ingest.replays import FrameHash, SessionFingerprints, parse_hash
from sd_common.processed_format import (MEASUREMENTS_NAME, SEGMENTS_NAME, SUCCESS_NAME, ProcessedFormatError,
                                        SegmentsDocument, parse)

MAX_META_BYTES = 64 * 1024 * 1024


class OutputInvalid(Exception):
    """The processor's output is missing or does not follow its contract."""


@dataclass(frozen=True)
class ProcessedOutput:
    """segments.json, parsed."""

    session_id: str
    player_id: str
    attempt_id: str
    source: dict[str, Any]
    crop: dict[str, Any]
    output: dict[str, Any]
    intrinsics: dict[str, Any]
    segments: list[SegmentRecord]
    fingerprints: SessionFingerprints | None = None  # what the replay check compares
    processor_version: str = ""  # the processor release that wrote it


async def read_json(store: ObjectStore, key: str, max_bytes: int = MAX_META_BYTES) -> Any | None:
    """The JSON object under ``key``, or None if there is none."""
    try:
        return json.loads(await store.get_bytes(key, max_bytes=max_bytes))
    except ObjectNotFound:
        return None
    except ValueError as exc:
        raise OutputInvalid(f"{key} is not JSON: {exc}") from exc


async def success_attempt(store: ObjectStore, out_prefix: str) -> str | None:
    """The attempt id in ``_SUCCESS.json``, or None if the processor has not finished any attempt."""
    marker = await read_json(store, out_prefix + SUCCESS_NAME)
    return str(marker.get("attempt_id", "")) if isinstance(marker, dict) else None


async def read_output(store: ObjectStore, out_prefix: str, session_id: str) -> ProcessedOutput:
    """Parses segments.json of a finished session; raises OutputInvalid naming what is wrong."""
    key = out_prefix + SEGMENTS_NAME
    raw = await read_json(store, key)
    if not isinstance(raw, dict):
        raise OutputInvalid(f"{key} is missing or not a JSON object")
    try:
        doc = parse(SegmentsDocument, raw, key)
    except ProcessedFormatError as exc:
        raise OutputInvalid(str(exc)) from None
    if doc.session_id != session_id:
        raise OutputInvalid(f"{key}: session_id {doc.session_id!r} is not {session_id!r}")
    player = doc.player_id or ""
    segments = [SegmentRecord(
        segment_id=seg.segment_id, session_id=session_id, player_id=player, index=seg.index,
        accepted=seg.accepted, reasons=list(seg.reasons), frames=seg.frames, duration_s=seg.duration_s,
        t_start_ms=seg.t_start_ms, t_end_ms=seg.t_end_ms, distance_m=seg.distance_m,
        mean_speed_mps=seg.mean_speed_mps, command_counts=dict(seg.command_counts),
        uri=f"{out_prefix}{seg.segment_id}/", infractions=dict(seg.infractions),
        diffusion_frames=seg.diffusion_frames, route_progress_start=seg.route_progress_start,
        route_progress_end=seg.route_progress_end) for seg in doc.segments]
    return ProcessedOutput(
        session_id=session_id, player_id=player, attempt_id=doc.attempt_id, source=dict(doc.source or {}),
        crop=dict(doc.crop or {}), output=dict(doc.output or {}), intrinsics=dict(doc.intrinsics or {}),
        segments=segments, fingerprints=SessionFingerprints(
            log_fingerprint=doc.log_fingerprint,
            frames={seg.segment_id: [FrameHash(t, parse_hash(h)) for t, h in zip(seg.frame_hash_t_ms, seg.frame_hashes)]
                    for seg in doc.segments}),
        processor_version=doc.processor_version)


async def read_measurements(store: ObjectStore, segment_uri: str) -> list[dict[str, Any]]:
    """The per-frame measurements of an accepted segment."""
    key = segment_uri + MEASUREMENTS_NAME
    doc = await read_json(store, key)
    if not isinstance(doc, list):
        raise OutputInvalid(f"{key} is missing or not a JSON list")
    return doc
