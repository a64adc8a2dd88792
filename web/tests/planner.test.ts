import { describe, expect, it } from 'vitest';
import { generateCity } from '../src/sim/cityGen';
import { COMMAND_APPROACH_M, RoadOption, RouteTracker, buildRoute, commandAt, planRandomRoute, shortestPath, turnCommand } from '../src/sim/planner';
import { RoadNetwork } from '../src/sim/roads';
import { Rng } from '../src/sim/rng';
import { gridCity } from './helpers';

function de(net: RoadNetwork, from: string, to: string): number {
  const i = net.dirEdges.findIndex((d) => net.nodes[d.from].id === from && net.nodes[d.to].id === to);
  if (i < 0) throw new Error(`no directed edge ${from}->${to}`);
  return i;
}

describe('planner', () => {
  const net = new RoadNetwork(gridCity());

  it('classifies turns at junctions as CARLA RoadOptions', () => {
    expect(turnCommand(net, de(net, 'n00', 'n10'), de(net, 'n10', 'n11'))).toBe(RoadOption.LEFT);
    expect(turnCommand(net, de(net, 'n00', 'n10'), de(net, 'n10', 'n20'))).toBe(RoadOption.STRAIGHT);
    expect(turnCommand(net, de(net, 'n01', 'n11'), de(net, 'n11', 'n10'))).toBe(RoadOption.RIGHT);
  });

  it('gives LEFT, STRAIGHT and RIGHT ahead of each junction of a route and LANEFOLLOW between them', () => {
    // East along y=0, left (north) at n10, straight through n11, right (east) at n12.
    const des = [de(net, 'n00', 'n10'), de(net, 'n10', 'n11'), de(net, 'n11', 'n12'), de(net, 'n12', 'n22')];
    const route = buildRoute(net, 'r-test', des, 10, 40);
    expect(route.junctions.map((j) => j.command)).toEqual([RoadOption.LEFT, RoadOption.STRAIGHT, RoadOption.RIGHT]);
    const [left, straight, right] = route.junctions;
    expect(commandAt(route, 0)).toBe(RoadOption.LANEFOLLOW);
    expect(commandAt(route, left.sEnter - COMMAND_APPROACH_M - 1)).toBe(RoadOption.LANEFOLLOW);
    expect(commandAt(route, left.sEnter - 10)).toBe(RoadOption.LEFT);
    expect(commandAt(route, (left.sEnter + left.sExit) / 2)).toBe(RoadOption.LEFT);
    expect(commandAt(route, left.sExit + 1)).toBe(RoadOption.LANEFOLLOW);
    expect(commandAt(route, straight.sEnter - 5)).toBe(RoadOption.STRAIGHT);
    expect(commandAt(route, right.sEnter - 5)).toBe(RoadOption.RIGHT);
    expect(commandAt(route, route.length - 1)).toBe(RoadOption.LANEFOLLOW);
    expect(commandAt(route, route.length, true)).toBe(RoadOption.VOID);
    // One continuous driving line: about the centre-line distance (90 + 100 + 100 + 40 m).
    expect(route.length).toBeGreaterThan(300);
    expect(route.length).toBeLessThan(330);
    expect(route.start[1]).toBeCloseTo(-1.65, 2); // in the right-hand lane
  });

  it('finds shortest paths and respects one-way streets', () => {
    const path = shortestPath(net, de(net, 'n00', 'n10'), de(net, 'n12', 'n22'))!;
    expect(path.length).toBe(4);
    // Make n10->n11 one-way southbound (n11->n10): the route north at x=100 must go around it.
    const city = gridCity();
    city.edges = city.edges.map((e) => (e.id === 'n10-n11'
      ? { ...e, id: 'n11-n10', from: 'n11', to: 'n10', points: [[100, 100], [100, 0]], oneway: 'forward', lanes_backward: 0 } : e));
    const net2 = new RoadNetwork(city);
    const p2 = shortestPath(net2, de(net2, 'n00', 'n10'), de(net2, 'n11', 'n12'))!;
    const nodes = p2.map((d) => net2.nodes[net2.dirEdges[d].to].id);
    expect(p2.some((d) => net2.nodes[net2.dirEdges[d].from].id === 'n10' && net2.nodes[net2.dirEdges[d].to].id === 'n11')).toBe(false);
    expect(nodes[nodes.length - 1]).toBe('n12');
  });

  it('never plans a U-turn and tracks progress monotonically', () => {
    const city = generateCity(3);
    const big = new RoadNetwork(city);
    const route = planRandomRoute(big, new Rng(5), 'r-5', 500, 900);
    expect(route.length).toBeGreaterThan(400);
    for (let i = 1; i < route.dirEdges.length; i++) {
      expect(big.dirEdges[route.dirEdges[i]].edge).not.toBe(big.dirEdges[route.dirEdges[i - 1]].edge);
    }
    const tracker = new RouteTracker(route);
    let last = 0;
    for (let s = 0; s <= route.length; s += 2) {
      const p = route.path.sample(s);
      tracker.update(p.x + 1, p.y);
      expect(tracker.progress).toBeGreaterThanOrEqual(last);
      last = tracker.progress;
    }
    expect(tracker.finished).toBe(true);
    expect(tracker.progress).toBe(1);
    expect(tracker.command).toBe(RoadOption.VOID);
  });
});
