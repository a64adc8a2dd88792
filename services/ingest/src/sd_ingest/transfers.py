"""Unsigned SPL token transfers for a payout file, built offline (docs/rewards.md).

One transaction per payout line: create the player's associated token account if it does not exist
(the Associated Token Account program's CreateIdempotent), then TransferChecked of the line's amount
from the source owner's associated token account. The fee payer is the operator's public key and the
recent blockhash is the one the operator gives. Nothing here holds or asks for a private key: the
transactions come out with empty signatures, for the operator's wallet to sign and send.

solders has the SPL token program's id and the associated-account derivation but no instruction
builders for either program, so those two instructions are built here from their documented layouts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from solders.hash import Hash, ParseHashError
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.token.associated import get_associated_token_address
from solders.transaction import Transaction

from sd_ingest.ledger import PAYOUT_FORMAT, canonical_payout_bytes

ASSOCIATED_TOKEN_PROGRAM_ID = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
_TRANSFER_CHECKED = 12  # the SPL token program's instruction index
_CREATE_IDEMPOTENT = 1  # the associated token account program's instruction index


class PayoutFileInvalid(ValueError):
    """A payout file that is not a canonical one, or a key or blockhash that does not parse."""


@dataclass(frozen=True)
class UnsignedTransfer:
    """One line's unsigned transaction."""

    player_id: str
    wallet: str
    token_amount: int
    destination_token_account: str
    transaction_base64: str


def _pubkey(value: str, what: str) -> Pubkey:
    try:
        return Pubkey.from_string(value)
    except ValueError:
        raise PayoutFileInvalid(f"{what} {value!r} is not a base58 public key") from None


def create_idempotent_ata(payer: Pubkey, owner: Pubkey, mint: Pubkey) -> Instruction:
    """Associated Token Account program: CreateIdempotent of ``owner``'s account for ``mint``."""
    ata = get_associated_token_address(owner, mint)
    return Instruction(ASSOCIATED_TOKEN_PROGRAM_ID, bytes([_CREATE_IDEMPOTENT]), [
        AccountMeta(payer, is_signer=True, is_writable=True),
        AccountMeta(ata, is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=False, is_writable=False),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(SYSTEM_PROGRAM_ID, is_signer=False, is_writable=False),
        AccountMeta(TOKEN_PROGRAM_ID, is_signer=False, is_writable=False),
    ])


def transfer_checked(source: Pubkey, mint: Pubkey, destination: Pubkey, owner: Pubkey, amount: int,
                     decimals: int) -> Instruction:
    """SPL token program: TransferChecked of ``amount`` base units with the mint's ``decimals``."""
    data = struct.pack("<BQB", _TRANSFER_CHECKED, amount, decimals)
    return Instruction(TOKEN_PROGRAM_ID, data, [
        AccountMeta(source, is_signer=False, is_writable=True),
        AccountMeta(mint, is_signer=False, is_writable=False),
        AccountMeta(destination, is_signer=False, is_writable=True),
        AccountMeta(owner, is_signer=True, is_writable=False),
    ])


def read_payout_file(data: bytes, expected_sha256: str = "") -> dict[str, Any]:
    """Parses a payout file and checks it is canonical (and has ``expected_sha256`` when given)."""
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise PayoutFileInvalid(f"the payout file is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != PAYOUT_FORMAT:
        raise PayoutFileInvalid(f"the payout file's format is not {PAYOUT_FORMAT!r}")
    if canonical_payout_bytes(doc) != data:
        raise PayoutFileInvalid("the payout file is not in canonical form (was it edited?)")
    sha = hashlib.sha256(data).hexdigest()
    if expected_sha256 and sha != expected_sha256:
        raise PayoutFileInvalid(f"the payout file's sha256 is {sha}, not the expected {expected_sha256}")
    return doc


def build_transfers(payout: Mapping[str, Any], *, mint: str, source_owner: str, fee_payer: str,
                    recent_blockhash: str) -> list[UnsignedTransfer]:
    """One unsigned transaction per payout line, in the file's order."""
    mint_key = _pubkey(mint, "mint")
    owner_key = _pubkey(source_owner, "source owner")
    payer_key = _pubkey(fee_payer, "fee payer")
    try:
        blockhash = Hash.from_string(recent_blockhash)
    except (ValueError, ParseHashError):
        raise PayoutFileInvalid(f"blockhash {recent_blockhash!r} is not a base58 hash") from None
    decimals = int(payout["token"]["decimals"])
    source = get_associated_token_address(owner_key, mint_key)
    out = []
    for line in payout["lines"]:
        wallet = _pubkey(line["wallet"], f"wallet of {line['player_id']}")
        amount = int(line["token_amount"])
        if not 0 < amount < 2**64:
            raise PayoutFileInvalid(f"line of {line['player_id']}: token amount {amount} is not a u64 above 0")
        destination = get_associated_token_address(wallet, mint_key)
        message = Message.new_with_blockhash(
            [create_idempotent_ata(payer_key, wallet, mint_key),
             transfer_checked(source, mint_key, destination, owner_key, amount, decimals)], payer_key, blockhash)
        tx = Transaction.new_unsigned(message)
        out.append(UnsignedTransfer(line["player_id"], str(wallet), amount, str(destination),
                                    base64.b64encode(bytes(tx)).decode()))
    return out
