"""A recorded session travels through the gateway's HTTP API and presigned URLs into the local store."""

from __future__ import annotations

import hashlib
import json
import os

import httpx

from sd_common.objectstore.events import parse_s3_event
from sd_common.objectstore.queues import LocalEventQueue
from sd_common.upload_client import GatewayClient

from .conftest import manifest_of


async def new_player(http: httpx.AsyncClient) -> dict:
    r = await http.post("/v1/players", json={"client_build": "test"})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['device_token']}"}


async def test_synthetic_session_lands_in_the_store_with_events(gateway, synthetic_session, tmp_path):
    client = GatewayClient(gateway.base_url)
    try:
        result = await client.upload_session(synthetic_session)
    finally:
        await client.close()
    assert result.accepted, result.problems
    assert result.session["state"] == "UPLOADED"
    sid = result.session_id
    stored = tmp_path / "store" / "raw" / sid
    for f in manifest_of(synthetic_session)["files"]:
        data = (stored / f["path"]).read_bytes()
        assert len(data) == f["size_bytes"]
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
    uploaded_manifest = json.loads((stored / "manifest.json").read_text())
    assert uploaded_manifest["session_id"] == sid
    # one ObjectCreated event per file, in S3's event-notification shape, on the local queue
    queue = LocalEventQueue(tmp_path / "store" / ".events")
    keys = set()
    for _ in range(10):
        msgs = await queue.receive(max_messages=10, wait_s=0, visibility_timeout_s=30)
        if not msgs:
            break
        for m in msgs:
            body = json.loads(m.body)
            assert body["Records"][0]["eventSource"] == "aws:s3"
            for ev in parse_s3_event(m.body):
                assert ev.event_name.startswith("ObjectCreated:")
                keys.add(ev.key)
    expected = {f"raw/{sid}/{f['path']}" for f in manifest_of(synthetic_session)["files"]} | {f"raw/{sid}/manifest.json"}
    assert keys == expected
    # the player's totals count it
    async with httpx.AsyncClient(base_url=gateway.base_url) as http:
        me = (await http.get("/v1/players/me", headers={"Authorization": f"Bearer {client.token}"})).json()
    assert me["sessions_uploaded"] == 1 and me["seconds_uploaded"] > 0
    # completing again is harmless
    client2 = GatewayClient(gateway.base_url, token=client.token)
    try:
        again = await client2.complete_session(sid)
    finally:
        await client2.close()
    assert again["accepted"] is True


async def _upload_all_but(http, gateway, session_dir, skip=(), replace=None):
    """Creates a session and uploads the manifest and every file except `skip`; returns the session id."""
    headers = await new_player(http)
    sess = (await http.post("/v1/sessions", json={}, headers=headers)).json()
    manifest = manifest_of(session_dir)
    manifest["session_id"], manifest["player_id"] = sess["session_id"], sess["player_id"]
    blobs = {f["path"]: (session_dir / f["path"]).read_bytes() for f in manifest["files"]}
    blobs["manifest.json"] = json.dumps(manifest).encode()
    blobs.update(replace or {})
    for name in skip:
        blobs.pop(name)
    r = await http.post(f"/v1/sessions/{sess['session_id']}/upload-urls", headers=headers, json={"files": [
        {"path": p, "size_bytes": len(b)} for p, b in blobs.items()]})
    assert r.status_code == 200, r.text
    for t in r.json()["targets"]:
        put = await http.put(t["url"], content=blobs[t["path"]], headers=t["headers"])
        assert put.status_code == 200, put.text
    return sess["session_id"], headers


async def test_completion_names_the_missing_file_and_accepts_after_reupload(gateway, http, synthetic_session):
    sid, headers = await _upload_all_but(http, gateway, synthetic_session, skip=["frames.jsonl"])
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is False
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_missing", "frames.jsonl")]
    assert "frames.jsonl" in r["problems"][0]["message"]
    assert r["session"]["state"] == "REJECTED"
    # the player uploads the missing file and completes again
    data = (synthetic_session / "frames.jsonl").read_bytes()
    t = (await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                         json={"files": [{"path": "frames.jsonl", "size_bytes": len(data)}]})).json()["targets"][0]
    assert (await http.put(t["url"], content=data, headers=t["headers"])).status_code == 200
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is True and r["problems"] == []


