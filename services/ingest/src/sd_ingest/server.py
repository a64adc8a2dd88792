"""gRPC servicer of the ingest service: proto in, CatalogService call, proto out (errors map via ``ERRORS``)."""

from __future__ import annotations

from datetime import datetime

from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

from sd_ingest.catalog import DatasetRecord, SessionRecord, SessionState
from sd_ingest.errors import ERRORS, InvalidArgument
from sd_ingest.service import CatalogService

SERVICE_NAME = "scale_diffusion.ingest.v1.IngestService"

S = SessionState
# The shared lifecycle (common.v1.SessionState) is coarser than the catalog's: FAILED sessions were
# uploaded fine but have no segments, so they read as UPLOADED there and FAILED in catalog_state.
COMMON_STATE = {
    S.RECEIVING: common_pb2.SESSION_STATE_OPEN, S.COMPLETE: common_pb2.SESSION_STATE_UPLOADED,
    S.VALIDATED: common_pb2.SESSION_STATE_UPLOADED, S.REJECTED: common_pb2.SESSION_STATE_REJECTED,
    S.PROCESSING: common_pb2.SESSION_STATE_PROCESSING, S.PROCESSED: common_pb2.SESSION_STATE_PROCESSED,
    S.FAILED: common_pb2.SESSION_STATE_UPLOADED,
}
CATALOG_STATE = {state: pb.CatalogState.Value(f"CATALOG_STATE_{state.value}") for state in S}
FROM_CATALOG_STATE = {v: k for k, v in CATALOG_STATE.items()}


def _time(dt: datetime | None) -> str:
    return dt.isoformat().replace("+00:00", "Z") if dt else ""


def _problems(problems) -> list[common_pb2.Problem]:
    return [common_pb2.Problem(**p.to_dict()) for p in problems]


def session_pb(rec: SessionRecord, processed_prefix: str) -> pb.CatalogSession:
    """The catalog record as the API shows it."""
    return pb.CatalogSession(
        session_id=rec.session_id, player_id=rec.player_id, state=COMMON_STATE[rec.state],
        problems=_problems(rec.problems), segments_accepted=rec.segments_accepted,
        segments_rejected=rec.segments_rejected, qc_report_uri=rec.qc_report_uri, attempts=rec.attempts,
        catalog_state=CATALOG_STATE[rec.state], raw_uri=rec.raw_prefix,
        processed_uri=f"{processed_prefix}{rec.session_id}/", attempt_id=rec.attempt_id,
        last_error=rec.last_error, created_at=_time(rec.created_at), updated_at=_time(rec.updated_at),
        duration_s=rec.duration_s, warnings=_problems(rec.warnings))


def dataset_pb(rec: DatasetRecord) -> pb.Dataset:
    """A dataset version as the API shows it."""
    return pb.Dataset(
        dataset_id=rec.dataset_id, name=rec.name, created_at=_time(rec.created_at), hours=rec.hours,
        segments=rec.segments, players=rec.players, manifest_uri=rec.manifest_uri, lerobot_uri=rec.lerobot_uri,
        sessions=rec.sessions, frames=rec.frames, train_segments=rec.train_segments,
        val_segments=rec.val_segments, val_fraction=rec.val_fraction, split_seed=rec.split_seed,
        stats_uri=rec.stats_uri)


class IngestService(ingest_pb2_grpc.IngestServiceServicer):
    """The ingest API over CatalogService."""

    def __init__(self, service: CatalogService) -> None:
        self._svc = service
        self._processed = service.settings.processed_prefix

    async def GetSessionStatus(self, request, context):
        rec, _segments = await self._svc.get_session(request.session_id)
        return pb.GetSessionStatusResponse(session=session_pb(rec, self._processed))

    async def ListCatalogSessions(self, request, context):
        if request.catalog_state:
            if request.catalog_state not in FROM_CATALOG_STATE:
                raise InvalidArgument(f"catalog_state {request.catalog_state} is not a CatalogState")
            states = [FROM_CATALOG_STATE[request.catalog_state]]
        elif request.state:
            states = [s for s, common in COMMON_STATE.items() if common == request.state]
            if not states:
                raise InvalidArgument(f"no catalog state corresponds to SessionState {request.state}")
        else:
            states = []
        rows, nxt = await self._svc.list_sessions(states, request.page_size, request.page_token)
        return pb.ListCatalogSessionsResponse(sessions=[session_pb(r, self._processed) for r in rows],
                                              next_page_token=nxt)

    async def ReprocessSession(self, request, context):
        rec = await self._svc.reprocess(request.session_id)
        return pb.ReprocessSessionResponse(session=session_pb(rec, self._processed))

    async def CreateDataset(self, request, context):
        rec, created = await self._svc.create_dataset(request.name, request.val_fraction, request.split_seed)
        return pb.CreateDatasetResponse(dataset=dataset_pb(rec), created=created)

    async def GetDataset(self, request, context):
        return pb.GetDatasetResponse(dataset=dataset_pb(await self._svc.get_dataset(request.dataset_id)))

    async def ListDatasets(self, request, context):
        rows, nxt = await self._svc.list_datasets(request.page_size, request.page_token)
        return pb.ListDatasetsResponse(datasets=[dataset_pb(r) for r in rows], next_page_token=nxt)


def register(rt, service: CatalogService) -> None:
    """Adds the ingest API to a GrpcRuntime; its errors answer from the ingest's table."""
    rt.map_errors(ERRORS)
    rt.add(ingest_pb2_grpc.add_IngestServiceServicer_to_server, IngestService(service), SERVICE_NAME)
