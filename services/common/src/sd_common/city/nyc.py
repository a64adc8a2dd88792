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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .columns import (
    ROADWAY_TYPE_NAMES,
    CityImportError,
    ColumnMapping,
    MissingColumnError,
    normalize_code,
    parse_number,
    resolve_columns,
)
from .format import (
    SOLID_KINDS,
    Building,
    City,
    CitySource,
    Point,
    ring_self_intersection,
    signed_area_m2,
)
from .geojson import FeatureCollectionStats, GeoJSONError, iter_features
from . import osm
from .projection import LocalFrame
from .streets import (
    DEFAULT_SNAP_M,
    DEFAULT_WIDTH_M,
    FT_M,
    MAX_LANES_PER_DIRECTION,
    Segment,
    build_graph,
    keep_largest_component,
    kind_for_name,
)

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
# The format's ranges (city-v1.schema.json): the importer skips a feature rather than write a value
# the validator would refuse.
MAX_HEIGHT_M = 1000.0
GROUND_RANGE_M = (-1000.0, 9000.0)
MAX_WIDTH_M = 200.0
MAX_COORDINATE_M = 1_000_000.0
# Without --bbox, a footprint this far from the median position of the others is not part of the
# city (a stray record from elsewhere would otherwise stretch the box and move the origin).
OUTLIER_DISTANCE_M = 100_000.0
# Where the five boroughs lie: used only to recognise a file written latitude first.
NYC_BBOX = (-74.30, 40.45, -73.65, 40.95)
FOOTPRINTS_ATTRIBUTION = "Buildings: NYC Building Footprints, NYC Open Data (NYC OTI)"
OSM_ATTRIBUTION = "Streets: © OpenStreetMap contributors, ODbL 1.0 (openstreetmap.org/copyright)"
# How many skipped features the summary names one by one.
NAMED_SKIPS_SHOWN = 20

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
    # "file feature N (id): why" for every feature skipped for bad data (not for the box).
    skipped_named: list[str] = field(default_factory=list)
    # The same for features kept after a repair (self-intersecting outlines).
    repaired_named: list[str] = field(default_factory=list)
    footprint_columns: dict[str, str | None] = field(default_factory=dict)
    centerline_columns: dict[str, str | None] = field(default_factory=dict)
    streets_source: str = "centerlines"  # or "osm": widths come from the highway class
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
            "skipped_named": self.skipped_named, "repaired_named": self.repaired_named,
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
                f"from {self.segments_read} {'OpenStreetMap ways' if self.streets_source == 'osm' else 'centerline segments'}; "
                + (f"widths from the highway class: {self.unknown_width} (width_known=false)"
                   if self.streets_source == "osm" else
                   f"unknown widths: {self.unknown_width} (set to {DEFAULT_WIDTH_M / FT_M:g} ft, width_known=false)")),
                f"segments skipped: {counts(self.segments_skipped) or 'none'}",
                "centerline columns: " + ", ".join(f"{r}={c}" for r, c in self.centerline_columns.items() if c),
            ]
        else:
            out.append("streets: none (no --centerlines given)")
        if self.repaired_named:
            out.append(f"repaired ({len(self.repaired_named)}):")
            out += [f"  {line}" for line in self.repaired_named[:NAMED_SKIPS_SHOWN]]
        if self.skipped_named:
            out.append(f"skipped for bad data ({len(self.skipped_named)}):")
            out += [f"  {line}" for line in self.skipped_named[:NAMED_SKIPS_SHOWN]]
            if len(self.skipped_named) > NAMED_SKIPS_SHOWN:
                out.append(f"  ... and {len(self.skipped_named) - NAMED_SKIPS_SHOWN} more (--json lists all)")
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
    index: int
    centroid: tuple[float, float]


