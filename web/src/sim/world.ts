/**
 * The whole simulation at a fixed timestep: the player's car driven by input events, traffic,
 * lights, the route and infractions. Deterministic given the city, the seed and the events applied
 * at each step; it reads no clock and touches no DOM.
 */
import type { City, CityBuilding } from './city';
import { SpatialGrid, obbCircleOverlap, obbOverlap, obbPolygonOverlap, type Obb, type Vec2 } from './geometry';
import { ControlMapper, type InputEvent } from './input';
import { InfractionDetector, type Contact, type Infraction } from './infractions';
import { RouteTracker, planRandomRoute, type Route } from './planner';
import { RoadNetwork } from './roads';
import { Rng } from './rng';
import { Signals } from './signals';
import { Traffic } from './traffic';
import { SEDAN, makeVehicle, stepVehicle, type Controls, type VehicleParams, type VehicleState } from './vehicle';

/** Simulation step: 60 Hz. */
export const SIM_DT_S = 1 / 60;

export interface WorldOptions {
  seed: number;
  cars?: number;
  pedestrians?: number;
  routeMin_m?: number;
  routeMax_m?: number;
  /** Plan this route instead of a random one. */
  route?: Route;
  vehicle?: VehicleParams;
}

export class World {
  readonly net: RoadNetwork;
  readonly signals: Signals;
  readonly route: Route;
  readonly tracker: RouteTracker;
  readonly traffic: Traffic;
  readonly player: VehicleState;
  readonly params: VehicleParams;
  readonly mapper = new ControlMapper();
  readonly detector: InfractionDetector;
  readonly buildings: CityBuilding[];
  private readonly buildingGrid = new SpatialGrid(50);
  private readonly query: number[] = [];
  /** Steps taken; sim time is steps * SIM_DT_S. */
  steps = 0;
  controls: Controls = { steer: 0, throttle: 0, brake: 0 };
  /** Controls set directly (an evaluated agent), bypassing the input mapper; null drives from the inputs. */
  directControls: Controls | null = null;
  /** Infractions since the last drain (the recorder attaches them to the next frame). */
  private pending: Infraction[] = [];
  /** Every infraction so far, with its sim time. */
  readonly history: { t_s: number; infraction: Infraction }[] = [];
  /** Touching something this step (for the HUD and sound). */
  contactNow = false;

  constructor(readonly city: City, opts: WorldOptions) {
    const rng = new Rng(opts.seed);
    this.net = new RoadNetwork(city);
    this.signals = new Signals(this.net, opts.seed);
    this.route = opts.route ?? planRandomRoute(this.net, rng.fork(11), `r-${opts.seed}-0`,
      opts.routeMin_m ?? 500, opts.routeMax_m ?? 900);
    this.tracker = new RouteTracker(this.route);
    this.params = opts.vehicle ?? SEDAN;
    this.player = makeVehicle(this.route.start[0], this.route.start[1], this.route.startHeading);
    this.traffic = new Traffic(this.net, this.signals, rng.fork(12), {
      cars: opts.cars ?? 40, pedestrians: opts.pedestrians ?? 40, avoid: this.route.start,
    });
    this.detector = new InfractionDetector(this.net, this.signals);
    this.buildings = city.buildings;
    city.buildings.forEach((b, i) => {
      if (b.kind === 'other') return; // drawn, never solid (city format v1 §6)
      let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
      for (const [x, y] of b.footprint) {
        minX = Math.min(minX, x); maxX = Math.max(maxX, x);
        minY = Math.min(minY, y); maxY = Math.max(maxY, y);
      }
      this.buildingGrid.insert(i, minX, minY, maxX, maxY);
    });
  }

  get t_s(): number {
    return this.steps * SIM_DT_S;
  }

  get sim_t_ms(): number {
    return (this.steps * 1000) / 60;
  }

  /** Applies one raw input event; it takes effect from the next step. */
  input(ev: InputEvent): void {
    this.mapper.apply(ev);
  }

  playerBox(s: VehicleState = this.player): Obb {
    return { x: s.x, y: s.y, yaw: s.yaw, halfLength: this.params.length_m / 2, halfWidth: this.params.width_m / 2 };
  }

  /** What the player's car touches at its current pose. */
  private contacts(): Contact[] {
    const box = this.playerBox();
    const out: Contact[] = [];
    const speed = Math.abs(this.player.v);
    for (const i of this.buildingGrid.query(box.x, box.y, 4, this.query)) {
      if (obbPolygonOverlap(box, this.buildings[i].footprint)) {
        out.push({ kind: 'static', other_id: this.buildings[i].id, speed_mps: speed });
        break;
      }
    }
    const b = this.net.bounds;
    const margin = 40;
    if (box.x < b.minX - margin || box.x > b.maxX + margin || box.y < b.minY - margin || box.y > b.maxY + margin) {
      out.push({ kind: 'static', other_id: 'city-limit', speed_mps: speed });
    }
    for (const car of this.traffic.cars) {
      if (Math.abs(car.x - box.x) > 8 || Math.abs(car.y - box.y) > 8) continue;
      if (obbOverlap(box, car)) out.push({ kind: 'vehicle', other_id: car.id, speed_mps: speed });
    }
    for (const p of this.traffic.peds) {
      if (p.away_s > 0 || Math.abs(p.x - box.x) > 6 || Math.abs(p.y - box.y) > 6) continue;
      if (obbCircleOverlap(box, p.x, p.y, 0.35)) out.push({ kind: 'pedestrian', other_id: p.id, speed_mps: speed });
    }
    return out;
  }

  /** One fixed step of SIM_DT_S: controls from the inputs so far, then car, traffic, route, rules. */
  step(): void {
    const dt = SIM_DT_S;
    this.controls = this.directControls ? { ...this.directControls } : { ...this.mapper.step(dt) };
    const before = { ...this.player };
    stepVehicle(this.player, this.controls, dt, this.params);
    let contacts = this.contacts();
    const blocking = contacts.some((c) => c.kind !== 'pedestrian');
    if (blocking) {
      // A wall or a car stops you where you were: restore the pose before the step, speed zero.
      Object.assign(this.player, before);
      this.player.v = 0;
      this.player.accel = 0;
      contacts = contacts.map((c) => ({ ...c, speed_mps: Math.abs(before.v) }));
    }
    for (const c of contacts) {
      if (c.kind === 'pedestrian') {
        const ped = this.traffic.peds.find((p) => p.id === c.other_id);
        if (ped) this.traffic.removePed(ped);
        this.player.v *= 0.3;
      }
    }
    this.contactNow = contacts.length > 0;
    this.steps += 1;
    const t = this.t_s;
    this.traffic.step(dt, t, { x: this.player.x, y: this.player.y, yaw: this.player.yaw, v: this.player.v,
      halfLength: this.params.length_m / 2, halfWidth: this.params.width_m / 2 });
    this.tracker.update(this.player.x, this.player.y);
    const found = this.detector.update(t, dt, { x: this.player.x, y: this.player.y, yaw: this.player.yaw,
      v: this.player.v, halfLength: this.params.length_m / 2 }, contacts);
    for (const inf of found) {
      this.pending.push(inf);
      this.history.push({ t_s: t, infraction: inf });
    }
  }

  /** Infractions found since the last call. */
  drainInfractions(): Infraction[] {
    const out = this.pending;
    this.pending = [];
    return out;
  }

  get speed_mps(): number {
    return Math.abs(this.player.v);
  }

  get routeStart(): Vec2 {
    return this.route.start;
  }
}
