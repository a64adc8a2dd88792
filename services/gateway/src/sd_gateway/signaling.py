"""WebRTC signaling relay: places a browser's SDP offer on a diffusion pod with a free slot, over gRPC.

The diffusion target (`SD_GATEWAY_DIFFUSION_TARGET`) names one or more pods, comma-separated: each
entry is a `host:port` (one pod) or `dns:///name:port` (every address the name resolves to is a pod,
as a Kubernetes headless Service answers; resolved again every `resolve_every_s`). For each offer the
gateway asks every pod for its capacity (GetCapacity, concurrently, with a short deadline) and offers
the stream to the pod with the most free slots, the fewest active streams breaking ties, and a
rotating start breaking the rest. A pod that fills up between the two calls, or does not answer, is
passed over for the next; with no free slot anywhere the player is told to retry, with the shortest
hint a pod gave (GetCapacity's `busy_retry_after_s`, or a refusal's `retry-after-s`). A stream lives on its pod: the pod itself frees its slot when the tab closes or ICE
fails (docs/diffusion.md), so nothing here holds state per stream.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import grpc
import structlog
from prometheus_client import Counter

from sd_common import endpoints
from sd_common.endpoints import EndpointResolver
from sd_common.error_mapping import retry_after_s
from sd_common.tracing import service_channel
from sd_gateway.errors import Busy, InvalidArgument, Unavailable
from scale_diffusion.diffusion.v1 import diffusion_pb2, diffusion_pb2_grpc

_MAX_SDP_BYTES = 64 * 1024
BUSY_RETRY_AFTER_S = 5.0  # when a busy diffusion service gives no hint of its own

PLACEMENTS = Counter("sd_gateway_diffusion_placements_total", "Diffusion offers by how they ended",
                     ["outcome"])  # placed, busy, unavailable, refused
PODS_PASSED = Counter("sd_gateway_diffusion_pods_passed_total",
                      "Pods passed over while placing an offer, by why", ["reason"])  # full, unreachable

log = structlog.get_logger()


@dataclass(frozen=True)
class SignalAnswer:
    sdp_answer: str
    stream_id: str
    backend: str
    model: str = ""
    pod: str = ""  # the target that took the stream


@dataclass(frozen=True)
class PodCapacity:
    target: str
    free: int
    active: int
    retry_after_s: float = BUSY_RETRY_AFTER_S  # the pod's hint for a player it would turn away


def parse_targets(value: str | None) -> list[str]:
    """The entries of a diffusion target setting, in order, without blanks or repeats."""
    return endpoints.parse_targets(value, "diffusion target")


class DiffusionSignaling:
    """Places offers on the pods of the diffusion target; without one, every offer answers Unavailable."""

    def __init__(self, target: str | None, timeout_s: float = 10.0, *, capacity_timeout_s: float = 1.0,
                 resolve_every_s: float = 10.0) -> None:
        self._entries = parse_targets(target)
        self._timeout_s = timeout_s
        self._capacity_timeout_s = capacity_timeout_s
        self._resolver = EndpointResolver(self._entries, resolve_every_s=resolve_every_s, what="diffusion pods")
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._turn = itertools.count()

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    async def offer(self, session_id: str, sdp_offer: str, prompt: str) -> SignalAnswer:
        """The SDP answer of the pod that took the stream."""
        if not sdp_offer.startswith("v=0") or len(sdp_offer.encode()) > _MAX_SDP_BYTES:
            raise InvalidArgument("sdp_offer must be an SDP offer (starting 'v=0') of at most 64 KiB")
        if not self._entries:
            raise Unavailable("the diffusion view is not available: no diffusion service is configured; "
                              "the plain render is recorded instead")
        pods = await self.capacities()
        if not pods:
            PLACEMENTS.labels("unavailable").inc()
            raise Unavailable("the diffusion service did not answer: no diffusion pod is reachable")
        start = next(self._turn)
        order = sorted(range(len(pods)), key=lambda i: (-pods[i].free, pods[i].active, (i - start) % len(pods)))
        hints = [p.retry_after_s for p in pods if p.free <= 0]
        request = diffusion_pb2.CreateStreamRequest(session_id=session_id, sdp_offer=sdp_offer, prompt=prompt)
        for pod in (pods[i] for i in order):
            if pod.free <= 0:
                continue
            stub = diffusion_pb2_grpc.DiffusionServiceStub(self._channel(pod.target))
            try:
                resp = await stub.CreateStream(request, timeout=self._timeout_s)
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    PLACEMENTS.labels("refused").inc()
                    raise InvalidArgument(f"the diffusion service refused the offer: {e.details()}") from None
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # filled up since it said it had room
                    PODS_PASSED.labels("full").inc()
                    hints.append(retry_after_s(e) or BUSY_RETRY_AFTER_S)
                    continue
                if code == grpc.StatusCode.UNIMPLEMENTED:
                    PLACEMENTS.labels("unavailable").inc()
                    raise Unavailable("the diffusion view is not available yet: the diffusion service does not "
                                      "stream in this release") from None
                PODS_PASSED.labels("unreachable").inc()
                log.warning("diffusion pod did not take the stream", pod=pod.target, code=code.name)
                continue
            PLACEMENTS.labels("placed").inc()
            log.info("diffusion stream placed", pod=pod.target, stream_id=resp.stream_id,
                     free_before=pod.free, pods=len(pods))
            return SignalAnswer(resp.sdp_answer, resp.stream_id, resp.backend, resp.model, pod.target)
        PLACEMENTS.labels("busy").inc()
        wait_s = min(hints) if hints else BUSY_RETRY_AFTER_S
        raise Busy(f"every diffusion stream is busy; try again in {wait_s:g} s", wait_s)

    async def capacities(self) -> list[PodCapacity]:
        """Every reachable pod's free slots, asked concurrently; a pod that does not answer is left out."""
        targets = await self.pods()
        answers = await asyncio.gather(*(self._capacity(t) for t in targets))
        return [a for a in answers if a is not None]

    async def _capacity(self, target: str) -> PodCapacity | None:
        stub = diffusion_pb2_grpc.DiffusionServiceStub(self._channel(target))
        try:
            c = await stub.GetCapacity(diffusion_pb2.GetCapacityRequest(), timeout=self._capacity_timeout_s)
        except grpc.aio.AioRpcError as e:
            PODS_PASSED.labels("unreachable").inc()
            log.warning("diffusion pod did not say its capacity", pod=target, code=e.code().name)
            return None
        return PodCapacity(target, max(0, c.streams_max - c.streams_active), c.streams_active,
                           c.busy_retry_after_s or BUSY_RETRY_AFTER_S)

    async def pods(self) -> list[str]:
        """The pod targets now: `host:port` entries as they are, `dns:///` entries resolved (cached)."""
        pods = await self._resolver.pods()
        for gone in set(self._channels) - set(pods):
            await self._channels.pop(gone).close()
        return pods

    def _channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            self._channels[target] = service_channel(target)
        return self._channels[target]

    async def close(self) -> None:
        """Closes the channels."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
