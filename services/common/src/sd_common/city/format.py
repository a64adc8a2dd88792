"""City file format v1: the model, its JSON form, a writer, a reader and a validator.

docs/city-format.md is the prose form of this module and of ``city-v1.schema.json`` (shipped beside
it); when they disagree, fix both. The JSON Schema checks types and ranges; :func:`validate_city`
adds what a schema cannot say: unique ids, edges that start and end at their nodes, lane counts that
fit the one-way flag, counter-clockwise footprints.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from sd_common.problems import Problem, ProblemError

FORMAT = "scale-diffusion-city"
VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("city-v1.schema.json")

CONTROLS = ("signal", "stop", "none")
ONEWAY = ("forward", "backward", "two_way")
EDGE_KINDS = ("avenue", "street", "other")
BUILDING_KINDS = ("building", "garage", "under_construction", "other")
# Kinds a car collides with. "other" (canopies, sheds, tanks, unknown codes) is drawn but never solid.
SOLID_KINDS = frozenset({"building", "garage", "under_construction"})

# An edge's first and last point must lie this close to its nodes.
ENDPOINT_TOLERANCE_M = 0.01
DECIMALS = 3  # coordinates are written to the millimetre

Point = tuple[float, float]


@dataclass
class Node:
    """A street graph vertex: an intersection, a dead end, or a joint between two segments."""

    id: str | int
    x_m: float
    y_m: float
    control: str = "none"


@dataclass
class Edge:
    """A street segment between two nodes, drawn along ``points`` from ``from_id`` to ``to_id``."""

    id: str | int
    from_id: str | int
    to_id: str | int
    points: list[Point]
    width_m: float
    lanes_forward: int
    lanes_backward: int
    oneway: str
    name: str = ""
    kind: str = "street"
    source_id: str | None = None
    width_known: bool = True


@dataclass
class Building:
    """A footprint extruded from ``ground_m`` by ``height_m``; counter-clockwise, not closed."""

    id: str | int
    footprint: list[Point]
    height_m: float
    ground_m: float = 0.0
    kind: str = "building"
    source_id: str | None = None
    height_known: bool = True
    ground_known: bool = True
    holes: list[list[Point]] = field(default_factory=list)


@dataclass
class CitySource:
    """Where the city came from: the generator's seed, or the NYC files and the frame's origin."""

    kind: str
    seed: int | None = None
    bbox_wgs84: tuple[float, float, float, float] | None = None
    origin_wgs84: tuple[float, float] | None = None
    projection: str | None = None
    vertical_datum: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    attribution: str | None = None  # credit a viewer must show with the city (e.g. ODbL data)


@dataclass
class City:
    """A whole city file."""

    name: str
    source: CitySource
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, coordinates rounded to the millimetre, optional fields only when set."""
        source: dict[str, Any] = {"kind": self.source.kind}
        for key in ("seed", "bbox_wgs84", "origin_wgs84", "projection", "vertical_datum", "attribution"):
            value = getattr(self.source, key)
            if value is not None:
                source[key] = list(value) if isinstance(value, tuple) else value
        if self.source.files:
            source["files"] = self.source.files
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "source": source,
            "nodes": [{"id": n.id, "x_m": _r(n.x_m), "y_m": _r(n.y_m), "control": n.control} for n in self.nodes],
            "edges": [_edge_dict(e) for e in self.edges],
            "buildings": [_building_dict(b) for b in self.buildings],
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> City:
        """The model of a document that :func:`validate_city` accepted."""
        s = doc["source"]
        source = CitySource(
            kind=s["kind"], seed=s.get("seed"),
            bbox_wgs84=tuple(s["bbox_wgs84"]) if "bbox_wgs84" in s else None,
            origin_wgs84=tuple(s["origin_wgs84"]) if "origin_wgs84" in s else None,
            projection=s.get("projection"), vertical_datum=s.get("vertical_datum"), files=list(s.get("files", [])),
            attribution=s.get("attribution"))
        return cls(
            name=doc["name"], source=source,
            nodes=[Node(n["id"], n["x_m"], n["y_m"], n["control"]) for n in doc["nodes"]],
            edges=[Edge(e["id"], e["from"], e["to"], [tuple(p) for p in e["points"]], e["width_m"],
                        e["lanes_forward"], e["lanes_backward"], e["oneway"], e["name"], e["kind"],
                        e.get("source_id"), e.get("width_known", True)) for e in doc["edges"]],
            buildings=[Building(b["id"], [tuple(p) for p in b["footprint"]], b["height_m"], b["ground_m"], b["kind"],
                                b.get("source_id"), b.get("height_known", True), b.get("ground_known", True),
                                [[tuple(p) for p in h] for h in b.get("holes", [])]) for b in doc["buildings"]],
        )


