"""The streaming FeatureCollection reader: same features as json.load, at any chunk boundary."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from sd_common.city import geojson
from sd_common.city.geojson import FeatureCollectionStats, GeoJSONError, iter_features

FIXTURES = Path(__file__).parent / "fixtures" / "nyc"


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
@pytest.mark.parametrize("name", ["footprints_current.geojson", "centerlines_lion.geojson"])
def test_city_geojson_streams_the_same_features_as_json_load(monkeypatch, name: str, chunk: int) -> None:
    monkeypatch.setattr(geojson, "_CHUNK_SIZE", chunk)
    path = FIXTURES / name
    stats = FeatureCollectionStats()
    assert list(iter_features(path, stats)) == json.loads(path.read_text())["features"]
    assert stats.features == len(json.loads(path.read_text())["features"])
    assert stats.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert stats.bytes == path.stat().st_size
    assert stats.header["type"] == "FeatureCollection"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_city_geojson_handles_multibyte_text_bom_and_members_after_features(monkeypatch, tmp_path, chunk) -> None:
    monkeypatch.setattr(geojson, "_CHUNK_SIZE", chunk)
    doc = {"features": [{"type": "Feature", "properties": {"name": "Café Ñandú 東京 🏙", "h": 12.5e1},
                         "geometry": None}], "type": "FeatureCollection", "bbox": [1, 2, 3, 4]}
    path = tmp_path / "x.geojson"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc, ensure_ascii=False, indent=2).encode())
    stats = FeatureCollectionStats()
    assert list(iter_features(path, stats)) == doc["features"]
    assert stats.header["bbox"] == [1, 2, 3, 4]


@pytest.mark.parametrize("text, message", [
    ('[1, 2]', "does not start with"),
    ('{"type": "Feature", "geometry": null, "properties": {}}', "type is 'Feature'"),
    ('{"type": "FeatureCollection"}', "no 'features' member"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature"', "invalid JSON"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature"}] ', "expected"),
    ('{"type": "FeatureCollection", "features": [{"type": "Point"}]}', "features[0] is not a GeoJSON Feature"),
    ('{"type": "FeatureCollection", "features": []} extra', "unexpected text"),
    (('{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2263"}},'
     ' "features": []}'), "not WGS84 longitude/latitude"),
])
def test_city_geojson_rejects_what_is_not_a_wgs84_feature_collection(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.geojson"
    path.write_text(text)
    with pytest.raises(GeoJSONError, match=message.replace("[", r"\[").replace("]", r"\]")):
        list(iter_features(path))


def test_city_geojson_names_an_unreadable_file(tmp_path) -> None:
    with pytest.raises(GeoJSONError, match="cannot read"):
        list(iter_features(tmp_path / "missing.geojson"))


def test_city_geojson_stops_at_an_early_syntax_error_without_reading_on(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(geojson, "_CHUNK_SIZE", 4096)
    feature = json.dumps({"type": "Feature", "properties": {"a": "x" * 100}, "geometry": None})
    path = tmp_path / "big.geojson"
    path.write_text('{"type": "FeatureCollection", "features": [' + feature + ', {"type": "Feature",, }'
                    + ("," + feature) * 5000 + "]}")
    stats = FeatureCollectionStats()
    with pytest.raises(GeoJSONError, match="invalid JSON"):
        list(iter_features(path, stats))
    assert stats.features == 1 and stats.bytes < path.stat().st_size / 4
