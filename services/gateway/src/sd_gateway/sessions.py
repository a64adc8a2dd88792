"""Players, sessions and uploads: the gateway's domain logic, shared by its HTTP and gRPC APIs."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter

from sd_common.objectstore import ObjectSealed, ObjectStore, ObjectStoreError, Snapshot
from sd_common.problems import Problem, ProblemError
from sd_common.session_format.spec import file_name_problem, parse_manifest
from sd_gateway.database import (STATE_OPEN, STATE_REJECTED, STATE_UPLOADED, GatewayDatabase,
                                 PlayerTotals, SessionRecord, UploadBudgetExceeded, merge_reservations)
from sd_gateway.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                               RateLimited, TooLarge, Unauthenticated, Unavailable)
from sd_gateway.ratelimit import RateLimiter, make_limiter
from sd_gateway.settings import GatewaySettings
from sd_gateway.tokens import DeviceTokens, bearer_token

log = structlog.get_logger()

MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1024 * 1024
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEXT_FIELD = re.compile(r"^[\x20-\x7e]{0,128}$")
_HASH_CONCURRENCY = 4

UPLOAD_TARGETS = Counter("sd_gateway_upload_targets_total", "Presigned upload targets issued", ["kind"])
COMPLETIONS = Counter("sd_gateway_session_completions_total", "Session completion checks", ["outcome"])
PROBLEMS = Counter("sd_gateway_completion_problems_total", "Problems found at completion, by code", ["code"])


@dataclass(frozen=True)
class FileSpec:
    """A file the client is about to upload."""

    path: str
    size_bytes: int
    content_type: str = "application/octet-stream"
    sha256: str = ""


@dataclass(frozen=True)
class UploadPartView:
    part_number: int
    url: str
    offset_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class UploadTargetView:
    """Where and how to upload one file: a single PUT, or numbered parts then a completion call."""

    path: str
    method: str
    url: str
    headers: dict[str, str]
    expires_at: datetime
    multipart_upload_id: str = ""
    parts: list[UploadPartView] = field(default_factory=list)


@dataclass(frozen=True)
class CompletionResult:
    session: SessionRecord
    accepted: bool
    problems: list[Problem]


def new_session_id(now: datetime | None = None) -> str:
    """Sortable by creation time, unguessable, and a valid object-store key segment."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(8)


def _check_text(name: str, value: str) -> str:
    if not _TEXT_FIELD.match(value):
        raise InvalidArgument(f"{name} must be at most 128 printable ASCII characters")
    return value


def _well_formed(session_id: str) -> bool:
    return bool(session_id) and _SESSION_ID.match(session_id) is not None


