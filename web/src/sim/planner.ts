/**
 * Routes on the street graph: A* over directed edges (one-way streets respected, no U-turns), the
 * lane-level driving line of a route, and navigation commands in CARLA RoadOption terms.
 */
import { Polyline, dist, type Vec2 } from './geometry';
import type { RoadNetwork } from './roads';
import type { Rng } from './rng';

/** CARLA's agents.navigation.local_planner.RoadOption numbering. */
export const RoadOption = {
  VOID: -1,
  LEFT: 1,
  RIGHT: 2,
  STRAIGHT: 3,
  LANEFOLLOW: 4,
  CHANGELANELEFT: 5,
  CHANGELANERIGHT: 6,
} as const;
export type RoadOption = (typeof RoadOption)[keyof typeof RoadOption];

export const COMMAND_NAMES: Record<number, string> = {
  [-1]: 'VOID', 1: 'LEFT', 2: 'RIGHT', 3: 'STRAIGHT', 4: 'LANEFOLLOW', 5: 'CHANGELANELEFT', 6: 'CHANGELANERIGHT',
};

/** The command applies from this far before a junction's entry (metres along the route). */
export const COMMAND_APPROACH_M = 35;
/** Turns sharper than this are LEFT/RIGHT; gentler ones STRAIGHT. */
const STRAIGHT_MAX_RAD = 30 * (Math.PI / 180);

export interface RouteJunction {
  node: number;
  /** Arc length along the route where the junction box is entered and left. */
  sEnter: number;
  sExit: number;
  command: RoadOption;
  inDe: number;
  outDe: number;
}

export interface Route {
  id: string;
  dirEdges: number[];
  /** Lane driven on each of dirEdges (0 = leftmost). */
  lanes: number[];
  /** The lane-level driving line from start to goal. */
  path: Polyline;
  length: number;
  junctions: RouteJunction[];
  start: Vec2;
  goal: Vec2;
  startHeading: number;
}

/** Turn command for going from one DirEdge to the next through a junction. */
export function turnCommand(net: RoadNetwork, deIn: number, deOut: number): RoadOption {
  const a = net.turnAngle(deIn, deOut);
  if (Math.abs(a) < STRAIGHT_MAX_RAD) return RoadOption.STRAIGHT;
  return a > 0 ? RoadOption.LEFT : RoadOption.RIGHT;
}

/** Shortest DirEdge sequence from `startDe` to `goalDe` (inclusive), or null. */
export function shortestPath(net: RoadNetwork, startDe: number, goalDe: number): number[] | null {
  const goalLine = net.dirEdges[goalDe].line;
  const goalPt = goalLine.sample(goalLine.length / 2);
  const n = net.dirEdges.length;
  const g = new Float64Array(n).fill(Infinity);
  const prev = new Int32Array(n).fill(-1);
  const closed = new Uint8Array(n);
  // A binary heap keyed by f = g + straight-line distance to the goal.
  const heap: [number, number][] = [];
  const push = (f: number, d: number) => {
    heap.push([f, d]);
    let i = heap.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (heap[p][0] <= heap[i][0]) break;
      [heap[p], heap[i]] = [heap[i], heap[p]];
      i = p;
    }
  };
  const pop = (): [number, number] => {
    const top = heap[0];
    const last = heap.pop()!;
    if (heap.length) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && heap[l][0] < heap[m][0]) m = l;
        if (r < heap.length && heap[r][0] < heap[m][0]) m = r;
        if (m === i) break;
        [heap[m], heap[i]] = [heap[i], heap[m]];
        i = m;
      }
    }
    return top;
  };
  const h = (d: number) => {
    const [x, y] = net.nodePos(net.dirEdges[d].to);
    return dist(x, y, goalPt.x, goalPt.y);
  };
  g[startDe] = 0;
  push(h(startDe), startDe);
  while (heap.length) {
    const [, d] = pop();
    if (closed[d]) continue;
    closed[d] = 1;
    if (d === goalDe) break;
    for (const o of net.exits(d)) {
      if (net.dirEdges[o].edge === net.dirEdges[d].edge) continue; // no U-turns on a route
      const cost = g[d] + net.dirEdges[o].line.length;
      if (cost < g[o]) {
        g[o] = cost;
        prev[o] = d;
        push(cost + h(o), o);
      }
    }
  }
  if (!Number.isFinite(g[goalDe])) return null;
  const out: number[] = [];
  for (let d = goalDe; d !== -1; d = prev[d]) out.push(d);
  return out.reverse();
}

/** Lane for each DirEdge of a route: left lane before a left turn, right lane otherwise. */
function chooseLanes(net: RoadNetwork, des: number[]): number[] {
  return des.map((d, i) => {
    const de = net.dirEdges[d];
    if (i + 1 < des.length && net.junctions[de.to].degree >= 3) {
      const c = turnCommand(net, d, des[i + 1]);
      if (c === RoadOption.LEFT) return 0;
    }
    return de.lanes - 1;
  });
}

/**
 * Builds the route along `des` from arc length `startS` on the first lane line to `goalS` on the
 * last one (both measured on lane lines, i.e. from the end of the junction box).
 */
