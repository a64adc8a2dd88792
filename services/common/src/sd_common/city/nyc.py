"""The NYC Open Data importer: Building Footprints and LION/CSCL street centerlines to a city file.

Both inputs are GeoJSON FeatureCollections in WGS84 longitude/latitude, read one feature at a time.
Footprints are kept whole when their centroid lies in the bounding box; centerline segments when any
part of them does. Everything is projected onto the ENU tangent plane at the box centre (see
projection.py). Every rule (kinds from feature codes, unknown heights, which segments are driven,
lanes, controls) is in docs/city-format.md, section "Importing NYC Open Data".
"""

from __future__ import annotations

import functools
import itertools
import math
import statistics
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .columns import (
    ROADWAY_TYPE_NAMES,
    CityImportError,
    ColumnMapping,
    normalize_code,
    parse_number,
    resolve_columns,
)
from .format import SOLID_KINDS, Building, City, CitySource, Point, signed_area_m2
from .geojson import FeatureCollectionStats, GeoJSONError, iter_features
from .projection import LocalFrame
from .streets import DEFAULT_SNAP_M, DEFAULT_WIDTH_M, FT_M, Segment, build_graph, kind_for_name

PROJECTION = "enu-tangent-plane-wgs84"
VERTICAL_DATUM = "NAVD88"

# Building Footprints FEATURE_CODE (legacy FEAT_CODE), per the dataset's official metadata.
FEATURE_KINDS: dict[str, str] = {
    "2100": "building",
    "5100": "under_construction",
    "5110": "garage",
    "1000": "garage",  # parking structure
    "1001": "other",  # gas station canopy: drivable underneath
    "1002": "other",  # storage tank
    "1004": "other",  # auxiliary structure (sheds and the like)
    "1005": "other",  # temporary structure (construction trailer)
}
# Never imported: they do not stand on the ground, or do not have their real shape.
SKIPPED_FEATURES: dict[str, str] = {
    "2110": "skybridge",
    "1006": "cantilevered building",
    "1003": "placeholder triangle",
}
# Roof height used when a record has none, if no footprint in the import has a known one either.
FALLBACK_HEIGHT_M = 10.0
MIN_FOOTPRINT_AREA_M2 = 0.01

BBox = tuple[float, float, float, float]


