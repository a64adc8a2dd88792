"""Helpers of the rewards tests: a settable clock, sessions brought to PROCESSING, segments to price."""

from __future__ import annotations

import threading

from sd_ingest.catalog import Catalog, SegmentRecord, SessionState

S = SessionState


class Clock:
    """A clock the test moves (``t``); with ``step_s`` every reading advances it (thread-safe)."""

    def __init__(self, t: float = 1_780_000_000.0, step_s: float = 0.0) -> None:
        self.t, self.step_s = t, step_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.t += self.step_s
            return self.t


def to_processing(catalog: Catalog, sid: str, player: str, owner: str = "a", attempt: str = "1") -> None:
    """A new session, through the completeness check and validation, claimed and dispatched."""
    catalog.record_object(key=f"raw/{sid}/manifest.json", session_id=sid, raw_prefix=f"raw/{sid}/", size_bytes=10,
                          etag='"e1"', sequencer="0A")
    rec = catalog.claim(sid, S.RECEIVING, owner, 300)
    catalog.finish_check(sid, owner, rec.generation, complete=True, problems=[], player_id=player)
    catalog.claim(sid, S.COMPLETE, owner, 300)
    catalog.finish_validation(sid, owner, S.VALIDATED, [], [])
    again(catalog, sid, owner, attempt)


def again(catalog: Catalog, sid: str, owner: str, attempt: str) -> None:
    """VALIDATED → PROCESSING under ``owner`` with ``attempt``."""
    assert catalog.claim(sid, S.VALIDATED, owner, 300) is not None
    catalog.start_attempt(sid, owner, attempt)


def segment(sid: str, k: int, player: str, accepted: bool = True, *, commands: dict[str, int] | None = None,
            duration_s: float = 5.0, infractions: dict[str, int] | None = None, diffusion_frames: int = 0,
            progress: tuple[float, float] = (0.0, 0.0)) -> SegmentRecord:
    """A 150-frame segment ``k`` of session ``sid``."""
    return SegmentRecord(
        segment_id=f"{sid}_{k:03d}", session_id=sid, player_id=player, index=k, accepted=accepted,
        reasons=[] if accepted else ["too_slow"], frames=150, duration_s=duration_s, t_start_ms=k * 5000.0,
        t_end_ms=(k + 1) * 5000.0, distance_m=40.0, mean_speed_mps=8.0,
        command_counts=commands if commands is not None else {"LANEFOLLOW": 150},
        infractions=infractions or {}, diffusion_frames=diffusion_frames,
        route_progress_start=progress[0], route_progress_end=progress[1])


def finish(catalog: Catalog, sid: str, segments: list[SegmentRecord], owner: str = "a", attempt: str = "1"):
    """PROCESSING → PROCESSED with ``segments``."""
    return catalog.finish_processed(sid, owner, attempt, segments=segments, qc_report_uri="", problems=[])
