"""gRPC servicer of the trainer service.

The v1 contract (protos/scale_diffusion/trainer/v1/trainer.proto) is published now so clients can be
written against it; methods not overridden here answer UNIMPLEMENTED until their issue lands.
"""

from scale_diffusion.trainer.v1 import trainer_pb2_grpc

SERVICE_NAME = "scale_diffusion.trainer.v1.TrainerService"


class TrainerService(trainer_pb2_grpc.TrainerServiceServicer):
    """The trainer API; every RPC inherited from the generated base answers UNIMPLEMENTED."""


def register(rt) -> None:
    """Adds this service to a GrpcRuntime."""
    rt.add(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, TrainerService(), SERVICE_NAME)
