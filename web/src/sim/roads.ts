/**
 * The drivable network derived from a city: directed edges with lanes, junction boxes, lane centre
 * lines, junction connectors, and "where am I" queries for infractions and traffic.
 */
import type { City, CityEdge, CityNode } from './city';
import { Polyline, SpatialGrid, clamp, projectOnSegment, wrapAngle, type Vec2 } from './geometry';

/** New York's default speed limit: 25 mph. */
export const CITY_SPEED_LIMIT_MPS = 11.18;
const LANE_WIDTH_M = 3.3;
/** From the crossing street's curb to the crosswalk, the crosswalk itself, and on to the stop line. */
export const CROSSWALK_GAP_M = 0.5;
export const CROSSWALK_WIDTH_M = 3;
export const STOP_LINE_GAP_M = 1.5;

export interface DirEdge {
  index: number;
  /** Index into network.edges (the city's edges). */
  edge: number;
  /** +1: the city edge's from->to; -1: against it. */
  dir: 1 | -1;
  from: number;
  to: number;
  /** Centre line in the direction of travel. */
  line: Polyline;
  lanes: number;
  oppositeLanes: number;
  laneWidth: number;
  /** Distance from the start of `line` to where the junction box at `from` ends. */
  startTrim: number;
  /** Distance from the end of `line` back to the stop line at `to`. */
  endTrim: number;
  /** The opposite direction's DirEdge index, or -1 on a one-way street. */
  reverse: number;
  speedLimit: number;
}

export interface Junction {
  node: number;
  /** The largest distance from the node to a stop line. */
  radius: number;
  /** Distinct city edges meeting here. */
  degree: number;
  incoming: number[];
  outgoing: number[];
}

export interface Crosswalk {
  node: number;
  edge: number;
  center: Vec2;
  /** The two sidewalk ends, on the left and right of the street. */
  a: Vec2;
  b: Vec2;
  streetHeading: number;
  width_m: number;
}

export interface RoadLocation {
  edge: number;
  /** Arc length along the city edge's from->to centre line. */
  s: number;
  /** Signed distance to the right of the edge's from->to direction. */
  lateral: number;
  distance: number;
  /** Heading of the edge's from->to direction at that point. */
  heading: number;
  halfWidth: number;
}

export class RoadNetwork {
  readonly nodes: CityNode[];
  readonly edges: CityEdge[];
  readonly edgeLines: Polyline[];
  readonly dirEdges: DirEdge[] = [];
  readonly junctions: Junction[];
  /** Per city edge: [box length at `from`, at `to`] — where the stop lines are. */
  readonly edgeTrims: [number, number][];
  readonly nodeIndex = new Map<string, number>();
  /** [forward DirEdge index or -1, backward DirEdge index or -1] per city edge. */
  readonly edgeDirs: [number, number][] = [];
  private readonly segGrid = new SpatialGrid(40);
  private readonly segs: { edge: number; i: number }[] = [];
  private readonly laneCache = new Map<string, Polyline>();
  private readonly connectorCache = new Map<string, Polyline>();
  readonly bounds: { minX: number; minY: number; maxX: number; maxY: number };

