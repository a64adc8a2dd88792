"""Rate limits kept in the gateway's database hold across replicas: the buckets on SQLite and the real
PostgreSQL, and two real gateway processes sharing one PostgreSQL that admit one player's burst once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select, text

from sd_common.sql import make_engine
from sd_gateway.pgasync import AsyncPostgres
from sd_gateway.ratelimit import DatabaseTokenBuckets, RateBucketRow, TokenBucketLimiter
from tests.ports import free_port


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_admitted_once_across_two_replicas_engines(db_url):
    # Two limiters on two engines (two replicas) over one database share the bucket.
    a = DatabaseTokenBuckets(make_engine(db_url), "sessions", rate_per_minute=0.01, burst=3)
    b = DatabaseTokenBuckets(make_engine(db_url), "sessions", rate_per_minute=0.01, burst=3)
    answers = [(a if i % 2 else b).take("player-1") for i in range(6)]
    assert answers[:3] == [None, None, None]
    assert all(w is not None and w > 60 for w in answers[3:]), answers  # 0.01/min: ~100 min per token
    assert a.take("player-2") is None  # per key
    other = DatabaseTokenBuckets(make_engine(db_url), "upload_calls", rate_per_minute=0.01, burst=1)
    assert other.take("player-1") is None  # per limiter


def test_the_shared_bucket_refills_and_answers_like_the_memory_one(tmp_path):
    clock = Clock()
    shared = DatabaseTokenBuckets(make_engine(f"sqlite:///{tmp_path / 'rl.db'}"), "s", 6.0, 2, clock=clock)
    memory = TokenBucketLimiter(6.0, 2, clock=clock)
    for step_s in (0, 0, 0, 3, 10, 10, 0, 0, 25, 0.5, 0, 60, 0, 0, 0):
        clock.now += step_s
        want, got = memory.take("k"), shared.take("k")
        assert (want is None) == (got is None), (step_s, want, got)
        if want is not None:
            assert got == pytest.approx(want)


def test_prune_forgets_only_full_buckets(tmp_path):
    clock = Clock()
    engine = make_engine(f"sqlite:///{tmp_path / 'rl.db'}")
    limiter = DatabaseTokenBuckets(engine, "s", rate_per_minute=60.0, burst=5, clock=clock)  # full after 5 s
    for _ in range(5):
        assert limiter.take("busy") is None
    assert limiter.take("idle") is None
    clock.now += 4.0
    assert limiter.take("busy") is None  # refilled 4, took 1
    clock.now += 2.0  # idle: 6 s since its take, full again; busy: 2 s
    assert limiter.prune() == 1
    with engine.connect() as conn:
        assert [k for (k,) in conn.execute(select(RateBucketRow.key))] == ["busy"]
    # the pruned key answers as a full bucket would have
    for _ in range(5):
        assert limiter.take("idle") is None
    assert limiter.take("idle") is not None


def test_concurrent_takers_on_postgres_get_exactly_the_burst(pg_cluster):
    url = pg_cluster.new_database()
    limiters = [DatabaseTokenBuckets(make_engine(url), "sessions", rate_per_minute=0.001, burst=40)
                for _ in range(4)]
    start = threading.Barrier(16)

    def taker(i: int) -> int:
        start.wait()
        return sum(limiters[i % 4].take("one-player") is None for _ in range(10))

    with ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(taker, range(16)))
    assert admitted == 40  # 160 attempts, one burst
    with make_engine(url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(RateBucketRow)).scalar() == 1


async def test_concurrent_takes_from_the_event_loops_async_pool_get_exactly_the_burst(pg_cluster):
    """The gateway's own path on PostgreSQL: acquire() through the async pool (no thread), many at once."""
    url = pg_cluster.new_database()
    engines = [make_engine(url) for _ in range(2)]
    pools = [AsyncPostgres(e, max_size=4) for e in engines]
    limiters = [DatabaseTokenBuckets(e, "sessions", rate_per_minute=0.001, burst=40, pg=p)
                for e, p in zip(engines, pools)]
    try:
        answers = await asyncio.gather(*(limiters[i % 2].acquire("one-player") for i in range(120)))
        assert sum(a is None for a in answers) == 40  # 120 attempts, one burst
        assert all(a is None or a > 0 for a in answers)  # the refused are told how long to wait
        assert limiters[0].take("one-player") is not None  # the thread path sees the same bucket
        with engines[0].connect() as conn:
            assert conn.execute(select(func.count()).select_from(RateBucketRow)).scalar() == 1
    finally:
        for p in pools:
            await p.close()
        for e in engines:
            e.dispose()


def _start_gateway(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sd_gateway"],
                            env={**env, "SD_GATEWAY_HTTP_PORT": str(port), "SD_GATEWAY_GRPC_PORT": str(free_port())},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the gateway exited with {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the gateway did not answer /healthz within 60 s")


@pytest.mark.parametrize("store, admitted", [("database", 4), ("memory", 8)])
def test_two_gateway_processes_sharing_one_store_admit_a_burst_once(pg_cluster, tmp_path, store, admitted):
    """The memory store is the control: each replica admits its own burst, so the test can tell them apart."""
    url = pg_cluster.new_database()
    env = {**os.environ, "SD_GATEWAY_DATABASE_URL": url, "SD_GATEWAY_RATE_LIMIT_STORE": store,
           "SD_GATEWAY_TOKEN_SECRET": "shared-token-secret-of-both-replicas-0123456789",
           "SD_GATEWAY_SESSIONS_BURST": "4", "SD_GATEWAY_SESSIONS_PER_MINUTE": "0.001",
           "SD_GATEWAY_METRICS_PORT": "0", "SD_GATEWAY_SHUTDOWN_GRACE_S": "1",
           "SD_STORE_BACKEND": "local", "SD_STORE_ROOT": str(tmp_path / "store"),
           "SD_STORE_SIGNING_KEY": "shared-store-signing-key-0123456789abcdef"}
    procs = []
    try:
        for i in range(2):
            procs.append(_start_gateway({**env, "SD_GATEWAY_STATE_DIR": str(tmp_path / f"gw{i}")}))
        urls = [u for _, u in procs]
        token = httpx.post(urls[0] + "/v1/players", json={}, timeout=10).json()["device_token"]
        headers = {"Authorization": f"Bearer {token}"}
        codes = [httpx.post(urls[i % 2] + "/v1/sessions", json={}, headers=headers, timeout=10).status_code
                 for i in range(10)]
        assert codes.count(201) == admitted and codes.count(429) == 10 - admitted, codes
        with make_engine(url).connect() as conn:  # a refused request recorded no session
            assert conn.execute(text("SELECT count(*) FROM sessions")).scalar() == admitted
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, _ in procs:
            proc.wait(timeout=30)
