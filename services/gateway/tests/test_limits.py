"""Per-session limits, rate limits, refused identities and completion checks: what a client sees and
that a refused request leaves the store, the event queue and the records as they were."""

from __future__ import annotations

import json

import grpc
import httpx
from sqlalchemy import text

from scale_diffusion.gateway.v1 import gateway_pb2 as pb
from scale_diffusion.gateway.v1 import gateway_pb2_grpc

from .conftest import manifest_of, world
from .test_uploads import new_player

GiB = 1024**3


async def _session(http, headers) -> str:
    r = await http.post("/v1/sessions", json={}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def _files(names, size=10):
    return {"files": [{"path": n, "size_bytes": size} for n in names]}


async def test_file_count_limit_holds_across_upload_calls(start_gw, tmp_path):
    gw = await start_gw(max_files_per_session=16)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        sid = await _session(http, headers)
        for call in range(2):  # 2 x 6 files: within the 16 of the session
            r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                                json=_files([f"c{call}-{i}.bin" for i in range(6)]))
            assert r.status_code == 200, r.text
        # a renewed URL for a file already asked for does not count again
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers, json=_files(["c0-0.bin"]))
        assert r.status_code == 200, r.text
        before = world(gw, tmp_path)
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json=_files([f"c2-{i}.bin" for i in range(6)]))  # 18 > 16
        assert r.status_code == 400
        assert "at most 16 files" in r.json()["error"]["message"] and "18" in r.json()["error"]["message"]
        assert world(gw, tmp_path) == before
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json=_files(["c2-0.bin", "c2-1.bin", "c2-2.bin", "c2-3.bin"]))  # exactly 16
        assert r.status_code == 200, r.text
        # another session of the same player has its own budget
        other = await _session(http, headers)
        r = await http.post(f"/v1/sessions/{other}/upload-urls", headers=headers,
                            json=_files([f"x{i}.bin" for i in range(16)]))
        assert r.status_code == 200, r.text


async def test_byte_limit_holds_across_upload_calls(start_gw, tmp_path):
    gw = await start_gw(max_session_bytes=2 * GiB)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        sid = await _session(http, headers)
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json={"files": [{"path": "video.webm", "size_bytes": int(1.5 * GiB)}]})
        assert r.status_code == 200, r.text
        before = world(gw, tmp_path)
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json={"files": [{"path": "video2.webm", "size_bytes": int(1.5 * GiB)}]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        assert str(2 * GiB) in r.json()["error"]["message"]
        assert world(gw, tmp_path) == before
        # asking again for the same file at a smaller size replaces its earlier size
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json={"files": [{"path": "video.webm", "size_bytes": GiB}]})
        assert r.status_code == 200, r.text
        r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                            json={"files": [{"path": "video2.webm", "size_bytes": GiB}]})
        assert r.status_code == 200, r.text


async def test_upload_calls_are_rate_limited_per_player(start_gw, tmp_path):
    gw = await start_gw(upload_calls_burst=3, upload_calls_per_minute=1)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        a, b = await new_player(http), await new_player(http)
        sid = await _session(http, a)
        for n in range(3):
            r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=a, json=_files([f"f{n}.bin"]))
            assert r.status_code == 200, r.text
        before = world(gw, tmp_path)
        for path, body in ((f"/v1/sessions/{sid}/upload-urls", _files(["f9.bin"])),
                           (f"/v1/sessions/{sid}/complete", None)):
            r = await http.post(path, headers=a, json=body)
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert world(gw, tmp_path) == before
        other = await _session(http, b)  # per player
        assert (await http.post(f"/v1/sessions/{other}/upload-urls", headers=b,
                                json=_files(["f.bin"]))).status_code == 200


async def test_new_players_are_rate_limited_per_address(start_gw, tmp_path):
    gw = await start_gw(players_burst_per_ip=2, players_per_minute_per_ip=1)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        for _ in range(2):
            assert (await http.post("/v1/players", json={})).status_code == 201
        before = world(gw, tmp_path)
        r = await http.post("/v1/players", json={})
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        assert world(gw, tmp_path) == before  # no player was recorded
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}")
    try:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            await stub.CreatePlayer(pb.CreatePlayerRequest())
            raise AssertionError("the third new player from one address was allowed")
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await channel.close()
    assert world(gw, tmp_path) == before


