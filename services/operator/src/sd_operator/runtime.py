"""The operator inside the project's service runtime: kopf's watches and handlers run in the same process
as the gRPC health service and the Prometheus endpoint (in a thread of their own), and stop with them on
SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import threading

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
    s.posting.level = logging.WARNING  # handler errors become Kubernetes events, chatter does not
    # The CRDs come with the chart before the operator starts: no watching for new ones, so no
    # cluster-wide rights are needed.
    s.scanning.disabled = True
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="scalediffusion.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="scalediffusion.io")
    return s


class KopfHost:
    """Runs kopf as something the gRPC runtime hosts: started after gRPC serves, stopped beside its drain.

    kopf runs in a thread with an event loop of its own: when it stops it cancels every task it did not
    find at its start, which in a shared loop would include the gRPC server's own shutdown.
    """

    def __init__(self, settings: OperatorSettings, context: OperatorContext,
                 runtime: GrpcRuntime | None = None) -> None:
        self.settings = settings
        self.context = context
        self.runtime = runtime
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        namespaces = self.settings.namespace_list()
        registry = build_registry(self.settings)
        # The same credentials as the operator's own client (kube.py): the pod's service account, or a
        # kubeconfig outside a cluster. A registry of one's own gets none of kopf's default login handlers.
        kopf.on.login(registry=registry, id="login")(kopf.login_via_client)
        try:
            # standalone: one replica with the Recreate strategy never overlaps another, so kopf's peering
            # (its own CRDs and cluster-wide rights) would only add moving parts.
            asyncio.run(kopf.operator(
                registry=registry, settings=kopf_settings(), standalone=True, clusterwide=not namespaces,
                namespaces=namespaces, memo=self.context, stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:  # noqa: BLE001 - reported below, the thread must not die silently
            self._error = exc
        if not self._stop.is_set() and self._loop is not None and self.runtime is not None:
            # kopf ending on its own (lost credentials, a crash) must fail the liveness probe.
            self._loop.call_soon_threadsafe(self._lost)

    def _lost(self) -> None:
        log.error("kopf stopped", error=repr(self._error))
        asyncio.ensure_future(self.runtime.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING))

    async def start(self) -> None:
        """Starts kopf and returns once its indices are filled and handlers run."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="kopf", daemon=True)
        self._thread.start()
        while not await asyncio.to_thread(self._ready.wait, 0.5):
            if not self._thread.is_alive():
                raise RuntimeError(f"kopf stopped before it was ready: {self._error!r}")
        log.info("operator watching", namespaces=self.settings.namespace_list() or "all")

    async def stop(self) -> None:
        """Asks kopf to stop and waits for it (handlers in flight finish) within the grace period."""
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, self.settings.shutdown_grace_s)
        self.context.kube.close()


def register(rt: GrpcRuntime, settings: OperatorSettings) -> None:
    """Adds the operator to a service runtime."""
    host = KopfHost(settings, OperatorContext(settings, Kube()), runtime=rt)
    rt.host("kopf", host.start, host.stop)
