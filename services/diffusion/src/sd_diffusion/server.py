"""gRPC servicer of the diffusion service: streams over WebRTC, capacity, prompt changes, stats."""

from __future__ import annotations

import time

from sd_diffusion.backends import make_backend
from sd_diffusion.errors import ERRORS
from sd_diffusion.settings import DiffusionSettings
from sd_diffusion.streams import StreamManager
from scale_diffusion.diffusion.v1 import diffusion_pb2 as pb
from scale_diffusion.diffusion.v1 import diffusion_pb2_grpc

SERVICE_NAME = "scale_diffusion.diffusion.v1.DiffusionService"


def gpu_memory_bytes(device: str) -> int:
    """torch's allocated bytes on a CUDA device; 0 on CPU or without torch."""
    if not device.startswith("cuda"):
        return 0
    import torch

    return int(torch.cuda.memory_allocated(device))


class DiffusionService(diffusion_pb2_grpc.DiffusionServiceServicer):
    """The diffusion API over one StreamManager."""

    def __init__(self, manager: StreamManager) -> None:
        self.manager = manager

    async def CreateStream(self, request, context):
        stream_id, answer = await self.manager.create(request.session_id, request.sdp_offer, request.prompt)
        info = self.manager.backend.info
        return pb.CreateStreamResponse(stream_id=stream_id, sdp_answer=answer, backend=info.name, model=info.model)

    async def CloseStream(self, request, context):
        await self.manager.close(request.stream_id, "close_stream")
        return pb.CloseStreamResponse()

    async def GetCapacity(self, request, context):
        info = self.manager.backend.info
        return pb.GetCapacityResponse(streams_active=self.manager.active, streams_max=self.manager.settings.max_streams,
                                      backend=info.name, device=info.device, model=info.model,
                                      peer_connections=self.manager.peer_connections,
                                      busy_retry_after_s=self.manager.settings.busy_retry_after_s)

    async def UpdateStream(self, request, context):
        self.manager.get(request.stream_id).set_prompt(request.prompt)
        return pb.UpdateStreamResponse()

    async def GetStats(self, request, context):
        now = time.monotonic()
        info = self.manager.backend.info
        return pb.GetStatsResponse(
            streams=[_stream_stats(s.stats(now)) for s in self.manager.streams.values()],
            peer_connections=self.manager.peer_connections, backend=info.name, model=info.model,
            gpu_memory_bytes=gpu_memory_bytes(info.device))


def _stream_stats(stats: dict) -> pb.StreamStats:
    """A Stream.stats() dict as the proto message (its latency summaries and per-stage map)."""
    stages = {name: pb.LatencySummary(**v) for name, v in stats.pop("stages", {}).items()}
    fields = {k: (pb.LatencySummary(**v) if isinstance(v, dict) else v) for k, v in stats.items()}
    return pb.StreamStats(**fields, stages=stages)


def build_backend(settings: DiffusionSettings):
    """The backend the settings name, with its own options."""
    if settings.backend == "look":
        return make_backend("look", strength=settings.look_strength, delay_ms=settings.look_delay_ms)
    if settings.backend == "wan":
        return make_backend("wan", preset=settings.wan_preset,
                            weights_dir=None if settings.model_dir is None else str(settings.model_dir),
                            device=settings.device, num_steps=settings.num_steps,
                            tiny_vae_decoder=None if settings.wan_tiny_decoder is None else str(settings.wan_tiny_decoder))
    if settings.backend == "turbo":
        return make_backend("turbo", preset=settings.turbo_preset,
                            model_dir=None if settings.model_dir is None else str(settings.model_dir),
                            tiny_vae_dir=None if settings.turbo_tiny_vae_dir is None
                            else str(settings.turbo_tiny_vae_dir),
                            strength=settings.turbo_strength, num_steps=settings.turbo_num_steps,
                            seed=settings.turbo_seed, device=settings.device, dtype=settings.turbo_dtype)
    return make_backend(settings.backend)


def register(rt, settings: DiffusionSettings | None = None) -> DiffusionService:
    """Adds the diffusion service to a GrpcRuntime; its streams close when the runtime stops."""
    settings = settings or rt.settings
    manager = StreamManager(settings, build_backend(settings))
    service = DiffusionService(manager)
    rt.add(diffusion_pb2_grpc.add_DiffusionServiceServicer_to_server, service, SERVICE_NAME)
    rt.map_errors(ERRORS)
    rt.host("streams", manager.start, manager.stop)
    return service
