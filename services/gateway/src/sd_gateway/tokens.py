"""Anonymous player identity: a device token (HS256 JWT) the gateway issues and later verifies."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

import jwt

from sd_gateway.errors import Unauthenticated

_ISSUER = "scale-diffusion-gateway"


class DeviceTokens:
    """Issues and verifies device tokens; a token names one player and expires after ttl."""

    def __init__(self, secret: bytes, ttl_s: int, *, cache_size: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret
        self._clock = clock  # unix seconds; tests pass a settable one to reach an expiry without sleeping
        self._ttl_s = ttl_s
        # Verified tokens -> (player id, expiry). A token's claims never change, so a hit only needs
        # its expiry checked again; this takes signature checking off every call of a busy player.
        self._verified: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._cache_size = cache_size

    @staticmethod
    def new_player_id() -> str:
        """A random, URL- and key-safe player id."""
        return "p-" + secrets.token_hex(10)

    def issue(self, player_id: str, now: float | None = None) -> str:
        """A signed token for player_id."""
        iat = int(now if now is not None else self._clock())
        claims = {"iss": _ISSUER, "sub": player_id, "typ": "device", "iat": iat, "exp": iat + self._ttl_s}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> str:
        """The player id the token names; Unauthenticated if forged, expired or malformed."""
        now = self._clock()
        hit = self._verified.get(token)
        if hit is not None and hit[1] > now:
            self._verified.move_to_end(token)
            return hit[0]
        try:
            # Times are checked below against this object's clock, by PyJWT's rules (exp <= now is expired).
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], issuer=_ISSUER,
                                options={"require": ["sub", "exp", "iat", "iss"], "verify_exp": False,
                                         "verify_iat": False})
            exp, iat = int(claims["exp"]), int(claims["iat"])
        except (ValueError, TypeError, OverflowError):
            raise Unauthenticated("device token rejected: exp and iat must be integers") from None
        except jwt.InvalidTokenError as e:
            raise Unauthenticated(f"device token rejected: {e}") from None
        if exp <= now:
            raise Unauthenticated("device token expired; create a new player identity")
        if iat > now:
            raise Unauthenticated("device token rejected: The token is not yet valid (iat)")
        if claims.get("typ") != "device":
            raise Unauthenticated("device token rejected: not a device token")
        self._verified[token] = (str(claims["sub"]), exp)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return str(claims["sub"])


def bearer_token(authorization: str | None) -> str:
    """Extracts the token from an `Authorization: Bearer <token>` value."""
    if not authorization:
        raise Unauthenticated("missing device token: send 'Authorization: Bearer <token>' from POST /v1/players")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <token>'")
    return token.strip()
