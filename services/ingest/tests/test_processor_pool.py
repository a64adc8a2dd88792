"""The ingest's processor pool: slots per pod, pods passed over when down, DNS targets, all against real
gRPC servers (the scripted processor of fake_processor.py) on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from scale_diffusion.processor.v1 import processor_pb2

from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_ingest.dispatch import DispatchFailed, ProcessorPool
from tests.ports import free_port

from .fake_processor import start_fake_processor


@pytest.fixture
async def processors(tmp_path):
    """Factory: await processors(n) -> their ports; every server stopped at teardown."""
    started = []

    async def start(n: int) -> list[int]:
        ports = []
        for _ in range(n):
            store = make_store(StoreSettings(backend="local", root=tmp_path / "store"))
            server, port, _ = await start_fake_processor(store, ["ok"], tmp_path / "calls")
            started.append((server, store))
            ports.append(port)
        return ports

    yield start
    for server, store in started:
        await server.stop(0)
        await store.close()


def _pool(targets: str, **kw) -> ProcessorPool:
    return ProcessorPool(targets, slots_per_pod=kw.pop("slots", 1), idle_timeout_s=5, timeout_s=30,
                         connect_timeout_s=kw.pop("connect_timeout_s", 1.0), **kw)


async def test_each_pod_takes_its_slots_and_no_more(processors):
    ports = await processors(2)
    pool = _pool(",".join(f"127.0.0.1:{p}" for p in ports), slots=2)
    try:
        slots = [await pool.reserve() for _ in range(4)]
        assert sorted(s.target for s in slots) == sorted(f"127.0.0.1:{p}" for p in ports for _ in range(2))
        assert slots[0].target != slots[1].target  # the emptiest pod first: spread before stacking
        assert await pool.reserve() is None and pool.free_slots() == 0  # full: no slot, nothing claimed
        slots[2].release()
        slots[2].release()  # a second release frees nothing more
        again = await pool.reserve()
        assert again is not None and again.target == slots[2].target
        assert await pool.reserve() is None
    finally:
        await pool.close()


async def test_an_unreachable_pod_is_passed_over_and_tried_again_after_its_backoff(processors):
    (live,) = await processors(1)
    dead = free_port()  # nothing listens there
    pool = _pool(f"127.0.0.1:{dead},127.0.0.1:{live}", slots=1, connect_timeout_s=0.5, down_s=30)
    try:
        first = await pool.reserve()
        assert first is not None and first.target == f"127.0.0.1:{live}"
        first.release()
        # the dead pod is now in its backoff: only the live one is offered, and at once
        assert pool.free_slots() == 1
        assert (await pool.reserve()).target == f"127.0.0.1:{live}"
    finally:
        await pool.close()


async def test_a_pod_lost_after_its_slot_was_reserved_fails_the_call_as_fast_as_a_reservation(tmp_path):
    store = make_store(StoreSettings(backend="local", root=tmp_path / "store"))
    servers = [await start_fake_processor(store, ["ok"], tmp_path / f"calls{i}") for i in range(2)]
    # The idle timeout is long: waiting for it would overrun the bound below.
    pool = ProcessorPool(",".join(f"127.0.0.1:{port}" for _, port, _ in servers), slots_per_pod=1,
                         idle_timeout_s=120, timeout_s=300, connect_timeout_s=0.5, down_s=30)
    try:
        slot = await pool.reserve()
        server = next(srv for srv, port, _ in servers if f"127.0.0.1:{port}" == slot.target)
        await server.stop(0)
        # The pod is lost before the call: the channel has seen it go (else the call itself would meet
        # the closed socket and fail at once, whatever the wait).
        channel = pool._pods[slot.target].client._channel
        await asyncio.wait_for(channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 10)
        with pytest.raises(DispatchFailed, match="unreachable for 0.5 s") as failed:
            await asyncio.wait_for(slot.process(processor_pb2.ProcessSessionRequest(session_id="s")), 20)
        assert failed.value.pod_down
        slot.release()
        other = await pool.reserve()  # the lost pod is passed over; the other takes the next session
        assert other is not None and other.target != slot.target
        other.release()
    finally:
        await pool.close()
        for server, _, _ in servers:
            await server.stop(0)
        await store.close()


async def test_a_dns_target_names_every_address_as_a_pod(processors):
    (port,) = await processors(1)
    pool = _pool(f"dns:///localhost:{port}")
    try:
        assert f"127.0.0.1:{port}" in await pool.refresh()
        slot = await pool.reserve()
        assert slot is not None
        slot.release()
    finally:
        await pool.close()


def test_a_bad_target_is_refused_when_the_settings_are_read():
    from sd_ingest.settings import IngestSettings
    with pytest.raises(ValueError, match="processor target 'nowhere' is not host:port"):
        IngestSettings(processor_target="127.0.0.1:1,nowhere")
