"""Fixtures of the diffusion tests: the real service in-process on loopback (diffusion_peers.py drives it)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

# Appended, not put first: other test folders import their own `conftest` by name from sys.path.
sys.path.append(str(Path(__file__).parent))  # diffusion_peers beside this file

from sd_common.grpc_runtime import GrpcRuntime  # noqa: E402
from sd_diffusion.server import register  # noqa: E402
from sd_diffusion.settings import DiffusionSettings  # noqa: E402
from scale_diffusion.diffusion.v1 import diffusion_pb2_grpc  # noqa: E402


@pytest.fixture
async def start_diffusion():
    """start(**settings) → (runtime, stub): the real service on a free loopback port; stopped after the test."""
    running: list[tuple[GrpcRuntime, grpc.aio.Channel]] = []

    async def start(**overrides):
        settings = DiffusionSettings(grpc_port=0, metrics_port=0, shutdown_grace_s=1.0, **overrides)
        rt = GrpcRuntime("diffusion", settings)
        service = register(rt)
        port = await rt.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        running.append((rt, channel))
        rt.service = service
        return rt, diffusion_pb2_grpc.DiffusionServiceStub(channel)

    yield start
    for rt, channel in running:
        await channel.close()
        await rt.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: tiny models' convolutions on two contended cores run about 30x
    slower with two threads than with one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
