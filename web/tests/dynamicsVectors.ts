/**
 * Shared test vectors of the vehicle dynamics: input events -> per-tick state, run through the game's
 * ControlMapper and stepVehicle exactly as World.step does (without the world: no traffic, no walls).
 * tests/fixtures/dynamics_vectors.json holds what this code gives; Vitest checks the game still gives
 * it (dynamicsVectors.test.ts) and pytest checks the Python port gives it too
 * (services/common/tests/test_dynamics.py). Regenerate after a deliberate change of the dynamics:
 *   UPDATE_FIXTURES=1 npx vitest run tests/dynamicsVectors.test.ts
 */
import { createHash } from 'node:crypto';
import { ControlMapper, type InputEvent } from '../src/sim/input';
import { SEDAN, makeVehicle, stepVehicle, type VehicleState } from '../src/sim/vehicle';
import { SIM_DT_S } from '../src/sim/world';
import { Rng } from '../src/sim/rng';

export const FIXTURE_URL = new URL('./fixtures/dynamics_vectors.json', import.meta.url);

/** An event applied before the step of index `step` (as World.input before World.step). */
export interface StepEvent extends InputEvent {
  step: number;
}

export interface VectorCase {
  name: string;
  start: { x: number; y: number; yaw: number };
  steps: number;
  events: StepEvent[];
}

/** Per tick, after the step: the state, then the controls the step applied. */
export const FIELDS = ['x', 'y', 'yaw', 'v', 'steerAngle', 'gear', 'accel', 'brakeLatch', 'steer', 'throttle', 'brake'] as const;
/** The fields no trigonometric function reaches (speed depends on the pedals alone). */
export const TRIG_FREE = ['v', 'gear', 'accel', 'brakeLatch', 'steer', 'throttle', 'brake'] as const;
export const SAMPLE_EVERY = 50;

const key = (step: number, code: string, down: boolean): StepEvent => ({
  step, t_ms: (step * 1000) / 60, device: 'keyboard', kind: down ? 'keydown' : 'keyup', code, value: down ? 1 : 0,
});
const pad = (step: number, kind: 'axis' | 'button', code: string, value: number): StepEvent => ({
  step, t_ms: (step * 1000) / 60, device: 'gamepad', kind, code, value,
});

