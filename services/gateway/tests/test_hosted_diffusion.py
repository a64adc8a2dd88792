"""Hosted diffusion (Mirage): the gateway mints client tokens from its server-side key, and the game streams
to the provider itself. No call to Decart is made here: the provider is the local stand-in
(sd_diffusion.mirage_standin), which speaks the same token endpoint and realtime signaling messages."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import pytest
import structlog
from aiortc import RTCSessionDescription
from prometheus_client import REGISTRY

from sd_common.logs import configure_logging
from sd_diffusion.mirage_standin import MirageStandIn
from tests.ports import free_port

# diffusion_peers (the browser-like aiortc player) lives beside the diffusion service's tests; appended,
# not put first, as that folder's conftest does.
sys.path.append(str(Path(__file__).parents[2] / "diffusion" / "tests"))
from diffusion_peers import Player  # noqa: E402

KEY = "dk_live_SERVER_SIDE_secret_7f3a9c"  # the operator's Decart key: it must stay on the server
HT = ("POST", "/v1/diffusion/hosted-token")


@pytest.fixture
async def standin():
    """start(**options) -> a running MirageStandIn on a free loopback port; all stopped after."""
    running: list[MirageStandIn] = []

    async def start(**options) -> MirageStandIn:
        s = MirageStandIn(options.pop("api_key", KEY), **options)
        await s.start()
        running.append(s)
        return s

    yield start
    for s in running:
        await s.stop()


@pytest.fixture
def logs(monkeypatch):
    """Everything the gateway logs from here on (structlog and the stdlib, DEBUG and up), as JSON lines."""
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", buf)
    configure_logging("gateway", "json", "DEBUG")
    yield buf
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def hosted_settings(s: MirageStandIn, **overrides) -> dict:
    return {"hosted_diffusion": "mirage", "mirage_api_key": KEY, "mirage_api_url": s.base_url,
            "mirage_realtime_url": s.realtime_url, **overrides}


async def new_player(http: httpx.AsyncClient) -> dict[str, str]:
    r = await http.post("/v1/players", json={})
    return {"Authorization": f"Bearer {r.json()['device_token']}"}


async def new_session(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    return (await http.post("/v1/sessions", json={}, headers=headers)).json()["session_id"]


def minted(outcome: str) -> float:
    return REGISTRY.get_sample_value("sd_gateway_hosted_tokens_total",
                                     {"provider": "mirage", "outcome": outcome}) or 0.0


def tree_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


async def test_a_token_is_minted_with_the_server_key_which_reaches_only_the_provider(start_gw, standin, logs,
                                                                                    tmp_path):
    s = await standin()
    gw = await start_gw(**hosted_settings(s, mirage_token_ttl_s=90))
    before = minted("minted")
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        sid = await new_session(http, headers)
        r = await http.post("/v1/diffusion/hosted-token", json={"session_id": sid}, headers=headers)
        page = await http.get("/")
        doc = await http.get("/openapi.json")
        async with httpx.AsyncClient() as plain:
            metrics = (await plain.get(f"http://127.0.0.1:{gw.metrics_port}/metrics")).text
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"provider", "model", "realtime_url", "token", "expires_at"}
    assert (body["provider"], body["model"], body["realtime_url"]) == ("mirage", "mirage_v2", s.realtime_url)
    assert body["token"] in s.tokens and body["token"].startswith("ek_")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(seconds=85) < expires - datetime.now(UTC) <= timedelta(seconds=90)
    # the provider got the key, in its header, and the body Decart's SDK sends
    assert s.keys_seen == [KEY]
    assert s.token_bodies == [{"expiresIn": 90, "allowedModels": ["mirage_v2"]}]
    # ... and it appears nowhere else: response, logs, the gateway's records, its API, its metrics
    assert KEY not in r.text and KEY not in json.dumps(dict(r.headers))
    written = logs.getvalue()
    assert "hosted diffusion token minted" in written  # the capture works
    assert KEY not in written and body["token"] not in written
    assert KEY.encode() not in tree_bytes(tmp_path / "gw") and body["token"].encode() not in tree_bytes(tmp_path / "gw")
    assert KEY not in doc.text and KEY not in metrics
    assert minted("minted") == before + 1
    # the game may open the provider's WebSocket: its origin is in the page's content security policy
    origin = s.realtime_url.rsplit("/v1/", 1)[0]
    assert origin in page.headers["content-security-policy"].split("connect-src ", 1)[1].split(";", 1)[0]


async def test_hosted_off_is_a_409_that_says_so(gateway, http):
    headers = await new_player(http)
    sid = await new_session(http, headers)
    r = await http.post("/v1/diffusion/hosted-token", json={"session_id": sid}, headers=headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "failed_precondition"
    assert "SD_GATEWAY_HOSTED_DIFFUSION" in r.json()["error"]["message"]


def test_mirage_without_a_key_does_not_start():
    from sd_gateway.settings import GatewaySettings
    with pytest.raises(ValueError, match="SD_GATEWAY_MIRAGE_API_KEY"):
        GatewaySettings(hosted_diffusion="mirage")
    with pytest.raises(ValueError, match="SD_GATEWAY_MIRAGE_REALTIME_URL") as err:
        GatewaySettings(hosted_diffusion="mirage", mirage_api_key=KEY, mirage_realtime_url="https://x/v1/stream")
    assert KEY not in str(err.value)  # a refused setting does not echo the others


async def test_provider_failures_are_mapped_and_nothing_is_cached(start_gw, standin, logs):
    s = await standin(api_key="a-different-key")
    s.echo_key_in_errors = True  # a careless provider quotes the key it was sent in its error bodies
    gw = await start_gw(**hosted_settings(s))
    counts = {o: minted(o) for o in ("minted", "refused", "busy", "unavailable", "malformed")}
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        sid = await new_session(http, headers)

        async def ask() -> httpx.Response:
            return await http.post("/v1/diffusion/hosted-token", json={"session_id": sid}, headers=headers)

        wrong_key = await ask()
        assert wrong_key.status_code == 502 and wrong_key.json()["error"]["code"] == "bad_gateway"
        assert "SD_GATEWAY_MIRAGE_API_KEY" in wrong_key.json()["error"]["message"]
        s.api_key = KEY
        s.fail_status = 500
        down = await ask()
        assert down.status_code == 503 and down.json()["error"]["code"] == "unavailable"
        assert "HTTP 500" in down.json()["error"]["message"]
        s.fail_status = 429
        busy = await ask()
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "busy" and "retry-after" in busy.headers
        s.fail_status = 403
        refused = await ask()
        assert refused.status_code == 502
        s.fail_status = None
        s.reply_override = {"apiKey": KEY, "expiresAt": "2999-01-01T00:00:00Z"}  # its own key, as a token
        echoed = await ask()
        assert echoed.status_code == 502 and "without a usable client token" in echoed.json()["error"]["message"]
        s.reply_override = {"apiKey": "ek_1", "expiresAt": "2000-01-01T00:00:00Z"}  # already expired
        assert (await ask()).status_code == 502
        s.reply_override = None
        recovered = await ask()  # nothing of the failures was kept: the next call asks again and gets one
        assert recovered.status_code == 200 and recovered.json()["token"] in s.tokens
        everything = [wrong_key, down, busy, refused, echoed, recovered]
    for r in everything:
        assert KEY not in r.text
    written = logs.getvalue()
    assert "refused to mint a token" in written and "[redacted]" in written  # the provider's words, key cut out
    assert KEY not in written
    assert len(s.keys_seen) == 7
    assert {o: minted(o) - counts[o] for o in counts} == {"minted": 1, "refused": 2, "busy": 1, "unavailable": 1,
                                                          "malformed": 2}


async def test_a_provider_that_does_not_answer_is_503(start_gw, standin):
    s = await standin()
    gw = await start_gw(**hosted_settings(s, mirage_api_url=f"http://127.0.0.1:{free_port()}", mirage_timeout_s=2))
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        sid = await new_session(http, headers)
        t0 = time.monotonic()
        r = await http.post("/v1/diffusion/hosted-token", json={"session_id": sid}, headers=headers)
    assert r.status_code == 503 and "did not answer" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 5


async def test_documented_statuses_of_hosted_token_are_exactly_those_answered(start_gw, standin, tmp_path):
    """The player's side is the offer endpoint's: device token, own session, limits (test_http_contract
    checks the other operations the same way)."""
    from sd_gateway.http_api import OPERATION_ERRORS
    s = await standin()
    seen: set[int] = set()
    gw = await start_gw(**hosted_settings(s, hosted_tokens_burst=2, hosted_tokens_per_minute=0.1),
                        max_json_body_bytes=4096)
    off = await start_gw(state_dir=tmp_path / "gw-off")
    async with httpx.AsyncClient(base_url=gw.base_url) as http:

        async def call(expected: int, headers=None, **kw) -> httpx.Response:
            r = await http.post(HT[1], headers=headers, **kw)
            assert r.status_code == expected, (expected, r.status_code, r.text)
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"code", "message", "problems"}
            seen.add(r.status_code)
            return r

        owner, other, disabled, fresh = [await new_player(http) for _ in range(4)]
        sid = await new_session(http, owner)
        dis_id = (await http.get("/v1/players/me", headers=disabled)).json()["player_id"]
        gw._db.set_player_disabled(dis_id, True)
        await call(401, json={"session_id": sid})
        await call(401, json={"session_id": sid}, headers={"Authorization": "Bearer forged"})
        await call(403, json={"session_id": sid}, headers=disabled)
        await call(403, json={"session_id": sid}, headers=other)
        await call(404, json={"session_id": "20260101T000000Z-0000000000000000"}, headers=owner)
        await call(400, json={"session_id": "-bad"}, headers=owner)
        await call(400, json={}, headers=owner)
        await call(413, content=b'{"x": "' + b"y" * 5000 + b'"}', headers={**owner, "Content-Type": "application/json"})
        await call(200, json={"session_id": sid}, headers=owner)
        s.fail_status = 401
        await call(502, json={"session_id": sid}, headers=owner)
        limited = await call(429, json={"session_id": sid}, headers=owner)  # its burst of two is spent
        assert "retry-after" in limited.headers
        s.fail_status = 503
        await call(503, json={"session_id": await new_session(http, fresh)}, headers=fresh)
        doc = (await http.get("/openapi.json")).json()
    async with httpx.AsyncClient(base_url=off.base_url) as http:
        headers = await new_player(http)
        r = await http.post(HT[1], json={"session_id": await new_session(http, headers)}, headers=headers)
        assert r.status_code == 409
        seen.add(r.status_code)
    documented = {int(c) for c in doc["paths"][HT[1]]["post"]["responses"]}
    assert documented == {200, *OPERATION_ERRORS[HT]}
    assert seen == documented


# The stand-in's own side: what the game meets after the gateway handed it a token.

async def mint(start_gw, s: MirageStandIn) -> dict:
    gw = await start_gw(**hosted_settings(s))
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        headers = await new_player(http)
        r = await http.post(HT[1], json={"session_id": await new_session(http, headers)}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def stream_url(body: dict, token: str | None = None, model: str | None = None) -> str:
    return f"{body['realtime_url']}?api_key={token or body['token']}&model={model or body['model']}"


async def test_the_standin_refuses_expired_unknown_and_other_model_tokens(start_gw, standin):
    now = [time.time()]
    s = await standin(clock=lambda: now[0])
    body = await mint(start_gw, s)
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(stream_url(body)) as ws:  # valid: a prompt is acknowledged
            await ws.send_json({"type": "prompt", "prompt": "a rainy evening", "enhance_prompt": False})
            ack = await ws.receive_json(timeout=5)
            assert ack == {"type": "prompt_ack", "prompt": "a rainy evening", "success": True, "error": None}
        for url, words in ((stream_url(body, token="ek_" + "0" * 32), "invalid api_key"),
                           (stream_url(body, model="lucy_2_rt"), "unknown model")):
            async with client.ws_connect(url) as ws:
                msg = await ws.receive_json(timeout=5)
                assert msg["type"] == "error" and words in msg["error"]
                await ws.receive(timeout=5)
                assert ws.close_code == 1008
        now[0] += 61  # past the token's 60 s
        async with client.ws_connect(stream_url(body)) as ws:
            msg = await ws.receive_json(timeout=5)
            assert msg == {"type": "error", "error": "the client token has expired"}
            await ws.receive(timeout=5)
            assert ws.close_code == 1008


async def signaled_player(body: dict, client: aiohttp.ClientSession) -> tuple[Player, aiohttp.ClientWebSocketResponse,
                                                                             list[dict]]:
    """An aiortc player that completes the provider's signaling as the game does: prompt, then offer."""
    ws = await client.ws_connect(stream_url(body))
    await ws.send_json({"type": "prompt", "prompt": "a New York street at night", "enhance_prompt": False})
    assert (await ws.receive_json(timeout=5))["success"] is True
    player = Player(width=320, height=180, fps=20)
    await ws.send_json({"type": "offer", "sdp": await player.offer()})
    seen: list[dict] = []
    while True:
        msg = await ws.receive_json(timeout=10)
        seen.append(msg)
        if msg["type"] == "answer":
            break
        assert msg["type"] != "error", msg
    await player.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
    return player, ws, seen


