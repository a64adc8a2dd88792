"""What the ingest API does: read the catalog, reprocess a session, make and list dataset versions.

No gRPC here; server.py adapts it. Calls into the (synchronous) catalog run in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from sd_common.objectstore import ObjectStore

from sd_ingest.catalog import Catalog, DatasetRecord, SegmentRecord, SessionRecord, SessionState
from sd_ingest.datasets import create_dataset
from sd_ingest.errors import InvalidArgument, NotFound
from sd_ingest.settings import IngestSettings

log = structlog.get_logger()
MAX_PAGE = 500
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DATASET_ID = re.compile(r"[0-9a-f]{64}")


def _page_size(n: int) -> int:
    if n < 0:
        raise InvalidArgument(f"page_size must be >= 0, got {n}")
    return min(n or 50, MAX_PAGE)


def _token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode() if value else ""


def _untoken(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service issued") from None


class CatalogService:
    """The ingest's operations over its catalog and store."""

    def __init__(self, settings: IngestSettings, catalog: Catalog, store: ObjectStore, on_change=lambda: None,
                 on_dataset: Callable[[DatasetRecord], Awaitable[Any]] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self._on_change = on_change
        self._on_dataset = on_dataset
        self._dataset_lock = asyncio.Lock()  # one snapshot at a time per replica: it reads every segment

    def _check_id(self, session_id: str) -> str:
        if not _ID.fullmatch(session_id or ""):
            raise InvalidArgument(f"session_id {session_id!r} is not a session id ([A-Za-z0-9._-], 1-128 chars)")
        return session_id

    async def get_session(self, session_id: str) -> tuple[SessionRecord, list[SegmentRecord]]:
        """The session and its segments."""
        rec = await asyncio.to_thread(self.catalog.get_session, self._check_id(session_id))
        if rec is None:
            raise NotFound(f"no session {session_id} in the catalog (no event for it has arrived)")
        return rec, await asyncio.to_thread(self.catalog.segments, session_id)

    async def list_sessions(self, states: list[SessionState], page_size: int,
                            page_token: str) -> tuple[list[SessionRecord], str]:
        """A page of sessions in id order, and the token of the next page ("" at the end)."""
        limit = _page_size(page_size)
        rows = await asyncio.to_thread(self.catalog.list_sessions, states=states, limit=limit + 1,
                                       after_id=_untoken(page_token))
        nxt = _token(rows[limit - 1].session_id) if len(rows) > limit else ""
        return rows[:limit], nxt

    async def reprocess(self, session_id: str) -> SessionRecord:
        """Dispatches a processed or failed session again (re-validates a rejected one)."""
        rec = await asyncio.to_thread(self.catalog.reprocess, self._check_id(session_id))
        self._on_change()
        return rec

    async def create_dataset(self, name: str, val_fraction: float, split_seed: int) -> tuple[DatasetRecord, bool]:
        """Snapshots the accepted segments into a dataset version."""
        if len(name) > 256:
            raise InvalidArgument("name is longer than 256 characters")
        async with self._dataset_lock:
            rec, created = await create_dataset(self.catalog, self.store, name=name, val_fraction=val_fraction,
                                                split_seed=split_seed, datasets_prefix=self.settings.datasets_prefix,
                                                processed_prefix=self.settings.processed_prefix)
        if self._on_dataset is not None:
            # Also for a version that already existed: asking again repairs a missed announcement.
            try:
                await self._on_dataset(rec)
            except Exception as exc:  # noqa: BLE001 - the version is made and recorded; only the notice failed
                log.error("dataset version resource not created; create the dataset again to retry",
                          dataset_id=rec.dataset_id, error=repr(exc))
        return rec, created

    async def get_dataset(self, dataset_id: str) -> DatasetRecord:
        """One dataset version."""
        if not _DATASET_ID.fullmatch(dataset_id or ""):
            raise InvalidArgument(f"dataset_id {dataset_id!r} is not a dataset id (64 lowercase hex digits)")
        rec = await asyncio.to_thread(self.catalog.get_dataset, dataset_id)
        if rec is None:
            raise NotFound(f"no dataset {dataset_id}")
        return rec

    async def list_datasets(self, page_size: int, page_token: str) -> tuple[list[DatasetRecord], str]:
        """A page of dataset versions, newest first."""
        limit = _page_size(page_size)
        raw = _untoken(page_token)
        if raw and not raw.isdigit():
            raise InvalidArgument("page_token is not one this service issued")
        offset = int(raw or 0)
        rows = await asyncio.to_thread(self.catalog.list_datasets, limit=limit + 1, offset=offset)
        nxt = _token(str(offset + limit)) if len(rows) > limit else ""
        return rows[:limit], nxt
