"""Object keys: the allow-list that keeps every key a plain path inside the embedded store's root."""

from __future__ import annotations

import os
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sd_common.objectstore import InvalidKey, LocalObjectStore, validate_key, validate_prefix

GOOD_KEYS = [
    "a",
    "sessions/2f0c/video.webm",
    "sessions/2f0c/frames.jsonl",
    "A-b_c.d/e..f/g.",  # dots are fine inside a segment
    "x" * 128,
    "/".join(["y" * 127] * 4),  # 511 characters
]

BAD_KEYS = {
    "": "empty",
    "..": "relative",
    ".": "relative",
    "../etc/passwd": "relative",
    "a/../b": "relative",
    "a/./b": "relative",
    "/etc/passwd": "starts with '/'",
    "a//b": "empty",
    "a/": "empty",
    ".hidden": "start with a letter or digit",
    "a/.git": "start with a letter or digit",
    "-rf": "start with a letter or digit",
    "a\x00b": "control character 0x00",
    "a\nb": "control character 0x0A",
    "a\\b": "backslash",
    "..\\..\\x": "backslash",
    "a b": "' '",
    "a%2Fb": "'%'",
    "a+b": "'+'",
    "a:b": "':'",
    "a\uff0e\uff0e/b": "U+FF0E",  # fullwidth full stops
    "\uff0e\uff0e": "U+FF0E",
    "a\u202eb.txt": "U+202E",  # right-to-left override
    "a\u200bb": "U+200B",  # zero-width space
    "p\u0430ypal": "U+0430",  # Cyrillic a, a homoglyph of Latin a
    unicodedata.normalize("NFC", "cafe\u0301"): "U+00E9",
    unicodedata.normalize("NFD", "caf\u00e9"): "U+0301",
    "x" * 129: "129 characters",
    "/".join(["y" * 128] * 4) + "/z": "limit is 512",
}


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_allowed_keys_come_back_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS.items(), ids=[ascii(k)[:40] for k in BAD_KEYS])
def test_bad_keys_are_rejected_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKey) as raised:
        validate_key(key)
    assert reason in str(raised.value)
    assert raised.value.http_status == 400
    # The message is ASCII: an RTL mark inside it cannot flip how an operator reads the log line.
    assert str(raised.value).isascii()


def test_the_message_names_the_offending_segment() -> None:
    with pytest.raises(InvalidKey, match=r"segment 2 '\.\.' is a relative path component"):
        validate_key("sessions/abc/../../etc")


def test_prefixes() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("sessions/") == "sessions/"
    assert validate_prefix("sessions/ab") == "sessions/ab"
    for bad in ("/", "../", "a//", "a\\"):
        with pytest.raises(InvalidKey):
            validate_prefix(bad)


@pytest.fixture(scope="module")
def keys_store(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    return LocalObjectStore(tmp_path_factory.mktemp("store"), b"k" * 32, "http://127.0.0.1:1", None, 1 << 20)


def _assert_contained(store: LocalObjectStore, key: str) -> None:
    try:
        path = store.path_for(key)
    except InvalidKey:
        return
    root = store.root
    assert path.is_relative_to(root) and path != root
    # One key names one file: nothing in it was collapsed or reinterpreted on the way to a path.
    assert path == root / key
    assert os.path.normpath(root / key) == str(root / key)
    assert path.relative_to(root).as_posix() == key
    assert not any(part.startswith(".") for part in path.relative_to(root).parts)


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_any_string_is_rejected_or_stays_inside_root(keys_store: LocalObjectStore, key: str) -> None:
    _assert_contained(keys_store, key)


_PATHY = st.sampled_from(["/", ".", "..", "\\", "\x00", "a", "Z", "9", "-", "_", "\uff0e", "\u202e", "~", " "])


@settings(max_examples=400, deadline=None)
@given(st.lists(_PATHY, max_size=24).map("".join))
def test_path_like_strings_are_rejected_or_stay_inside_root(keys_store: LocalObjectStore, key: str) -> None:
    _assert_contained(keys_store, key)


_SEGMENTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SEGMENTS, min_size=1, max_size=6).map("/".join))
def test_every_allowed_key_maps_to_its_own_path(keys_store: LocalObjectStore, key: str) -> None:
    assert validate_key(key) == key
    assert keys_store.path_for(key) == keys_store.root / key
