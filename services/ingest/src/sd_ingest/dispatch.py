"""Hands one session to a processor over gRPC and waits for its final answer.

``ProcessSession`` streams progress and ends with a message carrying the result. A stream that goes
quiet for ``idle_timeout_s`` is cancelled, so a hung processor costs one attempt, not the session.

``ProcessorPool`` spreads sessions over every processor pod the target names (comma-separated
`host:port` entries, or `dns:///name:port` for a headless Service: each address is a pod, resolved
again every few seconds, so pods that come with a scale-up are used and pods that went are dropped).
Each pod has its own channel and ``slots`` sessions at once; a session goes to the reachable pod with
the most free slots, a rotating start breaking ties. The slot is taken before the session is claimed,
so a full or unreachable pool costs no attempt. A pod that cannot be reached, or whose stream breaks
(UNAVAILABLE: it was killed), is passed over for a backoff that doubles while it keeps failing, so a
dead pod does not stall the rest; a slow one holds only its own slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog
from scale_diffusion.processor.v1 import processor_pb2, processor_pb2_grpc
from sd_common.endpoints import EndpointResolver, parse_targets
from sd_common.tracing import service_channel

from sd_ingest import metrics

log = structlog.get_logger()

# Statuses that mean "this request will never succeed as it is"; everything else is worth a retry
# (UNAVAILABLE from a killed processor, DEADLINE_EXCEEDED, INTERNAL, UNIMPLEMENTED while a
# processor release rolls out, …).
PERMANENT_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
})


class DispatchFailed(Exception):
    """One attempt failed; ``permanent`` says whether retrying is pointless."""

    def __init__(self, message: str, *, permanent: bool = False, pod_down: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.pod_down = pod_down  # the processor could not be reached, or its stream broke


class ProcessorClient:
    """A channel to one processor target, reused by every dispatch of this replica."""

    def __init__(self, target: str, *, idle_timeout_s: float, timeout_s: float) -> None:
        self.target = target
        self._idle_timeout_s = idle_timeout_s
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> processor_pb2_grpc.ProcessorServiceStub:
        if self._channel is None:
            self._channel = service_channel(self.target, options=[
                ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                # A restarted processor on the same address is found again quickly.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ])
        return processor_pb2_grpc.ProcessorServiceStub(self._channel)

    async def ready(self, timeout_s: float) -> bool:
        """Whether the channel connects within ``timeout_s``."""
        self._stub()
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def process(self, request: processor_pb2.ProcessSessionRequest,
                      on_progress: Callable[[processor_pb2.ProcessSessionResponse], None] | None = None,
                      *, ready_timeout_s: float | None = None) -> processor_pb2.ProcessSessionResult:
        """Runs ProcessSession to its end; the final result, or DispatchFailed.

        The channel must connect within ``ready_timeout_s`` (default: the idle timeout).
        """
        # A processor that is restarting (a crash, a rollout) is waited for rather than costing the
        # session an attempt it never got; the pool waits less when other pods can take the session.
        wait_s = self._idle_timeout_s if ready_timeout_s is None else ready_timeout_s
        if not await self.ready(wait_s):
            raise DispatchFailed(f"processor {self.target} was unreachable for {wait_s:g} s", pod_down=True)
        call = self._stub().ProcessSession(request, timeout=self._timeout_s, wait_for_ready=False)
        # iterated, not read(): a tracing interceptor hands back an iterator that read() refuses
        messages = call.__aiter__()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(anext(messages), self._idle_timeout_s)
                except TimeoutError:
                    call.cancel()
                    raise DispatchFailed(
                        f"processor {self.target} sent nothing for {self._idle_timeout_s:g} s; call cancelled"
                    ) from None
                except StopAsyncIteration:
                    raise DispatchFailed(f"processor {self.target} ended the stream without a result") from None
                if on_progress is not None:
                    on_progress(message)
                if message.HasField("result"):
                    return message.result
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise DispatchFailed(f"processor {self.target} answered {code.name}: {exc.details()}",
                                 permanent=code in PERMANENT_CODES,
                                 pod_down=code == grpc.StatusCode.UNAVAILABLE) from None
        finally:
            if not call.done():
                call.cancel()
            await messages.aclose()  # ends the call's span, if tracing wrapped it

    async def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


@dataclass
class _Pod:
    client: ProcessorClient
    in_flight: int = 0
    failures: int = 0          # consecutive: the backoff doubles with each
    down_until: float = 0.0    # monotonic time before which the pod is passed over


class ProcessorSlot:
    """One session's place on one pod, from ``ProcessorPool.reserve`` until ``release``."""

    def __init__(self, pool: ProcessorPool, pod: _Pod, ready_timeout_s: float) -> None:
        self._pool = pool
        self._pod = pod
        self.target = pod.client.target
        self._ready_timeout_s = ready_timeout_s  # the reservation's: a pod lost since fails as fast
        self._released = False

    async def process(self, request: processor_pb2.ProcessSessionRequest,
                      on_progress: Callable[[processor_pb2.ProcessSessionResponse], None] | None = None,
                      ) -> processor_pb2.ProcessSessionResult:
        """ProcessSession on this slot's pod; a pod found down is passed over by later reservations."""
        try:
            result = await self._pod.client.process(request, on_progress, ready_timeout_s=self._ready_timeout_s)
        except DispatchFailed as exc:
            if exc.pod_down:
                self._pool.mark_down(self._pod, str(exc))
            metrics.DISPATCHES.labels(self.target, "retry" if not exc.permanent else "failed").inc()
            raise
        self._pod.failures = 0
        metrics.DISPATCHES.labels(self.target, "answered").inc()
        return result

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pod.in_flight -= 1
            metrics.POD_IN_FLIGHT.labels(self.target).set(self._pod.in_flight)


