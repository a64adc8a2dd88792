"""What every HTTP response of the gateway carries and every request body must respect.

ASGI middleware (no FastAPI types): a cap on JSON request bodies, counted as they stream in, and the
security headers; plus the API reference page, rendered from the OpenAPI document with no script.
"""

from __future__ import annotations

import html
import json
from typing import Any

_BODY_METHODS = {"POST", "PUT", "PATCH"}


def error_json(status: int, code: str, message: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An error in the API's envelope, as (status, headers, body) for a raw ASGI response."""
    body = json.dumps({"error": {"code": code, "message": message, "problems": []}}).encode()
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body


class BodyLimitMiddleware:
    """Refuses a JSON request body over ``max_bytes`` with 413, reading at most ``max_bytes + 1`` of it.

    A declared Content-Length over the cap is refused before a byte is read; a chunked body is counted
    as it arrives and buffered (it is small by then), then handed to the app. Paths under one of
    ``exempt_prefixes`` (the embedded store's uploads, which stream to disk) are passed through.
    """

    def __init__(self, app: Any, max_bytes: int, prefix: str = "/v1/", exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.exempt = exempt_prefixes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] not in _BODY_METHODS or not path.startswith(self.prefix)
                or path.startswith(self.exempt)):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, f"the request body declares {int(declared)} bytes")
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(send, "the request body is longer")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, what: str) -> None:
        status, headers, body = error_json(
            413, "too_large", f"{what} than the {self.max_bytes} bytes a request body of this API may have")
        headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def content_security_policy(connect_origins: list[str]) -> str:
    """The game's policy: its own scripts; WebGL; recordings as blobs; calls to this origin (and the store)."""
    connect = " ".join(["'self'", *connect_origins])
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # React style attributes
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "worker-src 'self' blob:",
        "font-src 'self' data:",
        f"connect-src {connect}",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class SecurityHeadersMiddleware:
    """Adds nosniff, the content security policy and the referrer policy to every response."""

    def __init__(self, app: Any, csp: str) -> None:
        self.app = app
        self.headers = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                        (b"content-security-policy", csp.encode()), (b"x-frame-options", b"DENY")]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message = dict(message, headers=[*message.get("headers", []),
                                                 *(h for h in self.headers if h[0] not in names)])
            await send(message)

        await self.app(scope, receive, with_headers)


def api_reference_html(openapi: dict) -> str:
    """A plain HTML reference of the OpenAPI document: every operation, its body and its responses."""
    esc = html.escape
    rows = []
    for path, operations in openapi.get("paths", {}).items():
        for method, op in operations.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = body.get("$ref", "").rsplit("/", 1)[-1]
            responses = "".join(
                f"<li><code>{esc(status)}</code> {esc(r.get('description', ''))}</li>"
                for status, r in sorted(op.get("responses", {}).items()))
            params = ", ".join(f"<code>{esc(p['name'])}</code> ({esc(p['in'])})" for p in op.get("parameters", []))
            rows.append(
                f"<section><h2><code>{esc(method.upper())} {esc(path)}</code></h2><p>{esc(op.get('summary', ''))}</p>"
                + (f"<p>Parameters: {params}</p>" if params else "")
                + (f"<p>Body: <code>{esc(body_name)}</code></p>" if body_name else "")
                + f"<ul>{responses}</ul></section>")
    schemas = "".join(f"<h3 id=\"{esc(name)}\"><code>{esc(name)}</code></h3><pre>{esc(json.dumps(s, indent=1))}</pre>"
                      for name, s in openapi.get("components", {}).get("schemas", {}).items())
    title = esc(openapi.get("info", {}).get("title", "API"))
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>The machine-readable document is <a href=\"/openapi.json\">/openapi.json</a>. "
            f"Every error is <code>ErrorOut</code>.</p>{''.join(rows)}<h2>Schemas</h2>{schemas}</body></html>")
