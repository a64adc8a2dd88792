"""The street graph: segment endpoints snapped into nodes, lanes from widths, controls at intersections.

Input is a list of :class:`Segment` already in the city frame and already turned so that a one-way
segment runs in its direction of travel; nothing here knows about NYC codes. The rules (lanes from
width, signal or stop) are documented in docs/city-format.md, section "Street graph rules".
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass

from .format import Edge, Node, Point

FT_M = 0.3048

# Curb-to-curb width assumed when the source has none (a typical NYC side street, 30 ft).
DEFAULT_WIDTH_M = 30 * FT_M
# Lanes from width: a parking lane on each side, then whole travel lanes.
PARKING_LANE_M = 8 * FT_M
TRAVEL_LANE_M = 11 * FT_M
# A street at least this wide counts as major for signals, like every avenue (NYC avenues are 60 ft
# and more curb to curb; side streets 30 to 40 ft).
MAJOR_WIDTH_M = 50 * FT_M
DEFAULT_SNAP_M = 0.5

_AVENUE_NAME = re.compile(r"\b(AVENUE|AVE|AV|BROADWAY|BOWERY|BOULEVARD|BLVD|PARKWAY|PKWY|CONCOURSE)\b", re.IGNORECASE)


@dataclass
class Segment:
    """One drivable centerline piece, in travel order if ``oneway``."""

    points: list[Point]
    width_m: float | None  # None: unknown, DEFAULT_WIDTH_M is used
    oneway: bool
    name: str = ""
    kind: str = "street"
    travel_lanes: int | None = None  # both directions together; None: from the width
    source_id: str | None = None
    from_level: str | None = None  # endpoints with different levels never join; None joins any
    to_level: str | None = None
    width_from_source: bool = True  # False: width_m is a class default (OSM), written width_known=false


def kind_for_name(name: str) -> str:
    """'avenue' for avenues and other named arterials (Broadway, Bowery, boulevards), else 'street'."""
    return "avenue" if _AVENUE_NAME.search(name) else "street"


def lanes_for_width(width_m: float) -> int:
    """Travel lanes of both directions together: width minus two 8-ft parking lanes, in 11-ft lanes; at least 1."""
    return max(1, math.floor((width_m - 2 * PARKING_LANE_M) / TRAVEL_LANE_M + 1e-9))


# The format's most lanes in one direction (city-v1.schema.json).
MAX_LANES_PER_DIRECTION = 16


def split_lanes(total: int, oneway: bool) -> tuple[int, int]:
    """(lanes_forward, lanes_backward): all forward if one-way, else half each way and at least one;
    at most MAX_LANES_PER_DIRECTION each way (only a width-derived count of a 150+ m road reaches it)."""
    if oneway:
        return min(MAX_LANES_PER_DIRECTION, max(1, total)), 0
    each = min(MAX_LANES_PER_DIRECTION, max(1, total // 2))
    return each, each


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)  # the earliest endpoint names the cluster


def _snap(ends: list[tuple[float, float, str | None]], snap_m: float) -> list[int]:
    """Cluster index of every endpoint: endpoints closer than ``snap_m`` (chained) join, unless both
    carry a level and the levels differ (a bridge end does not join the street it passes over)."""
    uf = _UnionFind(len(ends))
    cells: dict[tuple[int, int], list[int]] = {}
    size = max(snap_m, 1e-6)
    for i, (x, y, level) in enumerate(ends):
        cx, cy = math.floor(x / size), math.floor(y / size)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for j in cells.get((cx + dx, cy + dy), ()):
                    xj, yj, level_j = ends[j]
                    if (level is None or level_j is None or level == level_j) and \
                            math.hypot(xj - x, yj - y) <= snap_m:
                        uf.union(i, j)
        cells.setdefault((cx, cy), []).append(i)
    return [uf.find(i) for i in range(len(ends))]


def build_graph(segments: list[Segment], snap_m: float = DEFAULT_SNAP_M) -> tuple[list[Node], list[Edge], Counter]:
    """Nodes and edges of the segments; the Counter holds segments dropped, by reason."""
    dropped: Counter = Counter()
    ends: list[tuple[float, float, str | None]] = []
    for s in segments:
        ends.append((s.points[0][0], s.points[0][1], s.from_level))
        ends.append((s.points[-1][0], s.points[-1][1], s.to_level))
    cluster = _snap(ends, snap_m)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cluster):
        members.setdefault(c, []).append(i)
    centre: dict[int, Point] = {}
    for c, idx in members.items():
        centre[c] = (sum(ends[i][0] for i in idx) / len(idx), sum(ends[i][1] for i in idx) / len(idx))
    # Nodes are numbered in order of first use by a kept edge, so ids do not skip numbers.
    node_of_cluster: dict[int, Node] = {}
    nodes: list[Node] = []

    def node_for(c: int) -> Node:
        if c not in node_of_cluster:
            node_of_cluster[c] = Node(f"n{len(nodes) + 1}", *centre[c])
            nodes.append(node_of_cluster[c])
        return node_of_cluster[c]

    edges: list[Edge] = []
    for k, s in enumerate(segments):
        c_from, c_to = cluster[2 * k], cluster[2 * k + 1]
        points = _dedupe([centre[c_from], *s.points[1:-1], centre[c_to]])
        if len(points) < 2 or (c_from == c_to and _polyline_length(points) <= 2 * snap_m):
            dropped["shorter than the snap tolerance"] += 1
            continue
        a, b = node_for(c_from), node_for(c_to)
        width_m = s.width_m if s.width_m is not None and s.width_m > 0 else DEFAULT_WIDTH_M
        total = s.travel_lanes if s.travel_lanes and s.travel_lanes > 0 else lanes_for_width(width_m)
        forward, backward = split_lanes(total, s.oneway)
        edges.append(Edge(
            id=f"e{len(edges) + 1}", from_id=a.id, to_id=b.id, points=points, width_m=width_m,
            lanes_forward=forward, lanes_backward=backward, oneway="forward" if s.oneway else "two_way",
            name=s.name, kind=s.kind, source_id=s.source_id,
            width_known=s.width_m is not None and s.width_m > 0 and s.width_from_source))
    assign_controls(nodes, edges)
    return nodes, edges, dropped


def keep_largest_component(nodes: list[Node], edges: list[Edge]) -> tuple[list[Node], list[Edge], int]:
    """The nodes and edges of the largest connected piece of the graph (by edge count), and how many
    edges were dropped: a street that reaches nothing else cannot be part of a route."""
    index = {n.id: i for i, n in enumerate(nodes)}
    uf = _UnionFind(len(nodes))
    for e in edges:
        uf.union(index[e.from_id], index[e.to_id])
    size: Counter = Counter(uf.find(index[e.from_id]) for e in edges)
    if not size:
        return nodes, edges, 0
    biggest = max(size, key=lambda root: (size[root], -root))
    kept_edges = [e for e in edges if uf.find(index[e.from_id]) == biggest]
    used = {e.from_id for e in kept_edges} | {e.to_id for e in kept_edges}
    return [n for n in nodes if n.id in used], kept_edges, len(edges) - len(kept_edges)


def is_major(edge: Edge) -> bool:
    """Avenues and streets at least MAJOR_WIDTH_M wide."""
    return edge.kind == "avenue" or edge.width_m >= MAJOR_WIDTH_M - 1e-9


def assign_controls(nodes: list[Node], edges: list[Edge]) -> None:
    """Sets each node's control: at an intersection (3+ edge ends) a signal if 2+ of them are major, else stop.

    Nodes with one or two edge ends (dead ends, joints along one street) get 'none'.
    """
    degree: Counter = Counter()
    major: Counter = Counter()
    for e in edges:
        for end in (e.from_id, e.to_id):
            degree[end] += 1
            if is_major(e):
                major[end] += 1
    for n in nodes:
        if degree[n.id] < 3:
            n.control = "none"
        else:
            n.control = "signal" if major[n.id] >= 2 else "stop"


def _polyline_length(points: list[Point]) -> float:
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(points))


def _dedupe(points: list[Point]) -> list[Point]:
    out: list[Point] = []
    for p in points:
        q = (round(p[0], 3), round(p[1], 3))
        if not out or q != out[-1]:
            out.append(q)
    return out
