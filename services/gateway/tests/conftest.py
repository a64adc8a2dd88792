"""A real gateway (HTTP + gRPC on ephemeral loopback ports) over a local store in a temp dir."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from sd_common.settings import StoreSettings
from sd_gateway.assembly import start_gateway
from sd_gateway.settings import GatewaySettings


@pytest.fixture
async def start_gw(tmp_path):
    """Factory: await start_gw(**gateway_settings) -> RunningGateway; every one is stopped at teardown."""
    running = []

    async def start(store_overrides: dict | None = None, **overrides):
        settings = GatewaySettings(**{"grpc_port": 0, "http_port": 0, "metrics_port": 0,
                                      "state_dir": tmp_path / "gw", "shutdown_grace_s": 1, **overrides})
        store = StoreSettings(**{"backend": "local", "root": tmp_path / "store", **(store_overrides or {})})
        gw = await start_gateway(settings, store)
        running.append(gw)
        return gw

    yield start
    for gw in running:
        await gw.stop()


@pytest.fixture
async def gateway(start_gw):
    return await start_gw()


@pytest.fixture
async def http(gateway):
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def synthetic_session(tmp_path_factory) -> Path:
    """A small but real recorded session (VP8 video, logs, manifest), made once per test run."""
    from sd_common.session_format.synth import SynthConfig, synth_session
    out = tmp_path_factory.mktemp("synth") 
    synth_session(out, SynthConfig(width=256, height=144, duration_s=2.0, seed=7))
    return out / "session"


def manifest_of(session_dir: Path) -> dict:
    return json.loads((session_dir / "manifest.json").read_text())


@dataclass(frozen=True)
class World:
    """Everything a refused request must leave as it was."""

    files: dict[str, str]  # every file under the test's folder (store objects, parts, .tmp, .meta, .seals,
    #                        the event queue), by path relative to it, with its sha256
    events: tuple[str, ...]  # the local event queue's messages
    records: tuple[tuple, ...]  # every player and session row of the gateway's database


def world(gw, folder: Path) -> World:
    """The state of the test's folder, event queue and gateway records, for before/after comparisons."""
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(folder.rglob("*")) if p.is_file() and "gw" not in p.relative_to(folder).parts}
    events = tuple(sorted(k for k in files if "/.events/" in f"/{k}"))
    with gw._db._engine.connect() as conn:
        records = tuple(tuple(row) for table in ("players", "sessions")
                        for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1")))
    return World(files, events, records)
