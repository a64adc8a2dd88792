"""The contribution ledger: an append-only, double-entry record of every point a player earned (docs/rewards.md).

It lives in the catalog's database, beside the segments it pays for.

Accounts: ``issuance`` (where points come from; its balance is minus everything ever credited),
``player:<id>:pending`` (credited, in no payout epoch yet), ``player:<id>:epoch`` (in a closed epoch
whose transfers are not yet marked paid) and ``player:<id>:paid``.

Every change is one journal transaction whose postings sum to zero:

* credit    issuance −m, player:<id>:pending +m      one accepted segment, priced by a rule
* reversal  player:<id>:pending −m, issuance +m      a credited segment that reprocessing rejected or dropped
* epoch     player:<id>:pending −n, player:<id>:epoch +n   per paid player, at an epoch's close
* paid      player:<id>:epoch −n, player:<id>:paid +n      when the operator marks the epoch paid

Append-only: this module only ever INSERTs into the ledger's tables, and database triggers (SQLite and
PostgreSQL, made beside the tables) abort any UPDATE or DELETE of them. The two small tables that do
change, ``ledger_player_days`` (a player's live credits of one UTC day, the row that serialises their
credits against the daily cap; a reversal gives its day the room back) and ``ledger_locks`` (serialises epoch closes and payments), are counters, not the record:
the audit recomputes them from the postings.

A segment is credited once: ``(segment_id, credit_no)`` is unique, and ``credit_no`` is the number of
reversals the segment has had. A session processed again keeps its credits for segments still
accepted (priced once, never re-priced); a credited segment that is now rejected or gone gets a
reversal (a new entry, never a changed one); a segment accepted again after its reversal is credited
anew with the next ``credit_no``. The same result arriving twice changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
    func,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sd_ingest.pricing import CLASSES, PricingRule, SegmentFacts, class_seconds, price_segment

ISSUANCE = "issuance"
PAYOUT_FORMAT = "scale-diffusion-payout-v1"
_NO_CAP = 0


def pending_account(player_id: str) -> str:
    """The account of a player's credits in no epoch yet."""
    return f"player:{player_id}:pending"


def epoch_account(player_id: str) -> str:
    """The account of a player's points in a closed, unpaid epoch."""
    return f"player:{player_id}:epoch"


def paid_account(player_id: str) -> str:
    """The account of a player's paid points."""
    return f"player:{player_id}:paid"


class LedgerError(Exception):
    """Base of the ledger's errors."""


class EpochNotFound(LedgerError):
    """No payout epoch with that id."""


class EpochInvalid(LedgerError):
    """An epoch request that cannot be right (bad id, end time in the future)."""


class EpochAlreadyPaid(LedgerError):
    """The epoch was marked paid with another reference."""


@dataclass(frozen=True)
class LedgerConfig:
    """The pricing rule, the daily cap and the token conversion."""

    rule: PricingRule = field(default_factory=PricingRule)
    daily_cap_millipoints: int = 3_600_000  # 0: no cap
    token_decimals: int = 6
    base_units_per_point: int = 1_000_000


class _Base(DeclarativeBase):
    pass


class AccountRow(_Base):
    __tablename__ = "ledger_accounts"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(128), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TransactionRow(_Base):
    __tablename__ = "ledger_transactions"
    txn_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<kind>:<entry or epoch id>"
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PostingRow(_Base):
    __tablename__ = "ledger_postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    txn_id: Mapped[str] = mapped_column(String(200), index=True)
    account: Mapped[str] = mapped_column(String(200), index=True)
    millipoints: Mapped[int] = mapped_column(BigInteger)


class CreditRow(_Base):
    __tablename__ = "ledger_credits"
    __table_args__ = (UniqueConstraint("segment_id", "credit_no", name="uq_ledger_credit_segment"),)
    entry_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    segment_id: Mapped[str] = mapped_column(String(160))
    credit_no: Mapped[int] = mapped_column(Integer)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    player_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    day: Mapped[str] = mapped_column(String(10))  # UTC date the cap counted it on
    gross_millipoints: Mapped[int] = mapped_column(BigInteger)
    millipoints: Mapped[int] = mapped_column(BigInteger)
    rule: Mapped[str] = mapped_column(String(32))
    factors_json: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(Text, default="")
    accepted_s: Mapped[float] = mapped_column(Float)
    # Seconds by command class: the scarcity of the next segments is computed from their sums.
    follow_s: Mapped[float] = mapped_column(Float, default=0.0)
    straight_s: Mapped[float] = mapped_column(Float, default=0.0)
    turn_s: Mapped[float] = mapped_column(Float, default=0.0)
    lane_change_s: Mapped[float] = mapped_column(Float, default=0.0)


