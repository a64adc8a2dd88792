"""SQLAlchemy engines for the services' databases: SQLite embedded, PostgreSQL in the cluster."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url


def normalize_url(url: str) -> str:
    """The URL with the project's PostgreSQL driver (psycopg 3) when none is named.

    Operators write `postgresql://…` (or Heroku-style `postgres://…`); SQLAlchemy would pick psycopg2
    for those, which the images do not ship.
    """
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    """An engine that several threads (and, for SQLite, several processes) can share safely."""
    url = normalize_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    # no pre-ping: a SQLite connection is a file handle, never dropped by a server; the ping was one more
    # statement on every checkout
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _wal(dbapi_conn, _record) -> None:  # readers beside one writer; a lock waits up to the timeout
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


def add_missing_columns(engine: Engine, added: list[tuple[str, str, str]]) -> None:
    """Adds each (table, column, DDL) a database made by an older version lacks.

    create_all makes missing tables, not missing columns; the services list the columns they added
    since a table was first created, and this brings an existing database up to them.
    """
    existing = {table: {c["name"] for c in inspect(engine).get_columns(table)} for table in {t for t, _, _ in added}}
    with engine.begin() as conn:
        for table, column, ddl in added:
            if column not in existing[table]:
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
