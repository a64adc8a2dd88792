"""The session catalog: every session the ingest has seen, its state, its segments, and dataset versions.

SQLAlchemy over SQLite (one machine) or PostgreSQL (cluster). Every change is one transaction, and
every change that moves a session is a conditional UPDATE on its current state and lease owner, so
duplicate events, two replicas, or a replica that lost its lease can never move a session twice.

State machine (``TRANSITIONS`` is the whole of it)::

    RECEIVING ──(manifest + every listed file, sizes and sha256 match)──► COMPLETE
    COMPLETE  ──(validate_session, deep)──► VALIDATED | REJECTED
    COMPLETE  ──(a listed file changed or vanished meanwhile)──► RECEIVING
    REJECTED  ──(a raw file was uploaded again)──► RECEIVING      (REJECTED ──(reprocess)──► COMPLETE)
    VALIDATED ──(dispatch: attempts += 1, new attempt_id)──► PROCESSING
    PROCESSING ──(final result)──► PROCESSED
    PROCESSING ──(transient failure / lease expired, attempts < max)──► VALIDATED (after a backoff)
    PROCESSING ──(permanent failure, or attempts exhausted)──► FAILED
    PROCESSED | FAILED ──(reprocess)──► VALIDATED (attempts reset)

A corpus reprocessing run (reprocessing.py) takes the same reprocess edges, recording its run id on the
session in the same conditional UPDATE (``reprocess_for_run``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sd_common.problems import Problem
from sd_common.session_format.spec import EVENTS_NAME, VIDEO_NAME
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    and_,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from sd_common.sql import add_missing_columns, make_engine
from sd_ingest.ledger import Ledger, LedgerConfig
from sd_ingest.ledger import create_tables as create_ledger_tables
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sd_ingest import replays
from sd_ingest.replays import SessionFingerprints


class SessionState(StrEnum):
    """Where a session is in the ingest's pipeline (stored as this text)."""

    RECEIVING = "RECEIVING"
    COMPLETE = "COMPLETE"
    VALIDATED = "VALIDATED"
    REJECTED = "REJECTED"
    PROCESSING = "PROCESSING"
    PROCESSED = "PROCESSED"
    FAILED = "FAILED"


S = SessionState
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    S.RECEIVING: frozenset({S.COMPLETE}),
    S.COMPLETE: frozenset({S.VALIDATED, S.REJECTED, S.RECEIVING}),
    S.REJECTED: frozenset({S.RECEIVING, S.COMPLETE}),
    S.VALIDATED: frozenset({S.PROCESSING}),
    S.PROCESSING: frozenset({S.PROCESSED, S.VALIDATED, S.FAILED}),
    S.PROCESSED: frozenset({S.VALIDATED}),
    S.FAILED: frozenset({S.VALIDATED}),
}
# States whose raw files are settled: a later upload to them is logged, not acted on.
SETTLED = frozenset({S.COMPLETE, S.VALIDATED, S.PROCESSING, S.PROCESSED, S.FAILED})


class CatalogError(Exception):
    """Base of the catalog's errors."""


class InvalidTransition(CatalogError):
    """A state change the state machine does not allow."""

    def __init__(self, session_id: str, src: str, dst: str) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(SessionState(src), ()))) or "none"
        super().__init__(f"session {session_id}: {src} cannot move to {dst} (from {src}: {allowed})")


class LeaseLost(CatalogError):
    """This replica no longer owns the session (its lease expired and another took it, or its state moved)."""


class SessionNotFound(CatalogError):
    """No session with that id in the catalog."""


def check_transition(session_id: str, src: SessionState, dst: SessionState) -> None:
    """Raises InvalidTransition unless ``src → dst`` is an edge of the state machine."""
    if dst not in TRANSITIONS.get(src, frozenset()):
        raise InvalidTransition(session_id, src, dst)


class _Base(DeclarativeBase):
    pass


