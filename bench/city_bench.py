"""City import time: the shared NYC sample, and the sample tiled N times to show how it scales.

Each case runs `import_city` + `write_city` in this process (median of --repeat runs), beside a
baseline that only parses the same input with `json.load` and serialises the same output with
`json.dumps` (the floor any Python importer pays). One untimed run per case measures peak Python
memory with tracemalloc. The sample case is also timed through the real CLI (`sdctl city import`,
a new process each time, interpreter start included). Usage:
`python bench/city_bench.py [--tiles 50] [--repeat 5] [--json]`.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sd_common.city import import_city, write_city

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "nyc" / "building_footprints_east_village_north.geojson"  # ../shared
FIXTURES = REPO / "services" / "common" / "tests" / "fixtures" / "nyc"
STREET_SPACING_M = 80.0  # a synthetic street grid under the tiled blocks, like Manhattan's
AVENUE_SPACING_M = 230.0


def write_geojson(doc: dict[str, Any], path: Path) -> None:
    """One feature per line, as GDAL writes GeoJSON."""
    head = json.dumps({k: v for k, v in doc.items() if k != "features"})[:-1]
    with path.open("w", encoding="utf-8") as out:
        out.write(head + ', "features": [\n')
        out.write(",\n".join(json.dumps(f) for f in doc["features"]))
        out.write("\n]}\n")


BBox = tuple[float, float, float, float]


def tiled(source: dict[str, Any], tiles: int) -> tuple[dict[str, Any], BBox, BBox]:
    """The footprints repeated on a grid of tiles (about twice as wide as high), new BINs per tile;
    with the box of all tiles and the box of the first."""
    lons = [p[0] for f in source["features"] for p in _positions(f["geometry"])]
    lats = [p[1] for f in source["features"] for p in _positions(f["geometry"])]
    w, s, e, n = min(lons), min(lats), max(lons), max(lats)
    dx, dy = (e - w) * 1.05, (n - s) * 1.3
    cols = max(1, round(math.sqrt(tiles * 2)))
    features = []
    for t in range(tiles):
        ox, oy = (t % cols) * dx, (t // cols) * dy
        for f in source["features"]:
            g = copy.deepcopy(f)
            g["properties"]["bin"] = f"{t:03d}{g['properties'].get('bin', '')}"
            g["geometry"]["coordinates"] = _shift(g["geometry"]["coordinates"], ox, oy)
            features.append(g)
    rows = math.ceil(tiles / cols)
    return {**source, "features": features}, (w, s, w + cols * dx, s + rows * dy), (w, s, w + dx, s + dy)


def _positions(geometry: dict[str, Any]) -> list[list[float]]:
    coords = geometry["coordinates"]
    polygons = [coords] if geometry["type"] == "Polygon" else coords
    return [p for poly in polygons for ring in poly for p in ring]


def _shift(value: Any, ox: float, oy: float) -> Any:
    if isinstance(value[0], (int, float)):
        return [value[0] + ox, value[1] + oy, *value[2:]]
    return [_shift(v, ox, oy) for v in value]


def street_grid(bbox: BBox) -> dict[str, Any]:
    """A CSCL-like grid over the box: avenues two-way 60 ft, streets one-way 30 ft alternating."""
    w, s, e, n = bbox
    m_lat = 111_000.0
    m_lon = m_lat * math.cos(math.radians((s + n) / 2))
    xs = [w + i * AVENUE_SPACING_M / m_lon for i in range(int((e - w) * m_lon / AVENUE_SPACING_M) + 2)]
    ys = [s + j * STREET_SPACING_M / m_lat for j in range(int((n - s) * m_lat / STREET_SPACING_M) + 2)]
    features = []

    def add(a: list[float], b: list[float], name: str, width: int, trafdir: str) -> None:
        features.append({"type": "Feature", "geometry": {"type": "MultiLineString", "coordinates": [[a, b]]},
                         "properties": {"physicalid": str(len(features)), "full_stree": name,
                                        "st_width": str(width), "trafdir": trafdir, "rw_type": "1", "status": "2"}})

    for i, x in enumerate(xs):
        for y0, y1 in itertools.pairwise(ys):
            add([x, y0], [x, y1], f"AV {i}", 60, "TW")
    for j, y in enumerate(ys):
        for x0, x1 in itertools.pairwise(xs):
            add([x0, y], [x1, y], f"E {j} ST", 30, "FT" if j % 2 else "TF")
    return {"type": "FeatureCollection", "features": features}


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run_case(name: str, footprints: Path, centerlines: Path | None, out: Path, repeat: int,
             bbox: BBox | None = None) -> dict[str, Any]:
    def do_import() -> None:
        city, _ = import_city(footprints, centerlines, bbox=bbox)
        write_city(city, out)

    def baseline() -> None:
        json.load(footprints.open(encoding="utf-8"))
        if centerlines:
            json.load(centerlines.open(encoding="utf-8"))
        json.dumps(json.loads(out.read_text()), separators=(",", ":"))

    city, report = import_city(footprints, centerlines, bbox=bbox)
    write_city(city, out)
    import_s = timed(do_import, repeat)
    base_s = timed(baseline, repeat)
    tracemalloc.start()
    import_city(footprints, centerlines, bbox=bbox)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    vertices = sum(len(b.footprint) + sum(len(h) for h in b.holes) for b in city.buildings)
    input_bytes = footprints.stat().st_size + (centerlines.stat().st_size if centerlines else 0)
    return {
        "case": name, "buildings": len(city.buildings), "vertices": vertices, "edges": len(city.edges),
        "nodes": len(city.nodes), "input_mb": input_bytes / 1e6, "output_mb": out.stat().st_size / 1e6,
        "import_s_median": statistics.median(import_s), "import_s_min": min(import_s),
        "baseline_s_median": statistics.median(base_s), "peak_python_mb": peak / 1e6,
        "us_per_building": statistics.median(import_s) / max(1, len(city.buildings)) * 1e6,
        "skipped": dict(report.footprints_skipped) | dict(report.segments_skipped),
    }


def cli_seconds(cmd: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, default=50, help="copies of the sample in the large case (default 50)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    source_path = SAMPLE if SAMPLE.exists() else FIXTURES / "footprints_current.geojson"
    source = json.loads(source_path.read_text())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cscl = FIXTURES / "centerlines_cscl.geojson"
        results.append(run_case(f"sample ({source_path.name})", source_path, None, tmp / "a.json", args.repeat))
        results.append(run_case("sample + fixture CSCL streets", source_path, cscl, tmp / "b.json", args.repeat))
        big, bbox, first_tile = tiled(source, args.tiles)
        big_path, grid_path = tmp / "tiled.geojson", tmp / "grid.geojson"
        write_geojson(big, big_path)
        write_geojson(street_grid(bbox), grid_path)
        del big  # a large live object graph would slow every garbage collection in the timed runs
        results.append(run_case(f"sample x{args.tiles} (tiled)", big_path, None, tmp / "c.json",
                                max(1, args.repeat // 2)))
        results.append(run_case(f"sample x{args.tiles} + synthetic street grid", big_path, grid_path,
                                tmp / "d.json", max(1, args.repeat // 2)))
        # The same big files cut to the first tile: memory follows what is kept, not the file size.
        results.append(run_case(f"sample x{args.tiles} + grid, --bbox of one tile", big_path, grid_path,
                                tmp / "f.json", max(1, args.repeat // 2), bbox=first_tile))
        sdctl = str(Path(sys.executable).with_name("sdctl"))
        cli = cli_seconds([sdctl, "city", "import", "--footprints", str(source_path), "--centerlines", str(cscl),
                           "--out", str(tmp / "e.json")], args.repeat)
        # The same process start, argument parsing and imports, without the import work.
        cli_start = cli_seconds([sdctl, "city", "columns"], args.repeat)
    if args.json:
        print(json.dumps({"cases": results, "cli_sample_s": cli, "cli_start_s": cli_start}, indent=1))
        return
    width = max(len(r["case"]) for r in results)
    print(f"{'case':<{width}} {'buildings':>9} {'vertices':>8} {'edges':>6} {'in MB':>6} {'out MB':>6} "
          f"{'import s':>9} {'µs/bldg':>8} {'json-only s':>11} {'ratio':>6} {'peak MB':>8}")
    for r in results:
        print(f"{r['case']:<{width}} {r['buildings']:>9} {r['vertices']:>8} {r['edges']:>6} {r['input_mb']:>6.2f} "
              f"{r['output_mb']:>6.2f} {r['import_s_median']:>9.4f} {r['us_per_building']:>8.1f} "
              f"{r['baseline_s_median']:>11.4f} {r['import_s_median'] / r['baseline_s_median']:>6.1f} "
              f"{r['peak_python_mb']:>8.1f}")
    print(f"sdctl city import (sample + CSCL fixture, a new process each run): median {statistics.median(cli):.3f} s, "
          f"min {min(cli):.3f} s over {len(cli)} runs; `sdctl city columns` (process start only): median "
          f"{statistics.median(cli_start):.3f} s")


if __name__ == "__main__":
    main()
