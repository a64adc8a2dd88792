"""The operator inside the project's service runtime: kopf's watches and handlers run in the same event
loop as the gRPC health service and the Prometheus endpoint, and stop with them on SIGTERM."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import structlog
from grpc_health.v1 import health_pb2
from sd_common.grpc_runtime import GrpcRuntime

from sd_operator import datasetversion, evaluation, indices, trainingrun
from sd_operator.context import OperatorContext
from sd_operator.kube import Kube
from sd_operator.settings import OperatorSettings

log = structlog.get_logger()


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler and index of the operator, in a registry of its own."""
    registry = kopf.OperatorRegistry()
    indices.register(registry)
    trainingrun.register(registry, settings.reconcile_interval_s)
    evaluation.register(registry, settings.reconcile_interval_s)
    datasetversion.register(registry)
    return registry


def kopf_settings() -> kopf.OperatorSettings:
    """kopf's own settings: no finalizers anywhere, progress in annotations, events of warnings only."""
    s = kopf.OperatorSettings()
    s.posting.level = 30  # logging.WARNING: handler errors become Kubernetes events, chatter does not
    # The CRDs come with the chart before the operator starts: no watching for new ones, so no
    # cluster-wide rights are needed.
    s.scanning.disabled = True
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="scalediffusion.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="scalediffusion.io")
    return s


class KopfHost:
    """Runs kopf as something the gRPC runtime hosts: started after gRPC serves, stopped beside its drain."""

    def __init__(self, settings: OperatorSettings, context: OperatorContext, runtime: GrpcRuntime | None = None,
                 settings_hook: Any = None) -> None:
        self.settings = settings
        self.context = context
        self.runtime = runtime
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._kopf_settings_hook = settings_hook

    async def start(self) -> None:
        """Starts kopf and returns once its indices are filled and handlers run."""
        namespaces = self.settings.namespace_list()
        ks = kopf_settings()
        if self._kopf_settings_hook:
            self._kopf_settings_hook(ks)
        # standalone: one replica with the Recreate strategy never overlaps another, so kopf's peering
        # (its own CRDs and cluster-wide rights) would only add moving parts.
        self._task = asyncio.create_task(kopf.operator(
            registry=build_registry(self.settings), settings=ks, standalone=True,
            clusterwide=not namespaces, namespaces=namespaces, memo=self.context,
            stop_flag=self._stop, ready_flag=self._ready))
        self._task.add_done_callback(self._ended)
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            ready.cancel()
            self._task.result()
            raise RuntimeError("kopf stopped before it was ready")
        log.info("operator watching", namespaces=namespaces or "all")

    def _ended(self, task: asyncio.Task) -> None:
        # kopf ending on its own (lost credentials, a crash) must fail the liveness probe.
        if self.runtime is not None and not self._stop.is_set():
            log.error("kopf stopped", error=repr(task.exception()) if not task.cancelled() else "cancelled")
            asyncio.ensure_future(self.runtime.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))

    async def stop(self) -> None:
        """Asks kopf to stop and waits for it (handlers in flight finish)."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.context.kube.close()


def register(rt: GrpcRuntime, settings: OperatorSettings) -> None:
    """Adds the operator to a service runtime."""
    host = KopfHost(settings, OperatorContext(settings, Kube()), runtime=rt)
    rt.host("kopf", host.start, host.stop)