async def test_a_token_of_a_removed_or_disabled_player_is_refused(gateway, http, tmp_path):
    removed, disabled = await new_player(http), await new_player(http)
    sid = await _session(http, removed)
    sid2 = await _session(http, disabled)
    me = (await http.get("/v1/players/me", headers=disabled)).json()["player_id"]
    gone = (await http.get("/v1/players/me", headers=removed)).json()["player_id"]
    with gateway._db._engine.begin() as conn:
        conn.execute(text("DELETE FROM players WHERE player_id = :p"), {"p": gone})
    gateway._db.set_player_disabled(me, True)
    before = world(gateway, tmp_path)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    try:
        for headers, status, code, grpc_code, session in (
                (removed, 401, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED, sid),
                (disabled, 403, "permission_denied", grpc.StatusCode.PERMISSION_DENIED, sid2)):
            for method, path, body in (("GET", "/v1/players/me", None), ("POST", "/v1/sessions", {}),
                                       ("GET", f"/v1/sessions/{session}", None),
                                       ("POST", f"/v1/sessions/{session}/upload-urls", _files(["a.bin"])),
                                       ("POST", f"/v1/sessions/{session}/complete", None)):
                r = await http.request(method, path, headers=headers, json=body)
                assert r.status_code == status, (path, r.text)
                assert r.json()["error"]["code"] == code
            token = headers["Authorization"].split()[1]
            try:
                await stub.CreateSession(pb.CreateSessionRequest(), metadata=(("authorization", f"Bearer {token}"),))
                raise AssertionError("a refused identity created a session over gRPC")
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc_code
    finally:
        await channel.close()
    assert world(gateway, tmp_path) == before
    gateway._db.set_player_disabled(me, False)  # re-enabled, the same token works again
    assert (await http.get("/v1/players/me", headers=disabled)).status_code == 200


async def _complete_with(http, session_dir, *, edit=None, extra=None):
    headers = await new_player(http)
    sess = (await http.post("/v1/sessions", json={}, headers=headers)).json()
    manifest = manifest_of(session_dir)
    manifest["session_id"], manifest["player_id"] = sess["session_id"], sess["player_id"]
    (edit or (lambda m: None))(manifest)
    blobs = {f["path"]: (session_dir / f["path"]).read_bytes() for f in manifest["files"]}
    blobs.update(extra or {})
    blobs["manifest.json"] = json.dumps(manifest).encode()
    r = await http.post(f"/v1/sessions/{sess['session_id']}/upload-urls", headers=headers,
                        json={"files": [{"path": p, "size_bytes": len(b)} for p, b in blobs.items()]})
    for t in r.json()["targets"]:
        assert (await http.put(t["url"], content=blobs[t["path"]], headers=t["headers"])).status_code == 200
    r = await http.post(f"/v1/sessions/{sess['session_id']}/complete", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_completion_names_a_manifest_of_another_session_or_player(gateway, http, synthetic_session):
    r = await _complete_with(http, synthetic_session,
                             edit=lambda m: m.update(session_id="20260101T000000Z-00000000000000aa"))
    assert r["accepted"] is False and r["session"]["state"] == "REJECTED"
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("manifest_session_mismatch", "manifest.json:session_id")]
    assert "20260101T000000Z-00000000000000aa" in r["problems"][0]["message"]
    r = await _complete_with(http, synthetic_session, edit=lambda m: m.update(player_id="p-0123456789abcdef0123"))
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("manifest_player_mismatch", "manifest.json:player_id")]
    assert r["accepted"] is False


async def test_completion_names_a_file_the_manifest_does_not_list(gateway, http, synthetic_session):
    r = await _complete_with(http, synthetic_session, extra={"notes.txt": b"not in the manifest"})
    assert r["accepted"] is False
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_unlisted", "notes.txt")]
