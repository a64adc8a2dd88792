"""gRPC servicer of the evaluator service.

The v1 contract (protos/scale_diffusion/evaluator/v1/evaluator.proto) is published now so clients can be
written against it; methods not overridden here answer UNIMPLEMENTED until their issue lands.
"""

from scale_diffusion.evaluator.v1 import evaluator_pb2_grpc

SERVICE_NAME = "scale_diffusion.evaluator.v1.EvaluatorService"


class EvaluatorService(evaluator_pb2_grpc.EvaluatorServiceServicer):
    """The evaluator API; every RPC inherited from the generated base answers UNIMPLEMENTED."""


def register(rt) -> None:
    """Adds this service to a GrpcRuntime."""
    rt.add(evaluator_pb2_grpc.add_EvaluatorServiceServicer_to_server, EvaluatorService(), SERVICE_NAME)