class ReversalRow(_Base):
    __tablename__ = "ledger_reversals"
    entry_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    credit_entry_id: Mapped[str] = mapped_column(String(64), unique=True)
    segment_id: Mapped[str] = mapped_column(String(160), index=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    player_id: Mapped[str] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    millipoints: Mapped[int] = mapped_column(BigInteger)  # what the credit had credited, taken back
    reason: Mapped[str] = mapped_column(Text)


class EpochRow(_Base):
    __tablename__ = "ledger_epochs"
    epoch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payout_json: Mapped[str] = mapped_column(Text)  # the canonical payout file, byte for byte
    file_sha256: Mapped[str] = mapped_column(String(64))


class EpochEntryRow(_Base):
    __tablename__ = "ledger_epoch_entries"
    entry_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # a credit's or a reversal's
    epoch_id: Mapped[str] = mapped_column(String(64), index=True)
    player_id: Mapped[str] = mapped_column(String(128), index=True)


class PaymentRow(_Base):
    __tablename__ = "ledger_payments"
    epoch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str] = mapped_column(Text)
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PlayerDayRow(_Base):
    __tablename__ = "ledger_player_days"
    player_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    credited_millipoints: Mapped[int] = mapped_column(BigInteger, default=0)


class LockRow(_Base):
    __tablename__ = "ledger_locks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    taken: Mapped[int] = mapped_column(BigInteger, default=0)


APPEND_ONLY = ("ledger_accounts", "ledger_transactions", "ledger_postings", "ledger_credits", "ledger_reversals",
               "ledger_epochs", "ledger_epoch_entries", "ledger_payments")

# The catalog's segments, read (never written) by the audit without importing the catalog.
_segments = table("catalog_segments", column("segment_id"), column("session_id"), column("player_id"),
                  column("accepted"))
_sessions = table("catalog_sessions", column("session_id"), column("state"))


def create_tables(engine: Engine) -> None:
    """Creates the ledger's tables and the triggers that refuse UPDATE and DELETE of its record."""
    _Base.metadata.create_all(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(
                "CREATE OR REPLACE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME; END $$"))
            for name in APPEND_ONLY:
                conn.execute(text(f"CREATE OR REPLACE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
                                  "FOR EACH ROW EXECUTE FUNCTION ledger_append_only()"))
        else:
            for name in APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    conn.execute(text(
                        f"CREATE TRIGGER IF NOT EXISTS {name}_no_{op.lower()} BEFORE {op} ON {name} "
                        f"BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {op} on {name} refused'); END"))
        _insert_ignore(conn, AccountRow, {"name": ISSUANCE, "player_id": "", "created_at": datetime.now(UTC)})
        for name in ("epochs",):
            _insert_ignore(conn, LockRow, {"name": name, "taken": 0})


def _insert_ignore(s: Any, model: type[_Base], values: dict) -> bool:
    """INSERT … ON CONFLICT DO NOTHING; True if the row was inserted."""
    bind = s.get_bind() if isinstance(s, Session) else s
    dialect = postgresql if bind.dialect.name == "postgresql" else sqlite
    key = model.__table__.primary_key.columns[0]
    stmt = dialect.insert(model).values(**values).on_conflict_do_nothing().returning(key)
    return s.execute(stmt).first() is not None


class LedgerSegment(Protocol):
    """What the ledger reads of a catalog segment (SegmentRecord has all of it)."""

    segment_id: str
    session_id: str
    player_id: str
    accepted: bool
    reasons: list[str]
    frames: int
    duration_s: float
    command_counts: dict[str, int]


@dataclass(frozen=True)
class CreditRecord:
    """One credit as clients see it."""

    entry_id: str
    player_id: str
    session_id: str
    segment_id: str
    millipoints: int
    gross_millipoints: int
    rule: str
    factors: dict[str, float]
    created_at: datetime
    status: str  # pending, in_epoch, paid, reversed
    epoch_id: str
    note: str
    accepted_s: float