  constructor(city: City) {
    this.nodes = city.nodes;
    city.nodes.forEach((n, i) => this.nodeIndex.set(n.id, i));
    this.edges = city.edges;
    this.edgeLines = city.edges.map((e) => new Polyline(e.points.map((p) => [p[0], p[1]] as Vec2)));
    const incident: number[][] = city.nodes.map(() => []);
    city.edges.forEach((e, k) => {
      incident[this.nodeIndex.get(e.from)!].push(k);
      incident[this.nodeIndex.get(e.to)!].push(k);
    });

    // Junction boxes. Where streets cross, each street's crosswalk lies just beyond the crossing
    // street's curb and its stop line 2 m before that; where two edges meet at a corner the box is
    // the overlap of the two carriageways; a bend that continues almost straight has no box.
    this.edgeTrims = city.edges.map(() => [0.5, 0.5] as [number, number]);
    this.junctions = city.nodes.map((_, n) => {
      const inc = incident[n];
      let radius = 0;
      for (const k of inc) {
        let other = 0;
        for (const k2 of inc) if (k2 !== k) other = Math.max(other, city.edges[k2].width_m / 2);
        let trim = other;
        if (inc.length >= 3) trim = other + CROSSWALK_GAP_M + CROSSWALK_WIDTH_M + STOP_LINE_GAP_M;
        if (inc.length === 2) {
          const h0 = this.headingAtNode(inc[0], n);
          const h1 = this.headingAtNode(inc[1], n);
          if (Math.abs(wrapAngle(h0 - h1 - Math.PI)) < 20 * (Math.PI / 180)) trim = 0.5;
        }
        if (inc.length === 1) trim = 0.5;
        const atFrom = this.nodeIndex.get(city.edges[k].from) === n;
        this.edgeTrims[k][atFrom ? 0 : 1] = trim;
        radius = Math.max(radius, trim);
      }
      return { node: n, radius, degree: inc.length, incoming: [], outgoing: [] };
    });

    city.edges.forEach((e, k) => {
      const line = this.edgeLines[k];
      const from = this.nodeIndex.get(e.from)!;
      const to = this.nodeIndex.get(e.to)!;
      const total = e.lanes_forward + e.lanes_backward;
      const laneWidth = Math.min(LANE_WIDTH_M, (0.95 * e.width_m) / Math.max(1, total));
      const pair: [number, number] = [-1, -1];
      const add = (dir: 1 | -1, lanes: number, opposite: number) => {
        const l = dir === 1 ? line : new Polyline([...line.points].reverse());
        const f = dir === 1 ? from : to;
        const t = dir === 1 ? to : from;
        const maxTrim = l.length / 2 - 0.5;
        const de: DirEdge = {
          index: this.dirEdges.length, edge: k, dir, from: f, to: t, line: l, lanes, oppositeLanes: opposite,
          laneWidth, startTrim: clamp(this.edgeTrims[k][dir === 1 ? 0 : 1], 0, Math.max(0, maxTrim)),
          endTrim: clamp(this.edgeTrims[k][dir === 1 ? 1 : 0], 0, Math.max(0, maxTrim)), reverse: -1,
          speedLimit: CITY_SPEED_LIMIT_MPS,
        };
        this.dirEdges.push(de);
        this.junctions[f].outgoing.push(de.index);
        this.junctions[t].incoming.push(de.index);
        pair[dir === 1 ? 0 : 1] = de.index;
      };
      if (e.oneway !== 'backward' && e.lanes_forward > 0) add(1, e.lanes_forward, e.lanes_backward);
      if (e.oneway !== 'forward' && e.lanes_backward > 0) add(-1, e.lanes_backward, e.lanes_forward);
      if (pair[0] >= 0 && pair[1] >= 0) {
        this.dirEdges[pair[0]].reverse = pair[1];
        this.dirEdges[pair[1]].reverse = pair[0];
      }
      this.edgeDirs.push(pair);
      for (let i = 0; i + 1 < line.points.length; i++) {
        const a = line.points[i];
        const b = line.points[i + 1];
        const r = e.width_m / 2 + 1;
        this.segGrid.insert(this.segs.length, Math.min(a[0], b[0]) - r, Math.min(a[1], b[1]) - r,
          Math.max(a[0], b[0]) + r, Math.max(a[1], b[1]) + r);
        this.segs.push({ edge: k, i });
      }
    });

    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (const n of city.nodes) {
      minX = Math.min(minX, n.x_m); maxX = Math.max(maxX, n.x_m);
      minY = Math.min(minY, n.y_m); maxY = Math.max(maxY, n.y_m);
    }
    this.bounds = { minX, minY, maxX, maxY };
  }