export function buildRoute(net: RoadNetwork, id: string, des: number[], startS: number, goalS: number): Route {
  const lanes = chooseLanes(net, des);
  const pts: Vec2[] = [];
  const junctions: RouteJunction[] = [];
  const pushLine = (l: Polyline, s0: number, s1: number) => {
    const part = l.slice(Math.max(0, s0), Math.min(l.length, s1));
    for (const p of part.points) {
      const last = pts[pts.length - 1];
      if (!last || Math.hypot(p[0] - last[0], p[1] - last[1]) > 0.05) pts.push([p[0], p[1]]);
    }
  };
  let length = 0;
  const lengthOf = () => new Polyline(pts).length;
  for (let i = 0; i < des.length; i++) {
    const lane = net.laneLine(des[i], lanes[i]);
    const s0 = i === 0 ? startS : 0;
    const s1 = i === des.length - 1 ? goalS : lane.length;
    pushLine(lane, s0, s1);
    if (i + 1 < des.length) {
      const sEnter = lengthOf();
      const conn = net.connector(des[i], lanes[i], des[i + 1], lanes[i + 1]);
      pushLine(conn, 0, conn.length);
      const node = net.dirEdges[des[i]].to;
      const isJunction = net.junctions[node].degree >= 3;
      junctions.push({
        node, sEnter, sExit: sEnter + conn.length, inDe: des[i], outDe: des[i + 1],
        command: isJunction ? turnCommand(net, des[i], des[i + 1]) : RoadOption.LANEFOLLOW,
      });
    }
  }
  const path = new Polyline(pts);
  length = path.length;
  const a = path.sample(0);
  const b = path.sample(length);
  return { id, dirEdges: des, lanes, path, length, junctions, start: [a.x, a.y], goal: [b.x, b.y], startHeading: a.heading };
}

/** The command at arc length s along the route. */
export function commandAt(route: Route, s: number, finished = false): RoadOption {
  if (finished) return RoadOption.VOID;
  for (const j of route.junctions) {
    if (j.command === RoadOption.LANEFOLLOW) continue;
    if (s >= j.sEnter - COMMAND_APPROACH_M && s <= j.sExit) return j.command;
  }
  return RoadOption.LANEFOLLOW;
}

/** The next junction with a turn command at or after s, with the distance to its entry. */
export function nextJunction(route: Route, s: number): { junction: RouteJunction; distance_m: number } | null {
  for (const j of route.junctions) {
    if (j.command === RoadOption.LANEFOLLOW) continue;
    if (s <= j.sExit) return { junction: j, distance_m: Math.max(0, j.sEnter - s) };
  }
  return null;
}

/** A random route of roughly [minLength, maxLength] metres with at least one turn. */
export function planRandomRoute(net: RoadNetwork, rng: Rng, id: string, minLength = 500, maxLength = 900): Route {
  const usable = net.dirEdges.filter((d) => net.laneLine(d.index, 0).length > 30).map((d) => d.index);
  let fallback: Route | null = null;
  for (let attempt = 0; attempt < 400; attempt++) {
    const startDe = rng.pick(usable);
    const goalDe = rng.pick(usable);
    if (goalDe === startDe) continue;
    const des = shortestPath(net, startDe, goalDe);
    if (!des) continue;
    const l0 = net.laneLine(startDe, 0).length;
    const l1 = net.laneLine(goalDe, 0).length;
    const route = buildRoute(net, id, des, l0 * rng.range(0.2, 0.5), l1 * rng.range(0.5, 0.8));
    const turns = route.junctions.filter((j) => j.command === RoadOption.LEFT || j.command === RoadOption.RIGHT).length;
    if (route.length >= minLength && route.length <= maxLength && turns >= 1) return route;
    if (!fallback || Math.abs(route.length - (minLength + maxLength) / 2) < Math.abs(fallback.length - (minLength + maxLength) / 2)) {
      fallback = route;
    }
  }
  if (!fallback) throw new Error('no route could be planned on this street graph');
  return fallback;
}

/** Follows the vehicle along a route: progress is the farthest point reached along the path. */
export class RouteTracker {
  sCurrent = 0;
  sMax = 0;
  finished = false;
  /** Distance from the path at the last update, metres. */
  offPath_m = 0;

  constructor(readonly route: Route, readonly finishRadius_m = 8) {}

  update(x: number, y: number): void {
    const p = this.route.path;
    let hit = p.project(x, y, this.sCurrent - 15, this.sCurrent + 40);
    if (hit.d2 > 25 * 25) hit = p.project(x, y); // lost: search the whole route
    this.offPath_m = Math.sqrt(hit.d2);
    this.sCurrent = hit.s;
    // Progress only counts while the car is on (near) the route.
    if (this.offPath_m < 12 && hit.s > this.sMax && hit.s - this.sMax < 40) this.sMax = hit.s;
    if (!this.finished && this.route.length - this.sMax < this.finishRadius_m) {
      this.finished = true;
      this.sMax = this.route.length;
    }
  }

  get progress(): number {
    return this.route.length > 0 ? Math.min(1, this.sMax / this.route.length) : 1;
  }

  get distanceRemaining(): number {
    return Math.max(0, this.route.length - this.sMax);
  }

  get command(): RoadOption {
    return commandAt(this.route, this.sCurrent, this.finished);
  }
}
