"""gRPC servicer of the processor service.

The v1 contract (protos/scale_diffusion/processor/v1/processor.proto) is published now so clients can be
written against it; methods not overridden here answer UNIMPLEMENTED until their issue lands.
"""

from scale_diffusion.processor.v1 import processor_pb2_grpc

SERVICE_NAME = "scale_diffusion.processor.v1.ProcessorService"


class ProcessorService(processor_pb2_grpc.ProcessorServiceServicer):
    """The processor API; every RPC inherited from the generated base answers UNIMPLEMENTED."""


def register(rt) -> None:
    """Adds this service to a GrpcRuntime."""
    rt.add(processor_pb2_grpc.add_ProcessorServiceServicer_to_server, ProcessorService(), SERVICE_NAME)
