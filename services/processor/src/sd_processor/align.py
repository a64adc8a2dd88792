"""ALIGN: which logged state each decoded video frame shows.

Frame-id mode (the format's primary mode): a frame belongs to the log line whose ``frame_id`` its
barcode shows — never the line at the same index or nearest in time. Repeats, ids out of order and
ids no line has are dropped with their reason.

Timestamp mode (a video whose first frames mostly show no readable barcode): every frame whose
barcode does read still belongs to the line it names, and those frames are anchors; only the frames
between two anchors, and after the last one, are paired by time, each stretch with its anchors as fixed
ends. A frame without a barcode before the first readable one (the warm-up picture a canvas recorder
starts with, or a recording whose first frames the browser dropped) is never paired: nothing ties it
to a line. With no readable barcode at all, the whole video is paired by time. The pairing by time
is estimated from the video's real presentation times and the logged hand-off times (``t_capture_ms``, or the ``frame_present`` latency
probe where one names the frame). Frame intervals, not absolute times, decide: the recorder's clock
runs tens of milliseconds apart from the page clock (more than a frame period), but the jitter and
hitches of consecutive frames leave the same fingerprint in both. A dynamic programme finds the
order-preserving pairing whose intervals agree best, allowing dropped log lines and unmatched video
frames at a cost; the estimated error is what remains of pts minus hand-off time once the slowly
varying clock offset is removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .decode import BarcodeTrack, DecodedFrame
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
R_BEFORE_FIRST_BARCODE = "before_first_barcode"

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
    frames_before_first_barcode: int = 0  # frames with no barcode before the first readable one: never paired
    frames_paired_by_barcode: int = 0  # of frames_paired, those whose barcode named their line

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"mode": self.mode, "frames_paired": self.frames_paired,
                "frames_paired_by_barcode": self.frames_paired_by_barcode,
                "frames_before_first_barcode": self.frames_before_first_barcode,
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
            if self._last_id < 0 and not self._seen:
                self.summary.frames_before_first_barcode += 1
                return Pairing(None, R_BEFORE_FIRST_BARCODE)
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
        self.summary.frames_paired_by_barcode += 1
        self._clock.add(frame.pts_ms, self.log.handoff_ms[line])
        status = self.log.status[line]
        return Pairing(line, status or None)

    def finish(self) -> AlignmentSummary:
        """The summary once every frame was paired."""
        self._clock.fill(self.summary)
        return self.summary


class TimestampAligner:
    """Pairs frames by their barcodes where they read and by time in between (see the module docstring)."""

    mode = MODE_TIMESTAMP

    def __init__(self, log: FrameLog, track: BarcodeTrack, probes_used: int = 0) -> None:
        self.log = log
        self.summary = AlignmentSummary(MODE_TIMESTAMP, probes_used=probes_used)
        self._pts = track.pts_ms
        self._result: list[Pairing | None] = [None] * len(track.pts_ms)
        self._by_barcode: set[int] = set()  # frames paired by the id their barcode shows
        timed = [i for i in range(len(log)) if log.status[i] not in (LINE_INVALID, LINE_CONTROLS_INVALID,
                                                                     LINE_TIME_BACKWARDS)
                 and np.isfinite(log.handoff_ms[i])]
        position = {line: k for k, line in enumerate(timed)}
        anchors = self._pair_barcodes(track, position)
        claimed = {r.line for r in self._result if r is not None and r.line is not None}
        free = np.asarray([k for k, line in enumerate(timed) if line not in claimed], dtype=np.int64)
        t_all = log.handoff_ms[np.asarray(timed, dtype=np.int64)] if timed else np.zeros(0)
        loose = [k for k, (p, f) in enumerate(zip(track.pts_ms, track.frame_ids)) if f is None and p is not None]
        if not anchors:
            self._fill(loose, free, t_all, timed, first=None, last=None)
        else:
            first_frame = anchors[0][0]
            for k in loose:
                if k < first_frame:
                    self._result[k] = Pairing(None, R_BEFORE_FIRST_BARCODE)
                    self.summary.frames_before_first_barcode += 1
            ends = [*anchors, (len(track.pts_ms), None)]
            for (ka, pa), (kb, pb) in zip(ends, ends[1:]):
                frames = [k for k in loose if ka < k < kb]
                lines = free[(free > pa) & (free < pb)] if pb is not None else free[free > pa]
                self._fill(frames, lines, t_all, timed, first=(ka, pa), last=None if pb is None else (kb, pb))
        self._estimate_error(timed)
        self._clock = _ClockStats()

    def _pair_barcodes(self, track: BarcodeTrack, position: dict[int, int]) -> list[tuple[int, int]]:
        """Frames whose barcode reads keep their line, as in frame-id mode; returns the anchors (frame, position)."""
        seen: set[int] = set()
        last_id = -1
        anchors: list[tuple[int, int]] = []
        for k, fid in enumerate(track.frame_ids):
            if fid is None:
                continue
            if fid in seen:
                self._result[k] = Pairing(None, R_DUPLICATE)
                continue
            seen.add(fid)
            line = self.log.index_of.get(fid)
            if line is None:
                self._result[k] = Pairing(None, R_NOT_LOGGED)
            elif fid < last_id:
                self._result[k] = Pairing(line, R_OUT_OF_ORDER)
            else:
                last_id = fid
                self._result[k] = Pairing(line, self.log.status[line] or None)
                self._by_barcode.add(k)
                if line in position and track.pts_ms[k] is not None:
                    anchors.append((k, position[line]))
        return anchors

    def _fill(self, frames: list[int], lines: np.ndarray, t_all: np.ndarray, timed: list[int], *,
              first: tuple[int, int] | None, last: tuple[int, int] | None) -> None:
        """Pairs ``frames`` (no barcode) with ``lines`` (positions in ``timed``) by time, between fixed ends."""
        if not frames:
            return
        head = [first] if first else []
        tail = [last] if last else []
        rows = [k for k, _ in head] + frames + [k for k, _ in tail]
        cols = np.concatenate([[p for _, p in head], lines, [p for _, p in tail]]).astype(np.int64)
        match = np.full(len(rows), -1, dtype=np.int64)
        if len(cols):
            pts = np.asarray([self._pts[k] for k in rows], dtype=np.float64)
            match = match_by_intervals(pts, t_all[cols], start_anchored=first is not None,
                                       end_anchored=last is not None)
        for r in range(len(head), len(rows) - len(tail)):
            k = rows[r]
            if match[r] < 0:
                self._result[k] = Pairing(None, R_UNMATCHED)
            else:
                line = timed[int(cols[match[r]])]
                self._result[k] = Pairing(line, self.log.status[line] or None)

    def _estimate_error(self, timed: list[int]) -> None:
        paired = [(self._pts[k], r.line) for k, r in enumerate(self._result)
                  if r is not None and r.line is not None and r.reason is None and self._pts[k] is not None]
        if len(paired) >= 2:
            pts = np.asarray([p for p, _ in paired], dtype=np.float64)
            offsets = pts - self.log.handoff_ms[np.asarray([line for _, line in paired], dtype=np.int64)]
            offsets = offsets[np.isfinite(offsets)]
            if len(offsets) >= 2:
                residual = offsets - _running_median(offsets, 31)
                self.summary.estimated_error_ms = float(np.sqrt(np.mean(residual ** 2)))

    def pair(self, frame: DecodedFrame) -> Pairing:
        """The pairing decided for ``frame`` (by its place in the stream), or why there is none usable."""
        if frame.y is None:
            return Pairing(None, R_SIZE)
        k = frame.index
        result = self._result[k] if k < len(self._result) and self._pts[k] == frame.pts_ms else None
        if result is None:
            return Pairing(None, R_UNMATCHED)
        if result.line is not None and result.reason != R_OUT_OF_ORDER:
            self.summary.frames_paired += 1
            if k in self._by_barcode:
                self.summary.frames_paired_by_barcode += 1
            self._clock.add(frame.pts_ms, self.log.handoff_ms[result.line])
        return result

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


def match_by_intervals(pts: np.ndarray, t: np.ndarray, *, start_anchored: bool = False,
                       end_anchored: bool = False) -> np.ndarray:
    """For each video pts, the index into ``t`` (log hand-off times) it pairs with, or -1.

    Order-preserving; minimises the total disagreement of consecutive intervals plus DROP_COST_MS per
    skipped log line and SKIP_COST_MS per unmatched video frame (also before the first and after the
    last pair, which anchors the pairing at both ends). ``start_anchored``/``end_anchored`` fix the
    first (last) frame to the first (last) line: the pairing runs from one known pair to the next.
    All -1 when no pairing satisfies the step limits.
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
        if start_anchored:
            best = np.where(valid & (js == 0), 0.0, inf) if i == 0 else np.full(width, inf)
        elif i < MAX_FRAME_STEP:
            best = np.where(valid, SKIP_COST_MS * i + DROP_COST_MS * jc, inf)
        else:
            best = np.full(width, inf)
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
    for i in range(n - 1 if end_anchored else max(0, n - MAX_FRAME_STEP), n):
        js = lo[i] + np.arange(width)
        total = costs[i] + DROP_COST_MS * (m - 1 - np.minimum(js, m - 1)) + SKIP_COST_MS * (n - 1 - i)
        if end_anchored:
            total = np.where(js == m - 1, total, inf)
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
