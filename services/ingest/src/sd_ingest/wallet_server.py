"""gRPC servicer of WalletService: proto in, WalletStore call (in a worker thread), proto out."""

from __future__ import annotations

import asyncio
from datetime import datetime

from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

from sd_ingest.wallets import WalletEvent, WalletLink, WalletStore

SERVICE_NAME = "scale_diffusion.ingest.v1.WalletService"


def _time(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def wallet_pb(link: WalletLink) -> pb.Wallet:
    """A link as the API shows it."""
    return pb.Wallet(address=link.address, linked_at=_time(link.linked_at), chain_id=link.chain_id)


def wallet_event_pb(event: WalletEvent) -> pb.WalletEvent:
    """A log entry as the API shows it."""
    return pb.WalletEvent(action=event.action, address=event.address, at=_time(event.at))


class WalletService(ingest_pb2_grpc.WalletServiceServicer):
    """Links, unlinks and shows players' wallets (the gateway calls it for an authenticated player)."""

    def __init__(self, store: WalletStore) -> None:
        self._store = store

    async def LinkWallet(self, request, context):
        link = await asyncio.to_thread(self._store.link, request.player_id, request.message, request.signature)
        return pb.LinkWalletResponse(wallet=wallet_pb(link))

    async def UnlinkWallet(self, request, context):
        await asyncio.to_thread(self._store.unlink, request.player_id)
        return pb.UnlinkWalletResponse()

    async def GetWallet(self, request, context):
        link = await asyncio.to_thread(self._store.get, request.player_id)
        events = await asyncio.to_thread(self._store.events, request.player_id)
        return pb.GetWalletResponse(wallet=wallet_pb(link) if link else None,
                                    events=[wallet_event_pb(e) for e in events])


def register_wallets(rt, store: WalletStore) -> None:
    """Adds WalletService to a GrpcRuntime (its errors answer from the ingest's table, ``ERRORS``)."""
    rt.add(ingest_pb2_grpc.add_WalletServiceServicer_to_server, WalletService(store), SERVICE_NAME)