class ProcessorPool:
    """Every processor pod of the target setting, each with its own channel and ``slots_per_pod``."""

    def __init__(self, target: str, *, slots_per_pod: int, idle_timeout_s: float, timeout_s: float,
                 resolve_every_s: float = 10.0, connect_timeout_s: float = 3.0, down_s: float = 2.0,
                 down_max_s: float = 60.0) -> None:
        self.target = target
        self._resolver = EndpointResolver(parse_targets(target, "processor target"),
                                          resolve_every_s=resolve_every_s, what="processor pods")
        self._slots = slots_per_pod
        self._idle_timeout_s = idle_timeout_s
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._down_s = down_s
        self._down_max_s = down_max_s
        self._pods: dict[str, _Pod] = {}
        self._retired: list[_Pod] = []  # pods gone from DNS, closed once their sessions end
        self._turn = itertools.count()

    async def refresh(self) -> list[str]:
        """Resolves the target again (cached for ``resolve_every_s``); the pod targets now."""
        targets = await self._resolver.pods()
        for target in targets:
            if target not in self._pods:
                self._pods[target] = _Pod(ProcessorClient(target, idle_timeout_s=self._idle_timeout_s,
                                                          timeout_s=self._timeout_s))
        for gone in set(self._pods) - set(targets):
            self._retired.append(self._pods.pop(gone))
            with contextlib.suppress(KeyError):  # never labelled if it took no session
                metrics.POD_IN_FLIGHT.remove(gone)
        for pod in [p for p in self._retired if p.in_flight == 0]:
            self._retired.remove(pod)
            await pod.client.close()
        return targets

    def free_slots(self) -> int:
        """Free slots on the pods not passed over now (as of the last refresh)."""
        now = time.monotonic()
        return sum(max(0, self._slots - p.in_flight) for p in self._pods.values() if p.down_until <= now)

    def mark_down(self, pod: _Pod, why: str) -> None:
        pod.failures += 1
        delay = min(self._down_max_s, self._down_s * 2 ** (pod.failures - 1))
        pod.down_until = time.monotonic() + delay
        metrics.PODS_PASSED.labels(pod.client.target).inc()
        log.warning("processor passed over", pod=pod.client.target, for_s=round(delay, 1), why=why)

    async def reserve(self) -> ProcessorSlot | None:
        """A slot on the reachable pod with the most free slots, or None when every pod is full or down.

        With one pod it is waited for (up to the idle timeout) as a restarting processor is; with
        several, a pod that does not connect within ``connect_timeout_s`` is passed over for the next.
        """
        await self.refresh()
        now = time.monotonic()
        pods = list(self._pods.values())
        start = next(self._turn)
        order = sorted(range(len(pods)), key=lambda i: (-(self._slots - pods[i].in_flight), (i - start) % len(pods)))
        candidates = [pods[i] for i in order if pods[i].in_flight < self._slots and pods[i].down_until <= now]
        wait_s = self._idle_timeout_s if len(pods) == 1 else self._connect_timeout_s
        for pod in candidates:
            pod.in_flight += 1  # held while connecting, so concurrent reservations see it
            if pod.in_flight <= self._slots and await pod.client.ready(wait_s):
                metrics.POD_IN_FLIGHT.labels(pod.client.target).set(pod.in_flight)
                return ProcessorSlot(self, pod, wait_s)
            pod.in_flight -= 1
            if pod.in_flight < self._slots:  # not full: it did not connect
                self.mark_down(pod, f"did not connect within {wait_s:g} s")
        return None

    async def close(self) -> None:
        """Closes every channel."""
        for pod in [*self._pods.values(), *self._retired]:
            await pod.client.close()
        self._pods.clear()
        self._retired.clear()
