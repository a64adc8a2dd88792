/** Game settings from the page URL, e.g. `?autopilot=1&seed=7&duration_s=32&size=640x360`. */
import { DEFAULT_LATENCY_ERROR_MS, DEFAULT_LATENCY_MS } from '../media/hosted';
import { CARLA_FRONT_CAMERA, type CameraMount } from '../sim/camera';

/** The city played when the URL names none: the real East Village (web/public/cities/east-village.json). */
export const DEFAULT_CITY = 'east-village';
/** `?city=grid` plays the generated Manhattan-like grid (seeded by `city_seed`) instead. */
export const GENERATED_CITY = 'grid';

export interface GameConfig {
  /** Route and traffic seed. */
  seed: number;
  /** Seed of the generated city (`?city=grid`; ignored when a city file is loaded). */
  citySeed: number;
  /** A city file to load: `/cities/<name>.json`, or a full URL; null plays the generated grid. */
  cityUrl: string | null;
  durationS: number;
  width: number;
  height: number;
  fpsTarget: number;
  mount: CameraMount;
  /** The scripted test driver drives (its inputs are logged as gamepad events). */
  autopilot: boolean;
  /** Skip the start screen. */
  autostart: boolean;
  record: boolean;
  upload: boolean;
  /** Render as fast as possible and report the frame rate (bench/game_bench). */
  bench: boolean;
  diffusion: boolean;
  /**
   * Who serves the diffusion view: 'gateway', the gateway's diffusion pods (`?diffusion=1`), or 'mirage',
   * the hosted provider the gateway mints tokens for (`?diffusion=mirage`, docs/diffusion.md "Hosted (Mirage)").
   */
  diffusionProvider: 'gateway' | 'mirage';
  /** The hosted model's latency to assume until barcode reads measure it, and its error (`?diffusion_latency_ms=`, `?diffusion_latency_error_ms=`). */
  diffusionLatencyMs: number;
  diffusionLatencyErrorMs: number;
  cars: number;
  pedestrians: number;
  gatewayUrl: string;
  /** Agent mode: no screens and no real-time loop; an evaluator steps the game (game/agentMode.ts). */
  agent: boolean;
}

function int(v: string | null, d: number, lo: number, hi: number): number {
  const n = v === null ? NaN : Number(v);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, Math.round(n))) : d;
}

function float(v: string | null, d: number, lo: number, hi: number): number {
  const n = v === null ? NaN : Number(v);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : d;
}

function flag(v: string | null, d: boolean): boolean {
  if (v === null) return d;
  return v === '1' || v === 'true' || v === 'yes' || v === '';
}

export function parseConfig(search: string, randomSeed: () => number = () => Math.floor(Math.random() * 1e6)): GameConfig {
  const q = new URLSearchParams(search);
  let width = 1280;
  let height = 720;
  const size = q.get('size');
  const m = size?.match(/^(\d+)x(\d+)$/);
  if (m) {
    // Even sizes within the format's bounds, wide enough for the 23-cell barcode.
    width = Math.min(3840, Math.max(184, Number(m[1]) & ~1));
    height = Math.min(2160, Math.max(90, Number(m[2]) & ~1));
  }
  const mount: CameraMount = { ...CARLA_FRONT_CAMERA };
  const mq = q.get('mount')?.split(',').map(Number);
  if (mq && mq.length === 6 && mq.every(Number.isFinite)) {
    [mount.x_m, mount.y_m, mount.z_m, mount.pitch_deg, mount.yaw_deg, mount.roll_deg] = mq.map((v, i) => (i < 3 ? Math.max(-20, Math.min(20, v)) : v));
  }
  mount.fov_deg = float(q.get('fov'), mount.fov_deg, 20, 150);
  const bench = flag(q.get('bench'), false);
  const city = q.get('city') || DEFAULT_CITY;
  const hosted = q.get('diffusion') === 'mirage';
  return {
    seed: int(q.get('seed'), randomSeed(), 0, 2 ** 31 - 1),
    citySeed: int(q.get('city_seed'), 1, 0, 2 ** 31 - 1),
    cityUrl: city === GENERATED_CITY ? null : /^[A-Za-z0-9._-]+$/.test(city) ? `/cities/${city}.json` : city,
    durationS: float(q.get('duration_s'), 60, 2, 600),
    width,
    height,
    fpsTarget: float(q.get('fps'), 30, 5, 120),
    mount,
    autopilot: flag(q.get('autopilot'), bench),
    autostart: flag(q.get('autostart'), bench),
    record: flag(q.get('record'), true),
    upload: flag(q.get('upload'), !bench),
    bench,
    diffusion: hosted || flag(q.get('diffusion'), false),
    diffusionProvider: hosted ? 'mirage' : 'gateway',
    diffusionLatencyMs: float(q.get('diffusion_latency_ms'), DEFAULT_LATENCY_MS, 0, 5000),
    diffusionLatencyErrorMs: float(q.get('diffusion_latency_error_ms'), DEFAULT_LATENCY_ERROR_MS, 0, 5000),
    cars: int(q.get('cars'), 40, 0, 400),
    pedestrians: int(q.get('peds'), 40, 0, 400),
    gatewayUrl: q.get('gateway') ?? '',
    agent: flag(q.get('agent'), false),
  };
}
