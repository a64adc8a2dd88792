/**
 * A scripted test driver. It looks at the world like a player would and answers with gamepad
 * events (left stick X, right and left triggers) that go through the same input path as a real
 * gamepad and are logged the same way. It is a deterministic driver for tests, not a replacement
 * for the player: its inputs are the recorded inputs.
 */
import { clamp } from './geometry';
import type { InputEvent } from './input';
import { steerLimit } from './vehicle';
import type { World } from './world';

export type EmitInput = (ev: Omit<InputEvent, 't_ms'>) => void;

const CRUISE_MPS = 9.5;
const LATERAL_COMFORT_MPS2 = 2.2;
const COMFORT_DECEL_MPS2 = 2.8;
const STOP_SIGN_WAIT_S = 1.3;

export class Autopilot {
  private sent = new Map<string, number>();
  private stopServed = new Set<number>();
  private stoppedFor = 0;

  constructor(private readonly world: World, private readonly emit: EmitInput) {}

  private send(kind: 'axis' | 'button', code: string, value: number, resolution: number): void {
    const q = Math.round(value / resolution) * resolution;
    const v = Math.round(clamp(q, -1, 1) * 1000) / 1000;
    if (this.sent.get(code) === v) return;
    this.sent.set(code, v);
    this.emit({ device: 'gamepad', kind, code, value: v });
  }

  /** Looks at the world once and emits any changed inputs; call before each step. */
  update(dt: number): void {
    const w = this.world;
    const car = w.player;
    const route = w.route;
    const tr = w.tracker;
    const v = Math.max(0, car.v);

    // Steering: pure pursuit on the route's driving line.
    const look = clamp(3.5 + 0.7 * v, 5, 18);
    const target = route.path.sample(Math.min(route.length, tr.sCurrent + look));
    const dx = target.x - car.x;
    const dy = target.y - car.y;
    const alpha = Math.atan2(dy, dx) - car.yaw;
    const ld = Math.max(1, Math.hypot(dx, dy));
    const curvature = (2 * Math.sin(alpha)) / ld;
    const wheel = Math.atan(curvature * w.params.wheelbase_m);
    const steer = clamp(-wheel / steerLimit(w.params, v), -1, 1);

    // Speed: cruise, slow for curves, stop for lights, stop signs and whatever is ahead.
    let vTarget = CRUISE_MPS;
    for (let d = 0; d <= 35; d += 3) {
      const a = route.path.sample(tr.sCurrent + d);
      const b = route.path.sample(tr.sCurrent + d + 3);
      let dh = Math.abs(b.heading - a.heading);
      if (dh > Math.PI) dh = 2 * Math.PI - dh;
      const k = dh / 3;
      if (k > 1e-3) {
        const vCurve = Math.sqrt(LATERAL_COMFORT_MPS2 / k);
        vTarget = Math.min(vTarget, Math.sqrt(vCurve * vCurve + 2 * COMFORT_DECEL_MPS2 * d));
      }
    }
    let gap = Infinity;
    const half = w.params.length_m / 2;
    for (const j of route.junctions) {
      if (j.sEnter + 0.5 < tr.sCurrent) continue;
      const toLine = j.sEnter - tr.sCurrent - half;
      if (toLine > 60) break;
      const node = j.node;
      if (w.signals.hasLights(node)) {
        const st = w.signals.stateFor(j.inDe, w.t_s);
        if (st === 'red' || (st === 'yellow' && toLine > (v * v) / (2 * 3.5))) gap = Math.min(gap, toLine + 0.5);
      } else if (w.net.nodes[node].control === 'stop' && w.net.junctions[node].degree >= 3 && !this.stopServed.has(node)) {
        if (toLine < 3 && v < 0.2) {
          this.stoppedFor += dt;
          if (this.stoppedFor > STOP_SIGN_WAIT_S) {
            this.stopServed.add(node);
            this.stoppedFor = 0;
          }
        }
        if (!this.stopServed.has(node)) gap = Math.min(gap, toLine + 0.5);
      }
      break;
    }
    const c = Math.cos(car.yaw);
    const s = Math.sin(car.yaw);
    let vLead = 0;
    const bodies = [...w.traffic.cars, ...w.traffic.peds.filter((p) => p.away_s === 0)];
    for (const o of bodies) {
      const ox = o.x - car.x;
      const oy = o.y - car.y;
      const fwd = ox * c + oy * s;
      if (fwd <= 0 || fwd > 40) continue;
      const lat = -ox * s + oy * c;
      if (Math.abs(lat) > w.params.width_m / 2 + o.halfWidth + 0.5 + fwd * 0.05) continue;
      const g = fwd - half - o.halfLength;
      if (g < gap) {
        gap = g;
        vLead = Math.max(0, o.v * Math.cos(o.yaw - car.yaw));
      }
    }
    // The same along the route's path, which bends through a turn where the straight corridor above
    // looks past the crosswalk being turned into; pedestrians count from a little beside the path,
    // since they walk into it.
    const sFrom = tr.sCurrent;
    const sTo = Math.min(route.length, tr.sCurrent + 30);
    for (const o of bodies) {
      if (Math.abs(o.x - car.x) > 35 || Math.abs(o.y - car.y) > 35) continue;
      const hit = route.path.project(o.x, o.y, sFrom, sTo);
      const isPed = o.halfLength < 1;
      const reach = w.params.width_m / 2 + o.halfWidth + (isPed ? 1.6 : 0.4);
      if (hit.d2 > reach * reach || hit.s <= sFrom + 0.1) continue;
      const g = hit.s - sFrom - half - o.halfLength;
      if (g < gap) {
        gap = Math.max(0, g);
        vLead = isPed ? 0 : Math.max(0, o.v * Math.cos(o.yaw - route.path.sample(hit.s).heading));
      }
    }
    if (tr.finished) {
      vTarget = 0;
    }
    // Intelligent Driver Model for the wanted acceleration.
    const free = 1 - Math.pow(v / Math.max(0.1, vTarget), 4);
    let accel = 1.8 * (vTarget <= 0 ? -1 : free);
    if (Number.isFinite(gap)) {
      const sStar = 2.5 + Math.max(0, v * 1.2 + (v * (v - vLead)) / (2 * Math.sqrt(1.8 * 3)));
      accel = 1.8 * (free - Math.pow(sStar / Math.max(0.1, gap), 2));
    }
    let throttle = 0;
    let brake = 0;
    if (accel > 0.05) throttle = clamp((accel + 0.3) / Math.min(4, 75 / Math.max(v, 1)), 0, 1);
    else if (accel < -0.3 || v < 0.3) brake = clamp(-accel / 8.5, v < 0.3 ? 0.3 : 0, 1);

    this.send('axis', 'axis0', steer, 0.01);
    this.send('button', 'button7', throttle, 0.05);
    this.send('button', 'button6', brake, 0.05);
  }
}
