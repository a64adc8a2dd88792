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

SEGMENTS_NAME = "segments.json"
QC_REPORT_NAME = "qc_report.json"
SUCCESS_NAME = "_SUCCESS.json"
MEASUREMENTS_NAME = "measurements.json"
RGB_DIR = "rgb_front"
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


async def read_json(store: ObjectStore, key: str, max_bytes: int = MAX_META_BYTES) -> Any | None:
    """The JSON object under ``key``, or None if there is none."""
    if await store.head(key) is None:
        return None
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


def _number(seg: dict, name: str, where: str, kind: type = float) -> Any:
    value = seg.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OutputInvalid(f"{where}.{name} should be a number, got {value!r}")
    return kind(value)


async def read_output(store: ObjectStore, out_prefix: str, session_id: str) -> ProcessedOutput:
    """Parses segments.json of a finished session; raises OutputInvalid naming what is wrong."""
    key = out_prefix + SEGMENTS_NAME
    doc = await read_json(store, key)
    if not isinstance(doc, dict):
        raise OutputInvalid(f"{key} is missing or not a JSON object")
    if doc.get("schema_version") != 1:
        raise OutputInvalid(f"{key}: schema_version {doc.get('schema_version')!r} is not 1")
    if doc.get("session_id") != session_id:
        raise OutputInvalid(f"{key}: session_id {doc.get('session_id')!r} is not {session_id!r}")
    player = str(doc.get("player_id", ""))
    raw_segments = doc.get("segments")
    if not isinstance(raw_segments, list):
        raise OutputInvalid(f"{key}: 'segments' should be a list")
    segments = []
    for i, seg in enumerate(raw_segments):
        where = f"{key}:segments[{i}]"
        if not isinstance(seg, dict) or not isinstance(seg.get("segment_id"), str):
            raise OutputInvalid(f"{where} has no segment_id")
        counts = seg.get("command_counts") or {}
        if not isinstance(counts, dict):
            raise OutputInvalid(f"{where}.command_counts should be an object")
        segments.append(SegmentRecord(
            segment_id=seg["segment_id"], session_id=session_id, player_id=player,
            index=_number(seg, "index", where, int), accepted=bool(seg.get("accepted", False)),
            reasons=[str(r) for r in seg.get("reasons", [])], frames=_number(seg, "frames", where, int),
            duration_s=_number(seg, "duration_s", where), t_start_ms=_number(seg, "t_start_ms", where),
            t_end_ms=_number(seg, "t_end_ms", where), distance_m=_number(seg, "distance_m", where),
            mean_speed_mps=_number(seg, "mean_speed_mps", where),
            command_counts={str(k): int(v) for k, v in counts.items()},
            uri=f"{out_prefix}{seg['segment_id']}/"))
    return ProcessedOutput(
        session_id=session_id, player_id=player, attempt_id=str(doc.get("attempt_id", "")),
        source=dict(doc.get("source") or {}), crop=dict(doc.get("crop") or {}),
        output=dict(doc.get("output") or {}), intrinsics=dict(doc.get("intrinsics") or {}), segments=segments)


async def read_measurements(store: ObjectStore, segment_uri: str) -> list[dict[str, Any]]:
    """The per-frame measurements of an accepted segment."""
    key = segment_uri + MEASUREMENTS_NAME
    doc = await read_json(store, key)
    if not isinstance(doc, list):
        raise OutputInvalid(f"{key} is missing or not a JSON list")
    return doc
