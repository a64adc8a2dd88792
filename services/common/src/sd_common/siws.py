"""Sign-In With Solana (SIWS): the message a wallet signs to prove it holds an address, and its checks.

The text format is CAIP-122's (the shape of EIP-4361, "Sign-In With Ethereum", for a Solana account)::

    play.example.com wants you to sign in with your Solana account:
    <base58 address>

    <statement>

    URI: https://play.example.com
    Version: 1
    Chain ID: mainnet
    Nonce: <nonce>
    Issued At: 2026-12-02T10:00:00Z
    Expiration Time: 2026-12-02T10:10:00Z

Every field is required and in this order; the parser refuses anything else (a missing, extra,
reordered or re-spelt line), so the message the server verifies is the one it issued, byte for byte.
The wallet signs the UTF-8 bytes of the text with the address's ed25519 key (docs/wallets.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

import base58
from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

HEADER_SUFFIX = " wants you to sign in with your Solana account:"
VERSION = "1"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # RFC 3339 in UTC, whole seconds: one spelling per instant
ADDRESS_BYTES = 32
SIGNATURE_BYTES = 64
MAX_MESSAGE_CHARS = 4096

_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?")
_CHAIN_ID = re.compile(r"[a-z0-9][a-z0-9:_-]{0,63}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,64}")
_FIELDS = ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time")


class SiwsError(ValueError):
    """A SIWS message, address or signature that is malformed or does not verify; the message says which."""


@dataclass(frozen=True)
class SiwsMessage:
    """The fields of a Sign-In With Solana message; ``text()`` is the exact text the wallet signs."""

    domain: str
    address: str
    statement: str
    uri: str
    chain_id: str
    nonce: str
    issued_at: datetime
    expiration_time: datetime
    version: str = VERSION

    def text(self) -> str:
        """The message as the wallet signs it."""
        return (f"{self.domain}{HEADER_SUFFIX}\n{self.address}\n\n{self.statement}\n\n"
                f"URI: {self.uri}\nVersion: {self.version}\nChain ID: {self.chain_id}\nNonce: {self.nonce}\n"
                f"Issued At: {format_time(self.issued_at)}\nExpiration Time: {format_time(self.expiration_time)}")


def format_time(t: datetime) -> str:
    """The message's spelling of an instant (UTC, whole seconds, ``Z``)."""
    if t.tzinfo is None:
        raise SiwsError("times in a SIWS message must be timezone-aware")
    return t.astimezone(UTC).strftime(TIME_FORMAT)


def _parse_time(name: str, value: str) -> datetime:
    try:
        t = datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise SiwsError(f"{name} {value!r} is not a UTC time like 2026-12-02T10:00:00Z") from None
    if format_time(t) != value:  # strptime accepts single-digit fields; the message spells one way only
        raise SiwsError(f"{name} {value!r} is not a UTC time like 2026-12-02T10:00:00Z")
    return t


def decode_address(address: str) -> bytes:
    """The 32-byte ed25519 public key a base58 Solana address names; SiwsError if it names none."""
    key = _b58decode("address", address)
    if len(key) != ADDRESS_BYTES:
        raise SiwsError(f"address {address!r} decodes to {len(key)} bytes, not {ADDRESS_BYTES}")
    return key


def decode_signature(signature: str) -> bytes:
    """The 64-byte ed25519 signature a base58 string holds; SiwsError otherwise."""
    raw = _b58decode("signature", signature)
    if len(raw) != SIGNATURE_BYTES:
        raise SiwsError(f"signature decodes to {len(raw)} bytes, not {SIGNATURE_BYTES}")
    return raw


