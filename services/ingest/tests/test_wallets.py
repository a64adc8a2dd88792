"""Wallet links in the catalog database: one wallet per player, one player per wallet, a replay-proof
log; every refused link leaves the links, the log and the nonces as they were. SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import base58
import pytest
from nacl.signing import SigningKey
from sqlalchemy import text

from sd_common.siws import SiwsAudience, build_message
from sd_ingest.wallets import (InvalidLink, LinkExpired, NonceUsed, NoWallet, PlayerHasWallet, WalletStore,
                               WalletTaken)

T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(db_url, clock):
    s = WalletStore(db_url, audience=AUDIENCE, clock=clock)
    yield s
    s.close()


_nonces = iter(range(10**6))
AUDIENCE = SiwsAudience("127.0.0.1:8080", "http://127.0.0.1:8080", "devnet")  # what signed() names


def address_of(key: SigningKey) -> str:
    return base58.b58encode(bytes(key.verify_key)).decode()


def signed(key: SigningKey, *, nonce: str | None = None, expires_in: timedelta = timedelta(minutes=10),
           signer: SigningKey | None = None, audience: SiwsAudience = AUDIENCE) -> tuple[str, bytes]:
    """A SIWS message naming ``key``'s address, signed by ``signer`` (the key itself by default)."""
    m = build_message(domain=audience.domain, address=address_of(key), statement="Link this wallet.",
                      uri=audience.uri, chain_id=audience.chain_id, nonce=nonce or f"n{next(_nonces):011d}",
                      issued_at=T0, expiration_time=T0 + expires_in)
    msg = m.text()
    return msg, (signer or key).sign(msg.encode()).signature


def rows(store: WalletStore) -> tuple:
    """Every link and log row: what a refused link must leave unchanged."""
    with store._engine.connect() as conn:
        return tuple(tuple(r) for table in ("wallet_links", "wallet_events")
                     for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")))


def test_link_unlink_and_relink_are_each_logged_with_their_evidence(store, clock):
    a, b = SigningKey.generate(), SigningKey.generate()
    msg, sig = signed(a)
    link = store.link("p1", msg, sig)
    assert (link.address, link.chain_id, link.linked_at) == (address_of(a), "devnet", T0)
    assert store.get("p1") == link and store.active_wallets() == {"p1": address_of(a)}
    clock.now = T0 + timedelta(minutes=1)
    assert store.unlink("p1").address == address_of(a)
    assert store.get("p1") is None and store.active_wallets() == {}
    with pytest.raises(NoWallet):
        store.unlink("p1")
    clock.now = T0 + timedelta(minutes=2)
    store.link("p1", *signed(b))  # another wallet, with a new challenge
    assert [(e.action, e.address, e.at) for e in store.events("p1")] == [
        ("link", address_of(a), T0), ("unlink", address_of(a), T0 + timedelta(minutes=1)),
        ("link", address_of(b), T0 + timedelta(minutes=2))]
    with store._engine.connect() as conn:
        evidence = conn.execute(text("SELECT message, signature_b58, nonce FROM wallet_events ORDER BY event_id")).all()
    assert evidence[0] == (msg, base58.b58encode(sig).decode(), msg.split("Nonce: ")[1].split("\n")[0])
    assert evidence[1] == ("", "", None)
    # the first wallet is free again: another player may take it
    store.link("p2", *signed(a))
    assert store.active_wallets() == {"p1": address_of(b), "p2": address_of(a)}


def test_refused_links_change_nothing(store, clock):
    a, b, c = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    first_msg, first_sig = signed(a)
    store.link("p1", first_msg, first_sig)
    before = rows(store)
    msg, sig = signed(b)
    cases = [
        (InvalidLink, ("p2", msg, signed(b, signer=c)[1])),     # signed by another key
        (InvalidLink, ("p2", msg, sig[:63])),                   # a truncated signature
        (InvalidLink, ("p2", msg + "\n", sig)),                 # not the exact SIWS text
        (InvalidLink, ("p2", msg.replace("devnet", "mainnet"), sig)),  # a field changed after signing
        (InvalidLink, ("", msg, sig)),
        # signed by the wallet, but meant for another site, another URI, another chain
        (InvalidLink, ("p2", *signed(b, audience=SiwsAudience("evil.example", AUDIENCE.uri, AUDIENCE.chain_id)))),
        (InvalidLink, ("p2", *signed(b, audience=SiwsAudience(AUDIENCE.domain, "https://evil.example",
                                                              AUDIENCE.chain_id)))),
        (InvalidLink, ("p2", *signed(b, audience=SiwsAudience(AUDIENCE.domain, AUDIENCE.uri, "mainnet")))),
        (WalletTaken, ("p2", *signed(a))),                      # p1's wallet, with a fresh nonce
        (PlayerHasWallet, ("p1", *signed(b))),                  # a second wallet for p1
        (PlayerHasWallet, ("p1", *signed(a))),                  # p1's own wallet again
        (NonceUsed, ("p2", *signed(b, nonce=first_msg.split("Nonce: ")[1][:12]))),  # a used nonce
    ]
    for error, args in cases:
        with pytest.raises(error):
            store.link(*args)
        assert rows(store) == before, error
    clock.now = T0 + timedelta(minutes=10)  # the message's expiration time
    with pytest.raises(LinkExpired):
        store.link("p2", msg, sig)
    assert rows(store) == before


def test_a_replayed_link_message_is_refused_after_an_unlink(store):
    a = SigningKey.generate()
    msg, sig = signed(a)
    store.link("p1", msg, sig)
    store.unlink("p1")
    before = rows(store)
    for player in ("p1", "p2"):
        with pytest.raises(NonceUsed):
            store.link(player, msg, sig)
    assert rows(store) == before and store.active_wallets() == {}


def test_two_players_racing_for_one_wallet_have_exactly_one_winner(pg_cluster, clock):
    """Both pass the pre-check before either inserts: PostgreSQL's unique address decides."""
    url = pg_cluster.new_database()
    stores = [WalletStore(url, audience=AUDIENCE, clock=clock) for _ in range(2)]
    key = SigningKey.generate()
    both_checked = threading.Barrier(2, timeout=10)
    original = WalletStore._refuse_conflicts
    waited = threading.local()

    def check_then_wait(s, player_id, address, nonce):
        original(s, player_id, address, nonce)
        if not getattr(waited, "done", False):  # the first check only; the one after a conflict runs alone
            waited.done = True
            both_checked.wait()

    WalletStore._refuse_conflicts = staticmethod(check_then_wait)
    try:
        def claim(i: int):
            try:
                return stores[i].link(f"p{i}", *signed(key))
            except WalletTaken as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(claim, range(2)))
    finally:
        WalletStore._refuse_conflicts = staticmethod(original)
    assert sorted(type(r).__name__ for r in results) == ["WalletLink", "WalletTaken"]
    winner = next(r for r in results if not isinstance(r, Exception))
    assert stores[0].active_wallets() == {winner.player_id: address_of(key)}
    assert [e.action for p in ("p0", "p1") for e in stores[0].events(p)] == ["link"]
    for s in stores:
        s.close()