  /** Heading pointing away from node `n` along city edge `k`. */
  private headingAtNode(k: number, n: number): number {
    const pts = this.edgeLines[k].points;
    if (this.nodeIndex.get(this.edges[k].from) === n) return Math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0]);
    const m = pts.length;
    return Math.atan2(pts[m - 2][1] - pts[m - 1][1], pts[m - 2][0] - pts[m - 1][0]);
  }

  /** Lateral offset (right of travel) of lane k of a DirEdge, k = 0 the leftmost lane. */
  laneOffset(de: DirEdge, k: number): number {
    const total = (de.lanes + de.oppositeLanes) * de.laneWidth;
    return -total / 2 + (de.oppositeLanes + clamp(k, 0, de.lanes - 1) + 0.5) * de.laneWidth;
  }

  /** Centre line of lane k between the two junction boxes. */
  laneLine(deIndex: number, k: number): Polyline {
    const key = `${deIndex}:${k}`;
    let l = this.laneCache.get(key);
    if (!l) {
      const de = this.dirEdges[deIndex];
      const off = de.line.offset(this.laneOffset(de, k));
      l = off.slice(Math.min(de.startTrim, off.length / 2 - 0.1), Math.max(off.length - de.endTrim, off.length / 2 + 0.1));
      this.laneCache.set(key, l);
    }
    return l;
  }

  /** A smooth path through a junction from the end of one lane to the start of another. */
  connector(deIn: number, laneIn: number, deOut: number, laneOut: number): Polyline {
    const key = `${deIn}:${laneIn}>${deOut}:${laneOut}`;
    let c = this.connectorCache.get(key);
    if (!c) {
      const a = this.laneLine(deIn, laneIn);
      const b = this.laneLine(deOut, laneOut);
      const p0 = a.sample(a.length);
      const p3 = b.sample(0);
      const chord = Math.hypot(p3.x - p0.x, p3.y - p0.y);
      const h = Math.max(0.5, chord * 0.45);
      const c1: Vec2 = [p0.x + Math.cos(p0.heading) * h, p0.y + Math.sin(p0.heading) * h];
      const c2: Vec2 = [p3.x - Math.cos(p3.heading) * h, p3.y - Math.sin(p3.heading) * h];
      const pts: Vec2[] = [];
      const n = Math.max(2, Math.min(16, Math.ceil(chord / 2)));
      for (let i = 0; i <= n; i++) {
        const t = i / n;
        const u = 1 - t;
        pts.push([
          u * u * u * p0.x + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t * t * t * p3.x,
          u * u * u * p0.y + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t * t * t * p3.y,
        ]);
      }
      c = new Polyline(pts);
      this.connectorCache.set(key, c);
    }
    return c;
  }

  /** DirEdges one may take after arriving at the end of `deIn`; a U-turn only at a dead end. */
  exits(deIn: number): number[] {
    const de = this.dirEdges[deIn];
    const outs = this.junctions[de.to].outgoing.filter((o) => this.dirEdges[o].edge !== de.edge);
    return outs.length ? outs : this.junctions[de.to].outgoing;
  }

  /** Turn angle (rad, positive left) from the end of one DirEdge to the start of the next. */
  turnAngle(deIn: number, deOut: number): number {
    const a = this.dirEdges[deIn].line;
    const b = this.dirEdges[deOut].line;
    const ha = a.sample(a.length).heading;
    const hb = b.sample(0).heading;
    return wrapAngle(hb - ha);
  }

  /** The nearest street to a point, with the position along and across it. */
  locate(x: number, y: number, maxDistance = 30): RoadLocation | null {
    const ids = this.segGrid.query(x, y, maxDistance);
    let best: RoadLocation | null = null;
    let bestScore = Infinity;
    for (const id of ids) {
      const { edge, i } = this.segs[id];
      const line = this.edgeLines[edge];
      const a = line.points[i];
      const b = line.points[i + 1];
      const [t, d2] = projectOnSegment(x, y, a[0], a[1], b[0], b[1]);
      const d = Math.sqrt(d2);
      // Prefer the street whose body contains the point (inside a junction two may).
      const hw = this.edges[edge].width_m / 2;
      const score = d - hw;
      if (score < bestScore && d <= maxDistance) {
        bestScore = score;
        const hx = b[0] - a[0];
        const hy = b[1] - a[1];
        const len = Math.hypot(hx, hy) || 1;
        const lateral = ((x - a[0]) * hy - (y - a[1]) * hx) / len;
        best = { edge, s: line.cum[i] + t * (line.cum[i + 1] - line.cum[i]), lateral, distance: d,
          heading: Math.atan2(hy, hx), halfWidth: hw };
      }
    }
    return best;
  }

  /** Is the point on the carriageway of some street or inside a junction box? */
  onRoad(x: number, y: number, margin = 0.25): boolean {
    const loc = this.locate(x, y, 40);
    return loc !== null && loc.distance <= loc.halfWidth + margin;
  }

  /** The junction whose box contains the point, or -1. */
  junctionAt(x: number, y: number): number {
    const loc = this.locate(x, y, 40);
    if (!loc || loc.distance > loc.halfWidth + 0.25) return -1;
    const e = this.edges[loc.edge];
    const line = this.edgeLines[loc.edge];
    const [t0, t1] = this.edgeTrims[loc.edge];
    const from = this.nodeIndex.get(e.from)!;
    const to = this.nodeIndex.get(e.to)!;
    if (loc.s < t0 && this.junctions[from].degree >= 2) return from;
    if (loc.s > line.length - t1 && this.junctions[to].degree >= 2) return to;
    return -1;
  }

  /** Crosswalks: one across each street at each junction where three or more streets meet. */
  crosswalks(): Crosswalk[] {
    const out: Crosswalk[] = [];
    this.junctions.forEach((j, n) => {
      if (j.degree < 3) return;
      this.edges.forEach((e, k) => {
        const atFrom = this.nodeIndex.get(e.from) === n;
        if (!atFrom && this.nodeIndex.get(e.to) !== n) return;
        const line = this.edgeLines[k];
        const trim = this.edgeTrims[k][atFrom ? 0 : 1];
        const d = trim - STOP_LINE_GAP_M - CROSSWALK_WIDTH_M / 2;
        if (d <= 0 || d >= line.length / 2) return;
        const p = line.sample(atFrom ? d : line.length - d);
        const half = e.width_m / 2 + 1;
        const rx = Math.sin(p.heading);
        const ry = -Math.cos(p.heading);
        out.push({ node: n, edge: k, center: [p.x, p.y], a: [p.x - rx * half, p.y - ry * half],
          b: [p.x + rx * half, p.y + ry * half], streetHeading: p.heading, width_m: e.width_m });
      });
    });
    return out;
  }

  nodePos(n: number): Vec2 {
    return [this.nodes[n].x_m, this.nodes[n].y_m];
  }
}