def _r(v: float) -> float:
    return round(v, DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _points(points: list[Point]) -> list[list[float]]:
    return [[_r(x), _r(y)] for x, y in points]


def _edge_dict(e: Edge) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": e.id, "from": e.from_id, "to": e.to_id, "points": _points(e.points), "width_m": _r(e.width_m),
        "lanes_forward": e.lanes_forward, "lanes_backward": e.lanes_backward, "oneway": e.oneway,
        "name": e.name, "kind": e.kind,
    }
    if e.source_id is not None:
        d["source_id"] = e.source_id
    if not e.width_known:
        d["width_known"] = False
    return d


def _building_dict(b: Building) -> dict[str, Any]:
    d: dict[str, Any] = {"id": b.id, "footprint": _points(b.footprint), "height_m": _r(b.height_m),
                         "ground_m": _r(b.ground_m), "kind": b.kind}
    if b.holes:
        d["holes"] = [_points(h) for h in b.holes]
    if b.source_id is not None:
        d["source_id"] = b.source_id
    if not b.height_known:
        d["height_known"] = False
    if not b.ground_known:
        d["ground_known"] = False
    return d


def signed_area_m2(ring: list[Point] | list[list[float]]) -> float:
    """Shoelace area of an unclosed ring: positive when counter-clockwise (x east, y north)."""
    n = len(ring)
    if n < 3:
        return 0.0
    total = 0.0
    x0, y0 = ring[0][0], ring[0][1]  # relative to the first vertex, for precision far from the origin
    px, py = 0.0, 0.0
    for i in range(1, n):
        x, y = ring[i][0] - x0, ring[i][1] - y0
        total += px * y - x * py
        px, py = x, y
    return total / 2


