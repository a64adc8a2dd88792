/**
 * Agent mode's simulation side: a route and its global plan from a seed, stepping only when asked,
 * the same states for the same seed and actions, the direct-control path that bypasses the input
 * mapper, the autopilot path through the inputs, and the game's own infractions reported per step.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AgentModeError, AgentSim, SURROUNDING_RADIUS_M, type AgentAction, type AgentState } from '../src/game/agentMode';
import { parseCity, type City } from '../src/sim/city';
import { RoadOption } from '../src/sim/planner';
import { gridCity } from './helpers';

const eastVillage: City = parseCity(JSON.parse(readFileSync(new URL('../public/cities/east-village.json', import.meta.url), 'utf8')));
const OPTS = { seed: 5, route_min_m: 150, route_max_m: 300, cars: 12, peds: 12 };

function drive(sim: AgentSim, actions: (i: number) => AgentAction, steps: number): AgentState[] {
  const out: AgentState[] = [];
  for (let i = 0; i < steps; i++) out.push(sim.step(actions(i), 3));
  return out;
}

describe('agent mode', () => {
  it('draws a route with a global plan whose commands follow the junctions', () => {
    const sim = new AgentSim(eastVillage);
    const route = sim.reset(OPTS);
    expect(route.length_m).toBeGreaterThan(100);
    expect(route.plan.length).toBeGreaterThan(route.length_m / 2 - 1);
    const first = route.plan[0];
    expect(Math.hypot(first.x_m - route.start[0], first.y_m - route.start[1])).toBeLessThan(0.01);
    const last = route.plan[route.plan.length - 1];
    expect(Math.hypot(last.x_m - route.goal[0], last.y_m - route.goal[1])).toBeLessThan(0.01);
    const turns = route.junctions.filter((j) => j.command === RoadOption.LEFT || j.command === RoadOption.RIGHT);
    expect(turns.length).toBeGreaterThan(0);
    // Each turn's command is in the plan, and the plan has nothing but LANEFOLLOW and the junctions'.
    const commands = new Set(route.plan.map((p) => p.command));
    for (const j of turns) expect(commands).toContain(j.command);
    for (const c of commands) expect([RoadOption.LANEFOLLOW, ...route.junctions.map((j) => j.command)]).toContain(c);
    expect(route.speed_limit_mps).toBeGreaterThan(5);
    expect(sim.reset(OPTS)).toEqual(route);
    expect(sim.reset({ ...OPTS, seed: 6 }).plan).not.toEqual(route.plan);
  });

  it('gives the same states for the same seed and actions, and steps only when asked', () => {
    const actions = (i: number): AgentAction => ({ steer: Math.sin(i / 7) * 0.3, throttle: 0.6, brake: i % 50 > 45 ? 0.5 : 0 });
    const a = new AgentSim(eastVillage);
    a.reset(OPTS);
    const sa = drive(a, actions, 120);
    const b = new AgentSim(eastVillage);
    b.reset(OPTS);
    const sb = drive(b, actions, 120);
    expect(sb).toEqual(sa);
    expect(sa[119].steps).toBe(360);
    expect(sa[119].t_s).toBeCloseTo(6, 9);
    // A different action sequence gives a different drive.
    const c = new AgentSim(eastVillage);
    c.reset(OPTS);
    const sc = drive(c, (i) => ({ ...actions(i), throttle: 0.3 }), 120);
    expect(sc[119].pose).not.toEqual(sa[119].pose);
    // Nothing moves between steps: the world is exactly as the last step left it.
    const pose = { ...a.world!.player };
    expect(a.world!.steps).toBe(360);
    expect(a.world!.player).toEqual(pose);
  });

  it('drives the car with the given controls, bypassing the input mapper', () => {
    const sim = new AgentSim(eastVillage);
    sim.reset(OPTS);
    const w = sim.world!;
    // An input event would steer hard left and brake through the mapper; the direct control wins.
    w.input({ t_ms: 0, device: 'keyboard', kind: 'keydown', code: 'KeyA', value: 1 });
    w.input({ t_ms: 0, device: 'keyboard', kind: 'keydown', code: 'Space', value: 1 });
    const s1 = sim.step({ steer: 0.25, throttle: 0.8, brake: 0 }, 1);
    expect(s1.controls).toEqual({ steer: 0.25, throttle: 0.8, brake: 0 });
    const states = drive(sim, () => ({ steer: 0, throttle: 1, brake: 0 }), 40);
    expect(states[39].speed_mps).toBeGreaterThan(5);
    expect(states[39].controls).toEqual({ steer: 0, throttle: 1, brake: 0 });
    // Braking brings the car to a standstill.
    const braking = drive(sim, () => ({ steer: 0, throttle: 0, brake: 1 }), 40);
    expect(braking[39].speed_mps).toBe(0);
  });

  it('refuses bad actions and tick counts by name, changing nothing', () => {
    const sim = new AgentSim(eastVillage);
    expect(() => sim.step({ steer: 0, throttle: 0, brake: 0 }, 3)).toThrow(/step before reset/);
    sim.reset(OPTS);
    const before = JSON.stringify(sim.world!.player);
    expect(() => sim.step({ steer: 2, throttle: 0, brake: 0 }, 3)).toThrow(AgentModeError);
    expect(() => sim.step({ steer: 0, throttle: Number.NaN, brake: 0 }, 3)).toThrow(/throttle=NaN/);
    expect(() => sim.step({ steer: 0, throttle: 0.5 } as AgentAction, 3)).toThrow(/brake=undefined/);
    expect(() => sim.step({ steer: 0, throttle: 0, brake: 0 }, 0)).toThrow(/ticks/);
    expect(() => sim.step({ steer: 0, throttle: 0, brake: 0 }, 1.5)).toThrow(/ticks/);
    expect(sim.world!.steps).toBe(0);
    expect(JSON.stringify(sim.world!.player)).toBe(before);
    expect(() => sim.reset({ seed: -1 })).toThrow(/seed/);
  });

  it('lets the autopilot drive through its input path to the end of the route', () => {
    const sim = new AgentSim(eastVillage);
    const route = sim.reset({ ...OPTS, cars: 0, peds: 0 });
    let s: AgentState | null = null;
    for (let i = 0; i < 2000 && !s?.finished; i++) s = sim.step({ autopilot: true }, 3);
    expect(s!.finished).toBe(true);
    expect(s!.progress_m).toBeCloseTo(route.length_m, 6);
    // The autopilot's controls came through the mapper (gamepad events), not the direct path.
    expect(sim.world!.directControls).toBeNull();
    expect(sim.world!.mapper.gamepadState().length).toBeGreaterThan(0);
    expect(sim.world!.history).toEqual([]);
  });

  it('reports the game\'s own infractions, where they happened, and the lanes and traffic around', () => {
    // Straight ahead at full throttle on the test grid: off the road, into the block's wall.
    const sim = new AgentSim(gridCity());
    sim.reset({ seed: 3, route_min_m: 100, route_max_m: 300, cars: 6, peds: 0 });
    const all: AgentState[] = [];
    for (let i = 0; i < 400; i++) all.push(sim.step({ steer: 0.6, throttle: 1, brake: 0 }, 3));
    const reported = all.flatMap((s) => s.infractions);
    const history = sim.world!.history;
    expect(reported.map((r) => [r.t_s, r.kind])).toEqual(history.map((h) => [h.t_s, h.infraction.kind]));
    expect(sim.history().map((h) => [h.t_s, h.kind, h.details])).toEqual(reported.map((r) => [r.t_s, r.kind, r.details]));
    expect(reported.length).toBeGreaterThan(0);
    expect(reported.map((r) => r.kind)).toContain('off_road');
    expect(all.some((s) => !s.in_route_lanes)).toBe(true);
    for (const s of all) {
      for (const v of s.traffic_speeds_mps) expect(v).toBeGreaterThanOrEqual(0);
      const near = sim.world!.traffic.cars.length;
      expect(s.traffic_speeds_mps.length).toBeLessThanOrEqual(near);
    }
    expect(SURROUNDING_RADIUS_M).toBe(60);
  });
});
