"""gRPC servicer of the rewards API: proto in, RewardsOperations call, proto out (errors map via ``ERRORS``)."""

from __future__ import annotations

from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

from sd_ingest.ledger import CreditRecord, PayoutRecord, rfc3339
from sd_ingest.rewards import RewardsOperations
from sd_ingest.server import CATALOG_STATE, _problems
from sd_ingest.wallet_server import wallet_event_pb

SERVICE_NAME = "scale_diffusion.ingest.v1.RewardsService"


def credit_pb(c: CreditRecord) -> pb.Credit:
    """A ledger credit as the API shows it."""
    return pb.Credit(entry_id=c.entry_id, player_id=c.player_id, session_id=c.session_id, segment_id=c.segment_id,
                     millipoints=c.millipoints, gross_millipoints=c.gross_millipoints, rule=c.rule,
                     factors=c.factors, created_at=rfc3339(c.created_at), status=c.status, epoch_id=c.epoch_id,
                     note=c.note)


def payout_pb(p: PayoutRecord) -> pb.Payout:
    """A payout epoch as the API shows it (the file's content, its hash and its state)."""
    d = p.document
    return pb.Payout(
        epoch_id=p.epoch_id, end_time=d["end_time"], closed_at=d["closed_at"], state=p.state,
        lines=[pb.PayoutLine(player_id=ln["player_id"], wallet_address=ln["wallet"], millipoints=ln["millipoints"],
                             token_amount=ln["token_amount"], entry_ids=ln["entries"]) for ln in d["lines"]],
        total_millipoints=d["total_millipoints"], total_token_amount=d["total_token_amount"],
        token_decimals=d["token"]["decimals"], base_units_per_point=d["token"]["base_units_per_point"],
        players_without_wallet=d["players_without_wallet"], file_sha256=p.file_sha256,
        paid_reference=p.paid_reference)


class RewardsService(ingest_pb2_grpc.RewardsServiceServicer):
    """The rewards API over RewardsOperations."""

    def __init__(self, ops: RewardsOperations) -> None:
        self._ops = ops

    async def GetSessionOutcome(self, request, context):
        o = await self._ops.session_outcome(request.session_id, request.player_id)
        return pb.GetSessionOutcomeResponse(
            session_id=o.session_id, state=CATALOG_STATE[o.state], final=o.final,
            accepted_s=sum(seg.duration_s for seg, _ in o.segments if seg.accepted),
            rejected_s=sum(seg.duration_s for seg, _ in o.segments if not seg.accepted),
            segments=[pb.SegmentOutcome(segment_id=seg.segment_id, index=seg.index, accepted=seg.accepted,
                                        reasons=seg.reasons, duration_s=seg.duration_s, millipoints=mp)
                      for seg, mp in o.segments],
            millipoints=o.millipoints, problems=_problems(o.problems))

    async def GetContributions(self, request, context):
        c = await self._ops.contributions(request.player_id, request.page_size, request.page_token)
        return pb.GetContributionsResponse(
            player_id=c.player_id, pending_millipoints=c.pending_millipoints,
            in_epoch_millipoints=c.in_epoch_millipoints, paid_millipoints=c.paid_millipoints,
            today_millipoints=c.today_millipoints, daily_cap_millipoints=c.daily_cap_millipoints,
            credits=[credit_pb(x) for x in c.credits], next_page_token=c.next_page_token,
            wallet_address=c.wallet_address, accepted_s=c.accepted_s)

    async def GetLeaderboard(self, request, context):
        b = await self._ops.leaderboard(request.week, request.limit, request.player_id)
        return pb.GetLeaderboardResponse(week=b.week, your_rank=b.your_rank, rows=[pb.LeaderboardRow(
            rank=r.rank, player_label=r.player_label, millipoints=r.millipoints, accepted_s=r.accepted_s, you=r.you)
            for r in b.rows])

    async def CloseEpoch(self, request, context):
        payout, created = await self._ops.close_epoch(request.epoch_id, request.end_time, request.dry_run)
        return pb.CloseEpochResponse(payout=payout_pb(payout), created=created)

    async def GetPayout(self, request, context):
        return pb.GetPayoutResponse(payout=payout_pb(await self._ops.get_payout(request.epoch_id)))

    async def MarkEpochPaid(self, request, context):
        return pb.MarkEpochPaidResponse(payout=payout_pb(await self._ops.mark_paid(request.epoch_id,
                                                                                    request.reference)))

    async def AuditPlayer(self, request, context):
        a = await self._ops.audit(request.player_id)
        return pb.AuditPlayerResponse(
            player_id=a.audit.player_id, credits=[credit_pb(c) for c in a.audit.credits], balances=a.audit.balances,
            wallet_events=[wallet_event_pb(e) for e in a.wallet_events],
            problems=a.audit.problems)


def register_rewards(rt, ops: RewardsOperations) -> None:
    """Adds the rewards API to a GrpcRuntime beside the ingest API (it shares the ingest's error table)."""
    rt.add(ingest_pb2_grpc.add_RewardsServiceServicer_to_server, RewardsService(ops), SERVICE_NAME)
