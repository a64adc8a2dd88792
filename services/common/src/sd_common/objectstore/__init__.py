"""One object-store interface with two implementations (files under a root, or S3), and event queues.

``make_store(settings)`` / ``make_event_queue(settings)`` pick the backend from ``StoreSettings``.
"""

from sd_common.objectstore.base import (
    MultipartUpload,
    ObjectInfo,
    ObjectStore,
    PresignedPart,
    PresignedRequest,
    Snapshot,
)
from sd_common.objectstore.errors import (
    IncompleteBody,
    InvalidKey,
    LengthRequired,
    MultipartInvalid,
    ObjectNotFound,
    ObjectSealed,
    ObjectStoreError,
    ObjectTooLarge,
    SignatureInvalid,
    UrlExpired,
    VersioningRequired,
)
from sd_common.objectstore.events import MalformedEvent, ObjectCreated, build_s3_event, parse_s3_event
from sd_common.objectstore.factory import make_event_queue, make_store
from sd_common.objectstore.keys import validate_key, validate_prefix
from sd_common.objectstore.local import LocalObjectStore
from sd_common.objectstore.queues import EventQueue, LocalEventQueue, QueueMessage, SqsEventQueue
from sd_common.objectstore.s3 import S3ObjectStore

__all__ = [
    "EventQueue",
    "IncompleteBody",
    "InvalidKey",
    "LengthRequired",
    "LocalEventQueue",
    "LocalObjectStore",
    "MalformedEvent",
    "MultipartInvalid",
    "MultipartUpload",
    "ObjectCreated",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectSealed",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectTooLarge",
    "PresignedPart",
    "PresignedRequest",
    "QueueMessage",
    "S3ObjectStore",
    "Snapshot",
    "SignatureInvalid",
    "SqsEventQueue",
    "UrlExpired",
    "VersioningRequired",
    "build_s3_event",
    "make_event_queue",
    "make_store",
    "parse_s3_event",
    "validate_key",
    "validate_prefix",
]
