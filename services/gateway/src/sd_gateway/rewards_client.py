"""The gateway's client of the ingest's RewardsService and WalletService (SD_GATEWAY_INGEST_TARGET).

Every call has a deadline, and the ingest's status codes become the gateway's errors, so a player
sees 404/409/503 with the ingest's own message rather than a gRPC failure. Without a target every
call answers Unavailable (HTTP 503), saying which setting is missing.
"""

from __future__ import annotations

import grpc
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

from sd_gateway.errors import (AlreadyExists, FailedPrecondition, GatewayError, InvalidArgument, NotFound,
                               PermissionDenied, Unavailable)

_C = grpc.StatusCode
# The ingest's codes → the gateway's errors (and so HTTP statuses); what is not here reads as the
# ingest being unable to serve (503), with its code named.
_ERRORS: dict[grpc.StatusCode, type[GatewayError]] = {
    _C.INVALID_ARGUMENT: InvalidArgument, _C.NOT_FOUND: NotFound, _C.ALREADY_EXISTS: AlreadyExists,
    _C.FAILED_PRECONDITION: FailedPrecondition, _C.PERMISSION_DENIED: PermissionDenied,
}
NO_TARGET = "rewards and wallets are off on this gateway: SD_GATEWAY_INGEST_TARGET is not set"


def gateway_error(err: grpc.aio.AioRpcError) -> GatewayError:
    """The gateway error a failed ingest call becomes."""
    code, details = err.code(), (err.details() or "").split("\n")[0]
    if code in _ERRORS:
        return _ERRORS[code](details or code.name.lower())
    if code == _C.DEADLINE_EXCEEDED:
        return Unavailable("the ingest did not answer in time; retry later")
    if code == _C.UNIMPLEMENTED:
        return Unavailable("the ingest does not serve this yet (an older release); retry after it is upgraded")
    if code in (_C.UNAVAILABLE, _C.RESOURCE_EXHAUSTED):
        return Unavailable(f"the ingest cannot serve now ({details or code.name}); retry later")
    return Unavailable(f"the ingest failed ({code.name}: {details}); retry later")


class IngestRewardsClient:
    """Calls RewardsService and WalletService on the ingest, always for one named player."""

    def __init__(self, target: str | None, *, timeout_s: float = 5.0) -> None:
        self._timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target) if target else None
        self._rewards = ingest_pb2_grpc.RewardsServiceStub(self._channel) if self._channel else None
        self._wallets = ingest_pb2_grpc.WalletServiceStub(self._channel) if self._channel else None

    @property
    def enabled(self) -> bool:
        """Whether an ingest target is configured."""
        return self._channel is not None

    def require(self) -> None:
        """Raises Unavailable (503) when no ingest is configured."""
        if self._channel is None:
            raise Unavailable(NO_TARGET)

    async def close(self) -> None:
        """Closes the channel."""
        if self._channel is not None:
            await self._channel.close()

    async def _call(self, method, request):
        self.require()
        try:
            return await method(request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as err:
            raise gateway_error(err) from None

    async def link_wallet(self, player_id: str, message: str, signature: bytes) -> pb.Wallet:
        """Links the wallet that signed ``message`` to the player (the ingest verifies it again)."""
        self.require()
        return (await self._call(self._wallets.LinkWallet, pb.LinkWalletRequest(
            player_id=player_id, message=message, signature=signature))).wallet

    async def unlink_wallet(self, player_id: str) -> None:
        """Removes the player's wallet link (NotFound if none)."""
        self.require()
        await self._call(self._wallets.UnlinkWallet, pb.UnlinkWalletRequest(player_id=player_id))

    async def get_wallet(self, player_id: str) -> pb.GetWalletResponse:
        """The player's wallet (if any) and link log."""
        self.require()
        return await self._call(self._wallets.GetWallet, pb.GetWalletRequest(player_id=player_id))

    async def session_outcome(self, player_id: str, session_id: str) -> pb.GetSessionOutcomeResponse:
        """What became of the player's session (NotFound if the catalog has not seen it as theirs)."""
        self.require()
        return await self._call(self._rewards.GetSessionOutcome,
                                pb.GetSessionOutcomeRequest(session_id=session_id, player_id=player_id))

    async def contributions(self, player_id: str, page_size: int, page_token: str) -> pb.GetContributionsResponse:
        """The player's credits (newest first) and balances."""
        self.require()
        return await self._call(self._rewards.GetContributions, pb.GetContributionsRequest(
            player_id=player_id, page_size=page_size, page_token=page_token))

    async def leaderboard(self, player_id: str, week: str, limit: int) -> pb.GetLeaderboardResponse:
        """One ISO week's leaderboard, with the player's row marked."""
        self.require()
        return await self._call(self._rewards.GetLeaderboard,
                                pb.GetLeaderboardRequest(week=week, limit=limit, player_id=player_id))
