"""A throwaway PostgreSQL server for tests: Debian's PostgreSQL, started in a temporary folder.

PostgreSQL refuses to run as root, and CI runs as root: the cluster is made and started as the
``postgres`` user (``runuser``) in a folder that user owns, listening on 127.0.0.1 only. About 1 s.

    with start_postgres() as pg:
        url = pg.new_database()      # postgresql+psycopg://test@127.0.0.1:PORT/db_1
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from tests.ports import free_port

USER = "test"


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder; raises naming the package to install."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: `apt-get install -y postgresql` (make system-deps does it)")
    return Path(found[-1]).parent


@dataclass
class PostgresCluster:
    """A running throwaway cluster; ``stop()`` (or leaving the ``with``) removes it."""

    directory: Path
    port: int
    bin_dir: Path
    _as_postgres: list[str]
    _databases: int = field(default=0)

    @property
    def admin_url(self) -> str:
        """psycopg (libpq) URL of the default database."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database``."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Creates an empty database and returns its SQLAlchemy URL (one per test keeps tests apart)."""
        self._databases += 1
        name = f"db_{self._databases}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stops the server and deletes its files."""
        subprocess.run([*self._as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.directory / "data"),
                        "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres() -> PostgresCluster:
    """Initialises and starts a cluster on a free loopback port; trust authentication for user ``test``."""
    bin_dir = postgres_bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="sd-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(directory, pw.pw_uid, pw.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    try:
        subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(directory / "data"), "-A", "trust",
                        "-U", USER, "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(directory / "data"), "-l",
                        str(directory / "server.log"), "-o",
                        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off",
                        "-w", "start"], check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as exc:
        log = (directory / "server.log").read_text(errors="replace") if (directory / "server.log").exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}\n{log}") from exc
    return PostgresCluster(directory, port, bin_dir, as_postgres)
