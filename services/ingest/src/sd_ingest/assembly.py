"""Builds a running ingest — catalog, event consumer, pipeline, gRPC API — from its settings."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import EventQueue, ObjectStore, make_event_queue, make_store
from sd_common.settings import StoreSettings

from sd_ingest.catalog import Catalog
from sd_ingest.dispatch import ProcessorClient
from sd_ingest.intake import EventConsumer
from sd_ingest.pipeline import Pipeline
from sd_ingest.server import register
from sd_ingest.service import CatalogService
from sd_ingest.settings import IngestSettings

log = structlog.get_logger()


@dataclass
class RunningIngest:
    """A started ingest: its ports, parts (for tests and operators) and how to stop it."""

    grpc_port: int
    metrics_port: int
    catalog: Catalog
    store: ObjectStore
    queue: EventQueue | None
    consumer: EventConsumer | None
    pipeline: Pipeline
    service: CatalogService
    processor: ProcessorClient | None
    settings: IngestSettings
    _rt: GrpcRuntime

    async def stop(self) -> None:
        """Stops polling, drains the API, lets in-flight steps finish (or releases their leases), closes."""
        if self.consumer is not None:
            await self.consumer.stop()
        await self.pipeline.stop(self.settings.shutdown_grace_s)
        await self._rt.stop()
        if self.processor is not None:
            await self.processor.close()
        if self.queue is not None:
            await self.queue.close()
        await self.store.close()
        self.catalog.close()


async def start_ingest(settings: IngestSettings, store_settings: StoreSettings) -> RunningIngest:
    """Opens the catalog, store and queue, starts the API, the consumer and the pipeline."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.sqlalchemy_url())
    store = make_store(store_settings)
    try:
        queue = make_event_queue(store_settings)
    except ValueError as exc:  # S3 without SD_STORE_QUEUE_URL: serve the catalog, ingest nothing new
        log.error("no event queue: new uploads will not be ingested", reason=str(exc))
        queue = None
    processor = (ProcessorClient(settings.processor_target, idle_timeout_s=settings.dispatch_idle_timeout_s,
                                 timeout_s=settings.dispatch_timeout_s) if settings.processor_target else None)
    pipeline = Pipeline(settings, catalog, store, processor)
    consumer = (EventConsumer(settings, queue, catalog, on_session_event=lambda _sid: pipeline.nudge())
                if queue is not None else None)
    service = CatalogService(settings, catalog, store, on_change=pipeline.nudge)
    rt = GrpcRuntime("ingest", settings)
    register(rt, service)
    await rt.start()
    pipeline.start()
    if consumer is not None:
        consumer.start()
    log.info("ingest running", store=store_settings.backend, processor=settings.processor_target or None,
             owner=pipeline.owner, database=settings.sqlalchemy_url().split("@")[-1])
    return RunningIngest(rt.grpc_port, rt.metrics_port, catalog, store, queue, consumer, pipeline, service,
                         processor, settings, rt)