def import_city(footprints: Path | str, centerlines: Path | str | None = None, *, bbox: BBox | None = None,
                origin: tuple[float, float] | None = None, name: str | None = None,
                columns: ColumnMapping | None = None, snap_m: float = DEFAULT_SNAP_M,
                osm_streets: Path | str | None = None) -> tuple[City, ImportReport]:
    """Builds a city from a Building Footprints export and, optionally, streets: a LION or CSCL
    centerline export, or an OpenStreetMap road export (``osm_streets``; not both).

    Raises CityImportError (MissingColumnError for an absent column) with a message naming the file.
    """
    if centerlines is not None and osm_streets is not None:
        raise CityImportError("give either centerlines (LION/CSCL) or OpenStreetMap streets, not both")
    started = time.perf_counter()
    footprints = Path(footprints)
    columns = columns or ColumnMapping.default()
    if bbox is not None:
        check_bbox(bbox)
    if not (snap_m > 0 and math.isfinite(snap_m)):
        raise CityImportError(f"the snap tolerance must be positive, not {snap_m} m")
    if origin is not None and not (-180 <= origin[0] <= 180 and -90 < origin[1] < 90):
        raise CityImportError(f"origin {origin[0]},{origin[1]} is not a WGS84 longitude,latitude")
    report = ImportReport()
    files: list[dict[str, Any]] = []

    kept, present, stats = _read_footprints(footprints, bbox, report)
    if stats.features == 0:
        raise CityImportError(f"{footprints}: the FeatureCollection has no features: there is nothing to import")
    footprint_cols = resolve_columns("footprints", columns.footprints, present, str(footprints))
    report.footprint_columns = footprint_cols
    files.append(_provenance("footprints", footprints, stats, footprint_cols))
    if bbox is None:
        kept = _drop_outliers(footprints, kept, footprint_cols, report)
        if not kept:
            raise CityImportError(f"{footprints}: no footprints to import, so no bounding box to derive; pass --bbox")
        bbox = _extent(kept)
    origin = origin or ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
    frame = LocalFrame(*origin)
    report.bbox_wgs84, report.origin_wgs84 = bbox, origin

    buildings = _buildings(kept, footprint_cols, frame, report, footprints)

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
    attribution = [FOOTPRINTS_ATTRIBUTION]
    if osm_streets is not None:
        osm_streets = Path(osm_streets)
        segments, seg_stats = _read_osm_streets(osm_streets, bbox, frame, report)
        report.streets_source = "osm"
        report.centerline_columns = {"name": "name", "highway": "highway"}
        files.append(_provenance("streets-osm", osm_streets, seg_stats, report.centerline_columns))
        nodes, edges, dropped = build_graph(segments, snap_m)
        report.segments_skipped.update(dropped)
        nodes, edges, unconnected = keep_largest_component(nodes, edges)
        if unconnected:
            report.segments_skipped["not connected to the main street network"] += unconnected
        report.edges, report.nodes = len(edges), len(nodes)
        report.controls = Counter(n.control for n in nodes)
        report.unknown_width = sum(1 for e in edges if not e.width_known)
        attribution.append(OSM_ATTRIBUTION)

    city = City(
        name=(name or "").strip()[:128] or footprints.stem[:128] or "city",
        source=CitySource(kind="nyc-open-data", bbox_wgs84=bbox, origin_wgs84=origin, projection=PROJECTION,
                          vertical_datum=VERTICAL_DATUM, files=files, attribution="; ".join(attribution)),
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


class _BadFeature(Exception):
    """A feature the importer skips; the message says why."""


SWAP_FIX = ("GeoJSON positions are [longitude, latitude] (RFC 7946 section 3.1.1): swap the two numbers of "
            "every position and import again")


def _extent_of(path: Path, index: int, rings: Any, min_positions: int) -> BBox | None:
    """(west, south, east, north) of a list of rings or lines; None if they are not lists of
    [lon, lat] positions; _BadFeature for a NaN or infinite ordinate; CityImportError if the numbers
    are not longitude/latitude (naming the fix when they are latitude/longitude)."""
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
            # A NaN or infinity anywhere makes the sum non-finite (min and max would hide a NaN).
            if not math.isfinite(sum(lons) + sum(lats)):
                bad = next(p for p in ring if not (math.isfinite(p[0]) and math.isfinite(p[1])))
                raise _BadFeature(f"coordinate [{bad[0]}, {bad[1]}] is not a finite number (NaN or infinity)")
            west, east = min(west, *lons), max(east, *lons)
            south, north = min(south, *lats), max(north, *lats)
    except (TypeError, IndexError, KeyError, StopIteration):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (west, south, east, north)):
        return None
    if not (-180 <= west and east <= 180 and -90 <= south and north <= 90):
        if -90 <= west and east <= 90 and -180 <= south and north <= 180:
            raise CityImportError(
                f"{path}: feature {index} has latitudes out to {south} .. {north}, beyond ±90, while its "
                f"longitudes stay within ±90: the positions are written latitude first. {SWAP_FIX}")
        raise CityImportError(
            f"{path}: feature {index} has positions out to ({west}, {south}) .. ({east}, {north}), which are not "
            "WGS84 longitude/latitude (state-plane feet?); export the data in EPSG:4326")
    return west, south, east, north


