"""Locust players for the load test (bench/load_bench.py starts it; docs/capacity.md reads its numbers).

One Locust user is one player of the game, calling the gateway's HTTP API in the game's order
(web/src/game/controller.ts, web/src/record/upload.ts): an anonymous player once, then for every
drive `GET /v1/players/me`, `POST /v1/sessions`, the drive itself (a wait of the drive's length),
`POST .../upload-urls`, a PUT per file (multipart for files at or above the gateway's threshold),
the manifest last, `POST .../complete`, `GET /v1/players/me`, and the outcome polled on the game's
schedule (2 s, growing by half up to 10 s, for at most 5 minutes) while the next drive goes on.

The drives are real session folders written by the synthetic generator (bench/load_bench.py makes a
pool of them); each upload carries the new session's id and player in its manifest, as the game's
does. Settings come from the environment, set by bench/load_bench.py:

- ``SD_LOAD_POOL``: a folder of session folders (each with its manifest.json), of which the first
  ``SD_LOAD_POOL_SIZE`` (in name order) are driven;
- ``SD_LOAD_EVENTS``: a JSON-lines file this process appends one record per completed upload to,
  and one per final outcome seen;
- ``SD_LOAD_PLAY_S``: seconds a drive lasts for the player (default: the drive's own duration).
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser

MANIFEST = "manifest.json"
OUTCOME_FIRST_S, OUTCOME_MAX_S, OUTCOME_LIMIT_S = 2.0, 10.0, 300.0  # web/src/record/outcome.ts


class Drive:
    """One pooled session folder, read once: its manifest and the bytes of every file it lists."""

    def __init__(self, folder: Path) -> None:
        self.name = folder.name
        self.manifest = json.loads((folder / MANIFEST).read_bytes())
        self.files = {f["path"]: (folder / f["path"]).read_bytes() for f in self.manifest["files"]}
        self.duration_s = float(self.manifest.get("recording", {}).get("duration_s")
                                or self.manifest.get("duration_s") or 0.0)
        city = self.manifest.get("city")
        route = self.manifest.get("route")
        self.city = str(city.get("name", "")) if isinstance(city, dict) else ""
        self.route_id = str(route.get("route_id", "")) if isinstance(route, dict) else ""

    def manifest_for(self, session_id: str, player_id: str) -> bytes:
        """The manifest as this upload sends it: the new session's id and its player written in."""
        return json.dumps({**self.manifest, "session_id": session_id, "player_id": player_id}, indent=1).encode()


class Pool:
    """The drives, handed out in turn, so each is uploaded once before any is uploaded again."""

    def __init__(self, root: Path, size: int) -> None:
        self.drives = [Drive(p) for p in sorted(root.iterdir()) if (p / MANIFEST).is_file()][:size]
        if not self.drives:
            raise SystemExit(f"no session folders in {root}")
        self._turn = itertools.cycle(self.drives)

    def next(self) -> Drive:
        return next(self._turn)


