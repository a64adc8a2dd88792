"""The cluster object store: an S3 bucket through aiobotocore, with real presigned URLs.

Clients upload straight to S3; S3 itself checks the signature, the expiry and the signed
Content-Length, and sends object-created events to SQS (``configure_event_notifications``).

Sealing: a presigned URL cannot be revoked, so a client could PUT new bytes to a key after its
session was checked. The bucket keeps every version (versioning must be enabled, see
docs/operations.md); ``freeze`` pins each object's current version, the check reads exactly those,
and ``seal`` writes them to a seal record (``.seals/<prefix>.json``, written once, never under a
key any client is given a URL for). Every later read of a key directly under a sealed prefix —
``head``, ``get_bytes``, ``iter_bytes``, ``sha256``, and ``list`` of the prefix — returns the
sealed version, so an overwrite creates a version nobody reads.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from botocore.config import Config
from botocore.exceptions import ClientError

from sd_common.objectstore.aws import LazyAwsClient
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
from sd_common.objectstore.errors import (
    InvalidKey,
    MultipartInvalid,
    ObjectNotFound,
    ObjectTooLarge,
    VersioningRequired,
)
from sd_common.objectstore.keys import validate_key, validate_prefix

MAX_EXPIRES_S = 7 * 24 * 3600
_SIZE_METADATA = "sd-size-bytes"  # the planned size, checked when a multipart upload completes
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_MULTIPART_ERRORS = {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML"}
SEALS_PREFIX = ".seals/"  # seal records; a leading '.' is outside every key a client can be given
_SEAL_CACHE_SIZE = 4096


class S3ObjectStore(ObjectStore):
    """Objects in one S3 bucket (or any S3-protocol server at ``endpoint_url``)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_object_bytes: int = 2 * 1024**3,
        seal_prefix: str = "raw/",
    ) -> None:
        self.bucket = bucket
        self.max_object_bytes = max_object_bytes
        # Only keys under it (client uploads) can be sealed; reads elsewhere skip the seal lookup.
        self.seal_prefix = seal_prefix
        # Sealed prefix -> its objects. A seal is written once and never changes, so a hit stays true.
        self._seals: OrderedDict[str, dict[str, ObjectInfo]] = OrderedDict()
        self._versioning_enabled = False
        # A custom endpoint (a dev server on loopback) has no per-bucket host names: use path style.
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "virtual"},
            retries={"mode": "standard", "max_attempts": 3},
        )
        self._client = LazyAwsClient("s3", region=region, endpoint_url=endpoint_url, config=config)

    async def presign_put(
        self, key: str, *, size_bytes: int, content_type: str, expires_s: int
    ) -> PresignedRequest:
        validate_key(key)
        check_object_size(size_bytes, min(self.max_object_bytes, MAX_SINGLE_PUT_BYTES))
        _check_expiry(expires_s)
        s3 = await self._client.get()
        # Content-Length is signed, so S3 rejects a body of any other size.
        url = await s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type, "ContentLength": size_bytes},
            ExpiresIn=expires_s,
        )
        return PresignedRequest(
            url=url,
            method="PUT",
            headers={"Content-Type": content_type, "Content-Length": str(size_bytes)},
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_s),
        )

    async def create_multipart(
        self, key: str, *, size_bytes: int, part_bytes: int, content_type: str, expires_s: int
    ) -> MultipartUpload:
        validate_key(key)
        check_object_size(size_bytes, self.max_object_bytes)
        plan = plan_parts(size_bytes, part_bytes)
        _check_expiry(expires_s)
        s3 = await self._client.get()
        created = await s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, Metadata={_SIZE_METADATA: str(size_bytes)}
        )
        upload_id = created["UploadId"]
        parts = []
        for number, offset, size in plan:
            url = await s3.generate_presigned_url(
                "upload_part",
                Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                        "ContentLength": size},
                ExpiresIn=expires_s,
            )
            parts.append(PresignedPart(number, url, offset, size))
        return MultipartUpload(key, upload_id, parts, datetime.now(UTC) + timedelta(seconds=expires_s))

    async def complete_multipart(self, key: str, upload_id: str, parts: builtins.list[tuple[int, str]]) -> ObjectInfo:
        validate_key(key)
        ordered = check_part_list(parts)
        s3 = await self._client.get()
        try:
            await s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in ordered]},
            )
        except ClientError as exc:
            if _code(exc) in _MULTIPART_ERRORS:
                raise MultipartInvalid(f"S3 refused to complete upload {upload_id} of {key!a}: {_message(exc)}") from exc
            raise
        response = await self._head_object(key)
        if response is None:
            raise ObjectNotFound(f"object {key!a} vanished right after its multipart upload completed")
        planned = response.get("Metadata", {}).get(_SIZE_METADATA)
        if planned is not None and int(planned) != response["ContentLength"]:
            # S3 joins whichever parts it is given; a forgotten last part would leave a short object.
            await s3.delete_object(Bucket=self.bucket, Key=key)
            raise MultipartInvalid(
                f"upload {upload_id} of {key!a} was planned as {planned} bytes but its parts make "
                f"{response['ContentLength']}; the object was removed"
            )
        return _info(key, response)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        validate_key(key)
        s3 = await self._client.get()
        try:
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if _code(exc) in _MULTIPART_ERRORS:
                raise MultipartInvalid(f"S3 refused to abort upload {upload_id} of {key!a}: {_message(exc)}") from exc
            raise

    async def _head_object(self, key: str) -> dict | None:
        s3 = await self._client.get()
        try:
            return await s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        sealed = await self._sealed(_parent(key))
        if sealed is not None:
            return sealed.get(key)
        response = await self._head_object(key)
        return None if response is None else _info(key, response)

    async def _get_object(self, key: str, version_id: str = "") -> dict:
        validate_key(key)
        if not version_id:
            sealed = await self._sealed(_parent(key))
            if sealed is not None:
                if key not in sealed:
                    raise ObjectNotFound(f"no object {key!a} among those sealed under {_parent(key)!a}")
                version_id = sealed[key].version_id
        s3 = await self._client.get()
        try:
            if version_id:
                return await s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            return await s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise ObjectNotFound(f"no object {key!a} in bucket {self.bucket!a}") from exc
            raise

    async def sha256(self, key: str, *, version_id: str = "") -> str:
        sha = hashlib.sha256()
        async for chunk in self.iter_bytes(key, version_id=version_id):
            sha.update(chunk)
        return sha.hexdigest()

    async def iter_bytes(self, key: str, chunk_bytes: int = 1 << 20, *, version_id: str = "") -> AsyncIterator[bytes]:
        response = await self._get_object(key, version_id)
        async with response["Body"] as body:
            async for chunk in body.iter_chunks(chunk_bytes):
                yield chunk

    async def get_bytes(self, key: str, *, max_bytes: int, version_id: str = "") -> bytes:
        response = await self._get_object(key, version_id)
        async with response["Body"] as body:
            if response["ContentLength"] > max_bytes:
                raise ObjectTooLarge(
                    f"object {key!a} has {response['ContentLength']} bytes, more than the {max_bytes} asked for"
                )
            return await body.read()

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        validate_key(key)
        check_object_size(len(data), min(self.max_object_bytes, MAX_SINGLE_PUT_BYTES))
        s3 = await self._client.get()
        await s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        response = await self._head_object(key)
        if response is None:
            raise ObjectNotFound(f"object {key!a} vanished right after it was written")
        return _info(key, response)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        sealed = await self._sealed(prefix) if prefix.endswith("/") else None
        if sealed is not None:
            for key in sorted(sealed):
                yield sealed[key]
            return
        s3 = await self._client.get()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], item["Size"], quote_etag(item["ETag"]), item["LastModified"])

    # ---- sealing -------------------------------------------------------------------------------

    async def _sealed(self, prefix: str) -> dict[str, ObjectInfo] | None:
        """The objects of ``prefix``'s seal, or None if it has none."""
        if not prefix or not prefix.startswith(self.seal_prefix):
            return None
        hit = self._seals.get(prefix)
        if hit is not None:
            return hit
        s3 = await self._client.get()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=_seal_key(prefix))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise
        async with response["Body"] as body:
            record = json.loads(await body.read())
        objects = {o["key"]: ObjectInfo(o["key"], o["size_bytes"], o["etag"],
                                        datetime.fromisoformat(o["last_modified"]), o["version_id"])
                   for o in record["objects"]}
        self._seals[prefix] = objects
        while len(self._seals) > _SEAL_CACHE_SIZE:
            self._seals.popitem(last=False)
        return objects

    async def _require_versioning(self) -> None:
        if self._versioning_enabled:
            return
        s3 = await self._client.get()
        status = (await s3.get_bucket_versioning(Bucket=self.bucket)).get("Status", "")
        if status != "Enabled":
            raise VersioningRequired(
                f"bucket {self.bucket!a} has versioning {status or 'never enabled'}; checked sessions are kept "
                "unchangeable by pinning object versions, so enable versioning on the bucket "
                "(docs/operations.md)"
            )
        self._versioning_enabled = True

    async def freeze(self, prefix: str) -> Snapshot:
        validate_prefix(prefix)
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        if not prefix.startswith(self.seal_prefix) or prefix == self.seal_prefix:
            raise InvalidKey(f"only folders under {self.seal_prefix!a} can be frozen, not {prefix!a}")
        sealed = await self._sealed(prefix)
        if sealed is not None:
            return Snapshot(prefix, tuple(sealed[k] for k in sorted(sealed)))
        await self._require_versioning()
        s3 = await self._client.get()
        current: dict[str, ObjectInfo] = {}
        paginator = s3.get_paginator("list_object_versions")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Versions", []):
                if item.get("IsLatest"):
                    current[item["Key"]] = ObjectInfo(item["Key"], item["Size"], quote_etag(item["ETag"]),
                                                      item["LastModified"], item["VersionId"])
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest"):
                    current.pop(marker["Key"], None)
        return Snapshot(prefix, tuple(current[k] for k in sorted(current)))

    async def seal(self, snapshot: Snapshot) -> None:
        record = {"prefix": snapshot.prefix, "objects": [
            {"key": o.key, "version_id": o.version_id, "size_bytes": o.size_bytes, "etag": o.etag,
             "last_modified": o.last_modified.isoformat()} for o in snapshot.objects]}
        s3 = await self._client.get()
        try:
            # Written once: a second completion (another replica) cannot replace the first seal.
            await s3.put_object(Bucket=self.bucket, Key=_seal_key(snapshot.prefix), IfNoneMatch="*",
                                Body=json.dumps(record).encode(), ContentType="application/json")
        except ClientError as exc:
            if _code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise

    async def thaw(self, snapshot: Snapshot) -> None:
        """Nothing to undo: a snapshot that was not sealed pins nothing for other readers."""

    async def configure_event_notifications(self, queue_arn: str, prefix: str = "") -> None:
        """Sends the bucket's s3:ObjectCreated:* events for keys under ``prefix`` to the SQS queue ``queue_arn``.

        The queue's policy must allow S3 to send to it; S3 then sends one ``s3:TestEvent`` message.
        """
        config: dict = {"Id": "sd-object-created", "QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}
        if prefix:
            config["Filter"] = {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}
        s3 = await self._client.get()
        await s3.put_bucket_notification_configuration(
            Bucket=self.bucket, NotificationConfiguration={"QueueConfigurations": [config]})

    async def close(self) -> None:
        await self._client.close()


def _info(key: str, response: dict) -> ObjectInfo:
    return ObjectInfo(key, response["ContentLength"], quote_etag(response["ETag"]), response["LastModified"])


def _parent(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def _seal_key(prefix: str) -> str:
    return SEALS_PREFIX + prefix.rstrip("/") + ".json"


def _check_expiry(expires_s: int) -> None:
    if not 1 <= expires_s <= MAX_EXPIRES_S:
        raise ValueError(f"expires_s must be within [1, {MAX_EXPIRES_S}], got {expires_s}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
