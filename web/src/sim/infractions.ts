/**
 * Infraction detection for the player's car, as the CARLA leaderboard counts them: collisions
 * (vehicle, pedestrian, static), running a red light, rolling a stop sign, leaving the road, and
 * driving against the traffic. Each is reported once, when it starts.
 */
import type { RoadNetwork } from './roads';
import type { Signals } from './signals';

export type InfractionKind =
  | 'collision_vehicle' | 'collision_pedestrian' | 'collision_static'
  | 'red_light' | 'stop_sign' | 'off_road' | 'wrong_way';

export interface Infraction {
  kind: InfractionKind;
  [detail: string]: string | number;
}

export interface Contact {
  kind: 'vehicle' | 'pedestrian' | 'static';
  other_id: string;
  speed_mps: number;
}

export interface PlayerPose {
  x: number;
  y: number;
  yaw: number;
  v: number;
  halfLength: number;
}

const COLLISION_REARM_S = 1.5;
const WRONG_WAY_AFTER_S = 1.0;
const WRONG_WAY_REARM_S = 2.0;
const OFF_ROAD_AFTER_S = 0.2;
const OFF_ROAD_REARM_S = 1.0;
/** A stop counts when the car went below this speed within STOP_ZONE_M of the line. */
const STOP_SPEED_MPS = 0.5;
const STOP_ZONE_M = 12;

interface Approach {
  de: number;
  node: number;
  /** Front bumper to stop line, metres (negative once past it). */
  toLine: number;
  minSpeedNearLine: number;
}

export class InfractionDetector {
  private lastContact = new Map<string, number>();
  private approach: Approach | null = null;
  private wrongFor = 0;
  private rightFor = 0;
  private wrongArmed = true;
  private offFor = 0;
  private onFor = 0;
  private offArmed = true;

  constructor(readonly net: RoadNetwork, readonly signals: Signals) {}

  /** The car is off the road now, long enough to count (what an `off_road` infraction starts with). */
  get offRoadNow(): boolean {
    return this.offFor >= OFF_ROAD_AFTER_S;
  }

  /** The car drives against the traffic now, long enough to count (what starts a `wrong_way`). */
  get wrongWayNow(): boolean {
    return this.wrongFor >= WRONG_WAY_AFTER_S;
  }

  /** New infractions at sim time t_s after a step of dt; `contacts` are this step's touches. */
  update(t_s: number, dt: number, p: PlayerPose, contacts: Contact[]): Infraction[] {
    const out: Infraction[] = [];
    for (const c of contacts) {
      const key = `${c.kind}:${c.other_id}`;
      const last = this.lastContact.get(key);
      if (last === undefined || t_s - last > COLLISION_REARM_S) {
        out.push({ kind: `collision_${c.kind}` as InfractionKind, other_id: c.other_id,
          speed_mps: Math.round(c.speed_mps * 100) / 100 });
      }
      this.lastContact.set(key, t_s);
    }

    const net = this.net;
    const loc = net.locate(p.x, p.y, 40);
    const onRoad = loc !== null && loc.distance <= loc.halfWidth + 0.25;
    // Off road: the footprint centre is on a sidewalk, a plaza or beyond the streets.
    if (!onRoad) {
      this.offFor += dt;
      this.onFor = 0;
      if (this.offFor >= OFF_ROAD_AFTER_S && this.offArmed) {
        this.offArmed = false;
        out.push({ kind: 'off_road' });
      }
    } else {
      this.onFor += dt;
      this.offFor = 0;
      if (this.onFor >= OFF_ROAD_REARM_S) this.offArmed = true;
    }

    let wrong = false;
    let approach: Approach | null = null;
    if (onRoad && loc) {
      const e = net.edges[loc.edge];
      const line = net.edgeLines[loc.edge];
      const [trim0, trim1] = net.edgeTrims[loc.edge];
      const inBox = loc.s < trim0 || loc.s > line.length - trim1;
      const along = Math.cos(p.yaw - loc.heading);
      const dir: 1 | -1 = along >= 0 ? 1 : -1;
      const [fwd, bwd] = net.edgeDirs[loc.edge];
      const de = dir === 1 ? fwd : bwd;
      if (!inBox && Math.abs(p.v) > 1 && Math.abs(along) > 0.5) {
        if (de < 0) wrong = true; // against a one-way street
        else if (e.oneway === 'two_way') wrong = dir * loc.lateral < -0.5; // in the oncoming lanes
      }
      if (de >= 0 && Math.abs(along) > 0.5 && p.v > -0.1) {
        const stopS = dir === 1 ? line.length - trim1 : trim0;
        const toLine = (dir === 1 ? stopS - loc.s : loc.s - stopS) - p.halfLength;
        const node = net.dirEdges[de].to;
        approach = { de, node, toLine, minSpeedNearLine: Infinity };
      }
    }
    if (wrong) {
      this.wrongFor += dt;
      this.rightFor = 0;
      if (this.wrongFor >= WRONG_WAY_AFTER_S && this.wrongArmed) {
        this.wrongArmed = false;
        out.push({ kind: 'wrong_way', edge_id: net.edges[loc!.edge].id });
      }
    } else {
      this.rightFor += dt;
      this.wrongFor = 0;
      if (this.rightFor >= WRONG_WAY_REARM_S) this.wrongArmed = true;
    }

    // Crossing a stop line: on a red light, or at a stop sign without having stopped.
    const prev = this.approach;
    if (approach && prev && prev.de === approach.de) {
      approach.minSpeedNearLine = prev.minSpeedNearLine;
      if (approach.toLine <= STOP_ZONE_M && approach.toLine > -2) {
        approach.minSpeedNearLine = Math.min(approach.minSpeedNearLine, Math.abs(p.v));
      }
      if (prev.toLine > 0 && approach.toLine <= 0) {
        const node = approach.node;
        const nodeId = net.nodes[node].id;
        if (this.signals.hasLights(node)) {
          if (this.signals.stateFor(approach.de, t_s) === 'red') {
            out.push({ kind: 'red_light', node_id: nodeId, edge_id: net.edges[net.dirEdges[approach.de].edge].id });
          }
        } else if (net.nodes[node].control === 'stop' && net.junctions[node].degree >= 3) {
          if (approach.minSpeedNearLine > STOP_SPEED_MPS) {
            out.push({ kind: 'stop_sign', node_id: nodeId,
              min_speed_mps: Math.round(approach.minSpeedNearLine * 100) / 100 });
          }
        }
      }
    }
    // Inside the junction box the approach is kept, so the stop line is crossed only once.
    if (approach || !onRoad) this.approach = approach;
    else if (prev && loc) {
      const line = net.edgeLines[loc.edge];
      const [trim0, trim1] = net.edgeTrims[loc.edge];
      if (!(loc.s < trim0 || loc.s > line.length - trim1)) this.approach = null;
    }
    return out;
  }
}
