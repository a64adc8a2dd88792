/**
 * Other road users: NPC cars that follow lanes with the Intelligent Driver Model and obey lights and
 * stop signs, and pedestrians who cross at crosswalks when the walk signal allows.
 */
import { Polyline, type Vec2 } from './geometry';
import type { Crosswalk, RoadNetwork } from './roads';
import type { Rng } from './rng';
import type { Signals } from './signals';
import { turnCommand, RoadOption } from './planner';

export interface Body {
  x: number;
  y: number;
  yaw: number;
  v: number;
  halfLength: number;
  halfWidth: number;
}

export interface NpcCar extends Body {
  id: string;
  de: number;
  lane: number;
  /** Arc length along the current lane line, or along `conn` while crossing a junction. */
  s: number;
  conn: Polyline | null;
  nextDe: number;
  nextLane: number;
  desiredSpeed: number;
  stopWait_s: number;
  stopCleared: boolean;
  color: number;
}

export interface Pedestrian extends Body {
  id: string;
  crosswalk: number;
  /** 0 at end a, 1 at end b. */
  t: number;
  dir: 1 | -1;
  walking: boolean;
  wait_s: number;
  speed: number;
  /** Seconds left out of the scene after being hit; 0 when present. */
  away_s: number;
  color: number;
}

// Intelligent Driver Model parameters for city traffic.
const IDM_ACCEL = 1.6;
const IDM_DECEL = 2.5;
const IDM_HEADWAY_S = 1.3;
const IDM_MIN_GAP_M = 2.0;
const YELLOW_DECEL = 3.5;
const STOP_SIGN_WAIT_S = 1.2;
const LOOKAHEAD_M = 45;

export interface TrafficOptions {
  cars: number;
  pedestrians: number;
  /** No NPC car starts within this distance of `avoid`. */
  avoid?: Vec2;
  avoidRadius_m?: number;
}

export class Traffic {
  readonly cars: NpcCar[] = [];
  readonly peds: Pedestrian[] = [];
  readonly crosswalks: Crosswalk[];
  private readonly rng: Rng;

  constructor(readonly net: RoadNetwork, readonly signals: Signals, rng: Rng, opts: TrafficOptions) {
    this.rng = rng;
    this.crosswalks = net.crosswalks();
    const candidates = net.dirEdges.filter((d) => net.laneLine(d.index, 0).length > 20);
    const avoidR2 = (opts.avoidRadius_m ?? 35) ** 2;
    for (let attempt = 0; this.cars.length < opts.cars && attempt < opts.cars * 20; attempt++) {
      const de = rng.pick(candidates);
      const lane = rng.int(de.lanes);
      const line = net.laneLine(de.index, lane);
      const s = rng.range(0, line.length * 0.8);
      const p = line.sample(s);
      if (opts.avoid && (p.x - opts.avoid[0]) ** 2 + (p.y - opts.avoid[1]) ** 2 < avoidR2) continue;
      if (this.cars.some((c) => (c.x - p.x) ** 2 + (c.y - p.y) ** 2 < 12 * 12)) continue;
      const car: NpcCar = {
        id: `car-${this.cars.length}`, de: de.index, lane, s, conn: null, nextDe: -1, nextLane: 0,
        x: p.x, y: p.y, yaw: p.heading, v: de.speedLimit * rng.range(0.4, 0.9), halfLength: 2.3, halfWidth: 0.95,
        desiredSpeed: de.speedLimit * rng.range(0.85, 1.1), stopWait_s: 0, stopCleared: false, color: rng.int(8),
      };
      this.chooseNext(car);
      this.cars.push(car);
    }
    if (this.crosswalks.length) {
      for (let i = 0; i < opts.pedestrians; i++) {
        const cw = rng.int(this.crosswalks.length);
        const t = rng.chance(0.5) ? 0 : 1;
        const c = this.crosswalks[cw];
        const ped: Pedestrian = {
          id: `ped-${i}`, crosswalk: cw, t, dir: t === 0 ? 1 : -1, walking: false, wait_s: rng.range(0, 6),
          speed: rng.range(1.1, 1.6), x: c.a[0], y: c.a[1], yaw: 0, v: 0, halfLength: 0.3, halfWidth: 0.3,
          away_s: 0, color: rng.int(6),
        };
        this.placePed(ped);
        this.peds.push(ped);
      }
    }
  }

  private chooseNext(car: NpcCar): void {
    const exits = this.net.exits(car.de);
    car.nextDe = exits.length ? this.rng.pick(exits) : -1;
    if (car.nextDe >= 0) {
      const out = this.net.dirEdges[car.nextDe];
      const cmd = turnCommand(this.net, car.de, car.nextDe);
      car.nextLane = cmd === RoadOption.LEFT ? 0 : cmd === RoadOption.RIGHT ? out.lanes - 1 : Math.min(car.lane, out.lanes - 1);
    }
  }

  private placePed(p: Pedestrian): void {
    const c = this.crosswalks[p.crosswalk];
    p.x = c.a[0] + (c.b[0] - c.a[0]) * p.t;
    p.y = c.a[1] + (c.b[1] - c.a[1]) * p.t;
    p.yaw = Math.atan2(c.b[1] - c.a[1], c.b[0] - c.a[0]) + (p.dir < 0 ? Math.PI : 0);
    p.v = p.walking ? p.speed : 0;
  }

