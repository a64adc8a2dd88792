import { describe, expect, it } from 'vitest';
import { Autopilot } from '../src/sim/autopilot';
import { generateCity } from '../src/sim/cityGen';
import { obbOverlap } from '../src/sim/geometry';
import { World } from '../src/sim/world';

describe('traffic and the scripted driver', () => {
  it('NPC cars stop at red lights and follow each other; pedestrians cross on the walk signal', () => {
    const w = new World(generateCity(1), { seed: 9, cars: 60, pedestrians: 30 });
    let redRuns = 0;
    let overlaps = 0;
    const moved = new Set<string>();
    const before = new Map(w.traffic.cars.map((c) => [c.id, [c.x, c.y]]));
    let crossings = 0;
    let jaywalks = 0;
    for (let i = 0; i < 60 * 90; i++) {
      const prev = w.traffic.cars.map((c) => ({ conn: c.conn, de: c.de }));
      const walking = w.traffic.peds.map((p) => p.walking);
      w.step();
      w.traffic.peds.forEach((p, k) => {
        if (walking[k] || !p.walking) return;
        const cw = w.traffic.crosswalks[p.crosswalk];
        crossings++;
        if (!w.signals.walkAcross(cw.node, cw.streetHeading, w.t_s)) jaywalks++;
      });
      w.traffic.cars.forEach((c, k) => {
        // Entering a junction (starting a connector) while facing red is running it.
        if (!prev[k].conn && c.conn && w.signals.stateFor(prev[k].de, w.t_s) === 'red') redRuns++;
      });
      if (i % 30 === 0) {
        const cars = w.traffic.cars;
        for (let a = 0; a < cars.length; a++) {
          for (let b = a + 1; b < cars.length; b++) {
            if (cars[a].conn || cars[b].conn) continue; // crossing paths inside junctions is not modelled
            if (obbOverlap(cars[a], cars[b])) overlaps++;
          }
        }
      }
    }
    for (const c of w.traffic.cars) {
      const [x, y] = before.get(c.id)!;
      if (Math.hypot(c.x - x, c.y - y) > 50) moved.add(c.id);
    }
    expect(redRuns).toBe(0);
    expect(overlaps).toBe(0);
    expect(moved.size).toBeGreaterThan(w.traffic.cars.length * 0.7);
    // Pedestrians set off only on the walk signal (the street they cross has red, the other green).
    expect(crossings).toBeGreaterThan(10);
    expect(jaywalks).toBe(0);
  });

  it('drives its route through traffic without infractions, as gamepad events', () => {
    for (const seed of [1, 7, 42]) {
      const w = new World(generateCity(1), { seed });
      const kinds = new Set<string>();
      let events = 0;
      const pilot = new Autopilot(w, (ev) => {
        kinds.add(`${ev.device}:${ev.kind}:${ev.code}`);
        events++;
        w.input({ ...ev, t_ms: w.sim_t_ms });
      });
      for (let i = 0; i < 60 * 60; i++) {
        pilot.update(1 / 60);
        w.step();
      }
      expect(w.history.map((h) => h.infraction.kind)).toEqual([]);
      expect(w.tracker.progress * w.route.length).toBeGreaterThan(200);
      expect([...kinds].sort()).toEqual(['gamepad:axis:axis0', 'gamepad:button:button6', 'gamepad:button:button7']);
      expect(events).toBeGreaterThan(50);
    }
  });

  it('is deterministic: the same seed and events give the same world, bit for bit', () => {
    const run = () => {
      const w = new World(generateCity(1), { seed: 3 });
      const pilot = new Autopilot(w, (ev) => w.input({ ...ev, t_ms: w.sim_t_ms }));
      for (let i = 0; i < 60 * 20; i++) {
        pilot.update(1 / 60);
        w.step();
      }
      return JSON.stringify([w.player, w.traffic.cars.map((c) => [c.x, c.y, c.v]), w.traffic.peds.map((p) => [p.x, p.y])]);
    };
    expect(run()).toBe(run());
  });
});
