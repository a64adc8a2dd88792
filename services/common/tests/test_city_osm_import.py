"""OpenStreetMap streets (`sdctl city import --osm-streets`): ways cut at shared vertices, widths per
highway class, the largest connected network kept, the ODbL credit written; and the game's default
city, web/public/cities/east-village.json, which this import must reproduce byte for byte."""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from sd_common.city import MissingColumnError, import_city, validate_city
from sd_common.city.osm import HIGHWAY_WIDTH_FT, split_at_shared_vertices
from sd_common.cli.main import main as sdctl
from tests.shared_data import FOOTPRINTS, OSM_STREETS, REPO, require

FIXTURES = Path(__file__).parent / "fixtures" / "nyc"
FT = 0.3048
DEFAULT_CITY = REPO / "web" / "public" / "cities" / "east-village.json"
# The command that makes DEFAULT_CITY (docs/game.md, "Cities"), run from the repository root.
EAST_VILLAGE_ARGS = ["--footprints", "../shared/data/nyc/building_footprints_east_village_north.geojson",
                     "--osm-streets", "../shared/data/nyc/streets_osm_east_village_les.geojson",
                     "--bbox=-73.9880,40.7240,-73.9725,40.7330", "--name", "East Village"]


def way(coords: list[tuple[float, float]], highway: str, name: str) -> dict[str, Any]:
    return {"type": "Feature", "properties": {"name": name, "highway": highway},
            "geometry": {"type": "LineString", "coordinates": [list(c) for c in coords]}}


def test_city_osm_ways_are_cut_where_they_share_a_vertex() -> None:
    a, b, c, d, e, f = (0, 0), (1, 0), (2, 0), (1, 1), (1, -1), (3, 0)
    through = [a, b, c, f]
    crossing = [d, b, e]         # crosses `through` at b
    tee = [(2, 1), c]            # ends on `through` at c
    loop = [(5, 5), (6, 5), (6, 6), (5, 5)]  # closes on itself
    pieces = split_at_shared_vertices([through, crossing, tee, loop])
    assert pieces == [(0, [a, b]), (0, [b, c]), (0, [c, f]), (1, [d, b]), (1, [b, e]), (2, [(2, 1), c]),
                      (3, loop)]


def test_city_osm_streets_become_a_graph_with_class_widths_and_credit(tmp_path) -> None:
    # A plus of an avenue and a street sharing one vertex, a footway (not driven) and a street that
    # touches nothing else (not part of the network), all in the fixtures' block.
    lon, lat = -73.9820, 40.7290
    d = 0.0008
    streets = {"type": "FeatureCollection", "features": [
        way([(lon, lat - d), (lon, lat), (lon, lat + d)], "primary", "Avenue A"),
        way([(lon - d, lat), (lon, lat), (lon + d, lat)], "residential", "10th Street"),
        way([(lon - d, lat + d / 2), (lon + d, lat + d / 2)], "footway", "a path"),
        way([(lon + 2 * d, lat - d), (lon + 2 * d, lat + d)], "residential", "Stray Street"),
    ]}
    path = tmp_path / "streets.geojson"
    path.write_text(json.dumps(streets))
    out = tmp_path / "city.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert sdctl(["city", "import", "--footprints", str(FIXTURES / "footprints_current.geojson"),
                      "--osm-streets", str(path), "--bbox", f"{lon - 2 * d},{lat - 2 * d},{lon + 3 * d},{lat + 2 * d}",
                      "--out", str(out)]) == 0
    city = json.loads(out.read_text())
    assert validate_city(city) == []
    edges = city["edges"]
    assert Counter(e["name"] for e in edges) == {"Avenue A": 2, "10th Street": 2}
    for e in edges:
        expected_ft = HIGHWAY_WIDTH_FT["primary" if e["name"] == "Avenue A" else "residential"]
        assert e["width_m"] == pytest.approx(expected_ft * FT, abs=1e-3)
        assert e["width_known"] is False and e["oneway"] == "two_way"
    assert {e["kind"] for e in edges if e["name"] == "Avenue A"} == {"avenue"}
    assert Counter(n["control"] for n in city["nodes"]) == {"signal": 1, "none": 4}  # the crossing
    assert city["source"]["attribution"].endswith("Streets: © OpenStreetMap contributors, ODbL 1.0 "
                                                  "(openstreetmap.org/copyright)")
    assert city["source"]["files"][1]["role"] == "streets-osm"
    summary = buf.getvalue()
    assert "highway=footway (not driven) 1" in summary and "not connected to the main street network 1" in summary


def test_city_osm_streets_without_a_highway_tag_name_the_column(tmp_path) -> None:
    path = tmp_path / "streets.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "x"},
         "geometry": {"type": "LineString", "coordinates": [[-73.982, 40.729], [-73.981, 40.729]]}}]}))
    with pytest.raises(MissingColumnError, match="missing column 'highway'"):
        import_city(FIXTURES / "footprints_current.geojson", osm_streets=path)


def test_city_osm_and_centerlines_are_one_or_the_other(tmp_path) -> None:
    out = tmp_path / "c.json"
    with pytest.raises(SystemExit):
        sdctl(["city", "import", "--footprints", str(FIXTURES / "footprints_current.geojson"),
               "--centerlines", "a.geojson", "--osm-streets", "b.geojson", "--out", str(out)])
    assert not out.exists()


# --- the real East Village: the game's default city ------------------------------------------------------

def test_city_the_default_city_is_the_import_of_the_shared_east_village(tmp_path, monkeypatch) -> None:
    """Regenerates web/public/cities/east-village.json with the documented command and compares."""
    require(FOOTPRINTS)
    require(OSM_STREETS)
    monkeypatch.chdir(REPO)
    out = tmp_path / "east-village.json"
    with redirect_stdout(io.StringIO()):
        assert sdctl(["city", "import", *EAST_VILLAGE_ARGS, "--out", str(out)]) == 0
    assert out.read_bytes() == DEFAULT_CITY.read_bytes(), (
        "web/public/cities/east-village.json is not what the import makes now: regenerate it with "
        f"`sdctl city import {' '.join(EAST_VILLAGE_ARGS)} --out web/public/cities/east-village.json`")


def test_city_the_east_village_is_the_real_irregular_network() -> None:
    city = json.loads(DEFAULT_CITY.read_text())
    assert validate_city(city) == []
    names = {e["name"] for e in city["edges"]}
    assert {"Saint Marks Place", "1st Avenue", "Avenue A", "Avenue B", "Avenue C", "Avenue D"} <= names
    assert {f"{n}th Street" for n in range(6, 15)} <= names
    assert len(city["buildings"]) == 176
    controls = Counter(n["control"] for n in city["nodes"])
    assert controls["signal"] > 20 and controls["stop"] >= 1
    degree: Counter = Counter()
    for e in city["edges"]:
        degree[e["from"]] += 1
        degree[e["to"]] += 1
    assert set(degree.values()) == {1, 2, 3, 4}
    assert "© OpenStreetMap contributors" in city["source"]["attribution"]
    streets = next(f for f in city["source"]["files"] if f["role"] == "streets-osm")
    # The file STREETS-PROVENANCE.md describes.
    assert streets["sha256"] == "1547772d535cbbc3c3648cba0a7ab41848004d6868bc567fe3b2a1c5f418fbc5"


def test_city_missing_shared_data_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path) -> None:
    missing = tmp_path / "shared" / "nothing.geojson"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="shared data missing"):
        require(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="shared data missing"):
        require(missing)
