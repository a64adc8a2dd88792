"""The embedded object store: files under one root, uploads through the gateway with signed URLs.

It mirrors S3 closely enough that the browser's upload code cannot tell the difference: the gateway
hands out presigned PUT URLs (single or multipart), the client PUTs the bytes and keeps each ETag,
and every created object produces an S3-shaped event on a queue.

Layout under ``root`` (internal names start with ``.``, which no key segment can)::

    <key>                          the objects, one file per key
    .tmp/                          bodies being received; renamed into place once complete and fsynced
    .multipart/<upload id>/        plan.json and one file per received part
    .meta/<xx>/<sha256 of key>     the object's ETag, valid while the file's inode, size and mtime match
    .seals/<sha256 of prefix>      a sealed prefix and the objects it held: writes under it are refused
    .events/                       the LocalEventQueue (made by the factory)
    .signing-key                   the generated URL-signing key (made by the factory)

URL scheme (``X-SD-*`` parameters, HMAC-SHA256 over method, key, expiry, byte count, upload id and
part number — see ``_canonical``)::

    {public_base_url}/v1/store/{key}?X-SD-Expires=<unix s>&X-SD-Max-Bytes=<n>&X-SD-Signature=<hex>
    … plus uploadId=<id>&partNumber=<n> for the parts of a multipart upload

``X-SD-Max-Bytes`` is the declared size of the file (or part), and the body must be exactly that
long, as S3 requires of a URL with a signed Content-Length: more is refused with 413 the moment it
arrives, fewer with 400 — so a client that works here works against S3 unchanged.

ETags are S3's: ``"<md5 hex>"`` for an object written at once or for one part, and
``"<md5 of the parts' binary md5s>-<part count>"`` for a completed multipart upload.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat as stat_mode
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from sd_common.objectstore import events as s3_events
from sd_common.objectstore.base import (
    MAX_SINGLE_PUT_BYTES,
    MultipartUpload,
    ObjectInfo,
    ObjectStore,
    PresignedPart,
    PresignedRequest,
    Snapshot,
    check_object_size,
    check_part_list,
    plan_parts,
    quote_etag,
)
from sd_common.objectstore.durable import fsync_dir, write_atomically
from sd_common.objectstore.errors import (
    IncompleteBody,
    InvalidKey,
    MultipartInvalid,
    ObjectNotFound,
    ObjectSealed,
    ObjectTooLarge,
    SignatureInvalid,
    UrlExpired,
)
from sd_common.objectstore.keys import SEGMENT_RE, validate_key, validate_prefix
from sd_common.objectstore.queues import LocalEventQueue

EXPIRES_PARAM = "X-SD-Expires"
MAX_BYTES_PARAM = "X-SD-Max-Bytes"
SIGNATURE_PARAM = "X-SD-Signature"
MAX_EXPIRES_S = 7 * 24 * 3600  # S3's limit for presigned URLs
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")  # canonical: one spelling per number
_HEX_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_READ_CHUNK = 1 << 20
_STALE_TMP_S = 24 * 3600


class LocalObjectStore(ObjectStore):
    """Objects as files under ``root``; uploads arrive through the gateway's ``PUT /v1/store/{key}``."""

    def __init__(
        self,
        root: Path,
        signing_key: bytes,
        public_base_url: str,
        events: LocalEventQueue | None,
        max_object_bytes: int,
        *,
        bucket: str = "local",
        region: str = "local",
        clock: Callable[[], float] = time.time,
        notify_prefix: str = "",
    ) -> None:
        if len(signing_key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self.root = Path(root).resolve()
        self._signing_key = bytes(signing_key)
        self.public_base_url = public_base_url.rstrip("/")
        self.events = events
        # Like an S3 notification's prefix filter: only keys under it announce themselves.
        self.notify_prefix = notify_prefix
        self.max_object_bytes = max_object_bytes
        self.bucket = bucket
        self.region = region
        self._clock = clock
        self._tmp = self.root / ".tmp"
        self._multipart = self.root / ".multipart"
        self._meta = self.root / ".meta"
        self._seals = self.root / ".seals"
        self._root_str, self._seals_str = str(self.root), str(self._seals)
        # Prefixes frozen by this process (a completion being checked); sealed ones have a file too.
        self._frozen: set[str] = set()
        for folder in (self._tmp, self._multipart, self._meta, self._seals):
            folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()

    # ---- paths ---------------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """The file that holds ``key``; raises InvalidKey for a bad key or one resolving outside root."""
        validate_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidKey(f"object key {key!a} resolves outside the store")
        return path

    def _check_inside(self, key: str) -> None:
        """``path_for`` without building the path: raises InvalidKey for a bad key or one resolving outside root.

        A valid key has no ``..`` or empty segment, so only a symlink on the way can lead out: the
        existing segments are checked for one (a few lstat calls), and a key that meets one is
        resolved in full by ``path_for``.
        """
        validate_key(key)
        path = self._root_str
        for segment in key.split("/"):
            path = f"{path}/{segment}"
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing below exists, so nothing below is a symlink
            if stat_mode.S_ISLNK(mode):
                self.path_for(key)
                return

    def _check_no_conflict(self, key: str, path: Path) -> None:
        # A file system cannot hold both "a" and "a/b"; S3 can. Refuse before reading any body.
        if path.is_dir():
            raise InvalidKey(f"object key {key!a} is already a prefix of other objects in this store")
        for parent in path.parents:
            if parent == self.root:
                break
            if parent.exists() and not parent.is_dir():
                raise InvalidKey(
                    f"object key {key!a} cannot be stored: "
                    f"{parent.relative_to(self.root).as_posix()!a} is an object in this store"
                )

    # ---- signing -------------------------------------------------------------------------------

    def _canonical(self, method: str, key: str, expires: int, max_bytes: int, upload_id: str, part: str) -> bytes:
        return "\n".join(["SD-STORE-V1", method, key, str(expires), str(max_bytes), upload_id, part]).encode()

    def _sign(self, method: str, key: str, expires: int, max_bytes: int, upload_id: str = "", part: str = "") -> str:
        canonical = self._canonical(method, key, expires, max_bytes, upload_id, part)
        return hmac.new(self._signing_key, canonical, hashlib.sha256).hexdigest()

    def _url(self, key: str, expires: int, max_bytes: int, upload_id: str = "", part: str = "") -> str:
        # Every name and value is URL-safe as it is (digits, hex, the fixed names), so the query is
        # joined directly: what urlencode would write, without quoting each part.
        query = f"uploadId={upload_id}&partNumber={part}&" if upload_id else ""
        signature = self._sign("PUT", key, expires, max_bytes, upload_id, part)
        return (f"{self.public_base_url}/v1/store/{quote(key, safe='/')}?{query}{EXPIRES_PARAM}={expires}&"
                f"{MAX_BYTES_PARAM}={max_bytes}&{SIGNATURE_PARAM}={signature}")

    def _expiry(self, expires_s: int) -> int:
        if not 1 <= expires_s <= MAX_EXPIRES_S:
            raise ValueError(f"expires_s must be within [1, {MAX_EXPIRES_S}], got {expires_s}")
        return int(self._clock()) + expires_s

    # ---- presigning ----------------------------------------------------------------------------

    async def presign_put(
        self, key: str, *, size_bytes: int, content_type: str, expires_s: int
    ) -> PresignedRequest:
        self._check_inside(key)
        self._refuse_if_sealed(key)
        check_object_size(size_bytes, min(self.max_object_bytes, MAX_SINGLE_PUT_BYTES))
        expires = self._expiry(expires_s)
        return PresignedRequest(
            url=self._url(key, expires, size_bytes),
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size_bytes)},
            expires_at=datetime.fromtimestamp(expires, UTC),
        )

    async def create_multipart(
        self, key: str, *, size_bytes: int, part_bytes: int, content_type: str, expires_s: int
    ) -> MultipartUpload:
        self._check_inside(key)
        self._refuse_if_sealed(key)
        check_object_size(size_bytes, self.max_object_bytes)
        plan = plan_parts(size_bytes, part_bytes)
        expires = self._expiry(expires_s)
        upload_id = secrets.token_hex(16)
        folder = self._multipart / upload_id
        folder.mkdir()
        write_atomically(
            folder / "plan.json",
            json.dumps({"key": key, "size_bytes": size_bytes, "part_bytes": part_bytes,
                        "content_type": content_type, "expires": expires}).encode(),
            self._tmp,
        )
        parts = [
            PresignedPart(number, self._url(key, expires, size, upload_id, str(number)), offset, size)
            for number, offset, size in plan
        ]
        return MultipartUpload(key, upload_id, parts, datetime.fromtimestamp(expires, UTC))

    # ---- receiving uploads (the gateway's PUT /v1/store/{key}) --------------------------------

    async def receive_upload(
        self,
        *,
        key: str,
        query: Mapping[str, str],
        content_length: int | None,
        body: AsyncIterator[bytes],
    ) -> ObjectInfo:
        """Checks a presigned PUT and streams its body into place; returns the object (or part) with its ETag.

        For a part, the returned ObjectInfo has the object's key and the part's size and ETag.
        """
        validate_key(key)
        upload_id, part, max_bytes = self._verify(key, query)
        self._refuse_if_sealed(key)  # before a byte of the body is read
        if content_length is not None:
            if content_length < 0:
                raise IncompleteBody(f"Content-Length {content_length} is negative")
            if content_length > max_bytes:
                raise ObjectTooLarge(
                    f"the body's Content-Length is {content_length} bytes; this URL accepts at most {max_bytes}"
                )
            if content_length < max_bytes:
                raise IncompleteBody(
                    f"the body's Content-Length is {content_length} bytes; this URL was signed for exactly "
                    f"{max_bytes}, the size declared when it was issued"
                )
        if upload_id:
            folder = self._upload_folder(upload_id)
            plan = self._read_plan(key, upload_id)
            count = len(plan_parts(plan["size_bytes"], plan["part_bytes"]))
            if not 1 <= int(part) <= count:
                raise MultipartInvalid(f"upload {upload_id} has parts 1..{count}, not part {part}")
            destination = folder / str(int(part))
        else:
            destination = self.path_for(key)
            self._check_no_conflict(key, destination)

        tmp = self._tmp / secrets.token_hex(16)
        md5 = hashlib.md5()
        received = 0
        try:
            out = await asyncio.to_thread(open, tmp, "xb")
            try:
                async for chunk in body:
                    received += len(chunk)
                    if received > max_bytes:
                        raise ObjectTooLarge(
                            f"the body is longer than the {max_bytes} bytes this URL accepts; upload stopped"
                        )
                    out.write(chunk)  # into the page cache; the one slow step, fsync, runs in a thread
                    md5.update(chunk)
                if content_length is not None and received != content_length:
                    raise IncompleteBody(
                        f"the body had {received} bytes but its Content-Length announced {content_length}"
                    )
                if received != max_bytes:
                    raise IncompleteBody(
                        f"the body had {received} bytes; this URL was signed for exactly {max_bytes}"
                    )
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
            finally:
                out.close()
            etag = quote_etag(md5.hexdigest())
            if upload_id:
                self._refuse_if_sealed(key)
                try:
                    os.replace(tmp, destination)
                except FileNotFoundError:
                    raise MultipartInvalid(
                        f"multipart upload {upload_id} was completed or aborted while part {part} arrived"
                    ) from None
                stat = destination.stat()
                return ObjectInfo(key, stat.st_size, etag, _mtime(stat))
            info = self._publish(key, tmp, destination, etag)
        finally:
            tmp.unlink(missing_ok=True)
        await self._emit(info, s3_events.PUT)
        return info

    def _verify(self, key: str, query: Mapping[str, str]) -> tuple[str, str, int]:
        """(upload id, part number, signed byte count) of a genuine, unexpired URL for ``key``."""
        values = {}
        for name in (EXPIRES_PARAM, MAX_BYTES_PARAM, SIGNATURE_PARAM):
            value = query.get(name)
            if value is None:
                raise SignatureInvalid(f"the upload URL lacks {name}; ask the gateway for a new upload URL")
            values[name] = value
        upload_id = query.get("uploadId") or ""
        part = query.get("partNumber") or ""
        signature = values[SIGNATURE_PARAM]
        if not (_DIGITS.fullmatch(values[EXPIRES_PARAM]) and _DIGITS.fullmatch(values[MAX_BYTES_PARAM])
                and _HEX_SIGNATURE.fullmatch(signature)):
            raise SignatureInvalid("the upload URL's X-SD-* parameters are malformed")
        expires, max_bytes = int(values[EXPIRES_PARAM]), int(values[MAX_BYTES_PARAM])
        expected = self._sign("PUT", key, expires, max_bytes, upload_id, part)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureInvalid(
                f"the upload URL's signature does not match key {key!a} and its parameters; "
                "use the URL exactly as the gateway issued it"
            )
        now = self._clock()
        if now > expires:
            raise UrlExpired(
                f"the upload URL for {key!a} expired at {datetime.fromtimestamp(expires, UTC).isoformat()} "
                f"({int(now - expires)} s ago); ask the gateway for a new one"
            )
        if bool(upload_id) != bool(part) or (upload_id and not (_UPLOAD_ID.fullmatch(upload_id) and _DIGITS.fullmatch(part))):
            raise MultipartInvalid("a part upload needs both uploadId and partNumber")
        return upload_id, part, max_bytes

    # ---- multipart -----------------------------------------------------------------------------

    def _upload_folder(self, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise MultipartInvalid(f"{upload_id!a} is not an upload id issued by this store")
        return self._multipart / upload_id

    def _read_plan(self, key: str, upload_id: str) -> dict:
        try:
            plan = json.loads((self._upload_folder(upload_id) / "plan.json").read_bytes())
        except FileNotFoundError:
            raise MultipartInvalid(
                f"there is no multipart upload {upload_id} (it was completed, aborted or never started)"
            ) from None
        if plan["key"] != key:
            raise MultipartInvalid(f"multipart upload {upload_id} is for key {plan['key']!a}, not {key!a}")
        return plan

    async def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[tuple[int, str]]) -> ObjectInfo:
        validate_key(key)
        self._refuse_if_sealed(key)
        plan = self._read_plan(key, upload_id)
        ordered = check_part_list(parts)
        planned = plan_parts(plan["size_bytes"], plan["part_bytes"])
        if len(ordered) != len(planned):
            raise MultipartInvalid(
                f"upload {upload_id} was planned in {len(planned)} parts; completion listed {len(ordered)}"
            )
        folder = self._upload_folder(upload_id)
        for number, _offset, size in planned:
            try:
                actual = (folder / str(number)).stat().st_size
            except FileNotFoundError:
                raise MultipartInvalid(f"part {number} of upload {upload_id} was never uploaded") from None
            if actual != size:
                raise MultipartInvalid(f"part {number} of upload {upload_id} has {actual} bytes; planned {size}")
        destination = self.path_for(key)
        self._check_no_conflict(key, destination)
        tmp = self._tmp / secrets.token_hex(16)
        try:
            etag = await asyncio.to_thread(self._join_parts, folder, ordered, tmp)
            info = self._publish(key, tmp, destination, etag)
        finally:
            tmp.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        await self._emit(info, s3_events.COMPLETE_MULTIPART_UPLOAD)
        return info

    def _join_parts(self, folder: Path, ordered: builtins.list[tuple[int, str]], tmp: Path) -> str:
        digests = []
        with open(tmp, "xb") as out:
            for number, expected_etag in ordered:
                md5 = hashlib.md5()
                with open(folder / str(number), "rb") as part:
                    while chunk := part.read(_READ_CHUNK):
                        md5.update(chunk)
                        out.write(chunk)
                if quote_etag(md5.hexdigest()) != expected_etag:
                    raise MultipartInvalid(
                        f"part {number}: the listed ETag {expected_etag} is not the uploaded part's "
                        f"{quote_etag(md5.hexdigest())}"
                    )
                digests.append(md5.digest())
            out.flush()
            os.fsync(out.fileno())
        return quote_etag(f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}")

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        self._read_plan(key, upload_id)
        shutil.rmtree(self._upload_folder(upload_id), ignore_errors=True)

    # ---- publishing objects --------------------------------------------------------------------

    def _publish(self, key: str, tmp: Path, destination: Path, etag: str) -> ObjectInfo:
        """Records the ETag, then renames the complete, fsynced ``tmp`` to ``destination``."""
        # Checked again here, with no await before the rename: a body that was still arriving when
        # its prefix was frozen never replaces the checked object.
        self._refuse_if_sealed(key)
        stat = tmp.stat()
        self._write_meta(key, stat, etag)
        try:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, destination)
            fsync_dir(destination.parent)  # the rename itself survives a crash
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise InvalidKey(f"object key {key!a} conflicts with another object's path: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):  # a folder (prefix of other keys) is in the way
                raise InvalidKey(f"object key {key!a} is already a prefix of other objects in this store") from None
            raise
        return ObjectInfo(key, stat.st_size, etag, _mtime(stat))

    async def _emit(self, info: ObjectInfo, event_name: str) -> None:
        if self.events is None or not info.key.startswith(self.notify_prefix):
            return
        now = datetime.now(UTC)
        await self.events.send(
            s3_events.build_s3_event(
                bucket=self.bucket,
                region=self.region,
                key=info.key,
                size_bytes=info.size_bytes,
                etag=info.etag,
                event_name=event_name,
                event_time=now,
                sequencer=f"{time.time_ns():016X}",
            )
        )

    def _meta_path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self._meta / digest[:2] / digest

    def _write_meta(self, key: str, stat: os.stat_result, etag: str) -> None:
        path = self._meta_path(key)
        path.parent.mkdir(exist_ok=True)
        record = {"key": key, "etag": etag, "ino": stat.st_ino, "size_bytes": stat.st_size,
                  "mtime_ns": stat.st_mtime_ns}
        write_atomically(path, json.dumps(record).encode(), self._tmp, durable=False)

    def _etag(self, key: str, path: Path, stat: os.stat_result) -> str:
        try:
            record = json.loads(self._meta_path(key).read_bytes())
            if (record["key"], record["ino"], record["size_bytes"], record["mtime_ns"]) == (
                key, stat.st_ino, stat.st_size, stat.st_mtime_ns):
                return record["etag"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        # A file put there by hand, or metadata lost: its ETag is its MD5, like a single-PUT object.
        md5 = hashlib.md5()
        with open(path, "rb") as data:
            while chunk := data.read(_READ_CHUNK):
                md5.update(chunk)
        etag = quote_etag(md5.hexdigest())
        self._write_meta(key, stat, etag)
        return etag

    # ---- sealing -------------------------------------------------------------------------------

    def _seal_path(self, prefix: str) -> Path:
        return self._seals / hashlib.sha256(prefix.encode()).hexdigest()

    def _refuse_if_sealed(self, key: str) -> None:
        """Raises ObjectSealed if ``key`` lies under a frozen or sealed prefix."""
        parts = key.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth]) + "/"
            if prefix in self._frozen or os.path.exists(
                    f"{self._seals_str}/{hashlib.sha256(prefix.encode()).hexdigest()}"):
                raise ObjectSealed(
                    f"{prefix} is sealed: its files were checked and accepted and can no longer change; "
                    "nothing was written"
                )

    async def freeze(self, prefix: str) -> Snapshot:
        prefix = _folder_prefix(prefix)
        self._frozen.add(prefix)  # from here on every write under it is refused
        return Snapshot(prefix, tuple([info async for info in self.list(prefix)]))

    async def seal(self, snapshot: Snapshot) -> None:
        record = {"prefix": snapshot.prefix, "objects": [
            {"key": o.key, "size_bytes": o.size_bytes, "etag": o.etag} for o in snapshot.objects]}
        await asyncio.to_thread(write_atomically, self._seal_path(snapshot.prefix),
                                json.dumps(record).encode(), self._tmp)
        self._frozen.discard(snapshot.prefix)  # the seal file refuses writes from now on

    async def thaw(self, snapshot: Snapshot) -> None:
        self._frozen.discard(snapshot.prefix)  # a sealed prefix keeps its seal file

    # ---- reading -------------------------------------------------------------------------------

    def _stat_object(self, key: str) -> tuple[Path, os.stat_result] | None:
        path = self.path_for(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return path, stat

    def _info(self, key: str) -> ObjectInfo | None:
        found = self._stat_object(key)
        if found is None:
            return None
        path, stat = found
        return ObjectInfo(key, stat.st_size, self._etag(key, path, stat), _mtime(stat))

    async def head(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._info, key)

    def _open(self, key: str):
        found = self._stat_object(key)
        if found is None:
            raise ObjectNotFound(f"no object {key!a} in the store")
        try:
            return open(found[0], "rb")
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!a} in the store") from None

    async def sha256(self, key: str, *, version_id: str = "") -> str:
        def digest() -> str:
            sha = hashlib.sha256()
            with self._open(key) as data:
                while chunk := data.read(_READ_CHUNK):
                    sha.update(chunk)
            return sha.hexdigest()

        return await asyncio.to_thread(digest)

    async def iter_bytes(self, key: str, chunk_bytes: int = 1 << 20, *, version_id: str = "") -> AsyncIterator[bytes]:
        data = await asyncio.to_thread(self._open, key)
        try:
            while chunk := await asyncio.to_thread(data.read, chunk_bytes):
                yield chunk
        finally:
            data.close()

    async def get_bytes(self, key: str, *, max_bytes: int, version_id: str = "") -> bytes:
        def read() -> bytes:
            with self._open(key) as data:
                content = data.read(max_bytes + 1)
            if len(content) > max_bytes:
                raise ObjectTooLarge(f"object {key!a} is larger than the {max_bytes} bytes asked for")
            return content

        return await asyncio.to_thread(read)

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        destination = self.path_for(key)
        self._refuse_if_sealed(key)
        check_object_size(len(data), self.max_object_bytes)
        self._check_no_conflict(key, destination)
        tmp = self._tmp / secrets.token_hex(16)
        try:
            await asyncio.to_thread(_write_file, tmp, data)
            info = self._publish(key, tmp, destination, quote_etag(hashlib.md5(data).hexdigest()))
        finally:
            tmp.unlink(missing_ok=True)
        await self._emit(info, s3_events.PUT)
        return info

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        start = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        async for key in self._walk(self.root / start, start, prefix):
            info = await asyncio.to_thread(self._info, key)
            if info is not None:
                yield info

    async def _walk(self, folder: Path, key_prefix: str, prefix: str) -> AsyncIterator[str]:
        # Sorting "name/" for folders and "name" for files makes a depth-first walk yield keys in
        # byte order, as S3 lists them ("a-b" < "a/b" because '-' < '/').
        for name, is_dir in await asyncio.to_thread(_sorted_entries, folder):
            key = key_prefix + name
            if is_dir:
                below = key + "/"
                if below.startswith(prefix) or prefix.startswith(below):
                    async for found in self._walk(folder / name, below, prefix):
                        yield found
            elif key.startswith(prefix):
                yield key

    async def close(self) -> None:
        if self.events is not None:
            await self.events.close()

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - _STALE_TMP_S
        for entry in os.scandir(self._tmp):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass


def _sorted_entries(folder: Path) -> builtins.list[tuple[str, bool]]:
    try:
        entries = [
            (entry.name, entry.is_dir(follow_symlinks=False))
            for entry in os.scandir(folder)
            if SEGMENT_RE.fullmatch(entry.name) and (entry.is_dir(follow_symlinks=False)
                                                   or entry.is_file(follow_symlinks=False))
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(entries, key=lambda entry: entry[0] + "/" if entry[1] else entry[0])


def _folder_prefix(prefix: str) -> str:
    validate_prefix(prefix)
    if not prefix.strip("/"):
        raise InvalidKey("only a folder prefix such as 'raw/<session_id>/' can be frozen, not the whole store")
    return prefix if prefix.endswith("/") else prefix + "/"


def _mtime(stat: os.stat_result) -> datetime:
    return datetime.fromtimestamp(stat.st_mtime, UTC)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