  /** Gap (bumper to bumper, m) and speed of the nearest body ahead of `car` in its corridor. */
  private leaderAhead(car: NpcCar, others: Body[]): { gap: number; v: number } {
    const c = Math.cos(car.yaw);
    const s = Math.sin(car.yaw);
    let gap = Infinity;
    let v = 0;
    for (const o of others) {
      if (o === car) continue;
      const dx = o.x - car.x;
      const dy = o.y - car.y;
      const fwd = dx * c + dy * s;
      if (fwd <= 0 || fwd > LOOKAHEAD_M) continue;
      const lat = -dx * s + dy * c;
      // The corridor widens a little with distance so that curved paths still see what is ahead.
      if (Math.abs(lat) > car.halfWidth + o.halfWidth + 0.4 + fwd * 0.04) continue;
      const g = fwd - car.halfLength - o.halfLength;
      if (g < gap) {
        gap = g;
        v = o.v * Math.cos(o.yaw - car.yaw);
      }
    }
    return { gap, v };
  }

  private idm(v: number, v0: number, gap: number, vLead: number): number {
    const free = 1 - Math.pow(v / Math.max(v0, 0.1), 4);
    if (!Number.isFinite(gap)) return IDM_ACCEL * free;
    const sStar = IDM_MIN_GAP_M + Math.max(0, v * IDM_HEADWAY_S + (v * (v - vLead)) / (2 * Math.sqrt(IDM_ACCEL * IDM_DECEL)));
    return IDM_ACCEL * (free - Math.pow(sStar / Math.max(gap, 0.1), 2));
  }

  /** Advances every car and pedestrian by dt; `player` is seen by cars like any other body. */
  step(dt: number, t_s: number, player: Body): void {
    const bodies: Body[] = [...this.cars, player, ...this.peds.filter((p) => p.away_s === 0)];
    for (const car of this.cars) {
      let { gap, v: vLead } = this.leaderAhead(car, bodies);
      // Stop lines ahead: red (or a yellow there is room to stop for) and unserved stop signs.
      if (!car.conn) {
        const line = this.net.laneLine(car.de, car.lane);
        const toLine = line.length - car.s - car.halfLength;
        const node = this.net.dirEdges[car.de].to;
        const control = this.net.nodes[node].control;
        if (this.signals.hasLights(node)) {
          const st = this.signals.stateFor(car.de, t_s);
          const mustStop = st === 'red' || (st === 'yellow' && toLine > (car.v * car.v) / (2 * YELLOW_DECEL));
          if (mustStop && toLine > -0.5 && toLine < gap) {
            gap = Math.max(0, toLine);
            vLead = 0;
          }
        } else if (control === 'stop' && this.net.junctions[node].degree >= 3 && !car.stopCleared) {
          if (toLine < 3 && car.v < 0.3) {
            car.stopWait_s += dt;
            if (car.stopWait_s >= STOP_SIGN_WAIT_S) car.stopCleared = true;
          }
          if (!car.stopCleared && toLine < gap) {
            gap = Math.max(0, toLine);
            vLead = 0;
          }
        }
      }
      const a = Math.max(-8, this.idm(car.v, car.desiredSpeed, gap, vLead));
      car.v = Math.max(0, car.v + a * dt);
      car.s += car.v * dt;
      this.advanceAlongPaths(car);
    }
    for (const p of this.peds) this.stepPed(p, dt, t_s);
  }

  private advanceAlongPaths(car: NpcCar): void {
    for (let guard = 0; guard < 4; guard++) {
      const path = car.conn ?? this.net.laneLine(car.de, car.lane);
      if (car.s < path.length) {
        const p = path.sample(car.s);
        car.x = p.x;
        car.y = p.y;
        car.yaw = p.heading;
        return;
      }
      car.s -= path.length;
      if (car.conn) {
        car.conn = null;
        car.de = car.nextDe;
        car.lane = car.nextLane;
        car.stopWait_s = 0;
        car.stopCleared = false;
        this.chooseNext(car);
      } else if (car.nextDe >= 0) {
        car.conn = this.net.connector(car.de, car.lane, car.nextDe, car.nextLane);
      } else {
        car.s = path.length; // a dead end with no way on: wait there
        car.v = 0;
        return;
      }
    }
  }

  private stepPed(p: Pedestrian, dt: number, t_s: number): void {
    if (p.away_s > 0) {
      p.away_s = Math.max(0, p.away_s - dt);
      if (p.away_s === 0) {
        p.crosswalk = this.rng.int(this.crosswalks.length);
        p.t = 0;
        p.dir = 1;
        p.walking = false;
        p.wait_s = 3;
        this.placePed(p);
      }
      return;
    }
    const cw = this.crosswalks[p.crosswalk];
    const len = Math.hypot(cw.b[0] - cw.a[0], cw.b[1] - cw.a[1]);
    if (!p.walking) {
      p.wait_s = Math.max(0, p.wait_s - dt);
      if (p.wait_s === 0 && this.signals.walkAcross(cw.node, cw.streetHeading, t_s)) p.walking = true;
    } else {
      p.t += (p.dir * p.speed * dt) / len;
      if (p.t >= 1 || p.t <= 0) {
        p.t = p.t >= 1 ? 1 : 0;
        p.dir = p.t >= 1 ? -1 : 1;
        p.walking = false;
        p.wait_s = this.rng.range(2, 9);
      }
    }
    this.placePed(p);
  }

  /** Takes a pedestrian out of the scene for a while (after being hit). */
  removePed(p: Pedestrian, away_s = 6): void {
    p.away_s = away_s;
    p.walking = false;
  }
}
