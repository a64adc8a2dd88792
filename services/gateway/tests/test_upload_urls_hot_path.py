"""The upload-urls hot path (UploadUrlsHotPath) answers every request as the FastAPI route does.

Two gateways' HTTP apps over one database and store (two replicas), one with the hot path and one
without, get the same requests; their statuses, headers and bodies must match (signatures, expiries
and upload ids aside, which differ by nature).
"""

from __future__ import annotations

import re

import httpx

from sd_common.metrics import HTTP_REQUESTS
from sd_common.objectstore import make_store
from sd_common.settings import StoreSettings
from sd_gateway.database import STATE_UPLOADED, GatewayDatabase
from sd_gateway.http_api import UPLOAD_URLS_TEMPLATE, create_app
from sd_gateway.sessions import SessionService
from sd_gateway.settings import GatewaySettings
from sd_gateway.signaling import DiffusionSignaling
from sd_gateway.tokens import DeviceTokens

BURST = 14
_VARIES = [(re.compile(p), r) for p, r in [
    (r"X-SD-Expires=\d+", "X-SD-Expires=E"), (r"X-SD-Signature=[0-9a-f]{64}", "X-SD-Signature=S"),
    (r"uploadId=[0-9a-f]{32}", "uploadId=U"), (r'"multipart_upload_id":"[0-9a-f]{32}"', '"multipart_upload_id":"U"'),
    (r'"expires_at":"[0-9T:Z-]+"', '"expires_at":"T"')]]


def _normal(body: str) -> str:
    for pattern, replacement in _VARIES:
        body = pattern.sub(replacement, body)
    return body


def _app(tmp_path, db, store, *, hot: bool):
    settings = GatewaySettings(state_dir=tmp_path / "gw", upload_calls_burst=BURST, upload_calls_per_minute=0.001,
                               max_files_per_session=3)
    service = SessionService(settings, db, store, DeviceTokens(b"k" * 32, 3600), url_expiry_s=900,
                             multipart_threshold_bytes=16 * 1024 * 1024, multipart_part_bytes=8 * 1024 * 1024,
                             max_object_bytes=1024**3)
    return service, create_app(service, DiffusionSignaling(None), cors_origins=["http://game.test"],
                               upload_urls_hot_path=hot)


