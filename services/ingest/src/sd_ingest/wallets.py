"""Players' linked Solana wallets, kept in the catalog database beside the ledger (docs/wallets.md).

Two tables. ``wallet_links`` holds the current links: one row per player (its primary key) and a
UNIQUE address, so a wallet belongs to one player at most and a player has one wallet at most — the
database refuses a second row even when two replicas race. ``wallet_events`` is append-only: every
link and unlink, and for a link the signed Sign-In With Solana message, its signature and nonce as
evidence. The nonce is UNIQUE there, so a link message that was used once is refused forever, even
if it reaches the ingest directly rather than through the gateway (which consumes nonces itself).

``link`` parses the message and verifies its signature again (the gateway did, but the ledger pays
to these addresses, so the ingest trusts no caller for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import base58
from sqlalchemy import DateTime, Integer, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sd_common.siws import SiwsAudience, SiwsError, parse_message, verify_signature
from sd_common.sql import make_engine

MAX_PLAYER_ID_CHARS = 128


class WalletError(Exception):
    """Base of the wallet store's errors; the message says what to do."""


class InvalidLink(WalletError):
    """The link request is malformed: a bad player id, SIWS message or signature."""


class LinkExpired(WalletError):
    """The signed message's expiration time has passed: ask for a new challenge."""


class NonceUsed(WalletError):
    """The signed message's nonce was already used for a link (a replay)."""


class WalletTaken(WalletError):
    """The wallet is linked to another player."""


class PlayerHasWallet(WalletError):
    """The player already has a linked wallet: unlink it first."""


class NoWallet(WalletError):
    """The player has no linked wallet."""


class _Base(DeclarativeBase):
    pass


class WalletLinkRow(_Base):
    __tablename__ = "wallet_links"
    player_id: Mapped[str] = mapped_column(String(MAX_PLAYER_ID_CHARS), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), unique=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    nonce: Mapped[str] = mapped_column(String(64))


class WalletEventRow(_Base):
    __tablename__ = "wallet_events"
    event_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    player_id: Mapped[str] = mapped_column(String(MAX_PLAYER_ID_CHARS), index=True)
    action: Mapped[str] = mapped_column(String(16))  # "link" or "unlink"
    address: Mapped[str] = mapped_column(String(64), index=True)
    chain_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Evidence of a link (empty for an unlink): the exact signed text, its base58 signature, its nonce.
    message: Mapped[str] = mapped_column(Text, default="")
    signature_b58: Mapped[str] = mapped_column(String(128), default="")
    nonce: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)  # NULL for unlinks


@dataclass(frozen=True)
class WalletLink:
    """A player's current wallet."""

    player_id: str
    address: str
    chain_id: str
    linked_at: datetime


@dataclass(frozen=True)
class WalletEvent:
    """One entry of the link log."""

    player_id: str
    action: str
    address: str
    chain_id: str
    at: datetime


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)  # SQLite gives back naive times


def _check_player(player_id: str) -> None:
    if not player_id or len(player_id) > MAX_PLAYER_ID_CHARS or not player_id.isprintable():
        raise InvalidLink(f"player_id must be 1-{MAX_PLAYER_ID_CHARS} printable characters")


class WalletStore:
    """Synchronous repository of wallet links; the async servicer calls it through worker threads."""

    def __init__(self, url: str, *, audience: SiwsAudience,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._audience = audience
        self._engine = make_engine(url)
        _Base.metadata.create_all(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._clock = clock

    def close(self) -> None:
        """Releases pooled connections."""
        self._engine.dispose()

    def link(self, player_id: str, message: str, signature: bytes) -> WalletLink:
        """Links the wallet that signed ``message`` (a SIWS message) to the player, and logs it."""
        _check_player(player_id)
        try:
            m = parse_message(message)
            self._audience.check(m)  # the gateway checked it too: this holds for any other caller
            verify_signature(message, m.address, signature)
        except SiwsError as exc:
            raise InvalidLink(f"the wallet link is refused: {exc}") from None
        now = self._clock()
        if now >= m.expiration_time:
            raise LinkExpired(f"the signed message expired at {m.expiration_time.isoformat()}; "
                              "ask for a new challenge and sign it")
        try:
            with self._sessions.begin() as s:
                self._refuse_conflicts(s, player_id, m.address, m.nonce)
                s.add(WalletLinkRow(player_id=player_id, address=m.address, chain_id=m.chain_id, linked_at=now,
                                    nonce=m.nonce))
                s.add(WalletEventRow(player_id=player_id, action="link", address=m.address, chain_id=m.chain_id,
                                     at=now, message=message, signature_b58=base58.b58encode(signature).decode(),
                                     nonce=m.nonce))
        except IntegrityError:
            # Another transaction took the address, the player's slot or the nonce between our check and
            # our insert (the unique constraints decide): say which, from what is committed now.
            with self._sessions() as s:
                self._refuse_conflicts(s, player_id, m.address, m.nonce)
            raise
        return WalletLink(player_id, m.address, m.chain_id, now)

    @staticmethod
    def _refuse_conflicts(s, player_id: str, address: str, nonce: str) -> None:
        if s.scalar(select(WalletEventRow.event_id).where(WalletEventRow.nonce == nonce)) is not None:
            raise NonceUsed("this signed message was already used to link a wallet; ask for a new challenge")
        owner = s.scalar(select(WalletLinkRow.player_id).where(WalletLinkRow.address == address))
        if owner is not None and owner != player_id:
            raise WalletTaken(f"wallet {address} is linked to another player")
        if s.get(WalletLinkRow, player_id) is not None:
            raise PlayerHasWallet("this player already has a linked wallet; unlink it first")

    def unlink(self, player_id: str) -> WalletLink:
        """Removes the player's link and logs it; NoWallet if there is none. Returns what was removed."""
        _check_player(player_id)
        with self._sessions.begin() as s:
            row = s.get(WalletLinkRow, player_id)
            if row is None:
                raise NoWallet("this player has no linked wallet")
            removed = WalletLink(row.player_id, row.address, row.chain_id, _utc(row.linked_at))
            # Conditional on the row read, so two concurrent unlinks log one unlink between them.
            done = s.execute(delete(WalletLinkRow).where(WalletLinkRow.player_id == player_id,
                                                         WalletLinkRow.address == removed.address))
            if done.rowcount != 1:
                raise NoWallet("this player has no linked wallet")
            s.add(WalletEventRow(player_id=player_id, action="unlink", address=removed.address,
                                 chain_id=removed.chain_id, at=self._clock(), nonce=None))
        return removed

    def get(self, player_id: str) -> WalletLink | None:
        """The player's current wallet, or None."""
        with self._sessions() as s:
            row = s.get(WalletLinkRow, player_id)
            return None if row is None else WalletLink(row.player_id, row.address, row.chain_id, _utc(row.linked_at))

    def events(self, player_id: str) -> list[WalletEvent]:
        """The player's link and unlink log, oldest first."""
        q = select(WalletEventRow).where(WalletEventRow.player_id == player_id).order_by(WalletEventRow.event_id)
        with self._sessions() as s:
            return [WalletEvent(r.player_id, r.action, r.address, r.chain_id, _utc(r.at)) for r in s.scalars(q)]

    def active_wallets(self) -> dict[str, str]:
        """Every linked wallet: {player_id: address} (what a payout epoch pays to)."""
        with self._sessions() as s:
            return dict(s.execute(select(WalletLinkRow.player_id, WalletLinkRow.address)).all())
