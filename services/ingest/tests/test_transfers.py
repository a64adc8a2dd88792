"""Unsigned SPL transfers from a payout file: one transaction per line, decoded back and checked."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from solders.hash import Hash
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction
from sd_ingest.ledger import PAYOUT_FORMAT, canonical_payout_bytes
from sd_ingest.transfers import ASSOCIATED_TOKEN_PROGRAM_ID, PayoutFileInvalid, build_transfers, read_payout_file


def _keys(n: int) -> list[Pubkey]:
    return [Keypair.from_seed(bytes([i + 1]) * 32).pubkey() for i in range(n)]


def _payout(wallets: list[Pubkey]) -> dict:
    lines = [{"player_id": f"p{i}", "wallet": str(w), "millipoints": 1500 * (i + 1),
              "token_amount": 1_500_000 * (i + 1), "entries": [f"c_{i}"]} for i, w in enumerate(wallets)]
    return {"format": PAYOUT_FORMAT, "epoch_id": "e1", "end_time": "2026-12-01T00:00:00.000Z",
            "closed_at": "2026-12-01T00:00:01.000Z", "token": {"decimals": 6, "base_units_per_point": 1_000_000},
            "lines": lines, "total_millipoints": sum(ln["millipoints"] for ln in lines),
            "total_token_amount": sum(ln["token_amount"] for ln in lines), "players_without_wallet": []}


def test_each_line_becomes_one_unsigned_create_and_transfer_checked():
    mint, owner, payer, w1, w2 = _keys(5)
    blockhash = str(Hash.from_bytes(hashlib.sha256(b"recent").digest()))
    doc = read_payout_file(canonical_payout_bytes(_payout([w1, w2])))
    out = build_transfers(doc, mint=str(mint), source_owner=str(owner), fee_payer=str(payer),
                          recent_blockhash=blockhash)
    assert [t.player_id for t in out] == ["p0", "p1"]
    source = get_associated_token_address(owner, mint)
    for t, wallet, amount in zip(out, [w1, w2], [1_500_000, 3_000_000]):
        tx = Transaction.from_bytes(base64.b64decode(t.transaction_base64))
        msg = tx.message
        assert all(sig == Signature.default() for sig in tx.signatures) and not tx.is_signed()
        assert len(tx.signatures) == msg.header.num_required_signatures == 2
        keys = msg.account_keys
        assert keys[0] == payer and owner in keys[:2]  # the fee payer first; both sign, neither signed
        assert str(msg.recent_blockhash) == blockhash
        create, transfer = msg.instructions
        assert keys[create.program_id_index] == ASSOCIATED_TOKEN_PROGRAM_ID and bytes(create.data) == b"\x01"
        destination = get_associated_token_address(wallet, mint)
        assert [keys[i] for i in create.accounts] == [payer, destination, wallet, mint, SYSTEM_PROGRAM_ID,
                                                      TOKEN_PROGRAM_ID]
        assert keys[transfer.program_id_index] == TOKEN_PROGRAM_ID
        assert struct.unpack("<BQB", bytes(transfer.data)) == (12, amount, 6)
        assert [keys[i] for i in transfer.accounts] == [source, mint, destination, owner]
        assert t.destination_token_account == str(destination) and t.token_amount == amount


def test_an_edited_or_unexpected_file_is_refused():
    mint, owner, payer, w1 = _keys(4)
    data = canonical_payout_bytes(_payout([w1]))
    edited = data.replace(b'"token_amount":1500000', b'"token_amount":9500000')
    with pytest.raises(PayoutFileInvalid, match="sha256"):
        read_payout_file(edited, hashlib.sha256(data).hexdigest())
    with pytest.raises(PayoutFileInvalid, match="canonical"):
        read_payout_file(data.replace(b",", b", "))
    doc = read_payout_file(data, hashlib.sha256(data).hexdigest())
    with pytest.raises(PayoutFileInvalid, match="fee payer"):
        build_transfers(doc, mint=str(mint), source_owner=str(owner), fee_payer="not-a-key",
                        recent_blockhash=str(Hash.default()))
    with pytest.raises(PayoutFileInvalid, match="blockhash"):
        build_transfers(doc, mint=str(mint), source_owner=str(owner), fee_payer=str(payer), recent_blockhash="0OIl")
