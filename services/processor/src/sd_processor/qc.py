"""QC: every dropped frame and every segment with its reasons, and the documents that describe a run.

``qc_report.json`` counts frames and segments per reason and lists each dropped frame;
``segments.json`` describes every segment (accepted or not), the crop and the output camera;
``_SUCCESS.json`` is written last. docs/dataset-format.md is the prose form of these documents.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sd_common.problems import Problem
from sd_common.session_format.spec import INFRACTION_KINDS

from .align import AlignmentSummary
from .clean import Candidate
from .framelog import FrameLog
from .geometry import CropPlan
from .splice import Segment
from sd_common.processed_format import SCHEMA_VERSION as PROCESSED_SCHEMA_VERSION
from sd_common.processed_format import SegmentEntry, SegmentsDocument, SuccessMarker

R_SEGMENT_REJECTED = "segment_rejected"
R_NOT_IN_VIDEO = "not_in_video"


@dataclass
class SegmentRecord:
    """One segment as segments.json and the QC report describe it."""

    segment_id: str
    index: int
    accepted: bool
    reasons: list[str]
    frames: int
    duration_s: float
    t_start_ms: float
    t_end_ms: float
    distance_m: float
    mean_speed_mps: float
    command_counts: dict[str, int]
    holes: int
    frame_ids: list[int]
    pts_ms: list[int]
    pictured_frame_ids: list[int] = field(default_factory=list)
    display_latency_ms: list[float] = field(default_factory=list)
    infractions: dict[str, int] = field(default_factory=dict)
    diffusion_frames: int = 0
    route_progress_start: float = 0.0
    route_progress_end: float = 0.0
    frame_hashes: list[str] = field(default_factory=list)
    frame_hash_t_ms: list[int] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The segments.json entry."""
        return SegmentEntry(
            segment_id=self.segment_id, index=self.index, accepted=self.accepted, reasons=self.reasons,
            frames=self.frames, duration_s=round(self.duration_s, 3), t_start_ms=round(self.t_start_ms, 3),
            t_end_ms=round(self.t_end_ms, 3), distance_m=round(self.distance_m, 3),
            mean_speed_mps=round(self.mean_speed_mps, 4), command_counts=self.command_counts,
            infractions=self.infractions, diffusion_frames=self.diffusion_frames,
            route_progress_start=round(self.route_progress_start, 6), route_progress_end=round(self.route_progress_end, 6),
            frame_hashes=self.frame_hashes, frame_hash_t_ms=self.frame_hash_t_ms).model_dump()

    def detail(self) -> dict[str, Any]:
        """The QC report's entry: the public fields plus holes, and the raw frame id and pts of each image."""
        return {**self.public(), "holes": self.holes,
                "good_share": round(self.frames / (self.frames + self.holes), 4) if self.frames else 0.0,
                "frame_ids": self.frame_ids, "pts_ms": self.pts_ms, "pictured_frame_ids": self.pictured_frame_ids,
                "display_latency_ms": _summary(self.display_latency_ms)}


def _summary(values: list[float]) -> dict[str, float] | None:
    """p50, p95 and max of a list of milliseconds (None for an empty one)."""
    if not values:
        return None
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "max": round(float(max(values)), 3)}


def segment_infractions(log: FrameLog, pictured_lines: list[int]) -> dict[str, int]:
    """Infractions by kind logged on the states a segment's pictures show, from its first to its last.

    Every line in between counts once, so an infraction on a frame dropped inside the segment (a hole)
    or on a render the diffusion view never showed is not lost; a state shown on several frames in a
    row counts once.
    """
    if not pictured_lines or not log.infractions:
        return {}
    lo, hi = min(pictured_lines), max(pictured_lines)
    counts = Counter(kind for i, kinds in log.infractions.items() if lo <= i <= hi for kind in kinds)
    return {kind: counts[kind] for kind in INFRACTION_KINDS if counts[kind]}


