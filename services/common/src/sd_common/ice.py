"""WebRTC ICE servers shared by the gateway (which tells the game) and the diffusion pods (their own side).

Players behind a symmetric NAT or a firewall that blocks UDP reach a diffusion pod only through a TURN
relay. A TURN server such as coturn with `use-auth-secret` accepts time-limited credentials made from a
secret it shares with us (the "TURN REST API" scheme, draft-uberti-behave-turn-rest): the username is
`<expiry unix time>:<user>` and the password is base64(HMAC-SHA1(secret, username)). So the secret
stays on the server side; what reaches a browser expires after `ttl_s`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from pydantic import BaseModel, Field, field_validator

_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


class IceServer(BaseModel):
    """One STUN or TURN server, as RTCIceServer: `{"urls": ["turn:host:3478"], "username": …, "credential": …}`."""

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        bad = [u for u in urls if not u.startswith(_SCHEMES)]
        if bad:
            raise ValueError(f"ICE server URLs must start with stun:, stuns:, turn: or turns:, got {bad}")
        return urls


def parse_turn_urls(value: object) -> object:
    """A turn_urls setting (a list, or comma-separated text) as a list of TURN URLs; ValueError names one
    that is not turn:/turns:. Anything else is passed on for the settings' own type check."""
    if isinstance(value, str):
        value = [u.strip() for u in value.split(",") if u.strip()]
    if isinstance(value, list):
        bad = [u for u in value if not str(u).startswith(("turn:", "turns:"))]
        if bad:
            raise ValueError(f"TURN URLs must start with turn: or turns:, got {bad}")
    return value


def turn_rest_credentials(secret: str, user: str, ttl_s: int, now: float | None = None) -> tuple[str, str, int]:
    """(username, credential, expires at unix s) for `user`, valid for `ttl_s` from `now`."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    if ":" in user:
        raise ValueError(f"a TURN user name cannot contain ':' (it separates the expiry), got {user!r}")
    expires = int(time.time() if now is None else now) + int(ttl_s)
    username = f"{expires}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii"), expires


def ice_servers_for(static: list[IceServer], turn_urls: list[str], turn_secret: str | None, user: str,
                    ttl_s: int, now: float | None = None) -> tuple[list[IceServer], int | None]:
    """The configured servers plus, with a TURN secret, the TURN URLs with fresh credentials for `user`;
    and when those credentials expire (None without TURN)."""
    servers = list(static)
    if not turn_urls or not turn_secret:
        return servers, None
    username, credential, expires = turn_rest_credentials(turn_secret, user, ttl_s, now)
    servers.append(IceServer(urls=list(turn_urls), username=username, credential=credential))
    return servers, expires
