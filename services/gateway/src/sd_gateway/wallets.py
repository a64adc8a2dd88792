"""Linking a player's Solana wallet with Sign-In With Solana: challenges, every check, then the ingest.

The gateway issues a challenge (a nonce for this player and address, with an expiry) and the exact
message to sign; the link request must bring back that message, unchanged, with the wallet's
signature. Every field is checked against what was issued and against this gateway's settings, the
signature is verified, and only then is the nonce consumed (one conditional UPDATE: a replay on any
replica finds it used) and the link sent to the ingest, which verifies it once more and keeps it.
A refused link leaves the nonce as it was, except a use or expiry, which it reports (docs/wallets.md).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from sd_common.siws import (SiwsAudience, SiwsError, build_message, decode_signature, parse_message,
                             verify_signature)
from sd_gateway.database import GatewayDatabase
from sd_gateway.errors import FailedPrecondition, InvalidArgument, RateLimited
from sd_gateway.ratelimit import make_limiter
from sd_gateway.rewards_client import IngestRewardsClient
from sd_gateway.settings import GatewaySettings

log = structlog.get_logger()
STATEMENT = "Link this wallet to your Scale Diffusion player to receive contribution rewards."
_NONCE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class Challenge:
    """What the player's wallet must sign: the exact message, its nonce, and when it stops being accepted."""

    message: str
    nonce: str
    expires_at: datetime


def new_nonce() -> str:
    """A random 22-character nonce (131 bits), letters and digits as SIWS requires."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(22))


class WalletLinking:
    """Challenges and links for authenticated players; the ingest keeps the links themselves."""

    def __init__(self, settings: GatewaySettings, db: GatewayDatabase, ingest: IngestRewardsClient, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._db = db
        self._ingest = ingest
        self._clock = clock
        self._limit = make_limiter(settings.rate_limit_store, db.engine, "wallet_challenges",
                                   settings.wallet_challenges_per_minute, settings.wallet_challenges_burst,
                                   pg=db.async_pg)

    @property
    def ingest(self) -> IngestRewardsClient:
        """The ingest client the rewards views share."""
        return self._ingest

    async def challenge(self, player_id: str, address: str) -> Challenge:
        """A new challenge for the player to sign with the wallet at ``address``."""
        self._ingest.require()
        wait_s = await self._limit.acquire(player_id)
        if wait_s is not None:
            raise RateLimited(f"too many wallet challenges; retry in {wait_s:.0f} s", retry_after_s=wait_s)
        issued_s = int(self._clock())
        expires_s = issued_s + self._settings.siws_nonce_ttl_s
        nonce = new_nonce()
        try:
            m = build_message(domain=self._settings.siws_domain, address=address, statement=STATEMENT,
                              uri=self._settings.siws_uri, chain_id=self._settings.siws_chain_id, nonce=nonce,
                              issued_at=datetime.fromtimestamp(issued_s, UTC),
                              expiration_time=datetime.fromtimestamp(expires_s, UTC))
        except SiwsError as exc:
            raise InvalidArgument(str(exc)) from None
        await asyncio.to_thread(self._db.add_wallet_nonce, nonce, player_id, address, issued_s, expires_s)
        return Challenge(m.text(), nonce, m.expiration_time)

    async def link(self, player_id: str, message: str, signature_b58: str):
        """Checks the signed challenge, consumes its nonce, links the wallet at the ingest; the ingest's Wallet."""
        self._ingest.require()
        try:
            m = parse_message(message)
            signature = decode_signature(signature_b58)
        except SiwsError as exc:
            raise InvalidArgument(f"the signed message is refused: {exc}") from None
        s = self._settings
        try:
            SiwsAudience(s.siws_domain, s.siws_uri, s.siws_chain_id).check(m)
        except SiwsError as exc:
            raise InvalidArgument(str(exc)) from None
        issued = await asyncio.to_thread(self._db.get_wallet_nonce, m.nonce)
        if issued is None or issued.player_id != player_id:
            raise InvalidArgument("the message's nonce was not issued to this player; ask for a challenge")
        if (m.address, int(m.issued_at.timestamp()), int(m.expiration_time.timestamp())) != (
                issued.address, issued.issued_s, issued.expires_s):
            raise InvalidArgument("the message is not the challenge that was issued (address or times differ); "
                                  "sign the message exactly as it was given")
        try:
            verify_signature(message, m.address, signature)
        except SiwsError as exc:
            raise InvalidArgument(str(exc)) from None
        now_s = int(self._clock())
        if issued.consumed_s is not None:
            raise FailedPrecondition("this challenge was already used; ask for a new one")
        if now_s >= issued.expires_s:
            raise FailedPrecondition("this challenge expired; ask for a new one")
        if not await asyncio.to_thread(self._db.consume_wallet_nonce, m.nonce, player_id, now_s):
            raise FailedPrecondition("this challenge was already used or has expired; ask for a new one")
        wallet = await self._ingest.link_wallet(player_id, message, signature)
        log.info("wallet linked", player_id=player_id, address=wallet.address, chain_id=wallet.chain_id)
        return wallet

    async def unlink(self, player_id: str) -> None:
        """Removes the player's wallet link."""
        await self._ingest.unlink_wallet(player_id)
        log.info("wallet unlinked", player_id=player_id)

    async def get(self, player_id: str):
        """The player's wallet and link log (the ingest's GetWalletResponse)."""
        return await self._ingest.get_wallet(player_id)
