"""Object keys: a strict allow-list, because in the embedded store every key becomes a file path.

A key is one or more ``/``-separated segments; each segment is 1–128 ASCII characters from
``[A-Za-z0-9._-]`` and starts with a letter or digit (so ``.``, ``..`` and hidden names cannot occur).
Whole keys are at most 512 characters. Anything else — empty segments, a leading ``/``, backslashes,
NUL and other control characters, and every non-ASCII character (fullwidth dots, RTL marks,
homoglyphs, NFC/NFD look-alikes) — is rejected rather than normalised, so one key names one file.
"""

from __future__ import annotations

import re

from sd_common.objectstore.errors import InvalidKey

MAX_KEY_CHARS = 512
MAX_SEGMENT_CHARS = 128
# A segment may start with "_" (markers such as _SUCCESS.json) but never with "." or "-".
SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def validate_key(key: str) -> str:
    """Returns ``key`` unchanged if it is allowed; raises InvalidKey naming the offending part."""
    if not isinstance(key, str):
        raise InvalidKey(f"object key must be a string, got {type(key).__name__}")
    if not key:
        raise InvalidKey("object key is empty")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidKey(f"object key is {len(key)} characters long; the limit is {MAX_KEY_CHARS}")
    if key.startswith("/"):
        raise InvalidKey(f"object key {key!a} starts with '/'; keys are relative, like 'sessions/abc/video.webm'")
    for index, segment in enumerate(key.split("/")):
        if SEGMENT_RE.fullmatch(segment):
            continue
        raise InvalidKey(f"object key {key!a}: segment {index} {segment!a} {_why_segment_is_bad(segment)}")
    return key


def validate_prefix(prefix: str) -> str:
    """Returns a listing prefix if allowed: empty, a valid key, or a valid key followed by ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix.removesuffix("/"))
    return prefix


def _why_segment_is_bad(segment: str) -> str:
    if segment == "":
        return "is empty (two '/' in a row, or a trailing '/')"
    if segment in (".", ".."):
        return "is a relative path component"
    if len(segment) > MAX_SEGMENT_CHARS:
        return f"is {len(segment)} characters long; the limit is {MAX_SEGMENT_CHARS}"
    for char in segment:
        if not char.isascii():
            return f"contains the non-ASCII character U+{ord(char):04X}; keys are ASCII only"
        if char == "\\":
            return "contains a backslash"
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"contains the control character 0x{ord(char):02X}"
        if not (char.isalnum() or char in "._-"):
            return f"contains {char!r}; allowed are letters, digits, '.', '_' and '-'"
    return "must start with a letter or digit"