def _in_nyc(lon: float, lat: float) -> bool:
    return NYC_BBOX[0] <= lon <= NYC_BBOX[2] and NYC_BBOX[1] <= lat <= NYC_BBOX[3]


def check_not_swapped(path: Path, lons: array, lats: array) -> None:
    """CityImportError if the file's median position lies in New York only when read latitude first."""
    if not lons:
        return
    lon, lat = statistics.median(lons), statistics.median(lats)
    if not _in_nyc(lon, lat) and _in_nyc(lat, lon):
        raise CityImportError(
            f"{path}: the features lie around ({lon:.4f}, {lat:.4f}) read as longitude, latitude, but around "
            f"({lat:.4f}, {lon:.4f}) in New York when read the other way: the positions are written latitude "
            f"first. {SWAP_FIX}")


def great_circle_m(lon0: float, lat0: float, lon1: float, lat1: float) -> float:
    """Distance along the Earth's surface (a sphere of the mean radius; haversine), in metres."""
    p0, p1 = math.radians(lat0), math.radians(lat1)
    h = math.sin((p1 - p0) / 2) ** 2 + math.cos(p0) * math.cos(p1) * math.sin(math.radians(lon1 - lon0) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(h)))


def _drop_outliers(path: Path, kept: list[_Footprint], cols: dict[str, str | None],
                   report: ImportReport) -> list[_Footprint]:
    """Without a box: footprints more than OUTLIER_DISTANCE_M from the median position, skipped by name."""
    if len(kept) < 3:
        return kept
    lon0 = statistics.median(f.centroid[0] for f in kept)
    lat0 = statistics.median(f.centroid[1] for f in kept)
    out = []
    for f in kept:
        distance_m = great_circle_m(lon0, lat0, *f.centroid)
        if distance_m > OUTLIER_DISTANCE_M:
            _skip(report, "footprints", path, f.index, _id_text(f.properties.get(cols["bin"])) if cols.get("bin") else None,
                  f"{distance_m / 1000:.0f} km from the median position of the other footprints (give --bbox to "
                  "import a wider area)", "far from the rest of the city")
        else:
            out.append(f)
    return out


def _skip(report: ImportReport, role: str, path: Path, index: int, ident: str | None, why: str,
          reason: str | None = None) -> None:
    """Counts a feature skipped for bad data and names it in the report."""
    counter = report.footprints_skipped if role == "footprints" else report.segments_skipped
    counter[reason or why] += 1
    label = f" ({ident})" if ident else ""
    report.skipped_named.append(f"{path.name} feature {index}{label}: {why}")


def _union(a: BBox, b: BBox) -> BBox:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


# --- footprints ---------------------------------------------------------------------------------------

def _read_footprints(path: Path, bbox: BBox | None, report: ImportReport
                     ) -> tuple[list[_Footprint], set[str], FeatureCollectionStats]:
    stats = FeatureCollectionStats()
    present: set[str] = set()
    kept: list[_Footprint] = []
    lons, lats = array("d"), array("d")  # every footprint's centroid, to recognise swapped axes
    for index, feature in enumerate(_iter(path, stats)):
        report.footprints_read += 1
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
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
        try:
            if isinstance(polygons, list) and polygons and all(isinstance(p, list) for p in polygons):
                extents = [_extent_of(path, index, p, 4) for p in polygons]
                if all(extents):
                    extent = functools.reduce(_union, extents)
        except _BadFeature as exc:
            _skip(report, "footprints", path, index, None, str(exc), "non-finite coordinates")
            continue
        if extent is None:
            report.footprints_skipped["invalid polygon coordinates"] += 1
            continue
        flat = [[_flatten(ring) for ring in polygon] for polygon in polygons]
        cx, cy = _centroid([p[0] for p in flat])
        # A self-intersecting ring's area centroid can fall anywhere: keep it within the feature.
        centroid = (min(max(cx, extent[0]), extent[2]), min(max(cy, extent[1]), extent[3]))
        lons.append(centroid[0])
        lats.append(centroid[1])
        if bbox is not None and not _in_bbox(centroid, bbox):
            report.footprints_skipped["outside bbox"] += 1
            continue
        kept.append(_Footprint(props, flat, extent, index, centroid))
    check_not_swapped(path, lons, lats)
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


