"""The gateway's records on SQLite (embedded) and on a real PostgreSQL server (the cluster's choice)."""

import threading

from sd_common.problems import Problem
from sd_gateway.database import STATE_OPEN, STATE_REJECTED, STATE_UPLOADED, GatewayDatabase


def test_players_sessions_and_totals(db_url):
    db = GatewayDatabase(db_url)
    try:
        db.add_player("p-1", "build-1")
        db.add_player("p-2", "build-1")
        ids = [f"20261124T1200{i:02d}Z-{i:016x}" for i in range(5)]
        for sid in ids:
            rec = db.add_session(sid, "p-1", f"raw/{sid}", "build-1", "nyc", "r1")
            assert rec.state == STATE_OPEN and rec.created_at.tzinfo is not None
        db.add_session("20261124T130000Z-ffffffffffffffff", "p-2", "raw/x", "", "", "")
        db.set_state(ids[0], STATE_UPLOADED, [], duration_s=60.5)
        db.set_state(ids[1], STATE_UPLOADED, [], duration_s=30.0)
        problems = [Problem("file_missing", "frames.jsonl", "frames.jsonl was not uploaded")]
        rejected = db.set_state(ids[2], STATE_REJECTED, problems)
        assert rejected.problems == problems
        assert db.get_session(ids[2]).problems == problems  # survives the round trip
        totals = db.player_totals("p-1")
        assert (totals.sessions_total, totals.sessions_uploaded, totals.sessions_rejected) == (5, 2, 1)
        assert totals.seconds_uploaded == 90.5
        # newest first, paged by cursor, never another player's
        page1 = db.list_sessions("p-1", 3, None)
        assert [r.session_id for r in page1] == ids[::-1][:3]
        page2 = db.list_sessions("p-1", 3, page1[-1].session_id)
        assert [r.session_id for r in page2] == ids[::-1][3:]
        assert db.get_session("nope") is None
    finally:
        db.close()


def test_concurrent_writers_from_threads(db_url):
    """The service calls the database from worker threads; concurrent writes must all land."""
    db = GatewayDatabase(db_url)
    try:
        db.add_player("p-1", "")

        def write(n: int) -> None:
            for i in range(10):
                db.add_session(f"20261124T1200{n:02d}Z-{i:016x}", "p-1", "raw/x", "", "", "")

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert db.player_totals("p-1").sessions_total == 40
    finally:
        db.close()


def test_plain_postgresql_urls_use_the_shipped_driver(pg_cluster):
    """Operators write postgresql:// or postgres://; SQLAlchemy alone would look for psycopg2."""
    from sd_common.sql import normalize_url

    url = pg_cluster.new_database()  # postgresql+psycopg://…
    for n, plain in enumerate((url.replace("postgresql+psycopg://", "postgresql://"),
                               url.replace("postgresql+psycopg://", "postgres://"))):
        assert normalize_url(plain) == url
        db = GatewayDatabase(plain)
        try:
            db.add_player(f"p-{n}", "")
            assert db.player_totals(f"p-{n}").sessions_total == 0
        finally:
            db.close()
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    assert normalize_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"  # an explicit driver stays