def _b58decode(name: str, value: str) -> bytes:
    if not value or len(value) > 128:
        raise SiwsError(f"{name} must be 1-128 base58 characters")
    try:
        raw = base58.b58decode(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SiwsError(f"{name} is not base58") from None
    if base58.b58encode(raw).decode() != value:  # one spelling per key
        raise SiwsError(f"{name} is not canonical base58")
    return raw


def _check_fields(m: SiwsMessage) -> None:
    if not _DOMAIN.fullmatch(m.domain):
        raise SiwsError(f"domain {m.domain!r} is not a host or host:port")
    decode_address(m.address)
    if not m.statement or m.statement != m.statement.strip() or any(c in m.statement for c in "\r\n") \
            or not m.statement.isprintable():
        raise SiwsError("statement must be one non-empty line of printable text")
    parts = urlsplit(m.uri)
    if not parts.scheme or not parts.netloc or any(c.isspace() for c in m.uri) or not m.uri.isprintable():
        raise SiwsError(f"URI {m.uri!r} is not an absolute URI")
    if m.version != VERSION:
        raise SiwsError(f"version {m.version!r} is not {VERSION}")
    if not _CHAIN_ID.fullmatch(m.chain_id):
        raise SiwsError(f"chain id {m.chain_id!r} is not a chain reference like mainnet or devnet")
    if not _NONCE.fullmatch(m.nonce):
        raise SiwsError("nonce must be 8-64 letters and digits")
    if m.expiration_time <= m.issued_at:
        raise SiwsError("expiration time must be after issued-at")


def build_message(*, domain: str, address: str, statement: str, uri: str, chain_id: str, nonce: str,
                  issued_at: datetime, expiration_time: datetime) -> SiwsMessage:
    """A message with every field checked (whole seconds: the text cannot carry less)."""
    m = SiwsMessage(domain=domain, address=address, statement=statement, uri=uri, chain_id=chain_id, nonce=nonce,
                    issued_at=_parse_time("issued-at", format_time(issued_at)),
                    expiration_time=_parse_time("expiration time", format_time(expiration_time)))
    _check_fields(m)
    return m


@dataclass(frozen=True)
class SiwsAudience:
    """Where a message must be meant for: the game's domain and URI, and the chain payouts go to."""

    domain: str
    uri: str
    chain_id: str

    def check(self, m: SiwsMessage) -> None:
        """SiwsError naming the first field of ``m`` that is meant for somewhere else."""
        for name, got, want in (("domain", m.domain, self.domain), ("URI", m.uri, self.uri),
                                ("chain id", m.chain_id, self.chain_id)):
            if got != want:
                raise SiwsError(f"the message's {name} is {got!r}, this deployment's is {want!r}")


def parse_message(text: str) -> SiwsMessage:
    """The fields of a received message; SiwsError for anything that is not exactly the format above."""
    if not isinstance(text, str) or len(text) > MAX_MESSAGE_CHARS:
        raise SiwsError(f"a SIWS message is text of at most {MAX_MESSAGE_CHARS} characters")
    if "\r" in text:
        raise SiwsError("a SIWS message separates lines with LF only")
    lines = text.split("\n")
    if len(lines) != 5 + len(_FIELDS):
        raise SiwsError(f"a SIWS message has {5 + len(_FIELDS)} lines, this one {len(lines)}")
    header, address, blank1, statement, blank2, *fields = lines
    if not header.endswith(HEADER_SUFFIX):
        raise SiwsError("the first line must be '<domain> wants you to sign in with your Solana account:'")
    if blank1 or blank2:
        raise SiwsError("the address and the statement must each be followed by an empty line")
    values = {}
    for name, line in zip(_FIELDS, fields):
        prefix = f"{name}: "
        if not line.startswith(prefix):
            raise SiwsError(f"expected the line '{name}: …', got {line[:40]!r}")
        values[name] = line[len(prefix):]
    m = SiwsMessage(domain=header[:-len(HEADER_SUFFIX)], address=address, statement=statement, uri=values["URI"],
                    version=values["Version"], chain_id=values["Chain ID"], nonce=values["Nonce"],
                    issued_at=_parse_time("issued-at", values["Issued At"]),
                    expiration_time=_parse_time("expiration time", values["Expiration Time"]))
    _check_fields(m)
    if m.text() != text:  # nothing the fields do not account for
        raise SiwsError("the message is not in the canonical SIWS form")
    return m


def verify_signature(message: str, address: str, signature: bytes) -> None:
    """Raises SiwsError unless ``signature`` is the address's ed25519 signature of the message's UTF-8 bytes."""
    key = decode_address(address)
    if len(signature) != SIGNATURE_BYTES:
        raise SiwsError(f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    try:
        VerifyKey(key).verify(message.encode("utf-8"), signature)
    except CryptoError:  # a bad signature, or a key that is no valid curve point
        raise SiwsError("the signature does not verify with the message's address") from None
