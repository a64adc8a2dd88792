"""Device tokens: issued, verified, and rejected when forged, expired or of another kind."""

import time

import jwt
import pytest

from sd_gateway.errors import Unauthenticated
from sd_gateway.tokens import DeviceTokens, bearer_token

SECRET = b"k" * 32


def test_round_trip_and_cache_keep_expiry():
    t = DeviceTokens(SECRET, ttl_s=3)
    tok = t.issue("p-1")
    assert t.verify(tok) == "p-1"
    assert t.verify(tok) == "p-1"  # cached
    short = t.issue("p-2", now=time.time() - 1.0)  # expires 1 to 2 s from now (iat is whole seconds)
    assert t.verify(short) == "p-2"
    time.sleep(2.1)
    with pytest.raises(Unauthenticated, match="expired"):
        t.verify(short)  # the cache must not outlive the token


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
