/**
 * Drives recorded by the game's own code without a browser, with the controller's timing: a
 * jittery 60 Hz animation-frame loop with hitches and a pause, the fixed-step catch-up loop, a frame
 * rendered about every 33 ms, keyboard events arriving between animation frames, and the scripted
 * driver's gamepad events inside the step loop. tests/fixtures/game_drives.json holds their
 * frames.jsonl and events.jsonl lines; the processor's replay must find every logged state in the
 * events (services/processor/tests/test_replay.py), collisions with walls included.
 * Regenerate after a deliberate change:  UPDATE_FIXTURES=1 npx vitest run tests/gameDrives.test.ts
 */
import { Recording } from '../src/record/recording';
import { EVENTS_NAME, FRAMES_NAME } from '../src/record/session';
import { Autopilot } from '../src/sim/autopilot';
import { CARLA_FRONT_CAMERA } from '../src/sim/camera';
import { generateCity } from '../src/sim/cityGen';
import type { InputEvent } from '../src/sim/input';
import { Rng } from '../src/sim/rng';
import { SIM_DT_S, World } from '../src/sim/world';

export const FIXTURE_URL = new URL('./fixtures/game_drives.json', import.meta.url);

const MAX_STEPS_PER_FRAME = 10; // as controller.ts
const FPS_TARGET = 30;

type Key = { at_s: number; code: string; down: boolean };

interface DriveSpec {
  name: string;
  citySeed: number;
  seed: number;
  cars: number;
  pedestrians: number;
  seconds: number;
  autopilot: boolean;
  /** Keyboard presses and releases by page time. */
  keys: Key[];
  /** [from_s, to_s) of page time the game is paused. */
  pause?: [number, number];
}

const SPECS: DriveSpec[] = [
  {
    // The scripted driver through traffic, a player tapping the keyboard now and then, one pause.
    name: 'autopilot_traffic', citySeed: 2, seed: 4, cars: 20, pedestrians: 20, seconds: 16, autopilot: true,
    keys: [{ at_s: 3.0, code: 'KeyW', down: true }, { at_s: 3.4, code: 'KeyW', down: false },
      { at_s: 9.1, code: 'KeyD', down: true }, { at_s: 9.25, code: 'KeyD', down: false }],
    pause: [6.0, 7.1],
  },
  {
    // A player on the keyboard turns into a building, pushes against it, backs out and drives on.
    name: 'keyboard_crash', citySeed: 2, seed: 9, cars: 0, pedestrians: 0, seconds: 16, autopilot: false,
    keys: [{ at_s: 0.3, code: 'KeyW', down: true }, { at_s: 2.2, code: 'KeyD', down: true },
      { at_s: 5.5, code: 'KeyD', down: false }, { at_s: 6.5, code: 'KeyW', down: false },
      { at_s: 7.0, code: 'KeyS', down: true }, { at_s: 8.6, code: 'KeyS', down: false },
      { at_s: 8.9, code: 'KeyW', down: true }, { at_s: 9.0, code: 'KeyA', down: true },
      { at_s: 11.7, code: 'KeyA', down: false }, { at_s: 14.0, code: 'KeyW', down: false },
      { at_s: 14.0, code: 'Space', down: true }],
  },
];

export interface RecordedDrive {
  name: string;
  frames: string[];
  events: string[];
  collisions: number;
}

/** Runs one drive through the controller's loop and returns its logs. */
export function recordDrive(spec: DriveSpec): RecordedDrive {
  const world = new World(generateCity(spec.citySeed), { seed: spec.seed, cars: spec.cars, pedestrians: spec.pedestrians });
  const rec = new Recording(world, CARLA_FRONT_CAMERA);
  const rng = new Rng(spec.seed * 7919 + 1);
  let page = 0; // ms since the recorder started
  let paused = false;
  const handle = (ev: Omit<InputEvent, 't_ms'>, t: number) => {
    if (paused) return; // controller.handleInput drops inputs while paused
    const full: InputEvent = { ...ev, t_ms: t };
    world.input(full);
    rec.event(full);
  };
  const pilot = spec.autopilot ? new Autopilot(world, (ev) => handle(ev, page + 0.2)) : null;
  rec.frameRendered(0, 0, null, false);
  rec.probe('frame_present', 0, 0, 0);
  const keys = [...spec.keys];
  let pausedMs = 0;
  let pauseStarted = 0;
  let lastRender = 0;
  let stepsSinceRender = 1;
  while (page < spec.seconds * 1000) {
    const gap = 16.667 + rng.range(-1.5, 1.5) + (rng.chance(0.01) ? rng.range(40, 180) : 0);
    const next = page + gap;
    // Keyboard events are handled between animation frames, at their own page time.
    while (keys.length && keys[0].at_s * 1000 < next) {
      const k = keys.shift()!;
      const t = Math.max(page + 0.1, k.at_s * 1000);
      handle({ device: 'keyboard', kind: k.down ? 'keydown' : 'keyup', code: k.code, value: k.down ? 1 : 0 }, t);
    }
    page = next;
    if (spec.pause) {
      const inPause = page >= spec.pause[0] * 1000 && page < spec.pause[1] * 1000;
      if (inPause && !paused) { paused = true; pauseStarted = page; }
      if (!inPause && paused) { paused = false; pausedMs += page - pauseStarted; }
      if (paused) continue;
    }
    const target = page - pausedMs;
    let steps = 0;
    while (world.sim_t_ms + SIM_DT_S * 1000 <= target) {
      if (steps === MAX_STEPS_PER_FRAME) {
        pausedMs += target - world.sim_t_ms;
        break;
      }
      pilot?.update(SIM_DT_S);
      world.step();
      steps++;
      stepsSinceRender++;
      rec.afterStep();
    }
    if (stepsSinceRender > 0 && page - lastRender >= 1000 / FPS_TARGET - 4) {
      const tRender = page + rng.range(0.3, 2);
      rec.frameRendered(tRender, tRender + rng.range(1, 3));
      stepsSinceRender = 0;
      lastRender = page;
    }
  }
  const log = rec.finish();
  const collisions = world.history.filter((h) => h.infraction.kind.startsWith('collision_')).length;
  return {
    name: spec.name,
    frames: log.text(FRAMES_NAME).trimEnd().split('\n'),
    events: log.text(EVENTS_NAME).trimEnd().split('\n'),
    collisions,
  };
}

/** The fixture's content. */
export function drivesDocument(): object {
  return {
    about: 'web/tests/gameDrives.ts: drives recorded by the game\'s code with the controller\'s timing; '
      + 'frames and events are the lines of frames.jsonl and events.jsonl',
    drives: SPECS.map(recordDrive),
  };
}
