"""Checked data is immutable: once a session is accepted, no write to its raw prefix succeeds."""

from __future__ import annotations

import json

import pytest

from sd_common.objectstore import ObjectSealed

from .conftest import manifest_of, world
from .test_uploads import new_player


async def upload(http, session_dir, *, extra_targets=(), skip=()):
    """Uploads a session (all but `skip`) keeping every target; returns (sid, headers, targets, blobs)."""
    headers = await new_player(http)
    sess = (await http.post("/v1/sessions", json={}, headers=headers)).json()
    manifest = manifest_of(session_dir)
    manifest["session_id"], manifest["player_id"] = sess["session_id"], sess["player_id"]
    blobs = {f["path"]: (session_dir / f["path"]).read_bytes() for f in manifest["files"]}
    blobs["manifest.json"] = json.dumps(manifest).encode()
    asked = [{"path": p, "size_bytes": len(b)} for p, b in blobs.items()] + list(extra_targets)
    r = await http.post(f"/v1/sessions/{sess['session_id']}/upload-urls", headers=headers, json={"files": asked})
    assert r.status_code == 200, r.text
    targets = {t["path"]: t for t in r.json()["targets"]}
    for path, data in blobs.items():
        if path not in skip:
            put = await http.put(targets[path]["url"], content=data, headers=targets[path]["headers"])
            assert put.status_code == 200, put.text
    return sess["session_id"], headers, targets, blobs


def other_bytes(data: bytes) -> bytes:
    """Same length, different content."""
    return bytes(b ^ 0xFF for b in data[:16]) + data[16:]


async def test_an_accepted_session_refuses_every_write(gateway, http, synthetic_session, tmp_path):
    big = {"path": "spare.bin", "size_bytes": 17 * 1024 * 1024}  # issued as multipart, never uploaded
    sid, headers, targets, blobs = await upload(http, synthetic_session, extra_targets=[big])
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is True
    before = world(gateway, tmp_path)
    for path in ("video.webm", "manifest.json", "frames.jsonl"):  # the URLs are still within their expiry
        put = await http.put(targets[path]["url"], content=other_bytes(blobs[path]), headers=targets[path]["headers"])
        assert put.status_code == 409, put.text
        assert put.json()["error"]["code"] == "ObjectSealed" and "sealed" in put.json()["error"]["message"]
    part = targets["spare.bin"]["parts"][0]
    put = await http.put(part["url"], content=b"x" * part["size_bytes"])
    assert put.status_code == 409, put.text
    r = await http.post(f"/v1/sessions/{sid}/multipart/complete", headers=headers, json={
        "path": "spare.bin", "multipart_upload_id": targets["spare.bin"]["multipart_upload_id"],
        "parts": [{"part_number": 1, "etag": "e"}, {"part_number": 2, "etag": "f"}, {"part_number": 3, "etag": "g"}]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "failed_precondition"
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                        json={"files": [{"path": "video.webm", "size_bytes": len(blobs["video.webm"])}]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "failed_precondition"
    with pytest.raises(ObjectSealed):  # a service writing there is refused too
        await gateway._store.put_bytes(f"raw/{sid}/video.webm", other_bytes(blobs["video.webm"]),
                                       content_type="video/webm")
    again = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert again["accepted"] is True
    assert world(gateway, tmp_path) == before  # store, event queue and records unchanged
    stored = tmp_path / "store" / "raw" / sid
    assert {p: (stored / p).read_bytes() for p in blobs} == blobs


async def test_a_rejected_session_can_be_uploaded_again_and_then_seals(gateway, http, synthetic_session, tmp_path):
    sid, headers, targets, blobs = await upload(http, synthetic_session, skip=["frames.jsonl"])
    bad = other_bytes(blobs["events.jsonl"])
    assert (await http.put(targets["events.jsonl"]["url"], content=bad)).status_code == 200
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is False
    assert sorted(p["code"] for p in r["problems"]) == ["file_missing", "file_sha256_mismatch"]
    # rejected: the same URLs work again (the prefix was thawed), and the session completes
    for path in ("frames.jsonl", "events.jsonl"):
        put = await http.put(targets[path]["url"], content=blobs[path], headers=targets[path]["headers"])
        assert put.status_code == 200, put.text
    r = (await http.post(f"/v1/sessions/{sid}/complete", headers=headers)).json()
    assert r["accepted"] is True, r["problems"]
    before = world(gateway, tmp_path)
    put = await http.put(targets["events.jsonl"]["url"], content=bad)
    assert put.status_code == 409
    assert world(gateway, tmp_path) == before


async def test_concurrent_completions_of_one_session_leave_it_sealed(gateway, http, synthetic_session, tmp_path):
    import asyncio

    sid, headers, targets, blobs = await upload(http, synthetic_session)
    answers = await asyncio.gather(*(http.post(f"/v1/sessions/{sid}/complete", headers=headers) for _ in range(4)))
    assert all(r.status_code == 200 and r.json()["accepted"] for r in answers)
    put = await http.put(targets["video.webm"]["url"], content=other_bytes(blobs["video.webm"]),
                         headers=targets["video.webm"]["headers"])
    assert put.status_code == 409
    assert gateway._store._frozen == set()  # nothing left frozen in memory: the seal file holds it


@pytest.mark.parametrize("name", ["notes.webm", "sub/video.webm", "a..b.txt", "x" * 128, "x" * 129, "_x.txt",
                                  "-x.txt", "a b.txt", "vid\u00e9o.webm", ".hidden", "a%2Fb", "A-Z_0.9"])
async def test_upload_names_and_manifest_paths_follow_one_rule(gateway, http, synthetic_session, name):
    from sd_common.problems import ProblemError
    from sd_common.session_format.spec import parse_manifest

    headers = await new_player(http)
    sid = (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                        json={"files": [{"path": name, "size_bytes": 5}]})
    assert r.status_code in (200, 400), r.text
    manifest = manifest_of(synthetic_session)
    manifest["files"].append({"path": name, "size_bytes": 5, "sha256": "0" * 64, "content_type": "text/plain"})
    try:
        parse_manifest(json.dumps(manifest).encode())
        manifest_accepts = True
    except ProblemError as e:
        assert [p.code for p in e.problems] == ["manifest_file_path_invalid"], e.problems
        manifest_accepts = False
    assert (r.status_code == 200) == manifest_accepts, name
