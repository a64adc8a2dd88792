"""WebRTC signaling relay: forwards a browser's SDP offer to the diffusion service over gRPC."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from sd_common.error_mapping import retry_after_s
from sd_common.tracing import service_channel
from sd_gateway.errors import Busy, InvalidArgument, Unavailable
from scale_diffusion.diffusion.v1 import diffusion_pb2, diffusion_pb2_grpc

_MAX_SDP_BYTES = 64 * 1024
BUSY_RETRY_AFTER_S = 5.0  # when a busy diffusion service gives no hint of its own


@dataclass(frozen=True)
class SignalAnswer:
    sdp_answer: str
    stream_id: str
    backend: str
    model: str = ""


class DiffusionSignaling:
    """Relays offers to one diffusion target; without one, every offer answers Unavailable."""

    def __init__(self, target: str | None, timeout_s: float = 10.0) -> None:
        self._target = target
        self._timeout_s = timeout_s
        self._channel = service_channel(target) if target else None

    async def offer(self, session_id: str, sdp_offer: str, prompt: str) -> SignalAnswer:
        """The diffusion pod's SDP answer to the browser's offer."""
        if not sdp_offer.startswith("v=0") or len(sdp_offer.encode()) > _MAX_SDP_BYTES:
            raise InvalidArgument("sdp_offer must be an SDP offer (starting 'v=0') of at most 64 KiB")
        if self._channel is None:
            raise Unavailable("the diffusion view is not available: no diffusion service is configured; "
                              "the plain render is recorded instead")
        stub = diffusion_pb2_grpc.DiffusionServiceStub(self._channel)
        try:
            resp = await stub.CreateStream(
                diffusion_pb2.CreateStreamRequest(session_id=session_id, sdp_offer=sdp_offer, prompt=prompt),
                timeout=self._timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise Unavailable("the diffusion view is not available yet: the diffusion service does not "
                                  "stream in this release") from None
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"the diffusion service refused the offer: {e.details()}") from None
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                wait_s = retry_after_s(e) or BUSY_RETRY_AFTER_S
                raise Busy(f"every diffusion stream is busy; try again in {wait_s:g} s", wait_s) from None
            raise Unavailable(f"the diffusion service did not answer: {e.code().name}") from None
        return SignalAnswer(resp.sdp_answer, resp.stream_id, resp.backend, resp.model)

    async def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            await self._channel.close()
