"""`sdctl rewards` against a real ingest: an epoch closed (dry run first), its payout file written and
checked against its sha256, unsigned transfers built from it, the epoch marked paid, a player audited."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta

import grpc
from nacl.signing import SigningKey
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc
from sd_ingest.catalog import Catalog
from sd_ingest.ledger import epoch_account, paid_account, pending_account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.transaction import Transaction

from rewards_fixtures import finish, segment, to_processing
from test_datasets import _sdctl
from test_pipeline import Harness
from test_wallets import address_of, signed


async def test_an_operator_closes_an_epoch_writes_its_payout_builds_transfers_and_marks_it_paid(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    seed = Catalog(url)
    for sid, player in (("s1", "p-1"), ("s2", "p-2")):
        to_processing(seed, sid, player)
        finish(seed, sid, [segment(sid, k, player, commands={"LEFT": 50, "LANEFOLLOW": 100}) for k in range(3)])
    h = Harness(tmp_path, url)
    ingest = await h.start_ingest(processor_target="")
    target = f"127.0.0.1:{ingest.grpc_port}"
    key = SigningKey.generate()
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            message, signature = signed(key, expires_in=timedelta(days=3650))
            await ingest_pb2_grpc.WalletServiceStub(channel).LinkWallet(
                pb.LinkWalletRequest(player_id="p-1", message=message, signature=signature))
        pending = seed.ledger.balances("p-1")

        code, out, err = await _sdctl("rewards", "epoch", "close", "e1", "--dry-run", "--json", "--ingest", target)
        assert code == 0, err
        dry = json.loads(out)["payout"]
        assert dry["state"] == "dry_run" and seed.ledger.balances("p-1") == pending  # nothing moved
        code, out, err = await _sdctl("rewards", "payout", "show", "e1", "--ingest", target)
        assert code != 0 and "e1" in err  # a dry run made no epoch

        payout_file = tmp_path / "e1.json"
        code, out, err = await _sdctl("rewards", "epoch", "close", "e1", "--out", str(payout_file), "--ingest", target)
        assert code == 0, err
        assert out.startswith("closed") and "no wallet, stay pending: p-2" in out
        doc = json.loads(payout_file.read_bytes())
        [line] = doc["lines"]
        assert line["player_id"] == "p-1" and line["wallet"] == address_of(key)
        assert line["millipoints"] == pending[pending_account("p-1")] > 0
        assert line["millipoints"] == int(dry["total_millipoints"])
        digest = hashlib.sha256(payout_file.read_bytes()).hexdigest()
        assert f"sha256 {digest}" in out

        code, out, err = await _sdctl("rewards", "epoch", "close", "e1", "--ingest", target)
        assert code == 0 and out.startswith("already closed: unchanged"), (out, err)
        again = tmp_path / "again.json"
        code, _, err = await _sdctl("rewards", "payout", "show", "e1", "--out", str(again), "--ingest", target)
        assert code == 0, err
        assert again.read_bytes() == payout_file.read_bytes()

        mint, owner, payer = (str(Keypair.from_seed(bytes([i]) * 32).pubkey()) for i in (1, 2, 3))
        blockhash = str(Hash.from_bytes(hashlib.sha256(b"recent").digest()))
        tx_dir = tmp_path / "tx"
        common = ["--payout", str(payout_file), "--mint", mint, "--source-owner", owner, "--fee-payer", payer,
                  "--blockhash", blockhash, "--out", str(tx_dir)]
        code, _, err = await _sdctl("rewards", "transfers", "--sha256", "0" * 64, *common)
        assert code == 1 and "sha256" in err and not tx_dir.exists()  # a file that is not the payout: nothing
        code, out, err = await _sdctl("rewards", "transfers", "--sha256", digest, *common)
        assert code == 0, err
        index = json.loads((tx_dir / "transfers.json").read_text())
        [entry] = index["transfers"]
        assert entry["player_id"] == "p-1" and entry["token_amount"] == line["token_amount"]
        tx = Transaction.from_bytes(base64.b64decode((tx_dir / entry["file"]).read_text()))
        assert not tx.is_signed()

        code, out, err = await _sdctl("rewards", "payout", "mark-paid", "e1", "--reference", "sig-abc", "--json",
                                      "--ingest", target)
        assert code == 0, err
        assert json.loads(out)["payout"]["paid_reference"] == "sig-abc"
        assert seed.ledger.balances("p-1") == {pending_account("p-1"): 0, epoch_account("p-1"): 0,
                                               paid_account("p-1"): line["millipoints"]}

        code, out, err = await _sdctl("rewards", "audit", "p-1", "--ingest", target)
        assert code == 0 and "ledger sound" in out, (out, err)
        assert out.count(" s1_") == 3 and f"wallet link {address_of(key)}" in out
        code, out, _ = await _sdctl("rewards", "audit", "p-2", "--json", "--ingest", target)
        assert code == 0 and json.loads(out)["player_id"] == "p-2" and not json.loads(out).get("problems")
    finally:
        await h.close()
        seed.close()
