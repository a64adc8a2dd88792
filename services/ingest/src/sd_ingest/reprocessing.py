"""Reprocessing the corpus in shards: which sessions a run selects, which shard each belongs to, and one
shard's run (docs/operations.md, "Reprocessing the corpus").

A run sends sessions back exactly as ``sdctl catalog reprocess SESSION_ID`` does (PROCESSED/FAILED →
VALIDATED, REJECTED → COMPLETE), and the ingest's own pipeline then dispatches them to the processors
as it does every session: attempts, leases, ``finish_processed``, the replay verdict and the ledger's
reversals are the normal path's. What a run adds:

* a **shard function**: a session is in shard ``k`` of ``N`` when the first 8 bytes of the SHA-256 of
  its id, read as an integer, are ``k`` modulo ``N``. Shards are disjoint and cover the catalog, and a
  session's shard depends on nothing else (not on order, nor on sessions added later);
* a **run id**, recorded on each session the run sends back, in the same conditional UPDATE that moves
  it (``Catalog.reprocess_for_run``). A shard run again — after a crash, or twice at once — finds its
  own id on what it already sent and leaves it alone, so it changes nothing; a session is sent at most
  once per run whatever the number of workers;
* a **window**: a worker keeps at most ``window`` of its sessions unfinished at once and waits for each
  to end, so a run never takes the whole corpus out of PROCESSED (a dataset version made meanwhile
  would miss it) nor queues it ahead of new uploads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import structlog

from sd_ingest.catalog import Catalog, SessionState

log = structlog.get_logger()
S = SessionState
# What reprocessing can send back (the catalog's reprocess edges) and what a run selects by default.
REPROCESSABLE = (S.PROCESSED, S.FAILED, S.REJECTED)
DEFAULT_STATES = (S.PROCESSED, S.FAILED)
# Where a sent session's reprocessing has ended.
ENDED = frozenset({S.PROCESSED, S.FAILED, S.REJECTED})
_PAGE = 500


class SelectorError(ValueError):
    """A selector or shard that cannot be run; the message says which value."""


def shard_of(session_id: str, shards: int) -> int:
    """The shard (0 … shards-1) that ``session_id`` belongs to."""
    if shards < 1:
        raise SelectorError(f"shards must be at least 1, got {shards}")
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % shards


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time as UTC (a time without an offset is read as UTC)."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SelectorError(f"{text!r} is not an ISO 8601 date or time (e.g. 2026-11-01 or 2026-11-01T12:00Z)") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True)
class Selector:
    """Which sessions a run reprocesses: those in ``states`` matching every filter given.

    ``since`` bounds are inclusive, ``until`` bounds exclusive; received is when the catalog first saw
    the session, processed when its last attempt was registered.
    """

    states: tuple[SessionState, ...] = DEFAULT_STATES
    processor_version: str | None = None
    received_since: datetime | None = None
    received_until: datetime | None = None
    processed_since: datetime | None = None
    processed_until: datetime | None = None

    def __post_init__(self) -> None:
        if not self.states:
            raise SelectorError("a selector needs at least one state")
        bad = [st.value for st in self.states if st not in REPROCESSABLE]
        if bad:
            raise SelectorError(f"state {bad[0]} cannot be reprocessed (only {', '.join(s.value for s in REPROCESSABLE)})")
        for name in ("received", "processed"):
            since, until = getattr(self, f"{name}_since"), getattr(self, f"{name}_until")
            if since is not None and until is not None and since >= until:
                raise SelectorError(f"{name} since {since.isoformat()} is not before until {until.isoformat()}")

    def describe(self) -> dict[str, object]:
        """The selector as JSON-ready values, in a fixed order."""
        out: dict[str, object] = {"states": sorted(st.value for st in self.states)}
        for key, value in asdict(self).items():
            if key != "states" and value is not None:
                out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out

    def default_run_id(self) -> str:
        """A run id naming this selector: the same command run again is the same run (and does nothing)."""
        return "sel-" + hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ShardReport:
    """What one shard's run found and did."""

    shard: int
    shards: int
    run_id: str
    selected: int = 0   # sessions of this shard the selector picks, with those this run sent before
    sent: int = 0       # sent back by this call
    already: int = 0    # sent by this run before (another call, or another worker of the shard): left alone
    busy: int = 0       # under a live lease or moved meanwhile: not sent (a later call of the run sends them)
    processed: int = 0  # of the run's sessions of this shard, ended PROCESSED ...
    failed: int = 0     # ... FAILED
    rejected: int = 0   # ... REJECTED
    pending: int = 0    # not ended when this call stopped waiting
    superseded: int = 0  # sent again by another run meanwhile: that run follows them now
    dry_run: bool = False
    session_ids: list[str] = field(default_factory=list)  # what a dry run would send

    def to_dict(self) -> dict[str, object]:
        """JSON-ready (a dry run's session ids included)."""
        out = asdict(self)
        if not self.dry_run:
            out.pop("session_ids")
        return out


