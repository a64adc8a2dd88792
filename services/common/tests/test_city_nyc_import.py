"""The NYC Open Data importer on the project's fixtures (current and legacy footprints, LION and CSCL
centerlines) and on the shared real sample, through the same calls and CLI a user runs."""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import json
import math
import statistics
import subprocess
import sys
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from sd_common.city import ColumnMapping, MissingColumnError, import_city, validate_city, write_city
from sd_common.city.columns import CityImportError
from sd_common.city.format import signed_area_m2
from sd_common.city.projection import E2, LocalFrame
from sd_common.cli.main import main as sdctl
from tests.shared_data import FOOTPRINTS, require

FIXTURES = Path(__file__).parent / "fixtures" / "nyc"
SAMPLE = FOOTPRINTS
FT = 0.3048
SQFT = 0.09290304
# The fixtures' streets and block; FULL also holds the one building far to the north.
FULL_BBOX = (-73.9885, 40.7255, -73.9740, 40.7335)
BLOCK_BBOX = (-73.9885, 40.7255, -73.9740, 40.7319)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def save(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(doc))
    return path


def imported(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Runs `sdctl city import ... --out` in-process; returns the written city and the summary."""
    out = tmp_path / "city.json"
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert sdctl(["city", "import", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text()), buf.getvalue()


def by_source(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in doc["features"]:
        key = str(f["properties"].get("bin") or f["properties"].get("SegmentID") or f["properties"].get("physicalid"))
        out.setdefault(key, []).append(f)
    return out


def source_area_m2(props: dict[str, Any], lat: float) -> float:
    """The record's own area in m2. Legacy exports computed shape_area in EPSG:2263 square feet; the
    current portal computes it in Web Mercator (EPSG:3857), whose area scale at latitude lat is
    (1 - e2 sin2)^2 / ((1 - e2) cos2)."""
    area = float(props["shape_area"])
    if "shape_len" in props:  # legacy schema
        return area * SQFT
    s2 = math.sin(math.radians(lat)) ** 2
    return area * (1 - E2) * (1 - s2) / (1 - E2 * s2) ** 2


def building_area(b: dict[str, Any]) -> float:
    return signed_area_m2(b["footprint"]) + sum(signed_area_m2(h) for h in b.get("holes", []))


def rounding_m2(b: dict[str, Any]) -> float:
    """How much writing vertices to the millimetre can change the area: half a millimetre in x and y
    at each vertex moves each edge by at most 0.71 mm."""
    rings = [b["footprint"], *b.get("holes", [])]
    return 0.00071 * sum(math.dist(p, q) for r in rings for p, q in zip(r, r[1:] + r[:1]))


# --- footprints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("schema", ["current", "legacy"])
def test_city_footprints_import_in_current_and_legacy_names(tmp_path, schema: str) -> None:
    name = f"footprints_{schema}.geojson"
    source = load(name)
    city, summary = imported(tmp_path, "--footprints", str(FIXTURES / name), "--bbox",
                             ",".join(map(str, BLOCK_BBOX)))
    assert validate_city(city) == []
    buildings = city["buildings"]
    # 17 records: one skybridge skipped, one outside the box, one split in two parts.
    assert len(buildings) == 16
    assert Counter(b["kind"] for b in buildings) == {"building": 13, "garage": 1, "under_construction": 1,
                                                     "other": 1}
    assert "footprints skipped: outside bbox 1, skybridge (feature code 2110) 1" in summary
    assert "unknown heights: 3 (set to 18.32 m, height_known=false)" in summary
    assert "unknown ground elevations: 1" in summary

    sources = by_source(source)
    known_solid = []
    for b in buildings:
        props = sources[b["source_id"]][0]["properties"]
        height = props.get("height_roof", props.get("heightroof"))
        ground = props.get("ground_elevation", props.get("groundelev"))
        if height not in (None, "0"):
            assert b["height_m"] == pytest.approx(float(height) * FT, abs=1e-3)
            assert "height_known" not in b
            if b["kind"] != "other":
                known_solid.append(float(height) * FT)
        else:
            assert b["height_known"] is False
        if ground is not None:
            assert b["ground_m"] == pytest.approx(float(ground) * FT, abs=1e-3)
        else:
            assert b["ground_known"] is False
    defaults = {b["height_m"] for b in buildings if b.get("height_known") is False}
    assert defaults == {round(statistics.median(known_solid), 2)}  # the documented default
    # Million BIN canopy: kept, but not solid.
    assert [b["kind"] for b in buildings if b["source_id"] == "1000000"] == ["other"]
    # One BIN, two parts: two buildings with the same source id.
    assert len([b for b in buildings if b["source_id"] == "1040304"]) == 2


@pytest.mark.parametrize("schema", ["current", "legacy"])
def test_city_footprint_areas_agree_with_shape_area(tmp_path, schema: str) -> None:
    name = f"footprints_{schema}.geojson"
    sources = by_source(load(name))
    city, _ = imported(tmp_path, "--footprints", str(FIXTURES / name))
    for b in city["buildings"]:
        features = sources[b["source_id"]]
        if len(features) != 1:
            continue
        props, geometry = features[0]["properties"], features[0]["geometry"]
        parts = [b2 for b2 in city["buildings"] if b2["source_id"] == b["source_id"]]
        lat = geometry["coordinates"][0][0][1] if geometry["type"] == "Polygon" else geometry["coordinates"][0][0][0][1]
        ours = sum(building_area(p) for p in parts)
        expected = source_area_m2(props, lat)
        assert abs(ours - expected) <= 1e-5 * expected + sum(rounding_m2(p) for p in parts), b["source_id"]


def test_city_adjoining_buildings_stay_separate_and_rings_run_counter_clockwise(tmp_path) -> None:
    city, _ = imported(tmp_path, "--footprints", str(FIXTURES / "footprints_legacy.geojson"))
    row = [b for b in city["buildings"] if b["source_id"].startswith("10401")]
    assert len(row) == 6
    for a, b in itertools.pairwise(row):  # neighbours share a wall: two vertices in common
        shared = {tuple(p) for p in a["footprint"]} & {tuple(p) for p in b["footprint"]}
        assert len(shared) == 2
    for b in city["buildings"]:
        assert signed_area_m2(b["footprint"]) > 0
        assert b["footprint"][0] != b["footprint"][-1]
        for hole in b.get("holes", []):
            assert signed_area_m2(hole) < 0
    (corner,) = [b for b in city["buildings"] if b["source_id"] == "1040300"]
    assert len(corner["holes"]) == 1 and signed_area_m2(corner["holes"][0]) == pytest.approx(-36.0, abs=0.01)


def test_city_current_and_legacy_fixtures_give_the_same_city(tmp_path) -> None:
    current, _ = imported(tmp_path, "--footprints", str(FIXTURES / "footprints_current.geojson"))
    legacy, _ = imported(tmp_path, "--footprints", str(FIXTURES / "footprints_legacy.geojson"))
    assert current["buildings"] == legacy["buildings"]
    assert current["source"]["origin_wgs84"] == legacy["source"]["origin_wgs84"]


def test_city_missing_height_column_is_named(tmp_path) -> None:
    doc = load("footprints_legacy.geojson")
    for f in doc["features"]:
        del f["properties"]["heightroof"]
    with pytest.raises(MissingColumnError, match=r"missing column 'height_roof' or 'heightroof'") as err:
        import_city(save(doc, tmp_path / "f.geojson"))
    assert err.value.role == "height_roof_ft"
    assert "groundelev" in str(err.value)  # the columns the file does have are listed


def test_city_footprints_that_are_not_lon_lat_are_refused(tmp_path) -> None:
    doc = load("footprints_legacy.geojson")
    doc["features"][0]["geometry"]["coordinates"][0][0][0] = [987654.3, 203456.1]
    with pytest.raises(CityImportError, match="not WGS84 longitude/latitude"):
        import_city(save(doc, tmp_path / "f.geojson"))


def test_city_odd_footprint_records_are_skipped_by_reason(tmp_path) -> None:
    doc = load("footprints_current.geojson")
    base = doc["features"][0]
    extra = [copy.deepcopy(base) for _ in range(4)]
    extra[0]["geometry"] = None
    extra[1]["geometry"] = {"type": "Point", "coordinates": [-73.98, 40.73]}
    extra[2]["properties"]["feature_code"] = "1006"
    extra[3]["geometry"]["coordinates"] = [[p, p, p, p] for p in [base["geometry"]["coordinates"][0][0]]]
    doc["features"] += extra
    _, report = import_city(save(doc, tmp_path / "f.geojson"))
    assert report.footprints_skipped == {"no geometry": 1, "not a polygon (Point)": 1, "skybridge (feature code 2110)": 1,
                                         "cantilevered building (feature code 1006)": 1, "degenerate footprint": 1}


# --- centerlines --------------------------------------------------------------------------------------

def street_city(tmp_path: Path, shape: str, bbox=FULL_BBOX) -> tuple[dict[str, Any], str]:
    return imported(tmp_path, "--footprints", str(FIXTURES / "footprints_current.geojson"), "--centerlines",
                    str(FIXTURES / f"centerlines_{shape}.geojson"), "--bbox", ",".join(map(str, bbox)))


@pytest.mark.parametrize("shape", ["lion", "cscl"])
def test_city_street_graph_from_lion_and_cscl(tmp_path, shape: str) -> None:
    city, summary = street_city(tmp_path, shape)
    assert validate_city(city) == []
    assert len(city["edges"]) == 24 and len(city["nodes"]) == 17
    code = "P" if shape == "lion" else "NV"
    assert f"segments skipped: not for vehicles (traffic direction {code}) 1" in summary
    assert Counter(n["control"] for n in city["nodes"]) == {"signal": 12, "stop": 1, "none": 4}
    sources = by_source(load(f"centerlines_{shape}.geojson"))
    nodes = {n["id"]: n for n in city["nodes"]}
    for e in city["edges"]:
        (feature,) = sources[e["source_id"]]
        props = feature["properties"]
        width_ft = props.get("StreetWidth_Min", props.get("st_width"))
        assert e["width_m"] == pytest.approx(float(width_ft) * FT, abs=1e-3)
        assert e["points"][0] == [nodes[e["from"]]["x_m"], nodes[e["from"]]["y_m"]]
        assert e["points"][-1] == [nodes[e["to"]]["x_m"], nodes[e["to"]]["y_m"]]
        name = props.get("Street", props.get("full_stree"))
        assert e["name"] == name
        assert e["kind"] == ("avenue" if "AV" in name else "street")
        dx = e["points"][-1][0] - e["points"][0][0]
        dy = e["points"][-1][1] - e["points"][0][1]
        street = name.split()[1] if "ST" in name else None
        if street in ("10", "12"):  # even streets run east
            assert (e["oneway"], e["lanes_forward"], e["lanes_backward"]) == ("forward", 1, 0) and dx > 0
        elif street in ("11", "13"):  # odd streets run west
            assert (e["oneway"], e["lanes_forward"], e["lanes_backward"]) == ("forward", 1, 0) and dx < 0
        elif name.startswith("1 AV"):  # First Avenue runs uptown
            assert (e["oneway"], e["lanes_forward"], e["lanes_backward"]) == ("forward", 4, 0) and dy > 0
        else:
            assert e["oneway"] == "two_way"
        # Geometry turned only when the code says "against the digitizing direction".
        frame = LocalFrame(*city["source"]["origin_wgs84"])
        lon, lat = feature["geometry"]["coordinates"][0] if shape == "lion" else feature["geometry"]["coordinates"][0][0]
        first = frame.to_local(lon, lat)
        against = props.get("TrafDir", props.get("trafdir")) in ("A", "TF")
        start = e["points"][-1] if against else e["points"][0]
        assert math.dist(first, start) < 0.01


def test_city_lanes_come_from_travel_lanes_or_the_width(tmp_path) -> None:
    """LION carries Number_Travel_Lanes (Avenue A: 2, one each way); CSCL has none, so its 60 ft give 2 each way."""
    lion, _ = street_city(tmp_path, "lion")
    cscl, _ = street_city(tmp_path, "cscl")
    assert {(e["lanes_forward"], e["lanes_backward"]) for e in lion["edges"] if e["name"] == "AVENUE A"} == {(1, 1)}
    assert {(e["lanes_forward"], e["lanes_backward"]) for e in cscl["edges"] if e["name"] == "AV A"} == {(2, 2)}
    assert {(e["lanes_forward"], e["lanes_backward"]) for e in cscl["edges"] if e["name"] == "E 14 ST"} == {(2, 2)}


def test_city_lion_and_cscl_give_the_same_graph(tmp_path) -> None:
    def shape_of(city: dict[str, Any]) -> set:
        """Edges by their ends (in travel order if one-way), one-way flag and width."""
        out = set()
        for e in city["edges"]:
            ends = (tuple(e["points"][0]), tuple(e["points"][-1]))
            out.add((ends if e["oneway"] == "forward" else frozenset(ends), e["oneway"], e["width_m"]))
        return out
    lion, _ = street_city(tmp_path, "lion")
    cscl, _ = street_city(tmp_path, "cscl")
    assert shape_of(lion) == shape_of(cscl)


def test_city_segments_outside_the_bbox_are_left_out(tmp_path) -> None:
    city, summary = street_city(tmp_path, "lion", BLOCK_BBOX)
    assert len(city["edges"]) == 23  # First Avenue north of 14th Street is outside
    assert "outside bbox 1" in summary


@pytest.mark.parametrize("shape, column", [("cscl", "st_width"), ("cscl", "trafdir"), ("lion", "RW_TYPE")])
def test_city_missing_centerline_column_is_named(tmp_path, capsys, shape: str, column: str) -> None:
    doc = load(f"centerlines_{shape}.geojson")
    for f in doc["features"]:
        del f["properties"][column]
    path = save(doc, tmp_path / "c.geojson")
    with pytest.raises(MissingColumnError) as err:
        import_city(FIXTURES / "footprints_current.geojson", path)
    assert f"'{column.lower()}'" in str(err.value).lower()
    code = sdctl(["city", "import", "--footprints", str(FIXTURES / "footprints_current.geojson"),
                  "--centerlines", str(path), "--out", str(tmp_path / "x.json")])
    assert code == 2
    stderr = capsys.readouterr().err
    assert column.lower() in stderr.lower() and "missing column" in stderr and "--columns" in stderr
    assert not (tmp_path / "x.json").exists()


def test_city_column_mapping_file_renames_columns(tmp_path) -> None:
    doc = load("centerlines_cscl.geojson")
    for f in doc["features"]:
        f["properties"]["Curb_Width"] = f["properties"].pop("st_width")
        f["properties"]["Direction"] = f["properties"].pop("trafdir")
    path = save(doc, tmp_path / "c.geojson")
    mapping = save({"centerlines": {"width_ft": "Curb_Width", "direction": ["dir", "Direction"], "status": None}},
                   tmp_path / "mapping.json")
    city, summary = imported(tmp_path, "--footprints", str(FIXTURES / "footprints_current.geojson"),
                             "--centerlines", str(path), "--columns", str(mapping), "--bbox",
                             ",".join(map(str, FULL_BBOX)))
    assert len(city["edges"]) == 24
    assert "width_ft=Curb_Width" in summary and "direction=Direction" in summary
    assert "status=" not in summary  # turned off
    # Mapped to a column the file does not have: that name is in the error.
    bad = save({"centerlines": {"width_ft": "WIDTH_FT", "direction": "Direction"}}, tmp_path / "bad.json")
    with pytest.raises(MissingColumnError, match="missing column 'WIDTH_FT'"):
        import_city(FIXTURES / "footprints_current.geojson", path, columns=ColumnMapping.load(bad))


@pytest.mark.parametrize("doc, message", [
    ({"centerline": {}}, "unknown section 'centerline'"),
    ({"centerlines": {"widht_ft": "x"}}, "centerlines.widht_ft is not a role"),
    ({"centerlines": {"direction": None}}, "required and cannot be turned off"),
    ({"centerlines": {"name": 3}}, "must be a column name"),
    ({"codes": {"direction_sideways": ["S"]}}, "codes.direction_sideways is unknown"),
])
def test_city_column_mapping_mistakes_are_named(tmp_path, doc, message) -> None:
    with pytest.raises(CityImportError, match=message):
        ColumnMapping.load(save(doc, tmp_path / "m.json"))


def test_city_columns_command_prints_a_usable_mapping(tmp_path, capsys) -> None:
    assert sdctl(["city", "columns"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "m.json"
    path.write_text(printed)
    assert ColumnMapping.load(path) == ColumnMapping.default()
    assert json.loads(printed)["codes"]["direction_against"] == ["A", "TF"]


def lion_with(tmp_path: Path, *changes) -> tuple[Any, Any]:
    doc = load("centerlines_lion.geojson")
    for change in changes:
        change(doc["features"])
    return import_city(FIXTURES / "footprints_current.geojson", save(doc, tmp_path / "c.geojson"), bbox=FULL_BBOX)


def test_city_codes_decide_which_segments_are_driven(tmp_path) -> None:
    def add(features, **props):
        f = copy.deepcopy(features[0])
        f["properties"].update(props)
        features.append(f)

    city, report = lion_with(tmp_path, lambda fs: add(fs, Status="3"), lambda fs: add(fs, RB_Layer="G"),
                             lambda fs: add(fs, TrafDir="X"), lambda fs: add(fs, TrafDir=None),
                             lambda fs: add(fs, RW_TYPE=" 7"), lambda fs: fs[0]["properties"].update(StreetWidth_Min=None))
    assert report.segments_skipped == {"not for vehicles (traffic direction P)": 1,
                                       "status 3 (not a built street)": 1,
                                       "layer G (generic centerline of a divided road)": 1,
                                       "unknown traffic direction 'X'": 1, "unknown traffic direction empty": 1,
                                       "roadway type 7 (step street)": 1}
    (first,) = [e for e in city.edges if e.source_id == "0033000"]
    assert first.width_known is False and first.width_m == pytest.approx(30 * FT)
    assert report.unknown_width == 1


def test_city_endpoints_snap_within_the_tolerance_and_levels_keep_bridges_apart(tmp_path) -> None:
    metre_lon = 1 / 84300  # a metre in longitude at 40.73 N, roughly
    def nudge(metres: float):
        def change(features):
            features[0]["geometry"]["coordinates"][-1][0] += metres * metre_lon
        return change

    assert len(lion_with(tmp_path, nudge(0.3))[0].nodes) == 17
    assert len(lion_with(tmp_path, nudge(3.0))[0].nodes) == 18  # no longer meets its intersection
    # A segment ending at the Avenue B / E 11th node on another level does not join it.
    def bridge(level: str):
        def change(features):
            f = copy.deepcopy(features[0])
            start = f["geometry"]["coordinates"][-1]
            f["geometry"]["coordinates"] = [[start[0] + 0.001, start[1] + 0.001], start]
            f["properties"].update(SegmentID="0099999", NodeLevelT=level)
            features.append(f)
        return change
    assert len(lion_with(tmp_path, bridge("M"))[0].nodes) == 18  # only the new far end is new
    assert len(lion_with(tmp_path, bridge("Q"))[0].nodes) == 19  # both ends are new


# --- the CLI as a user runs it ----------------------------------------------------------------------

def test_city_sdctl_import_and_validate_as_processes(tmp_path) -> None:
    exe = Path(sys.executable).with_name("sdctl")
    out = tmp_path / "ev.json"
    run = subprocess.run([str(exe), "city", "import", "--footprints", str(FIXTURES / "footprints_legacy.geojson"),
                          "--centerlines", str(FIXTURES / "centerlines_lion.geojson"), "--bbox",
                          ",".join(map(str, BLOCK_BBOX)), "--name", "East Village", "--out", str(out)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert "city 'East Village'" in run.stdout
    assert "buildings: 16 from 17 footprint records" in run.stdout
    assert "streets: 23 edges, 16 nodes" in run.stdout
    check = subprocess.run([str(exe), "city", "validate", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0 and "valid city 'East Village'" in check.stderr
    doc = json.loads(out.read_text())
    doc["edges"][0]["to"] = "nowhere"
    out.write_text(json.dumps(doc))
    check = subprocess.run([str(exe), "city", "validate", str(out)], capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 1 and "edges[0].to: no node has id 'nowhere'" in check.stdout


def test_city_import_json_summary_and_provenance(tmp_path, capsys) -> None:
    out = tmp_path / "c.json"
    assert sdctl(["city", "import", "--footprints", str(FIXTURES / "footprints_current.geojson"), "--json",
                  "--origin", "-73.98,40.731", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["buildings"] == 17 and summary["unknown_height"] == 3
    assert summary["footprints_skipped"] == {"skybridge (feature code 2110)": 1}
    source = json.loads(out.read_text())["source"]
    assert source["origin_wgs84"] == [-73.98, 40.731]
    assert source["kind"] == "nyc-open-data" and source["vertical_datum"] == "NAVD88"
    (f,) = source["files"]
    assert f["role"] == "footprints" and f["features"] == 17 and len(f["sha256"]) == 64
    assert f["columns"]["height_roof_ft"] == "height_roof"


@pytest.mark.parametrize("args, message", [
    (["--bbox", "-73.97,40.72,-73.99,40.74"], "west < east"),
    (["--bbox", "1,2,3"], "expected 4 numbers"),
    (["--origin", "-73.98,95"], "not a WGS84 longitude,latitude"),
    (["--snap-m", "0"], "snap tolerance must be positive"),
])
def test_city_bad_options_are_refused(tmp_path, capsys, args, message) -> None:
    try:
        code = sdctl(["city", "import", "--footprints", str(FIXTURES / "footprints_current.geojson"), *args,
                      "--out", str(tmp_path / "c.json")])
    except SystemExit as exc:  # argparse rejects malformed values itself
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err


def test_city_fixtures_are_current() -> None:
    """The fixture files are exactly what make_fixtures.py writes."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, make in module.FILES.items():
        assert (FIXTURES / name).read_text() == module.render(make()), f"{name}: rerun make_fixtures.py"


# --- the shared real sample ---------------------------------------------------------------------------

@pytest.fixture
def needs_sample() -> Path:
    """The real sample; a test using it fails under CI=true when the shared folder is missing."""
    return require(SAMPLE)


@pytest.mark.usefixtures("needs_sample")
def test_city_real_sample_imports_with_heights_and_areas_of_the_source(tmp_path) -> None:
    source = json.loads(SAMPLE.read_text())
    city, summary = imported(tmp_path, "--footprints", str(SAMPLE), "--centerlines",
                             str(FIXTURES / "centerlines_cscl.geojson"))
    assert validate_city(city) == []
    assert len(source["features"]) == 176 and len(city["buildings"]) == 176
    assert "unknown heights: 0" in summary and "footprints skipped: none" in summary
    assert city["edges"], "the fixture streets run through the sample's blocks"
    sources = {f["properties"]["bin"]: f for f in source["features"]}
    worst = 0.0
    for b in city["buildings"]:
        props = sources[b["source_id"]]["properties"]
        assert b["kind"] == "building"
        assert b["height_m"] == pytest.approx(float(props["height_roof"]) * FT, abs=1e-3)
        assert b["ground_m"] == pytest.approx(float(props["ground_elevation"]) * FT, abs=1e-3)
        ring = sources[b["source_id"]]["geometry"]["coordinates"][0]
        lat = sum(p[1] for p in ring) / len(ring)
        expected = source_area_m2(props, lat)
        error = abs(building_area(b) - expected)
        assert error <= 2e-4 * expected + rounding_m2(b), b["source_id"]
        worst = max(worst, (error - rounding_m2(b)) / expected)
        # This export's shape_area is not square feet: read so, it is off by a factor of six.
        assert building_area(b) / (float(props["shape_area"]) * SQFT) == pytest.approx(6.17, rel=0.01)


@pytest.mark.usefixtures("needs_sample")
def test_city_real_sample_with_a_bbox(tmp_path) -> None:
    city, report = import_city(SAMPLE, bbox=(-73.9866, 40.7297, -73.9800, 40.7323))
    assert 0 < len(city.buildings) < 176
    assert report.footprints_skipped["outside bbox"] == 176 - len(city.buildings)
    path = tmp_path / "c.json"
    write_city(city, path)
    assert validate_city(json.loads(path.read_text())) == []
