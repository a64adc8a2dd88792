"""SPLICE: kept frames into segments of at most ``segment_s`` of video time, cut on frame boundaries.

A segment ends when the next kept frame would lie ``segment_s`` or more after its first frame, or
when a gap separates two kept frames: more than ``max_gap_frames`` frames missing between them
(log lines with no kept frame — dropped by the recorder or by a clean rule — plus video frames that
belong to no line, such as duplicates), or more than ``max_gap_ms`` between their pts. Gaps up to the
threshold stay inside the segment as holes and count against its share of good frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clean import Candidate


@dataclass
class Segment:
    """Consecutive kept frames; holes counts the frames missing between them."""

    index: int
    frames: list[Candidate] = field(default_factory=list)
    holes: int = 0
    period_ms: float = 33.333
    frame_hashes: list[str] = field(default_factory=list)  # perceptual hashes of sampled pictures (fingerprint.py)
    frame_hash_t_ms: list[int] = field(default_factory=list)  # the pts of each

    @property
    def t_start_ms(self) -> int:
        """pts of the first frame."""
        return self.frames[0].frame.pts_ms

    @property
    def t_end_ms(self) -> float:
        """End of the time the segment covers: the last frame's pts plus one frame period."""
        return self.frames[-1].frame.pts_ms + self.period_ms

    @property
    def duration_s(self) -> float:
        """Video time covered, in seconds."""
        return (self.t_end_ms - self.t_start_ms) / 1000.0

    @property
    def lines(self) -> list[int]:
        """The log lines of the frames, in order."""
        return [c.line for c in self.frames]

    @property
    def pictured_lines(self) -> list[int]:
        """The log lines whose states the frames' pictures show, in order (``lines`` without diffusion)."""
        return [c.line if c.pictured is None else c.pictured for c in self.frames]


class Splicer:
    """Groups the stream of decided frames into segments; ``add``/``finish`` return closed segments."""

    def __init__(self, *, segment_s: float, max_gap_frames: int, max_gap_ms: float, period_ms: float) -> None:
        self.segment_ms = segment_s * 1000.0
        self.max_gap_frames = max_gap_frames
        self.max_gap_ms = max_gap_ms
        self.period_ms = period_ms
        self._current: Segment | None = None
        self._extra = 0  # frames since the last kept one that belong to no future log line
        self._count = 0

    @property
    def current(self) -> Segment | None:
        """The segment the last kept frame joined (still open)."""
        return self._current

    def add(self, cand: Candidate) -> list[Segment]:
        """Takes the next frame (kept or not) in stream order."""
        cur = self._current
        if not cand.good:
            if cur is None or cand.line is None or cand.line <= cur.frames[-1].line:
                self._extra += 1
            return []
        closed: list[Segment] = []
        if cur is not None:
            last = cur.frames[-1]
            gap = (cand.line - last.line - 1) + self._extra
            dt = cand.frame.pts_ms - last.frame.pts_ms
            if gap > self.max_gap_frames or dt > self.max_gap_ms or dt <= 0 or \
                    cand.frame.pts_ms - cur.t_start_ms >= self.segment_ms:
                closed.append(cur)
                cur = None
            else:
                cur.holes += gap
        if cur is None:
            cur = self._current = Segment(self._count, period_ms=self.period_ms)
            self._count += 1
        cur.frames.append(cand)
        self._extra = 0
        return closed

    def finish(self) -> list[Segment]:
        """The segment still open at the end of the video."""
        cur, self._current = self._current, None
        return [cur] if cur is not None else []
