"""A real gateway (HTTP + gRPC on ephemeral loopback ports) over a local store in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

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
