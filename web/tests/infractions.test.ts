import { describe, expect, it } from 'vitest';
import { InfractionDetector, type Contact, type Infraction } from '../src/sim/infractions';
import { buildRoute } from '../src/sim/planner';
import { RoadNetwork } from '../src/sim/roads';
import { GOAL_BONUS, driveScore } from '../src/sim/score';
import { CYCLE_S, Signals } from '../src/sim/signals';
import { SIM_DT_S, World } from '../src/sim/world';
import { gridCity } from './helpers';

const city = gridCity({ controls: { n11: 'signal', n10: 'stop' } });
const net = new RoadNetwork(city);
const signals = new Signals(net, 1);

function de(from: string, to: string): number {
  return net.dirEdges.findIndex((d) => net.nodes[d.from].id === from && net.nodes[d.to].id === to);
}

/** Drives a straight line from (x0,y0) to (x1,y1) at speed v starting at time t0; returns what was reported. */
function drive(det: InfractionDetector, from: [number, number], to: [number, number], v: number, t0: number,
  opts: { stopAt?: number; contacts?: (i: number) => Contact[] } = {}): Infraction[] {
  const out: Infraction[] = [];
  const len = Math.hypot(to[0] - from[0], to[1] - from[1]);
  const yaw = Math.atan2(to[1] - from[1], to[0] - from[0]);
  let s = 0;
  let t = t0;
  let waited = 0;
  for (let i = 0; s < len; i++) {
    let speed = v;
    if (opts.stopAt !== undefined && s >= opts.stopAt && waited < 2) {
      speed = 0;
      waited += SIM_DT_S;
    }
    s += speed * SIM_DT_S;
    t += SIM_DT_S;
    const x = from[0] + Math.cos(yaw) * s;
    const y = from[1] + Math.sin(yaw) * s;
    out.push(...det.update(t, SIM_DT_S, { x, y, yaw, v: speed, halfLength: 2.45 }, opts.contacts?.(i) ?? []));
  }
  return out;
}

function timeWhen(deIndex: number, state: 'red' | 'green', dur: number): number {
  for (let t = 0; t < 2 * CYCLE_S; t += 0.1) {
    let ok = true;
    for (let u = 0; u <= dur; u += 0.1) if (signals.stateFor(deIndex, t + u) !== state) ok = false;
    if (ok) return t;
  }
  throw new Error('no such phase');
}