def check_run(shard: int, shards: int, window: int, run_id: str) -> None:
    """SelectorError unless ``shard`` of ``shards`` can run as run ``run_id`` with ``window``."""
    if shards < 1:
        raise SelectorError(f"shards must be at least 1, got {shards}")
    if not 0 <= shard < shards:
        raise SelectorError(f"shard {shard} is not one of 0..{shards - 1}")
    if window < 1:
        raise SelectorError(f"window must be at least 1, got {window}")
    if not run_id or len(run_id) > 64:
        raise SelectorError("a run id is 1 to 64 characters")


def run_shard(catalog: Catalog, selector: Selector, *, shard: int, shards: int, run_id: str, window: int = 4,
              wait: bool = True, poll_s: float = 1.0, timeout_s: float | None = None, dry_run: bool = False,
              sleep: Callable[[float], None] = time.sleep, progress_every_s: float = 60.0) -> ShardReport:
    """Runs shard ``shard`` of ``shards`` of reprocessing run ``run_id``; returns its report.

    With ``wait``, at most ``window`` of the shard's sessions are unfinished at once and the call
    returns once every session it sent has ended (or ``timeout_s`` passed: the rest count as pending).
    The report so far is logged every ``progress_every_s``.
    """
    check_run(shard, shards, window, run_id)
    report = ShardReport(shard=shard, shards=shards, run_id=run_id, dry_run=dry_run)
    to_send: list[str] = []
    ours: list[str] = []  # sent by this run before this call
    after = ""
    while True:
        page = catalog.select_sessions(
            states=selector.states, run_id=run_id, processor_version=selector.processor_version,
            received_since=selector.received_since, received_until=selector.received_until,
            processed_since=selector.processed_since, processed_until=selector.processed_until,
            after_id=after, limit=_PAGE)
        for rec in page:
            if shard_of(rec.session_id, shards) != shard:
                continue
            report.selected += 1
            (ours if rec.reprocess_run == run_id else to_send).append(rec.session_id)
        if len(page) < _PAGE:
            break
        after = page[-1].session_id
    report.already = len(ours)
    if dry_run:
        report.session_ids = to_send
        _count_ended(catalog, report, ours, run_id)
        return report

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_progress = time.monotonic()
    # Sessions of the run not ended yet: those sent now, and any an earlier call left in flight.
    open_ids = set(ours)
    _count_ended(catalog, report, ours, run_id, open_ids)
    to_send.reverse()  # popped from the end: sent in id order
    while to_send or (wait and open_ids):
        while to_send and (not wait or len(open_ids) < window):
            sid = to_send.pop()
            if catalog.reprocess_for_run(sid, run_id, selector.states) is not None:
                report.sent += 1
                open_ids.add(sid)
                log.info("session sent back for reprocessing", session_id=sid, run_id=run_id, shard=shard)
                continue
            now = catalog.get_session(sid)
            if now is not None and now.reprocess_run == run_id:  # another worker of this shard sent it
                report.already += 1
                open_ids.add(sid)
            else:
                report.busy += 1
        if not wait:
            break
        if open_ids:
            _count_ended(catalog, report, list(open_ids), run_id, open_ids)
        if time.monotonic() - last_progress >= progress_every_s:
            last_progress = time.monotonic()
            log.info("reprocessing shard progress", **report.to_dict(), to_send=len(to_send), in_flight=len(open_ids))
        if open_ids:  # the window is full, or nothing is left to send
            if deadline is not None and time.monotonic() > deadline:
                break
            sleep(poll_s)
    report.pending = len(open_ids)
    log.info("reprocessing shard done", **report.to_dict())
    return report


def _count_ended(catalog: Catalog, report: ShardReport, ids: list[str], run_id: str,
                 open_ids: set[str] | None = None) -> None:
    """Counts the outcome of each of ``ids`` that has ended, and takes it out of ``open_ids``."""
    for sid, rec in catalog.get_sessions(ids).items():
        if rec.reprocess_run != run_id:
            if open_ids is not None and sid in open_ids:
                open_ids.discard(sid)
                report.superseded += 1
                log.warning("session sent again by another reprocessing run", session_id=sid, run_id=run_id,
                            other_run=rec.reprocess_run)
            continue
        if rec.state not in ENDED:
            continue
        if open_ids is not None:
            open_ids.discard(sid)
        if rec.state == S.PROCESSED:
            report.processed += 1
        elif rec.state == S.FAILED:
            report.failed += 1
        else:
            report.rejected += 1
