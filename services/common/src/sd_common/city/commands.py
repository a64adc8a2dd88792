"""``sdctl city import``, ``sdctl city validate`` and ``sdctl city columns``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .columns import CityImportError, ColumnMapping
from .format import City, validate_city, write_city
from .nyc import import_city
from .streets import DEFAULT_SNAP_M


class _CoordinateArgParser(argparse.ArgumentParser):
    """Takes ``--bbox -74.0,40.7,-73.9,40.8`` as a value: NYC longitudes are negative, and argparse
    would otherwise read a dash followed by commas as an unknown option."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        number = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
        self._negative_number_matcher = re.compile(rf"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?:,{number})*$")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``sdctl city …`` to sdctl's argument parser (handler in ``fn``)."""
    city = subparsers.add_parser("city", help="city files: import NYC Open Data, validate")
    sub = city.add_subparsers(dest="action", required=True, parser_class=_CoordinateArgParser)

    imp = sub.add_parser(
        "import", help="build a city file from NYC Building Footprints and street centerlines (GeoJSON, WGS84)",
        description="Builds a city file (docs/city-format.md) from a Building Footprints GeoJSON export and, "
                    "optionally, a LION or CSCL street centerline GeoJSON export, both in WGS84 lon/lat.")
    imp.add_argument("--footprints", required=True, type=Path, metavar="F.geojson",
                     help="Building Footprints export (current or legacy field names)")
    streets = imp.add_mutually_exclusive_group()
    streets.add_argument("--centerlines", type=Path, metavar="C.geojson", help="LION or CSCL centerline export")
    streets.add_argument("--osm-streets", type=Path, metavar="S.geojson",
                         help="OpenStreetMap road export (LineStrings with 'highway' and 'name'); widths per class")
    imp.add_argument("--bbox", type=_floats(4, "w,s,e,n"), metavar="W,S,E,N",
                     help="WGS84 box to import (default: the footprints' extent); footprints by centroid, "
                          "centerline segments if any part is inside")
    imp.add_argument("--origin", type=_floats(2, "lon,lat"), metavar="LON,LAT",
                     help="origin of the city frame (default: the box centre)")
    imp.add_argument("--columns", type=Path, metavar="mapping.json",
                     help="column mapping overrides (print the defaults with `sdctl city columns`)")
    imp.add_argument("--name", help="city name (default: the footprints file's name)")
    imp.add_argument("--snap-m", type=float, default=DEFAULT_SNAP_M,
                     help=f"join centerline endpoints closer than this (default {DEFAULT_SNAP_M} m)")
    imp.add_argument("--out", required=True, type=Path, metavar="city.json")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(fn=import_command)

    val = sub.add_parser("validate", help="check a city file against format v1 (JSON Schema and graph rules)")
    val.add_argument("file", type=Path, metavar="city.json")
    val.set_defaults(fn=validate_command)

    cols = sub.add_parser("columns", help="print the default column mapping, a starting point for --columns")
    cols.set_defaults(fn=columns_command)


def _floats(count: int, form: str):
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"expected {count} numbers as {form}, got {text!r}")
        return values
    return parse


def import_command(args: argparse.Namespace) -> int:
    """Imports; prints the summary (stdout) or the reason it could not (stderr, exit 2)."""
    try:
        mapping = ColumnMapping.load(args.columns) if args.columns else ColumnMapping.default()
        city, report = import_city(args.footprints, args.centerlines, bbox=args.bbox, origin=args.origin,
                                   name=args.name, columns=mapping, snap_m=args.snap_m, osm_streets=args.osm_streets)
        refuse_invalid(city)
        size = write_city(city, args.out)
    except CityImportError as exc:
        print(f"sdctl city import: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sdctl city import: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"out": str(args.out), "bytes": size, **report.to_dict()}, indent=1))
    else:
        print(f"wrote {args.out} ({size} bytes, {report.elapsed_s:.2f} s): city {city.name!r}")
        for line in report.lines():
            print(f"  {line}")
    return 0


def refuse_invalid(city: City) -> None:
    """CityImportError naming each problem if the city would not pass `sdctl city validate`.

    The importer skips what it knows the format cannot hold; this is the last check before writing,
    so that no rule it missed ever yields a file the validator rejects.
    """
    try:
        problems = validate_city(json.loads(json.dumps(city.to_dict(), allow_nan=False)))
    except ValueError as exc:  # NaN or infinity somewhere: JSON cannot carry it
        raise CityImportError(f"the imported city holds a value JSON cannot carry ({exc}); nothing written") from None
    except RuntimeError:  # jsonschema is not installed: the importer alone runs on the standard library
        return
    if problems:
        shown = "; ".join(f"{p.path}: {p.message} [{p.code}]" for p in problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise CityImportError(f"the imported city would not be valid, so nothing was written: {shown}{more}")


def validate_command(args: argparse.Namespace) -> int:
    """Prints each problem as 'path: message'; exit 0 if the file is a valid city, 1 if not."""
    from sd_common.problems import ProblemError

    from .format import read_city

    try:
        city = read_city(args.file)
    except RuntimeError as exc:  # jsonschema is missing
        print(f"sdctl city validate: {exc}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        for p in exc.problems:
            print(f"{args.file}:{p.path}: {p.message} [{p.code}]")
        print(f"{args.file}: INVALID ({len(exc.problems)} problems)", file=sys.stderr)
        return 1
    print(f"{args.file}: valid city {city.name!r}: {len(city.nodes)} nodes, {len(city.edges)} edges, "
          f"{len(city.buildings)} buildings", file=sys.stderr)
    return 0


def columns_command(args: argparse.Namespace) -> int:
    """Prints the built-in mapping as a --columns file."""
    print(json.dumps(ColumnMapping.default().to_dict(), indent=2))
    return 0
