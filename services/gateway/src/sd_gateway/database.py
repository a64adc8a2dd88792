"""The gateway's records of players, sessions and wallet challenges (SQLAlchemy: SQLite locally, PostgreSQL in cluster)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections import namedtuple
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (Boolean, DateTime, Engine, Float, Integer, String, Text, bindparam, delete, func, select,
                        update)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sd_common.problems import Problem
from sd_common.sql import add_missing_columns, make_engine
from sd_gateway.pgasync import AsyncPostgres
from scale_diffusion.common.v1 import common_pb2

STATE_OPEN = common_pb2.SESSION_STATE_OPEN
STATE_UPLOADED = common_pb2.SESSION_STATE_UPLOADED
STATE_REJECTED = common_pb2.SESSION_STATE_REJECTED


class _Base(DeclarativeBase):
    pass


class PlayerRow(_Base):
    __tablename__ = "players"
    player_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    client_build: Mapped[str] = mapped_column(String(128), default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(_Base):
    __tablename__ = "sessions"
    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    client_build: Mapped[str] = mapped_column(String(128), default="")
    city: Mapped[str] = mapped_column(String(128), default="")
    route_id: Mapped[str] = mapped_column(String(128), default="")
    key_prefix: Mapped[str] = mapped_column(String(256))
    problems_json: Mapped[str] = mapped_column(Text, default="[]")
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    # {path: size_bytes} of every file upload URLs were issued for, across all upload-urls calls.
    uploads_json: Mapped[str] = mapped_column(Text, default="{}")


class WalletNonceRow(_Base):
    """A Sign-In With Solana challenge: issued to one player for one address, used at most once."""

    __tablename__ = "wallet_nonces"
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    player_id: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64))
    issued_s: Mapped[int] = mapped_column(Integer)  # unix seconds, as the message spells them (whole)
    expires_s: Mapped[int] = mapped_column(Integer, index=True)
    consumed_s: Mapped[int | None] = mapped_column(Integer, nullable=True)


# Columns added after the first release: (table, column, SQL type and default), added where missing.
_ADDED_COLUMNS = [
    ("players", "disabled", "BOOLEAN NOT NULL DEFAULT FALSE"),
    ("sessions", "uploads_json", "TEXT NOT NULL DEFAULT '{}'"),
]


class UploadBudgetExceeded(Exception):
    """A session would hold more files (``what='files'``) or bytes (``'bytes'``) than allowed."""

    def __init__(self, what: str, total: int, limit: int) -> None:
        super().__init__(f"{what}: {total} > {limit}")
        self.what, self.total, self.limit = what, total, limit


def merge_reservations(before: str, files: dict[str, int], *, max_files: int, max_bytes: int) -> dict[str, int] | None:
    """The session's reservations (``before``, as stored) with ``files`` added, or None if they hold
    them already at those sizes; raises UploadBudgetExceeded past a limit."""
    reserved = json.loads(before)
    merged = reserved | files
    if len(merged) > max_files:
        raise UploadBudgetExceeded("files", len(merged), max_files)
    if sum(merged.values()) > max_bytes:
        raise UploadBudgetExceeded("bytes", sum(merged.values()), max_bytes)
    return None if merged == reserved else merged


@dataclass(frozen=True)
class SessionRecord:
    """A session as the gateway knows it."""

    session_id: str
    player_id: str
    state: int
    created_at: datetime
    client_build: str
    city: str
    route_id: str
    key_prefix: str
    problems: list[Problem]
    duration_s: float


@dataclass(frozen=True)
class PlayerTotals:
    """What a player has contributed."""

    player_id: str
    sessions_total: int
    sessions_uploaded: int
    sessions_rejected: int
    seconds_uploaded: float


@dataclass(frozen=True)
class WalletNonce:
    """A challenge as issued: to whom, for which address, when, until when, and whether it was used."""

    nonce: str
    player_id: str
    address: str
    issued_s: int
    expires_s: int
    consumed_s: int | None


@dataclass(frozen=True)
class PlayerSession:
    """One read of a player's status and one session: what an upload-urls call checks."""

    player_status: str | None  # 'active', 'disabled', or None: no such player
    session: SessionRecord | None  # None: no such session
    uploads_json: str = "{}"  # the session's issued uploads as read with it (reserve_uploads' `before`)