def _rounded(ring: list[tuple[float, float]]) -> list[Point]:
    """Millimetre-rounded, unclosed, without repeated points."""
    out: list[Point] = []
    for x, y in ring:
        p = (round(x, 3), round(y, 3))
        if not out or p != out[-1]:
            out.append(p)
    while len(out) > 1 and out[-1] == out[0]:
        out.pop()
    return out


def _crosses_itself(rounded: list[Point]) -> bool:
    return len(rounded) >= 3 and ring_self_intersection(rounded) is not None


def _clean_ring(ring: list[tuple[float, float]], counter_clockwise: bool, rounded: bool = False) -> list[Point] | None:
    """Millimetre-rounded (unless already ``rounded``), unclosed, without repeated points, turned the
    right way; None if degenerate."""
    out = list(ring) if rounded else _rounded(ring)
    if len(out) < 3:
        return None
    area = signed_area_m2(out)
    if abs(area) < MIN_FOOTPRINT_AREA_M2:
        return None
    if (area > 0) != counter_clockwise:
        out.reverse()
    return out


def _far(points: Iterable[Point]) -> bool:
    return any(abs(x) > MAX_COORDINATE_M or abs(y) > MAX_COORDINATE_M for x, y in points)


def _repair(outer: list[Point], holes: list[list[Point]]) -> list[tuple[list[Point], list[list[Point]]]] | None:
    """The simple polygons covering a self-intersecting one (shapely's make_valid), or None without shapely."""
    try:
        from shapely import make_valid
        from shapely.geometry import Polygon
    except ImportError:
        return None
    if len(outer) < 3:
        return []
    fixed = make_valid(Polygon(outer, holes))
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type == "Polygon"]
    for g in getattr(fixed, "geoms", []):
        if g.geom_type == "MultiPolygon":
            parts += list(g.geoms)
    out = []
    for poly in parts:
        ring = _clean_ring(list(poly.exterior.coords), counter_clockwise=True)
        if ring is None or ring_self_intersection(ring) is not None:
            continue
        inner = [h for h in (_clean_ring(list(r.coords), counter_clockwise=False) for r in poly.interiors)
                 if h is not None and ring_self_intersection(h) is None]
        out.append((ring, inner))
    return out


