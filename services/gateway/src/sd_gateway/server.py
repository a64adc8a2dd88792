"""gRPC servicer of the gateway: proto in, SessionService call, proto out (errors map via ``ERRORS``)."""

from __future__ import annotations

import grpc

from sd_gateway.database import SessionRecord
from sd_gateway.errors import ERRORS
from sd_gateway.sessions import FileSpec, SessionService
from sd_gateway.signaling import DiffusionSignaling
from scale_diffusion.common.v1 import common_pb2
from scale_diffusion.gateway.v1 import gateway_pb2 as pb
from scale_diffusion.gateway.v1 import gateway_pb2_grpc

SERVICE_NAME = "scale_diffusion.gateway.v1.GatewayService"


def _session_pb(rec: SessionRecord) -> pb.Session:
    return pb.Session(
        session_id=rec.session_id, player_id=rec.player_id, state=rec.state,
        created_at=rec.created_at.isoformat().replace("+00:00", "Z"), key_prefix=rec.key_prefix,
        problems=[common_pb2.Problem(**p.to_dict()) for p in rec.problems], client_build=rec.client_build,
        city=rec.city, route_id=rec.route_id, duration_s=rec.duration_s)


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


def _peer_ip(context: grpc.aio.ServicerContext) -> str:
    peer = context.peer() or ""  # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555"
    return peer.split(":", 1)[-1].rsplit(":", 1)[0]


class GatewayService(gateway_pb2_grpc.GatewayServiceServicer):
    """The gateway's gRPC API over the same SessionService the HTTP API uses."""

    def __init__(self, service: SessionService, signaling: DiffusionSignaling) -> None:
        self._svc = service
        self._signaling = signaling

    async def _player(self, context) -> str:
        return await self._svc.authenticate(_authorization(context))

    async def CreatePlayer(self, request, context):
        player_id, token = await self._svc.create_player(request.client_build, _peer_ip(context))
        return pb.CreatePlayerResponse(player_id=player_id, device_token=token)

    async def GetPlayer(self, request, context):
        t = await self._svc.player_totals(await self._player(context))
        return pb.GetPlayerResponse(**t.__dict__)

    async def CreateSession(self, request, context):
        rec = await self._svc.create_session(await self._player(context), request.client_build, request.city,
                                             request.route_id)
        return pb.CreateSessionResponse(session=_session_pb(rec))

    async def GetSession(self, request, context):
        return pb.GetSessionResponse(session=_session_pb(
            await self._svc.get_session(await self._player(context), request.session_id)))

    async def ListSessions(self, request, context):
        rows, nxt = await self._svc.list_sessions(await self._player(context), request.page_size, request.page_token)
        return pb.ListSessionsResponse(sessions=[_session_pb(r) for r in rows], next_page_token=nxt)

    async def CreateUploadUrls(self, request, context):
        files = [FileSpec(path=f.path, size_bytes=f.size_bytes, sha256=f.sha256,
                          content_type=f.content_type or "application/octet-stream") for f in request.files]
        targets = await self._svc.create_upload_urls(_authorization(context), request.session_id, files)
        return pb.CreateUploadUrlsResponse(targets=[pb.UploadTarget(
            path=t.path, method=t.method, url=t.url, headers=t.headers, multipart_upload_id=t.multipart_upload_id,
            parts=[pb.UploadPart(**p.__dict__) for p in t.parts],
            expires_at=t.expires_at.isoformat().replace("+00:00", "Z")) for t in targets])

    async def CompleteMultipartUpload(self, request, context):
        size = await self._svc.complete_multipart(await self._player(context), request.session_id, request.path,
                                                  request.multipart_upload_id,
                                                  [(p.part_number, p.etag) for p in request.parts])
        return pb.CompleteMultipartUploadResponse(size_bytes=size)

    async def CompleteSession(self, request, context):
        r = await self._svc.complete_session(await self._player(context), request.session_id)
        return pb.CompleteSessionResponse(session=_session_pb(r.session), accepted=r.accepted,
                                          problems=[common_pb2.Problem(**p.to_dict()) for p in r.problems])

    async def SignalDiffusion(self, request, context):
        player = await self._player(context)
        await self._svc.get_session(player, request.session_id)
        ans = await self._signaling.offer(request.session_id, request.sdp_offer, request.prompt)
        return pb.SignalDiffusionResponse(sdp_answer=ans.sdp_answer, stream_id=ans.stream_id, backend=ans.backend,
                                          model=ans.model)


def register(rt, service: SessionService, signaling: DiffusionSignaling) -> None:
    """Adds the gateway API to a GrpcRuntime; its errors answer from the gateway's table."""
    rt.map_errors(ERRORS)
    rt.add(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, GatewayService(service, signaling), SERVICE_NAME)