def _record(row) -> SessionRecord:
    """A SessionRecord from a SessionRow, or from a Core row holding its columns."""
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    problems = row.problems_json
    return SessionRecord(
        session_id=row.session_id, player_id=row.player_id, state=row.state, created_at=created,
        client_build=row.client_build, city=row.city, route_id=row.route_id, key_prefix=row.key_prefix,
        problems=[] if problems == "[]" else [Problem(**p) for p in json.loads(problems)],
        duration_s=row.duration_s,
    )


_SESSION_COLUMNS = [c for c in SessionRow.__table__.c]
# The player's status and the session in one statement: the hot path's only read (Core, not the ORM).
_PLAYER_SESSION = (select(PlayerRow.disabled, *_SESSION_COLUMNS)
                   .select_from(PlayerRow.__table__)
                   .outerjoin(SessionRow.__table__, SessionRow.session_id == bindparam("session_id"))
                   .where(PlayerRow.player_id == bindparam("player_id")))
_SESSION = select(*_SESSION_COLUMNS).where(SessionRow.session_id == bindparam("session_id"))
_PLAYER_DISABLED = select(PlayerRow.disabled).where(PlayerRow.player_id == bindparam("player_id"))


def _status_of(row) -> str | None:
    return None if row is None else ("disabled" if row.disabled else "active")


def _player_session_of(row) -> PlayerSession:
    if row is None:
        return PlayerSession(None, None)
    status = "disabled" if row.disabled else "active"
    if row.session_id is None:
        return PlayerSession(status, None)
    return PlayerSession(status, _record(row), row.uploads_json)


