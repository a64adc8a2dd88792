"""SQLAlchemy engines for the services' databases: SQLite embedded, PostgreSQL in the cluster."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, event
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
    engine = create_engine(url, pool_pre_ping=True, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _wal(dbapi_conn, _record) -> None:  # readers beside one writer; a lock waits up to the timeout
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine
