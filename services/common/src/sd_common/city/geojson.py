"""Reads a GeoJSON FeatureCollection one feature at a time, so a city-wide export never sits in memory.

Only the features of the bounding box are kept by the importer; a whole-city Building Footprints
export (over a million features, gigabytes of text) streams through in constant memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Names of WGS84 longitude/latitude that GeoJSON exports put in the (pre-RFC 7946) "crs" member.
WGS84_CRS_NAMES = frozenset({
    "urn:ogc:def:crs:ogc:1.3:crs84", "urn:ogc:def:crs:ogc::crs84", "ogc:crs84", "crs84",
    "epsg:4326", "urn:ogc:def:crs:epsg::4326", "urn:ogc:def:crs:epsg:4326",
    "http://www.opengis.net/def/crs/ogc/1.3/crs84", "http://www.opengis.net/def/crs/epsg/0/4326",
})

_CHUNK_SIZE = 1 << 20  # bytes read at a time; also how much consumed text is kept before trimming
_LOOKAHEAD_CHARS = 1 << 16
_WHITESPACE = " \t\n\r"
_DECODER = json.JSONDecoder()


class GeoJSONError(ValueError):
    """The file is not a GeoJSON FeatureCollection in WGS84 longitude/latitude."""


@dataclass
class FeatureCollectionStats:
    """What the reader saw: filled while reading, complete once the iterator is exhausted."""

    features: int = 0
    sha256: str = ""
    bytes: int = 0
    header: dict[str, Any] = field(default_factory=dict)


class _Scanner:
    """A growing text buffer over a file, with JSON values decoded from it one at a time."""

    def __init__(self, path: Path, stats: FeatureCollectionStats) -> None:
        self.path = path
        self.stats = stats
        self._file = path.open("rb")
        self._hash = hashlib.sha256()
        self._decoder_bytes = b""
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._consumed_chars = 0  # characters dropped from the front of buf, for error positions

    def close(self) -> None:
        self._file.close()

    def _more(self) -> bool:
        if self.eof:
            return False
        raw = self._file.read(_CHUNK_SIZE)
        self._hash.update(raw)
        self.stats.bytes += len(raw)
        if not raw:
            self.eof = True
            if self._decoder_bytes:
                raise self.error("the file ends inside a UTF-8 character")
            self.stats.sha256 = self._hash.hexdigest()
            return False
        raw = self._decoder_bytes + raw
        # Keep an incomplete UTF-8 sequence at the end for the next read.
        cut = len(raw)
        for back in range(1, min(4, len(raw)) + 1):
            byte = raw[-back]
            if byte & 0xC0 == 0x80:
                continue
            if byte & 0x80:
                need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
                if back < need:
                    cut = len(raw) - back
            break
        try:
            text = raw[:cut].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"not UTF-8 text ({exc.reason})") from None
        self._decoder_bytes = raw[cut:]
        if not self.buf and not self._consumed_chars and text.startswith("\ufeff"):
            text = text[1:]  # a byte-order mark, as some Windows tools write
        if self.pos > _CHUNK_SIZE:
            self._consumed_chars += self.pos
            self.buf = self.buf[self.pos:]
            self.pos = 0
        self.buf += text
        return True

    def error(self, message: str) -> GeoJSONError:
        return GeoJSONError(f"{self.path}: {message} (near character {self._consumed_chars + self.pos})")

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            found = repr(ch) if ch else "the end of the file"
            raise self.error(f"expected {' or '.join(repr(c) for c in chars)}, found {found}")
        self.pos += 1
        return ch

    def value(self) -> Any:
        """Decodes the JSON value at the cursor, reading more of the file until it is complete."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # An error well before the end of what is read is real; near the end, the value may
                # just continue in the next chunk.
                if exc.pos + _LOOKAHEAD_CHARS >= len(self.buf) and self._more():
                    continue
                self.pos = exc.pos
                raise self.error(f"invalid JSON: {exc.msg}") from None
            # A number at the very end of the buffer may continue in the next chunk.
            if end == len(self.buf) and self._more():
                continue
            self.pos = end
            return value


def iter_features(path: Path | str, stats: FeatureCollectionStats | None = None) -> Iterator[dict[str, Any]]:
    """Yields each feature object of a FeatureCollection file; checks the collection's type and CRS.

    Raises GeoJSONError for anything that is not a FeatureCollection of WGS84 lon/lat coordinates.
    """
    path = Path(path)
    stats = stats if stats is not None else FeatureCollectionStats()
    try:
        scanner = _Scanner(path, stats)
    except OSError as exc:
        raise GeoJSONError(f"{path}: cannot read ({exc.strerror})") from None
    saw_features = False
    try:
        if scanner.peek() != "{":
            raise scanner.error("not a GeoJSON FeatureCollection (the file does not start with '{')")
        scanner.pos += 1
        if scanner.peek() == "}":
            scanner.pos += 1
        else:
            while True:
                key = scanner.value()
                if not isinstance(key, str):
                    raise scanner.error("expected a member name")
                scanner.expect(":")
                if key == "features":
                    saw_features = True
                    scanner.expect("[")
                    if scanner.peek() == "]":
                        scanner.pos += 1
                    else:
                        while True:
                            feature = scanner.value()
                            if not isinstance(feature, dict) or feature.get("type") != "Feature":
                                raise scanner.error(f"features[{stats.features}] is not a GeoJSON Feature")
                            stats.features += 1
                            yield feature
                            if scanner.expect(",]") == "]":
                                break
                else:
                    stats.header[key] = scanner.value()
                    if key == "crs":
                        _check_crs(path, stats.header[key])
                if scanner.expect(",}") == "}":
                    break
        if scanner.peek():
            raise scanner.error("unexpected text after the FeatureCollection")
    finally:
        scanner.close()
    kind = stats.header.get("type")
    if kind != "FeatureCollection":
        raise GeoJSONError(f"{path}: not a GeoJSON FeatureCollection (type is {kind!r})")
    if not saw_features:
        raise GeoJSONError(f"{path}: the FeatureCollection has no 'features' member")


def _check_crs(path: Path, crs: Any) -> None:
    if crs is None:
        return
    name = crs.get("properties", {}).get("name") if isinstance(crs, dict) else None
    if not isinstance(name, str) or name.strip().lower() not in WGS84_CRS_NAMES:
        raise GeoJSONError(
            f"{path}: coordinates are in {name or crs!r}, not WGS84 longitude/latitude; export the data as "
            "GeoJSON in EPSG:4326 (e.g. `ogr2ogr -t_srs EPSG:4326 out.geojson in.shp`)")