def _buildings(kept: list[_Footprint], cols: dict[str, str | None], frame: LocalFrame,
               report: ImportReport, path: Path) -> list[Building]:
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
        bin_value = prop(f, "bin")
        source_id = _id_text(bin_value)
        height_ft = parse_number(prop(f, "height_roof_ft"))
        # The metadata: zero or null means unknown (as does a height that rounds to 0 mm).
        height_known = height_ft is not None and round(height_ft * FT_M, 3) > 0
        ground_ft = parse_number(prop(f, "ground_elevation_ft"))
        if height_known and round(height_ft * FT_M, 3) > MAX_HEIGHT_M:
            _skip(report, "footprints", path, f.index, source_id,
                  f"roof height {height_ft:g} ft ({height_ft * FT_M:.0f} m) is above the format's {MAX_HEIGHT_M:g} m maximum",
                  "roof height above the format's maximum")
            continue
        if ground_ft is not None and not GROUND_RANGE_M[0] <= round(ground_ft * FT_M, 3) <= GROUND_RANGE_M[1]:
            _skip(report, "footprints", path, f.index, source_id,
                  f"ground elevation {ground_ft:g} ft ({ground_ft * FT_M:.0f} m) is outside the format's range "
                  f"{GROUND_RANGE_M[0]:g} .. {GROUND_RANGE_M[1]:g} m", "ground elevation out of range")
            continue
        parts: list[tuple[list[Point], list[list[Point]]]] = []
        why = None
        for polygon in f.polygons:
            local = [frame.flat_to_local(ring) for ring in polygon]
            if _far(p for ring in local for p in ring):
                why = (f"lies more than {MAX_COORDINATE_M / 1000:g} km from the city's origin", "too far from the origin")
                break
            rings = [_rounded(r) for r in local]
            if not any(_crosses_itself(r) for r in rings):
                outer = _clean_ring(rings[0], counter_clockwise=True, rounded=True)
                if outer is not None:
                    holes = (_clean_ring(r, counter_clockwise=False, rounded=True) for r in rings[1:])
                    parts.append((outer, [h for h in holes if h]))
                continue
            repaired = _repair(rings[0], [h for h in rings[1:] if len(h) >= 3])
            if repaired is None:
                why = ("its outline crosses itself and shapely (to repair it) is not installed",
                       "self-intersecting footprint")
                break
            report.repaired_named.append(f"{path.name} feature {f.index}{f' ({source_id})' if source_id else ''}: "
                                         f"self-intersecting outline repaired into {len(repaired)} part(s)")
            parts += repaired
        if why is not None:
            _skip(report, "footprints", path, f.index, source_id, why[0], why[1])
            continue
        for outer, holes in parts:
            report.holes += len(holes)
            buildings.append(Building(
                id=f"b{len(buildings) + 1}", footprint=outer,
                height_m=height_ft * FT_M if height_known else 0.0,
                ground_m=ground_ft * FT_M if ground_ft is not None else 0.0, kind=kind, source_id=source_id,
                height_known=height_known, ground_known=ground_ft is not None, holes=holes))
        if not parts:
            report.footprints_skipped["degenerate footprint"] += 1
        elif len(parts) > 1:
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

def _street_lines(path: Path, stats: FeatureCollectionStats, report: ImportReport, present: set[str],
                  lons: array, lats: array, *, lower_keys: bool = False
                  ) -> Iterator[tuple[int, dict[str, Any], list[list[list[float]]]]]:
    """(index, properties, line parts) of each usable line feature of a street file; a feature without
    line geometry or with bad coordinates is a counted or named skip. Every property name read goes
    into ``present`` and the centre of every feature's extent into ``lons``/``lats``."""
    for index, feature in enumerate(_iter(path, stats)):
        report.segments_read += 1
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        if lower_keys:
            props = {str(k).lower(): v for k, v in props.items()}
        present.update(props)
        geometry = feature.get("geometry")
        if not geometry or not isinstance(geometry, dict):
            report.segments_skipped["no geometry"] += 1
            continue
        gtype, coords = geometry.get("type"), geometry.get("coordinates")
        if gtype == "LineString":
            parts = [coords]
        elif gtype == "MultiLineString":
            parts = coords
        else:
            report.segments_skipped[f"not a line ({gtype})"] += 1
            continue
        try:
            extent = _extent_of(path, index, parts, 2)
        except _BadFeature as exc:
            _skip(report, "centerlines", path, index, None, str(exc), "non-finite coordinates")
            continue
        if extent is None:
            report.segments_skipped["invalid line coordinates"] += 1
            continue
        lons.append((extent[0] + extent[2]) / 2)
        lats.append((extent[1] + extent[3]) / 2)
        yield index, props, parts


