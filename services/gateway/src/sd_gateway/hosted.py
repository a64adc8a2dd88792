"""Hosted diffusion: short-lived client tokens for a provider the game streams to directly (Decart's Mirage).

An operator without GPUs sets `SD_GATEWAY_HOSTED_DIFFUSION=mirage` and the provider's API key. For each
drive the game asks the gateway for a client token; the gateway asks the provider's token endpoint with
the server-side key and hands the game only the short-lived token, the model and the realtime URL. The
game then does the WebRTC signaling with the provider itself (web/src/media/hosted.ts): nothing of the
stream passes through here, and nothing is kept per token.

The token endpoint is the one Decart's public SDKs call (DecartAI/sdk, packages/sdk/src/tokens/client.ts):
`POST <api_url>/v1/client/tokens` with the key in `X-API-KEY` and a JSON body (`expiresIn` in seconds,
`allowedModels`); it answers `{"apiKey": "ek_…", "expiresAt": "<ISO 8601>"}`, and `apiKey` is what a
client puts in the realtime URL's `api_key` query parameter. docs/diffusion.md, "Hosted (Mirage)".

The key is a SecretStr end to end: it goes into one request header and nowhere else (no log line, no
error message, no response, no redirect: redirects are not followed). Nothing is cached: a failure is
answered to that player only, and the next call asks the provider again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import structlog
from prometheus_client import Counter
from pydantic import SecretStr

from sd_gateway.errors import BadGateway, Busy, FailedPrecondition, RateLimited, Unavailable
from sd_gateway.ratelimit import RateLimiter, TokenBucketLimiter

TOKENS = Counter("sd_gateway_hosted_tokens_total", "Client tokens asked of the hosted diffusion provider, by outcome",
                 ["provider", "outcome"])  # minted, refused, busy, unavailable, malformed
PROVIDER_RETRY_AFTER_S = 10.0  # when a rate-limiting provider gives no Retry-After of its own
_MAX_TOKEN_CHARS = 8192
_BODY_SNIPPET_CHARS = 200

log = structlog.get_logger()


@dataclass(frozen=True)
class HostedToken:
    """What the game needs to open the provider's realtime stream itself."""

    provider: str
    model: str
    realtime_url: str
    token: str = field(repr=False)
    expires_at: datetime


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, as a content security policy names it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class HostedDiffusion:
    """Mints client tokens of the configured provider; with provider "off" every call answers 409."""

    def __init__(self, provider: str, *, api_key: SecretStr | None = None, api_url: str = "",
                 realtime_url: str = "", model: str = "", token_ttl_s: int = 60, timeout_s: float = 5.0,
                 tokens_per_minute: float = 6.0, tokens_burst: int = 10,
                 limiter: RateLimiter | None = None) -> None:
        self.provider = provider
        self._api_key = api_key
        self._api_url = api_url.rstrip("/")
        self.realtime_url = realtime_url
        self.model = model
        self._ttl_s = token_ttl_s
        self._timeout_s = timeout_s
        # Client tokens per player; the shared store's limiter when the replicas share one.
        self._limit = limiter or TokenBucketLimiter(tokens_per_minute, tokens_burst)
        self._http: httpx.AsyncClient | None = None

    @property
    def enabled(self) -> bool:
        return self.provider != "off"

    def connect_origins(self) -> list[str]:
        """Origins the game must be allowed to reach (its content security policy): the realtime URL's."""
        return [origin_of(self.realtime_url)] if self.enabled else []

    async def mint(self, player_id: str, session_id: str) -> HostedToken:
        """A fresh client token for this player's drive; the provider's answer mapped to the API's errors."""
        if not self.enabled or self._api_key is None:
            raise FailedPrecondition("hosted diffusion is off on this gateway (SD_GATEWAY_HOSTED_DIFFUSION); "
                                     "use the gateway's own diffusion view (POST /v1/diffusion/offer) or drive "
                                     "without it")
        wait_s = await self._limit.acquire(player_id)
        if wait_s is not None:
            raise RateLimited(f"too many hosted diffusion tokens; retry in {wait_s:.0f} s", retry_after_s=wait_s)
        who = {"provider": self.provider, "player_id": player_id, "session_id": session_id}
        key = self._api_key.get_secret_value()
        try:
            resp = await self._client().post(
                f"{self._api_url}/v1/client/tokens", headers={"X-API-KEY": key},
                json={"expiresIn": self._ttl_s, "allowedModels": [self.model]})
        except httpx.HTTPError as exc:
            TOKENS.labels(self.provider, "unavailable").inc()
            log.warning("hosted diffusion provider did not answer", error=type(exc).__name__, **who)
            raise Unavailable(f"the hosted diffusion provider ({self.provider}) did not answer "
                              f"({type(exc).__name__}); the plain render is recorded instead") from None
        if resp.status_code != 200 and resp.status_code != 201:
            raise self._refusal(resp, key, who)
        token = self._token_of(resp, key)
        if token is None:
            TOKENS.labels(self.provider, "malformed").inc()
            log.warning("hosted diffusion provider answered without a usable token", status=resp.status_code, **who)
            raise BadGateway(f"the hosted diffusion provider ({self.provider}) answered without a usable client "
                             "token; the plain render is recorded instead")
        TOKENS.labels(self.provider, "minted").inc()
        log.info("hosted diffusion token minted", model=self.model, expires_at=token.expires_at.isoformat(), **who)
        return token

    def _refusal(self, resp: httpx.Response, key: str, who: dict) -> Exception:
        status = resp.status_code
        # The provider's words help the operator; the key is cut out in case a provider echoes it.
        snippet = resp.text[:_BODY_SNIPPET_CHARS].replace(key, "[redacted]") if key else ""
        if status == 429:
            TOKENS.labels(self.provider, "busy").inc()
            wait_s = _retry_after(resp.headers.get("retry-after"))
            log.warning("hosted diffusion provider is rate limiting", status=status, retry_after_s=wait_s, **who)
            return Busy(f"the hosted diffusion provider ({self.provider}) is busy; try again in {wait_s:g} s", wait_s)
        if status >= 500:
            TOKENS.labels(self.provider, "unavailable").inc()
            log.warning("hosted diffusion provider failed", status=status, body=snippet, **who)
            return Unavailable(f"the hosted diffusion provider ({self.provider}) failed (HTTP {status}); "
                               "try again later; the plain render is recorded instead")
        TOKENS.labels(self.provider, "refused").inc()
        log.warning("hosted diffusion provider refused to mint a token", status=status, body=snippet, **who)
        if status in (401, 403):
            return BadGateway(f"the hosted diffusion provider ({self.provider}) refused the gateway's API key "
                              f"(HTTP {status}); the operator must check SD_GATEWAY_MIRAGE_API_KEY")
        return BadGateway(f"the hosted diffusion provider ({self.provider}) refused to mint a client token "
                          f"(HTTP {status})")

    def _token_of(self, resp: httpx.Response, key: str) -> HostedToken | None:
        try:
            body = resp.json()
            token, expires = body["apiKey"], body["expiresAt"]
            expires_at = datetime.fromisoformat(expires)
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(token, str) or not 0 < len(token) <= _MAX_TOKEN_CHARS or not token.isprintable():
            return None
        if token == key:  # a provider answering with the server's own key must not pass it to a browser
            return None
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            return None
        return HostedToken(self.provider, self.model, self.realtime_url, token, expires_at)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s, follow_redirects=False)
        return self._http

    async def close(self) -> None:
        """Closes the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _retry_after(value: str | None) -> float:
    try:
        return min(3600.0, max(1.0, float(value))) if value else PROVIDER_RETRY_AFTER_S
    except ValueError:
        return PROVIDER_RETRY_AFTER_S
