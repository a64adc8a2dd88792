"""The contribution ledger on real SQLite and real PostgreSQL: credits, reversals, caps, epochs, payments."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from sd_ingest.catalog import Catalog
from sd_ingest.ledger import (
    ISSUANCE,
    EpochAlreadyPaid,
    EpochInvalid,
    EpochNotFound,
    LedgerConfig,
    canonical_payout_bytes,
    epoch_account,
    paid_account,
    pending_account,
)
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from rewards_fixtures import Clock, again, finish, segment, to_processing


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(db_url, clock, cap=0) -> Catalog:
    return Catalog(db_url, clock=clock, ledger_config=LedgerConfig(daily_cap_millipoints=cap))


@pytest.fixture
def catalog(db_url, clock):
    c = make(db_url, clock)
    yield c
    c.close()


def test_each_accepted_segment_is_credited_once_with_its_rule_and_factors(catalog):
    to_processing(catalog, "s1", "p1")
    finish(catalog, "s1", [segment("s1", 0, "p1"), segment("s1", 1, "p1", diffusion_frames=150),
                           segment("s1", 2, "p1", accepted=False)])
    credits = catalog.ledger.credits(session_id="s1", newest_first=False)
    assert sorted((c.segment_id, c.millipoints) for c in credits) == [("s1_000", 5000), ("s1_001", 7500)]
    c = next(c for c in credits if c.segment_id == "s1_001")
    assert (c.rule, c.status, c.gross_millipoints, c.note) == ("segment-v1", "pending", 7500, "")
    assert c.factors["diffusion_share"] == 1.0 and c.factors["seconds"] == 5.0
    assert catalog.ledger.balances() == {ISSUANCE: -12500, pending_account("p1"): 12500}
    # The same result again (settled once more in its own transaction) adds nothing.
    with catalog._sessions.begin() as s:
        again_ = catalog.ledger.settle_session(s, "s1", "p1", catalog.segments("s1"))
    assert (again_.credited, again_.reversed) == ([], [])
    assert len(catalog.ledger.credits(player_id="p1")) == 2
    assert catalog.ledger.check() == []


def test_reprocessing_reverses_what_is_now_rejected_and_never_reprices(catalog, clock):
    to_processing(catalog, "s1", "p1")
    finish(catalog, "s1", [segment("s1", 0, "p1"), segment("s1", 1, "p1"), segment("s1", 2, "p1")])
    before = {c.segment_id: c for c in catalog.ledger.credits(session_id="s1")}
    catalog.reprocess("s1")
    again(catalog, "s1", "b", "2")
    clock.t += 60
    # Segment 0 is still accepted (with other facts: not repriced), 1 is now rejected, 2 is gone.
    finish(catalog, "s1", [segment("s1", 0, "p1", diffusion_frames=150), segment("s1", 1, "p1", accepted=False)],
           owner="b", attempt="2")
    after = {c.entry_id: c for c in catalog.ledger.credits(session_id="s1")}
    assert after[before["s1_000"].entry_id].status == "pending"
    assert after[before["s1_000"].entry_id].millipoints == 5000
    assert after[before["s1_001"].entry_id].status == "reversed"
    assert after[before["s1_002"].entry_id].status == "reversed"
    assert catalog.ledger.balances()[pending_account("p1")] == 5000
    # The dropped segment keeps its row (rejected) so its credit and reversal still link to it.
    segs = {s.segment_id: s for s in catalog.segments("s1")}
    assert not segs["s1_002"].accepted and segs["s1_002"].reasons == ["not_in_latest_processing"]
    assert [s.segment_id for s in catalog.accepted_segments()] == ["s1_000"]
    # Accepted once more: credited anew, beside the reversed credit (which stays as it was).
    catalog.reprocess("s1")
    again(catalog, "s1", "c", "3")
    finish(catalog, "s1", [segment("s1", 0, "p1"), segment("s1", 1, "p1")], owner="c", attempt="3")
    credits = catalog.ledger.credits(session_id="s1")
    assert sorted((c.segment_id, c.status) for c in credits) == [
        ("s1_000", "pending"), ("s1_001", "pending"), ("s1_001", "reversed"), ("s1_002", "reversed")]
    assert catalog.ledger.balances()[pending_account("p1")] == 10000
    assert catalog.ledger.check() == []


def test_the_daily_cap_cuts_credits_and_says_so(db_url, clock):
    catalog = make(db_url, clock, cap=12_000)
    try:
        to_processing(catalog, "s1", "p1")
        finish(catalog, "s1", [segment("s1", k, "p1") for k in range(3)])
        credits = catalog.ledger.credits(player_id="p1", newest_first=False)
        assert sorted(c.millipoints for c in credits) == [2000, 5000, 5000]
        capped = next(c for c in credits if c.millipoints == 2000)
        assert capped.gross_millipoints == 5000 and "daily cap of 12000" in capped.note
        assert catalog.ledger.today_millipoints("p1") == 12_000
        to_processing(catalog, "s2", "p1")
        finish(catalog, "s2", [segment("s2", 0, "p1")])
        assert catalog.ledger.credits(session_id="s2")[0].millipoints == 0
        # Another player has their own cap; the next UTC day has room again.
        to_processing(catalog, "s3", "p2")
        finish(catalog, "s3", [segment("s3", 0, "p2")])
        assert catalog.ledger.credits(session_id="s3")[0].millipoints == 5000
        clock.t += 86_400
        to_processing(catalog, "s4", "p1")
        finish(catalog, "s4", [segment("s4", 0, "p1")])
        assert catalog.ledger.credits(session_id="s4")[0].millipoints == 5000
        assert catalog.ledger.check() == []
    finally:
        catalog.close()


def test_the_record_refuses_update_and_delete(catalog):
    to_processing(catalog, "s1", "p1")
    finish(catalog, "s1", [segment("s1", 0, "p1")])
    balances = catalog.ledger.balances()
    for sql in ("UPDATE ledger_postings SET millipoints = millipoints + 1", "DELETE FROM ledger_postings",
                "UPDATE ledger_credits SET millipoints = 0", "DELETE FROM ledger_transactions"):
        with pytest.raises(DatabaseError, match="append-only"):
            with catalog._engine.begin() as conn:
                conn.execute(text(sql))
    assert catalog.ledger.balances() == balances
    assert catalog.ledger.credits(player_id="p1")[0].millipoints == 5000


def _credit(catalog, clock, sid, player, n=1):
    to_processing(catalog, sid, player)
    finish(catalog, sid, [segment(sid, k, player) for k in range(n)])
    clock.t += 10


def test_an_epoch_pays_players_with_a_wallet_and_is_idempotent(catalog, clock):
    _credit(catalog, clock, "s1", "p1", 2)
    _credit(catalog, clock, "s2", "p2", 1)
    end = catalog.ledger._now()
    clock.t += 10
    _credit(catalog, clock, "s3", "p1", 1)  # after the end time: stays pending
    wallets = {"p1": "WaLLet1111111111111111111111111111111111111"}
    balances = catalog.ledger.balances()
    dry, _ = catalog.ledger.close_epoch("2026-w49", end, wallets, dry_run=True)
    assert dry.state == "dry_run" and catalog.ledger.balances() == balances
    with pytest.raises(EpochNotFound):
        catalog.ledger.get_payout("2026-w49")
    payout, created = catalog.ledger.close_epoch("2026-w49", end, wallets)
    assert created and payout.state == "closed"
    assert payout.document == dict(dry.document)
    [line] = payout.document["lines"]
    p1_credits = [c for c in catalog.ledger.credits(player_id="p1") if c.session_id == "s1"]
    assert line == {"player_id": "p1", "wallet": wallets["p1"], "millipoints": 10000, "token_amount": 10_000_000,
                    "entries": sorted(c.entry_id for c in p1_credits)}
    assert payout.document["players_without_wallet"] == ["p2"]
    assert payout.file_bytes == canonical_payout_bytes(json.loads(payout.file_bytes))
    assert payout.file_sha256 == hashlib.sha256(payout.file_bytes).hexdigest()
    b = catalog.ledger.balances()
    assert (b[pending_account("p1")], b[epoch_account("p1")], b[pending_account("p2")]) == (5000, 10000, 5000)
    # Closing it again (even with another end time) returns it unchanged.
    again_, created = catalog.ledger.close_epoch("2026-w49", None, wallets)
    assert not created and again_.file_bytes == payout.file_bytes and catalog.ledger.balances() == b
    statuses = {c.entry_id: (c.status, c.epoch_id) for c in catalog.ledger.credits(player_id="p1")}
    assert all(statuses[e] == ("in_epoch", "2026-w49") for e in line["entries"])

    paid = catalog.ledger.mark_paid("2026-w49", "sig-abc")
    assert (paid.state, paid.paid_reference) == ("paid", "sig-abc")
    assert catalog.ledger.mark_paid("2026-w49", "sig-abc").file_bytes == payout.file_bytes
    with pytest.raises(EpochAlreadyPaid):
        catalog.ledger.mark_paid("2026-w49", "another")
    b = catalog.ledger.balances()
    assert (b[epoch_account("p1")], b[paid_account("p1")]) == (0, 10000)
    assert {c.status for c in catalog.ledger.credits(player_id="p1") if c.session_id == "s1"} == {"paid"}
    assert catalog.ledger.check() == []


def test_a_reversal_after_payment_is_recovered_from_the_next_epoch(catalog, clock):
    wallets = {"p1": "W1"}
    _credit(catalog, clock, "s1", "p1", 2)
    catalog.ledger.close_epoch("e1", None, wallets)
    catalog.ledger.mark_paid("e1", "ref")
    catalog.reprocess("s1")
    again(catalog, "s1", "b", "2")
    finish(catalog, "s1", [segment("s1", 0, "p1"), segment("s1", 1, "p1", accepted=False)], owner="b", attempt="2")
    assert catalog.ledger.balances()[pending_account("p1")] == -5000
    clock.t += 10
    e2, _ = catalog.ledger.close_epoch("e2", None, wallets)
    assert e2.document["lines"] == []  # owes, is owed nothing: stays pending
    _credit(catalog, clock, "s2", "p1", 3)
    e3, _ = catalog.ledger.close_epoch("e3", None, wallets)
    assert [ln["millipoints"] for ln in e3.document["lines"]] == [10000]
    assert catalog.ledger.balances()[pending_account("p1")] == 0
    assert catalog.ledger.check() == []


def test_epoch_requests_that_cannot_be_right(catalog):
    with pytest.raises(EpochInvalid, match="future"):
        catalog.ledger.close_epoch("e1", catalog.ledger._now() + timedelta(hours=1), {})
    with pytest.raises(EpochInvalid, match="epoch id"):
        catalog.ledger.close_epoch("bad id/", None, {})
    with pytest.raises(EpochNotFound):
        catalog.ledger.mark_paid("nope", "ref")
    with pytest.raises(EpochInvalid, match="reference"):
        catalog.ledger.mark_paid("nope", " ")
