"""Bad input to `sdctl city import`: every bad feature is a named skip (or a refusal naming it), and
whatever the input, the importer either writes a file `sdctl city validate` accepts or exits non-zero
with a message and writes nothing."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sd_common.city import validate_city
from sd_common.city.format import ring_self_intersection
from sd_common.cli.main import main as sdctl

FIXTURES = Path(__file__).parent / "fixtures" / "nyc"
LON, LAT = -73.982, 40.730  # a block of the East Village
DEG_PER_M_LAT = 1 / 111_000
DEG_PER_M_LON = 1 / 84_300


def square(lon: float, lat: float, size_m: float = 10.0) -> list[list[float]]:
    dx, dy = size_m * DEG_PER_M_LON, size_m * DEG_PER_M_LAT
    return [[lon, lat], [lon + dx, lat], [lon + dx, lat + dy], [lon, lat + dy], [lon, lat]]


def footprint(ring: list[list[float]], bin_: str, height_ft: Any = "40", ground_ft: Any = "20") -> dict[str, Any]:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"bin": bin_, "height_roof": height_ft, "ground_elevation": ground_ft,
                           "feature_code": "2100"}}


def block(n: int = 4) -> list[dict[str, Any]]:
    """n good footprints side by side."""
    return [footprint(square(LON + k * 15 * DEG_PER_M_LON, LAT), f"10000{k:02d}") for k in range(n)]


def collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features}


def run(tmp_path: Path, footprints: dict[str, Any] | str, *args: str) -> tuple[int, str, str, Path]:
    """sdctl city import in-process; (exit status, stdout, stderr, the output path)."""
    src = tmp_path / "footprints.geojson"
    src.write_text(footprints if isinstance(footprints, str) else json.dumps(footprints))
    out = tmp_path / "city.json"
    if out.exists():
        out.unlink()
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        rc = sdctl(["city", "import", "--footprints", str(src), *args, "--out", str(out), "--json"])
    return rc, stdout.getvalue(), stderr.getvalue(), out


def written(out: Path) -> dict[str, Any]:
    doc = json.loads(out.read_text())
    assert validate_city(doc) == []
    return doc


def test_city_nan_coordinates_are_a_named_skip_not_a_traceback(tmp_path) -> None:
    bad = footprint(square(LON, LAT + 0.001), "1999999")
    bad["geometry"]["coordinates"][0][2] = [math.nan, LAT]
    text = json.dumps(collection([*block(), bad]))  # json writes NaN, as some exporters do
    assert "NaN" in text
    rc, stdout, stderr, out = run(tmp_path, text)
    assert rc == 0, stderr
    doc = written(out)
    assert len(doc["buildings"]) == 4 and "1999999" not in {b["source_id"] for b in doc["buildings"]}
    report = json.loads(stdout)
    assert report["footprints_skipped"] == {"non-finite coordinates": 1}
    assert report["skipped_named"] == ["footprints.geojson feature 4: coordinate [nan, 40.73] is not a finite "
                                       "number (NaN or infinity)"]


def test_city_values_beyond_the_format_are_named_skips(tmp_path) -> None:
    features = [*block(), footprint(square(LON, LAT + 0.001), "1888888", height_ft="4000"),
                footprint(square(LON, LAT + 0.002), "1777777", ground_ft="-40000")]
    rc, stdout, stderr, out = run(tmp_path, collection(features))
    assert rc == 0, stderr
    doc = written(out)
    assert {b["source_id"] for b in doc["buildings"]} == {f"10000{k:02d}" for k in range(4)}
    named = json.loads(stdout)["skipped_named"]
    assert named[0].startswith("footprints.geojson feature 4 (1888888): roof height 4000 ft (1219 m) is above "
                               "the format's 1000 m maximum")
    assert named[1].startswith("footprints.geojson feature 5 (1777777): ground elevation -40000 ft")


def test_city_a_feature_on_another_continent_does_not_move_the_origin(tmp_path) -> None:
    paris = footprint(square(2.35, 48.85), "9000001")
    rc, stdout, stderr, out = run(tmp_path, collection([*block(), paris]))
    assert rc == 0, stderr
    doc = written(out)
    lon, lat = doc["source"]["origin_wgs84"]
    assert abs(lon - LON) < 0.01 and abs(lat - LAT) < 0.01, "the origin must stay with the city"
    assert max(abs(v) for b in doc["buildings"] for p in b["footprint"] for v in p) < 100
    named = json.loads(stdout)["skipped_named"]
    assert len(named) == 1 and named[0].startswith("footprints.geojson feature 4 (9000001): 58")
    assert "km from the median position of the other footprints" in named[0]


def test_city_a_far_feature_inside_a_huge_bbox_is_skipped_by_name(tmp_path) -> None:
    paris = footprint(square(2.35, 48.85), "9000001")
    rc, stdout, stderr, out = run(tmp_path, collection([*block(), paris]), "--bbox", "-80,35,10,55")
    assert rc == 0, stderr
    doc = written(out)
    named = json.loads(stdout)["skipped_named"]
    assert doc["buildings"] == [] or all(b["source_id"] != "9000001" for b in doc["buildings"])
    assert any("(9000001): lies more than 1000 km from the city's origin" in n for n in named)


def test_city_swapped_longitude_and_latitude_are_refused_with_the_fix(tmp_path) -> None:
    swapped = [footprint([[lat, lon] for lon, lat in f["geometry"]["coordinates"][0]], f["properties"]["bin"])
               for f in block()]
    rc, stdout, stderr, out = run(tmp_path, collection(swapped))
    assert rc == 2 and not out.exists()
    assert "written latitude first" in stderr and "swap the two numbers of every position" in stderr
    assert "read as longitude, latitude, but around (-73.98" in stderr and "in New York when read the other way" in stderr


def test_city_a_latitude_beyond_90_with_small_longitudes_is_called_swapped(tmp_path) -> None:
    ring = [[40.73, -95.0], [40.74, -95.0], [40.74, -95.01], [40.73, -95.0]]
    rc, _, stderr, out = run(tmp_path, collection([*block(), footprint(ring, "1")]))
    assert rc == 2 and not out.exists()
    assert "feature 4 has latitudes out to -95.01 .. -95.0" in stderr and "latitude first" in stderr


def test_city_a_self_intersecting_footprint_is_repaired_and_named(tmp_path) -> None:
    s = square(LON, LAT + 0.001, 20)
    bowtie = [s[0], s[2], s[1], s[3], s[0]]  # the two diagonals cross
    rc, stdout, stderr, out = run(tmp_path, collection([*block(), footprint(bowtie, "1555555")]))
    assert rc == 0, stderr
    doc = written(out)
    parts = [b for b in doc["buildings"] if b["source_id"] == "1555555"]
    assert len(parts) == 2  # the bow tie's two triangles
    assert all(ring_self_intersection(b["footprint"]) is None for b in parts)
    assert json.loads(stdout)["repaired_named"] == [
        "footprints.geojson feature 4 (1555555): self-intersecting outline repaired into 2 part(s)"]


def test_city_validator_rejects_a_self_intersecting_ring() -> None:
    # A bow tie with unequal lobes: it has area, and the counter-clockwise orientation of the bigger one.
    city = {"format": "scale-diffusion-city", "version": 1, "name": "x", "source": {"kind": "generated"},
            "nodes": [], "edges": [], "buildings": [
                {"id": "b1", "footprint": [[0, 0], [10, 10], [10, 0], [0, 20]], "height_m": 5, "ground_m": 0,
                 "kind": "building"}]}
    problems = validate_city(city)
    assert [p.code for p in problems] == ["city_ring_self_intersecting"], problems
    assert "side 0 (points 0-1) touches or crosses side 2 (points 2-3)" in problems[0].message


def test_city_a_spike_is_not_a_simple_ring() -> None:
    assert ring_self_intersection([[0, 0], [10, 0], [10, 10], [10, 5], [0, 10]]) is not None
    assert ring_self_intersection([[0, 0], [10, 0], [10, 10], [0, 10]]) is None


def test_city_an_empty_collection_says_no_features(tmp_path) -> None:
    rc, _, stderr, out = run(tmp_path, collection([]))
    assert rc == 2 and not out.exists()
    assert "has no features" in stderr and "missing column" not in stderr


def test_city_an_empty_street_collection_says_no_features(tmp_path) -> None:
    streets = tmp_path / "streets.geojson"
    streets.write_text(json.dumps(collection([])))
    for option in ("--centerlines", "--osm-streets"):
        rc, _, stderr, out = run(tmp_path, collection(block()), option, str(streets))
        assert rc == 2 and not out.exists()
        assert "has no features: there are no streets to import" in stderr and "missing column" not in stderr


def test_city_a_centerline_wider_than_the_format_is_a_named_skip(tmp_path) -> None:
    doc = json.loads((FIXTURES / "centerlines_cscl.geojson").read_text())
    doc["features"][0]["properties"]["st_width"] = "5000"
    streets = tmp_path / "streets.geojson"
    streets.write_text(json.dumps(doc))
    footprints = (FIXTURES / "footprints_current.geojson").read_text()
    rc, stdout, stderr, out = run(tmp_path, footprints, "--centerlines", str(streets),
                                  "--bbox", "-73.9885,40.7255,-73.9740,40.7319")
    assert rc == 0, stderr
    doc = written(out)
    assert doc["edges"] and all(e["width_m"] <= 200 for e in doc["edges"])
    named = json.loads(stdout)["skipped_named"]
    assert named == ["streets.geojson feature 0 (5000): street width 5000 ft is above the format's 200 m maximum"]


# --- the invariant, for any input -----------------------------------------------------------------------

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
anything_number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12))
near_lon = st.one_of(st.floats(LON - 0.01, LON + 0.01), anything_number, st.floats(-180, 180))
near_lat = st.one_of(st.floats(LAT - 0.01, LAT + 0.01), anything_number, st.floats(-90, 90))
position = st.one_of(st.tuples(near_lon, near_lat).map(list), st.just([LAT, LON]), st.just([]), st.just("x"))
ring = st.lists(position, min_size=0, max_size=7).map(lambda r: r + r[:1])
prop_value = st.one_of(st.none(), st.text(max_size=6), anything_number, st.sampled_from(["0", "40", "2110", "5110"]),
                       st.lists(st.integers(), max_size=2))
props = st.fixed_dictionaries({}, optional={"height_roof": prop_value, "ground_elevation": prop_value,
                                            "feature_code": prop_value, "bin": prop_value})
geometry = st.one_of(
    st.none(),
    st.builds(lambda rings: {"type": "Polygon", "coordinates": rings}, st.lists(ring, min_size=0, max_size=3)),
    st.builds(lambda polys: {"type": "MultiPolygon", "coordinates": polys},
              st.lists(st.lists(ring, min_size=1, max_size=2), max_size=2)),
    st.builds(lambda line: {"type": "LineString", "coordinates": line}, st.lists(position, max_size=3)),
)
feature = st.builds(lambda g, p: {"type": "Feature", "geometry": g, "properties": p}, geometry, props)
good = st.integers(0, 5).map(block)
street_line = st.one_of(
    st.lists(st.tuples(st.floats(LON - 0.003, LON + 0.003), st.floats(LAT - 0.003, LAT + 0.003)).map(list),
             min_size=2, max_size=5),
    st.lists(position, max_size=4))
street = st.builds(
    lambda line, hw, name, multi: {"type": "Feature", "properties": {"highway": hw, "name": name},
                                   "geometry": {"type": "MultiLineString" if multi else "LineString",
                                                "coordinates": [line] if multi else line}},
    street_line, st.one_of(st.sampled_from(["primary", "residential", "footway", "motorway_link"]), prop_value),
    prop_value, st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(features=st.tuples(good, st.lists(feature, max_size=6)).map(lambda t: t[0] + t[1]),
       bbox=st.one_of(st.none(), st.just("-74.0,40.72,-73.97,40.74"), st.just("-180,-90,180,90")),
       streets=st.one_of(st.none(), st.lists(street, max_size=8)))
def test_city_import_writes_a_valid_file_or_refuses_with_a_message(tmp_path, features, bbox, streets) -> None:
    args = ["--bbox", bbox] if bbox else []
    if streets is not None:
        (tmp_path / "streets.geojson").write_text(json.dumps(collection(streets)))
        args += ["--osm-streets", str(tmp_path / "streets.geojson")]
    rc, stdout, stderr, out = run(tmp_path, json.dumps(collection(features)), *args)
    if rc == 0:
        doc = json.loads(out.read_text())
        assert validate_city(doc) == [], stdout
    else:
        assert rc == 2 and not out.exists()
        assert stderr.startswith("sdctl city import: ") and len(stderr.strip()) > len("sdctl city import: ")