def _orient(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> int:
    cross = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    return (cross > 0) - (cross < 0)


def _on_segment(ax: float, ay: float, bx: float, by: float, px: float, py: float) -> bool:
    """Whether p, collinear with a-b, lies on the closed segment a-b."""
    return min(ax, bx) <= px <= max(ax, bx) and min(ay, by) <= py <= max(ay, by)


def _segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    o1, o2 = _orient(*a, *b, *c), _orient(*a, *b, *d)
    o3, o4 = _orient(*c, *d, *a), _orient(*c, *d, *b)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True  # a proper crossing
    return ((o1 == 0 and _on_segment(*a, *b, *c)) or (o2 == 0 and _on_segment(*a, *b, *d))
            or (o3 == 0 and _on_segment(*c, *d, *a)) or (o4 == 0 and _on_segment(*c, *d, *b)))


def ring_self_intersection(ring: list[Point] | list[list[float]]) -> tuple[int, int] | None:
    """The first pair of sides (i, j) of an unclosed ring that touch or cross, or None if it is simple.

    Neighbouring sides may share their common vertex, but not fold back over each other (a spike).
    Sides are compared only when their bounding boxes overlap, scanning them in order of their west end.
    """
    n = len(ring)
    if n < 3:
        return None
    xs = [float(p[0]) for p in ring]
    ys = [float(p[1]) for p in ring]
    # Neighbours meet at vertex k: a zero turn that goes back the way it came is a spike.
    for k in range(n):
        ax, ay = xs[k - 1], ys[k - 1]
        sx, sy = xs[k], ys[k]
        fx, fy = xs[(k + 1) % n], ys[(k + 1) % n]
        if (sx - ax) * (fy - ay) == (sy - ay) * (fx - ax) and (fx - sx) * (ax - sx) + (fy - sy) * (ay - sy) > 0:
            return (k - 1, k) if k > 0 else (0, n - 1)
    west = [min(xs[i], xs[(i + 1) % n]) for i in range(n)]
    order = sorted(range(n), key=west.__getitem__)
    found: list[tuple[int, int]] = []
    for pos, i in enumerate(order):
        i1 = (i + 1) % n
        ax, ay, bx, by = xs[i], ys[i], xs[i1], ys[i1]
        east_i = ax if ax > bx else bx
        south_i, north_i = (ay, by) if ay < by else (by, ay)
        for j in order[pos + 1:]:
            if west[j] > east_i:
                break  # this and every later side starts east of side i's end
            d = abs(i - j)
            if d == 1 or d == n - 1:
                continue
            j1 = (j + 1) % n
            cy, dy = ys[j], ys[j1]
            if (cy > north_i and dy > north_i) or (cy < south_i and dy < south_i):
                continue
            if _segments_touch((ax, ay), (bx, by), (xs[j], cy), (xs[j1], dy)):
                found.append((i, j) if i < j else (j, i))
    return min(found) if found else None


@cache
def load_schema() -> dict[str, Any]:
    """The JSON Schema of city format v1 shipped with this package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def write_city(city: City, path: Path | str) -> int:
    """Writes ``city`` as compact UTF-8 JSON; returns the bytes written. Refuses NaN and infinities."""
    text = json.dumps(city.to_dict(), ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"
    data = text.encode("utf-8")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def read_city(path: Path | str) -> City:
    """Reads and validates a city file; raises ProblemError listing every problem found."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProblemError([Problem("city_not_json", str(path), f"not a readable JSON file: {exc}")]) from None
    problems = validate_city(doc)
    if problems:
        raise ProblemError(problems)
    return City.from_dict(doc)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validate_city(doc: Any) -> list[Problem]:
    """Every problem of a city document: JSON Schema first, then the rules a schema cannot express.

    Needs the ``jsonschema`` package (the ``city`` extra of sd-common).
    """
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the city extra installs it
        raise RuntimeError("validating a city file needs jsonschema: pip install 'sd-common[city]'") from None
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [
        Problem("city_schema", _json_path(err.absolute_path) or "(document)", err.message)
        for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        return problems  # the structural checks below assume the schema holds
    return _semantic_problems(doc)


def _semantic_problems(doc: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []

    def unique_ids(key: str) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(doc[key]):
            ident = (type(item["id"]).__name__, item["id"])
            if ident in seen:
                problems.append(Problem("city_id_duplicate", f"{key}[{i}].id",
                                        f"id {item['id']!r} is already used by {key}[{seen[ident]}]"))
            else:
                seen[ident] = i

    for key in ("nodes", "edges", "buildings"):
        unique_ids(key)
    nodes = {(type(n["id"]).__name__, n["id"]): n for n in doc["nodes"]}
    for i, e in enumerate(doc["edges"]):
        where = f"edges[{i}]"
        for end, point in (("from", e["points"][0]), ("to", e["points"][-1])):
            node = nodes.get((type(e[end]).__name__, e[end]))
            if node is None:
                problems.append(Problem("city_edge_node_unknown", f"{where}.{end}",
                                        f"no node has id {e[end]!r}"))
            elif math.hypot(point[0] - node["x_m"], point[1] - node["y_m"]) > ENDPOINT_TOLERANCE_M:
                index = 0 if end == "from" else len(e["points"]) - 1
                problems.append(Problem(
                    "city_edge_endpoint_mismatch", f"{where}.points[{index}]",
                    f"the centerline must {'start' if end == 'from' else 'end'} at node {e[end]!r} "
                    f"({node['x_m']}, {node['y_m']}), not at ({point[0]}, {point[1]})"))
        fwd, bwd, oneway = e["lanes_forward"], e["lanes_backward"], e["oneway"]
        expected = {"forward": fwd >= 1 and bwd == 0, "backward": fwd == 0 and bwd >= 1,
                    "two_way": fwd >= 1 and bwd >= 1}[oneway]
        if not expected:
            problems.append(Problem(
                "city_edge_lanes_oneway", where,
                f"oneway {oneway!r} does not fit lanes_forward={fwd}, lanes_backward={bwd} (forward: "
                "forward lanes only; backward: backward lanes only; two_way: at least one each way)"))
        if _length_m(e["points"]) <= 0:
            problems.append(Problem("city_edge_degenerate", f"{where}.points", "the centerline has zero length"))
    for i, b in enumerate(doc["buildings"]):
        where = f"buildings[{i}]"
        problems += _ring_problems(b["footprint"], f"{where}.footprint", counter_clockwise=True)
        for k, hole in enumerate(b.get("holes", [])):
            problems += _ring_problems(hole, f"{where}.holes[{k}]", counter_clockwise=False)
    return problems


def _length_m(points: list[list[float]]) -> float:
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(points))


def _ring_problems(ring: list[list[float]], where: str, counter_clockwise: bool) -> list[Problem]:
    if ring[0] == ring[-1]:
        return [Problem("city_ring_closed", where,
                        "rings are not closed: leave out the last point, a copy of the first")]
    area = signed_area_m2(ring)
    if abs(area) < 1e-6:
        return [Problem("city_ring_degenerate", where, "the ring encloses no area")]
    crossing = ring_self_intersection(ring)
    if crossing is not None:
        i, j = crossing
        return [Problem("city_ring_self_intersecting", where,
                        f"the ring is not simple: its side {i} (points {i}-{(i + 1) % len(ring)}) touches or crosses "
                        f"side {j} (points {j}-{(j + 1) % len(ring)})")]
    if (area > 0) != counter_clockwise:
        turn = "counter-clockwise" if counter_clockwise else "clockwise"
        return [Problem("city_ring_orientation", where, f"the ring must run {turn} (x east, y north)")]
    return []
