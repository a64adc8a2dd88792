"""The ingest's RewardsService as the assembly wires it: an audit through real gRPC shows the player's
wallet log from the wallet store (the same log WalletService shows)."""

from __future__ import annotations

from datetime import timedelta

import grpc
from nacl.signing import SigningKey
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc

from test_pipeline import Harness
from test_wallets import address_of, signed


async def test_an_audit_shows_the_wallet_log_the_wallet_service_keeps(tmp_path):
    h = Harness(tmp_path, f"sqlite:///{tmp_path / 'catalog.db'}")
    ingest = await h.start_ingest(processor_target="")
    key = SigningKey.generate()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ingest.grpc_port}") as channel:
            wallets = ingest_pb2_grpc.WalletServiceStub(channel)
            rewards = ingest_pb2_grpc.RewardsServiceStub(channel)
            message, signature = signed(key, expires_in=timedelta(days=3650))
            await wallets.LinkWallet(pb.LinkWalletRequest(player_id="p-1", message=message, signature=signature))
            await wallets.UnlinkWallet(pb.UnlinkWalletRequest(player_id="p-1"))
            logged = (await wallets.GetWallet(pb.GetWalletRequest(player_id="p-1"))).events
            audit = await rewards.AuditPlayer(pb.AuditPlayerRequest(player_id="p-1"))
        assert [(e.action, e.address) for e in audit.wallet_events] == [
            ("link", address_of(key)), ("unlink", address_of(key))]
        assert list(audit.wallet_events) == list(logged)  # the same entries, the same times
        assert all(e.at.endswith("Z") for e in audit.wallet_events)
        assert list(audit.problems) == []
    finally:
        await h.close()
