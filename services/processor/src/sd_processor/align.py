"""ALIGN: which logged state each decoded video frame shows.

Frame-id mode (the format's primary mode): a frame belongs to the log line whose ``frame_id`` its
barcode shows — never the line at the same index or nearest in time. Repeats, ids out of order and
ids no line has are dropped with their reason.

Timestamp mode (a video without readable barcodes): the pairing is estimated from the video's real
presentation times and the logged hand-off times (``t_capture_ms``, or the ``frame_present`` latency
probe where one names the frame). Frame intervals, not absolute times, decide: the recorder's clock
runs tens of milliseconds apart from the page clock (more than a frame period), but the jitter and
hitches of consecutive frames leave the same fingerprint in both. A dynamic programme finds the
order-preserving pairing whose intervals agree best, allowing dropped log lines and unmatched video
frames at a cost; the estimated error is what remains of pts minus hand-off time once the slowly
varying clock offset is removed.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from .decode import DecodedFrame
from .framelog import LINE_CONTROLS_INVALID, LINE_INVALID, LINE_TIME_BACKWARDS, FrameLog

MODE_FRAME_ID = "frame_id"
MODE_TIMESTAMP = "timestamp"

# Drop reasons decided here.
R_SIZE = "resolution_changed"
R_BARCODE = "barcode_unreadable"
R_DUPLICATE = "duplicate_frame_id"
R_OUT_OF_ORDER = "out_of_order"
R_NOT_LOGGED = "not_logged"
R_UNMATCHED = "unmatched"

# Timestamp-mode costs, in milliseconds of interval disagreement.
DROP_COST_MS = 10.0  # a log line with no video frame
SKIP_COST_MS = 10.0  # a video frame with no log line
MAX_LINE_STEP = 8  # log lines one video-frame step may advance (7 dropped in a row)
MAX_FRAME_STEP = 3  # video frames one step may advance (2 unmatched in a row)
BAND = 200  # lines either side of the proportional diagonal that are considered


@dataclass
class Pairing:
    """The outcome for one decoded frame: its log line, or why it has none."""

    line: int | None
    reason: str | None


@dataclass
class AlignmentSummary:
    """How frames met log lines, for the QC report."""

    mode: str
    frames_paired: int = 0
    estimated_error_ms: float = 0.0
    clock_offset_ms: float | None = None  # median pts - hand-off time over paired frames
    clock_drift: float | None = None  # slope of pts against hand-off time, minus 1
    probes_used: int = 0

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"mode": self.mode, "frames_paired": self.frames_paired,
                "estimated_error_ms": round(self.estimated_error_ms, 3),
                "clock_offset_ms": None if self.clock_offset_ms is None else round(self.clock_offset_ms, 3),
                "clock_drift": None if self.clock_drift is None else round(self.clock_drift, 6),
                "latency_probes_used": self.probes_used}


class _ClockStats:
    def __init__(self) -> None:
        self.pts: list[float] = []
        self.t: list[float] = []

    def add(self, pts: int | None, t: float) -> None:
        if pts is not None and np.isfinite(t):
            self.pts.append(float(pts))
            self.t.append(float(t))

    def fill(self, s: AlignmentSummary) -> None:
        if len(self.t) < 2:
            return
        pts, t = np.asarray(self.pts), np.asarray(self.t)
        s.clock_offset_ms = float(np.median(pts - t))
        if t.max() - t.min() > 0:
            s.clock_drift = float(np.polyfit(t, pts, 1)[0] - 1.0)


class FrameIdAligner:
    """Pairs frames by the id their barcode shows."""

    mode = MODE_FRAME_ID

    def __init__(self, log: FrameLog) -> None:
        self.log = log
        self._seen: set[int] = set()
        self._last_id = -1
        self._clock = _ClockStats()
        self.summary = AlignmentSummary(MODE_FRAME_ID)

    def pair(self, frame: DecodedFrame) -> Pairing:
        """The line ``frame`` shows, or the reason it shows none usable."""
        if frame.y is None:
            return Pairing(None, R_SIZE)
        fid = frame.frame_id
        if fid is None:
            return Pairing(None, R_BARCODE)
        if fid in self._seen:
            return Pairing(None, R_DUPLICATE)
        self._seen.add(fid)
        line = self.log.index_of.get(fid)
        if line is None:
            return Pairing(None, R_NOT_LOGGED)
        if fid < self._last_id:
            return Pairing(line, R_OUT_OF_ORDER)
        self._last_id = fid
        self.summary.frames_paired += 1
        self._clock.add(frame.pts_ms, self.log.handoff_ms[line])
        status = self.log.status[line]
        return Pairing(line, status or None)

    def finish(self) -> AlignmentSummary:
        """The summary once every frame was paired."""
        self._clock.fill(self.summary)
        return self.summary


class TimestampAligner:
    """Pairs frames by an estimate from presentation times (see the module docstring)."""

    mode = MODE_TIMESTAMP

    def __init__(self, log: FrameLog, video_pts_ms: list[int], probes_used: int = 0) -> None:
        self.log = log
        timed = [i for i in range(len(log)) if log.status[i] not in (LINE_INVALID, LINE_CONTROLS_INVALID,
                                                                     LINE_TIME_BACKWARDS)
                 and np.isfinite(log.handoff_ms[i])]
        lines = np.asarray(timed, dtype=np.int64)
        pts = np.asarray(video_pts_ms, dtype=np.float64)
        match = match_by_intervals(pts, log.handoff_ms[lines]) if len(lines) and len(pts) else \
            np.full(len(pts), -1, dtype=np.int64)
        self._by_pts: dict[int, deque[int | None]] = defaultdict(deque)
        for k, m in enumerate(match.tolist()):
            self._by_pts[int(video_pts_ms[k])].append(int(lines[m]) if m >= 0 else None)
        self.summary = AlignmentSummary(MODE_TIMESTAMP, probes_used=probes_used)
        paired = match >= 0
        if paired.sum() >= 2:
            offsets = pts[paired] - log.handoff_ms[lines[match[paired]]]
            residual = offsets - _running_median(offsets, 31)
            self.summary.estimated_error_ms = float(np.sqrt(np.mean(residual ** 2)))
        self._clock = _ClockStats()

    def pair(self, frame: DecodedFrame) -> Pairing:
        """The line estimated for ``frame``'s pts, or why there is none usable."""
        if frame.y is None:
            return Pairing(None, R_SIZE)
        queue = self._by_pts.get(frame.pts_ms) if frame.pts_ms is not None else None
        line = queue.popleft() if queue else None
        if line is None:
            return Pairing(None, R_UNMATCHED)
        self.summary.frames_paired += 1
        self._clock.add(frame.pts_ms, self.log.handoff_ms[line])
        status = self.log.status[line]
        return Pairing(line, status or None)

    def finish(self) -> AlignmentSummary:
        """The summary once every frame was paired."""
        self._clock.fill(self.summary)
        return self.summary


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    if len(x) < 3:
        return np.full_like(x, np.median(x))
    w = min(window, len(x) if len(x) % 2 else len(x) - 1)
    pad = w // 2
    padded = np.pad(x, pad, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, w), axis=1)