describe('infractions', () => {
  // Northbound on x = 100 (right lane at x = 101.65) through the signalled junction n11 at y = 100.
  const north = de('n10', 'n11');

  it('reports running a red light once, and nothing on green', () => {
    const red = drive(new InfractionDetector(net, signals), [101.65, 60], [101.65, 125], 10, timeWhen(north, 'red', 7));
    expect(red.map((i) => i.kind)).toEqual(['red_light']);
    expect(red[0].node_id).toBe('n11');
    const green = drive(new InfractionDetector(net, signals), [101.65, 60], [101.65, 125], 10, timeWhen(north, 'green', 7));
    expect(green).toEqual([]);
  });

  it('reports a rolling stop at a stop sign, and nothing after a full stop', () => {
    // Eastbound on y = 0 (right lane at y = -1.65) into the stop-controlled n10.
    const rolling = drive(new InfractionDetector(net, signals), [40, -1.65], [125, -1.65], 8, 0);
    expect(rolling.map((i) => i.kind)).toEqual(['stop_sign']);
    const stopLineS = 100 - net.dirEdges[de('n00', 'n10')].endTrim - 2.45 - 40; // front bumper at the line
    const stopped = drive(new InfractionDetector(net, signals), [40, -1.65], [125, -1.65], 8, 0, { stopAt: stopLineS - 1 });
    expect(stopped).toEqual([]);
  });

  it('reports leaving the road once until back on it', () => {
    const det = new InfractionDetector(net, signals);
    const found = [
      ...drive(det, [50, 1.65], [50, 30], 3, 0), // onto the block's sidewalk
      ...drive(det, [50, 30], [50, 35], 3, 20), // still off the road: no repeat
    ];
    expect(found.map((i) => i.kind)).toEqual(['off_road']);
  });

  it('reports driving against a one-way street and in the oncoming lanes', () => {
    const oneWay = gridCity({ oneway: { 'n00-n10': 'forward' } });
    const net1 = new RoadNetwork(oneWay);
    const againstOneWay = drive(new InfractionDetector(net1, new Signals(net1, 1)), [80, 0], [30, 0], 8, 0);
    expect(againstOneWay.map((i) => i.kind)).toEqual(['wrong_way']);
    // Eastbound in the westbound lane (left of the centre line) of a two-way street.
    const oncoming = drive(new InfractionDetector(net, signals), [20, 1.65], [80, 1.65], 8, 0);
    expect(oncoming.map((i) => i.kind)).toEqual(['wrong_way']);
    const correct = drive(new InfractionDetector(net, signals), [20, -1.65], [80, -1.65], 8, 0);
    expect(correct).toEqual([]);
  });

  it('reports each collision once at contact onset', () => {
    const det = new InfractionDetector(net, signals);
    const touching = (i: number): Contact[] => (i >= 10 && i < 40 ? [{ kind: 'vehicle', other_id: 'car-3', speed_mps: 4 }] : []);
    const found = drive(det, [20, -1.65], [60, -1.65], 8, 0, { contacts: touching });
    expect(found).toEqual([{ kind: 'collision_vehicle', other_id: 'car-3', speed_mps: 4 }]);
  });

  it('detects collisions with buildings, cars and pedestrians in the world', () => {
    // A route east along y = 0 from x = 10; the world is empty but for what each case places.
    const route = buildRoute(net, 'r-c', [de('n00', 'n10'), de('n10', 'n20')], 5, 50);
    const full = (w: World) => {
      w.input({ t_ms: 0, device: 'gamepad', kind: 'button', code: 'button7', value: 1 });
      const kinds: string[] = [];
      for (let i = 0; i < 60 * 8; i++) {
        w.step();
        kinds.push(...w.drainInfractions().map((x) => x.kind));
      }
      return kinds;
    };
    // Static: turn hard left into the block's building.
    const ws = new World(city, { seed: 1, cars: 0, pedestrians: 0, route });
    ws.input({ t_ms: 0, device: 'gamepad', kind: 'axis', code: 'axis0', value: -1 });
    const statics = full(ws);
    expect(statics.filter((k) => k === 'collision_static')).toHaveLength(1);
    expect(ws.player.v).toBe(0);
    // A car standing in the lane ahead.
    const wv = new World(city, { seed: 1, cars: 1, pedestrians: 0, route });
    const car = wv.traffic.cars[0];
    Object.assign(car, { de: route.dirEdges[0], lane: route.lanes[0], s: 40, conn: null, v: 0, desiredSpeed: 0 });
    expect(full(wv).filter((k) => k === 'collision_vehicle')).toHaveLength(1);
    // A pedestrian standing in the middle of the crosswalk ahead.
    const wp = new World(city, { seed: 1, cars: 0, pedestrians: 1, route });
    const cw = wp.traffic.crosswalks.findIndex((c) => c.node === net.nodeIndex.get('n10') && c.edge === net.dirEdges[route.dirEdges[0]].edge);
    Object.assign(wp.traffic.peds[0], { crosswalk: cw, t: 0.55, walking: false, wait_s: 1e9 });
    expect(full(wp).filter((k) => k === 'collision_pedestrian')).toHaveLength(1);
  });
});

describe('score', () => {
  it('counts metres of route, a goal bonus, and penalties per infraction', () => {
    expect(driveScore(400.4, [], false)).toBe(400);
    expect(driveScore(800, [], true)).toBe(800 + GOAL_BONUS);
    expect(driveScore(300, [{ kind: 'red_light' }, { kind: 'collision_pedestrian' }], false)).toBe(300 - 75 - 200);
  });
});