def describe_segment(segment_id: str, seg: Segment, log: FrameLog, reasons: list[str]) -> SegmentRecord:
    """The record of a closed segment: the distance, speed, commands, route progress and infractions of the
    states its pictures show."""
    shown = np.asarray(seg.lines, dtype=np.int64)
    idx = np.asarray(seg.pictured_lines, dtype=np.int64)
    x, y = log.col("x_m")[idx], log.col("y_m")[idx]
    commands = Counter(str(int(c)) for c in log.command[idx])
    progress = log.col("route_progress")[idx]
    return SegmentRecord(
        segment_id=segment_id, index=seg.index, accepted=not reasons, reasons=reasons, frames=len(idx),
        duration_s=seg.duration_s, t_start_ms=float(seg.t_start_ms), t_end_ms=float(seg.t_end_ms),
        distance_m=float(np.hypot(np.diff(x), np.diff(y)).sum()),
        mean_speed_mps=float(log.col("speed_mps")[idx].mean()),
        command_counts=dict(sorted(commands.items(), key=lambda kv: int(kv[0]))),
        holes=seg.holes, frame_ids=[int(f) for f in log.frame_id[shown]],
        pts_ms=[int(c.frame.pts_ms) for c in seg.frames],
        pictured_frame_ids=[int(f) for f in log.frame_id[idx]],
        display_latency_ms=(log.col("t_capture_ms")[shown] - log.col("t_render_ms")[idx]).tolist(),
        infractions=segment_infractions(log, seg.pictured_lines),
        diffusion_frames=sum(1 for c in seg.frames if c.diffusion_picture),
        route_progress_start=float(progress[0]), route_progress_end=float(progress[-1]),
        frame_hashes=list(seg.frame_hashes), frame_hash_t_ms=list(seg.frame_hash_t_ms))


@dataclass
class QcReport:
    """Accumulates what happened to every frame and segment of one run."""

    session_id: str
    attempt_id: str
    decoded: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_frames: list[dict[str, Any]] = field(default_factory=list)
    segments: list[SegmentRecord] = field(default_factory=list)
    alignment: AlignmentSummary | None = None
    problems: list[Problem] = field(default_factory=list)
    rejected: bool = False

    def drop(self, cand: Candidate, log: FrameLog | None, reasons: list[str]) -> None:
        """Records a decoded frame that is not exported."""
        entry: dict[str, Any]
        if cand.line is not None and log is not None:
            entry = {"frame_id": int(log.frame_id[cand.line])}
        else:
            entry = {"video_index": cand.frame.index}
        entry["pts_ms"] = cand.frame.pts_ms
        entry["reasons"] = list(dict.fromkeys(reasons))
        self.dropped_frames.append(entry)
        self.dropped.update(entry["reasons"])

    def missing(self, frame_id: int, reason: str) -> None:
        """Records a logged frame that no decoded frame showed."""
        self.dropped_frames.append({"frame_id": frame_id, "pts_ms": None, "reasons": [reason]})
        self.dropped[reason] += 1

    @property
    def segments_accepted(self) -> int:
        """Segments exported."""
        return sum(1 for s in self.segments if s.accepted)

    def report(self) -> dict[str, Any]:
        """The qc_report.json document."""
        rejected = Counter(r for s in self.segments if not s.accepted for r in s.reasons)
        align = self.alignment.to_dict() if self.alignment else {"mode": None, "frames_paired": 0,
                                                                   "estimated_error_ms": None}
        return {
            "schema_version": PROCESSED_SCHEMA_VERSION,
            "session_id": self.session_id,
            "attempt_id": self.attempt_id,
            "rejected": self.rejected,
            "problems": [p.to_dict() for p in self.problems],
            "alignment": align,
            "frames": {"decoded": self.decoded, "kept": self.kept, "dropped": dict(sorted(self.dropped.items()))},
            "segments": {"accepted": self.segments_accepted, "rejected": dict(sorted(rejected.items()))},
            "dropped_frames": self.dropped_frames,
            "segment_details": [s.detail() for s in self.segments],
        }


def segments_document(*, session_id: str, player_id: str | None, attempt_id: str, plan: CropPlan | None,
                      segments: list[SegmentRecord], config: dict[str, Any],
                      mount: dict[str, float] | None = None, log_fingerprint: str = "",
                      processor_version: str = "") -> dict[str, Any]:
    """The segments.json document."""
    return SegmentsDocument(
        session_id=session_id, player_id=player_id, attempt_id=attempt_id,
        source={"width": plan.source_width, "height": plan.source_height} if plan else None,
        crop=plan.crop_dict() if plan else None,
        output={"width": plan.output_width, "height": plan.output_height} if plan else None,
        intrinsics=plan.output.to_dict() if plan else None, mount=mount,
        segments=[SegmentEntry(**s.public()) for s in segments], config=config,
        log_fingerprint=log_fingerprint, processor_version=processor_version).model_dump(mode="json")


def success_document(attempt_id: str, segments_accepted: int) -> dict[str, Any]:
    """The _SUCCESS.json document."""
    return SuccessMarker(attempt_id=attempt_id, finished_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                         segments_accepted=segments_accepted).model_dump()
