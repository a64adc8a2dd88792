"""Sign-In With Solana messages: the exact text, a strict parser, and ed25519 verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import base58
import pytest
from nacl.signing import SigningKey

from sd_common.siws import (SiwsError, build_message, decode_address, decode_signature, parse_message,
                            verify_signature)

T0 = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


def _address(key: SigningKey) -> str:
    return base58.b58encode(bytes(key.verify_key)).decode()


def _message(key: SigningKey, **overrides):
    fields = dict(domain="play.example.com", address=_address(key), statement="Link this wallet to your player.",
                  uri="https://play.example.com", chain_id="mainnet", nonce="abcDEF123456",
                  issued_at=T0, expiration_time=T0 + timedelta(minutes=10))
    return build_message(**(fields | overrides))


def test_the_text_is_the_siws_format_and_parses_back_to_the_same_fields():
    key = SigningKey.generate()
    m = _message(key)
    assert m.text() == (
        "play.example.com wants you to sign in with your Solana account:\n"
        f"{_address(key)}\n\nLink this wallet to your player.\n\n"
        "URI: https://play.example.com\nVersion: 1\nChain ID: mainnet\nNonce: abcDEF123456\n"
        "Issued At: 2026-12-02T10:00:00Z\nExpiration Time: 2026-12-02T10:10:00Z")
    assert parse_message(m.text()) == m
    # sub-second times are cut to the second the text can carry, so the round trip still holds
    m2 = _message(key, issued_at=T0 + timedelta(microseconds=999), domain="127.0.0.1:8080", chain_id="devnet",
                  uri="http://127.0.0.1:8080/")
    assert parse_message(m2.text()) == m2 and m2.issued_at == T0


@pytest.mark.parametrize("change", [
    lambda t: t + "\n",                                               # a trailing line
    lambda t: t + "\nRequest ID: 7",                                  # an extra field
    lambda t: t.replace("\nExpiration Time: 2026-12-02T10:10:00Z", ""),  # a missing field
    lambda t: t.replace("Version: 1", "Version: 2"),
    lambda t: t.replace("Chain ID: mainnet\nNonce: abcDEF123456", "Nonce: abcDEF123456\nChain ID: mainnet"),
    lambda t: t.replace("URI: ", "URI:"),
    lambda t: t.replace("URI: ", "Uri: "),
    lambda t: t.replace("\n", "\r\n"),
    lambda t: t.replace("Solana account:", "Ethereum account:"),
    lambda t: t.replace("2026-12-02T10:00:00Z", "2026-12-02T10:00:00+00:00"),
    lambda t: t.replace("2026-12-02T10:00:00Z", "2026-12-02T10:00:00.000Z"),
    lambda t: t.replace("2026-12-02T10:10:00Z", "2026-12-02T09:00:00Z"),  # expires before it is issued
    lambda t: t.replace("Nonce: abcDEF123456", "Nonce: short"),
    lambda t: t.replace("Nonce: abcDEF123456", "Nonce: abc-DEF-123456"),
    lambda t: t.replace("URI: https://play.example.com", "URI: play.example.com"),
    lambda t: t.replace("play.example.com wants", "play example.com wants"),
    lambda t: t.replace("Link this wallet to your player.", ""),
    lambda t: t.replace("Link this wallet to your player.", " Link this wallet."),
    lambda t: t.replace("\n\nLink", "\nLink"),                         # no blank line before the statement
    lambda t: t.replace(t.split("\n")[1], base58.b58encode(b"\x01" * 31).decode()),  # a 31-byte key
])
def test_the_parser_refuses_anything_but_the_exact_format(change):
    text = _message(SigningKey.generate()).text()
    changed = change(text)
    assert changed != text
    with pytest.raises(SiwsError):
        parse_message(changed)


def test_addresses_and_signatures_must_decode_to_ed25519_sizes():
    key = SigningKey.generate()
    assert decode_address(_address(key)) == bytes(key.verify_key)
    for bad in ("", "0OIl", base58.b58encode(b"\x01" * 31).decode(), base58.b58encode(b"\x01" * 33).decode(),
                "x" * 200, "é"):
        with pytest.raises(SiwsError):
            decode_address(bad)
    sig = key.sign(b"m").signature
    assert decode_signature(base58.b58encode(sig).decode()) == sig
    with pytest.raises(SiwsError):
        decode_signature(base58.b58encode(sig[:63]).decode())
    with pytest.raises(SiwsError):
        _message(key, address=base58.b58encode(b"\x02" * 20).decode())


def test_only_the_addresss_own_signature_of_the_exact_text_verifies():
    key, other = SigningKey.generate(), SigningKey.generate()
    text = _message(key).text()
    verify_signature(text, _address(key), key.sign(text.encode()).signature)  # no exception
    for message, signature in ((text, other.sign(text.encode()).signature),              # another key
                               (text, key.sign((text + " ").encode()).signature),         # another text
                               (text + " ", key.sign(text.encode()).signature),
                               (text, bytes(64)), (text, key.sign(text.encode()).signature[:63])):
        with pytest.raises(SiwsError):
            verify_signature(message, _address(key), signature)
