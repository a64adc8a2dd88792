"""A store that fails during completion: gRPC and HTTP clients both see UNAVAILABLE/503 with a reason
(never UNKNOWN or a bare 500), and the session is left as it was, to be completed again later."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from aiobotocore.session import get_session

from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.gateway.v1 import gateway_pb2 as pb
from scale_diffusion.gateway.v1 import gateway_pb2_grpc
from sd_common.settings import StoreSettings
from sd_gateway.assembly import start_gateway
from sd_gateway.settings import GatewaySettings
from tests.ports import free_port

from .conftest import manifest_of

REGION = "us-east-1"


def _start_s3() -> tuple[subprocess.Popen, str]:
    """A private S3 protocol server this test may stop (the shared one must keep running)."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return proc, url
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("the S3 protocol server did not start") from None
            time.sleep(0.1)


async def test_a_store_outage_during_completion_is_unavailable_on_grpc_and_http(tmp_path, monkeypatch,
                                                                                 synthetic_session):
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    s3, endpoint = _start_s3()
    gw = None
    try:
        bucket = f"sd-raw-{uuid.uuid4().hex[:10]}"
        async with get_session().create_client("s3", region_name=REGION, endpoint_url=endpoint) as client:
            await client.create_bucket(Bucket=bucket)
        gw = await start_gateway(
            GatewaySettings(grpc_port=0, http_port=0, metrics_port=0, state_dir=tmp_path / "gw", shutdown_grace_s=1),
            StoreSettings(backend="s3", bucket=bucket, endpoint_url=endpoint, region=REGION))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as ch, \
                httpx.AsyncClient(base_url=gw.base_url, timeout=60) as http:
            stub = gateway_pb2_grpc.GatewayServiceStub(ch)
            player = await stub.CreatePlayer(pb.CreatePlayerRequest())
            md = (("authorization", f"Bearer {player.device_token}"),)
            sid = (await stub.CreateSession(pb.CreateSessionRequest(), metadata=md)).session.session_id
            manifest = manifest_of(synthetic_session)
            manifest["session_id"], manifest["player_id"] = sid, player.player_id
            blobs = {f["path"]: (synthetic_session / f["path"]).read_bytes() for f in manifest["files"]}
            blobs["manifest.json"] = json.dumps(manifest).encode()
            targets = (await stub.CreateUploadUrls(pb.CreateUploadUrlsRequest(session_id=sid, files=[
                common_pb2.SessionFile(path=p, size_bytes=len(b)) for p, b in blobs.items()]), metadata=md)).targets
            for t in targets:
                assert (await http.put(t.url, content=blobs[t.path], headers=dict(t.headers))).status_code == 200

            s3.kill()  # the store goes away between the uploads and the completion
            s3.wait()

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=md, timeout=60)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert "object store failed" in err.value.details() and "retry later" in err.value.details()

            resp = await http.post(f"/v1/sessions/{sid}/complete",
                                   headers={"Authorization": f"Bearer {player.device_token}"})
            assert resp.status_code == 503, resp.text
            body = resp.json()["error"]
            assert body["code"] == "store_unavailable" and "object store failed" in body["message"]

            # nothing was decided: the session is still open, with no problems recorded and none counted
            after = (await stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=md)).session
            assert after.state == common_pb2.SESSION_STATE_OPEN and list(after.problems) == []
            totals = await stub.GetPlayer(pb.GetPlayerRequest(), metadata=md)
            assert (totals.sessions_uploaded, totals.sessions_rejected) == (0, 0)
    finally:
        if gw is not None:
            await gw.stop()
        if s3.poll() is None:
            s3.kill()
            s3.wait()
