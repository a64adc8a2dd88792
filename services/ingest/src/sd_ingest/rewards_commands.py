"""`sdctl rewards epoch close|payout show|payout mark-paid|audit|transfers`: the ledger's operator tools.

``transfers`` works offline on a payout file and never asks for a private key: it writes unsigned
transactions for the operator's wallet to sign.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from sd_common.cli.grpc_client import add_target_arguments, call_service, message_dict, target_of
from scale_diffusion.ingest.v1 import ingest_pb2 as pb
from scale_diffusion.ingest.v1 import ingest_pb2_grpc


def _call(a: argparse.Namespace, fn):
    return call_service("ingest", target_of(a, "ingest"), ingest_pb2_grpc.RewardsServiceStub, fn)


def _print_payout(p: pb.Payout) -> None:
    print(f"epoch {p.epoch_id}  {p.state}  up to {p.end_time} (closed {p.closed_at})\n"
          f"  {len(p.lines)} lines, {p.total_millipoints} millipoints = {p.total_token_amount} base units "
          f"({p.token_decimals} decimals, {p.base_units_per_point} per point)\n  sha256 {p.file_sha256}")
    for ln in p.lines:
        print(f"  {ln.player_id:<24} {ln.wallet_address:<44} {ln.millipoints:>12} mp {ln.token_amount:>16}"
              f"  ({len(ln.entry_ids)} entries)")
    if p.players_without_wallet:
        print(f"  no wallet, stay pending: {', '.join(p.players_without_wallet)}")
    if p.paid_reference:
        print(f"  paid: {p.paid_reference}")


def _payout_file(p: pb.Payout) -> bytes:
    """The canonical payout file rebuilt from the response (its sha256 must be the ledger's)."""
    from sd_ingest.ledger import PAYOUT_FORMAT, canonical_payout_bytes

    doc = {"format": PAYOUT_FORMAT, "epoch_id": p.epoch_id, "end_time": p.end_time, "closed_at": p.closed_at,
           "token": {"decimals": p.token_decimals, "base_units_per_point": p.base_units_per_point},
           "lines": [{"player_id": ln.player_id, "wallet": ln.wallet_address, "millipoints": ln.millipoints,
                      "token_amount": ln.token_amount, "entries": list(ln.entry_ids)} for ln in p.lines],
           "total_millipoints": p.total_millipoints, "total_token_amount": p.total_token_amount,
           "players_without_wallet": list(p.players_without_wallet)}
    return canonical_payout_bytes(doc)


def _show(a: argparse.Namespace, p: pb.Payout, extra: dict | None = None) -> int:
    if getattr(a, "out", None) and p.state != "dry_run":
        data = _payout_file(p)
        if hashlib.sha256(data).hexdigest() != p.file_sha256:
            print("the payout file rebuilt from the answer does not match its sha256; not written", file=sys.stderr)
            return 1
        Path(a.out).write_bytes(data)
    if a.json:
        print(json.dumps({**(extra or {}), "payout": message_dict(p)}, indent=1))
    else:
        _print_payout(p)
        if getattr(a, "out", None) and p.state != "dry_run":
            print(f"  payout file written to {a.out}")
    return 0


def _epoch_close(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.CloseEpoch(pb.CloseEpochRequest(epoch_id=a.epoch_id, end_time=a.end_time or "",
                                                            dry_run=a.dry_run), timeout=60))
    if r is None:
        return 1
    if not a.json:
        print("dry run: nothing changed" if a.dry_run else "closed" if r.created else "already closed: unchanged")
    return _show(a, r.payout, {"created": r.created})


def _payout_show(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.GetPayout(pb.GetPayoutRequest(epoch_id=a.epoch_id), timeout=30))
    return 1 if r is None else _show(a, r.payout)


def _payout_mark_paid(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.MarkEpochPaid(pb.MarkEpochPaidRequest(epoch_id=a.epoch_id, reference=a.reference),
                                           timeout=30))
    return 1 if r is None else _show(a, r.payout)


def _audit(a: argparse.Namespace) -> int:
    r = _call(a, lambda s: s.AuditPlayer(pb.AuditPlayerRequest(player_id=a.player_id), timeout=60))
    if r is None:
        return 1
    if a.json:
        print(json.dumps(message_dict(r), indent=1))
    else:
        print(f"player {r.player_id}: {len(r.credits)} credits")
        for account, balance in sorted(r.balances.items()):
            print(f"  {account:<48} {balance:>12} mp")
        for c in r.credits:
            print(f"  {c.created_at} {c.entry_id} {c.segment_id:<40} {c.millipoints:>8}/{c.gross_millipoints:<8} "
                  f"{c.status:<9} {c.epoch_id}" + (f"  ({c.note})" if c.note else ""))
        for e in r.wallet_events:
            print(f"  wallet {e.action} {e.address} at {e.at}")
        print("ledger sound" if not r.problems else "PROBLEMS:\n  " + "\n  ".join(r.problems))
    return 0 if not r.problems else 2


def _transfers(a: argparse.Namespace) -> int:
    from sd_ingest.transfers import PayoutFileInvalid, build_transfers, read_payout_file

    try:
        doc = read_payout_file(Path(a.payout).read_bytes(), a.sha256 or "")
        txs = build_transfers(doc, mint=a.mint, source_owner=a.source_owner, fee_payer=a.fee_payer,
                              recent_blockhash=a.blockhash)
    except (OSError, PayoutFileInvalid) as exc:
        print(f"cannot build the transfers: {exc}", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for i, t in enumerate(txs):
        name = f"{i:04d}-{t.player_id}.b64"
        (out / name).write_text(t.transaction_base64 + "\n")
        index.append({"file": name, "player_id": t.player_id, "wallet": t.wallet, "token_amount": t.token_amount,
                      "destination_token_account": t.destination_token_account})
    (out / "transfers.json").write_text(json.dumps({"epoch_id": doc["epoch_id"], "mint": a.mint,
                                                    "fee_payer": a.fee_payer, "source_owner": a.source_owner,
                                                    "recent_blockhash": a.blockhash, "transfers": index}, indent=1))
    print(f"{len(txs)} unsigned transactions written to {out} (sign them with the source owner's and the "
          f"fee payer's keys, then send)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``rewards`` to sdctl's argument parser (handler in ``fn``)."""
    rewards = subparsers.add_parser("rewards", help="the contribution ledger and payouts (operators)")
    rsub = rewards.add_subparsers(dest="area", required=True)

    epoch = rsub.add_parser("epoch", help="payout epochs")
    esub = epoch.add_subparsers(dest="action", required=True)
    close = esub.add_parser("close", help="move pending credits of players with a wallet into an epoch")
    close.add_argument("epoch_id")
    close.add_argument("--end-time", help="RFC 3339; credits before it are covered (default: now)")
    close.add_argument("--dry-run", action="store_true", help="show the payout, change nothing")
    close.add_argument("--out", help="write the canonical payout file here")
    add_target_arguments(close, "ingest")
    close.set_defaults(fn=_epoch_close)

    payout = rsub.add_parser("payout", help="a closed epoch's payout")
    psub = payout.add_subparsers(dest="action", required=True)
    show = psub.add_parser("show", help="show an epoch's payout (and write its file)")
    show.add_argument("epoch_id")
    show.add_argument("--out", help="write the canonical payout file here")
    add_target_arguments(show, "ingest")
    show.set_defaults(fn=_payout_show)
    paid = psub.add_parser("mark-paid", help="record that an epoch's transfers were signed and sent")
    paid.add_argument("epoch_id")
    paid.add_argument("--reference", required=True, help="e.g. the transaction signatures")
    add_target_arguments(paid, "ingest")
    paid.set_defaults(fn=_payout_mark_paid)

    audit = rsub.add_parser("audit", help="a player's credits and balances, with the ledger's invariants checked")
    audit.add_argument("player_id")
    add_target_arguments(audit, "ingest")
    audit.set_defaults(fn=_audit)

    tr = rsub.add_parser("transfers", help="unsigned SPL token transfers for a payout file (offline)")
    tr.add_argument("--payout", required=True, help="the payout file (sdctl rewards payout show --out)")
    tr.add_argument("--sha256", help="refuse the file unless it has this sha256 (from the payout)")
    tr.add_argument("--mint", required=True, help="the token's mint address")
    tr.add_argument("--source-owner", required=True, help="owner of the token account the points are paid from")
    tr.add_argument("--fee-payer", required=True, help="public key paying the fees")
    tr.add_argument("--blockhash", required=True, help="a recent blockhash (from the operator's RPC node)")
    tr.add_argument("--out", required=True, help="folder for one base64 transaction per line")
    tr.set_defaults(fn=_transfers)
