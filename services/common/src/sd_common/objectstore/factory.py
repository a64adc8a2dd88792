"""Builds the store and the event queue that ``StoreSettings`` describe (local by default)."""

from __future__ import annotations

from pathlib import Path

from sd_common.objectstore.base import ObjectStore
from sd_common.objectstore.local import LocalObjectStore
from sd_common.objectstore.queues import EventQueue, LocalEventQueue, SqsEventQueue
from sd_common.objectstore.s3 import S3ObjectStore
from sd_common.secret_files import load_or_create_secret
from sd_common.settings import StoreSettings

SIGNING_KEY_FILE = ".signing-key"
EVENTS_DIR = ".events"


def make_store(settings: StoreSettings) -> ObjectStore:
    """The object store for these settings: files under ``root``, or the S3 ``bucket``."""
    if settings.backend == "s3":
        return S3ObjectStore(
            settings.bucket,
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            max_object_bytes=settings.max_object_bytes,
            seal_prefix=settings.notify_prefix,
        )
    root = Path(settings.root)
    root.mkdir(parents=True, exist_ok=True)
    if settings.signing_key is not None:
        signing_key = settings.signing_key.get_secret_value().encode()
    else:
        signing_key = load_or_create_secret(root / SIGNING_KEY_FILE)
    return LocalObjectStore(
        root,
        signing_key,
        settings.public_base_url,
        LocalEventQueue(root / EVENTS_DIR),
        settings.max_object_bytes,
        bucket=settings.bucket,
        region=settings.region,
        notify_prefix=settings.notify_prefix,
    )


def make_event_queue(settings: StoreSettings) -> EventQueue:
    """The queue of object-created events for these settings: ``root/.events`` or SQS ``queue_url``."""
    if settings.backend == "s3":
        if not settings.queue_url:
            raise ValueError("SD_STORE_QUEUE_URL must name the SQS queue that receives the bucket's events")
        return SqsEventQueue(settings.queue_url, endpoint_url=settings.endpoint_url, region=settings.region)
    return LocalEventQueue(Path(settings.root) / EVENTS_DIR)
