/**
 * Raw input events (keyboard and gamepad, exactly as logged in events.jsonl) and the mapping from
 * them to the controls applied each simulation step: keyboard ramps, gamepad dead zones.
 */
import { clamp } from './geometry';
import type { Controls } from './vehicle';

export interface InputEvent {
  /** Page clock, ms since the recorder started (or since the page started, before recording). */
  t_ms: number;
  device: 'keyboard' | 'gamepad';
  kind: 'keydown' | 'keyup' | 'axis' | 'button';
  /** KeyboardEvent.code, or axisN / buttonN of the standard gamepad mapping. */
  code: string;
  value: number;
}

/** The keys that drive; other keys are never logged. */
export const DRIVING_KEYS = new Set([
  'KeyW', 'KeyA', 'KeyS', 'KeyD', 'ArrowUp', 'ArrowDown', 'ArrowLeft', 'ArrowRight', 'Space',
]);

const STEER_AXIS = 'axis0';
const THROTTLE_BUTTON = 'button7'; // right trigger
const BRAKE_BUTTON = 'button6'; // left trigger
const GAMEPAD_DEAD_ZONE = 0.08;

// Keyboard ramps, units per second: a key press is not a step input on a real car.
const STEER_RAMP = 2.2;
const STEER_RETURN = 3.5;
const THROTTLE_RAMP = 1.8;
const BRAKE_RAMP = 3.0;
const PEDAL_RELEASE = 5.0;

/** Decimals of an event's value in events.jsonl (docs/session-format.md §7). */
export const EVENT_VALUE_DIGITS = 4;

/**
 * An event's value as events.jsonl states it: rounded to EVENT_VALUE_DIGITS decimals, within [-1, 1].
 * The mapper applies exactly this value, so that the logged events replay the drive exactly (an
 * analog stick's 1e-5 would otherwise be lost in the log and the replayed path drift from the driven one).
 */
export function eventValue(v: number): number {
  if (!Number.isFinite(v)) return 0;
  const f = 10 ** EVENT_VALUE_DIGITS;
  const r = Math.round(v * f) / f;
  return r === 0 ? 0 : clamp(r, -1, 1);
}

function approach(v: number, target: number, up: number, down: number): number {
  if (target > v) return Math.min(target, v + up);
  return Math.max(target, v - down);
}

/** Turns the stream of raw events into per-step controls. Deterministic: it reads no clock. */
export class ControlMapper {
  private readonly keys = new Set<string>();
  private readonly axes = new Map<string, number>();
  private readonly buttons = new Map<string, number>();
  private kb: Controls = { steer: 0, throttle: 0, brake: 0 };
  private last: Controls = { steer: 0, throttle: 0, brake: 0 };

  /** Applies one raw event to the held state (its value as the log states it: `eventValue`). */
  apply(ev: InputEvent): void {
    if (ev.device === 'keyboard') {
      if (ev.kind === 'keydown') this.keys.add(ev.code);
      else if (ev.kind === 'keyup') this.keys.delete(ev.code);
    } else if (ev.kind === 'axis') {
      this.axes.set(ev.code, eventValue(ev.value));
    } else if (ev.kind === 'button') {
      this.buttons.set(ev.code, eventValue(ev.value));
    }
  }

  /** Keyboard codes held right now (to log them when a recording starts mid-press). */
  heldKeys(): string[] {
    return [...this.keys];
  }

  /** The gamepad's current axis and button values, for the same reason. */
  gamepadState(): { code: string; kind: 'axis' | 'button'; value: number }[] {
    return [
      ...[...this.axes].map(([code, value]) => ({ code, kind: 'axis' as const, value })),
      ...[...this.buttons].map(([code, value]) => ({ code, kind: 'button' as const, value })),
    ];
  }

  /** Controls for the next step of dt seconds. */
  step(dt: number): Controls {
    const k = this.keys;
    const left = k.has('KeyA') || k.has('ArrowLeft');
    const right = k.has('KeyD') || k.has('ArrowRight');
    const up = k.has('KeyW') || k.has('ArrowUp');
    const down = k.has('KeyS') || k.has('ArrowDown') || k.has('Space');
    const steerTarget = (right ? 1 : 0) - (left ? 1 : 0);
    const kb = this.kb;
    const returning = steerTarget === 0 || Math.sign(steerTarget) !== Math.sign(kb.steer);
    kb.steer = approach(kb.steer, steerTarget, (returning ? STEER_RETURN : STEER_RAMP) * dt,
      (returning ? STEER_RETURN : STEER_RAMP) * dt);
    kb.throttle = approach(kb.throttle, up ? 1 : 0, THROTTLE_RAMP * dt, PEDAL_RELEASE * dt);
    kb.brake = approach(kb.brake, down ? 1 : 0, BRAKE_RAMP * dt, PEDAL_RELEASE * dt);

    const rawAxis = this.axes.get(STEER_AXIS) ?? 0;
    const padSteer = Math.abs(rawAxis) < GAMEPAD_DEAD_ZONE ? 0
      : Math.sign(rawAxis) * (Math.abs(rawAxis) - GAMEPAD_DEAD_ZONE) / (1 - GAMEPAD_DEAD_ZONE);
    const padThrottle = this.buttons.get(THROTTLE_BUTTON) ?? 0;
    const padBrake = this.buttons.get(BRAKE_BUTTON) ?? 0;

    this.last = {
      steer: clamp(padSteer !== 0 ? padSteer : kb.steer, -1, 1),
      throttle: clamp(Math.max(kb.throttle, padThrottle), 0, 1),
      brake: clamp(Math.max(kb.brake, padBrake), 0, 1),
    };
    return this.last;
  }

  /** The controls of the most recent step. */
  current(): Controls {
    return this.last;
  }
}
