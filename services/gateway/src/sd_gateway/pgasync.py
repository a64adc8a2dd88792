"""The gateway's hot statements on PostgreSQL, run on the event loop through psycopg's async pool.

A read or a rate-limit take through SQLAlchemy on a worker thread cost about four times the statement
itself (the thread hand-off, the engine's per-statement work); the same statement, compiled by
SQLAlchemy once and sent by psycopg's ``AsyncConnection``, costs the round trip and little else.
Every statement here is one autocommitted statement, so each is atomic on its own, as it was in its
own transaction before.
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine


class AsyncPostgres:
    """An async connection pool to the engine's database, opened on first use in the running loop."""

    def __init__(self, engine: Engine, *, max_size: int = 16) -> None:
        self._dialect = engine.dialect
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._max_size = max_size
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()
        self._compiled: dict[int, tuple[Any, type | None]] = {}

    async def _the_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    pool = AsyncConnectionPool(self._conninfo, min_size=1, max_size=self._max_size, open=False,
                                               kwargs={"autocommit": True})
                    await pool.open(wait=True, timeout=30)
                    self._pool = pool
        return self._pool

    def _compile(self, statement):
        found = self._compiled.get(id(statement))
        if found is None:
            compiled = statement.compile(dialect=self._dialect)
            columns = list(statement.exported_columns)  # a SELECT's columns, or what an INSERT RETURNs
            row_type = namedtuple("Row", [c.key for c in columns]) if columns else None
            found = self._compiled[id(statement)] = (compiled, row_type)
        return found

    async def fetch_one(self, statement, params: dict[str, Any]):
        """The first row of ``statement`` (a SQLAlchemy Core statement) with ``params``, by column name."""
        compiled, row_type = self._compile(statement)
        sql, values = compiled.string, compiled.construct_params(params)
        pool = await self._the_pool()
        try:
            found = await self._run(pool, sql, values)
        except psycopg.OperationalError:
            # Connections are not checked on every checkout (a round trip each): one the server dropped
            # (a restart, a failover) fails here. The pool discards it; the idle ones are checked, and
            # the statement runs once more. (A take that did land before its connection broke costs
            # the player one token more: never one less.)
            await pool.check()
            found = await self._run(pool, sql, values)
        if not found:
            return None
        return row_type(*found[0]) if row_type is not None else found[0]

    @staticmethod
    async def _run(pool: AsyncConnectionPool, sql: str, values: dict[str, Any]) -> list[tuple]:
        async with pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(sql, values)
            return await cur.fetchall()

    async def close(self) -> None:
        """Closes the pool's connections."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
