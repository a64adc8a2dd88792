/**
 * Agent mode (`?agent=1`): the page drives no real-time loop and shows no screens. An evaluator calls
 * `window.__sdAgent.reset(...)` for a route and then `step(action, ticks, render)` once per agent step;
 * the simulation advances only inside `step`, by whole fixed 60 Hz steps, so a run depends on the seed
 * and the actions alone, never on the page clock. docs/evaluation.md ("Our city") has the API.
 */
import { GameView } from '../render/view';
import { Autopilot } from '../sim/autopilot';
import { cameraPose, type CameraMount } from '../sim/camera';
import type { City } from '../sim/city';
import { commandAt } from '../sim/planner';
import type { Controls } from '../sim/vehicle';
import { SIM_DT_S, World } from '../sim/world';
import { loadCity } from './cityLoader';

/** NPC cars this close to the agent's car are the "surrounding traffic" of the minimum-speed test. */
export const SURROUNDING_RADIUS_M = 60;
/** Spacing of the waypoints of a route's global plan, metres along the route. */
export const PLAN_SPACING_M = 2;
/** Most ticks one `step` may advance (10 s of simulation). */
export const MAX_TICKS_PER_STEP = 600;

export interface AgentResetOptions {
  seed: number;
  route_min_m?: number;
  route_max_m?: number;
  cars?: number;
  peds?: number;
}

/** A control for the agent's car, or the game's own autopilot driving through its input path. */
export type AgentAction = Controls | { autopilot: true };

export interface PlanPoint {
  x_m: number;
  y_m: number;
  /** CARLA RoadOption number at this point of the route. */
  command: number;
}

export interface RouteInfo {
  id: string;
  city: string;
  seed: number;
  length_m: number;
  start: [number, number];
  goal: [number, number];
  start_heading_deg: number;
  speed_limit_mps: number;
  junctions: { s_enter_m: number; s_exit_m: number; command: number }[];
  plan: PlanPoint[];
}

export interface AgentInfraction {
  t_s: number;
  kind: string;
  /** The car's position when the game logged it. */
  x_m: number;
  y_m: number;
  details: Record<string, string | number>;
}

export interface AgentState {
  steps: number;
  t_s: number;
  speed_mps: number;
  command: number;
  pose: { x_m: number; y_m: number; yaw_deg: number };
  /** Farthest point reached along the route (the game's RouteTracker), metres. */
  progress_m: number;
  route_length_m: number;
  finished: boolean;
  distance_off_route_m: number;
  /** False while the game counts the car off the road or against the traffic. */
  in_route_lanes: boolean;
  /** Speeds of the NPC cars within SURROUNDING_RADIUS_M. */
  traffic_speeds_mps: number[];
  /** The controls the car drove with on the last tick. */
  controls: Controls;
  /** Infractions the game's InfractionDetector logged during this step. */
  infractions: AgentInfraction[];
}

export class AgentModeError extends Error {}

function checkControls(a: unknown): Controls {
  const c = a as Record<string, unknown>;
  const out: Record<string, number> = {};
  for (const [name, lo] of [['steer', -1], ['throttle', 0], ['brake', 0]] as const) {
    const v = c?.[name];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > 1) {
      throw new AgentModeError(`action ${name}=${String(v)} is not a number in [${lo}, 1]`);
    }
    out[name] = v;
  }
  return out as unknown as Controls;
}

/** The simulation side of agent mode: pure, no DOM, so it runs the same in Vitest and the page. */
export class AgentSim {
  world: World | null = null;
  private autopilot: Autopilot | null = null;
  private reported = 0;

  constructor(readonly city: City) {}

  /** A new world for a route drawn from `seed`; returns the route and its global plan. */
  reset(opts: AgentResetOptions): RouteInfo {
    if (!Number.isInteger(opts?.seed) || opts.seed < 0) throw new AgentModeError(`reset needs a non-negative integer seed, got ${opts?.seed}`);
    const world = new World(this.city, {
      seed: opts.seed, cars: opts.cars ?? 40, pedestrians: opts.peds ?? 40,
      routeMin_m: opts.route_min_m ?? 500, routeMax_m: opts.route_max_m ?? 900,
    });
    this.world = world;
    this.autopilot = new Autopilot(world, (ev) => world.input({ ...ev, t_ms: world.sim_t_ms }));
    this.reported = 0;
    const r = world.route;
    const plan: PlanPoint[] = [];
    for (let s = 0; ; s = Math.min(r.length, s + PLAN_SPACING_M)) {
      const p = r.path.sample(s);
      plan.push({ x_m: p.x, y_m: p.y, command: commandAt(r, s) });
      if (s >= r.length) break;
    }
    return {
      id: r.id, city: this.city.name, seed: opts.seed, length_m: r.length,
      start: [r.start[0], r.start[1]], goal: [r.goal[0], r.goal[1]],
      start_heading_deg: (r.startHeading * 180) / Math.PI,
      speed_limit_mps: world.net.dirEdges[r.dirEdges[0]].speedLimit,
      junctions: r.junctions.map((j) => ({ s_enter_m: j.sEnter, s_exit_m: j.sExit, command: j.command })),
      plan,
    };
  }

