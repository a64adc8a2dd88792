"""Per-key token buckets: a burst allowance refilled at a steady rate.

Two stores behind one interface (``await limiter.acquire(key)``):

- ``TokenBucketLimiter`` keeps the buckets in this replica's memory (``make run``: one gateway).
- ``DatabaseTokenBuckets`` keeps them in the gateway's database, which every replica shares, so
  two replicas admit one player's burst once, not once each (``SD_GATEWAY_RATE_LIMIT_STORE=database``).
  One statement takes a token: an upsert whose row lock orders concurrent takers of the same key, with
  the refill computed from the database's own clock on PostgreSQL (replicas' clocks may differ).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from sqlalchemy import Boolean, Engine, Float, String, bindparam, case, delete, func, literal
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sd_gateway.pgasync import AsyncPostgres


class RateLimiter(Protocol):
    async def acquire(self, key: str) -> float | None:
        """Takes one token for key; None if allowed, else the seconds until one is available."""


class TokenBucketLimiter:
    """Allows `burst` calls at once per key and `rate_per_minute` on average after that.

    State is per gateway replica and bounded: the least recently seen keys are forgotten first
    (a forgotten key starts with a full bucket, which errs on the player's side).
    """

    def __init__(self, rate_per_minute: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate_per_s = rate_per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def acquire(self, key: str) -> float | None:
        return self.take(key)

    def take(self, key: str) -> float | None:
        """``acquire`` without the event loop (the same answer)."""
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            allowed = None
        else:
            self._buckets[key] = (tokens, now)
            allowed = (1.0 - tokens) / self._rate_per_s
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed


class _Base(DeclarativeBase):
    pass


class RateBucketRow(_Base):
    """One key's bucket in one limiter (``bucket`` names the limiter: sessions, upload_calls, …)."""

    __tablename__ = "gateway_rate_buckets"
    bucket: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_s: Mapped[float] = mapped_column(Float, index=True)  # unix time of the last take
    allowed: Mapped[bool] = mapped_column(Boolean)  # whether the last take got a token


class DatabaseTokenBuckets:
    """The same buckets as ``TokenBucketLimiter``, kept in a database all replicas share.

    A key idle for ``burst / rate`` seconds has a full bucket again, so ``prune`` may delete its row
    without changing any answer: the table holds only the keys seen within that window.
    """

    PRUNE_EVERY_S = 300.0

    def __init__(self, engine: Engine, bucket: str, rate_per_minute: float, burst: int, *,
                 clock: Callable[[], float] = time.time, pg: AsyncPostgres | None = None) -> None:
        if not bucket or len(bucket) > 64:
            raise ValueError("bucket must name the limiter in 1-64 characters")
        self._engine = engine
        self._bucket = bucket
        self._rate_per_s = rate_per_minute / 60.0
        self._burst = float(burst)
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._pg = pg if self._postgres else None
        self._next_prune_s = 0.0
        self._take = None
        _Base.metadata.create_all(engine)

    async def acquire(self, key: str) -> float | None:
        if self._pg is None:
            return await asyncio.to_thread(self.take, key)
        # the same upsert, autocommitted (one statement: atomic per key), from the event loop
        tokens, allowed = await self._pg.fetch_one(self._take_statement(), {"key": key[:256]})
        if self._clock() >= self._next_prune_s:
            await asyncio.to_thread(self.prune)
        return self._wait_s(tokens, allowed)

    def _wait_s(self, tokens: float, allowed: bool) -> float | None:
        return None if allowed else (1.0 - tokens) / self._rate_per_s

    def _now(self):
        # PostgreSQL's clock, the same for every replica; SQLite is one machine's file.
        return func.extract("epoch", func.clock_timestamp()) if self._postgres else literal(self._clock())

    def _take_statement(self):
        """The upsert that takes a token, built once: building and keying it cost ten times running it."""
        if self._take is None:
            t = RateBucketRow.__table__
            # the database's clock on PostgreSQL; this process's, as a parameter, on SQLite
            now = (func.extract("epoch", func.clock_timestamp()) if self._postgres
                   else bindparam("now", type_=Float()))
            elapsed = case((now > t.c.updated_s, now - t.c.updated_s), else_=0.0)
            grown = t.c.tokens + elapsed * self._rate_per_s
            refilled = case((grown > self._burst, self._burst), else_=grown)
            insert = (postgresql.insert(t) if self._postgres else sqlite.insert(t)).values(
                bucket=self._bucket, key=bindparam("key"), tokens=self._burst - 1.0, updated_s=now, allowed=True)
            self._take = insert.on_conflict_do_update(
                index_elements=[t.c.bucket, t.c.key],
                set_={"tokens": case((refilled >= 1.0, refilled - 1.0), else_=refilled),
                      "allowed": refilled >= 1.0, "updated_s": now},
            ).returning(t.c.tokens, t.c.allowed)
        return self._take

    def take(self, key: str) -> float | None:
        """One token for key from the shared bucket: one upsert, atomic per key."""
        params = {"key": key[:256]}
        if not self._postgres:
            params["now"] = self._clock()
        with self._engine.begin() as conn:
            tokens, allowed = conn.execute(self._take_statement(), params).one()
        if self._clock() >= self._next_prune_s:
            self.prune()
        return self._wait_s(tokens, allowed)

    def prune(self) -> int:
        """Deletes the rows of keys whose buckets are full again; returns how many."""
        self._next_prune_s = self._clock() + self.PRUNE_EVERY_S
        t = RateBucketRow.__table__
        full_after_s = self._burst / self._rate_per_s
        with self._engine.begin() as conn:
            return conn.execute(delete(t).where(
                t.c.bucket == self._bucket, t.c.updated_s < self._now() - full_after_s)).rowcount


def make_limiter(store: str, engine: Engine | None, bucket: str, rate_per_minute: float,
                 burst: int, *, pg: AsyncPostgres | None = None) -> RateLimiter:
    """The configured store's limiter: "memory" (this replica) or "database" (shared by the replicas;
    its takes through ``pg`` from the event loop, when the database is PostgreSQL)."""
    if store == "database":
        if engine is None:
            raise ValueError("the database rate-limit store needs the gateway's database")
        return DatabaseTokenBuckets(engine, bucket, rate_per_minute, burst, pg=pg)
    return TokenBucketLimiter(rate_per_minute, burst)
