/**
 * The default city: the real East Village (OpenStreetMap streets over NYC Building Footprints,
 * web/public/cities/east-village.json, made by `sdctl city import`). Its network is irregular —
 * streets that bend, T junctions, a loop, dead ends at the edge of the box — and the simulation must
 * work on it as on the generated grid: lights, stop signs, A* routes with RoadOption commands,
 * traffic and the scripted driver.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Autopilot } from '../src/sim/autopilot';
import { parseCity, type City } from '../src/sim/city';
import { RoadOption, planRandomRoute } from '../src/sim/planner';
import { RoadNetwork } from '../src/sim/roads';
import { Rng } from '../src/sim/rng';
import { Signals } from '../src/sim/signals';
import { World } from '../src/sim/world';

const city: City = parseCity(JSON.parse(readFileSync(new URL('../public/cities/east-village.json', import.meta.url), 'utf8')));

describe('the East Village city', () => {
  it('is the real street network, credited to OpenStreetMap', () => {
    const names = new Set(city.edges.map((e) => e.name));
    for (const n of ['Saint Marks Place', '1st Avenue', 'Avenue A', 'Avenue B', 'Avenue C', 'Avenue D', '7th Street', '10th Street', '14th Street']) {
      expect(names, n).toContain(n);
    }
    expect(city.source.attribution).toContain('© OpenStreetMap contributors');
    expect(city.buildings.length).toBe(176);
    const net = new RoadNetwork(city);
    const degrees = new Set(net.junctions.map((j) => j.degree));
    expect([...degrees].sort()).toEqual([1, 2, 3, 4]); // dead ends, bends, T junctions, crossings
    expect(city.edges.some((e) => e.points.length > 2)).toBe(true);
    const controls = city.nodes.map((n) => n.control);
    expect(controls.filter((c) => c === 'signal').length).toBeGreaterThan(20);
    expect(controls).toContain('stop');
  });

  it('has lights in two phase groups at every signalled junction, T junctions included', () => {
    const net = new RoadNetwork(city);
    const signals = new Signals(net, 1);
    let signalled = 0;
    net.junctions.forEach((j, n) => {
      if (net.nodes[n].control !== 'signal' || j.degree < 3) return;
      signalled++;
      const groups = new Set(j.incoming.map((d) => signals.group[d]));
      expect(groups.has(-1), `node ${net.nodes[n].id}`).toBe(false);
      // Within a group the approaches run along one axis; the other group crosses it.
      if (j.degree === 4) expect(groups.size, `node ${net.nodes[n].id}`).toBe(2);
      for (let t = 0; t < 90; t += 0.5) {
        const green = [0, 1].filter((g) => signals.groupState(n, g, t) !== 'red');
        expect(green.length).toBeLessThanOrEqual(1);
      }
    });
    expect(signalled).toBeGreaterThan(20);
  });

  it('plans A* routes with turns and CARLA commands on many seeds', () => {
    const net = new RoadNetwork(city);
    const commands = new Set<number>();
    for (let seed = 1; seed <= 20; seed++) {
      const route = planRandomRoute(net, new Rng(seed), `r${seed}`);
      expect(route.length).toBeGreaterThan(300);
      for (const [a, b] of route.dirEdges.slice(0, -1).map((d, i) => [d, route.dirEdges[i + 1]])) {
        expect(net.dirEdges[a].to).toBe(net.dirEdges[b].from); // consecutive, connected
        expect(net.dirEdges[a].edge).not.toBe(net.dirEdges[b].edge); // no U-turn
      }
      for (const j of route.junctions) commands.add(j.command);
      expect(route.path.points.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y))).toBe(true);
    }
    expect(commands).toContain(RoadOption.LEFT);
    expect(commands).toContain(RoadOption.RIGHT);
    expect(commands).toContain(RoadOption.STRAIGHT);
  });

  it('the scripted driver drives its route through traffic without infractions', () => {
    // 13, 16, 23 and 28 turn through crosswalks in use (the driver must see along its bending path).
    for (const seed of [1, 7, 13, 16, 23, 28, 42]) {
      const w = new World(city, { seed });
      const pilot = new Autopilot(w, (ev) => w.input({ ...ev, t_ms: w.sim_t_ms }));
      const start = w.traffic.cars.map((c) => [c.x, c.y]);
      for (let i = 0; i < 60 * 60; i++) {
        pilot.update(1 / 60);
        w.step();
      }
      expect(w.history.map((h) => `${h.t_s.toFixed(1)} ${h.infraction.kind}`), `seed ${seed}`).toEqual([]);
      // Lights every 80 m along the avenues: a minute holds up to two red phases and a turn that
      // waits for pedestrians, so less ground is covered than on the generated grid.
      expect(w.tracker.progress * w.route.length, `seed ${seed}`).toBeGreaterThan(150);
      const moved = w.traffic.cars.filter((c, i) => Math.hypot(c.x - start[i][0], c.y - start[i][1]) > 20).length;
      expect(moved, `seed ${seed}`).toBeGreaterThan(w.traffic.cars.length * 0.5);
      expect(w.traffic.cars.every((c) => Number.isFinite(c.x) && Number.isFinite(c.y))).toBe(true);
    }
  }, 180_000); // seven simulated minutes; a generous limit for a loaded machine, not a speed check
});
