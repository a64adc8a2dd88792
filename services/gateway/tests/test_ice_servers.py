"""GET /v1/diffusion/ice-servers: what the game's peer connection uses to reach a diffusion pod. STUN is
passed on; a TURN relay gets time-limited credentials of the player's own, made from a secret that never
leaves the gateway (the TURN REST scheme coturn's use-auth-secret checks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import pytest
from pydantic import ValidationError

from sd_common.ice import IceServer, ice_servers_for, turn_rest_credentials
from sd_gateway.settings import GatewaySettings

SECRET = "turn-shared-secret-7f3a9c"
STUN = '[{"urls": ["stun:stun.example.org:3478"]}]'


async def _player(http: httpx.AsyncClient) -> tuple[str, dict]:
    made = (await http.post("/v1/players", json={})).json()
    return made["player_id"], {"Authorization": f"Bearer {made['device_token']}"}


def _coturn_password(secret: str, username: str) -> str:
    """What a TURN server with use-auth-secret expects: base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


async def test_without_servers_configured_the_game_uses_host_candidates_only(http):
    _, headers = await _player(http)
    r = await http.get("/v1/diffusion/ice-servers", headers=headers)
    assert r.status_code == 200 and r.json() == {"ice_servers": [], "expires_at": None}


async def test_turn_credentials_are_the_players_own_expire_and_never_carry_the_secret(start_gw, monkeypatch):
    monkeypatch.setenv("SD_GATEWAY_DIFFUSION_ICE_SERVERS", STUN)
    monkeypatch.setenv("SD_GATEWAY_TURN_URLS", "turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349")
    monkeypatch.setenv("SD_GATEWAY_TURN_SECRET", SECRET)
    gw = await start_gw(turn_ttl_s=600)
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        (alice, a_headers), (bob, b_headers) = await _player(http), await _player(http)
        before = int(time.time())
        ra = await http.get("/v1/diffusion/ice-servers", headers=a_headers)
        rb = await http.get("/v1/diffusion/ice-servers", headers=b_headers)
        after = int(time.time())
        unauthenticated = await http.get("/v1/diffusion/ice-servers")
    assert unauthenticated.status_code == 401 and SECRET not in unauthenticated.text
    for r, player in ((ra, alice), (rb, bob)):
        assert r.status_code == 200 and SECRET not in r.text
        body = r.json()
        stun, turn = body["ice_servers"]
        assert stun == {"urls": ["stun:stun.example.org:3478"], "username": None, "credential": None}
        assert turn["urls"] == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
        expiry, user = turn["username"].split(":")
        assert user == player and before + 600 <= int(expiry) <= after + 600 and body["expires_at"] == int(expiry)
        assert turn["credential"] == _coturn_password(SECRET, turn["username"])
    assert ra.json()["ice_servers"][1]["credential"] != rb.json()["ice_servers"][1]["credential"]


def test_turn_rest_credentials_follow_the_scheme_and_refuse_bad_input():
    username, credential, expires = turn_rest_credentials("s3cret", "player-1", 3600, now=1_800_000_000.7)
    assert (username, expires) == ("1800003600:player-1", 1_800_003_600)
    assert credential == _coturn_password("s3cret", "1800003600:player-1")
    with pytest.raises(ValueError, match="cannot contain ':'"):
        turn_rest_credentials("s3cret", "a:b", 3600)
    with pytest.raises(ValueError, match="positive"):
        turn_rest_credentials("s3cret", "a", 0)
    static = [IceServer(urls=["stun:x:3478"])]
    assert ice_servers_for(static, ["turn:x:3478"], None, "p", 60) == (static, None)  # no secret: no TURN
    assert ice_servers_for(static, [], "s", "p", 60) == (static, None)


@pytest.mark.parametrize("env, value, says", [
    ("SD_GATEWAY_TURN_URLS", "stun:turn.example.org:3478", "TURN URLs must start with turn: or turns:"),
    ("SD_GATEWAY_DIFFUSION_ICE_SERVERS", '[{"urls": ["http://x"]}]', "must start with stun:"),
    ("SD_GATEWAY_DIFFUSION_ICE_SERVERS", '[{"urls": []}]', "at least 1 item"),
])
def test_bad_ice_settings_are_refused_at_start_naming_the_value(monkeypatch, env, value, says):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=says):
        GatewaySettings()