class SessionService:
    """What the gateway does for a player; front ends only translate requests and errors."""

    def __init__(self, settings: GatewaySettings, db: GatewayDatabase, store: ObjectStore,
                 tokens: DeviceTokens, *, url_expiry_s: int, multipart_threshold_bytes: int,
                 multipart_part_bytes: int, max_object_bytes: int) -> None:
        self._settings = settings
        self._db = db
        self._store = store
        self._tokens = tokens
        self._url_expiry_s = url_expiry_s
        self._multipart_threshold = multipart_threshold_bytes
        self._part_bytes = multipart_part_bytes
        self._max_object_bytes = max_object_bytes
        store, engine = settings.rate_limit_store, db.engine
        self._players_limit = make_limiter(store, engine, "players_per_ip", settings.players_per_minute_per_ip,
                                           settings.players_burst_per_ip, pg=db.async_pg)
        self._sessions_limit = make_limiter(store, engine, "sessions", settings.sessions_per_minute,
                                            settings.sessions_burst, pg=db.async_pg)
        self._uploads_limit = make_limiter(store, engine, "upload_calls", settings.upload_calls_per_minute,
                                           settings.upload_calls_burst, pg=db.async_pg)
        # One completion at a time per session in this replica: a rejected check thaws the prefix,
        # which must never undo the freeze of a concurrent check that accepts.
        self._completing: dict[str, tuple[asyncio.Lock, int]] = {}  # session -> (lock, callers holding or waiting)

    # identity ------------------------------------------------------------------------------------

    async def create_player(self, client_build: str, client_ip: str) -> tuple[str, str]:
        """A new anonymous player and its device token."""
        await self._limit(self._players_limit, client_ip, "new player identities from this address")
        _check_text("client_build", client_build)
        player_id = self._tokens.new_player_id()
        await asyncio.to_thread(self._db.add_player, player_id, client_build)
        log.info("player created", player_id=player_id, client_build=client_build)
        return player_id, self._tokens.issue(player_id)

    async def authenticate(self, authorization: str | None) -> str:
        """The player id behind an Authorization header value, if that player still exists and is enabled."""
        player_id = self._tokens.verify(bearer_token(authorization))
        self._check_player(await self._db.player_status_async(player_id))
        return player_id

    @staticmethod
    def _check_player(status: str | None) -> None:
        if status is None:
            raise Unauthenticated("device token names a player that no longer exists; create a new player identity")
        if status == "disabled":
            raise PermissionDenied("this player identity is disabled")

    async def player_totals(self, player_id: str) -> PlayerTotals:
        """The player's contribution totals."""
        return await asyncio.to_thread(self._db.player_totals, player_id)

    # sessions ------------------------------------------------------------------------------------

    async def create_session(self, player_id: str, client_build: str, city: str, route_id: str) -> SessionRecord:
        """Opens a session for the player; its files go under raw/<session_id>/."""
        await self._limit(self._sessions_limit, player_id, "new sessions")
        for name, value in (("client_build", client_build), ("city", city), ("route_id", route_id)):
            _check_text(name, value)
        session_id = new_session_id()
        rec = await asyncio.to_thread(self._db.add_session, session_id, player_id, f"raw/{session_id}",
                                      client_build, city, route_id)
        log.info("session created", session_id=session_id, player_id=player_id)
        return rec

    async def get_session(self, player_id: str, session_id: str) -> SessionRecord:
        """The player's own session."""
        return await self._owned(player_id, session_id)

    async def list_sessions(self, player_id: str, page_size: int, page_token: str) -> tuple[list[SessionRecord], str]:
        """The player's sessions, newest first; returns the page and the next page token."""
        size = min(max(page_size or 50, 1), 200)
        rows = await asyncio.to_thread(self._db.list_sessions, player_id, size + 1, page_token or None)
        more = len(rows) > size
        rows = rows[:size]
        return rows, (rows[-1].session_id if more else "")

    # uploads -------------------------------------------------------------------------------------

    async def create_upload_urls(self, authorization: str | None, session_id: str,
                                 files: list[FileSpec]) -> list[UploadTargetView]:
        """Presigned URLs for each file: one PUT below the multipart threshold, numbered parts above.

        The caller's device token is checked here, and the player and the session are read from the
        database in one statement (the hot path: no state is kept between calls, so every replica
        answers from the database as it is now). The checks answer in the same order as
        ``authenticate`` followed by ``_owned``.
        """
        player_id = self._tokens.verify(bearer_token(authorization))
        found = await self._db.player_session_async(player_id, session_id if _well_formed(session_id) else "")
        self._check_player(found.player_status)
        await self._limit(self._uploads_limit, player_id, "upload calls")
        rec = self._check_owned(player_id, session_id, found.session)
        self._require_writable(rec)
        self._check_files(files)
        await self._reserve(rec, files, before=found.uploads_json)
        targets = []
        for f in files:
            key = f"{rec.key_prefix}/{f.path}"
            try:
                if f.size_bytes >= self._multipart_threshold:
                    mp = await self._store.create_multipart(key, size_bytes=f.size_bytes, part_bytes=self._part_bytes,
                                                            content_type=f.content_type, expires_s=self._url_expiry_s)
                    targets.append(UploadTargetView(
                        path=f.path, method="PUT", url="", headers={}, expires_at=mp.expires_at,
                        multipart_upload_id=mp.upload_id,
                        parts=[UploadPartView(p.part_number, p.url, p.offset_bytes, p.size_bytes) for p in mp.parts]))
                else:
                    req = await self._store.presign_put(key, size_bytes=f.size_bytes, content_type=f.content_type,
                                                        expires_s=self._url_expiry_s)
                    targets.append(UploadTargetView(path=f.path, method=req.method, url=req.url,
                                                    headers=dict(req.headers), expires_at=req.expires_at))
            except ObjectSealed as e:
                raise FailedPrecondition(f"{f.path}: {e}") from None
            except ObjectStoreError as e:
                raise InvalidArgument(f"{f.path}: {e}") from None
        for t in targets:
            UPLOAD_TARGETS.labels("multipart" if t.multipart_upload_id else "single").inc()
        log.info("upload urls issued", session_id=session_id, files=len(files))
        return targets

    async def complete_multipart(self, player_id: str, session_id: str, path: str, upload_id: str,
                                 parts: list[tuple[int, str]]) -> int:
        """Assembles an uploaded multipart file; returns its size."""
        await self._limit(self._uploads_limit, player_id, "upload calls")
        rec = await self._owned(player_id, session_id)
        self._require_writable(rec)
        self._check_name(path)
        if not parts:
            raise InvalidArgument("parts must list every uploaded part with its ETag")
        try:
            info = await self._store.complete_multipart(f"{rec.key_prefix}/{path}", upload_id, parts)
        except ObjectSealed as e:
            raise FailedPrecondition(f"{path}: {e}") from None
        except ObjectStoreError as e:
            raise InvalidArgument(f"{path}: {e}") from None
        return info.size_bytes

    async def complete_session(self, player_id: str, session_id: str) -> CompletionResult:
        """Checks the manifest and every file it lists; accepts the session or says precisely why not.

        The session's prefix is frozen before the check and sealed when it is accepted, so the bytes
        that were checked are the bytes every later reader gets; a rejected session is thawed and may
        be uploaded again.
        """
        await self._limit(self._uploads_limit, player_id, "upload calls")
        await self._owned(player_id, session_id)  # 400/404/403 before any lock is taken
        lock, users = self._completing.get(session_id, (asyncio.Lock(), 0))
        self._completing[session_id] = (lock, users + 1)
        try:
            async with lock:
                return await self._complete(player_id, session_id)
        finally:
            lock, users = self._completing[session_id]
            if users == 1:
                del self._completing[session_id]
            else:
                self._completing[session_id] = (lock, users - 1)

    async def _complete(self, player_id: str, session_id: str) -> CompletionResult:
        rec = await self._owned(player_id, session_id)
        if rec.state == STATE_UPLOADED:
            return CompletionResult(rec, True, [])  # completing twice changes nothing
        self._require_writable(rec)
        try:
            snapshot = await self._store.freeze(rec.key_prefix + "/")
        except ObjectStoreError as e:
            raise Unavailable(f"the object store cannot hold session {session_id} unchanged: {e}") from None
        sealed = False
        try:
            problems, duration_s = await self._check_uploaded(rec, snapshot)
            if not problems:
                try:
                    await self._store.seal(snapshot)
                except ObjectStoreError as e:
                    raise Unavailable(f"the object store could not seal session {session_id}: {e}") from None
                sealed = True
        finally:
            if not sealed:
                await self._store.thaw(snapshot)
        state = STATE_REJECTED if problems else STATE_UPLOADED
        rec = await asyncio.to_thread(self._db.set_state, session_id, state, problems,
                                      duration_s if not problems else None)
        COMPLETIONS.labels("rejected" if problems else "accepted").inc()
        for p in problems:
            PROBLEMS.labels(p.code).inc()
        log.info("session completed", session_id=session_id, accepted=not problems,
                 problems=[p.code for p in problems])
        return CompletionResult(rec, not problems, problems)

    async def _check_uploaded(self, rec: SessionRecord, snapshot: Snapshot) -> tuple[list[Problem], float]:
        prefix = snapshot.prefix
        present = {info.key[len(prefix):]: info for info in snapshot.objects}
        if MANIFEST not in present:
            return [Problem("manifest_missing", MANIFEST,
                            "manifest.json was not uploaded; upload it last, after every file it lists")], 0.0
        try:
            data = await self._store.get_bytes(prefix + MANIFEST, max_bytes=MANIFEST_MAX_BYTES,
                                               version_id=present[MANIFEST].version_id)
        except ObjectStoreError as e:
            code = "manifest_missing" if getattr(e, "http_status", 0) == 404 else "manifest_unreadable"
            msg = ("manifest.json was not uploaded; upload it last, after every file it lists"
                   if code == "manifest_missing" else f"manifest.json could not be read: {e}")
            return [Problem(code, MANIFEST, msg)], 0.0
        try:
            manifest = parse_manifest(data)
        except ProblemError as e:
            return list(e.problems), 0.0
        problems: list[Problem] = []
        if manifest.session_id != rec.session_id:
            problems.append(Problem("manifest_session_mismatch", f"{MANIFEST}:session_id",
                                    f"manifest names session {manifest.session_id!r}, but it was uploaded "
                                    f"to session {rec.session_id!r}"))
        if manifest.player_id != rec.player_id:
            problems.append(Problem("manifest_player_mismatch", f"{MANIFEST}:player_id",
                                    "manifest names another player than the one completing the session"))
        listed = {f.path for f in manifest.files}
        sem = asyncio.Semaphore(_HASH_CONCURRENCY)

        async def check(f) -> list[Problem]:
            info = present.get(f.path)
            if info is None:
                return [Problem("file_missing", f.path, f"{f.path} is listed in the manifest but was not uploaded")]
            if info.size_bytes != f.size_bytes:
                return [Problem("file_size_mismatch", f.path,
                                f"{f.path} has {info.size_bytes} bytes; the manifest says {f.size_bytes}")]
            async with sem:
                digest = await self._store.sha256(prefix + f.path, version_id=info.version_id)
            if digest != f.sha256.lower():
                return [Problem("file_sha256_mismatch", f.path,
                                f"{f.path} has sha256 {digest}; the manifest says {f.sha256}")]
            return []

        for found in await asyncio.gather(*(check(f) for f in manifest.files)):
            problems.extend(found)
        for extra in sorted(set(present) - listed - {MANIFEST}):
            problems.append(Problem("file_unlisted", extra, f"{extra} was uploaded but the manifest does not list it"))
        return problems, float(manifest.duration_s)

    # helpers -------------------------------------------------------------------------------------

    async def _owned(self, player_id: str, session_id: str) -> SessionRecord:
        rec = await self._db.get_session_async(session_id) if _well_formed(session_id) else None
        return self._check_owned(player_id, session_id, rec)

    @staticmethod
    def _check_owned(player_id: str, session_id: str, rec: SessionRecord | None) -> SessionRecord:
        """``rec`` as read for ``session_id`` (not read for a malformed id), if the player owns it."""
        if not _well_formed(session_id):
            raise InvalidArgument("session_id is malformed")
        if rec is None:
            raise NotFound(f"no session {session_id}")
        if rec.player_id != player_id:
            raise PermissionDenied(f"session {session_id} belongs to another player")
        return rec

    @staticmethod
    def _require_writable(rec: SessionRecord) -> None:
        if rec.state not in (STATE_OPEN, STATE_REJECTED):
            raise FailedPrecondition(f"session {rec.session_id} is already complete; start a new session")

    def _check_name(self, path: str) -> None:
        reason = file_name_problem(path)
        if reason is not None:
            raise InvalidArgument(f"file name {path!r} is not allowed: it {reason}")

    async def _reserve(self, rec: SessionRecord, files: list[FileSpec], before: str) -> None:
        """Counts the files against the session's limits across all its upload-urls calls.

        ``before``: the session's reservations as read with it. Files already reserved at their sizes
        (a renewed URL) need no write, and that check runs without a thread; a write goes to one.
        """
        asked = {f.path: f.size_bytes for f in files}
        limits = {"max_files": self._settings.max_files_per_session, "max_bytes": self._settings.max_session_bytes}
        try:
            if merge_reservations(before, asked, **limits) is not None:
                await asyncio.to_thread(self._db.reserve_uploads, rec.session_id, asked, before=before, **limits)
        except UploadBudgetExceeded as e:
            if e.what == "files":
                raise InvalidArgument(f"a session holds at most {e.limit} files; with these it would have "
                                      f"{e.total}") from None
            raise TooLarge(f"files total {e.total} bytes with those asked for before; a session may upload "
                           f"at most {e.limit}") from None

    def _check_files(self, files: list[FileSpec]) -> None:
        if not files:
            raise InvalidArgument("files must list at least one file")
        if len(files) > self._settings.max_files_per_session:
            raise InvalidArgument(f"a session holds at most {self._settings.max_files_per_session} files")
        seen: set[str] = set()
        total = 0
        for f in files:
            self._check_name(f.path)
            if f.path in seen:
                raise InvalidArgument(f"file {f.path} is listed twice")
            seen.add(f.path)
            if f.size_bytes <= 0:
                raise InvalidArgument(f"{f.path}: size_bytes must be positive")
            if f.size_bytes > self._max_object_bytes:
                raise TooLarge(f"{f.path}: {f.size_bytes} bytes is over the {self._max_object_bytes}-byte limit")
            if f.sha256 and not _SHA256.match(f.sha256):
                raise InvalidArgument(f"{f.path}: sha256 must be 64 lowercase hex digits")
            if not _TEXT_FIELD.match(f.content_type) or not f.content_type:
                raise InvalidArgument(f"{f.path}: content_type must be a MIME type")
            total += f.size_bytes
        if total > self._settings.max_session_bytes:
            raise TooLarge(f"files total {total} bytes; a session may upload at most "
                           f"{self._settings.max_session_bytes}")

    @staticmethod
    async def _limit(limiter: RateLimiter, key: str, what: str) -> None:
        wait_s = await limiter.acquire(key)
        if wait_s is not None:
            raise RateLimited(f"too many {what}; retry in {wait_s:.0f} s", retry_after_s=wait_s)