  /** Advances `ticks` fixed steps under `action` and returns the state after them. */
  step(action: AgentAction, ticks: number): AgentState {
    const w = this.world;
    if (!w) throw new AgentModeError('step before reset: call reset({seed, ...}) first');
    if (!Number.isInteger(ticks) || ticks < 1 || ticks > MAX_TICKS_PER_STEP) {
      throw new AgentModeError(`ticks must be an integer in [1, ${MAX_TICKS_PER_STEP}], got ${ticks}`);
    }
    const auto = (action as { autopilot?: unknown })?.autopilot === true;
    w.directControls = auto ? null : checkControls(action);
    const found: AgentInfraction[] = [];
    for (let i = 0; i < ticks; i++) {
      if (auto) this.autopilot!.update(SIM_DT_S);
      w.step();
      w.drainInfractions();
      for (; this.reported < w.history.length; this.reported++) {
        const { t_s, infraction } = w.history[this.reported];
        const { kind, ...details } = infraction;
        found.push({ t_s, kind, x_m: w.player.x, y_m: w.player.y, details });
      }
    }
    return this.state(found);
  }

  /** The game's whole infraction log of this route (World.history), as the InfractionDetector wrote it. */
  history(): { t_s: number; kind: string; details: Record<string, string | number> }[] {
    return (this.world?.history ?? []).map(({ t_s, infraction: { kind, ...details } }) => ({ t_s, kind, details }));
  }

  private state(infractions: AgentInfraction[]): AgentState {
    const w = this.world!;
    const p = w.player;
    const r2 = SURROUNDING_RADIUS_M * SURROUNDING_RADIUS_M;
    const traffic = w.traffic.cars
      .filter((c) => (c.x - p.x) ** 2 + (c.y - p.y) ** 2 <= r2)
      .map((c) => Math.abs(c.v));
    return {
      steps: w.steps, t_s: w.t_s, speed_mps: w.speed_mps, command: w.tracker.command,
      pose: { x_m: p.x, y_m: p.y, yaw_deg: (p.yaw * 180) / Math.PI },
      progress_m: w.tracker.sMax, route_length_m: w.route.length, finished: w.tracker.finished,
      distance_off_route_m: w.tracker.offPath_m,
      in_route_lanes: !(w.detector.offRoadNow || w.detector.wrongWayNow),
      traffic_speeds_mps: traffic, controls: { ...w.controls }, infractions,
    };
  }
}

export interface AgentPageConfig {
  cityUrl: string | null;
  citySeed: number;
  width: number;
  height: number;
  mount: CameraMount;
}

/** What `window.__sdAgent` offers the evaluator. */
export interface AgentPageApi {
  ready: boolean;
  error: string | null;
  info: { city: string; width: number; height: number; mount: CameraMount } | null;
  reset(opts: AgentResetOptions): RouteInfo;
  /**
   * One agent step; with `render` the state carries the front camera's frame in base64 (`frame_b64`,
   * `frame_type`): a PNG (lossless, the default) or, with render 'jpeg', a JPEG at quality 0.95.
   */
  step(action: AgentAction, ticks: number, render?: boolean | 'png' | 'jpeg'): AgentState & { frame_b64?: string; frame_type?: string };
  /** The game's own infraction log of the current route. */
  history(): ReturnType<AgentSim['history']>;
}

declare global {
  interface Window {
    /** Agent mode's API (`?agent=1`), for the evaluator. */
    __sdAgent?: AgentPageApi;
  }
}

/** Loads the city and installs `window.__sdAgent`; the view is built on the first frame asked for. */
export async function startAgentMode(cfg: AgentPageConfig, canvas: HTMLCanvasElement): Promise<void> {
  const api: AgentPageApi = {
    ready: false, error: null, info: null,
    reset: () => { throw new AgentModeError('the city is still loading'); },
    step: () => { throw new AgentModeError('the city is still loading'); },
    history: () => [],
  };
  window.__sdAgent = api;
  try {
    const { city } = await loadCity(cfg.cityUrl, cfg.citySeed);
    const sim = new AgentSim(city);
    let view: GameView | null = null;
    let viewWorld: World | null = null;
    api.reset = (opts) => sim.reset(opts);
    api.history = () => sim.history();
    api.step = (action, ticks, render = false) => {
      const state = sim.step(action, ticks);
      if (!render) return state;
      const w = sim.world!;
      if (!view) view = new GameView(canvas, cfg.width, cfg.height, city, w, cfg.mount);
      else if (viewWorld !== w) view.setWorld(city, w);
      viewWorld = w;
      view.render(w, 'driver', cameraPose(w.player.x, w.player.y, w.player.yaw, cfg.mount));
      // Read right after drawing, in the same task, while the drawing buffer still holds the frame.
      const type = render === 'jpeg' ? 'image/jpeg' : 'image/png';
      const url = canvas.toDataURL(type, 0.95);
      return { ...state, frame_b64: url.slice(url.indexOf(',') + 1), frame_type: type };
    };
    api.info = { city: city.name, width: cfg.width, height: cfg.height, mount: cfg.mount };
    api.ready = true;
  } catch (e) {
    api.error = e instanceof Error ? e.message : String(e);
  }
}
