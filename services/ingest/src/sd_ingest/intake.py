"""Consumes object-created events (SQS in the cluster, the embedded store's queue locally).

Each record under ``raw/<session_id>/`` is written to the catalog in one transaction, and only then
is the message deleted: that is the durable hand-off. A crash before the delete makes the queue
deliver the message again, and the catalog recognises it (same key and ETag) as a duplicate. A
message that cannot be handled is left for redelivery until it has been received
``dead_letter_after_receives`` times; then it is kept in the catalog's dead letters and deleted.
Unparseable messages are dead-lettered at once: no retry can fix them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from sd_common.objectstore import EventQueue, MalformedEvent, ObjectCreated, QueueMessage, parse_s3_event

from sd_ingest import metrics
from sd_ingest.catalog import Catalog
from sd_ingest.settings import IngestSettings

log = structlog.get_logger()


def session_of(key: str, raw_prefix: str) -> str | None:
    """The session id of a raw session file's key (``raw/<session_id>/<file>``), else None."""
    if not key.startswith(raw_prefix):
        return None
    session_id, sep, rest = key[len(raw_prefix):].partition("/")
    return session_id if sep and session_id and rest else None


class EventConsumer:
    """Polls the queue, records events in the catalog, deletes what it handed off."""

    def __init__(self, settings: IngestSettings, queue: EventQueue, catalog: Catalog,
                 on_session_event: Callable[[str], None] = lambda _sid: None) -> None:
        self.settings = settings
        self.queue = queue
        self.catalog = catalog
        self._on_session_event = on_session_event
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._handling = asyncio.Lock()

    def start(self) -> None:
        """Starts polling in the running event loop."""
        self._task = asyncio.create_task(self._run(), name="ingest-events")

    async def stop(self) -> None:
        """Stops polling; a batch being handled is finished (its messages deleted) first."""
        self._stopping.set()
        if self._task is None:
            return
        async with self._handling:  # wait for the batch in hand; then the poll can be dropped safely
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                messages = await self.queue.receive(
                    max_messages=self.settings.receive_batch, wait_s=self.settings.receive_wait_s,
                    visibility_timeout_s=self.settings.visibility_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("receiving events failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if not messages:
                continue
            async with self._handling:
                for message in messages:
                    await self.handle(message)

    async def handle(self, message: QueueMessage) -> None:
        """Handles one message: records every object it announces, then deletes it (or leaves it)."""
        try:
            records = parse_s3_event(message.body)
        except MalformedEvent as exc:
            await self._dead_letter(message, f"malformed event: {exc}", "malformed")
            return
        try:
            for record in records:
                await self._record(record)
        except Exception as exc:
            if message.receive_count >= self.settings.dead_letter_after_receives:
                await self._dead_letter(message, f"failed {message.receive_count} times: {exc}", "failing")
            else:
                log.warning("event not handled; the queue will deliver it again", message_id=message.message_id,
                            receive_count=message.receive_count, error=str(exc))
            return
        await self.queue.delete(message.receipt)

    async def _record(self, record: ObjectCreated) -> None:
        metrics.EVENTS_RECEIVED.inc()
        raw = self.settings.raw_prefix
        sid = session_of(record.key, raw)
        if sid is None:
            metrics.EVENTS_PROCESSED.labels("ignored").inc()
            return
        outcome = await asyncio.to_thread(
            self.catalog.record_object, key=record.key, session_id=sid, raw_prefix=f"{raw}{sid}/",
            size_bytes=record.size_bytes, etag=record.etag, sequencer=record.sequencer)
        metrics.EVENTS_PROCESSED.labels(outcome.kind).inc()
        if outcome.kind == "duplicate":
            metrics.EVENTS_DUPLICATE.inc()
        if outcome.kind == "late_change":
            log.warning("a raw file changed after its session was complete; ignored", session_id=sid,
                        key=record.key, state=outcome.session.state.value)
        log.debug("object event", session_id=sid, key=record.key, outcome=outcome.kind)
        if outcome.kind in ("new", "replaced"):
            self._on_session_event(sid)

    async def _dead_letter(self, message: QueueMessage, reason: str, label: str) -> None:
        try:
            await asyncio.to_thread(self.catalog.add_dead_letter, message.message_id, message.body,
                                    message.receive_count, reason)
        except Exception:
            log.exception("could not keep a dead letter; the message stays on the queue",
                          message_id=message.message_id)
            return
        metrics.EVENTS_DEAD_LETTERED.labels(label).inc()
        log.error("event dead-lettered", message_id=message.message_id, reason=reason)
        await self.queue.delete(message.receipt)
