"""One raw session in, CILRS segments and a QC report out: validate, then align, clean, splice and export
in a single streaming pass over the video.

Input problems are of two kinds. A *fatal* problem makes the whole session untrustworthy or unreadable
(the manifest, the file inventory and hashes, the video's container, codec or size, nothing decodable
or alignable): the session is rejected, nothing but the reports is written, and the result says why.
Every other problem is local to some frames (a bad log line, a dropped or repeated video frame, an
unreadable barcode, a truncated tail): those frames are dropped with their reason, the rest is
processed, and the problem is still listed in the result.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sd_common.problems import Problem, ProblemError
from sd_common.session_format.spec import (
    EVENTS_NAME,
    FRAMES_NAME,
    LATENCY_NAME,
    MANIFEST_NAME,
    VIDEO_NAME,
    Manifest,
    parse_manifest,
)
from sd_common.session_format.validate import (
    MAX_CLOCK_DRIFT,
    MAX_CLOCK_DRIFT_MS,
    MAX_CLOCK_OFFSET_MS,
    validate_session,
)

from . import align as al
from .clean import FrameCleaner, segment_reasons
from .config import ProcessorConfig, package_version
from .decode import FrameDecoder, VideoRejected, probe_video, read_barcode_track, truncated_problem
from .export import (
    QC_REPORT_NAME,
    SEGMENTS_NAME,
    SUCCESS_NAME,
    OutputSink,
    encode_jpeg,
    json_bytes,
    route_folder,
    segment_items,
)
from .fingerprint import SegmentSampler, log_fingerprint, picture_hash
from .framelog import FrameLog, apply_latency_probes, read_frame_log
from .geometry import CropError, CropPlan, plan_crop
from .motion import MotionMeter, segment_motion
from .motion import segment_reasons as motion_reasons
from .qc import (
    R_NOT_IN_VIDEO,
    R_SEGMENT_REJECTED,
    QcReport,
    describe_segment,
    segments_document,
    success_document,
)
from .replay import ReplayResult, replay_session
from .splice import Segment, Splicer

# Problems after which nothing of the session is used. Everything else drops frames, not sessions.
_FATAL_PREFIXES = ("manifest_", "file_")
_FATAL_CODES = frozenset({
    "session_not_found", "frames_empty", "frames_unreadable", "events_unreadable", "latency_unreadable",
    "duration_unreadable", "video_unreadable", "video_container_mismatch", "video_no_stream",
    "video_codec_mismatch", "video_resolution_mismatch", "video_empty", "alignment_failed",
    "recording_crop_impossible",
})

STAGE_VALIDATE = "validate"
STAGE_ALIGN = "align"
STAGE_CLEAN = "clean"
STAGE_SPLICE = "splice"
STAGE_EXPORT = "export"
STAGE_DONE = "done"

Progress = Callable[[str, int, int], None]


def is_fatal(code: str) -> bool:
    """Whether a problem with this code rejects the whole session."""
    return code.startswith(_FATAL_PREFIXES) or code in _FATAL_CODES


class Cancelled(Exception):
    """The caller stopped waiting; the run ended without a success marker."""


@dataclass
class ProcessingResult:
    """What one run did; ``rejected`` means nothing of the session was exported and ``problems`` say why."""

    session_id: str | None
    attempt_id: str
    rejected: bool
    problems: list[Problem]
    frames_decoded: int = 0
    frames_kept: int = 0
    segments_accepted: int = 0
    segments_rejected: int = 0
    alignment_mode: str | None = None
    alignment_error_ms: float = 0.0
    elapsed_s: float = 0.0
    keys: dict[str, str] = field(default_factory=dict)  # qc_report, segments, success -> relative key

    @property
    def fatal_problems(self) -> list[Problem]:
        """The problems that rejected the session."""
        return [p for p in self.problems if is_fatal(p.code)]


@dataclass
class _Run:
    session_dir: Path
    sink: OutputSink
    cfg: ProcessorConfig
    attempt_id: str
    progress: Progress
    should_stop: Callable[[], bool]
    started: float = field(default_factory=time.perf_counter)
    manifest: Manifest | None = None
    session_id: str | None = None
    log: FrameLog | None = None
    plan: CropPlan | None = None
    qc: QcReport | None = None
    keys: set[str] = field(default_factory=set)
    replay: ReplayResult | None = None  # the logged states against the logged events (None: rule off)
    log_fingerprint: str = ""  # fingerprint.log_fingerprint of events.jsonl ("" for a rejected session)
    motion: MotionMeter | None = None  # the video's turns between consecutive pictures (None: rule off)
    processor_version: str = ""  # written into segments.json


def process_session(session_dir: Path, sink: OutputSink, *, config: ProcessorConfig | None = None,
                    attempt_id: str = "", expected_session_id: str | None = None,
                    progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                    processor_version: str | None = None) -> ProcessingResult:
    """Processes the raw session in ``session_dir`` (read only) and writes its outputs to ``sink``.

    Bad input never raises: it ends in a result with ``rejected`` and named problems. Raises only
    for the sink's or the file system's own errors, and Cancelled when ``should_stop`` says so.
    """
    run = _Run(Path(session_dir), sink, config or ProcessorConfig(), attempt_id,
               progress or (lambda *_: None), should_stop or (lambda: False))
    run.session_id = expected_session_id
    run.processor_version = processor_version or package_version()
    run.progress(STAGE_VALIDATE, 0, 0)
    sink.begin()
    problems = _validate(run, expected_session_id)
    if any(is_fatal(p.code) for p in problems):
        return _finish(run, problems, rejected=True)
    m = run.manifest
    run.log = read_frame_log(run.session_dir / FRAMES_NAME)
    probes_used = apply_latency_probes(run.log, run.session_dir / LATENCY_NAME)
    run.log_fingerprint = log_fingerprint(run.session_dir / EVENTS_NAME, run.log)
    if run.cfg.replay.enabled:
        run.replay = replay_session(run.session_dir, run.log, run.cfg.replay)
    try:
        run.plan = plan_crop(width=m.recording.width, height=m.recording.height, fx=m.camera.intrinsics.fx,
                             fy=m.camera.intrinsics.fy, cx=m.camera.intrinsics.cx, cy=m.camera.intrinsics.cy,
                             excluded_bottom_rows=m.barcode.cell_px + run.cfg.barcode_margin_px,
                             output_width=run.cfg.output_width, output_height=run.cfg.output_height,
                             fov_deg=run.cfg.output_fov_deg)
    except CropError as exc:
        problems.append(Problem("recording_crop_impossible", f"{MANIFEST_NAME}:camera", str(exc)))
        return _finish(run, problems, rejected=True)
    video = run.session_dir / VIDEO_NAME
    try:
        probe = probe_video(video, expected_size=(m.recording.width, m.recording.height),
                            cell_px=m.barcode.cell_px, probe_frames=run.cfg.probe_frames)
    except VideoRejected as exc:
        problems += exc.problems
        return _finish(run, problems, rejected=True)
    if probe.truncated:
        problems.append(truncated_problem(probe.truncated))
    by_barcode = probe.barcode_share >= run.cfg.min_barcode_share
    if by_barcode:
        aligner = al.FrameIdAligner(run.log)
    else:
        # A first pass reads every frame's barcode: frames that show one keep their line and anchor the
        # pairing by time of the frames between them.
        track = read_barcode_track(video, expected_size=(m.recording.width, m.recording.height),
                                   cell_px=m.barcode.cell_px, threads=run.cfg.decode_threads)
        aligner = al.TimestampAligner(run.log, track, probes_used)
        read = sum(f is not None for f in track.frame_ids)
        problems.append(Problem("video_barcode_unreadable", VIDEO_NAME,
                                f"{VIDEO_NAME}: {probe.barcodes_read} of the first {probe.probed} frames show a "
                                f"readable barcode ({read} of all {len(track.frame_ids)}); frames whose barcode "
                                "reads keep their id, the others were paired with log lines by time between them "
                                "(estimated)"))
    aligner.summary.probes_used = probes_used
    run.progress(STAGE_ALIGN, 0, len(probe.pts_ms))
    problems += _stream(run, probe, aligner, read_barcodes=by_barcode)
    rejected = any(is_fatal(p.code) for p in problems)
    return _finish(run, problems, rejected=rejected)


def _validate(run: _Run, expected_session_id: str | None) -> list[Problem]:
    report = validate_session(run.session_dir, deep=False)
    problems = list(report.problems)
    if not any(p.code.startswith("manifest_") for p in problems):
        try:
            run.manifest = parse_manifest((run.session_dir / MANIFEST_NAME).read_bytes())
        except ProblemError as exc:
            return problems + exc.problems
        run.session_id = run.manifest.session_id
        if expected_session_id is not None and run.manifest.session_id != expected_session_id:
            problems.append(Problem("manifest_session_mismatch", f"{MANIFEST_NAME}:session_id",
                                    f"{MANIFEST_NAME} names session {run.manifest.session_id!a} but "
                                    f"{expected_session_id!a} was asked for"))
    return problems


def _stream(run: _Run, probe, aligner, *, read_barcodes: bool) -> list[Problem]:
    """The single pass: decode, align, clean, splice, export. Returns the frame-local problems found."""
    cfg, log, m = run.cfg, run.log, run.manifest
    run.qc = qc = QcReport(run.session_id, run.attempt_id)
    total = len(probe.pts_ms)
    steps = np.diff(np.asarray(probe.pts_ms, dtype=np.float64))
    steps = steps[steps > 0]
    period_ms = float(np.median(steps)) if len(steps) else 1000.0 / m.recording.fps_target
    decoder = FrameDecoder(run.session_dir / VIDEO_NAME, run.plan, cell_px=m.barcode.cell_px,
                           read_barcodes=read_barcodes, threads=cfg.decode_threads)
    detail = (run.plan.width, run.plan.height) if run.plan.upscales else None  # judge blur at the crop's size
    cleaner = FrameCleaner(log, cfg.clean, detail_size=detail, diffusion=m.diffusion.enabled,
                           plain_from=m.diffusion.plain_from_frame_id)
    splicer = Splicer(segment_s=cfg.segment_s, max_gap_frames=cfg.max_gap_frames, max_gap_ms=cfg.max_gap_ms,
                      period_ms=period_ms)
    paired_lines: set[int] = set()
    align_reasons: Counter = Counter()
    report_every = max(1, total // 50)

    if cfg.motion.enabled:
        run.motion = MotionMeter(run.plan, cfg.motion)

    sampler = SegmentSampler(cfg.frame_hashes_per_s)

    def settle(cands) -> None:
        for cand in cands:
            f = cand.frame
            if run.motion is not None:
                run.motion.push(f.y, cand.pictured)
            if cand.good:
                cand.jpeg = encode_jpeg(f.y, f.u, f.v, cfg.jpeg_quality)
            else:
                qc.drop(cand, log, cand.reasons)
            closed = splicer.add(cand)
            if cand.good and sampler.due(current := splicer.current, f.pts_ms):
                current.frame_hashes.append(picture_hash(f.y))
                current.frame_hash_t_ms.append(int(f.pts_ms))
            f.y = f.u = f.v = f.keep = None  # the picture is no longer needed
            for seg in closed:
                _close_segment(run, seg)

    for frame in decoder.frames():
        qc.decoded += 1
        if frame.pts_ms is None:
            pairing = al.Pairing(None, "no_timestamp")
        else:
            pairing = aligner.pair(frame)
        if pairing.line is not None:
            paired_lines.add(pairing.line)
        if pairing.reason:
            align_reasons[pairing.reason] += 1
        settle(cleaner.push(frame, pairing))
        if qc.decoded % report_every == 0:
            if run.should_stop():
                raise Cancelled(f"processing of {run.session_id} was cancelled")
            run.progress(STAGE_CLEAN, qc.decoded, max(total, qc.decoded))
    settle(cleaner.finish())
    for seg in splicer.finish():
        _close_segment(run, seg)
    run.progress(STAGE_SPLICE, qc.decoded, max(total, qc.decoded))
    summary = aligner.finish()
    qc.alignment = summary
    for i in range(len(log)):
        if log.usable(i) and i not in paired_lines:
            qc.missing(int(log.frame_id[i]), R_NOT_IN_VIDEO)
    return _frame_problems(qc, decoder, summary, align_reasons, log, paired_lines)


def _close_segment(run: _Run, seg: Segment) -> None:
    cfg, log, qc = run.cfg, run.log, run.qc
    reasons = segment_reasons(log, seg.lines, duration_s=seg.duration_s, holes=seg.holes, cfg=cfg.clean,
                              min_segment_s=cfg.min_segment_s)
    if run.replay is not None:  # the states exported are the pictured ones; the frames shown, too
        reasons += run.replay.segment_reasons(seg.lines + seg.pictured_lines)
    if run.motion is not None:
        stats = segment_motion(log, run.motion.take(seg.pictured_lines), cfg.motion.trim_share)
        reasons += motion_reasons(stats, cfg.motion)
    folder = route_folder(run.session_id, seg.index)
    record = describe_segment(folder, seg, log, reasons)
    qc.segments.append(record)
    if record.accepted:
        items = segment_items(folder, log, seg.frames, label=cfg.label_controls)
        run.sink.put_many(items)
        run.keys.update(k for k, _ in items)
        qc.kept += len(seg.frames)
    else:
        for cand in seg.frames:
            qc.drop(cand, log, [R_SEGMENT_REJECTED])
    for cand in seg.frames:
        cand.jpeg = None


def _count(n: int, total: int) -> str:
    return f"{n} of {total} ({n / total:.1%})" if total else str(n)


def _frame_problems(qc: QcReport, decoder: FrameDecoder, summary: al.AlignmentSummary, reasons: Counter,
                    log: FrameLog, paired_lines: set[int]) -> list[Problem]:
    out: list[Problem] = []
    decoded = qc.decoded
    if decoder.decode_errors:
        out.append(Problem("video_undecodable", VIDEO_NAME, f"{VIDEO_NAME}: {len(decoder.decode_errors)} packets "
                           f"the VP8 decoder rejects were skipped (first: {decoder.decode_errors[0]})"))
    if decoder.size_changes:
        out.append(Problem("video_frame_size_changed", VIDEO_NAME, f"{VIDEO_NAME}: {decoder.size_changes} frames "
                           "change the picture size mid-stream; they were dropped"))
    if decoded == 0:
        out.append(Problem("video_empty", VIDEO_NAME, f"{VIDEO_NAME} has no decodable frame"))
        return out
    video_codes = {al.R_BARCODE: ("video_barcode_unreadable", "frames whose barcode does not read"),
                   al.R_DUPLICATE: ("video_frames_duplicated", "frames repeating an earlier frame_id"),
                   al.R_NOT_LOGGED: ("video_frame_not_logged", f"frames whose id no {FRAMES_NAME} line has"),
                   al.R_OUT_OF_ORDER: ("video_frames_out_of_order", "frames with a lower id than one before"),
                   al.R_UNMATCHED: ("video_frames_unmatched", "frames that no log line could be paired with")}
    for reason, (code, what) in video_codes.items():
        if reasons[reason]:
            out.append(Problem(code, VIDEO_NAME, f"{VIDEO_NAME}: {_count(reasons[reason], decoded)} {what}; "
                               "they were dropped"))
    # One frame without a barcode before the first readable one is the warm-up picture every canvas
    # recording starts with: dropped and counted (alignment.frames_before_first_barcode), not a problem.
    leading = summary.frames_before_first_barcode
    if leading > 1:
        out.append(Problem("video_barcode_unreadable", VIDEO_NAME,
                           f"{VIDEO_NAME}: the first {leading} frames show no readable barcode; they were dropped "
                           "(nothing ties them to a log line)"))
    missing = qc.dropped[R_NOT_IN_VIDEO]
    if missing:
        out.append(Problem("video_frames_dropped", VIDEO_NAME, f"{VIDEO_NAME} lacks {_count(missing, len(log))} "
                           f"logged frames"))
    if summary.frames_paired == 0:
        out.append(Problem("alignment_failed", VIDEO_NAME, f"none of the {decoded} decoded frames of {VIDEO_NAME} "
                           f"could be paired with a usable {FRAMES_NAME} line"))
    if summary.mode == al.MODE_FRAME_ID and summary.clock_offset_ms is not None:
        if abs(summary.clock_offset_ms) > MAX_CLOCK_OFFSET_MS:
            out.append(Problem("video_clock_offset", FRAMES_NAME, f"video pts run {summary.clock_offset_ms:+.0f} ms "
                               f"from {FRAMES_NAME} t_capture_ms; the log clock must start with the recorder"))
        t = log.handoff_ms[sorted(paired_lines)] if paired_lines else np.zeros(0)
        span = float(np.nanmax(t) - np.nanmin(t)) if len(t) else 0.0
        drift = summary.clock_drift or 0.0
        if abs(drift) > MAX_CLOCK_DRIFT and abs(drift) * span > MAX_CLOCK_DRIFT_MS:
            out.append(Problem("video_clock_drift", FRAMES_NAME, f"video pts advance {1 + drift:.4f} ms per logged "
                               "ms; log times must be wall-clock milliseconds"))
    return out


def _finish(run: _Run, problems: list[Problem], *, rejected: bool) -> ProcessingResult:
    qc = run.qc or QcReport(run.session_id, run.attempt_id)
    qc.problems = problems
    qc.rejected = rejected
    if rejected:
        qc.segments = [s for s in qc.segments if not s.accepted]  # nothing was exported (see _stream)
    run.progress(STAGE_EXPORT, qc.kept, qc.decoded)
    player = run.manifest.player_id if run.manifest else None
    mount = run.manifest.camera.mount.model_dump() if run.manifest else None
    docs = {
        SEGMENTS_NAME: segments_document(session_id=run.session_id, player_id=player, attempt_id=run.attempt_id,
                                         plan=run.plan, segments=qc.segments, config=run.cfg.to_dict(),
                                         mount=mount, log_fingerprint="" if rejected else run.log_fingerprint,
                                         processor_version=run.processor_version),
        QC_REPORT_NAME: qc.report(),
    }
    run.sink.put_many([(k, json_bytes(v)) for k, v in docs.items()])
    run.keys.update(docs)
    run.sink.finish(run.keys)
    run.sink.put_many([(SUCCESS_NAME, json_bytes(success_document(run.attempt_id, qc.segments_accepted)))])
    summary = qc.alignment
    return ProcessingResult(
        session_id=run.session_id, attempt_id=run.attempt_id, rejected=rejected, problems=problems,
        frames_decoded=qc.decoded, frames_kept=qc.kept, segments_accepted=qc.segments_accepted,
        segments_rejected=len(qc.segments) - qc.segments_accepted,
        alignment_mode=summary.mode if summary else None,
        alignment_error_ms=summary.estimated_error_ms if summary else 0.0,
        elapsed_s=round(time.perf_counter() - run.started, 3),
        keys={"qc_report": QC_REPORT_NAME, "segments": SEGMENTS_NAME, "success": SUCCESS_NAME})
