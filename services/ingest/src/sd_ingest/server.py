"""gRPC servicer of the ingest service.

The v1 contract (protos/scale_diffusion/ingest/v1/ingest.proto) is published now so clients can be
written against it; methods not overridden here answer UNIMPLEMENTED until their issue lands.
"""

from scale_diffusion.ingest.v1 import ingest_pb2_grpc

SERVICE_NAME = "scale_diffusion.ingest.v1.IngestService"


class IngestService(ingest_pb2_grpc.IngestServiceServicer):
    """The ingest API; every RPC inherited from the generated base answers UNIMPLEMENTED."""


def register(rt) -> None:
    """Adds this service to a GrpcRuntime."""
    rt.add(ingest_pb2_grpc.add_IngestServiceServicer_to_server, IngestService(), SERVICE_NAME)
