"""One mechanism maps domain exceptions to gRPC codes for every service, on a real gRPC server."""

from __future__ import annotations

import grpc
import pytest
from scale_diffusion.diffusion.v1 import diffusion_pb2, diffusion_pb2_grpc
from scale_diffusion.processor.v1 import processor_pb2, processor_pb2_grpc

from sd_common.error_mapping import GRPC_CODE_FOR_HTTP, STORE_RULES, ErrorMapping, ServiceError, rule
from sd_common.grpc_runtime import GrpcRuntime
from sd_common.objectstore import (
    IncompleteBody, InvalidKey, MultipartInvalid, ObjectNotFound, ObjectTooLarge, SignatureInvalid, UrlExpired,
)
from sd_common.problems import Problem
from sd_common.settings import ServiceSettings


class Conflict(ServiceError):
    grpc_code, http_status, code = grpc.StatusCode.FAILED_PRECONDITION, 409, "failed_precondition"


class DomainThing(Exception):
    """A domain exception that knows nothing of gRPC."""


TABLE = ErrorMapping(rule(DomainThing, grpc.StatusCode.OUT_OF_RANGE, 400, "out_of_range",
                          lambda e: f"thing out of range: {e}"))


class Raising(diffusion_pb2_grpc.DiffusionServiceServicer):
    """CreateStream raises whatever the request's session id names; GetCapacity is not overridden."""

    async def CreateStream(self, request, context):
        raise {
            "missing": ObjectNotFound("no object 'raw/s/video.webm' in the store"),
            "conflict": Conflict("session s is already complete", [Problem("state", "", "it is UPLOADED")]),
            "domain": DomainThing("speed 99"),
            "disk": PermissionError(13, "Permission denied"),
            "bug": KeyError("oops"),
        }[request.session_id]


class Streaming(processor_pb2_grpc.ProcessorServiceServicer):
    """Streams one progress message, then fails the way a store read does mid-session."""

    async def ProcessSession(self, request, context):
        yield processor_pb2.ProcessSessionResponse(frames_done=1)
        raise ObjectNotFound("no object 'raw/s/frames.jsonl' in the store")


@pytest.fixture
async def channel():
    rt = GrpcRuntime("test", ServiceSettings(grpc_port=0, metrics_port=0, shutdown_grace_s=0.5))
    rt.add(diffusion_pb2_grpc.add_DiffusionServiceServicer_to_server, Raising(),
           "scale_diffusion.diffusion.v1.DiffusionService")
    rt.add(processor_pb2_grpc.add_ProcessorServiceServicer_to_server, Streaming(),
           "scale_diffusion.processor.v1.ProcessorService")
    rt.map_errors(TABLE + ErrorMapping(rule(ServiceError, build=ServiceError.status)) + STORE_RULES)
    await rt.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as ch:
        yield ch
    await rt.stop()


async def _status(ch, session_id: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await diffusion_pb2_grpc.DiffusionServiceStub(ch).CreateStream(
            diffusion_pb2.CreateStreamRequest(session_id=session_id), timeout=10)
    return err.value.code(), err.value.details()


async def test_each_error_reaches_the_client_with_its_mapped_code_and_message(channel):
    assert await _status(channel, "missing") == (grpc.StatusCode.NOT_FOUND,
                                                 "no object 'raw/s/video.webm' in the store")
    assert await _status(channel, "conflict") == (grpc.StatusCode.FAILED_PRECONDITION,
                                                  "session s is already complete\nit is UPLOADED")
    assert await _status(channel, "domain") == (grpc.StatusCode.OUT_OF_RANGE, "thing out of range: speed 99")
    code, details = await _status(channel, "disk")
    assert code == grpc.StatusCode.UNAVAILABLE and "object store failed" in details and "Permission denied" in details


async def test_a_bug_is_internal_with_no_traceback_and_unimplemented_stays_unimplemented(channel):
    code, details = await _status(channel, "bug")
    assert code == grpc.StatusCode.INTERNAL
    assert details == "the test failed unexpectedly (KeyError); see its logs"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await diffusion_pb2_grpc.DiffusionServiceStub(channel).GetCapacity(diffusion_pb2.GetCapacityRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_an_error_in_the_middle_of_a_stream_is_mapped_too(channel):
    call = processor_pb2_grpc.ProcessorServiceStub(channel).ProcessSession(processor_pb2.ProcessSessionRequest())
    first = await call.read()
    assert first.frames_done == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "frames.jsonl" in err.value.details()


@pytest.mark.parametrize("exc", [InvalidKey("k"), ObjectNotFound("k"), SignatureInvalid("k"), UrlExpired("k"),
                                 ObjectTooLarge("k"), IncompleteBody("k"), MultipartInvalid("k")])
def test_a_store_error_means_the_same_on_grpc_as_on_http(exc):
    status = STORE_RULES.status_for(exc)
    assert status.http_status == exc.http_status
    assert status.grpc_code == GRPC_CODE_FOR_HTTP[exc.http_status]
    assert status.code == type(exc).__name__ and status.message == "k"
