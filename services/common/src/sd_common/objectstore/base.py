"""The object-store interface every service codes against; ``local`` and ``s3`` implement it."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from sd_common.objectstore.errors import MultipartInvalid, ObjectTooLarge

# S3's multipart rules, applied by both stores so an upload planned locally also works on S3.
MIN_PART_BYTES = 5 * 1024 * 1024  # every part but the last
MAX_PART_BYTES = 5 * 1024**3
MAX_PARTS = 10_000
MAX_SINGLE_PUT_BYTES = 5 * 1024**3  # larger objects must use multipart


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells: the ETag is quoted, as S3 writes it (``"<md5 hex>"`` or ``"<hex>-<parts>"``)."""

    key: str
    size_bytes: int
    etag: str
    last_modified: datetime
    version_id: str = ""  # the S3 version a snapshot pinned; the embedded store has no versions


@dataclass(frozen=True)
class Snapshot:
    """The objects under ``prefix`` (ending in '/') at the moment ``ObjectStore.freeze`` looked."""

    prefix: str
    objects: tuple[ObjectInfo, ...]


@dataclass(frozen=True)
class PresignedRequest:
    """One HTTP request a client may send without credentials until ``expires_at``."""

    url: str
    method: str
    headers: dict[str, str]  # signed headers; Content-Length is set by every HTTP client from the body
    expires_at: datetime


@dataclass(frozen=True)
class PresignedPart:
    """A PUT URL for bytes ``[offset_bytes, offset_bytes + size_bytes)`` of the file, as part ``part_number``."""

    part_number: int
    url: str
    offset_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class MultipartUpload:
    """A started multipart upload: PUT each part to its URL, keep each response's ETag, then complete."""

    key: str
    upload_id: str
    parts: list[PresignedPart]
    expires_at: datetime


class ObjectStore(ABC):
    """Async object store: presigned uploads for clients, streaming reads and small writes for services."""

    @abstractmethod
    async def presign_put(
        self, key: str, *, size_bytes: int, content_type: str, expires_s: int
    ) -> PresignedRequest:
        """A URL that accepts one PUT of at most ``size_bytes`` bytes to ``key``."""

    @abstractmethod
    async def create_multipart(
        self, key: str, *, size_bytes: int, part_bytes: int, content_type: str, expires_s: int
    ) -> MultipartUpload:
        """Starts a multipart upload of ``size_bytes`` in parts of ``part_bytes`` (the last may be smaller)."""

    @abstractmethod
    async def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[tuple[int, str]]) -> ObjectInfo:
        """Joins the uploaded parts, given as ``(part_number, etag)`` for parts 1..n, into the object."""

    @abstractmethod
    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discards a multipart upload and its parts."""

    @abstractmethod
    async def head(self, key: str) -> ObjectInfo | None:
        """The object's metadata, or None if there is no object under ``key``."""

    @abstractmethod
    async def sha256(self, key: str, *, version_id: str = "") -> str:
        """Lowercase hex SHA-256 of the object (of that version, if given), read as a stream."""

    @abstractmethod
    def iter_bytes(self, key: str, chunk_bytes: int = 1 << 20, *, version_id: str = "") -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_bytes``; raises ObjectNotFound when iterated."""

    @abstractmethod
    async def get_bytes(self, key: str, *, max_bytes: int, version_id: str = "") -> bytes:
        """The whole object; raises ObjectTooLarge if it is bigger than ``max_bytes``."""

    @abstractmethod
    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        """Writes a small object from a service (not from a client)."""

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    # Sealing: once a client's upload under a prefix has been checked, its bytes must never change.
    # A reader needs nothing special: every read of a key directly under a sealed prefix (and a
    # listing of exactly that prefix) returns the sealed objects.

    @abstractmethod
    async def freeze(self, prefix: str) -> Snapshot:
        """The objects under ``prefix`` now, which later writes cannot change until ``thaw``.

        Embedded store: writes under the prefix are refused (ObjectSealed). S3, where a presigned URL
        cannot be revoked: each object's current version is pinned in the snapshot (bucket versioning
        required); read those versions with ``version_id``. A sealed prefix returns its seal.
        """

    @abstractmethod
    async def seal(self, snapshot: Snapshot) -> None:
        """Makes a freeze permanent: from now on every reader sees exactly the snapshot's objects."""

    @abstractmethod
    async def thaw(self, snapshot: Snapshot) -> None:
        """Ends a freeze that was not sealed, so the prefix can be written again."""

    @abstractmethod
    async def close(self) -> None:
        """Releases connections; the store is not used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def plan_parts(size_bytes: int, part_bytes: int) -> builtins.list[tuple[int, int, int]]:
    """Splits ``size_bytes`` into ``(part_number, offset_bytes, size_bytes)`` under S3's part rules."""
    if size_bytes < 1:
        raise MultipartInvalid(f"a multipart upload needs at least 1 byte, got size_bytes={size_bytes}")
    if not MIN_PART_BYTES <= part_bytes <= MAX_PART_BYTES:
        raise MultipartInvalid(
            f"part size {part_bytes} bytes is outside S3's limits [{MIN_PART_BYTES}, {MAX_PART_BYTES}]"
        )
    count = -(-size_bytes // part_bytes)
    if count > MAX_PARTS:
        raise MultipartInvalid(
            f"{size_bytes} bytes in parts of {part_bytes} bytes makes {count} parts; the limit is "
            f"{MAX_PARTS}, so use parts of at least {-(-size_bytes // MAX_PARTS)} bytes"
        )
    return [
        (number, offset, min(part_bytes, size_bytes - offset))
        for number, offset in enumerate(range(0, size_bytes, part_bytes), start=1)
    ]


def check_part_list(parts: builtins.list[tuple[int, str]]) -> builtins.list[tuple[int, str]]:
    """Parts sorted by number, each etag quoted; raises MultipartInvalid unless they are exactly 1..n."""
    if not parts:
        raise MultipartInvalid("completing a multipart upload needs at least one part")
    ordered = sorted((int(number), quote_etag(etag)) for number, etag in parts)
    if any(etag == '""' for _, etag in ordered):
        raise MultipartInvalid("every part needs the ETag its upload returned; one is empty")
    numbers = [number for number, _ in ordered]
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
        raise MultipartInvalid(
            "parts must be numbered 1..n with none missing or repeated; "
            f"missing {missing or 'none'}, repeated {duplicated or 'none'}, got {numbers[:20]}"
        )
    return ordered


def quote_etag(etag: str) -> str:
    """An ETag in S3's quoted form, whether or not it came quoted (S3 events drop the quotes)."""
    return '"' + etag.strip().strip('"') + '"'


def check_object_size(size_bytes: int, max_object_bytes: int) -> None:
    """Raises ObjectTooLarge if an upload declares more than the store accepts."""
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    if size_bytes > max_object_bytes:
        raise ObjectTooLarge(
            f"an object of {size_bytes} bytes is larger than this store accepts ({max_object_bytes} bytes)"
        )