async def test_completion_names_a_mismatched_file(gateway, http, synthetic_session):
    original = (synthetic_session / "events.jsonl").read_bytes()
    tampered = original[:-2] + (b"X\n" if original[-2:] != b"X\n" else b"Y\n")
    sid, headers = await _upload_all_but(http, gateway, synthetic_session, replace={"events.jsonl": tampered})
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is False
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_sha256_mismatch", "events.jsonl")]
    truncated = original[:-1]
    sid, headers = await _upload_all_but(http, gateway, synthetic_session, replace={"events.jsonl": truncated})
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert [(p["code"], p["path"]) for p in r["problems"]] == [("file_size_mismatch", "events.jsonl")]


async def test_completion_without_manifest_or_with_a_broken_one(gateway, http, synthetic_session):
    sid, headers = await _upload_all_but(http, gateway, synthetic_session, skip=["manifest.json"])
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert [p["code"] for p in r["problems"]] == ["manifest_missing"]
    sid, headers = await _upload_all_but(http, gateway, synthetic_session, replace={"manifest.json": b"{not json"})
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is False and r["problems"] and r["problems"][0]["path"].startswith("manifest.json")


async def test_large_file_uploads_in_presigned_parts(gateway, http, tmp_path):
    headers = await new_player(http)
    sid = (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]
    data = os.urandom(21 * 1024 * 1024 + 123)  # above the 16 MiB multipart threshold: 3 parts of 8 MiB
    t = (await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers, json={"files": [
        {"path": "video.webm", "size_bytes": len(data), "content_type": "video/webm"}]})).json()["targets"][0]
    assert t["url"] == "" and t["multipart_upload_id"] and len(t["parts"]) == 3
    assert sum(p["size_bytes"] for p in t["parts"]) == len(data)
    etags = {}
    for part in reversed(t["parts"]):  # parts may arrive in any order
        chunk = data[part["offset_bytes"]: part["offset_bytes"] + part["size_bytes"]]
        r = await http.put(part["url"], content=chunk)
        assert r.status_code == 200, r.text
        etags[part["part_number"]] = r.headers["ETag"]
    r = await http.post(f"/v1/sessions/{sid}/multipart/complete", headers=headers, json={
        "path": "video.webm", "multipart_upload_id": t["multipart_upload_id"],
        "parts": [{"part_number": n, "etag": e} for n, e in sorted(etags.items())]})
    assert r.status_code == 200, r.text
    assert r.json()["size_bytes"] == len(data)
    assert (tmp_path / "store" / "raw" / sid / "video.webm").read_bytes() == data


async def test_api_errors_are_precise(gateway, http):
    assert (await http.post("/v1/sessions", json={})).status_code == 401
    r = await http.post("/v1/sessions", json={}, headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    headers = await new_player(http)
    r = await http.get("/v1/sessions/20260101T000000Z-0000000000000000", headers=headers)
    assert r.status_code == 404
    sid = (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers, json={"files": [
        {"path": "a.bin", "size_bytes": 3}, {"path": "a.bin", "size_bytes": 4}]})
    assert r.status_code == 400 and "listed twice" in r.json()["error"]["message"]
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers, json={"files": [
        {"path": "a.bin", "size_bytes": 10 * 1024**3}]})
    assert r.status_code == 413
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers, json={"files": [{"path": "a.bin"}]})
    assert r.status_code == 400 and r.json()["error"]["problems"][0]["path"].endswith("size_bytes")
    listing = (await http.get("/v1/sessions", headers=headers)).json()
    assert [s["session_id"] for s in listing["sessions"]] == [sid]


async def test_sessions_are_rate_limited_per_player(start_gw):
    gw = await start_gw(sessions_burst=2, sessions_per_minute=1)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        a, b = await new_player(http), await new_player(http)
        for _ in range(2):
            assert (await http.post("/v1/sessions", json={}, headers=a)).status_code == 201
        r = await http.post("/v1/sessions", json={}, headers=a)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert (await http.post("/v1/sessions", json={}, headers=b)).status_code == 201  # per player


async def test_cors_allows_only_configured_origins(start_gw):
    gw = await start_gw(cors_origins=["https://play.example"])
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        ok = await http.options("/v1/sessions", headers={"Origin": "https://play.example", **pre})
        assert ok.headers.get("access-control-allow-origin") == "https://play.example"
        bad = await http.options("/v1/sessions", headers={"Origin": "https://evil.example", **pre})
        assert "access-control-allow-origin" not in bad.headers