def match_by_intervals(pts: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each video pts, the index into ``t`` (log hand-off times) it pairs with, or -1.

    Order-preserving; minimises the total disagreement of consecutive intervals plus DROP_COST_MS per
    skipped log line and SKIP_COST_MS per unmatched video frame (also before the first and after the
    last pair, which anchors the pairing at both ends).
    """
    n, m = len(pts), len(t)
    inf = np.inf
    centre = np.round(np.arange(n) * ((m - 1) / max(1, n - 1))).astype(np.int64)
    lo = np.clip(centre - BAND, 0, m - 1)
    hi = np.clip(centre + BAND, 0, m - 1)
    width = int((hi - lo).max()) + 1
    costs: list[np.ndarray] = []  # per row, cost over its band [lo, lo + width)
    back: list[np.ndarray] = []  # per row, chosen move code (-1: start here)
    for i in range(n):
        js = lo[i] + np.arange(width)
        valid = js <= hi[i]
        jc = np.minimum(js, m - 1)
        best = np.where(valid, SKIP_COST_MS * i + DROP_COST_MS * jc, inf) if i < MAX_FRAME_STEP else \
            np.full(width, inf)
        code = np.full(width, -1, dtype=np.int16)
        for di in range(1, min(MAX_FRAME_STEP, i) + 1):
            prev_cost, prev_lo = costs[i - di], lo[i - di]
            dp = pts[i] - pts[i - di]
            for d in range(1, MAX_LINE_STEP + 1):
                jp = jc - d
                k = jp - prev_lo
                ok = valid & (jp >= 0) & (k >= 0) & (k < width)
                if not ok.any():
                    continue
                prev = np.where(ok, prev_cost[np.clip(k, 0, width - 1)], inf)
                c = prev + np.abs(dp - (t[jc] - t[np.clip(jp, 0, m - 1)])) \
                    + DROP_COST_MS * (d - 1) + SKIP_COST_MS * (di - 1)
                better = c < best
                best = np.where(better, c, best)
                code = np.where(better, (di - 1) * MAX_LINE_STEP + (d - 1), code)
        costs.append(best)
        back.append(code)
        if i >= MAX_FRAME_STEP:
            costs[i - MAX_FRAME_STEP] = None  # only the last rows are looked back at
    # Close: rows within MAX_FRAME_STEP of the end, lines after the last pair count as dropped.
    end_best, end_at = inf, None
    for i in range(max(0, n - MAX_FRAME_STEP), n):
        js = lo[i] + np.arange(width)
        total = costs[i] + DROP_COST_MS * (m - 1 - np.minimum(js, m - 1)) + SKIP_COST_MS * (n - 1 - i)
        k = int(np.argmin(total))
        if total[k] < end_best:
            end_best, end_at = float(total[k]), (i, k)
    match = np.full(n, -1, dtype=np.int64)
    if end_at is None or not np.isfinite(end_best):
        return match
    i, k = end_at
    while True:
        j = int(lo[i] + k)
        match[i] = j
        c = int(back[i][k])
        if c < 0:
            break
        di, d = c // MAX_LINE_STEP + 1, c % MAX_LINE_STEP + 1
        i, j = i - di, j - d
        k = j - int(lo[i])
    return match
