"""Builds a running ingest — catalog, event consumer, pipeline, gRPC API — from its settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import EventQueue, ObjectStore, make_event_queue, make_store
from sd_common.settings import StoreSettings
from sd_common.siws import SiwsAudience
from sd_ingest.catalog import Catalog
from sd_ingest.dispatch import ProcessorPool
from sd_ingest.intake import EventConsumer
from sd_ingest.pipeline import Pipeline
from sd_ingest.rewards import RewardsOperations
from sd_ingest.rewards_server import register_rewards
from sd_ingest.server import register
from sd_ingest.service import CatalogService
from sd_ingest.settings import IngestSettings, RewardsSettings
from sd_ingest.wallet_server import register_wallets
from sd_ingest.wallets import WalletStore

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
    rewards: RewardsOperations
    processor: ProcessorPool | None
    wallets: WalletStore
    settings: IngestSettings
    _rt: GrpcRuntime

    async def stop(self) -> None:
        """Stops polling, drains the API, lets in-flight steps finish (or releases their leases), closes."""
        await self._rt.stop()


async def build_ingest(rt: GrpcRuntime, store_settings: StoreSettings) -> RunningIngest:
    """Builds the ingest into ``rt``: catalog, store, queue, the gRPC API, and the event consumer and
    pipeline it hosts (started once the API serves, stopped beside its drain)."""
    settings: IngestSettings = rt.settings  # type: ignore[assignment]
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    rewards_settings = RewardsSettings()
    catalog = Catalog(settings.sqlalchemy_url(), ledger_config=rewards_settings.ledger_config())
    rt.on_stop(lambda: asyncio.to_thread(catalog.close))
    store = make_store(store_settings)
    rt.on_stop(store.close)
    try:
        queue = make_event_queue(store_settings)
    except ValueError as exc:  # S3 without SD_STORE_QUEUE_URL: serve the catalog, ingest nothing new
        log.error("no event queue: new uploads will not be ingested", reason=str(exc))
        queue = None
    if queue is not None:
        rt.on_stop(queue.close)
    processor = (ProcessorPool(settings.processor_target, slots_per_pod=settings.processor_slots_per_pod,
                               idle_timeout_s=settings.dispatch_idle_timeout_s, timeout_s=settings.dispatch_timeout_s,
                               resolve_every_s=settings.processor_resolve_every_s)
                 if settings.processor_target else None)
    if processor is not None:
        rt.on_stop(processor.close)
    pipeline = Pipeline(settings, catalog, store, processor)
    consumer = (EventConsumer(settings, queue, catalog, on_session_event=lambda _sid: pipeline.nudge())
                if queue is not None else None)
    publisher = None
    if settings.dataset_version_resources:
        from sd_ingest.version_resources import DatasetVersionPublisher, default_namespace, parse_policy

        publisher = DatasetVersionPublisher(settings.dataset_version_namespace or default_namespace(),
                                            parse_policy(settings.dataset_version_policy))
        rt.on_stop(publisher.close)
    service = CatalogService(settings, catalog, store, on_change=pipeline.nudge,
                             on_dataset=publisher.publish if publisher is not None else None)
    register(rt, service)
    wallets = WalletStore(settings.sqlalchemy_url(),  # the catalog's database, tables of its own
                          audience=SiwsAudience(settings.siws_domain, settings.siws_uri, settings.siws_chain_id))
    rt.on_stop(lambda: asyncio.to_thread(wallets.close))
    register_wallets(rt, wallets)
    rewards = RewardsOperations(catalog, label_secret=rewards_settings.label_secret,
                                wallets=wallets.active_wallets, wallet_events=wallets.events)
    register_rewards(rt, rewards)

    async def start_background() -> None:
        pipeline.start()
        if consumer is not None:
            consumer.start()
        log.info("ingest running", store=store_settings.backend, processor=settings.processor_target or None,
                 owner=pipeline.owner, database=settings.sqlalchemy_url().split("@")[-1])

    async def stop_background() -> None:
        if consumer is not None:
            await consumer.stop()
        await pipeline.stop(settings.shutdown_grace_s)

    rt.host("pipeline", start_background, stop_background)
    return RunningIngest(0, 0, catalog, store, queue, consumer, pipeline, service, rewards, processor, wallets, settings, rt)


async def start_ingest(settings: IngestSettings, store_settings: StoreSettings) -> RunningIngest:
    """Opens the catalog, store and queue, starts the API, the consumer and the pipeline."""
    rt = GrpcRuntime("ingest", settings)
    ingest = await build_ingest(rt, store_settings)
    await rt.start()
    ingest.grpc_port, ingest.metrics_port = rt.grpc_port, rt.metrics_port
    return ingest
