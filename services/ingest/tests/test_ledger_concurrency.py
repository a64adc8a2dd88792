"""Thousands of processing results, duplicates, reprocessings and epoch closes at once on real PostgreSQL,
then the ledger's invariants, checked with the test's own queries."""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter, defaultdict

import pytest
from sd_ingest.catalog import Catalog, InvalidTransition, LeaseLost
from sd_ingest.ledger import LedgerConfig
from sqlalchemy import text

from rewards_fixtures import Clock, segment, to_processing

CAP = 40_000
EVENTS = 2000
THREADS = 6


@pytest.fixture
def pg_catalog(pg_cluster):
    # Each reading of the clock moves it 7 s: credits fall on several UTC days, so several caps apply.
    c = Catalog(pg_cluster.new_database(), clock=Clock(step_s=7.0),
                ledger_config=LedgerConfig(daily_cap_millipoints=CAP))
    yield c
    c.close()


def _result(rng: random.Random, sid: str, player: str) -> list:
    commands = rng.choice([{"LANEFOLLOW": 150}, {"LEFT": 60, "LANEFOLLOW": 90}, {"CHANGELANERIGHT": 150},
                           {"STRAIGHT": 100, "RIGHT": 50}])
    keep = [k for k in range(4) if rng.random() < 0.9]  # now and then a segment is missing from a result
    return [segment(sid, k, player, accepted=rng.random() < 0.7, commands=commands,
                    diffusion_frames=rng.choice([0, 75, 150]),
                    infractions=rng.choice([{}, {}, {"red_light": 1}]), progress=(0.0, rng.random() * 0.05))
            for k in keep]