def _read_segments(path: Path, bbox: BBox, columns: ColumnMapping, frame: LocalFrame, report: ImportReport
                   ) -> tuple[list[Segment], dict[str, str | None], FeatureCollectionStats]:
    stats = FeatureCollectionStats()
    present: set[str] = set()
    kept: list[tuple[dict[str, Any], list[list[list[float]]], int]] = []
    lons, lats = array("d"), array("d")
    for index, props, lines in _street_lines(path, stats, report, present, lons, lats):
        if not any(_line_meets_bbox(line, bbox) for line in lines):
            report.segments_skipped["outside bbox"] += 1
            continue
        kept.append((props, lines, index))
    check_not_swapped(path, lons, lats)
    if stats.features == 0:
        raise CityImportError(f"{path}: the FeatureCollection has no features: there are no streets to import")

    cols = resolve_columns("centerlines", columns.centerlines, present, str(path))
    codes = columns.codes

    def prop(props: dict[str, Any], role: str) -> Any:
        column = cols.get(role)
        return props.get(column) if column else None

    segments: list[Segment] = []
    for props, lines, index in kept:
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
        if width_ft is not None and round(width_ft * FT_M, 3) <= 0:
            width_ft = None  # zero or negative: unknown, as the metadata has it
        lanes = parse_number(prop(props, "travel_lanes"))
        seg_id = prop(props, "id")
        ident = _id_text(seg_id)
        if width_ft is not None and round(width_ft * FT_M, 3) > MAX_WIDTH_M:
            _skip(report, "centerlines", path, index, ident,
                  f"street width {width_ft:g} ft is above the format's {MAX_WIDTH_M:g} m maximum",
                  "width above the format's maximum")
            continue
        if lanes is not None and lanes >= 1 and \
                (int(lanes) if oneway else max(1, int(lanes) // 2)) > MAX_LANES_PER_DIRECTION:
            _skip(report, "centerlines", path, index, ident,
                  f"{lanes:g} travel lanes is more than the format's {MAX_LANES_PER_DIRECTION} per direction",
                  "more lanes than the format allows")
            continue
        levels = [normalize_code(prop(props, "from_level")) or None, normalize_code(prop(props, "to_level")) or None]
        parts = _join_parts(lines)
        projected = [frame.ring_to_local(line) for line in parts]
        if _far(p for line in projected for p in line):
            _skip(report, "centerlines", path, index, ident,
                  f"lies more than {MAX_COORDINATE_M / 1000:g} km from the city's origin", "too far from the origin")
            continue
        for k, points in enumerate(projected):
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


def _read_osm_streets(path: Path, bbox: BBox, frame: LocalFrame, report: ImportReport
                      ) -> tuple[list[Segment], FeatureCollectionStats]:
    """Segments of an OpenStreetMap road export: ways with a driven ``highway`` class, cut at shared
    vertices (osm.split_at_shared_vertices), the pieces that meet the box, projected."""
    stats = FeatureCollectionStats()
    present: set[str] = set()
    lines: list[list[tuple[float, float]]] = []
    tags: list[tuple[int, str, str]] = []  # per line: feature index, name, highway class
    lons, lats = array("d"), array("d")
    for index, lower, parts in _street_lines(path, stats, report, present, lons, lats, lower_keys=True):
        highway = osm.highway_class(lower.get("highway"))
        if highway not in osm.HIGHWAY_WIDTH_FT:
            report.segments_skipped[f"highway={highway or 'none'} (not driven)"] += 1
            continue
        name = str(lower.get("name") or "").strip()[:256]
        for part in parts:
            lines.append([(float(p[0]), float(p[1])) for p in part])
            tags.append((index, name, highway))
    check_not_swapped(path, lons, lats)
    if stats.features == 0:
        raise CityImportError(f"{path}: the FeatureCollection has no features: there are no streets to import")
    if "highway" not in present:
        raise MissingColumnError(
            f"{path}: missing column 'highway' (the OpenStreetMap road class); columns in this file: "
            f"{', '.join(sorted(present)) or 'none'}. Export the ways with their highway tag.",
            "highway", ("highway",))
    segments: list[Segment] = []
    far: set[int] = set()
    for line_index, piece in osm.split_at_shared_vertices(lines):
        index, name, highway = tags[line_index]
        if not _line_meets_bbox([list(p) for p in piece], bbox):
            report.segments_skipped["outside bbox"] += 1
            continue
        points = [frame.to_local(lon, lat) for lon, lat in piece]
        if _far(points):
            if index not in far:
                far.add(index)
                _skip(report, "centerlines", path, index, name or None,
                      f"lies more than {MAX_COORDINATE_M / 1000:g} km from the city's origin", "too far from the origin")
            continue
        segments.append(osm.segment(points, name, highway))
    return segments, stats


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