@dataclass(frozen=True)
class SettleResult:
    """What settling a session's segments did."""

    credited: list[str]
    reversed: list[str]


@dataclass(frozen=True)
class PayoutRecord:
    """A payout epoch: the canonical file, its hash and its state."""

    epoch_id: str
    state: str  # closed, paid, dry_run
    document: dict[str, Any]
    file_bytes: bytes
    file_sha256: str
    paid_reference: str = ""
    paid_at: datetime | None = None


@dataclass(frozen=True)
class Audit:
    """Everything the ledger holds about one player, and any invariant it breaks."""

    player_id: str
    credits: list[CreditRecord]
    balances: dict[str, int]
    problems: list[str]


def rfc3339(dt: datetime) -> str:
    """UTC time as RFC 3339 with a Z and milliseconds."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 time (Z or offset) as an aware datetime; raises ValueError."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone")
    return dt.astimezone(UTC)


def canonical_payout_bytes(document: Mapping[str, Any]) -> bytes:
    """The payout file's canonical bytes: sorted keys, no spaces, ASCII, one trailing newline."""
    return (json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def player_label(player_id: str, secret: str = "") -> str:
    """A short public label for a player (a keyed hash; never the id)."""
    digest = hmac.new(secret.encode(), player_id.encode(), hashlib.sha256).hexdigest()
    return f"driver-{digest[:8]}"


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _entry_id(prefix: str, key: str) -> str:
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _facts(seg: Any) -> SegmentFacts:
    return SegmentFacts(
        duration_s=float(seg.duration_s), frames=int(seg.frames), command_counts=dict(seg.command_counts or {}),
        infractions=dict(getattr(seg, "infractions", {}) or {}),
        diffusion_frames=int(getattr(seg, "diffusion_frames", 0) or 0),
        route_progress_start=float(getattr(seg, "route_progress_start", 0.0) or 0.0),
        route_progress_end=float(getattr(seg, "route_progress_end", 0.0) or 0.0))


class Ledger:
    """The ledger over the catalog's database; ``settle_session`` runs inside the catalog's transaction."""

    def __init__(self, sessions: sessionmaker, config: LedgerConfig | None = None, *,
                 clock: Callable[[], float]) -> None:
        self._sessions = sessions
        self.config = config or LedgerConfig()
        self._clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @staticmethod
    def _pg(s: Session) -> bool:
        return s.get_bind().dialect.name == "postgresql"

    def _lock(self, s: Session, name: str) -> None:
        # An UPDATE takes PostgreSQL's row lock, and SQLite's write lock, until the commit.
        s.execute(update(LockRow).where(LockRow.name == name).values(taken=LockRow.taken + 1))

    def _post(self, s: Session, txn_id: str, kind: str, now: datetime, legs: Iterable[tuple[str, int]]) -> None:
        legs = [(account, amount) for account, amount in legs if amount != 0]
        if sum(amount for _, amount in legs) != 0:
            raise AssertionError(f"transaction {txn_id} does not balance: {legs}")
        s.add(TransactionRow(txn_id=txn_id, kind=kind, created_at=now))
        s.add_all([PostingRow(txn_id=txn_id, account=account, millipoints=amount) for account, amount in legs])

    def _accounts(self, s: Session, player_id: str, now: datetime) -> None:
        dialect = postgresql if self._pg(s) else sqlite
        s.execute(dialect.insert(AccountRow).values([
            {"name": name, "player_id": player_id, "created_at": now}
            for name in (pending_account(player_id), epoch_account(player_id), paid_account(player_id))
        ]).on_conflict_do_nothing())

    # ---- crediting (inside the catalog's transaction) ---------------------------------------------------

    def credited_segment_ids(self, s: Session, session_id: str) -> set[str]:
        """Segments of a session any credit points at (the catalog keeps their rows)."""
        return set(s.scalars(select(CreditRow.segment_id).where(CreditRow.session_id == session_id)))

    def coverage_s(self, s: Session) -> dict[str, float]:
        """Accepted seconds per command class over every live (unreversed) credit."""
        live = CreditRow.entry_id.not_in(select(ReversalRow.credit_entry_id))
        cols = [func.coalesce(func.sum(getattr(CreditRow, f"{c}_s")), 0.0) for c in CLASSES]
        row = s.execute(select(*cols).where(live)).one()
        return {c: float(v) for c, v in zip(CLASSES, row)}

    def _live_credits(self, s: Session, session_id: str) -> dict[str, CreditRow]:
        q = (select(CreditRow).where(CreditRow.session_id == session_id,
                                     CreditRow.entry_id.not_in(select(ReversalRow.credit_entry_id))))
        return {row.segment_id: row for row in s.scalars(q)}

    def settle_session(self, s: Session, session_id: str, player_id: str,
                       segments: Sequence[LedgerSegment]) -> SettleResult:
        """Credits each newly accepted segment and reverses each credited one no longer accepted.

        Runs in the caller's transaction (the one that records the segments). Idempotent: settling the
        same segments again adds nothing.
        """
        now = self._now()
        today = now.date().isoformat()
        live = self._live_credits(s, session_id)
        accepted = {seg.segment_id: seg for seg in segments if seg.accepted and (seg.player_id or player_id)}
        by_id = {seg.segment_id: seg for seg in segments}
        to_reverse = [credit for segment_id, credit in sorted(live.items()) if segment_id not in accepted]
        todo = [seg for sid, seg in sorted(accepted.items()) if sid not in live]
        if not to_reverse and not todo:
            return SettleResult([], [])
        # Every player-day row this settlement changes, locked up front in one order: no deadlocks.
        keys = sorted({(c.player_id, c.day) for c in to_reverse} | {(seg.player_id or player_id, today) for seg in todo})
        days = {key: self._lock_day(s, *key) for key in keys}
        reversed_ids: list[str] = []
        for credit in to_reverse:
            seg = by_id.get(credit.segment_id)
            reason = (f"rejected on reprocessing: {', '.join(seg.reasons) or 'no reason given'}" if seg is not None
                      else "not among the segments of the latest processing")
            reversed_ids.append(self._reverse(s, credit, reason, now))
            days[(credit.player_id, credit.day)].credited_millipoints -= credit.millipoints  # room again
        credited: list[str] = []
        if todo:
            coverage = self.coverage_s(s)
            for player in sorted({seg.player_id or player_id for seg in todo}):
                mine = [seg for seg in todo if (seg.player_id or player_id) == player]
                credited += self._credit_player(s, player, mine, days[(player, today)], coverage, now)
        return SettleResult(credited, reversed_ids)

    def _lock_day(self, s: Session, player_id: str, day: str) -> PlayerDayRow:
        _insert_ignore(s, PlayerDayRow, {"player_id": player_id, "day": day, "credited_millipoints": 0})
        q = select(PlayerDayRow).where(PlayerDayRow.player_id == player_id, PlayerDayRow.day == day)
        return s.scalars(q.with_for_update() if self._pg(s) else q).one()

    def _credit_player(self, s: Session, player_id: str, segments: list[LedgerSegment], day_row: PlayerDayRow,
                       coverage: dict[str, float], now: datetime) -> list[str]:
        day = day_row.day
        cap = self.config.daily_cap_millipoints
        self._accounts(s, player_id, now)
        done = []
        reversals = dict(s.execute(select(ReversalRow.segment_id, func.count()).where(
            ReversalRow.segment_id.in_([seg.segment_id for seg in segments])).group_by(ReversalRow.segment_id)).all())
        for seg in segments:
            facts = _facts(seg)
            price = price_segment(self.config.rule, facts, coverage)
            amount, note = price.millipoints, ""
            so_far = day_row.credited_millipoints
            if cap != _NO_CAP and so_far + amount > cap:
                amount = max(0, cap - so_far)
                note = (f"daily cap of {cap} millipoints reached on {day} (UTC): "
                        f"{price.millipoints - amount} of {price.millipoints} not credited")
            credit_no = reversals.get(seg.segment_id, 0)
            entry_id = _entry_id("c", f"{seg.segment_id}#{credit_no}")
            per_class = class_seconds(facts)
            inserted = _insert_ignore(s, CreditRow, dict(
                entry_id=entry_id, segment_id=seg.segment_id, credit_no=credit_no, session_id=seg.session_id,
                player_id=player_id, created_at=now, day=day, gross_millipoints=price.millipoints,
                millipoints=amount, rule=price.rule, factors_json=json.dumps(price.factors, sort_keys=True),
                note=note, accepted_s=facts.duration_s, **{f"{c}_s": per_class[c] for c in CLASSES}))
            if not inserted:
                continue  # the same segment, credited by the same result already
            self._post(s, f"credit:{entry_id}", "credit", now,
                       [(ISSUANCE, -amount), (pending_account(player_id), amount)])
            day_row.credited_millipoints = so_far + amount
            for c in CLASSES:
                coverage[c] = coverage.get(c, 0.0) + per_class[c]
            done.append(entry_id)
        return done

    def _reverse(self, s: Session, credit: CreditRow, reason: str, now: datetime) -> str:
        entry_id = _entry_id("r", credit.entry_id)
        s.add(ReversalRow(entry_id=entry_id, credit_entry_id=credit.entry_id, segment_id=credit.segment_id,
                          session_id=credit.session_id, player_id=credit.player_id, created_at=now,
                          millipoints=credit.millipoints, reason=reason))
        self._post(s, f"reversal:{entry_id}", "reversal", now,
                   [(pending_account(credit.player_id), -credit.millipoints), (ISSUANCE, credit.millipoints)])
        s.flush()
        return entry_id

    # ---- reading ---------------------------------------------------------------------------------------

    def _credit_records(self, s: Session, rows: Sequence[CreditRow]) -> list[CreditRecord]:
        ids = [r.entry_id for r in rows]
        if not ids:
            return []
        reversed_ = set(s.scalars(select(ReversalRow.credit_entry_id).where(ReversalRow.credit_entry_id.in_(ids))))
        epochs = dict(s.execute(select(EpochEntryRow.entry_id, EpochEntryRow.epoch_id)
                                .where(EpochEntryRow.entry_id.in_(ids))).all())
        paid = set(s.scalars(select(PaymentRow.epoch_id).where(PaymentRow.epoch_id.in_(set(epochs.values())))))
        out = []
        for r in rows:
            epoch = epochs.get(r.entry_id, "")
            status = ("reversed" if r.entry_id in reversed_ else "paid" if epoch in paid and epoch
                      else "in_epoch" if epoch else "pending")
            out.append(CreditRecord(
                entry_id=r.entry_id, player_id=r.player_id, session_id=r.session_id, segment_id=r.segment_id,
                millipoints=r.millipoints, gross_millipoints=r.gross_millipoints, rule=r.rule,
                factors=json.loads(r.factors_json), created_at=_utc(r.created_at), status=status, epoch_id=epoch,
                note=r.note, accepted_s=r.accepted_s))
        return out

    def credits(self, *, player_id: str | None = None, session_id: str | None = None, newest_first: bool = True,
                limit: int = 1000, offset: int = 0) -> list[CreditRecord]:
        """Credits of a player or a session, newest (or oldest) first."""
        q = select(CreditRow)
        if player_id is not None:
            q = q.where(CreditRow.player_id == player_id)
        if session_id is not None:
            q = q.where(CreditRow.session_id == session_id)
        order = (CreditRow.created_at.desc(), CreditRow.entry_id.desc()) if newest_first else (
            CreditRow.created_at, CreditRow.entry_id)
        with self._sessions() as s:
            rows = list(s.scalars(q.order_by(*order).offset(offset).limit(limit)))
            return self._credit_records(s, rows)

    def balances(self, player_id: str | None = None) -> dict[str, int]:
        """Account → balance (every account of the player, or all accounts)."""
        q = select(PostingRow.account, func.sum(PostingRow.millipoints)).group_by(PostingRow.account)
        if player_id is not None:
            q = q.where(PostingRow.account.in_([pending_account(player_id), epoch_account(player_id),
                                                paid_account(player_id)]))
        with self._sessions() as s:
            got = {a: int(v) for a, v in s.execute(q).all()}
        if player_id is not None:
            for name in (pending_account(player_id), epoch_account(player_id), paid_account(player_id)):
                got.setdefault(name, 0)
        return got

    def today_millipoints(self, player_id: str) -> int:
        """What the player was credited today (UTC), against the cap."""
        with self._sessions() as s:
            row = s.get(PlayerDayRow, (player_id, self._now().date().isoformat()))
            return row.credited_millipoints if row else 0

    def accepted_s(self, player_id: str) -> float:
        """Seconds of the player's live credits."""
        with self._sessions() as s:
            q = select(func.coalesce(func.sum(CreditRow.accepted_s), 0.0)).where(
                CreditRow.player_id == player_id, CreditRow.entry_id.not_in(select(ReversalRow.credit_entry_id)))
            return float(s.scalar(q))

    def leaderboard(self, start: datetime, end: datetime) -> list[tuple[str, int, float]]:
        """(player, millipoints, accepted seconds) of live credits made in [start, end), highest first."""
        q = (select(CreditRow.player_id, func.sum(CreditRow.millipoints), func.sum(CreditRow.accepted_s))
             .where(CreditRow.created_at >= start, CreditRow.created_at < end,
                    CreditRow.entry_id.not_in(select(ReversalRow.credit_entry_id)))
             .group_by(CreditRow.player_id))
        with self._sessions() as s:
            rows = [(p, int(m), float(a)) for p, m, a in s.execute(q).all()]
        return sorted(rows, key=lambda r: (-r[1], -r[2], r[0]))

    # ---- epochs ----------------------------------------------------------------------------------------

    def _payout(self, s: Session, row: EpochRow) -> PayoutRecord:
        pay = s.get(PaymentRow, row.epoch_id)
        data = row.payout_json.encode()
        return PayoutRecord(row.epoch_id, "paid" if pay else "closed", json.loads(data), data, row.file_sha256,
                            pay.reference if pay else "", _utc(pay.paid_at) if pay else None)

    def close_epoch(self, epoch_id: str, end_time: datetime | None, wallets: Mapping[str, str], *,
                    dry_run: bool = False) -> tuple[PayoutRecord, bool]:
        """Moves every pending entry before ``end_time`` of each player with a wallet into the epoch.

        Returns (payout, created); an epoch already closed is returned unchanged with created False.
        A dry run computes the payout and writes nothing.
        """
        if not epoch_id or len(epoch_id) > 64 or not all(ch.isalnum() or ch in "._-" for ch in epoch_id):
            raise EpochInvalid(f"epoch id {epoch_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        now = self._now()
        end = end_time or now
        if end > now:
            raise EpochInvalid(f"end time {rfc3339(end)} is in the future (now {rfc3339(now)})")
        with self._sessions.begin() as s:
            if not dry_run:
                self._lock(s, "epochs")
            existing = s.get(EpochRow, epoch_id)
            if existing is not None:
                return self._payout(s, existing), False
            in_epoch = select(EpochEntryRow.entry_id)
            entries: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for eid, player, mp in s.execute(select(CreditRow.entry_id, CreditRow.player_id, CreditRow.millipoints)
                                             .where(CreditRow.created_at < end, CreditRow.entry_id.not_in(in_epoch))):
                entries[player].append((eid, mp))
            for eid, player, mp in s.execute(select(ReversalRow.entry_id, ReversalRow.player_id, ReversalRow.millipoints)
                                             .where(ReversalRow.created_at < end,
                                                    ReversalRow.entry_id.not_in(in_epoch))):
                entries[player].append((eid, -mp))
            cfg = self.config
            lines, without = [], []
            for player in sorted(entries):
                total = sum(mp for _, mp in entries[player])
                if total <= 0:
                    continue  # nothing owed (or a reversal to recover first): stays pending
                wallet = wallets.get(player, "")
                if not wallet:
                    without.append(player)
                    continue
                lines.append({"player_id": player, "wallet": wallet, "millipoints": total,
                              "token_amount": total * cfg.base_units_per_point // 1000,
                              "entries": sorted(eid for eid, _ in entries[player])})
            doc = {"format": PAYOUT_FORMAT, "epoch_id": epoch_id, "end_time": rfc3339(end), "closed_at": rfc3339(now),
                   "token": {"decimals": cfg.token_decimals, "base_units_per_point": cfg.base_units_per_point},
                   "lines": lines, "total_millipoints": sum(ln["millipoints"] for ln in lines),
                   "total_token_amount": sum(ln["token_amount"] for ln in lines),
                   "players_without_wallet": without}
            data = canonical_payout_bytes(doc)
            sha = hashlib.sha256(data).hexdigest()
            if dry_run:
                return PayoutRecord(epoch_id, "dry_run", doc, data, sha), True
            s.add(EpochRow(epoch_id=epoch_id, end_time=end, closed_at=now, payout_json=data.decode(), file_sha256=sha))
            for ln in lines:
                self._accounts(s, ln["player_id"], now)
                s.add_all([EpochEntryRow(entry_id=eid, epoch_id=epoch_id, player_id=ln["player_id"])
                           for eid in ln["entries"]])
            legs = [leg for ln in lines for leg in ((pending_account(ln["player_id"]), -ln["millipoints"]),
                                                    (epoch_account(ln["player_id"]), ln["millipoints"]))]
            if legs:
                self._post(s, f"epoch:{epoch_id}", "epoch", now, legs)
            return PayoutRecord(epoch_id, "closed", doc, data, sha), True

    def get_payout(self, epoch_id: str) -> PayoutRecord:
        """A closed epoch's payout."""
        with self._sessions() as s:
            row = s.get(EpochRow, epoch_id)
            if row is None:
                raise EpochNotFound(f"no payout epoch {epoch_id!r}")
            return self._payout(s, row)

    def mark_paid(self, epoch_id: str, reference: str) -> PayoutRecord:
        """Records that the epoch's transfers were sent; again with the same reference changes nothing."""
        if not reference.strip():
            raise EpochInvalid("a reference (e.g. the transaction signatures) is required to mark an epoch paid")
        now = self._now()
        with self._sessions.begin() as s:
            self._lock(s, "epochs")
            row = s.get(EpochRow, epoch_id)
            if row is None:
                raise EpochNotFound(f"no payout epoch {epoch_id!r}")
            pay = s.get(PaymentRow, epoch_id)
            if pay is not None:
                if pay.reference != reference:
                    raise EpochAlreadyPaid(f"epoch {epoch_id} was marked paid on {rfc3339(_utc(pay.paid_at))} "
                                           f"with reference {pay.reference!r}")
                return self._payout(s, row)
            lines = json.loads(row.payout_json)["lines"]
            s.add(PaymentRow(epoch_id=epoch_id, reference=reference, paid_at=now))
            legs = [leg for ln in lines for leg in ((epoch_account(ln["player_id"]), -ln["millipoints"]),
                                                    (paid_account(ln["player_id"]), ln["millipoints"]))]
            if legs:
                self._post(s, f"paid:{epoch_id}", "paid", now, legs)
            s.flush()
            return self._payout(s, row)

    # ---- audit -----------------------------------------------------------------------------------------

    def audit(self, player_id: str) -> Audit:
        """The player's credits (oldest first), balances and every invariant of theirs that fails."""
        credits = self.credits(player_id=player_id, newest_first=False, limit=10**9)
        return Audit(player_id, credits, self.balances(player_id), self.check(player_id))

    def check(self, player_id: str | None = None) -> list[str]:
        """Invariant violations of one player's part of the ledger (or all of it); empty when sound."""
        problems: list[str] = []
        with self._sessions() as s:
            credits = s.scalars(select(CreditRow) if player_id is None
                                else select(CreditRow).where(CreditRow.player_id == player_id)).all()
            reversals = {r.credit_entry_id: r for r in s.scalars(
                select(ReversalRow) if player_id is None else
                select(ReversalRow).where(ReversalRow.player_id == player_id))}
            postings: dict[str, list[tuple[str, int]]] = defaultdict(list)
            for txn, account, mp in s.execute(select(PostingRow.txn_id, PostingRow.account, PostingRow.millipoints)):
                postings[txn].append((account, mp))
            for txn, legs in postings.items():
                if sum(mp for _, mp in legs) != 0:
                    problems.append(f"transaction {txn} does not sum to zero: {legs}")
            segs = {sid: (acc, sess) for sid, acc, sess in s.execute(
                select(_segments.c.segment_id, _segments.c.accepted, _segments.c.session_id).where(
                    _segments.c.segment_id.in_({c.segment_id for c in credits})))} if credits else {}
            live_per_segment: dict[str, int] = defaultdict(int)
            per_day: dict[tuple[str, str], int] = defaultdict(int)
            for c in credits:
                if c.entry_id not in reversals:
                    per_day[(c.player_id, c.day)] += c.millipoints
                legs = sorted(postings.get(f"credit:{c.entry_id}", []))
                want = sorted(leg for leg in [(ISSUANCE, -c.millipoints), (pending_account(c.player_id), c.millipoints)]
                              if leg[1] != 0)
                if legs != want:
                    problems.append(f"credit {c.entry_id}: postings {legs} are not {want}")
                if c.millipoints > c.gross_millipoints or c.millipoints < 0:
                    problems.append(f"credit {c.entry_id}: credited {c.millipoints} outside 0..{c.gross_millipoints}")
                if c.segment_id not in segs:
                    problems.append(f"credit {c.entry_id}: segment {c.segment_id} is not in the catalog")
                elif c.entry_id not in reversals:
                    live_per_segment[c.segment_id] += 1
                    if not segs[c.segment_id][0]:
                        problems.append(f"credit {c.entry_id}: segment {c.segment_id} is rejected but not reversed")
            for sid, n in live_per_segment.items():
                if n > 1:
                    problems.append(f"segment {sid} is credited {n} times")
            cap = self.config.daily_cap_millipoints
            for player, day in s.execute(select(PlayerDayRow.player_id, PlayerDayRow.day) if player_id is None else
                                         select(PlayerDayRow.player_id, PlayerDayRow.day)
                                         .where(PlayerDayRow.player_id == player_id)).all():
                per_day.setdefault((player, day), 0)
            for (player, day), total in sorted(per_day.items()):
                if cap != _NO_CAP and total > cap:
                    problems.append(f"player {player} was credited {total} on {day}, over the cap of {cap}")
                row = s.get(PlayerDayRow, (player, day))
                if (row.credited_millipoints if row else 0) != total:
                    problems.append(f"player {player} on {day}: the day's counter disagrees with its live credits "
                                    f"({total})")
            q = (select(_segments.c.segment_id).join(_sessions, _sessions.c.session_id == _segments.c.session_id)
                 .where(_segments.c.accepted.is_(True), _sessions.c.state == "PROCESSED", _segments.c.player_id != ""))
            if player_id is not None:
                q = q.where(_segments.c.player_id == player_id)
            for sid in s.scalars(q):
                if live_per_segment.get(sid, 0) != 1:
                    problems.append(f"accepted segment {sid} has no live credit")
            problems += self._check_balances(s, player_id, credits, reversals)
        return problems

    def _check_balances(self, s: Session, player_id: str | None, credits: Sequence[CreditRow],
                        reversals: Mapping[str, ReversalRow]) -> list[str]:
        problems = []
        balances = {a: int(v) for a, v in s.execute(select(PostingRow.account, func.sum(PostingRow.millipoints))
                                                     .group_by(PostingRow.account)).all()}
        epochs = dict(s.execute(select(EpochEntryRow.entry_id, EpochEntryRow.epoch_id)).all())
        paid = set(s.scalars(select(PaymentRow.epoch_id)))
        want: dict[str, int] = defaultdict(int)
        entries = [(c.entry_id, c.player_id, c.millipoints) for c in credits] + [
            (r.entry_id, r.player_id, -r.millipoints) for r in reversals.values()]
        for eid, player, mp in entries:
            epoch = epochs.get(eid)
            account = (pending_account(player) if epoch is None else paid_account(player) if epoch in paid
                       else epoch_account(player))
            want[account] += mp
        players = {player_id} if player_id is not None else {p for _, p, _ in entries}
        for player in sorted(players):
            for account in (pending_account(player), epoch_account(player), paid_account(player)):
                if balances.get(account, 0) != want.get(account, 0):
                    problems.append(f"{account}: balance {balances.get(account, 0)} but its entries sum to "
                                    f"{want.get(account, 0)}")
        if player_id is None:
            players_total = sum(v for a, v in balances.items() if a != ISSUANCE)
            if balances.get(ISSUANCE, 0) != -players_total:
                problems.append(f"issuance {balances.get(ISSUANCE, 0)} is not minus the players' {players_total}")
        for row in s.scalars(select(EpochRow)):
            if hashlib.sha256(row.payout_json.encode()).hexdigest() != row.file_sha256:
                problems.append(f"epoch {row.epoch_id}: the payout file does not match its sha256")
        return problems


def iso_week_bounds(week: str, now: datetime) -> tuple[str, datetime, datetime]:
    """("2026-W49", Monday 00:00 UTC, next Monday) of an ISO week ("" = the current one); raises ValueError."""
    if not week:
        y, w, _ = now.isocalendar()
        week = f"{y}-W{w:02d}"
    try:
        year, num = week.split("-W")
        monday = date.fromisocalendar(int(year), int(num), 1)
    except ValueError:
        raise ValueError(f"week {week!r} is not an ISO week like 2026-W49") from None
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return week, start, start + timedelta(days=7)
