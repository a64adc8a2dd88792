"""Upload URLs cannot be forged, reused after expiry, re-targeted or overfilled; nothing escapes the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from .conftest import world
from .test_uploads import new_player


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query))
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q)))


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def _one_url(http, headers, size=10, path="events.jsonl"):
    sid = (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                        json={"files": [{"path": path, "size_bytes": size}]})
    assert r.status_code == 200, r.text
    return sid, r.json()["targets"][0]["url"]


async def test_forged_and_tampered_urls_get_403(gateway, http, tmp_path):
    headers = await new_player(http)
    _, url = await _one_url(http, headers)
    sig = dict(parse_qsl(urlsplit(url).query))["X-SD-Signature"]
    before = world(gateway, tmp_path)
    forged = _with_query(url, **{"X-SD-Signature": ("0" if sig[0] != "0" else "1") + sig[1:]})
    assert (await http.put(forged, content=b"0123456789")).status_code == 403
    assert (await http.put(_with_query(url, **{"X-SD-Max-Bytes": "999999"}), content=b"x" * 20)).status_code == 403
    later = str(int(dict(parse_qsl(urlsplit(url).query))["X-SD-Expires"]) + 3600)
    assert (await http.put(_with_query(url, **{"X-SD-Expires": later}), content=b"0123456789")).status_code == 403
    no_sig = urlunsplit(urlsplit(url)._replace(query=""))
    assert (await http.put(no_sig, content=b"0123456789")).status_code == 403
    assert world(gateway, tmp_path) == before  # no object, part, temp file, event or record
    assert (await http.put(url, content=b"0123456789")).status_code == 200  # the genuine URL works
    assert world(gateway, tmp_path) != before  # (and the comparison does see a write)


async def test_retargeted_url_gets_403(gateway, http, tmp_path):
    headers = await new_player(http)
    sid, url = await _one_url(http, headers)
    other_sid, _ = await _one_url(http, headers)
    before = world(gateway, tmp_path)
    path = urlsplit(url).path
    for target in (path.replace("events.jsonl", "frames.jsonl"), path.replace(sid, other_sid),
                   path.replace(f"raw/{sid}/", "raw/")):
        r = await http.put(_with_path(url, target), content=b"0123456789")
        assert r.status_code == 403, (target, r.text)
    assert world(gateway, tmp_path) == before


async def test_expired_url_gets_403(start_gw, tmp_path):
    gw = await start_gw(store_overrides={"url_expiry_s": 1})
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        _, url = await _one_url(http, headers)
        await asyncio.sleep(2.1)
        before = world(gw, tmp_path)
        r = await http.put(url, content=b"0123456789")
        assert r.status_code == 403 and "expired" in r.text.lower()
        assert world(gw, tmp_path) == before


async def test_body_over_the_signed_size_gets_413(gateway, http, tmp_path):
    headers = await new_player(http)
    sid, url = await _one_url(http, headers, size=10)
    before = world(gateway, tmp_path)
    r = await http.put(url, content=b"x" * 11)
    assert r.status_code == 413
    # a lying client: no Content-Length, streamed body far larger than signed

    async def body():
        for _ in range(64):
            yield b"y" * 65536
    r = await http.put(url, content=body())
    assert r.status_code == 413
    assert not (tmp_path / "store" / "raw" / sid / "events.jsonl").exists()
    # nothing half-written is left behind
    assert not [p for p in _files_under(tmp_path / "store") if ".tmp" in p.parts]
    assert world(gateway, tmp_path) == before


BAD_NAMES = ["../escape.txt", "/etc/passwd", "a/../../b", "a\x00b", "ｖｉｄｅｏ.webm", "video\u202e.webm",
             "..", ".hidden", "a\\b", "e\u0301.txt", "con sole.txt", "x" * 300]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_tricky_file_names_are_refused(gateway, http, name, tmp_path):
    headers = await new_player(http)
    sid = (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]
    before = world(gateway, tmp_path)
    r = await http.post(f"/v1/sessions/{sid}/upload-urls", headers=headers,
                        json={"files": [{"path": name, "size_bytes": 5}]})
    assert r.status_code == 400, r.text
    assert world(gateway, tmp_path) == before  # not even counted against the session's limits


RAW_PATHS = ["/v1/store/raw/../../outside.txt", "/v1/store/%2e%2e/%2e%2e/outside.txt", "/v1/store//etc/outside.txt",
             "/v1/store/raw/a%00b", "/v1/store/raw/%EF%BD%96.txt", "/v1/store/raw/..%2F..%2Foutside.txt",
             "/v1/store/raw/a%5C..%5Coutside.txt"]


@pytest.mark.parametrize("raw_path", RAW_PATHS)
async def test_store_never_writes_outside_its_root(start_gw, tmp_path, raw_path):
    # The store sits three folders down, so a path that climbs out of it lands somewhere the scan sees.
    gw = await start_gw(store_overrides={"root": tmp_path / "a" / "b" / "store"})
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        _, url = await _one_url(http, headers)
        before = world(gw, tmp_path)
        above = set(tmp_path.parent.iterdir())
        parts = urlsplit(url)
        target = f"{parts.scheme}://{parts.netloc}{raw_path}?{parts.query}"
        # send the path exactly as written, without client-side normalisation
        r = await http.send(http.build_request("PUT", httpx.URL(target), content=b"0123456789"))
    assert r.status_code in (400, 403, 404), r.text
    assert world(gw, tmp_path) == before  # nothing anywhere under the test's folder, the store included
    assert set(tmp_path.parent.iterdir()) == above  # nor beside it
    for outside in (Path("/outside.txt"), Path("/etc/outside.txt"), tmp_path.parent / "outside.txt"):
        assert not outside.exists()


async def test_another_player_cannot_touch_a_session(gateway, http, tmp_path):
    owner, intruder = await new_player(http), await new_player(http)
    sid, _ = await _one_url(http, owner)
    before = world(gateway, tmp_path)
    for method, path, body in (("POST", f"/v1/sessions/{sid}/complete", None),
                               ("POST", f"/v1/sessions/{sid}/upload-urls",
                                {"files": [{"path": "x.bin", "size_bytes": 1}]}),
                               ("GET", f"/v1/sessions/{sid}", None),
                               ("POST", f"/v1/sessions/{sid}/multipart/complete",
                                {"path": "x.bin", "multipart_upload_id": "u", "parts": [{"part_number": 1, "etag": "e"}]})):
        r = await http.request(method, path, headers=intruder, json=body)
        assert r.status_code == 403, (path, r.text)
    assert world(gateway, tmp_path) == before
    assert (await http.get(f"/v1/sessions/{sid}", headers=owner)).status_code == 200


async def test_device_tokens_cannot_be_forged(gateway, http, tmp_path):
    headers = await new_player(http)
    before = world(gateway, tmp_path)
    token = headers["Authorization"].split()[1]
    head, payload, sig = token.split(".")
    import base64
    import json
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "p-someoneelse"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = await http.get("/v1/players/me", headers={"Authorization": f"Bearer {head}.{forged_payload}.{sig}"})
    assert r.status_code == 401
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    r = await http.get("/v1/players/me", headers={"Authorization": f"Bearer {none_alg}.{payload}."})
    assert r.status_code == 401
    r = await http.post("/v1/sessions", json={}, headers={"Authorization": f"Bearer {head}.{forged_payload}.{sig}"})
    assert r.status_code == 401
    assert world(gateway, tmp_path) == before
    assert (await http.get("/v1/players/me", headers=headers)).status_code == 200


async def test_a_client_that_disconnects_mid_upload_is_an_aborted_upload(gateway, http, tmp_path, caplog, capfd):
    import logging

    from prometheus_client import REGISTRY

    from .conftest import world

    def count(status: str) -> float:
        return REGISTRY.get_sample_value("sd_http_requests_total", {
            "service": "gateway", "route": "/v1/store/{key:path}", "method": "PUT", "status": status}) or 0.0

    headers = await new_player(http)
    _, url = await _one_url(http, headers, size=100)
    before, aborted_before = world(gateway, tmp_path), count("499")
    errors_before = count("500")
    caplog.set_level(logging.INFO)
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 f"Content-Length: 100\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + b"x" * 50)
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(200):
        if count("499") > aborted_before:
            break
        await asyncio.sleep(0.05)
    assert count("499") == aborted_before + 1  # its own label
    assert count("500") == errors_before
    assert REGISTRY.get_sample_value("sd_gateway_uploads_aborted_total") >= 1
    assert world(gateway, tmp_path) == before  # nothing written, nothing announced, no record changed
    out = capfd.readouterr()
    logged = caplog.text + out.out + out.err
    assert "Traceback" not in logged and "ClientDisconnect" not in logged
    assert "upload aborted" in logged