class GatewayDatabase:
    """Synchronous repository; the async service calls it through a worker thread.

    The ``*_async`` reads run from the event loop: on SQLite inline (WAL: a reader never waits for
    the writer, and a short indexed read costs less than the hand-off to a worker thread), on
    PostgreSQL through an async pool (``async_pg``, pgasync.py), with no thread. Those reads on a
    SQLite file go straight to the sqlite3 module on a connection of the calling thread's own, with
    the SQL SQLAlchemy compiled for them once: the engine's per-statement machinery cost several
    times the query itself.
    """

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        _Base.metadata.create_all(self._engine)
        add_missing_columns(self._engine, _ADDED_COLUMNS)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self.reads_inline = self._engine.dialect.name == "sqlite"
        path = self._engine.url.database
        self._sqlite_file = path if self.reads_inline and path and path != ":memory:" and "mode=memory" not in str(
            self._engine.url) else None
        self._local = threading.local()  # this thread's sqlite3 connection
        self._compiled: dict[int, tuple[str, tuple[str, ...], type]] = {}
        # PostgreSQL: the hot reads (and the shared rate limits' takes) on the event loop instead
        self.async_pg = AsyncPostgres(self._engine) if self._engine.dialect.name == "postgresql" else None

    def _fetch_one(self, statement, params: dict):
        """The first row of a read, by column name (``created_at`` as a datetime)."""
        if self._sqlite_file is None:
            with self._engine.connect() as c:
                return c.execute(statement, params).first()
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            done = statement.compile(dialect=self._engine.dialect)
            names = tuple(c.key for c in statement.selected_columns)
            compiled = (done.string, tuple(done.positiontup), namedtuple("Row", names))
            self._compiled[id(statement)] = compiled
        sql, order, row_type = compiled
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self._sqlite_file, timeout=30)
        # fetchall: the statement runs to its end and resets, so this connection holds no read snapshot
        # between calls (a held one would keep showing the database as it was)
        found = conn.execute(sql, tuple(params[name] for name in order)).fetchall()
        if not found:
            return None
        row = row_type(*found[0])
        if "created_at" in row._fields and isinstance(row.created_at, str):
            row = row._replace(created_at=datetime.fromisoformat(row.created_at))
        return row

    async def _fetch_one_async(self, statement, params: dict):
        """``_fetch_one`` from the event loop: inline on SQLite, through the async pool on PostgreSQL."""
        if self.reads_inline:
            return self._fetch_one(statement, params)
        if self.async_pg is not None:
            return await self.async_pg.fetch_one(statement, params)
        return await asyncio.to_thread(self._fetch_one, statement, params)

    @property
    def engine(self) -> Engine:
        """The database's engine, for the gateway's other tables (the shared rate limits)."""
        return self._engine

    async def aclose(self) -> None:
        """Closes the async pool (PostgreSQL), then what ``close`` releases."""
        if self.async_pg is not None:
            await self.async_pg.close()
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Releases pooled connections (and this thread's own SQLite connection)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._engine.dispose()

    def add_player(self, player_id: str, client_build: str) -> None:
        """Records a new player."""
        with self._sessions.begin() as s:
            s.add(PlayerRow(player_id=player_id, created_at=datetime.now(UTC), client_build=client_build,
                            disabled=False))

    def player_status(self, player_id: str) -> str | None:
        """'active' or 'disabled', or None if there is no such player."""
        return _status_of(self._fetch_one(_PLAYER_DISABLED, {"player_id": player_id}))

    async def player_status_async(self, player_id: str) -> str | None:
        """``player_status``, read from the event loop."""
        return _status_of(await self._fetch_one_async(_PLAYER_DISABLED, {"player_id": player_id}))

    def player_session(self, player_id: str, session_id: str) -> PlayerSession:
        """The player's status and the session, read together."""
        return _player_session_of(self._fetch_one(_PLAYER_SESSION, {"player_id": player_id, "session_id": session_id}))

    async def player_session_async(self, player_id: str, session_id: str) -> PlayerSession:
        """``player_session``, read from the event loop (the upload-urls hot path)."""
        return _player_session_of(await self._fetch_one_async(
            _PLAYER_SESSION, {"player_id": player_id, "session_id": session_id}))

    def set_player_disabled(self, player_id: str, disabled: bool) -> None:
        """Disables (or re-enables) a player: a disabled player's device token is refused."""
        with self._sessions.begin() as s:
            row = s.get(PlayerRow, player_id)
            if row is None:
                raise KeyError(player_id)
            row.disabled = disabled

    def reserve_uploads(self, session_id: str, files: dict[str, int], *, max_files: int, max_bytes: int,
                        before: str | None = None) -> bool:
        """Adds ``{path: size_bytes}`` to the session's issued uploads, or raises UploadBudgetExceeded.

        A path asked for again (a renewed URL, a re-upload after rejection) counts once, at its
        latest size. The update is a compare-and-set on the previous value, so concurrent calls on
        any replica cannot both spend the same budget. ``before``: the value as already read (by
        ``player_session``), saving the first read. Returns False, writing nothing, when the files
        are already reserved at those sizes: the value read then was the state of the database, and
        it holds them (the write would change nothing).
        """
        while True:
            if before is None:
                with self._engine.connect() as c:
                    before = c.execute(select(SessionRow.uploads_json)
                                       .where(SessionRow.session_id == session_id)).scalar()
                if before is None:
                    raise KeyError(session_id)
            merged = merge_reservations(before, files, max_files=max_files, max_bytes=max_bytes)
            if merged is None:
                return False
            with self._engine.begin() as c:
                done = c.execute(update(SessionRow).where(SessionRow.session_id == session_id,
                                                          SessionRow.uploads_json == before)
                                 .values(uploads_json=json.dumps(merged, sort_keys=True)))
                if done.rowcount == 1:
                    return True
            before = None  # another call changed it first: read again

    def add_session(self, session_id: str, player_id: str, key_prefix: str, client_build: str,
                    city: str, route_id: str) -> SessionRecord:
        """Records a new open session."""
        now = datetime.now(UTC)
        row = SessionRow(session_id=session_id, player_id=player_id, state=STATE_OPEN, created_at=now,
                         updated_at=now, client_build=client_build, city=city, route_id=route_id,
                         key_prefix=key_prefix, problems_json="[]", duration_s=0.0, uploads_json="{}")
        with self._sessions.begin() as s:
            s.add(row)
        return _record(row)

    def get_session(self, session_id: str) -> SessionRecord | None:
        """The session, or None."""
        row = self._fetch_one(_SESSION, {"session_id": session_id})
        return _record(row) if row else None

    async def get_session_async(self, session_id: str) -> SessionRecord | None:
        """``get_session``, read from the event loop."""
        row = await self._fetch_one_async(_SESSION, {"session_id": session_id})
        return _record(row) if row else None

    def list_sessions(self, player_id: str, limit: int, before_id: str | None) -> list[SessionRecord]:
        """The player's sessions, newest first, after the page cursor."""
        q = select(SessionRow).where(SessionRow.player_id == player_id)
        if before_id:
            q = q.where(SessionRow.session_id < before_id)
        q = q.order_by(SessionRow.session_id.desc()).limit(limit)
        with self._sessions() as s:
            return [_record(r) for r in s.scalars(q)]

    def set_state(self, session_id: str, state: int, problems: list[Problem], duration_s: float | None = None) -> SessionRecord:
        """Moves a session to a new state with its problems (empty when accepted)."""
        with self._sessions.begin() as s:
            row = s.get(SessionRow, session_id)
            if row is None:
                raise KeyError(session_id)
            row.state = state
            row.problems_json = json.dumps([p.to_dict() for p in problems])
            row.updated_at = datetime.now(UTC)
            if duration_s is not None:
                row.duration_s = duration_s
            return _record(row)

    def player_totals(self, player_id: str) -> PlayerTotals:
        """Counts and uploaded seconds of the player's sessions."""
        q = (select(SessionRow.state, func.count(), func.coalesce(func.sum(SessionRow.duration_s), 0.0))
             .where(SessionRow.player_id == player_id).group_by(SessionRow.state))
        with self._sessions() as s:
            rows = s.execute(q).all()
        by_state = {state: (n, secs) for state, n, secs in rows}
        return PlayerTotals(
            player_id=player_id,
            sessions_total=sum(n for n, _ in by_state.values()),
            sessions_uploaded=by_state.get(STATE_UPLOADED, (0, 0.0))[0],
            sessions_rejected=by_state.get(STATE_REJECTED, (0, 0.0))[0],
            seconds_uploaded=float(by_state.get(STATE_UPLOADED, (0, 0.0))[1]),
        )

    # wallet challenges -------------------------------------------------------------------------------

    def add_wallet_nonce(self, nonce: str, player_id: str, address: str, issued_s: int, expires_s: int) -> None:
        """Records an issued challenge; forgets challenges that expired a day or more before it."""
        with self._sessions.begin() as s:
            s.execute(delete(WalletNonceRow).where(WalletNonceRow.expires_s < issued_s - 86400))
            s.add(WalletNonceRow(nonce=nonce, player_id=player_id, address=address, issued_s=issued_s,
                                 expires_s=expires_s, consumed_s=None))

    def get_wallet_nonce(self, nonce: str) -> WalletNonce | None:
        """The challenge with that nonce, or None."""
        with self._sessions() as s:
            r = s.get(WalletNonceRow, nonce)
            return None if r is None else WalletNonce(r.nonce, r.player_id, r.address, r.issued_s, r.expires_s,
                                                      r.consumed_s)

    def consume_wallet_nonce(self, nonce: str, player_id: str, now_s: int) -> bool:
        """Marks the player's unexpired, unused challenge used; False if it is not (any more).

        One conditional UPDATE: of two requests racing on any replicas, exactly one sees True.
        """
        with self._sessions.begin() as s:
            done = s.execute(update(WalletNonceRow).where(
                WalletNonceRow.nonce == nonce, WalletNonceRow.player_id == player_id,
                WalletNonceRow.consumed_s.is_(None), WalletNonceRow.expires_s > now_s).values(consumed_s=now_s))
            return done.rowcount == 1