@dataclass
class ImportReport:
    """What an import did: counts for the summary, and every skipped feature by reason."""

    footprints_read: int = 0
    buildings: int = 0
    buildings_by_kind: Counter = field(default_factory=Counter)
    multipart_features: int = 0
    holes: int = 0
    unknown_height: int = 0
    unknown_ground: int = 0
    default_height_m: float = FALLBACK_HEIGHT_M
    default_ground_m: float = 0.0
    footprints_skipped: Counter = field(default_factory=Counter)
    segments_read: int = 0
    edges: int = 0
    nodes: int = 0
    controls: Counter = field(default_factory=Counter)
    unknown_width: int = 0
    segments_skipped: Counter = field(default_factory=Counter)
    footprint_columns: dict[str, str | None] = field(default_factory=dict)
    centerline_columns: dict[str, str | None] = field(default_factory=dict)
    bbox_wgs84: BBox | None = None
    origin_wgs84: tuple[float, float] | None = None
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``sdctl city import --json``)."""
        return {
            "footprints_read": self.footprints_read, "buildings": self.buildings,
            "buildings_by_kind": dict(self.buildings_by_kind), "multipart_features": self.multipart_features,
            "holes": self.holes, "unknown_height": self.unknown_height, "unknown_ground": self.unknown_ground,
            "default_height_m": self.default_height_m, "default_ground_m": self.default_ground_m,
            "footprints_skipped": dict(self.footprints_skipped), "segments_read": self.segments_read,
            "edges": self.edges, "nodes": self.nodes, "controls": dict(self.controls),
            "unknown_width": self.unknown_width, "segments_skipped": dict(self.segments_skipped),
            "footprint_columns": self.footprint_columns, "centerline_columns": self.centerline_columns,
            "bbox_wgs84": list(self.bbox_wgs84) if self.bbox_wgs84 else None,
            "origin_wgs84": list(self.origin_wgs84) if self.origin_wgs84 else None,
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def lines(self) -> list[str]:
        """The human summary, one finding per line."""
        def counts(c: Counter) -> str:
            return ", ".join(f"{reason} {n}" for reason, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        kinds = counts(self.buildings_by_kind) or "none"
        out = [
            f"buildings: {self.buildings} from {self.footprints_read} footprint records ({kinds})",
            (f"unknown heights: {self.unknown_height} (set to {self.default_height_m:g} m, height_known=false); "
            f"unknown ground elevations: {self.unknown_ground} (set to {self.default_ground_m:g} m, ground_known=false)"),
            f"footprints skipped: {counts(self.footprints_skipped) or 'none'}",
        ]
        if self.multipart_features or self.holes:
            out.append(f"multipart footprints split: {self.multipart_features}; courtyard holes kept: {self.holes}")
        if self.centerline_columns:
            out += [
                (f"streets: {self.edges} edges, {self.nodes} nodes ({counts(self.controls) or 'no nodes'}) "
                f"from {self.segments_read} centerline segments; unknown widths: {self.unknown_width} "
                f"(set to {DEFAULT_WIDTH_M / FT_M:g} ft, width_known=false)"),
                f"segments skipped: {counts(self.segments_skipped) or 'none'}",
                "centerline columns: " + ", ".join(f"{r}={c}" for r, c in self.centerline_columns.items() if c),
            ]
        else:
            out.append("streets: none (no --centerlines given)")
        out.append("footprint columns: " + ", ".join(f"{r}={c}" for r, c in self.footprint_columns.items() if c))
        if self.bbox_wgs84 and self.origin_wgs84:
            out.append("bbox (w,s,e,n): " + ",".join(f"{v:.6f}" for v in self.bbox_wgs84)
                       + f"; origin: {self.origin_wgs84[0]:.6f},{self.origin_wgs84[1]:.6f}")
        return out


@dataclass
class _Footprint:
    properties: dict[str, Any]
    # polygons -> rings -> flat [lon0, lat0, lon1, lat1, ...]: arrays are not tracked by the garbage
    # collector and take a fifth of the memory of the parsed lists.
    polygons: list[list[array]]
    extent: BBox


def import_city(footprints: Path | str, centerlines: Path | str | None = None, *, bbox: BBox | None = None,
                origin: tuple[float, float] | None = None, name: str | None = None,
                columns: ColumnMapping | None = None, snap_m: float = DEFAULT_SNAP_M) -> tuple[City, ImportReport]:
    """Builds a city from a Building Footprints export and, optionally, a LION or CSCL centerline export.

    Raises CityImportError (MissingColumnError for an absent column) with a message naming the file.
    """
    started = time.perf_counter()
    footprints = Path(footprints)
    columns = columns or ColumnMapping.default()
    if bbox is not None:
        check_bbox(bbox)
    if snap_m <= 0:
        raise CityImportError(f"the snap tolerance must be positive, not {snap_m} m")
    if origin is not None and not (-180 <= origin[0] <= 180 and -90 < origin[1] < 90):
        raise CityImportError(f"origin {origin[0]},{origin[1]} is not a WGS84 longitude,latitude")
    report = ImportReport()
    files: list[dict[str, Any]] = []

    kept, present, stats = _read_footprints(footprints, bbox, report)
    footprint_cols = resolve_columns("footprints", columns.footprints, present, str(footprints))
    report.footprint_columns = footprint_cols
    files.append(_provenance("footprints", footprints, stats, footprint_cols))
    if bbox is None:
        if not kept:
            raise CityImportError(f"{footprints}: no footprints to import, so no bounding box to derive; pass --bbox")
        bbox = _extent(kept)
    origin = origin or ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    frame = LocalFrame(*origin)
    report.bbox_wgs84, report.origin_wgs84 = bbox, origin

    buildings = _buildings(kept, footprint_cols, frame, report)

    nodes, edges = [], []
    if centerlines is not None:
        centerlines = Path(centerlines)
        segments, seg_cols, seg_stats = _read_segments(centerlines, bbox, columns, frame, report)
        report.centerline_columns = seg_cols
        files.append(_provenance("centerlines", centerlines, seg_stats, seg_cols))
        nodes, edges, dropped = build_graph(segments, snap_m)
        report.segments_skipped.update(dropped)
        report.edges, report.nodes = len(edges), len(nodes)
        report.controls = Counter(n.control for n in nodes)
        report.unknown_width = sum(1 for e in edges if not e.width_known)

    city = City(
        name=(name or "").strip()[:128] or footprints.stem[:128] or "city",
        source=CitySource(kind="nyc-open-data", bbox_wgs84=bbox, origin_wgs84=origin, projection=PROJECTION,
                          vertical_datum=VERTICAL_DATUM, files=files),
        nodes=nodes, edges=edges, buildings=buildings)
    report.elapsed_s = time.perf_counter() - started
    return city, report


def check_bbox(bbox: BBox) -> None:
    """Raises CityImportError unless bbox is [west, south, east, north] in WGS84 degrees, west < east, south < north."""
    w, s, e, n = bbox
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise CityImportError(
            f"bbox {','.join(map(str, bbox))} is not west,south,east,north in degrees with west < east and south < north")


def _provenance(role: str, path: Path, stats: FeatureCollectionStats, cols: dict[str, str | None]) -> dict[str, Any]:
    return {"role": role, "path": path.name, "bytes": stats.bytes, "sha256": stats.sha256,
            "features": stats.features, "columns": {r: c for r, c in cols.items() if c}}


def _iter(path: Path, stats: FeatureCollectionStats) -> Iterable[dict[str, Any]]:
    try:
        yield from iter_features(path, stats)
    except GeoJSONError as exc:
        raise CityImportError(str(exc)) from None


def _extent_of(path: Path, index: int, rings: Any, min_positions: int) -> BBox | None:
    """(west, south, east, north) of a list of rings or lines; None if they are not lists of
    [lon, lat] positions; CityImportError if the numbers are not longitude/latitude."""
    if not isinstance(rings, list) or not rings:
        return None
    west = south = math.inf
    east = north = -math.inf
    try:
        for ring in rings:
            if not isinstance(ring, list) or len(ring) < min_positions:
                return None
            lons = [pos[0] for pos in ring]
            lats = [pos[1] for pos in ring]
            west, east = min(west, *lons), max(east, *lons)
            south, north = min(south, *lats), max(north, *lats)
    except (TypeError, IndexError, KeyError):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (west, south, east, north)):
        return None
    if not (-180 <= west and east <= 180 and -90 <= south and north <= 90):
        raise CityImportError(
            f"{path}: feature {index} has positions out to ({west}, {south}) .. ({east}, {north}), which are not "
            "WGS84 longitude/latitude (state-plane feet?); export the data in EPSG:4326")
    return west, south, east, north


def _union(a: BBox, b: BBox) -> BBox:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


# --- footprints ---------------------------------------------------------------------------------------

def _read_footprints(path: Path, bbox: BBox | None, report: ImportReport
                     ) -> tuple[list[_Footprint], set[str], FeatureCollectionStats]:
    stats = FeatureCollectionStats()
    present: set[str] = set()
    kept: list[_Footprint] = []
    for index, feature in enumerate(_iter(path, stats)):
        report.footprints_read += 1
        props = feature.get("properties") or {}
        present.update(props)
        geometry = feature.get("geometry")
        if not geometry:
            report.footprints_skipped["no geometry"] += 1
            continue
        gtype, coords = geometry.get("type"), geometry.get("coordinates")
        if gtype == "Polygon":
            polygons = [coords]
        elif gtype == "MultiPolygon":
            polygons = coords
        else:
            report.footprints_skipped[f"not a polygon ({gtype})"] += 1
            continue
        extent = None
        if isinstance(polygons, list) and polygons and all(isinstance(p, list) for p in polygons):
            extents = [_extent_of(path, index, p, 4) for p in polygons]
            if all(extents):
                extent = functools.reduce(_union, extents)
        if extent is None:
            report.footprints_skipped["invalid polygon coordinates"] += 1
            continue
        flat = [[_flatten(ring) for ring in polygon] for polygon in polygons]
        if bbox is not None and not _in_bbox(_centroid([p[0] for p in flat]), bbox):
            report.footprints_skipped["outside bbox"] += 1
            continue
        kept.append(_Footprint(props, flat, extent))
    return kept, present, stats


def _flatten(ring: list[list[float]]) -> array:
    return array("d", [c for pos in ring for c in (pos[0], pos[1])])


def _centroid(rings: list[array]) -> tuple[float, float]:
    """Area centroid of outer rings in degrees (an affine map keeps centroids, so degrees are fine here)."""
    sa = sx = sy = 0.0
    x0, y0 = rings[0][0], rings[0][1]
    for ring in rings:
        xs, ys = ring[0::2], ring[1::2]
        for i in range(len(xs) - 1):
            ax, ay, bx, by = xs[i] - x0, ys[i] - y0, xs[i + 1] - x0, ys[i + 1] - y0
            cross = ax * by - bx * ay
            sa += cross
            sx += (ax + bx) * cross
            sy += (ay + by) * cross
    if abs(sa) < 1e-18:
        xs = [x for ring in rings for x in ring[0::2]]
        ys = [y for ring in rings for y in ring[1::2]]
        return sum(xs) / len(xs), sum(ys) / len(ys)
    return x0 + sx / (3 * sa), y0 + sy / (3 * sa)


def _id_text(value: Any) -> str | None:
    """A source id as text, exactly as the source writes it (LION's zero-padded ids stay padded)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text[:128] or None


def _in_bbox(point: tuple[float, float], bbox: BBox) -> bool:
    return bbox[0] <= point[0] <= bbox[2] and bbox[1] <= point[1] <= bbox[3]


def _extent(kept: list[_Footprint]) -> BBox:
    return functools.reduce(_union, (f.extent for f in kept))


def _clean_ring(ring: list[tuple[float, float]], counter_clockwise: bool) -> list[Point] | None:
    """Millimetre-rounded, unclosed, without repeated points, turned the right way; None if degenerate."""
    out: list[Point] = []
    for x, y in ring:
        p = (round(x, 3), round(y, 3))
        if not out or p != out[-1]:
            out.append(p)
    while len(out) > 1 and out[-1] == out[0]:
        out.pop()
    if len(out) < 3:
        return None
    area = signed_area_m2(out)
    if abs(area) < MIN_FOOTPRINT_AREA_M2:
        return None
    if (area > 0) != counter_clockwise:
        out.reverse()
    return out


def _buildings(kept: list[_Footprint], cols: dict[str, str | None], frame: LocalFrame,
               report: ImportReport) -> list[Building]:
    def prop(f: _Footprint, role: str) -> Any:
        column = cols.get(role)
        return f.properties.get(column) if column else None

    buildings: list[Building] = []
    for f in kept:
        code = normalize_code(prop(f, "feature_code")) or "2100"  # no code column: every record is a building
        if code in SKIPPED_FEATURES:
            report.footprints_skipped[f"{SKIPPED_FEATURES[code]} (feature code {code})"] += 1
            continue
        kind = FEATURE_KINDS.get(code, "other")
        height_ft = parse_number(prop(f, "height_roof_ft"))
        height_known = height_ft is not None and height_ft > 0  # the metadata: zero or null means unknown
        ground_ft = parse_number(prop(f, "ground_elevation_ft"))
        bin_value = prop(f, "bin")
        source_id = _id_text(bin_value)
        parts = 0
        for polygon in f.polygons:
            outer = _clean_ring(frame.flat_to_local(polygon[0]), counter_clockwise=True)
            if outer is None:
                continue
            holes = [h for h in (_clean_ring(frame.flat_to_local(r), counter_clockwise=False) for r in polygon[1:]) if h]
            parts += 1
            report.holes += len(holes)
            buildings.append(Building(
                id=f"b{len(buildings) + 1}", footprint=outer,
                height_m=height_ft * FT_M if height_known else 0.0,
                ground_m=ground_ft * FT_M if ground_ft is not None else 0.0, kind=kind, source_id=source_id,
                height_known=height_known, ground_known=ground_ft is not None, holes=holes))
        if parts == 0:
            report.footprints_skipped["degenerate footprint"] += 1
        elif parts > 1:
            report.multipart_features += 1

    known_heights = [b.height_m for b in buildings if b.height_known and b.kind in SOLID_KINDS]
    report.default_height_m = round(statistics.median(known_heights), 2) if known_heights else FALLBACK_HEIGHT_M
    known_ground = [b.ground_m for b in buildings if b.ground_known]
    report.default_ground_m = round(statistics.median(known_ground), 2) if known_ground else 0.0
    for b in buildings:
        if not b.height_known:
            b.height_m = report.default_height_m
            report.unknown_height += 1
        if not b.ground_known:
            b.ground_m = report.default_ground_m
            report.unknown_ground += 1
        report.buildings_by_kind[b.kind] += 1
    report.buildings = len(buildings)
    return buildings


# --- centerlines --------------------------------------------------------------------------------------

def _read_segments(path: Path, bbox: BBox, columns: ColumnMapping, frame: LocalFrame, report: ImportReport
                   ) -> tuple[list[Segment], dict[str, str | None], FeatureCollectionStats]:
    stats = FeatureCollectionStats()
    present: set[str] = set()
    kept: list[tuple[dict[str, Any], list[list[list[float]]]]] = []
    for index, feature in enumerate(_iter(path, stats)):
        report.segments_read += 1
        props = feature.get("properties") or {}
        present.update(props)
        geometry = feature.get("geometry")
        if not geometry:
            report.segments_skipped["no geometry"] += 1
            continue
        gtype, coords = geometry.get("type"), geometry.get("coordinates")
        if gtype == "LineString":
            lines = [coords]
        elif gtype == "MultiLineString":
            lines = coords
        else:
            report.segments_skipped[f"not a line ({gtype})"] += 1
            continue
        if _extent_of(path, index, lines, 2) is None:
            report.segments_skipped["invalid line coordinates"] += 1
            continue
        if not any(_line_meets_bbox(line, bbox) for line in lines):
            report.segments_skipped["outside bbox"] += 1
            continue
        kept.append((props, lines))

    cols = resolve_columns("centerlines", columns.centerlines, present, str(path))
    codes = columns.codes

    def prop(props: dict[str, Any], role: str) -> Any:
        column = cols.get(role)
        return props.get(column) if column else None

    segments: list[Segment] = []
    for props, lines in kept:
        status = normalize_code(prop(props, "status"))
        if status and status in codes["drop_status"]:
            report.segments_skipped[f"status {status} (not a built street)"] += 1
            continue
        layer = normalize_code(prop(props, "layer"))
        if layer and layer in codes["drop_layer"]:
            report.segments_skipped[f"layer {layer} (generic centerline of a divided road)"] += 1
            continue
        direction = normalize_code(prop(props, "direction"))
        if direction in codes["direction_not_vehicular"]:
            report.segments_skipped[f"not for vehicles (traffic direction {direction})"] += 1
            continue
        against = direction in codes["direction_against"]
        if not (against or direction in codes["direction_with"] or direction in codes["direction_two_way"]):
            shown = repr(direction) if direction else "empty"
            report.segments_skipped[f"unknown traffic direction {shown}"] += 1
            continue
        rw_type = normalize_code(prop(props, "roadway_type"))
        if rw_type in codes["drop_roadway_types"]:
            label = ROADWAY_TYPE_NAMES.get(rw_type, "not driven")
            report.segments_skipped[f"roadway type {rw_type} ({label})"] += 1
            continue
        oneway = against or direction in codes["direction_with"]
        name = str(prop(props, "name") or "").strip()[:256]
        kind = kind_for_name(name) if rw_type in ("1", "11", "") else "other"
        width_ft = parse_number(prop(props, "width_ft"))
        lanes = parse_number(prop(props, "travel_lanes"))
        seg_id = prop(props, "id")
        levels = [normalize_code(prop(props, "from_level")) or None, normalize_code(prop(props, "to_level")) or None]
        parts = _join_parts(lines)
        for k, line in enumerate(parts):
            points = frame.ring_to_local(line)
            # The level codes belong to the whole feature's ends; joints between parts have none.
            first, last = (levels[0] if k == 0 else None), (levels[1] if k == len(parts) - 1 else None)
            if against:  # one-way against the digitizing direction: turn it to run with the traffic
                points.reverse()
                first, last = last, first
            segments.append(Segment(
                points=points, width_m=width_ft * FT_M if width_ft is not None and width_ft > 0 else None,
                oneway=oneway, name=name, kind=kind,
                travel_lanes=int(lanes) if lanes is not None and lanes >= 1 else None,
                source_id=_id_text(seg_id),
                from_level=first, to_level=last))
    return segments, cols, stats


def _join_parts(lines: list[list[list[float]]]) -> list[list[list[float]]]:
    """The parts of a MultiLineString, consecutive parts that meet end to start joined into one line."""
    out = [list(lines[0])]
    for line in lines[1:]:
        if line[0][:2] == out[-1][-1][:2]:
            out[-1].extend(line[1:])
        else:
            out.append(list(line))
    return out


def _line_meets_bbox(line: list[list[float]], bbox: BBox) -> bool:
    """Whether any part of the polyline lies in the box (a vertex inside, or a piece crossing it)."""
    w, s, e, n = bbox
    for (x0, y0, *_), (x1, y1, *_) in itertools.pairwise(line):
        # Liang-Barsky: clip the piece's parameter range [0, 1] against the four sides.
        t0, t1 = 0.0, 1.0
        dx, dy = x1 - x0, y1 - y0
        for p, q in ((-dx, x0 - w), (dx, e - x0), (-dy, y0 - s), (dy, n - y0)):
            if p == 0:
                if q < 0:
                    break
            else:
                t = q / p
                if p < 0:
                    t0 = max(t0, t)
                else:
                    t1 = min(t1, t)
                if t0 > t1:
                    break
        else:
            return True
    return len(line) == 1 and _in_bbox((line[0][0], line[0][1]), bbox)


def area_m2(building: Building) -> float:
    """Footprint area minus holes, in square metres."""
    return signed_area_m2(building.footprint) + sum(signed_area_m2(h) for h in building.holes)