class SessionRow(_Base):
    __tablename__ = "catalog_sessions"
    session_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    raw_prefix: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Bumped by every new or changed raw object; the completeness check records the one it saw.
    generation: Mapped[int] = mapped_column(Integer, default=0)
    checked_generation: Mapped[int] = mapped_column(Integer, default=0)
    problems_json: Mapped[str] = mapped_column(Text, default="[]")
    warnings_json: Mapped[str] = mapped_column(Text, default="[]")
    manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    frame_count: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_id: Mapped[str] = mapped_column(String(64), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_s: Mapped[float] = mapped_column(Float, default=0.0)  # unix time
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_expires_s: Mapped[float] = mapped_column(Float, default=0.0)  # unix time
    segments_accepted: Mapped[int] = mapped_column(Integer, default=0)
    segments_rejected: Mapped[int] = mapped_column(Integer, default=0)
    qc_report_uri: Mapped[str] = mapped_column(String(512), default="")
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # What segments.json of the registered attempt names as the processor's version ("" before it did).
    processor_version: Mapped[str] = mapped_column(String(128), default="")
    # The corpus reprocessing run that last sent the session back (reprocessing.py): a run that finds
    # its own id here has done this session already, so running a shard again changes nothing.
    reprocess_run: Mapped[str] = mapped_column(String(64), default="")


class ObjectRow(_Base):
    __tablename__ = "catalog_objects"
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    etag: Mapped[str] = mapped_column(String(80))
    sequencer: Mapped[str] = mapped_column(String(64), default="")
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deliveries: Mapped[int] = mapped_column(Integer, default=1)


class SegmentRow(_Base):
    __tablename__ = "catalog_segments"
    segment_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    player_id: Mapped[str] = mapped_column(String(128), default="")
    index: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reasons_json: Mapped[str] = mapped_column(Text, default="[]")
    frames: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    t_start_ms: Mapped[float] = mapped_column(Float, default=0.0)
    t_end_ms: Mapped[float] = mapped_column(Float, default=0.0)
    distance_m: Mapped[float] = mapped_column(Float, default=0.0)
    mean_speed_mps: Mapped[float] = mapped_column(Float, default=0.0)
    command_counts_json: Mapped[str] = mapped_column(Text, default="{}")
    attempt_id: Mapped[str] = mapped_column(String(64), default="")
    uri: Mapped[str] = mapped_column(String(512), default="")
    infractions_json: Mapped[str] = mapped_column(Text, default="{}")
    diffusion_frames: Mapped[int] = mapped_column(Integer, default=0)
    route_progress_start: Mapped[float] = mapped_column(Float, default=0.0)
    route_progress_end: Mapped[float] = mapped_column(Float, default=0.0)


# Columns added after a table was first created: create_all makes missing tables, not missing columns,
# so Catalog adds these to a database made by an older version (table, column, DDL).
_ADDED_COLUMNS = [
    ("catalog_segments", "infractions_json", "TEXT NOT NULL DEFAULT '{}'"),
    ("catalog_segments", "diffusion_frames", "INTEGER NOT NULL DEFAULT 0"),
    ("catalog_segments", "route_progress_start", "FLOAT NOT NULL DEFAULT 0.0"),
    ("catalog_segments", "route_progress_end", "FLOAT NOT NULL DEFAULT 0.0"),
    ("catalog_sessions", "processor_version", "VARCHAR(128) NOT NULL DEFAULT ''"),
    ("catalog_sessions", "reprocess_run", "VARCHAR(64) NOT NULL DEFAULT ''"),
]


class ReplaySessionRow(_Base):
    """A session in the replay index: its registration order (kept when it is processed again) and its
    log fingerprint."""

    __tablename__ = "catalog_replay_sessions"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(128), unique=True)
    log_fingerprint: Mapped[str] = mapped_column(String(64), default="", index=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FrameHashRow(_Base):
    """One hashed picture of a registered session, with the bands an indexed lookup finds it by (replays.py)."""

    __tablename__ = "catalog_frame_hashes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    segment_index: Mapped[int] = mapped_column(Integer)
    t_ms: Mapped[int] = mapped_column(BigInteger)
    hash_hex: Mapped[str] = mapped_column(String(16))
    band0: Mapped[int] = mapped_column(Integer, index=True)
    band1: Mapped[int] = mapped_column(Integer, index=True)
    band2: Mapped[int] = mapped_column(Integer, index=True)
    band3: Mapped[int] = mapped_column(Integer, index=True)
    band4: Mapped[int] = mapped_column(Integer, index=True)
    band5: Mapped[int] = mapped_column(Integer, index=True)
    band6: Mapped[int] = mapped_column(Integer, index=True)


_BAND_COLUMNS = [FrameHashRow.band0, FrameHashRow.band1, FrameHashRow.band2, FrameHashRow.band3,
                 FrameHashRow.band4, FrameHashRow.band5, FrameHashRow.band6]
assert len(_BAND_COLUMNS) == replays.BANDS, "one column per band of replays.band_values"
# pg_advisory_xact_lock key of the replay check: a registration checks and extends the index alone
_REPLAY_LOCK_KEY = 0x5D_1E_9E_57


class DatasetRow(_Base):
    __tablename__ = "catalog_datasets"
    dataset_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    hours: Mapped[float] = mapped_column(Float, default=0.0)
    segments: Mapped[int] = mapped_column(Integer, default=0)
    players: Mapped[int] = mapped_column(Integer, default=0)
    sessions: Mapped[int] = mapped_column(Integer, default=0)
    frames: Mapped[int] = mapped_column(Integer, default=0)
    train_segments: Mapped[int] = mapped_column(Integer, default=0)
    val_segments: Mapped[int] = mapped_column(Integer, default=0)
    val_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    split_seed: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest_uri: Mapped[str] = mapped_column(String(512), default="")
    stats_uri: Mapped[str] = mapped_column(String(512), default="")
    lerobot_uri: Mapped[str] = mapped_column(String(512), default="")


class DeadLetterRow(_Base):
    __tablename__ = "catalog_dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(128), index=True)
    body: Mapped[str] = mapped_column(Text)
    receive_count: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# ---- records handed out (plain data, no ORM state) -------------------------------------------------


@dataclass(frozen=True)
class SessionRecord:
    """A session as the catalog knows it."""

    session_id: str
    player_id: str
    state: SessionState
    raw_prefix: str
    created_at: datetime
    updated_at: datetime
    generation: int
    checked_generation: int
    problems: list[Problem]
    warnings: list[Problem]
    manifest_sha256: str
    duration_s: float
    frame_count: int
    attempts: int
    attempt_id: str
    last_error: str
    next_attempt_s: float
    lease_owner: str | None
    lease_expires_s: float
    segments_accepted: int
    segments_rejected: int
    qc_report_uri: str
    processed_at: datetime | None
    processor_version: str = ""
    reprocess_run: str = ""


@dataclass(frozen=True)
class SegmentRecord:
    """One segment the processor cut from a session (accepted or not)."""

    segment_id: str
    session_id: str
    player_id: str
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
    attempt_id: str = ""
    uri: str = ""
    infractions: dict[str, int] = field(default_factory=dict)  # kind -> count on the pictured states
    diffusion_frames: int = 0  # frames whose picture is the diffusion view's
    route_progress_start: float = 0.0  # route.progress of the first pictured state
    route_progress_end: float = 0.0  # ... and of the last


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset version: an immutable manifest under datasets/<dataset_id>/."""

    dataset_id: str
    name: str
    created_at: datetime
    hours: float
    segments: int
    players: int
    sessions: int
    frames: int
    train_segments: int
    val_segments: int
    val_fraction: float
    split_seed: int
    manifest_uri: str
    stats_uri: str
    lerobot_uri: str


@dataclass(frozen=True)
class DeadLetter:
    """An event message set aside after failing too often."""

    message_id: str
    body: str
    receive_count: int
    reason: str
    created_at: datetime


class SelectedSession(NamedTuple):
    """A session a reprocessing selection picked: its id, and the run that last sent it back."""

    session_id: str
    reprocess_run: str


@dataclass(frozen=True)
class ObjectOutcome:
    """What recording one object-created event did."""

    kind: str  # "new", "duplicate", "stale", "replaced", "late_change"
    session: SessionRecord


@dataclass
class WorkItem:
    """A session some replica should act on now, and why."""

    session_id: str
    state: SessionState
    orphaned: bool = False  # PROCESSING whose lease expired: its dispatcher died
    extra: dict[str, Any] = field(default_factory=dict)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _problems(text: str) -> list[Problem]:
    return [Problem(**p) for p in json.loads(text or "[]")]


def _problems_json(problems: Iterable[Problem]) -> str:
    return json.dumps([p.to_dict() for p in problems])


def _session(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        session_id=row.session_id, player_id=row.player_id, state=SessionState(row.state),
        raw_prefix=row.raw_prefix, created_at=_utc(row.created_at), updated_at=_utc(row.updated_at),
        generation=row.generation, checked_generation=row.checked_generation,
        problems=_problems(row.problems_json), warnings=_problems(row.warnings_json),
        manifest_sha256=row.manifest_sha256, duration_s=row.duration_s, frame_count=row.frame_count,
        attempts=row.attempts, attempt_id=row.attempt_id, last_error=row.last_error,
        next_attempt_s=row.next_attempt_s, lease_owner=row.lease_owner, lease_expires_s=row.lease_expires_s,
        segments_accepted=row.segments_accepted, segments_rejected=row.segments_rejected,
        qc_report_uri=row.qc_report_uri, processed_at=_utc(row.processed_at),
        processor_version=row.processor_version or "", reprocess_run=row.reprocess_run or "")


def _segment(row: SegmentRow) -> SegmentRecord:
    return SegmentRecord(
        segment_id=row.segment_id, session_id=row.session_id, player_id=row.player_id, index=row.index,
        accepted=row.accepted, reasons=json.loads(row.reasons_json), frames=row.frames,
        duration_s=row.duration_s, t_start_ms=row.t_start_ms, t_end_ms=row.t_end_ms,
        distance_m=row.distance_m, mean_speed_mps=row.mean_speed_mps,
        command_counts={str(k): int(v) for k, v in json.loads(row.command_counts_json).items()},
        attempt_id=row.attempt_id, uri=row.uri,
        infractions={str(k): int(v) for k, v in json.loads(row.infractions_json or "{}").items()},
        diffusion_frames=row.diffusion_frames or 0, route_progress_start=row.route_progress_start or 0.0,
        route_progress_end=row.route_progress_end or 0.0)


def _dataset(row: DatasetRow) -> DatasetRecord:
    return DatasetRecord(
        dataset_id=row.dataset_id, name=row.name, created_at=_utc(row.created_at), hours=row.hours,
        segments=row.segments, players=row.players, sessions=row.sessions, frames=row.frames,
        train_segments=row.train_segments, val_segments=row.val_segments, val_fraction=row.val_fraction,
        split_seed=row.split_seed, manifest_uri=row.manifest_uri, stats_uri=row.stats_uri,
        lerobot_uri=row.lerobot_uri)


def _sequencer_key(seq: str) -> tuple[int, str]:
    # S3 sequencers compare as hex strings of equal length (shorter ones are left-padded).
    return (len(seq.lstrip("0")), seq.lstrip("0").upper())


class Catalog:
    """Synchronous repository; the async service calls it through worker threads."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time,
                 ledger_config: LedgerConfig | None = None) -> None:
        self._engine = make_engine(url)
        self._sqlite = self._engine.dialect.name == "sqlite"
        _Base.metadata.create_all(self._engine)
        add_missing_columns(self._engine, _ADDED_COLUMNS)
        create_ledger_tables(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._clock = clock
        # The contribution ledger shares the database: a session's segments and credits commit together.
        self.ledger = Ledger(self._sessions, ledger_config, clock=clock)

    def close(self) -> None:
        """Releases pooled connections."""
        self._engine.dispose()

    def now_s(self) -> float:
        """The catalog's clock (unix seconds)."""
        return self._clock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _insert_ignore(self, s: Session, model: type[_Base], values: dict) -> bool:
        """INSERT … ON CONFLICT DO NOTHING; True if the row was inserted."""
        dialect = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        key = model.__table__.primary_key.columns[0]
        stmt = dialect.insert(model).values(**values).on_conflict_do_nothing().returning(key)
        return s.execute(stmt).first() is not None

    # ---- events ------------------------------------------------------------------------------------

    def record_object(self, *, key: str, session_id: str, raw_prefix: str, size_bytes: int, etag: str,
                      sequencer: str | None) -> ObjectOutcome:
        """Records one object-created event for a raw session file, idempotently.

        A repeated (key, etag) is a duplicate; an older sequencer than the one recorded is stale; a
        different etag is a replaced object, which reopens a REJECTED session for a new check.
        """
        now = self._now()
        seq = sequencer or ""
        with self._sessions.begin() as s:
            self._insert_ignore(s, SessionRow, dict(
                session_id=session_id, player_id="", state=S.RECEIVING.value, raw_prefix=raw_prefix,
                created_at=now, updated_at=now, generation=0, checked_generation=0, problems_json="[]",
                warnings_json="[]", manifest_sha256="", duration_s=0.0, frame_count=0, attempts=0,
                attempt_id="", last_error="", next_attempt_s=0.0, lease_owner=None, lease_expires_s=0.0,
                segments_accepted=0, segments_rejected=0, qc_report_uri="", processor_version="",
                reprocess_run=""))
            inserted = self._insert_ignore(s, ObjectRow, dict(
                key=key, session_id=session_id, size_bytes=size_bytes, etag=etag, sequencer=seq,
                first_seen_at=now, deliveries=1))
            if inserted:
                kind = "new"
            else:
                obj = s.get(ObjectRow, key, with_for_update=not self._sqlite)
                obj.deliveries += 1
                if obj.etag == etag:
                    kind = "duplicate"
                elif seq and obj.sequencer and _sequencer_key(seq) < _sequencer_key(obj.sequencer):
                    kind = "stale"
                else:
                    obj.etag, obj.size_bytes, obj.sequencer = etag, size_bytes, seq
                    kind = "replaced"
            if kind in ("new", "replaced"):
                s.execute(update(SessionRow).where(SessionRow.session_id == session_id)
                          .values(generation=SessionRow.generation + 1, updated_at=now))
                if kind == "replaced":
                    reopened = s.execute(update(SessionRow).where(
                        SessionRow.session_id == session_id, SessionRow.state == S.REJECTED.value)
                        .values(state=S.RECEIVING.value)).rowcount
                    state = s.get(SessionRow, session_id).state
                    if not reopened and SessionState(state) in SETTLED:
                        kind = "late_change"
            row = s.get(SessionRow, session_id)
            s.refresh(row)
            return ObjectOutcome(kind, _session(row))

    def add_dead_letter(self, message_id: str, body: str, receive_count: int, reason: str) -> None:
        """Keeps a message that failed too often, with why, for an operator."""
        with self._sessions.begin() as s:
            s.add(DeadLetterRow(message_id=message_id, body=body, receive_count=receive_count,
                                reason=reason, created_at=self._now()))

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead letters."""
        with self._sessions() as s:
            rows = s.scalars(select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit))
            return [DeadLetter(r.message_id, r.body, r.receive_count, r.reason, _utc(r.created_at)) for r in rows]

    # ---- work and leases ---------------------------------------------------------------------------

    def find_work(self, limit: int = 20) -> list[WorkItem]:
        """Sessions that need a step now and that no live lease covers, oldest change first."""
        now = self._clock()
        free = or_(SessionRow.lease_owner.is_(None), SessionRow.lease_expires_s < now)
        q = (select(SessionRow.session_id, SessionRow.state, SessionRow.lease_owner).where(or_(
            and_(SessionRow.state == S.RECEIVING.value, SessionRow.generation > SessionRow.checked_generation, free),
            and_(SessionRow.state == S.COMPLETE.value, free),
            and_(SessionRow.state == S.VALIDATED.value, SessionRow.next_attempt_s <= now, free),
            and_(SessionRow.state == S.PROCESSING.value, SessionRow.lease_expires_s < now),
        )).order_by(SessionRow.updated_at).limit(limit))
        with self._sessions() as s:
            return [WorkItem(sid, SessionState(state), orphaned=state == S.PROCESSING.value)
                    for sid, state, _owner in s.execute(q)]

    def claim(self, session_id: str, state: SessionState, owner: str, lease_s: float) -> SessionRecord | None:
        """Takes the lease on a session in ``state`` if nobody holds a live one; None if another replica won."""
        now = self._clock()
        with self._sessions.begin() as s:
            conds = [SessionRow.session_id == session_id, SessionRow.state == state.value,
                     or_(SessionRow.lease_owner.is_(None), SessionRow.lease_expires_s < now)]
            if state == S.VALIDATED:
                conds.append(SessionRow.next_attempt_s <= now)
            got = s.execute(update(SessionRow).where(*conds).values(
                lease_owner=owner, lease_expires_s=now + lease_s)).rowcount
            if got != 1:
                return None
            return _session(s.get(SessionRow, session_id))

    def renew(self, session_id: str, owner: str, lease_s: float) -> bool:
        """Extends this replica's lease; False if it lost it."""
        with self._sessions.begin() as s:
            return s.execute(update(SessionRow).where(
                SessionRow.session_id == session_id, SessionRow.lease_owner == owner).values(
                lease_expires_s=self._clock() + lease_s)).rowcount == 1

    def release(self, session_id: str, owner: str, *, undo_attempt: bool = False) -> bool:
        """Gives a lease back (graceful shutdown). With ``undo_attempt`` a PROCESSING session returns to
        VALIDATED without the interrupted dispatch counting as an attempt."""
        with self._sessions.begin() as s:
            row = s.get(SessionRow, session_id)
            if row is None or row.lease_owner != owner:
                return False
            row.lease_owner, row.lease_expires_s = None, 0.0
            if undo_attempt and row.state == S.PROCESSING.value:
                row.state = S.VALIDATED.value
                row.attempts = max(0, row.attempts - 1)
                row.next_attempt_s = 0.0
                row.updated_at = self._now()
            return True

    def _owned(self, s: Session, session_id: str, owner: str, dst: SessionState) -> SessionRow:
        row = s.get(SessionRow, session_id, with_for_update=not self._sqlite)
        if row is None:
            raise SessionNotFound(session_id)
        if row.lease_owner != owner:
            raise LeaseLost(f"session {session_id}: lease is held by {row.lease_owner!r}, not {owner!r}")
        check_transition(session_id, SessionState(row.state), dst)
        return row

    def _move(self, row: SessionRow, dst: SessionState, *, keep_lease: bool = False) -> None:
        row.state = dst.value
        row.updated_at = self._now()
        if not keep_lease:
            row.lease_owner, row.lease_expires_s = None, 0.0

    # ---- RECEIVING → COMPLETE ----------------------------------------------------------------------

    def finish_check(self, session_id: str, owner: str, generation: int, *, complete: bool,
                     problems: list[Problem], player_id: str = "", manifest_sha256: str = "",
                     duration_s: float = 0.0, frame_count: int = 0) -> SessionRecord:
        """Records a completeness check made at ``generation``: COMPLETE, or still RECEIVING with what is missing."""
        with self._sessions.begin() as s:
            row = s.get(SessionRow, session_id, with_for_update=not self._sqlite)
            if row is None:
                raise SessionNotFound(session_id)
            if row.lease_owner != owner:
                raise LeaseLost(f"session {session_id}: lease lost during the completeness check")
            row.checked_generation = max(row.checked_generation, generation)
            row.problems_json = _problems_json(problems)
            if player_id:
                row.player_id = player_id
            # Something changed while we looked: stay RECEIVING, the next scan checks again.
            if complete and row.generation == generation and row.state == S.RECEIVING.value:
                self._move(row, S.COMPLETE)
                row.manifest_sha256, row.duration_s, row.frame_count = manifest_sha256, duration_s, frame_count
            else:
                row.lease_owner, row.lease_expires_s = None, 0.0
                row.updated_at = self._now()
            return _session(row)

    # ---- COMPLETE → VALIDATED | REJECTED | RECEIVING ------------------------------------------------

    def finish_validation(self, session_id: str, owner: str, dst: SessionState, problems: list[Problem],
                          warnings: list[Problem]) -> SessionRecord:
        """Records the deep validation's verdict (every problem and warning)."""
        with self._sessions.begin() as s:
            row = self._owned(s, session_id, owner, dst)
            row.problems_json = _problems_json(problems)
            row.warnings_json = _problems_json(warnings)
            if dst == S.RECEIVING:
                row.checked_generation = 0  # check again from scratch
            self._move(row, dst)
            return _session(row)

    # ---- dispatch ----------------------------------------------------------------------------------

    def start_attempt(self, session_id: str, owner: str, attempt_id: str) -> SessionRecord:
        """VALIDATED → PROCESSING; counts the attempt and keeps the lease for the dispatch."""
        with self._sessions.begin() as s:
            row = self._owned(s, session_id, owner, S.PROCESSING)
            row.attempts += 1
            row.attempt_id = attempt_id
            self._move(row, S.PROCESSING, keep_lease=True)
            return _session(row)

    def adopt_orphan(self, session_id: str, owner: str, lease_s: float) -> SessionRecord | None:
        """Takes over a PROCESSING session whose dispatcher's lease expired; None if another replica did."""
        now = self._clock()
        with self._sessions.begin() as s:
            got = s.execute(update(SessionRow).where(
                SessionRow.session_id == session_id, SessionRow.state == S.PROCESSING.value,
                SessionRow.lease_expires_s < now).values(lease_owner=owner, lease_expires_s=now + lease_s)).rowcount
            return _session(s.get(SessionRow, session_id)) if got == 1 else None

    def finish_processed(self, session_id: str, owner: str, attempt_id: str, *, segments: list[SegmentRecord],
                         qc_report_uri: str, problems: list[Problem],
                         fingerprints: SessionFingerprints | None = None,
                         processor_version: str = "") -> SessionRecord:
        """PROCESSING → PROCESSED with the attempt's segments, replacing any earlier ones, in one transaction.

        With ``fingerprints``, segments that replay an earlier session are first marked rejected
        (``duplicate_frames``, ``duplicate_log``; see :meth:`_judge_replays`), so everything after
        that in this transaction sees only the segments that stay accepted.
        """
        with self._sessions.begin() as s:
            self._lock_replay_index(s, session_id)
            row = self._owned(s, session_id, owner, S.PROCESSED)
            if row.attempt_id != attempt_id:
                raise LeaseLost(f"session {session_id}: attempt {attempt_id} is not the current {row.attempt_id}")
            if fingerprints is not None:
                segments, problems = self._judge_replays(s, session_id, segments, problems, fingerprints)
            self._replace_segments(s, session_id, row.player_id, attempt_id, segments)
            self.ledger.settle_session(s, session_id, row.player_id, segments)
            row.segments_accepted = sum(1 for seg in segments if seg.accepted)
            row.segments_rejected = sum(1 for seg in segments if not seg.accepted)
            row.qc_report_uri = qc_report_uri
            row.problems_json = _problems_json(problems)
            row.last_error = ""
            row.processed_at = self._now()
            row.processor_version = processor_version[:128]
            self._move(row, S.PROCESSED)
            return _session(row)

    def _replace_segments(self, s: Session, session_id: str, player_id: str, attempt_id: str,
                          segments: list[SegmentRecord]) -> None:
        # A segment a ledger credit points at keeps its row (rejected if this attempt no longer has it),
        # so every credit and reversal links to a segment of the catalog.
        credited = self.ledger.credited_segment_ids(s, session_id)
        new_ids = {seg.segment_id for seg in segments}
        s.execute(delete(SegmentRow).where(SegmentRow.session_id == session_id,
                                           SegmentRow.segment_id.not_in(credited | new_ids)))
        s.execute(update(SegmentRow).where(SegmentRow.session_id == session_id,
                                           SegmentRow.segment_id.in_(credited - new_ids)).values(
            accepted=False, reasons_json=json.dumps(["not_in_latest_processing"]), attempt_id=attempt_id))
        s.scalars(select(SegmentRow).where(SegmentRow.session_id == session_id)).all()  # merge finds them loaded
        for seg in segments:
            s.merge(SegmentRow(
                segment_id=seg.segment_id, session_id=session_id, player_id=seg.player_id or player_id,
                index=seg.index, accepted=seg.accepted, reasons_json=json.dumps(seg.reasons),
                frames=seg.frames, duration_s=seg.duration_s, t_start_ms=seg.t_start_ms,
                t_end_ms=seg.t_end_ms, distance_m=seg.distance_m, mean_speed_mps=seg.mean_speed_mps,
                command_counts_json=json.dumps(seg.command_counts, sort_keys=True),
                attempt_id=attempt_id, uri=seg.uri, infractions_json=json.dumps(seg.infractions, sort_keys=True),
                diffusion_frames=seg.diffusion_frames, route_progress_start=seg.route_progress_start,
                route_progress_end=seg.route_progress_end))

    # ---- replays -----------------------------------------------------------------------------------

    def _lock_replay_index(self, s: Session, session_id: str) -> None:
        """Makes this transaction the only one checking and extending the replay index until it ends.

        Two replicas registering two copies at once must not both find the index without the other.
        PostgreSQL: a transaction-scoped advisory lock. SQLite: its one writer at a time, taken now by
        a first write (the driver begins the transaction only at the first write, and reads before it
        would see the index as it was before another writer's commit).
        """
        if self._sqlite:
            s.execute(update(SessionRow).where(SessionRow.session_id == session_id)
                      .values(updated_at=SessionRow.updated_at))
        else:
            s.execute(select(func.pg_advisory_xact_lock(_REPLAY_LOCK_KEY)))

    def _judge_replays(self, s: Session, session_id: str, segments: list[SegmentRecord], problems: list[Problem],
                       fingerprints: SessionFingerprints) -> tuple[list[SegmentRecord], list[Problem]]:
        """Rejects the segments that replay an earlier session and records this session's fingerprints.

        Earlier: registered before this session first was (its place is kept when it is processed
        again), so the original keeps its segments and the same session never matches itself. Every
        segment's pictures are recorded, accepted or not: a replay of a rejected drive is still one.
        """
        me = s.scalars(select(ReplaySessionRow).where(ReplaySessionRow.session_id == session_id)).first()
        if me is None:
            me = ReplaySessionRow(session_id=session_id, registered_at=self._now())
            s.add(me)
        me.log_fingerprint = fingerprints.log_fingerprint
        s.flush()
        same_log = None
        if fingerprints.log_fingerprint:
            same_log = s.scalars(select(ReplaySessionRow.session_id).where(
                ReplaySessionRow.log_fingerprint == fingerprints.log_fingerprint, ReplaySessionRow.seq < me.seq)
                .order_by(ReplaySessionRow.seq).limit(1)).first()
        repeats: dict[str, list[str]] = {}
        judged: list[SegmentRecord] = []
        for seg in segments:
            reasons = list(seg.reasons)
            hashes = fingerprints.frames.get(seg.segment_id, [])
            match = None
            if len(hashes) >= replays.MIN_MATCHES:
                bands = [band for h in hashes for band in enumerate(replays.band_values(h.value))]
                wanted = [col.in_(sorted({v for k, v in bands if k == n})) for n, col in enumerate(_BAND_COLUMNS)]
                rows = s.execute(
                    select(FrameHashRow.session_id, FrameHashRow.t_ms, FrameHashRow.hash_hex, ReplaySessionRow.seq)
                    .join(ReplaySessionRow, ReplaySessionRow.session_id == FrameHashRow.session_id)
                    .where(ReplaySessionRow.seq < me.seq, or_(*wanted))).all()
                match = replays.match_segment(
                    hashes, [replays.IndexedHash(sid, int(t), replays.parse_hash(hx)) for sid, t, hx, _ in rows],
                    order={sid: seq for sid, _, _, seq in rows})
            if match is not None:
                reasons.append(replays.REASON_FRAMES)
                repeats.setdefault(match.session_id, []).append(
                    f"{seg.segment_id} ({match.matched} of {match.sampled} pictures, {match.offset_ms:+.0f} ms)")
            if same_log is not None:
                reasons.append(replays.REASON_LOG)
            if reasons != list(seg.reasons):
                seg = dataclasses.replace(seg, accepted=False, reasons=reasons)
            judged.append(seg)
        problems = list(problems)
        if same_log is not None:
            problems.append(Problem(replays.REASON_LOG, EVENTS_NAME,
                                    f"{EVENTS_NAME} repeats the input log of session {same_log}, registered earlier: "
                                    "the session is a replay, and none of its segments is accepted"))
        for other, which in repeats.items():
            problems.append(Problem(replays.REASON_FRAMES, VIDEO_NAME,
                                    f"{len(which)} segments repeat the pictures of session {other}, registered "
                                    f"earlier, and are rejected: {', '.join(which)}"))
        s.execute(delete(FrameHashRow).where(FrameHashRow.session_id == session_id))
        for seg in segments:
            for h in fingerprints.frames.get(seg.segment_id, []):
                s.add(FrameHashRow(session_id=session_id, segment_index=seg.index, t_ms=h.t_ms,
                                   hash_hex=f"{h.value:016x}",
                                   **{f"band{k}": v for k, v in enumerate(replays.band_values(h.value))}))
        return judged, problems

    def replay_index_size(self) -> tuple[int, int]:
        """(sessions, hashed pictures) in the replay index."""
        with self._sessions() as s:
            return (s.scalar(select(func.count()).select_from(ReplaySessionRow)) or 0,
                    s.scalar(select(func.count()).select_from(FrameHashRow)) or 0)

    def finish_failed_attempt(self, session_id: str, owner: str, error: str, *, permanent: bool,
                              max_attempts: int, backoff_s: float) -> SessionRecord:
        """PROCESSING → VALIDATED (retry after ``backoff_s``) or FAILED (permanent, or attempts exhausted)."""
        with self._sessions.begin() as s:
            row = s.get(SessionRow, session_id, with_for_update=not self._sqlite)
            if row is None:
                raise SessionNotFound(session_id)
            if row.lease_owner != owner:
                raise LeaseLost(f"session {session_id}: lease lost before recording a failed attempt")
            dst = S.FAILED if permanent or row.attempts >= max_attempts else S.VALIDATED
            check_transition(session_id, SessionState(row.state), dst)
            row.last_error = error[:4000]
            row.next_attempt_s = self._clock() + backoff_s if dst == S.VALIDATED else 0.0
            self._move(row, dst)
            return _session(row)

    def reprocess(self, session_id: str) -> SessionRecord:
        """Operator's request: PROCESSED/FAILED → VALIDATED (attempts reset), REJECTED → COMPLETE (validate again)."""
        with self._sessions.begin() as s:
            row = s.get(SessionRow, session_id, with_for_update=not self._sqlite)
            if row is None:
                raise SessionNotFound(session_id)
            src = SessionState(row.state)
            dst = S.COMPLETE if src == S.REJECTED else S.VALIDATED
            check_transition(session_id, src, dst)
            if row.lease_owner is not None and row.lease_expires_s >= self._clock():
                raise InvalidTransition(session_id, src, dst)
            row.attempts, row.next_attempt_s, row.last_error = 0, 0.0, ""
            self._move(row, dst)
            return _session(row)

    def reprocess_for_run(self, session_id: str, run_id: str, states: Iterable[SessionState]) -> SessionRecord | None:
        """Sends a session back as :meth:`reprocess` does, on behalf of reprocessing run ``run_id``.

        One conditional UPDATE: only a session in ``states``, under no live lease, and not sent by this
        run before moves (the run id is recorded with the move). None when it did not move, so two
        workers of one shard, or a shard run twice, send each session once.
        """
        wanted = [st.value for st in states]
        bad = sorted(set(wanted) - {S.PROCESSED.value, S.FAILED.value, S.REJECTED.value})
        if bad:
            raise InvalidTransition(session_id, bad[0], S.VALIDATED.value)
        now = self._clock()
        with self._sessions.begin() as s:
            got = s.execute(update(SessionRow).where(
                SessionRow.session_id == session_id, SessionRow.state.in_(wanted),
                SessionRow.reprocess_run != run_id,
                or_(SessionRow.lease_owner.is_(None), SessionRow.lease_expires_s < now)).values(
                state=case((SessionRow.state == S.REJECTED.value, S.COMPLETE.value), else_=S.VALIDATED.value),
                attempts=0, next_attempt_s=0.0, last_error="", reprocess_run=run_id[:64],
                lease_owner=None, lease_expires_s=0.0, updated_at=self._now())).rowcount
            return _session(s.get(SessionRow, session_id)) if got == 1 else None

    # ---- queries -----------------------------------------------------------------------------------

    def select_sessions(self, *, states: Iterable[SessionState], run_id: str = "", processor_version: str | None = None,
                        received_since: datetime | None = None, received_until: datetime | None = None,
                        processed_since: datetime | None = None, processed_until: datetime | None = None,
                        after_id: str = "", limit: int = 500) -> list[SelectedSession]:
        """Sessions in id order after ``after_id`` that a reprocessing run selects: in ``states`` and
        every filter given (since inclusive, until exclusive), or already sent by ``run_id``."""
        picked = [SessionRow.state.in_([st.value for st in states])]
        if processor_version is not None:
            picked.append(SessionRow.processor_version == processor_version)
        for column, since, until in ((SessionRow.created_at, received_since, received_until),
                                     (SessionRow.processed_at, processed_since, processed_until)):
            if since is not None:
                picked.append(column >= since)
            if until is not None:
                picked.append(column < until)
        wanted = and_(*picked)
        if run_id:
            wanted = or_(wanted, SessionRow.reprocess_run == run_id)
        q = select(SessionRow.session_id, SessionRow.reprocess_run).where(wanted)
        if after_id:
            q = q.where(SessionRow.session_id > after_id)
        with self._sessions() as s:
            return [SelectedSession(sid, run or "") for sid, run in s.execute(q.order_by(SessionRow.session_id).limit(limit))]

    def get_sessions(self, session_ids: Iterable[str]) -> dict[str, SessionRecord]:
        """Session id → record of those of ``session_ids`` in the catalog."""
        ids = list(session_ids)
        out: dict[str, SessionRecord] = {}
        with self._sessions() as s:
            for start in range(0, len(ids), 500):
                for row in s.scalars(select(SessionRow).where(SessionRow.session_id.in_(ids[start:start + 500]))):
                    out[row.session_id] = _session(row)
        return out

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None."""
        with self._sessions() as s:
            row = s.get(SessionRow, session_id)
            return _session(row) if row else None

    def list_sessions(self, *, states: Iterable[SessionState] = (), limit: int = 50,
                      after_id: str = "") -> list[SessionRecord]:
        """Sessions in id order after ``after_id``, optionally only in ``states``."""
        q = select(SessionRow)
        wanted = [st.value for st in states]
        if wanted:
            q = q.where(SessionRow.state.in_(wanted))
        if after_id:
            q = q.where(SessionRow.session_id > after_id)
        with self._sessions() as s:
            return [_session(r) for r in s.scalars(q.order_by(SessionRow.session_id).limit(limit))]

    def counts_by_state(self) -> dict[SessionState, int]:
        """How many sessions are in each state (every state present, zero if none)."""
        with self._sessions() as s:
            rows = s.execute(select(SessionRow.state, func.count()).group_by(SessionRow.state)).all()
        counts = {st: 0 for st in SessionState}
        counts.update({SessionState(state): n for state, n in rows})
        return counts

    def object_deliveries(self, session_id: str) -> dict[str, int]:
        """Key → how many times its event was delivered (duplicates included)."""
        with self._sessions() as s:
            rows = s.execute(select(ObjectRow.key, ObjectRow.deliveries).where(ObjectRow.session_id == session_id))
            return dict(rows.all())

    def segments(self, session_id: str) -> list[SegmentRecord]:
        """Every segment recorded for a session, in index order."""
        with self._sessions() as s:
            q = select(SegmentRow).where(SegmentRow.session_id == session_id).order_by(SegmentRow.index)
            return [_segment(r) for r in s.scalars(q)]

    def accepted_segments(self) -> list[SegmentRecord]:
        """Accepted segments of PROCESSED sessions, ordered by segment id (the input of a dataset)."""
        q = (select(SegmentRow).join(SessionRow, SessionRow.session_id == SegmentRow.session_id)
             .where(SegmentRow.accepted.is_(True), SessionRow.state == S.PROCESSED.value)
             .order_by(SegmentRow.segment_id))
        with self._sessions() as s:
            return [_segment(r) for r in s.scalars(q)]

    # ---- datasets ----------------------------------------------------------------------------------

    def add_dataset(self, record: DatasetRecord) -> tuple[DatasetRecord, bool]:
        """Registers a dataset version; returns (the stored record, True if it was new)."""
        with self._sessions.begin() as s:
            values = dict(record.__dict__)
            inserted = self._insert_ignore(s, DatasetRow, values)
            return _dataset(s.get(DatasetRow, record.dataset_id)), inserted

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset version, or None."""
        with self._sessions() as s:
            row = s.get(DatasetRow, dataset_id)
            return _dataset(row) if row else None

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> list[DatasetRecord]:
        """Dataset versions, newest first."""
        q = select(DatasetRow).order_by(DatasetRow.created_at.desc(), DatasetRow.dataset_id).offset(offset).limit(limit)
        with self._sessions() as s:
            return [_dataset(r) for r in s.scalars(q)]
