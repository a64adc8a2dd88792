"""The gateway's records on SQLite (embedded) and on a real PostgreSQL server (the cluster's choice)."""

import threading

import psycopg

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


def test_upload_budgets_count_across_calls_and_threads(db_url):
    """max files/bytes per session hold across every upload-urls call, also when calls race."""
    from sd_gateway.database import UploadBudgetExceeded
    import pytest

    db = GatewayDatabase(db_url)
    try:
        db.add_player("p-1", "")
        db.add_session("20261124T120000Z-0000000000000001", "p-1", "raw/x", "", "", "")
        sid = "20261124T120000Z-0000000000000001"
        db.reserve_uploads(sid, {"a": 10, "b": 10}, max_files=3, max_bytes=100)
        db.reserve_uploads(sid, {"a": 30}, max_files=3, max_bytes=100)  # a path asked again counts once
        with pytest.raises(UploadBudgetExceeded) as e:
            db.reserve_uploads(sid, {"c": 1, "d": 1}, max_files=3, max_bytes=100)
        assert (e.value.what, e.value.total, e.value.limit) == ("files", 4, 3)
        with pytest.raises(UploadBudgetExceeded) as e:
            db.reserve_uploads(sid, {"c": 61}, max_files=3, max_bytes=100)
        assert (e.value.what, e.value.total) == ("bytes", 101)
        db.reserve_uploads(sid, {"c": 60}, max_files=3, max_bytes=100)
        # eight threads race for a budget of 5 one-file calls: exactly 5 win
        db.add_session("20261124T120000Z-0000000000000002", "p-1", "raw/y", "", "", "")
        race = "20261124T120000Z-0000000000000002"
        won, lost = [], []

        def ask(n: int) -> None:
            try:
                db.reserve_uploads(race, {f"f{n}": 1}, max_files=5, max_bytes=100)
                won.append(n)
            except UploadBudgetExceeded:
                lost.append(n)

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (len(won), len(lost)) == (5, 3)
    finally:
        db.close()


def test_players_can_be_disabled(db_url):
    db = GatewayDatabase(db_url)
    try:
        db.add_player("p-1", "")
        assert db.player_status("p-1") == "active" and db.player_status("p-none") is None
        db.set_player_disabled("p-1", True)
        assert db.player_status("p-1") == "disabled"
    finally:
        db.close()


