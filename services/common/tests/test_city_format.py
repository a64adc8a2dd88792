"""City format v1: the shipped JSON Schema, the graph rules beyond it, the writer and the reader."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sd_common.city.format import (
    SCHEMA_PATH,
    Building,
    City,
    CitySource,
    Edge,
    Node,
    load_schema,
    read_city,
    validate_city,
    write_city,
)
from sd_common.problems import ProblemError

REPO = Path(__file__).resolve().parents[3]


def small_city() -> dict[str, Any]:
    """A generated city as the game might write it: one two-way street, one one-way, two buildings."""
    return {
        "format": "scale-diffusion-city", "version": 1, "name": "grid-7",
        "source": {"kind": "generated", "seed": 7},
        "nodes": [{"id": "a", "x_m": 0, "y_m": 0, "control": "signal"},
                  {"id": "b", "x_m": 80, "y_m": 0, "control": "stop"},
                  {"id": "c", "x_m": 80, "y_m": 80, "control": "none"}],
        "edges": [{"id": "ab", "from": "a", "to": "b", "points": [[0, 0], [40, 0.5], [80, 0]], "width_m": 18.3,
                   "lanes_forward": 2, "lanes_backward": 2, "oneway": "two_way", "name": "Main", "kind": "avenue"},
                  {"id": "bc", "from": "b", "to": "c", "points": [[80, 0], [80, 80]], "width_m": 9.1,
                   "lanes_forward": 1, "lanes_backward": 0, "oneway": "forward", "name": "", "kind": "street"}],
        "buildings": [{"id": 1, "footprint": [[10, 10], [30, 10], [30, 40], [10, 40]], "height_m": 21.0,
                       "ground_m": 0, "kind": "building"},
                      {"id": 2, "footprint": [[40, 10], [60, 10], [60, 40], [40, 40]], "height_m": 3.5,
                       "ground_m": 0, "kind": "other", "holes": [[[45, 15], [45, 20], [50, 20], [50, 15]]]}],
    }


def codes(doc: Any) -> list[str]:
    return [p.code for p in validate_city(doc)]


def test_city_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema())
    assert SCHEMA_PATH.name == "city-v1.schema.json"


def test_city_small_generated_city_is_valid() -> None:
    assert validate_city(small_city()) == []


@pytest.mark.parametrize("change, code, path", [
    (lambda d: d.pop("buildings"), "city_schema", "(document)"),
    (lambda d: d.update(version=2), "city_schema", "version"),
    (lambda d: d["nodes"][0].update(control="yield"), "city_schema", "nodes[0].control"),
    (lambda d: d["edges"][0].update(width_m=0), "city_schema", "edges[0].width_m"),
    (lambda d: d["edges"][0].update(lanes_forward=1.5), "city_schema", "edges[0].lanes_forward"),
    (lambda d: d["edges"][0]["points"].__setitem__(1, [40]), "city_schema", "edges[0].points[1]"),
    (lambda d: d["buildings"][0].update(kind="skybridge"), "city_schema", "buildings[0].kind"),
    (lambda d: d["buildings"][0].update(colour="red"), "city_schema", "buildings[0]"),  # closed objects
    (lambda d: d["buildings"][0].update(footprint=[[0, 0], [1, 0]]), "city_schema", "buildings[0].footprint"),
    (lambda d: d["source"].update(kind="osm"), "city_schema", "source.kind"),
    (lambda d: d["source"].update(bbox_wgs84=[-74, 40.7, -73.9]), "city_schema", "source.bbox_wgs84"),
    (lambda d: d["nodes"][1].update(id="a"), "city_id_duplicate", "nodes[1].id"),
    (lambda d: d["buildings"][1].update(id=1), "city_id_duplicate", "buildings[1].id"),
    (lambda d: d["edges"][1].update(to="z"), "city_edge_node_unknown", "edges[1].to"),
    (lambda d: d["edges"][1].update(to=3), "city_edge_node_unknown", "edges[1].to"),  # "3" is not 3
    (lambda d: d["edges"][0]["points"].__setitem__(0, [0, 0.5]), "city_edge_endpoint_mismatch", "edges[0].points[0]"),
    (lambda d: d["edges"][1].update(lanes_backward=1), "city_edge_lanes_oneway", "edges[1]"),
    (lambda d: d["edges"][0].update(lanes_backward=0), "city_edge_lanes_oneway", "edges[0]"),
    (lambda d: d["buildings"][0]["footprint"].reverse(), "city_ring_orientation", "buildings[0].footprint"),
    (lambda d: d["buildings"][1]["holes"][0].reverse(), "city_ring_orientation", "buildings[1].holes[0]"),
    (lambda d: d["buildings"][0]["footprint"].append([10, 10]), "city_ring_closed", "buildings[0].footprint"),
    (lambda d: d["buildings"][0].update(footprint=[[0, 0], [1, 1], [2, 2]]), "city_ring_degenerate",
     "buildings[0].footprint"),
])
def test_city_validator_names_each_problem(change, code, path) -> None:
    doc = small_city()
    change(doc)
    problems = validate_city(doc)
    assert (code, path) in [(p.code, p.path) for p in problems], problems


def test_city_extensions_and_optional_fields_are_accepted() -> None:
    doc = small_city()
    doc["x_generator"] = {"build": "web 1.2"}
    doc["buildings"][0].update(x_colour="brick", source_id="1006912", height_known=False, ground_known=False)
    doc["edges"][0].update(source_id="0033571", width_known=False)
    doc["source"].update(bbox_wgs84=[-74.0, 40.7, -73.9, 40.8], origin_wgs84=[-73.95, 40.75],
                         projection="enu-tangent-plane-wgs84", vertical_datum="NAVD88",
                         files=[{"role": "footprints", "path": "f.geojson", "anything": 1}])
    assert validate_city(doc) == []


def test_city_writer_and_reader_round_trip(tmp_path) -> None:
    city = City.from_dict(small_city())
    path = tmp_path / "city.json"
    write_city(city, path)
    again = read_city(path)
    assert again.to_dict() == city.to_dict()
    assert json.loads(path.read_text())["buildings"][1]["holes"] == [[[45, 15], [45, 20], [50, 20], [50, 15]]]


def test_city_writer_rounds_to_millimetres_and_refuses_nan(tmp_path) -> None:
    city = City("t", CitySource("generated", seed=1),
                nodes=[Node("a", 0.123456, -0.0004), Node("b", 10, 0)],
                edges=[Edge("e", "a", "b", [(0.123456, -0.0004), (10, 0)], 9.144, 1, 0, "forward")],
                buildings=[Building("b1", [(0, 0), (1, 0), (1, 1)], 3.0)])
    doc = city.to_dict()
    assert doc["nodes"][0] == {"id": "a", "x_m": 0.123, "y_m": 0.0, "control": "none"}
    assert "height_known" not in doc["buildings"][0]  # written only when false
    city.buildings[0].height_m = float("nan")
    with pytest.raises(ValueError):
        write_city(city, tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()


def test_city_reader_reports_every_problem(tmp_path) -> None:
    doc = small_city()
    doc["nodes"][1]["id"] = "a"
    doc["edges"][1]["lanes_backward"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ProblemError) as err:
        read_city(path)
    assert {p.code for p in err.value.problems} >= {"city_id_duplicate", "city_edge_lanes_oneway"}
    path.write_text('{"format": NaN}')
    with pytest.raises(ProblemError, match="not a readable JSON"):
        read_city(path)


def test_city_doc_describes_every_schema_field() -> None:
    """docs/city-format.md names every property the schema defines, and the schema's enums."""
    doc = (REPO / "docs" / "city-format.md").read_text()
    schema = load_schema()
    names: set[str] = set()
    enums: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            enums.update(v for v in node.get("enum", []) if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    missing = sorted(n for n in names | enums if not re.search(rf"`{re.escape(n)}`", doc))
    assert not missing, f"docs/city-format.md does not mention: {missing}"


def test_city_doc_example_is_valid() -> None:
    """The example city in docs/city-format.md passes the validator."""
    text = (REPO / "docs" / "city-format.md").read_text()
    block = re.search(r"```json\n(\{.*?\})\n```", text, re.DOTALL)
    assert block, "docs/city-format.md has no ```json example"
    assert validate_city(json.loads(block.group(1))) == []


def test_city_from_dict_keeps_integer_ids() -> None:
    doc = copy.deepcopy(small_city())
    city = City.from_dict(doc)
    assert city.buildings[0].id == 1 and city.to_dict()["buildings"][0]["id"] == 1