async def test_the_hot_path_answers_as_the_route(tmp_path):
    db = GatewayDatabase(f"sqlite:///{tmp_path / 'gw.db'}")
    store = make_store(StoreSettings(backend="local", root=tmp_path / "store", public_base_url="http://gw.test"))
    (hot_service, hot_app), (_, plain_app) = _app(tmp_path, db, store, hot=True), _app(tmp_path, db, store, hot=False)
    try:
        mine, token = await hot_service.create_player("t", "127.0.0.1")
        theirs, their_token = await hot_service.create_player("t", "127.0.0.1")
        sid = (await hot_service.create_session(mine, "", "", "")).session_id
        other_sid = (await hot_service.create_session(theirs, "", "", "")).session_id
        done_sid = (await hot_service.create_session(mine, "", "", "")).session_id
        db.set_state(done_sid, STATE_UPLOADED, [], 1.0)
        auth = {"Authorization": f"Bearer {token}", "Origin": "http://game.test"}
        one = {"files": [{"path": "video.webm", "size_bytes": 8_000_000, "content_type": "video/webm"}]}
        big = {"files": [{"path": "big.webm", "size_bytes": 40_000_000, "content_type": "video/webm"}]}
        cases = [
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": one}),  # 200, with CORS headers
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": big}),  # 200, multipart
            (f"/v1/sessions/{sid}/upload-urls", {}, {"json": one}),  # 401 no token
            (f"/v1/sessions/{sid}/upload-urls", {"Authorization": "Bearer forged"}, {"json": one}),  # 401
            (f"/v1/sessions/{other_sid}/upload-urls", auth, {"json": one}),  # 403 another player's
            ("/v1/sessions/20261124T120000Z-0000000000000000/upload-urls", auth, {"json": one}),  # 404
            ("/v1/sessions/bad$id/upload-urls", auth, {"json": one}),  # 400 malformed id
            (f"/v1/sessions/{done_sid}/upload-urls", auth, {"json": one}),  # 409 complete
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": {"files": [{"path": "x.bin",
                                                                            "size_bytes": 2 * 1024**3}]}}),  # 413
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": {"files": [{"path": "../x", "size_bytes": 1}]}}),
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": {"files": "nope"}}),  # 400 the model refuses
            (f"/v1/sessions/{sid}/upload-urls", auth, {"content": b"{not json"}),  # 400 not JSON
            (f"/v1/sessions/{sid}/upload-urls", {**auth, "Content-Type": "text/plain"},
             {"content": b'{"files": []}'}),  # not a JSON content type: FastAPI's answer
            (f"/v1/sessions/{sid}/upload-urls", auth, {"json": {"files": [
                {"path": f"f{i}.bin", "size_bytes": 1} for i in range(4)]}}),  # 400 over the file count
        ]
        ok_before = HTTP_REQUESTS.labels("gateway", UPLOAD_URLS_TEMPLATE, "POST", "200")._value.get()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hot_app), base_url="http://gw.test") as h, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=plain_app), base_url="http://gw.test") as p:
            statuses = []
            for path, headers, kw in cases:
                a, b = await h.post(path, headers=headers, **kw), await p.post(path, headers=headers, **kw)
                assert (a.status_code, a.headers.multi_items()) == (b.status_code, b.headers.multi_items()), path
                assert _normal(a.text) == _normal(b.text), (path, a.text, b.text)
                statuses.append(a.status_code)
            assert statuses == [200, 200, 401, 401, 403, 404, 400, 409, 413, 400, 400, 400, 400, 400], statuses
            assert "access-control-allow-origin" in dict(a.headers) and "content-security-policy" in dict(a.headers)
            # each replica's own bucket runs out after the same calls, with the same Retry-After
            while True:
                a, b = await h.post(cases[0][0], headers=auth, json=one), await p.post(cases[0][0], headers=auth,
                                                                                        json=one)
                assert a.status_code == b.status_code, (a.text, b.text)
                if a.status_code == 429:  # the wait is counted from each bucket's own last refill
                    retry = re.compile(r"retry in \d+ s")
                    assert retry.sub("", a.text) == retry.sub("", b.text) and "retry in" in a.text
                    assert abs(int(a.headers["retry-after"]) - int(b.headers["retry-after"])) <= 1
                    assert [k for k, _ in a.headers.multi_items()] == [k for k, _ in b.headers.multi_items()]
                    break
                assert a.status_code == 200
            # a player disabled on another replica is refused by the next call
            db.set_player_disabled(mine, True)
            a, b = await h.post(cases[0][0], headers=auth, json=one), await p.post(cases[0][0], headers=auth, json=one)
            assert a.status_code == b.status_code == 403 and a.text == b.text
        # both apps' successes are counted under the route's template
        assert HTTP_REQUESTS.labels("gateway", UPLOAD_URLS_TEMPLATE, "POST", "200")._value.get() - ok_before >= 2 * 2

        # and the hot path really answers: without the FastAPI route a well-formed call still gets its URLs
        _, bare_app = _app(tmp_path, db, store, hot=True)
        bare_app.router.routes[:] = [r for r in bare_app.router.routes if getattr(r, "path", "") != UPLOAD_URLS_TEMPLATE]
        db.set_player_disabled(mine, False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare_app), base_url="http://gw.test") as bare:
            r = await bare.post(cases[0][0], headers=auth, json=one)
            assert r.status_code == 200 and r.json()["targets"][0]["path"] == "video.webm"
            assert (await bare.post(cases[0][0], headers=auth, content=b"{not json")).status_code == 404
    finally:
        await store.close()
        db.close()
