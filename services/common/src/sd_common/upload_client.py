"""A client of the gateway's HTTP API that uploads a recorded session the way the game does."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MANIFEST = "manifest.json"
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


class GatewayHttpError(Exception):
    """The gateway answered with an error; `body` is its JSON error object."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        msg = body.get("error", {}).get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {msg}")


@dataclass
class UploadResult:
    session_id: str
    accepted: bool
    problems: list[dict]
    session: dict


class GatewayClient:
    """Calls the gateway as a browser would: device token, sessions, presigned uploads, completion."""

    def __init__(self, base_url: str, token: str | None = None, *, retries: int = 4,
                 http: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._retries = retries
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))

    async def close(self) -> None:
        """Closes the HTTP connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        resp = await self._request(method, self.base_url + path, headers=headers, **kw)
        body = resp.json() if resp.content else None
        if resp.status_code >= 400:
            raise GatewayHttpError(resp.status_code, body)
        return body

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One HTTP request, retried with backoff on connection failures and retryable statuses."""
        for attempt in range(self._retries + 1):
            try:
                resp = await self._http.request(method, url, **kw)
            except httpx.TransportError:
                if attempt == self._retries:
                    raise
            else:
                if resp.status_code not in _RETRYABLE or attempt == self._retries:
                    return resp
                retry_after = resp.headers.get("Retry-After")
                if retry_after and retry_after.isdigit() and int(retry_after) > 30:
                    return resp
            await asyncio.sleep(min(8.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    async def get(self, path: str) -> Any:
        """GET an API path (e.g. /v1/sessions) as the current player; returns the JSON answer."""
        return await self._call("GET", path)

    async def create_player(self, client_build: str = "sdctl") -> str:
        """Creates an anonymous player, keeps its token, returns the player id."""
        body = await self._call("POST", "/v1/players", json={"client_build": client_build})
        self.token = body["device_token"]
        return body["player_id"]

    async def create_session(self, client_build: str = "", city: str = "", route_id: str = "") -> dict:
        """Opens a session."""
        return await self._call("POST", "/v1/sessions",
                                json={"client_build": client_build, "city": city, "route_id": route_id})

    async def upload_urls(self, session_id: str, files: list[dict]) -> list[dict]:
        """Presigned targets for files [{path, size_bytes, sha256, content_type}]."""
        body = await self._call("POST", f"/v1/sessions/{session_id}/upload-urls", json={"files": files})
        return body["targets"]

    async def put_file(self, target: dict, data: bytes) -> list[dict]:
        """Uploads one file to its target; for a multipart target returns the parts' ETags to complete."""
        if not target["multipart_upload_id"]:
            resp = await self._request("PUT", target["url"], content=data, headers=target["headers"])
            if resp.status_code >= 300:
                raise GatewayHttpError(resp.status_code, _json_or_text(resp))
            return []
        etags = []
        for part in target["parts"]:
            chunk = data[part["offset_bytes"]: part["offset_bytes"] + part["size_bytes"]]
            resp = await self._request("PUT", part["url"], content=chunk)
            if resp.status_code >= 300:
                raise GatewayHttpError(resp.status_code, _json_or_text(resp))
            etags.append({"part_number": part["part_number"], "etag": resp.headers["ETag"]})
        return etags

    async def complete_multipart(self, session_id: str, target: dict, etags: list[dict]) -> dict:
        """Assembles a file uploaded in parts."""
        return await self._call("POST", f"/v1/sessions/{session_id}/multipart/complete",
                                json={"path": target["path"], "multipart_upload_id": target["multipart_upload_id"],
                                      "parts": etags})

    async def complete_session(self, session_id: str) -> dict:
        """Asks the gateway to check the uploaded files against the manifest."""
        return await self._call("POST", f"/v1/sessions/{session_id}/complete")

    async def upload_session(self, session_dir: Path, *, client_build: str = "sdctl",
                             adopt_ids: bool = True) -> UploadResult:
        """Uploads a recorded session directory: every file the manifest lists, then the manifest.

        With adopt_ids, the new session's id and the uploading player are written into the uploaded
        copy of the manifest (the manifest is not hashed by itself, so the files stay untouched).
        """
        if self.token is None:
            await self.create_player(client_build)
        manifest = json.loads((session_dir / MANIFEST).read_bytes())
        city = manifest.get("city", {}).get("name", "") if isinstance(manifest.get("city"), dict) else ""
        route = manifest.get("route", {}).get("route_id", "") if isinstance(manifest.get("route"), dict) else ""
        session = await self.create_session(client_build, str(city)[:128], str(route)[:128])
        sid = session["session_id"]
        if adopt_ids:
            manifest["session_id"] = sid
            manifest["player_id"] = session["player_id"]
        manifest_bytes = json.dumps(manifest, indent=1).encode()
        files = [{"path": f["path"], "size_bytes": f["size_bytes"], "sha256": f["sha256"],
                  "content_type": f.get("content_type", "application/octet-stream")}
                 for f in manifest.get("files", []) if (session_dir / f["path"]).is_file()]
        files.append({"path": MANIFEST, "size_bytes": len(manifest_bytes), "content_type": "application/json"})
        targets = {t["path"]: t for t in await self.upload_urls(sid, files)}
        for f in files[:-1]:
            target = targets[f["path"]]
            etags = await self.put_file(target, (session_dir / f["path"]).read_bytes())
            if etags:
                await self.complete_multipart(sid, target, etags)
        await self.put_file(targets[MANIFEST], manifest_bytes)
        result = await self.complete_session(sid)
        return UploadResult(sid, result["accepted"], result["problems"], result["session"])


def _json_or_text(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text