async def test_an_aiortc_player_streams_through_the_standin_and_reads_kept_barcodes(start_gw, standin):
    s = await standin(barcode_strip="keep", delay_ms=150)
    body = await mint(start_gw, s)
    async with aiohttp.ClientSession() as client:
        player, ws, seen = await signaled_player(body, client)
        try:
            await player.wait_frames(20, timeout_s=60)
            while not any(m["type"] == "generation_started" for m in seen):
                seen.append(await ws.receive_json(timeout=10))
        finally:
            await player.close()
            await ws.close()
    assert [m["type"] for m in seen][:2] == ["answer", "session_id"]
    assert s.sessions[0].prompt == "a New York street at night"
    ids = [fid for fid, _, _ in player.received]
    assert all(i is not None for i in ids), ids  # the strip was kept, so every frame tells its source
    assert ids == sorted(ids) and set(ids) <= set(player.track.sent)
    lags = [arrival - player.track.sent[fid] for fid, arrival, _ in player.received]
    assert min(lags) >= 0.15, lags  # the stand-in's latency, as the game would measure it from barcodes
    assert player.frames[0].std() > 5  # a picture, not a blank frame


async def test_a_lost_barcode_arrives_as_pictures_without_one(start_gw, standin):
    s = await standin(barcode_strip="lose")
    body = await mint(start_gw, s)
    async with aiohttp.ClientSession() as client:
        player, ws, _ = await signaled_player(body, client)
        try:
            await player.wait_frames(10, timeout_s=60)
        finally:
            await player.close()
            await ws.close()
    assert [fid for fid, _, _ in player.received] == [None] * len(player.received)
    assert s.sessions[0].frames_out >= 10 and player.frames[0].std() > 5