def test_a_database_from_before_the_new_columns_is_upgraded(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the tables as the first release created them
        conn.execute("CREATE TABLE players (player_id VARCHAR(64) PRIMARY KEY, created_at DATETIME, "
                     "client_build VARCHAR(128))")
        conn.execute("CREATE TABLE sessions (session_id VARCHAR(64) PRIMARY KEY, player_id VARCHAR(64), "
                     "state INTEGER, created_at DATETIME, updated_at DATETIME, client_build VARCHAR(128), "
                     "city VARCHAR(128), route_id VARCHAR(128), key_prefix VARCHAR(256), problems_json TEXT, "
                     "duration_s FLOAT)")
        conn.execute("INSERT INTO players VALUES ('p-old', '2026-01-01 00:00:00', '')")
    db = GatewayDatabase(f"sqlite:///{path}")
    try:
        assert db.player_status("p-old") == "active"
        db.add_session("20261124T120000Z-0000000000000001", "p-old", "raw/x", "", "", "")
        db.reserve_uploads("20261124T120000Z-0000000000000001", {"a": 1}, max_files=1, max_bytes=1)
    finally:
        db.close()


def test_a_wallet_challenge_is_consumed_once_across_replicas(db_url):
    """Two replicas (two engines on one database), eight racing consumers: exactly one wins."""
    replicas = [GatewayDatabase(db_url), GatewayDatabase(db_url)]
    try:
        db = replicas[0]
        db.add_wallet_nonce("nonceAAAAAAAA", "p-1", "addr", issued_s=1000, expires_s=1600)
        db.add_wallet_nonce("nonceBBBBBBBB", "p-1", "addr", issued_s=1000, expires_s=1600)
        assert not db.consume_wallet_nonce("nonceAAAAAAAA", "p-2", 1100)  # another player's
        assert not db.consume_wallet_nonce("nonceAAAAAAAA", "p-1", 1600)  # expired
        assert not db.consume_wallet_nonce("unknownNonce", "p-1", 1100)
        assert db.get_wallet_nonce("nonceAAAAAAAA").consumed_s is None  # none of those touched it
        start = threading.Barrier(8)
        results = []

        def consume(i: int) -> None:
            start.wait()
            results.append(replicas[i % 2].consume_wallet_nonce("nonceAAAAAAAA", "p-1", 1100 + i))

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 7 + [True]
        assert db.get_wallet_nonce("nonceAAAAAAAA").consumed_s is not None
        assert db.get_wallet_nonce("nonceBBBBBBBB").consumed_s is None
        # a challenge issued a day after these expired clears them away
        db.add_wallet_nonce("nonceCCCCCCCC", "p-1", "addr", issued_s=1600 + 86401, expires_s=1600 + 87001)
        assert db.get_wallet_nonce("nonceAAAAAAAA") is None and db.get_wallet_nonce("nonceCCCCCCCC") is not None
    finally:
        for r in replicas:
            r.close()


async def test_a_replica_reads_what_another_changed_at_once(db_url):
    """The upload path's one read (player and session together) never answers from an old snapshot:
    each change another replica makes is seen by the next read, on SQLite's direct path as on
    PostgreSQL, from a worker thread as from the event loop (PostgreSQL's async pool)."""
    a, b = GatewayDatabase(db_url), GatewayDatabase(db_url)
    assert (a.async_pg is not None) == db_url.startswith("postgresql")

    async def read(name: str, *args):
        """The read both ways; they must agree."""
        sync, from_loop = getattr(a, name)(*args), await getattr(a, f"{name}_async")(*args)
        assert from_loop == sync, name
        return sync

    try:
        sid = "20261124T120000Z-00000000000000aa"
        b.add_player("p-1", "")
        b.add_player("p-2", "")
        b.add_session(sid, "p-1", f"raw/{sid}", "", "", "")
        seen = await read("player_session", "p-1", sid)
        assert (seen.player_status, seen.session.state, seen.uploads_json) == ("active", STATE_OPEN, "{}")
        assert (await read("player_session", "p-1", "20261124T120000Z-00000000000000bb")).session is None
        assert (await read("player_session", "p-none", sid)).player_status is None
        assert (await read("player_session", "p-2", sid)).session.player_id == "p-1"  # another's: the caller decides
        assert b.reserve_uploads(sid, {"v.webm": 5}, max_files=4, max_bytes=100, before=seen.uploads_json)
        seen = await read("player_session", "p-1", sid)
        assert seen.uploads_json == '{"v.webm": 5}'
        # asked again at the same size: nothing to write, and nothing is written
        assert not a.reserve_uploads(sid, {"v.webm": 5}, max_files=4, max_bytes=100, before=seen.uploads_json)
        b.set_state(sid, STATE_UPLOADED, [], duration_s=3.0)
        assert (await read("player_session", "p-1", sid)).session.state == STATE_UPLOADED
        assert (await read("get_session", sid)).state == STATE_UPLOADED
        assert await read("get_session", "20261124T120000Z-00000000000000bb") is None
        b.set_player_disabled("p-1", True)
        assert (await read("player_session", "p-1", sid)).player_status == "disabled"
        assert await read("player_status", "p-1") == "disabled"
        assert await read("player_status", "p-none") is None
    finally:
        await a.aclose()
        b.close()


async def test_the_async_pool_reads_again_after_the_server_dropped_its_connections(pg_cluster):
    url = pg_cluster.new_database()
    db = GatewayDatabase(url)
    try:
        db.add_player("p-1", "")
        assert await db.player_status_async("p-1") == "active"  # the pool holds a connection now
        with psycopg.connect(pg_cluster.admin_url, autocommit=True) as admin:
            dropped = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                                    (db.engine.url.database,)).fetchone()[0]
        assert dropped >= 1
        db.set_player_disabled("p-1", True)  # the engine's own pool pings and reconnects
        assert await db.player_status_async("p-1") == "disabled"  # read on a new connection
    finally:
        await db.aclose()