def test_concurrent_results_duplicates_reprocessing_and_epochs_keep_the_invariants(pg_catalog):
    catalog = pg_catalog
    rng = random.Random(7)
    players = [f"p{i}" for i in range(6)]
    wallets = {p: f"W{p}" for p in players[::2]}
    sessions = {f"s{i:02d}": players[i % len(players)] for i in range(24)}
    for sid, player in sessions.items():
        to_processing(catalog, sid, player, owner=f"o-{sid}", attempt=f"{sid}-0")
    work: queue.Queue = queue.Queue()
    for sid, player in sessions.items():
        work.put(("finish", sid, f"o-{sid}", f"{sid}-0", _result(rng, sid, player)))
    budget = threading.Semaphore(EVENTS)
    done = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def handle(item, rng: random.Random) -> None:
        kind, sid = item[0], item[1]
        if kind == "finish":
            _, _, owner, attempt, segs = item
            catalog.finish_processed(sid, owner, attempt, segments=segs, qc_report_uri="", problems=[])
            work.put(("reprocess", sid))
        elif kind == "reprocess":
            catalog.reprocess(sid)
            work.put(("start", sid))
        elif kind == "start":
            owner, attempt = f"o-{sid}-{rng.random()}", f"{sid}-{rng.random()}"
            if catalog.claim(sid, catalog.get_session(sid).state, owner, 600) is None:
                return
            catalog.start_attempt(sid, owner, attempt)
            event = ("finish", sid, owner, attempt, _result(rng, sid, sessions[sid]))
            work.put(event)
            work.put(event)  # the same result delivered twice
        elif kind == "close":
            catalog.ledger.close_epoch(item[1], None, wallets)
        if rng.random() < 0.01:
            work.put(("close", f"e-{rng.random():.12f}"))

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while budget.acquire(blocking=False):
            try:
                item = work.get(timeout=0.5)
            except queue.Empty:
                return
            try:
                handle(item, rng)
                outcome = "ok"
            except (LeaseLost, InvalidTransition):
                outcome = "refused"  # a duplicate, or a result for an attempt that is no longer current
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)
                return
            with lock:
                done[(item[0], outcome)] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(done.values()) >= EVENTS * 0.95, done
    assert done[("finish", "ok")] > 400 and done[("finish", "refused")] > 400 and done[("close", "ok")] > 2, done

    with catalog._engine.connect() as conn:
        q = lambda sql: conn.execute(text(sql)).all()  # noqa: E731
        # Every transaction sums to zero.
        assert q("SELECT txn_id FROM ledger_transactions t WHERE COALESCE((SELECT SUM(millipoints) "
                 "FROM ledger_postings p WHERE p.txn_id = t.txn_id), 0) <> 0") == []
        assert q("SELECT txn_id FROM ledger_postings WHERE txn_id NOT IN (SELECT txn_id FROM ledger_transactions)") == []
        # Every credit and reversal links to a segment of the catalog.
        assert q("SELECT entry_id FROM ledger_credits WHERE segment_id NOT IN (SELECT segment_id FROM catalog_segments)"
                 " UNION ALL SELECT entry_id FROM ledger_reversals WHERE credit_entry_id NOT IN "
                 "(SELECT entry_id FROM ledger_credits)") == []
        live = ("SELECT * FROM ledger_credits c WHERE NOT EXISTS "
                "(SELECT 1 FROM ledger_reversals r WHERE r.credit_entry_id = c.entry_id)")
        # No segment credited twice; every accepted segment of a processed session credited, no rejected one.
        assert q(f"SELECT segment_id FROM ({live}) l GROUP BY segment_id HAVING COUNT(*) > 1") == []
        accepted = {r[0] for r in q("SELECT g.segment_id FROM catalog_segments g JOIN catalog_sessions s "
                                    "ON s.session_id = g.session_id WHERE g.accepted AND s.state = 'PROCESSED'")}
        rejected = {r[0] for r in q("SELECT segment_id FROM catalog_segments WHERE NOT accepted")}
        credited = {r[0] for r in q(f"SELECT segment_id FROM ({live}) l")}
        assert accepted <= credited and not (credited & rejected)
        # Sum of credits = what the accepted segments were credited = what the players' accounts hold.
        [(live_sum,)] = q(f"SELECT COALESCE(SUM(millipoints), 0) FROM ({live}) l")
        [(segment_sum,)] = q(f"SELECT COALESCE(SUM(l.millipoints), 0) FROM ({live}) l JOIN catalog_segments g "
                             "ON g.segment_id = l.segment_id WHERE g.accepted")
        [(players_sum,)] = q("SELECT COALESCE(SUM(millipoints), 0) FROM ledger_postings WHERE account <> 'issuance'")
        [(n_credits,)] = q("SELECT COUNT(*) FROM ledger_credits")
        [(n_reversals,)] = q("SELECT COUNT(*) FROM ledger_reversals")
        [(issuance,)] = q("SELECT COALESCE(SUM(millipoints), 0) FROM ledger_postings WHERE account = 'issuance'")
        assert n_credits + n_reversals > 800  # ledger entries written concurrently, besides the refusals
        assert live_sum == segment_sum == players_sum == -issuance > 0
        # Per player and UTC day, live credits stay within the cap (which was reached: some were cut).
        per_day = q(f"SELECT player_id, day, SUM(millipoints) FROM ({live}) l GROUP BY player_id, day")
        assert per_day and all(total <= CAP for _, _, total in per_day)
        assert q("SELECT COUNT(*) FROM ledger_credits WHERE millipoints < gross_millipoints")[0][0] > 0
        # An entry is in one epoch at most, and only entries of players with a wallet are.
        assert {r[0] for r in q("SELECT DISTINCT player_id FROM ledger_epoch_entries")} <= set(wallets)
    per_player = defaultdict(int)
    for p in players:
        per_player[p] = sum(catalog.ledger.balances(p).values())
    assert sum(per_player.values()) == live_sum
    assert catalog.ledger.check() == []
    print(f"ledger: {n_credits} credits, {n_reversals} reversals, events {dict(done)}")
