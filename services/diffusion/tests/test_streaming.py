"""The real service on loopback with browser-like aiortc peers: frames out and back over WebRTC (VP8),
barcodes intact, no queue when the model is slow, slots taken and freed, prompts changed, bad offers refused."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from diffusion_peers import Player, connect

from sd_common.error_mapping import retry_after_s
from scale_diffusion.diffusion.v1 import diffusion_pb2 as pb

pytestmark = pytest.mark.timeout(120)


async def _capacity(stub) -> pb.GetCapacityResponse:
    return await stub.GetCapacity(pb.GetCapacityRequest(), timeout=5)


async def _until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        await asyncio.sleep(0.05)


async def test_frames_come_back_transformed_with_the_barcode_of_the_frame_they_were_made_from(start_diffusion):
    rt, stub = await start_diffusion()
    player = Player(320, 180, fps=30)
    try:
        resp = await connect(stub, player)
        assert resp.backend == "look" and resp.stream_id
        await player.wait_frames(45)
        ids = [fid for fid, _, _ in player.received]
        assert None not in ids, "every returned frame carries a readable barcode"
        assert all(b > a for a, b in zip(ids, ids[1:])), "ids only go forward: no frame is sent twice or late"
        assert set(ids) <= set(player.track.sent), "each id is one the player sent"
        # the picture is the look's, not an echo: compare a returned frame with what was sent for its id
        from diffusion_peers import scene

        got = player.frames[-1].astype(np.int16)
        sent = scene(ids[len(player.frames) - 1], 320, 180).astype(np.int16)
        assert np.abs(got - sent)[:150].mean() > 3.0
        cap = await _capacity(stub)
        assert (cap.streams_active, cap.streams_max, cap.peer_connections) == (1, 2, 1)
        assert "not a diffusion model" in cap.model and cap.device == "cpu"
        stats = await stub.GetStats(pb.GetStatsRequest(), timeout=5)
        (s,) = stats.streams
        assert s.stream_id == resp.stream_id and s.session_id == "s1" and s.state == "streaming"
        assert s.frames_in >= 45 and s.frames_out >= 45 and s.barcodes_unread == 0
        assert s.frame_age.count > 0 and 0 < s.frame_age.p50_ms <= s.frame_age.p95_ms <= s.frame_age.max_ms
        assert s.model.count > 0 and s.fps_in > 0 and s.fps_out > 0
        # every stage of the media path is timed per frame; the look backend times no parts of its own
        assert set(s.stages) == {"queued", "decode", "model", "encode", "send_wait"}, set(s.stages)
        assert all(v.count > 0 and 0 <= v.p50_ms <= v.p95_ms <= v.max_ms for v in s.stages.values())
        assert s.stages["model"].count == s.model.count and s.stages["model"].max_ms == s.model.max_ms
        # the stages of one frame fit in its age (aiortc's own decode and encode make up the rest)
        assert s.stages["queued"].p50_ms + s.stages["model"].p50_ms <= s.frame_age.max_ms
        metrics = rt.metrics_port
        assert metrics > 0
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read().decode()
        for stage in ("queued", "decode", "model", "encode", "send_wait"):
            assert f'sd_diffusion_stage_seconds_count{{backend="look",stage="{stage}"}}' in text, stage
        await stub.CloseStream(pb.CloseStreamRequest(stream_id=resp.stream_id), timeout=5)
        cap = await _capacity(stub)
        assert (cap.streams_active, cap.peer_connections) == (0, 0)
        assert not (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
    finally:
        await player.close()


async def test_a_slow_model_drops_old_inputs_and_latency_stays_bounded(start_diffusion):
    """A model at about 7 fps under 30 fps of input: inputs are dropped, never queued, so the lag of
    each returned frame behind the newest one sent stays flat (a queue would add 23 frames a second)."""
    rt, stub = await start_diffusion()
    manager = rt.service.manager
    real = manager.backend

    class Slow:
        info = real.info

        def new_stream(self, *a):
            return real.new_stream(*a)

        def set_prompt(self, *a):
            return real.set_prompt(*a)

        def process(self, state, frame, index):
            time.sleep(0.15)
            return real.process(state, frame, index)

    manager.backend = Slow()
    player = Player(320, 180, fps=30)
    try:
        await connect(stub, player)
        await player.first_frame.wait()
        started = time.monotonic()
        await _until(lambda: asyncio.sleep(0, time.monotonic() - started > 6.0), 10, "six seconds streamed")
        got = [(fid, newest) for fid, at, newest in player.received if at >= started]
        assert len(got) >= 12, got
        lags = [newest - fid for fid, newest in got]
        third = len(lags) // 3
        # Flat: the last third lags no more than the first third (plus jitter), and never by a second.
        assert np.median(lags[-third:]) <= np.median(lags[:third]) + 4, lags
        assert max(lags) <= 30, lags
        (s,) = (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
        assert s.inputs_dropped > s.frames_in // 2, (s.inputs_dropped, s.frames_in)  # most inputs never reach the model
        assert s.model.p50_ms >= 150
    finally:
        await player.close()


async def test_one_slot_second_player_is_busy_with_a_retry_hint_until_the_first_tab_closes(start_diffusion):
    rt, stub = await start_diffusion(max_streams=1, busy_retry_after_s=2.5)
    first, second = Player(), Player()
    try:
        await connect(stub, first)
        await first.wait_frames(5)
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await connect(stub, second, session_id="s2")
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_after_s(busy.value) == 2.5 and "try again in 2.5 s" in busy.value.details()
        cap = await _capacity(stub)
        assert (cap.streams_active, cap.peer_connections) == (1, 1)  # the refused offer left nothing open
        # the first player's tab closes: its peer connection ends without a CloseStream
        closed_at = time.monotonic()
        await first.close()

        async def freed():
            c = await _capacity(stub)
            return c.streams_active == 0 and c.peer_connections == 0

        await _until(freed, 5.0, "the slot and the peer connection freed")
        assert time.monotonic() - closed_at < 5.0
        second = Player()
        await connect(stub, second, session_id="s2")
        await second.wait_frames(5)
    finally:
        await first.close()
        await second.close()


async def test_the_prompt_changes_mid_stream(start_diffusion):
    rt, stub = await start_diffusion()
    player = Player()
    try:
        resp = await connect(stub, player, prompt="a sunny afternoon")
        await player.wait_frames(5)
        await stub.UpdateStream(pb.UpdateStreamRequest(stream_id=resp.stream_id, prompt="a rainy night"), timeout=5)
        (s,) = (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
        assert s.prompt == "a rainy night"
        n = len(player.received)
        await player.wait_frames(n + 5)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.UpdateStream(pb.UpdateStreamRequest(stream_id="nope", prompt="x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await player.close()


@pytest.mark.parametrize("offer, says", [
    ("hello", "SDP offer"),
    ("v=0\r\n", "no video"),
    ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "cannot be used"),
])
async def test_a_bad_offer_is_refused_and_holds_no_slot(start_diffusion, offer, says):
    rt, stub = await start_diffusion(max_streams=1)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.CreateStream(pb.CreateStreamRequest(session_id="s", sdp_offer=offer), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in e.value.details()
    cap = await _capacity(stub)
    assert (cap.streams_active, cap.peer_connections) == (0, 0)


async def test_a_stream_that_never_sends_a_frame_is_closed(start_diffusion):
    rt, stub = await start_diffusion(connect_timeout_s=1.0, watchdog_interval_s=0.1)
    player = Player()
    try:
        await stub.CreateStream(pb.CreateStreamRequest(session_id="s", sdp_offer=await player.offer()), timeout=10)
        # the answer is never applied: no ICE, no frames
        assert (await _capacity(stub)).streams_active == 1

        async def freed():
            return (await _capacity(stub)).streams_active == 0

        await _until(freed, 5.0, "the unconnected stream closed")
    finally:
        await player.close()


async def test_a_chunked_model_s_frames_are_sent_in_order_spread_out_each_with_its_own_barcode(start_diffusion):
    """A causal video model answers four frames at a time: each returned frame carries the barcode of
    the input it was made from, the chunk goes out spaced as its inputs came (not in a burst), and the
    output lags the input by about a chunk, flat."""
    rt, stub = await start_diffusion()
    manager = rt.service.manager
    real = manager.backend

    class FourAtATime:
        info = real.info

        def new_stream(self, *a):
            return {"look": real.new_stream(*a), "held": []}

        def set_prompt(self, state, prompt):
            real.set_prompt(state["look"], prompt)

        def push(self, state, frame, index):
            state["held"].append((index, frame))
            if len(state["held"]) < 4:
                return []
            chunk, state["held"] = state["held"], []
            return [(i, real.process(state["look"], f, i)) for i, f in chunk]

        def flush(self, state):
            return []

    manager.backend = FourAtATime()
    player = Player(320, 180, fps=30)
    try:
        await connect(stub, player)
        await player.wait_frames(60)
        ids = [fid for fid, _, _ in player.received]
        assert None not in ids and all(b > a for a, b in zip(ids, ids[1:])), ids
        assert set(ids) <= set(player.track.sent)
        # spread out: most consecutive frames arrive well apart, not four in one burst
        gaps = np.diff([at for _, at, _ in player.received[20:]])
        assert np.median(gaps) > 0.010, gaps
        lags = [newest - fid for fid, _, newest in player.received[20:]]
        assert np.median(lags) >= 3 and max(lags) <= 30, lags  # about a chunk behind, never a queue
        (s,) = (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
        assert s.frames_out >= 60 and s.barcodes_unread == 0
        # every frame sent or dropped was made from one input, none twice (a chunk replaced while it was
        # being sent drops its rest: by design, when the model falls behind under load)
        assert s.frames_out + s.outputs_dropped <= s.frames_in, (s.frames_out, s.outputs_dropped, s.frames_in)
    finally:
        await player.close()


async def test_the_wan_backend_streams_through_the_real_service_with_every_barcode_kept(start_diffusion,
                                                                                      one_torch_thread):
    """The causal video model (a tiny random one: no weights here) behind the real media path: the
    frames come back a chunk at a time, each with the barcode of the input it was made from."""
    rt, stub = await start_diffusion(backend="wan", wan_preset="tiny", device="cpu")
    player = Player(320, 180, fps=15)
    try:
        resp = await connect(stub, player)
        assert resp.backend == "wan" and "random weights" in resp.model and "tests only" in resp.model
        await player.wait_frames(20, timeout_s=60)
        ids = [fid for fid, _, _ in player.received]
        assert None not in ids and all(b > a for a, b in zip(ids, ids[1:])), ids
        assert set(ids) <= set(player.track.sent)
        (s,) = (await stub.GetStats(pb.GetStatsRequest(), timeout=5)).streams
        assert s.barcodes_unread == 0 and s.frames_out >= 20
        # the backend's own parts, timed per push: the VAE on every chunk, the model on every step
        parts = {k: v for k, v in s.stages.items() if k.startswith("model.")}
        assert set(parts) == {"model.vae_encode", "model.denoise", "model.vae_decode"}, set(s.stages)
        assert all(v.count > 0 and v.max_ms > 0 for v in parts.values())
        assert parts["model.denoise"].max_ms <= s.stages["model"].max_ms
        cap = await _capacity(stub)
        assert cap.backend == "wan" and cap.device == "cpu"
    finally:
        await player.close()
