"""OpenStreetMap roads as street segments: ways split at the nodes they share, widths from the class.

An OSM export (GeoJSON, one LineString per way) carries no segment structure: a way runs through
many intersections, and two streets cross where their ways share a vertex. This module cuts every
way at each vertex another way (or the same way again) also passes through, so that pieces run
junction to junction as LION/CSCL segments do, and gives each piece the curb-to-curb width of its
``highway`` class. The rules and the width table are in docs/city-format.md, section "OpenStreetMap
streets". Reading the file is nyc.py's job; this module only turns positions into segments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from .streets import FT_M, Segment, kind_for_name

# Curb-to-curb width per highway class, in feet: typical Manhattan roadways (avenues about 60 ft,
# wide crosstown streets 50-56 ft, side streets 30-34 ft). Lanes then follow from the width by the
# street graph rules (two parking lanes, then 11 ft travel lanes).
HIGHWAY_WIDTH_FT: dict[str, float] = {
    "motorway": 72, "trunk": 66, "primary": 60, "secondary": 56, "tertiary": 44,
    "residential": 34, "unclassified": 30, "living_street": 20, "service": 20,
    "motorway_link": 24, "trunk_link": 24, "primary_link": 24, "secondary_link": 24, "tertiary_link": 24,
}
# Classes that are driven but are not city streets: drawn and routed, never an avenue.
OTHER_CLASSES = frozenset({"motorway", "trunk", "service", "motorway_link", "trunk_link", "primary_link",
                           "secondary_link", "tertiary_link"})

Position = tuple[float, float]


def highway_class(value: object) -> str:
    """The class as compared against the table: trimmed, lower-case."""
    return str(value).strip().lower() if value is not None else ""


def split_at_shared_vertices(lines: Sequence[Sequence[Position]]) -> list[tuple[int, list[Position]]]:
    """(index of its line, piece) for every piece of the lines cut at each vertex used more than once.

    A vertex counts once per line position it occupies, so a crossing (two ways through one vertex),
    a T (a way ending on another's vertex) and a loop closing on itself are all cut.
    """
    use: Counter = Counter()
    for line in lines:
        use.update(line)
    out: list[tuple[int, list[Position]]] = []
    for index, line in enumerate(lines):
        piece = [line[0]]
        for k in range(1, len(line)):
            piece.append(line[k])
            if k < len(line) - 1 and use[line[k]] > 1:
                out.append((index, piece))
                piece = [line[k]]
        out.append((index, piece))
    return out


def width_m(highway: str) -> float:
    """Curb-to-curb width of a highway class (KeyError for a class that is not driven)."""
    return HIGHWAY_WIDTH_FT[highway] * FT_M


def segment(points: list[tuple[float, float]], name: str, highway: str) -> Segment:
    """A two-way street segment of the class's width (OSM exports here carry no one-way tag)."""
    kind = "other" if highway in OTHER_CLASSES else kind_for_name(name)
    return Segment(points=points, width_m=width_m(highway), oneway=False, name=name, kind=kind,
                   width_from_source=False)


def driven(classes: Iterable[str]) -> set[str]:
    """The classes of ``classes`` that become streets."""
    return {c for c in classes if c in HIGHWAY_WIDTH_FT}
