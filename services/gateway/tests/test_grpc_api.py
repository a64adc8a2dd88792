"""The gateway's gRPC API runs the same handlers as HTTP and maps errors to the right status codes."""

from __future__ import annotations

import grpc
import httpx
import pytest

from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.gateway.v1 import gateway_pb2 as pb
from scale_diffusion.gateway.v1 import gateway_pb2_grpc

from .conftest import manifest_of


@pytest.fixture
async def stub(gateway):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as ch:
        yield gateway_pb2_grpc.GatewayServiceStub(ch)


def auth(token: str):
    return (("authorization", f"Bearer {token}"),)


async def test_upload_flow_over_grpc(gateway, stub, synthetic_session):
    player = await stub.CreatePlayer(pb.CreatePlayerRequest(client_build="grpc-test"))
    md = auth(player.device_token)
    sess = (await stub.CreateSession(pb.CreateSessionRequest(city="nyc"), metadata=md)).session
    assert sess.state == common_pb2.SESSION_STATE_OPEN and sess.player_id == player.player_id
    manifest = manifest_of(synthetic_session)
    manifest["session_id"], manifest["player_id"] = sess.session_id, player.player_id
    import json
    blobs = {f["path"]: (synthetic_session / f["path"]).read_bytes() for f in manifest["files"]}
    blobs["manifest.json"] = json.dumps(manifest).encode()
    resp = await stub.CreateUploadUrls(pb.CreateUploadUrlsRequest(session_id=sess.session_id, files=[
        common_pb2.SessionFile(path=p, size_bytes=len(b)) for p, b in blobs.items()]), metadata=md)
    async with httpx.AsyncClient() as http:
        for t in resp.targets:
            r = await http.put(t.url, content=blobs[t.path], headers=dict(t.headers))
            assert r.status_code == 200, r.text
    done = await stub.CompleteSession(pb.CompleteSessionRequest(session_id=sess.session_id), metadata=md)
    assert done.accepted and done.session.state == common_pb2.SESSION_STATE_UPLOADED
    listed = await stub.ListSessions(pb.ListSessionsRequest(), metadata=md)
    assert [s.session_id for s in listed.sessions] == [sess.session_id]
    totals = await stub.GetPlayer(pb.GetPlayerRequest(), metadata=md)
    assert totals.sessions_uploaded == 1


async def test_grpc_status_codes(gateway, stub):
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.CreateSession(pb.CreateSessionRequest())
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    a = await stub.CreatePlayer(pb.CreatePlayerRequest())
    b = await stub.CreatePlayer(pb.CreatePlayerRequest())
    sid = (await stub.CreateSession(pb.CreateSessionRequest(), metadata=auth(a.device_token))).session.session_id
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=auth(b.device_token))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.GetSession(pb.GetSessionRequest(session_id="20260101T000000Z-00"), metadata=auth(a.device_token))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.CreateUploadUrls(pb.CreateUploadUrlsRequest(session_id=sid, files=[
            common_pb2.SessionFile(path="../x", size_bytes=1)]), metadata=auth(a.device_token))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not allowed" in e.value.details()


async def test_signaling_without_diffusion_is_unavailable_with_a_reason(gateway, stub):
    p = await stub.CreatePlayer(pb.CreatePlayerRequest())
    sid = (await stub.CreateSession(pb.CreateSessionRequest(), metadata=auth(p.device_token))).session.session_id
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await stub.SignalDiffusion(pb.SignalDiffusionRequest(session_id=sid, sdp_offer="v=0\r\n"),
                                   metadata=auth(p.device_token))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "no diffusion service" in e.value.details()


async def test_signaling_relays_to_the_diffusion_service(start_gw, tmp_path):
    """With a diffusion target, a browser's offer gets the diffusion pod's answer; a bad offer is the
    browser's error (400); with every slot taken the player is told to retry (503 and Retry-After)."""
    from aiortc import RTCConfiguration, RTCPeerConnection, VideoStreamTrack

    from sd_common.grpc_runtime import GrpcRuntime
    from sd_diffusion.server import register
    from sd_diffusion.settings import DiffusionSettings
    rt = GrpcRuntime("diffusion", DiffusionSettings(grpc_port=0, metrics_port=0, max_streams=1,
                                                    busy_retry_after_s=3, shutdown_grace_s=0.5))
    register(rt)
    port = await rt.start()
    peers = []

    async def offer() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peers.append(pc)
        pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    try:
        gw = await start_gw(diffusion_target=f"127.0.0.1:{port}")
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=20) as http:
            tok = (await http.post("/v1/players", json={})).json()["device_token"]
            h = {"Authorization": f"Bearer {tok}"}
            sid = (await http.post("/v1/sessions", json={}, headers=h)).json()["session_id"]
            r = await http.post("/v1/diffusion/offer", headers=h, json={"session_id": sid, "sdp_offer": "v=0\r\n"})
            assert r.status_code == 400 and "no video" in r.json()["error"]["message"]
            r = await http.post("/v1/diffusion/offer", headers=h, json={"session_id": sid, "sdp_offer": "hello"})
            assert r.status_code == 400
            r = await http.post("/v1/diffusion/offer", headers=h, json={"session_id": sid, "sdp_offer": await offer()})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["sdp_answer"].startswith("v=0") and "m=video" in body["sdp_answer"]
            assert body["backend"] == "look" and body["stream_id"]
            r = await http.post("/v1/diffusion/offer", headers=h, json={"session_id": sid, "sdp_offer": await offer()})
            assert r.status_code == 503 and r.headers["Retry-After"] == "3", r.text
            assert "busy" in r.json()["error"]["message"]
    finally:
        for pc in peers:
            await pc.close()
        await rt.stop()