function randomCase(seed: number, steps: number): VectorCase {
  const rng = new Rng(seed);
  const events: StepEvent[] = [];
  const keys = ['KeyW', 'KeyA', 'KeyS', 'KeyD', 'ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'Space'];
  const held = new Set<string>();
  for (let step = 0; step < steps; step += 1 + rng.int(40)) {
    const r = rng.next();
    if (r < 0.45) {
      const code = rng.pick(keys);
      events.push(key(step, code, !held.has(code)));
      if (held.has(code)) held.delete(code);
      else held.add(code);
    } else if (r < 0.7) {
      // Raw stick positions with more decimals than the log keeps, some in the dead zone, some beyond 1.
      const v = rng.chance(0.15) ? rng.range(-0.08, 0.08) : rng.chance(0.05) ? rng.range(-1.3, 1.3) : rng.range(-1, 1);
      events.push(pad(step, 'axis', 'axis0', v));
    } else {
      const code = rng.chance(0.6) ? 'button7' : 'button6';
      events.push(pad(step, 'button', code, rng.chance(0.3) ? 0 : rng.next()));
    }
  }
  return { name: `random_${seed}`, start: { x: 12.5, y: -340.25, yaw: -2.9 }, steps, events };
}

/** The cases: keyboard ramps, gamepad analog inputs and dead zone, top and reverse speed limits, long runs. */
export function vectorCases(): VectorCase[] {
  return [
    {
      name: 'keyboard', start: { x: 10, y: -5, yaw: 0.3 }, steps: 1500,
      events: [
        key(5, 'KeyW', true), key(200, 'KeyA', true), key(260, 'KeyA', false), key(300, 'ArrowRight', true),
        key(330, 'KeyA', true), key(360, 'KeyA', false), key(380, 'ArrowRight', false), key(420, 'KeyW', false),
        key(430, 'Space', true), key(700, 'Space', false), key(720, 'KeyS', true), key(900, 'KeyS', false),
        key(905, 'ArrowUp', true), key(1000, 'KeyD', true), key(1100, 'ArrowUp', false), key(1101, 'ArrowDown', true),
        key(1300, 'KeyD', false), key(1310, 'ArrowDown', false), key(1320, 'ArrowLeft', true),
      ],
    },
    {
      name: 'gamepad', start: { x: -100, y: 250, yaw: 1.5 }, steps: 1500,
      events: [
        pad(0, 'button', 'button7', 0.6), pad(120, 'axis', 'axis0', 0.43), pad(121, 'axis', 'axis0', 0.0799),
        pad(160, 'axis', 'axis0', -0.2), pad(200, 'axis', 'axis0', -1), pad(260, 'axis', 'axis0', 0.0300001),
        pad(300, 'button', 'button7', 0.123456789), pad(340, 'button', 'button6', 0.35), pad(400, 'button', 'button7', 0),
        pad(401, 'button', 'button6', 1), key(402, 'KeyW', true), pad(600, 'button', 'button6', 0),
        key(650, 'KeyA', true), pad(700, 'axis', 'axis0', 0.9), pad(760, 'axis', 'axis0', 0), key(800, 'KeyA', false),
        key(801, 'KeyW', false), pad(820, 'button', 'button6', 0.51), pad(1000, 'button', 'button6', 0.1),
        pad(1010, 'button', 'button6', 0.9), pad(1200, 'button', 'button7', 0.07), pad(1300, 'button', 'button7', 1),
      ],
    },
    {
      name: 'top_speed', start: { x: 0, y: 0, yaw: 0 }, steps: 4200,
      events: [pad(0, 'button', 'button7', 1), pad(3600, 'button', 'button7', 0), pad(3600, 'button', 'button6', 1),
        pad(3700, 'axis', 'axis0', 0.5)],
    },
    {
      name: 'reverse', start: { x: 3, y: 4, yaw: -1 }, steps: 1200,
      events: [key(0, 'KeyS', true), key(400, 'KeyA', true), key(600, 'KeyS', false), key(601, 'KeyW', true),
        key(700, 'KeyW', false), key(701, 'KeyA', false), key(720, 'KeyW', true)],
    },
    {
      // Circles: the heading wraps around pi many times.
      name: 'circles', start: { x: 0, y: 0, yaw: 3.1 }, steps: 3000,
      events: [pad(0, 'button', 'button7', 0.3), pad(0, 'axis', 'axis0', -1), pad(1500, 'axis', 'axis0', 0.77)],
    },
    randomCase(7, 8000),
    randomCase(8, 6000),
  ];
}

export interface CaseRun {
  ticks: number[][];
  samples: number[][];
}

function row(car: VehicleState, c: { steer: number; throttle: number; brake: number }): number[] {
  return [car.x, car.y, car.yaw, car.v, car.steerAngle, car.gear, car.accel, car.brakeLatch ? 1 : 0, c.steer, c.throttle, c.brake];
}

/** Replays one case; `ticks[i]` is the state after step i. */
export function runCase(c: VectorCase): CaseRun {
  const mapper = new ControlMapper();
  const car = makeVehicle(c.start.x, c.start.y, c.start.yaw);
  const ticks: number[][] = [];
  let k = 0;
  for (let i = 0; i < c.steps; i++) {
    while (k < c.events.length && c.events[k].step === i) mapper.apply(c.events[k++]);
    const controls = { ...mapper.step(SIM_DT_S) };
    stepVehicle(car, controls, SIM_DT_S, SEDAN);
    ticks.push(row(car, controls));
  }
  const samples = ticks.flatMap((t, i) => (i % SAMPLE_EVERY === 0 || i === c.steps - 1 ? [[i, ...t]] : []));
  return { ticks, samples };
}

/** SHA-256 of the float64 little-endian bytes of the named fields of every tick. */
export function digest(ticks: number[][], fields: readonly string[]): string {
  const idx = fields.map((f) => FIELDS.indexOf(f as (typeof FIELDS)[number]));
  const buf = new Float64Array(ticks.length * idx.length);
  ticks.forEach((t, i) => idx.forEach((j, n) => { buf[i * idx.length + n] = t[j]; }));
  return createHash('sha256').update(new Uint8Array(buf.buffer)).digest('hex');
}

/** The fixture's content. */
export function vectorsDocument(): object {
  return {
    about: 'web/tests/dynamicsVectors.ts: events -> per-tick state of the game dynamics at 60 Hz; '
      + 'samples are [tick, ...fields] after the step; digests are SHA-256 of every tick\'s float64 LE values',
    dt_s: SIM_DT_S,
    fields: FIELDS,
    trig_free: TRIG_FREE,
    sample_every: SAMPLE_EVERY,
    cases: vectorCases().map((c) => {
      const run = runCase(c);
      return {
        ...c,
        digest_all: digest(run.ticks, FIELDS),
        digest_trig_free: digest(run.ticks, TRIG_FREE),
        samples: run.samples,
      };
    }),
  };
}
