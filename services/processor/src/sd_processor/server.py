"""gRPC servicer of the processor service: request in, domain call, progress and result out.

Errors map to gRPC status codes through the table in ``errors.py`` and nowhere else. A session whose *content* is bad is
not an error: its result says ``rejected`` and names the problems.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import structlog
from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.processor.v1 import processor_pb2 as pb
from scale_diffusion.processor.v1 import processor_pb2_grpc
from sd_common.error_mapping import unexpected_error_message
from sd_common.objectstore import ObjectStore

from .align import MODE_FRAME_ID, MODE_TIMESTAMP
from .config import ProcessorConfig
from .errors import ERRORS, InvalidRequest, describe_error
from .job import StoreSink, check_request, process_from_store
from .pipeline import ProcessingResult
from .settings import ProcessorSettings

SERVICE_NAME = "scale_diffusion.processor.v1.ProcessorService"
log = structlog.get_logger()

_STAGES = {"validate": pb.PROCESSING_STAGE_VALIDATE, "align": pb.PROCESSING_STAGE_ALIGN,
           "clean": pb.PROCESSING_STAGE_CLEAN, "splice": pb.PROCESSING_STAGE_SPLICE,
           "export": pb.PROCESSING_STAGE_EXPORT, "done": pb.PROCESSING_STAGE_DONE}
_MODES = {MODE_FRAME_ID: pb.ALIGNMENT_MODE_FRAME_ID, MODE_TIMESTAMP: pb.ALIGNMENT_MODE_TIMESTAMP}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status of an error that ends a call, from the processor's one table (``ERRORS``)."""
    status = ERRORS.status_for(exc)
    if status is None:
        return grpc.StatusCode.INTERNAL, unexpected_error_message("processor", exc)
    return status.grpc_code, status.message


def result_message(r: ProcessingResult, output_prefix: str) -> pb.ProcessSessionResult:
    """The final result as the proto carries it."""
    return pb.ProcessSessionResult(
        frames_decoded=r.frames_decoded, frames_kept=r.frames_kept, segments_accepted=r.segments_accepted,
        segments_rejected=r.segments_rejected, qc_report_uri=output_prefix + r.keys["qc_report"],
        alignment_error_ms=r.alignment_error_ms,
        problems=[common_pb2.Problem(code=p.code, path=p.path, message=p.message) for p in r.problems],
        rejected=r.rejected, segments_uri=output_prefix + r.keys["segments"],
        alignment_mode=_MODES.get(r.alignment_mode, pb.ALIGNMENT_MODE_UNSPECIFIED),
        success_uri=output_prefix + r.keys["success"])


class ProcessorService(processor_pb2_grpc.ProcessorServiceServicer):
    """ProcessSession over one object store; at most ``max_concurrent_sessions`` run at once."""

    def __init__(self, store: ObjectStore, settings: ProcessorSettings, config: ProcessorConfig) -> None:
        self.store = store
        self.settings = settings
        self.config = config
        self._slots = asyncio.Semaphore(settings.max_concurrent_sessions)

    async def ProcessSession(self, request: pb.ProcessSessionRequest, context: grpc.aio.ServicerContext):
        bound = log.bind(session_id=request.session_id, attempt_id=request.attempt_id)
        try:
            raw, out = check_request(request.session_id, request.raw_uri, request.output_uri, request.attempt_id)
        except InvalidRequest as exc:
            await context.abort(*status_for(exc))
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def progress(stage: str, done: int, total: int) -> None:
            loop.call_soon_threadsafe(updates.put_nowait, (stage, done, total))

        async with self._slots:
            bound.info("processing", raw_uri=raw, output_uri=out)
            job = asyncio.create_task(process_from_store(
                self.store, session_id=request.session_id, raw_prefix=raw, sink=StoreSink(self.store, out, loop),
                config=self.config, attempt_id=request.attempt_id, work_dir=self.settings.work_dir,
                progress=progress, should_stop=stop.is_set, processor_version=self.settings.version))
            try:
                while not job.done() or not updates.empty():
                    getter = asyncio.ensure_future(updates.get())
                    await asyncio.wait({job, getter}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    stage, done, total = getter.result()
                    yield pb.ProcessSessionResponse(stage=_STAGES[stage], frames_done=done, frames_total=total)
                result = job.result()
            except asyncio.CancelledError:
                stop.set()  # the worker thread stops at its next frame batch
                job.add_done_callback(lambda t: t.cancelled() or t.exception())
                bound.info("cancelled by the caller")
                raise
            except Exception as exc:  # noqa: BLE001 - every error ends the call with a mapped status
                code, message = status_for(exc)
                (bound.error if code == grpc.StatusCode.INTERNAL else bound.warning)(
                    "processing failed", code=code.name, error=describe_error(exc),
                    exc_info=code == grpc.StatusCode.INTERNAL)
                await context.abort(code, message)
        bound.info("processed", rejected=result.rejected, frames_decoded=result.frames_decoded,
                   frames_kept=result.frames_kept, segments_accepted=result.segments_accepted,
                   problems=[p.code for p in result.problems][:20], elapsed_s=result.elapsed_s)
        yield pb.ProcessSessionResponse(stage=pb.PROCESSING_STAGE_DONE, frames_done=result.frames_decoded,
                                        frames_total=result.frames_decoded, result=result_message(result, out))


def register(rt, store: ObjectStore, settings: ProcessorSettings, config: ProcessorConfig) -> None:
    """Adds this service to a GrpcRuntime; its errors answer from the processor's table."""
    rt.map_errors(ERRORS)
    rt.add(processor_pb2_grpc.add_ProcessorServiceServicer_to_server, ProcessorService(store, settings, config),
           SERVICE_NAME)
