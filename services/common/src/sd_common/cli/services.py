"""The six services of a local stack: their modules, default ports, and a health probe."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    grpc_port: int
    metrics_port: int

    @property
    def module(self) -> str:
        return f"sd_{self.name}"

    @property
    def env_prefix(self) -> str:
        return f"SD_{self.name.upper()}_"


SERVICES = [
    ServiceSpec("gateway", 50051, 9101),
    ServiceSpec("ingest", 50052, 9102),
    ServiceSpec("processor", 50053, 9103),
    ServiceSpec("diffusion", 50054, 9104),
    ServiceSpec("trainer", 50055, 9105),
    ServiceSpec("evaluator", 50056, 9106),
]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on host:port ("0.0.0.0": on any address) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def services_at(offset: int = 0) -> list[ServiceSpec]:
    """The services with every port shifted by offset (to run a second stack beside the first)."""
    return [ServiceSpec(s.name, s.grpc_port + offset, s.metrics_port + offset) for s in SERVICES]


async def health_status(target: str, timeout_s: float = 2.0) -> str:
    """SERVING, NOT_SERVING, … from the standard gRPC health service, or UNREACHABLE."""
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""),
                                                                    timeout=timeout_s)
        except grpc.aio.AioRpcError as e:
            return "UNREACHABLE" if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                else e.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
