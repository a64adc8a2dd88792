"""Placement of diffusion streams over several real diffusion pods (in-process on loopback): by free
slots, busy with the shortest retry hint when every slot is taken, a closed tab's slot used again,
pods that are full or down passed over, and pods found through DNS."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from sd_common.grpc_runtime import GrpcRuntime
from sd_diffusion.server import register
from sd_diffusion.settings import DiffusionSettings
from sd_gateway.errors import Busy, Unavailable
from sd_gateway.settings import GatewaySettings
from sd_gateway.signaling import DiffusionSignaling, PodCapacity, parse_targets
from scale_diffusion.diffusion.v1 import diffusion_pb2, diffusion_pb2_grpc


@pytest.fixture
async def pods():
    """start(max_streams, busy_retry_after_s) -> (target, runtime); every pod and peer stopped after."""
    running: list[GrpcRuntime] = []
    peers: list[RTCPeerConnection] = []

    async def start(max_streams: int, retry_after_s: float = 5.0) -> tuple[str, GrpcRuntime]:
        rt = GrpcRuntime("diffusion", DiffusionSettings(grpc_port=0, metrics_port=0, max_streams=max_streams,
                                                        busy_retry_after_s=retry_after_s, shutdown_grace_s=0.5))
        register(rt)
        port = await rt.start()
        running.append(rt)
        return f"127.0.0.1:{port}", rt

    start.peers = peers
    yield start
    for pc in peers:
        await pc.close()
    for rt in running:
        await rt.stop()


async def connect(signaling: DiffusionSignaling, peers: list) -> tuple[RTCPeerConnection, str]:
    """A browser-like peer that sends a video track; returns it (connected) and the pod that took it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peers.append(pc)
    pc.addTrack(VideoStreamTrack())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await signaling.offer("20260101T000000Z-00", pc.localDescription.sdp, "a street")
    await pc.setRemoteDescription(RTCSessionDescription(answer.sdp_answer, "answer"))
    return pc, answer.pod


async def free_slots(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as ch:
        c = await diffusion_pb2_grpc.DiffusionServiceStub(ch).GetCapacity(diffusion_pb2.GetCapacityRequest())
        return c.streams_max - c.streams_active


async def test_streams_go_to_the_pods_with_free_slots_then_busy_with_the_shortest_hint(pods):
    a, _ = await pods(2, retry_after_s=7)
    b, _ = await pods(1, retry_after_s=3)
    c, _ = await pods(1, retry_after_s=9)
    signaling = DiffusionSignaling(f"{a}, {b},{c}")
    try:
        placed = [(await connect(signaling, pods.peers))[1] for _ in range(4)]
        # a has the most free slots, then all three have one and b and c none active, then a again
        assert placed[0] == a and set(placed[1:3]) == {b, c} and placed[3] == a, placed
        assert [await free_slots(t) for t in (a, b, c)] == [0, 0, 0]
        with pytest.raises(Busy) as busy:
            await connect(signaling, pods.peers)
        # every pod said it was full, so none was asked to take the stream: the shortest hint they gave
        assert busy.value.retry_after_s == 3.0 and "busy" in str(busy.value)
    finally:
        await signaling.close()


async def test_a_closed_tab_frees_its_slot_within_seconds_and_the_next_player_gets_it(pods):
    a, _ = await pods(1)
    b, _ = await pods(1)
    signaling = DiffusionSignaling(f"{a},{b}")
    try:
        first, pod_first = await connect(signaling, pods.peers)
        _, pod_second = await connect(signaling, pods.peers)
        assert {pod_first, pod_second} == {a, b}
        started = time.monotonic()
        while first.connectionState != "connected":
            assert time.monotonic() - started < 10, f"the first player never connected: {first.connectionState}"
            await asyncio.sleep(0.05)
        await first.close()  # the tab closes
        started = time.monotonic()
        while await free_slots(pod_first) == 0:
            assert time.monotonic() - started < 5, "the closed tab's slot was not freed within 5 s"
            await asyncio.sleep(0.1)
        _, pod_third = await connect(signaling, pods.peers)
        assert pod_third == pod_first
    finally:
        await signaling.close()


async def test_a_pod_that_filled_up_since_it_said_so_or_is_down_is_passed_over(pods):
    a, _ = await pods(1, retry_after_s=2)
    b, _ = await pods(1)
    down, rt_down = await pods(1)
    await rt_down.stop()
    signaling = DiffusionSignaling(f"{down},{a},{b}", capacity_timeout_s=0.5)
    try:
        assert {p.target for p in await signaling.capacities()} == {a, b}  # the stopped pod does not answer
        _, first = await connect(signaling, pods.peers)
        # the next offer believes both have room, the full one most (a stale answer): it refuses, the
        # other takes the stream
        stale = [PodCapacity(first, 2, 0, 60.0), PodCapacity(b if first == a else a, 1, 0, 60.0)]

        async def capacities():
            return stale

        signaling.capacities = capacities
        _, second = await connect(signaling, pods.peers)
        assert second != first
        with pytest.raises(Busy) as busy:  # both refuse: the shortest hint their refusals gave
            await connect(signaling, pods.peers)
        assert busy.value.retry_after_s == 2.0
    finally:
        await signaling.close()
    only_down = DiffusionSignaling(down, capacity_timeout_s=0.5)
    try:
        with pytest.raises(Unavailable, match="no diffusion pod is reachable"):
            await connect(only_down, pods.peers)
    finally:
        await only_down.close()


async def test_dns_targets_are_every_address_the_name_resolves_to(pods):
    a, _ = await pods(1)
    port = a.rsplit(":", 1)[1]
    signaling = DiffusionSignaling(f"dns:///localhost:{port}", resolve_every_s=0.2)
    try:
        assert await signaling.pods() == [f"127.0.0.1:{port}"]  # localhost has one IPv4 address here
        _, pod = await connect(signaling, pods.peers)
        assert pod == f"127.0.0.1:{port}"
    finally:
        await signaling.close()
    gone = DiffusionSignaling("dns:///no-such-pod.invalid:50054")
    try:
        assert await gone.pods() == []
    finally:
        await gone.close()


def test_a_bad_target_is_refused_when_the_settings_are_read():
    assert parse_targets(" 10.0.0.1:50054, dns:///diffusion.ns.svc:50054 ,10.0.0.1:50054") == [
        "10.0.0.1:50054", "dns:///diffusion.ns.svc:50054"]
    for bad in ("diffusion", "host:port", "dns:///name", ":50054"):
        with pytest.raises(ValueError, match="host:port or dns:///name:port"):
            GatewaySettings(diffusion_target=bad)