class EventLog:
    """Appends one JSON object a line; the load bench reads the file once Locust has exited."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def write(self, **record: object) -> None:
        with self._lock:
            self._f.write(json.dumps(record, separators=(",", ":")) + "\n")


POOL: Pool | None = None
LOG: EventLog | None = None


@events.init.add_listener
def _setup(environment, **_kw) -> None:
    global POOL, LOG
    POOL = Pool(Path(os.environ["SD_LOAD_POOL"]), int(os.environ.get("SD_LOAD_POOL_SIZE", "1000000")))
    LOG = EventLog(Path(os.environ["SD_LOAD_EVENTS"]))


def _play_s(drive: Drive) -> float:
    value = os.environ.get("SD_LOAD_PLAY_S", "")
    return float(value) if value else drive.duration_s


class Player(FastHttpUser):
    """A player driving one session after another, uploading each as the game does."""

    # The drive is the wait: a player's next session starts as soon as the last upload is done.
    def wait_time(self) -> float:
        return 0.0

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _json(self, method: str, path: str, name: str, body: object | None = None, ok: int = 200) -> dict:
        """One API call; a wrong status fails the request in Locust's stats and stops this drive."""
        with self.client.request(method, path, json=body, headers=self._auth() if self.token else {},
                                 name=name, catch_response=True) as resp:
            if resp.status_code != ok:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                raise _DriveFailed(name)
            return resp.json() if resp.text else {}

    def _put(self, url: str, data: bytes, headers: dict[str, str], name: str) -> str:
        with self.client.request("PUT", url, data=data, headers=headers, name=name, catch_response=True) as resp:
            if resp.status_code >= 300:
                resp.failure(f"{resp.status_code}: {resp.text[:200]}")
                raise _DriveFailed(name)
            return resp.headers.get("ETag", "")

    def on_start(self) -> None:
        self.token = ""
        try:
            made = self._json("POST", "/v1/players", "POST /v1/players", {"client_build": "load"}, ok=201)
        except _DriveFailed:
            raise StopUser()
        self.token, self.player_id = made["device_token"], made["player_id"]

    @task
    def drive(self) -> None:
        drive = POOL.next()
        try:
            self._json("GET", "/v1/players/me", "GET /v1/players/me")
            session = self._json("POST", "/v1/sessions", "POST /v1/sessions",
                                 {"client_build": "load", "city": drive.city, "route_id": drive.route_id}, ok=201)
            sid = session["session_id"]
            gevent.sleep(_play_s(drive))
            manifest = drive.manifest_for(sid, self.player_id)
            files = [{"path": f["path"], "size_bytes": f["size_bytes"], "sha256": f["sha256"],
                      "content_type": f.get("content_type", "application/octet-stream")}
                     for f in drive.manifest["files"]]
            files.append({"path": MANIFEST, "size_bytes": len(manifest), "content_type": "application/json"})
            targets = {t["path"]: t for t in self._json(
                "POST", f"/v1/sessions/{sid}/upload-urls", "POST /v1/sessions/{id}/upload-urls",
                {"files": files})["targets"]}
            for f in files:
                data = manifest if f["path"] == MANIFEST else drive.files[f["path"]]
                self._upload(sid, targets[f["path"]], data)
            done = self._json("POST", f"/v1/sessions/{sid}/complete", "POST /v1/sessions/{id}/complete")
            completed_at = time.time()
            LOG.write(kind="completed", session_id=sid, player_id=self.player_id, drive=drive.name,
                      accepted=bool(done.get("accepted")), at=completed_at, duration_s=drive.duration_s,
                      bytes=sum(f["size_bytes"] for f in files))
            self._json("GET", "/v1/players/me", "GET /v1/players/me")
            if done.get("accepted"):
                gevent.spawn(self._follow_outcome, sid, completed_at)
        except _DriveFailed:
            return

    def _upload(self, sid: str, target: dict, data: bytes) -> None:
        if not target.get("multipart_upload_id"):
            self._put(target["url"], data, target.get("headers") or {}, "PUT upload URL")
            return
        etags = []
        for part in target["parts"]:
            chunk = data[part["offset_bytes"]: part["offset_bytes"] + part["size_bytes"]]
            etags.append({"part_number": part["part_number"],
                          "etag": self._put(part["url"], chunk, {}, "PUT upload part URL")})
        self._json("POST", f"/v1/sessions/{sid}/multipart/complete", "POST /v1/sessions/{id}/multipart/complete",
                   {"path": target["path"], "multipart_upload_id": target["multipart_upload_id"], "parts": etags})

    def _follow_outcome(self, sid: str, completed_at: float) -> None:
        """The game's outcome poll: until final, first after 2 s, each wait half again as long, at most 10 s."""
        interval, polls = OUTCOME_FIRST_S, 0
        while time.time() - completed_at + interval <= OUTCOME_LIMIT_S:
            gevent.sleep(interval)
            interval = min(OUTCOME_MAX_S, interval * 1.5)
            polls += 1
            try:
                outcome = self._json("GET", f"/v1/sessions/{sid}/outcome", "GET /v1/sessions/{id}/outcome")
            except _DriveFailed:
                continue
            if outcome.get("final"):
                LOG.write(kind="outcome", session_id=sid, state=outcome.get("state"), at=time.time(),
                          polls=polls, accepted_s=outcome.get("accepted_s"))
                return


class _DriveFailed(Exception):
    """A call of this drive failed (already counted in Locust's stats); the player starts the next one."""
