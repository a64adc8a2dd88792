"""What the rewards API does over the catalog and its ledger (no gRPC; rewards_server.py adapts it).

Wallets are not kept here: the player → wallet address mapping (and, for audits, a player's wallet
history) come from the callables the service is built with.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sd_common.problems import Problem

from sd_ingest.catalog import Catalog, SegmentRecord, SessionState
from sd_ingest.errors import InvalidArgument, NotFound
from sd_ingest.wallets import WalletEvent
from sd_ingest.ledger import (
    Audit,
    CreditRecord,
    PayoutRecord,
    epoch_account,
    iso_week_bounds,
    paid_account,
    parse_rfc3339,
    pending_account,
    player_label,
)

MAX_PAGE = 500
FINAL_STATES = frozenset({SessionState.PROCESSED, SessionState.REJECTED, SessionState.FAILED})


@dataclass(frozen=True)
class SessionOutcome:
    """A session's state, its segments with what each was credited, and its points."""

    session_id: str
    state: SessionState
    final: bool
    segments: list[tuple[SegmentRecord, int]]
    millipoints: int
    problems: list[Problem]


@dataclass(frozen=True)
class Contributions:
    """A page of a player's credits with their balances."""

    player_id: str
    pending_millipoints: int
    in_epoch_millipoints: int
    paid_millipoints: int
    today_millipoints: int
    daily_cap_millipoints: int
    credits: list[CreditRecord]
    next_page_token: str
    wallet_address: str
    accepted_s: float


@dataclass(frozen=True)
class LeaderboardRow:
    """One row of a week's leaderboard."""

    rank: int
    player_label: str
    millipoints: int
    accepted_s: float
    you: bool


@dataclass(frozen=True)
class Leaderboard:
    """A week's leaderboard."""

    week: str
    rows: list[LeaderboardRow]
    your_rank: int


@dataclass(frozen=True)
class PlayerAudit:
    """The ledger's audit of a player, with their wallet history."""

    audit: Audit
    wallet_events: list[WalletEvent] = field(default_factory=list)


def _page(page_size: int, page_token: str) -> tuple[int, int]:
    if page_size < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {page_size}")
    offset = 0
    if page_token:
        try:
            offset = int(base64.urlsafe_b64decode(page_token.encode()).decode())
        except ValueError:
            raise InvalidArgument("page_token is not one this service issued") from None
    return min(page_size or 50, MAX_PAGE), offset


def _player(player_id: str) -> str:
    if not player_id or len(player_id) > 128:
        raise InvalidArgument("player_id is required (1-128 characters)")
    return player_id


class RewardsOperations:
    """Session outcomes, contributions, the leaderboard, payout epochs and audits."""

    def __init__(self, catalog: Catalog, *, wallets: Callable[[], Mapping[str, str]] = dict,
                 wallet_events: Callable[[str], list[WalletEvent]] = lambda _player: [],
                 label_secret: str = "") -> None:
        self.catalog = catalog
        self.ledger = catalog.ledger
        self._wallets = wallets
        self._wallet_events = wallet_events
        self._label_secret = label_secret

    async def session_outcome(self, session_id: str, player_id: str = "") -> SessionOutcome:
        """What became of a session; NOT_FOUND if it is not ``player_id``'s (when given)."""
        rec = await asyncio.to_thread(self.catalog.get_session, session_id)
        if rec is None or (player_id and rec.player_id != player_id):
            raise NotFound(f"no session {session_id}" + (f" of player {player_id}" if player_id else ""))
        segments = await asyncio.to_thread(self.catalog.segments, session_id)
        credits = await asyncio.to_thread(self.ledger.credits, session_id=session_id)
        live = {c.segment_id: c.millipoints for c in credits if c.status != "reversed"}
        pairs = [(seg, live.get(seg.segment_id, 0)) for seg in segments]
        return SessionOutcome(session_id, rec.state, rec.state in FINAL_STATES, pairs, sum(live.values()),
                              list(rec.problems))

    async def contributions(self, player_id: str, page_size: int = 0, page_token: str = "") -> Contributions:
        """A page of the player's credits (newest first) and their balances."""
        player_id = _player(player_id)
        limit, offset = _page(page_size, page_token)
        credits = await asyncio.to_thread(self.ledger.credits, player_id=player_id, limit=limit + 1, offset=offset)
        balances = await asyncio.to_thread(self.ledger.balances, player_id)
        today = await asyncio.to_thread(self.ledger.today_millipoints, player_id)
        accepted_s = await asyncio.to_thread(self.ledger.accepted_s, player_id)
        wallets = await asyncio.to_thread(self._wallets)
        nxt = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if len(credits) > limit else ""
        return Contributions(
            player_id=player_id, pending_millipoints=balances[pending_account(player_id)],
            in_epoch_millipoints=balances[epoch_account(player_id)], paid_millipoints=balances[paid_account(player_id)],
            today_millipoints=today, daily_cap_millipoints=self.ledger.config.daily_cap_millipoints,
            credits=credits[:limit], next_page_token=nxt, wallet_address=wallets.get(player_id, ""),
            accepted_s=accepted_s)

    async def leaderboard(self, week: str, limit: int, player_id: str = "") -> Leaderboard:
        """A week's points, highest first, labelled without player ids."""
        try:
            week, start, end = iso_week_bounds(week, datetime.fromtimestamp(self.catalog.now_s(), UTC))
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        if limit < 0:
            raise InvalidArgument(f"limit must be >= 0, got {limit}")
        rows = await asyncio.to_thread(self.ledger.leaderboard, start, end)
        ranked = [LeaderboardRow(i + 1, player_label(p, self._label_secret), m, a, bool(player_id) and p == player_id)
                  for i, (p, m, a) in enumerate(rows)]
        your_rank = next((r.rank for r in ranked if r.you), 0)
        return Leaderboard(week, ranked[:min(limit or 20, 100)], your_rank)

    async def close_epoch(self, epoch_id: str, end_time: str, dry_run: bool) -> tuple[PayoutRecord, bool]:
        """Closes a payout epoch (or shows what closing it would do)."""
        try:
            end = parse_rfc3339(end_time) if end_time else None
        except ValueError as exc:
            raise InvalidArgument(f"end_time {end_time!r} is not an RFC 3339 time: {exc}") from None
        wallets = await asyncio.to_thread(self._wallets)
        return await asyncio.to_thread(self.ledger.close_epoch, epoch_id, end, wallets, dry_run=dry_run)

    async def get_payout(self, epoch_id: str) -> PayoutRecord:
        """A closed epoch's payout."""
        return await asyncio.to_thread(self.ledger.get_payout, epoch_id)

    async def mark_paid(self, epoch_id: str, reference: str) -> PayoutRecord:
        """Records the epoch's transfers as sent."""
        return await asyncio.to_thread(self.ledger.mark_paid, epoch_id, reference)

    async def audit(self, player_id: str) -> PlayerAudit:
        """Everything the ledger holds about a player, checked."""
        player_id = _player(player_id)
        audit = await asyncio.to_thread(self.ledger.audit, player_id)
        events = await asyncio.to_thread(self._wallet_events, player_id)
        return PlayerAudit(audit, list(events))
