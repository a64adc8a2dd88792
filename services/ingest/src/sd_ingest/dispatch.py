"""Hands one session to a processor over gRPC and waits for its final answer.

``ProcessSession`` streams progress and ends with a message carrying the result. A stream that goes
quiet for ``idle_timeout_s`` is cancelled, so a hung processor costs one attempt, not the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from scale_diffusion.processor.v1 import processor_pb2, processor_pb2_grpc
from sd_common.tracing import service_channel

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

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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

    async def process(self, request: processor_pb2.ProcessSessionRequest,
                      on_progress: Callable[[processor_pb2.ProcessSessionResponse], None] | None = None,
                      ) -> processor_pb2.ProcessSessionResult:
        """Runs ProcessSession to its end; the final result, or DispatchFailed."""
        stub = self._stub()
        try:
            # A processor that is restarting (a crash, a rollout) is waited for, up to the idle timeout,
            # rather than costing the session an attempt it never got.
            await asyncio.wait_for(self._channel.channel_ready(), self._idle_timeout_s)
        except TimeoutError:
            raise DispatchFailed(f"processor {self.target} was unreachable for {self._idle_timeout_s:g} s") from None
        call = stub.ProcessSession(request, timeout=self._timeout_s, wait_for_ready=False)
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
                                 permanent=code in PERMANENT_CODES) from None
        finally:
            if not call.done():
                call.cancel()
            await messages.aclose()  # ends the call's span, if tracing wrapped it

    async def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
