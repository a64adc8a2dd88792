"""S3 event-notification messages: built by the embedded store, parsed by every consumer.

Both stores deliver the same JSON (the shape S3 sends to SQS), so the ingest service has one parser.
Keys inside events are URL-encoded as S3 encodes them (``quote_plus``: a space becomes ``+``);
``parse_s3_event`` decodes them. ETags in events have no quotes; parsed ones get them back, so they
compare equal to ``ObjectInfo.etag``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from sd_common.objectstore.base import quote_etag

PUT = "ObjectCreated:Put"
COMPLETE_MULTIPART_UPLOAD = "ObjectCreated:CompleteMultipartUpload"


class MalformedEvent(ValueError):
    """A queue message that is not an S3 event notification."""


@dataclass(frozen=True)
class ObjectCreated:
    """One object-created record: the key is decoded and the ETag quoted, ready to compare with head()."""

    bucket: str
    key: str
    size_bytes: int
    etag: str
    event_name: str  # "ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", …
    event_time: datetime
    sequencer: str | None  # orders events for one key; S3 always sends it, some emulators do not


def build_s3_event(
    *,
    bucket: str,
    region: str,
    key: str,
    size_bytes: int,
    etag: str,
    event_name: str,
    event_time: datetime,
    sequencer: str,
) -> str:
    """The JSON body S3 sends to SQS when ``key`` is created (one record)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": _format_time(event_time),
        "eventName": event_name,
        "userIdentity": {"principalId": "local"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "sd-object-created",
            "bucket": {"name": bucket, "ownerIdentity": {"principalId": "local"}, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size_bytes,
                "eTag": etag.strip('"'),
                "sequencer": sequencer,
            },
        },
    }
    return json.dumps({"Records": [record]}, separators=(",", ":"))


def parse_s3_event(body: str) -> list[ObjectCreated]:
    """Object-created records in an SQS message body; [] for ``s3:TestEvent`` and other event types."""
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        raise MalformedEvent(f"event body is not JSON ({exc}); starts with {str(body)[:80]!r}") from exc
    if not isinstance(message, dict):
        raise MalformedEvent(f"event body is a JSON {type(message).__name__}, expected an object")
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise MalformedEvent(f"event has no 'Records' list; its keys are {sorted(message)[:10]}")
    created = []
    for index, record in enumerate(records):
        where = f"Records[{index}]"
        name = _field(record, str, where, "eventName")
        if not name.startswith("ObjectCreated:"):
            continue
        s3 = _field(record, dict, where, "s3")
        obj = _field(s3, dict, f"{where}.s3", "object")
        size = _field(obj, int, f"{where}.s3.object", "size")
        if size < 0:
            raise MalformedEvent(f"{where}.s3.object.size is negative: {size}")
        etag = _field(obj, str, f"{where}.s3.object", "eTag")
        sequencer = obj.get("sequencer")
        try:
            event_time = datetime.fromisoformat(_field(record, str, where, "eventTime"))
        except ValueError as exc:
            raise MalformedEvent(f"{where}.eventTime is not an ISO 8601 time: {record['eventTime']!r}") from exc
        if event_time.tzinfo is None:
            event_time = event_time.replace(tzinfo=UTC)
        created.append(
            ObjectCreated(
                bucket=_field(_field(s3, dict, f"{where}.s3", "bucket"), str, f"{where}.s3.bucket", "name"),
                key=unquote_plus(_field(obj, str, f"{where}.s3.object", "key")),
                size_bytes=size,
                etag=quote_etag(etag),
                event_name=name,
                event_time=event_time,
                sequencer=str(sequencer) if sequencer is not None else None,
            )
        )
    return created


_JSON_TYPES = {dict: "a JSON object", str: "a JSON string", int: "a JSON integer"}


def _field(container: Any, kind: type, where: str, name: str) -> Any:
    if not isinstance(container, dict):
        raise MalformedEvent(f"{where} is a JSON {type(container).__name__}, expected an object")
    value = container.get(name)
    # bool is an int in Python; a size of `true` is still malformed.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedEvent(f"{where}.{name} should be {_JSON_TYPES[kind]}, got {value!r}")
    return value


def _format_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
