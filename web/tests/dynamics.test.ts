import { describe, expect, it } from 'vitest';
import { ControlMapper, type InputEvent } from '../src/sim/input';
import { SEDAN, makeVehicle, steerLimit, stepVehicle } from '../src/sim/vehicle';
import { SIM_DT_S } from '../src/sim/world';

/** Replays (step index, event) pairs through the input mapping and the dynamics; returns every state. */
function replay(events: { step: number; ev: InputEvent }[], steps: number): Float64Array {
  const mapper = new ControlMapper();
  const car = makeVehicle(10, -5, 0.3);
  const out = new Float64Array(steps * 5);
  let k = 0;
  for (let i = 0; i < steps; i++) {
    while (k < events.length && events[k].step === i) mapper.apply(events[k++].ev);
    stepVehicle(car, mapper.step(SIM_DT_S), SIM_DT_S);
    out.set([car.x, car.y, car.yaw, car.v, car.steerAngle], i * 5);
  }
  return out;
}

const key = (step: number, code: string, down: boolean) => ({
  step, ev: { t_ms: step * 16.7, device: 'keyboard' as const, kind: down ? 'keydown' as const : 'keyup' as const, code, value: down ? 1 : 0 },
});
const pad = (step: number, kind: 'axis' | 'button', code: string, value: number) => ({
  step, ev: { t_ms: step * 16.7, device: 'gamepad' as const, kind, code, value },
});

const SCRIPT = [
  key(5, 'KeyW', true), key(200, 'KeyA', true), key(260, 'KeyA', false), pad(300, 'axis', 'axis0', 0.43),
  pad(340, 'button', 'button7', 0.7), key(360, 'KeyW', false), pad(420, 'axis', 'axis0', -0.2), key(500, 'Space', true),
  pad(520, 'button', 'button6', 0.9), key(640, 'Space', false), pad(650, 'button', 'button6', 0), key(700, 'KeyS', true),
  key(780, 'KeyS', false), key(800, 'KeyW', true),
];

describe('vehicle dynamics', () => {
  it('gives the same trajectory, bit for bit, for the same events', () => {
    const a = replay(SCRIPT, 1200);
    const b = replay(SCRIPT.map((e) => ({ step: e.step, ev: { ...e.ev } })), 1200);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    // and a different script gives a different one
    const c = replay([...SCRIPT.slice(0, 3), key(261, 'KeyA', false), ...SCRIPT.slice(4)], 1200);
    expect(Buffer.from(a.buffer).equals(Buffer.from(c.buffer))).toBe(false);
  });

  it('accelerates like a sedan and respects its top speed', () => {
    const mapper = new ControlMapper();
    mapper.apply({ t_ms: 0, device: 'gamepad', kind: 'button', code: 'button7', value: 1 });
    const car = makeVehicle(0, 0, 0);
    let t100 = NaN;
    for (let i = 0; i < 60 * 60; i++) {
      stepVehicle(car, mapper.step(SIM_DT_S), SIM_DT_S);
      if (Number.isNaN(t100) && car.v >= 100 / 3.6) t100 = (i + 1) * SIM_DT_S;
    }
    expect(t100).toBeGreaterThan(6); // 0-100 km/h in 6-12 s
    expect(t100).toBeLessThan(12);
    expect(car.v).toBeLessThanOrEqual(SEDAN.maxSpeed_mps);
    expect(car.y).toBeCloseTo(0, 9); // straight line
  });

  it('brakes from 50 km/h within a realistic distance and never rolls backwards', () => {
    const car = makeVehicle(0, 0, 0);
    car.v = 50 / 3.6;
    let steps = 0;
    while (car.v > 0 && steps < 1000) {
      stepVehicle(car, { steer: 0, throttle: 0, brake: 1 }, SIM_DT_S);
      steps++;
    }
    expect(car.x).toBeGreaterThan(9); // about v^2 / (2 * 8.5) = 11.3 m
    expect(car.x).toBeLessThan(14);
    expect(car.v).toBe(0);
    // The brake held through the stop holds the car; only a fresh press selects reverse.
    for (let i = 0; i < 120; i++) stepVehicle(car, { steer: 0, throttle: 0, brake: 1 }, SIM_DT_S);
    expect(car.v).toBe(0);
    stepVehicle(car, { steer: 0, throttle: 0, brake: 0 }, SIM_DT_S);
    for (let i = 0; i < 120; i++) stepVehicle(car, { steer: 0, throttle: 0, brake: 1 }, SIM_DT_S);
    expect(car.v).toBeLessThan(0);
    expect(car.v).toBeGreaterThanOrEqual(-SEDAN.maxReverseSpeed_mps);
  });

  it('turns no tighter than its wheelbase and steering lock allow', () => {
    const car = makeVehicle(0, 0, 0);
    car.v = 5;
    let minX = 0, maxX = 0, minY = 0, maxY = 0;
    for (let i = 0; i < 60 * 20; i++) {
      stepVehicle(car, { steer: -1, throttle: 0.12, brake: 0 }, SIM_DT_S);
      minX = Math.min(minX, car.x); maxX = Math.max(maxX, car.x); minY = Math.min(minY, car.y); maxY = Math.max(maxY, car.y);
    }
    const radius = (maxX - minX) / 2;
    expect(maxY).toBeGreaterThan(0); // steer < 0 is left: counter-clockwise
    expect(radius).toBeGreaterThan(SEDAN.wheelbase_m / Math.tan(SEDAN.maxSteer_rad) * 0.9);
    expect(steerLimit(SEDAN, 30)).toBeLessThan(steerLimit(SEDAN, 5));
  });

  it('ramps keyboard inputs and applies gamepad dead zones', () => {
    const m = new ControlMapper();
    m.apply({ t_ms: 0, device: 'keyboard', kind: 'keydown', code: 'KeyD', value: 1 });
    const first = m.step(SIM_DT_S).steer;
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(0.1);
    for (let i = 0; i < 60; i++) m.step(SIM_DT_S);
    expect(m.current().steer).toBe(1);
    m.apply({ t_ms: 0, device: 'keyboard', kind: 'keyup', code: 'KeyD', value: 0 });
    m.apply({ t_ms: 0, device: 'gamepad', kind: 'axis', code: 'axis0', value: 0.05 });
    for (let i = 0; i < 60; i++) m.step(SIM_DT_S);
    expect(m.current().steer).toBe(0);
    m.apply({ t_ms: 0, device: 'gamepad', kind: 'axis', code: 'axis0', value: -1 });
    expect(m.step(SIM_DT_S).steer).toBe(-1);
  });
});
