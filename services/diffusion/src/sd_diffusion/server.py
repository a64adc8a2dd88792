"""gRPC servicer of the diffusion service.

The v1 contract (protos/scale_diffusion/diffusion/v1/diffusion.proto) is published now so clients can be
written against it; methods not overridden here answer UNIMPLEMENTED until their issue lands.
"""

from scale_diffusion.diffusion.v1 import diffusion_pb2_grpc

SERVICE_NAME = "scale_diffusion.diffusion.v1.DiffusionService"


class DiffusionService(diffusion_pb2_grpc.DiffusionServiceServicer):
    """The diffusion API; every RPC inherited from the generated base answers UNIMPLEMENTED."""


def register(rt) -> None:
    """Adds this service to a GrpcRuntime."""
    rt.add(diffusion_pb2_grpc.add_DiffusionServiceServicer_to_server, DiffusionService(), SERVICE_NAME)
