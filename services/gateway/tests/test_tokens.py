"""Device tokens: issued, verified, and rejected when forged, expired or of another kind."""

import time

import jwt
import pytest

from sd_gateway.errors import Unauthenticated
from sd_gateway.tokens import DeviceTokens, bearer_token

SECRET = b"k" * 32


class SettableClock:
    """Unix seconds that move only when the test says."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_round_trip_and_cache_keep_expiry():
    clock = SettableClock(float(int(time.time())))
    t = DeviceTokens(SECRET, ttl_s=3, clock=clock)
    tok = t.issue("p-1")
    assert t.verify(tok) == "p-1"
    assert t.verify(tok) == "p-1"  # cached
    clock.now += 2.999
    assert t.verify(tok) == "p-1"  # still valid just before exp
    clock.now += 0.001
    with pytest.raises(Unauthenticated, match="expired"):
        t.verify(tok)  # the cache must not outlive the token
    # An unseen token is checked against the same clock.
    uncached = DeviceTokens(SECRET, ttl_s=3, clock=clock)
    with pytest.raises(Unauthenticated, match="expired"):
        uncached.verify(tok)


def test_a_token_from_the_future_is_rejected():
    clock = SettableClock(float(int(time.time())))
    t = DeviceTokens(SECRET, ttl_s=60, clock=clock)
    tok = t.issue("p-1", now=clock.now + 10)
    with pytest.raises(Unauthenticated, match="not yet valid"):
        t.verify(tok)
    clock.now += 10
    assert t.verify(tok) == "p-1"


def test_the_default_clock_is_the_wall_clock():
    t = DeviceTokens(SECRET, ttl_s=3600)
    assert t.verify(t.issue("p-1")) == "p-1"
    with pytest.raises(Unauthenticated, match="expired"):
        t.verify(t.issue("p-2", now=time.time() - 3601))


def test_forged_and_foreign_tokens_are_rejected():
    t = DeviceTokens(SECRET, ttl_s=60)
    other = DeviceTokens(b"o" * 32, ttl_s=60)
    with pytest.raises(Unauthenticated):
        t.verify(other.issue("p-1"))
    not_device = jwt.encode({"iss": "scale-diffusion-gateway", "sub": "p", "iat": 1, "exp": 2**40, "typ": "x"},
                            SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match="not a device token"):
        t.verify(not_device)
    with pytest.raises(ValueError):
        DeviceTokens(b"short", ttl_s=1)


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc"
    for bad in (None, "", "Basic abc", "Bearer ", "abc"):
        with pytest.raises(Unauthenticated):
            bearer_token(bad)
