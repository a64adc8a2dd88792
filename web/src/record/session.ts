/**
 * The recorder's log of one session in raw session format v1 (docs/session-format.md): frames.jsonl,
 * events.jsonl, latency.jsonl and manifest.json. Every number is checked finite and in range before
 * it is written; the validator in services/common/.../session_format/validate.py is the judge.
 */
import type { InputEvent } from '../sim/input';
import type { Infraction } from '../sim/infractions';
import { BARCODE_BITS, BARCODE_CELLS, BARCODE_MARKER, BARCODE_THRESHOLD, MAX_FRAME_ID } from './barcode';

export const SCHEMA_VERSION = '1';
export const VIDEO_NAME = 'video.webm';
export const FRAMES_NAME = 'frames.jsonl';
export const EVENTS_NAME = 'events.jsonl';
export const LATENCY_NAME = 'latency.jsonl';
export const MANIFEST_NAME = 'manifest.json';
export const VIDEO_CONTENT_TYPE = 'video/webm;codecs=vp8';
export const JSONL_CONTENT_TYPE = 'application/x-ndjson';
const MAX_T_MS = 3600 * 1000 * 2;
const MAX_INFRACTIONS_PER_FRAME = 16;

export class NonFiniteError extends Error {}

/** `v` rounded to `digits` decimals; throws rather than write NaN or Infinity. */
export function num(v: number, digits: number, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new NonFiniteError(`${what} is ${v}; expected a finite number`);
  const f = 10 ** digits;
  const r = Math.round(v * f) / f;
  return r === 0 ? 0 : r; // never -0
}

function clampNum(v: number, lo: number, hi: number, digits: number, what: string): number {
  return Math.min(hi, Math.max(lo, num(v, digits, what)));
}

export interface Pose {
  x_m: number;
  y_m: number;
  z_m: number;
  yaw_deg: number;
  pitch_deg: number;
  roll_deg: number;
}

export interface FrameRecord {
  frame_id: number;
  t_render_ms: number;
  t_capture_ms: number;
  sim_t_ms: number;
  vehicle: Pose;
  camera: Pose;
  speed_mps: number;
  controls: { steer: number; throttle: number; brake: number };
  command: number;
  route: { progress: number; distance_remaining_m: number };
  infractions: Infraction[];
  diffusion_frame_id: number | null;
}

export interface LatencyProbe {
  t_ms: number;
  kind: string;
  sent_ms: number;
  received_ms: number;
  frame_id?: number | null;
}

const COMMANDS = new Set([-1, 1, 2, 3, 4, 5, 6]);

function pose(p: Pose, what: string): Pose {
  const deg = (v: number, lim: number, name: string) => clampNum(v, -lim, lim, 3, `${what}.${name}`);
  return {
    x_m: clampNum(p.x_m, -1e6, 1e6, 4, `${what}.x_m`),
    y_m: clampNum(p.y_m, -1e6, 1e6, 4, `${what}.y_m`),
    z_m: clampNum(p.z_m, -1e6, 1e6, 4, `${what}.z_m`),
    yaw_deg: deg(p.yaw_deg, 180, 'yaw_deg'),
    pitch_deg: deg(p.pitch_deg, 90, 'pitch_deg'),
    roll_deg: deg(p.roll_deg, 180, 'roll_deg'),
  };
}

/** Appends lines to the three logs, enforcing the order rules the validator checks. */
export class SessionLog {
  readonly frames: string[] = [];
  readonly events: string[] = [];
  readonly latency: string[] = [];
  private readonly frameIds = new Set<number>();
  private last: { id: number; render: number; capture: number; sim: number } | null = null;
  private lastEventT = 0;
  private lastEventSim = 0;
  private lastLatencyT = 0;

  get frameCount(): number {
    return this.frames.length;
  }

  /** The capture time of the last frame, ms (0 before any). */
  get lastCaptureMs(): number {
    return this.last?.capture ?? 0;
  }

  hasFrame(id: number): boolean {
    return this.frameIds.has(id);
  }

  addFrame(f: FrameRecord): void {
    const prev = this.last;
    if (!Number.isInteger(f.frame_id) || f.frame_id < 0 || f.frame_id > MAX_FRAME_ID) {
      throw new RangeError(`frame_id ${f.frame_id} is outside 0..${MAX_FRAME_ID}`);
    }
    if (prev && f.frame_id <= prev.id) throw new RangeError(`frame_id ${f.frame_id} does not exceed ${prev.id}`);
    if (!COMMANDS.has(f.command)) throw new RangeError(`command ${f.command} is not a RoadOption`);
    // Times never go backwards and a frame is captured after it is rendered.
    const render = Math.max(prev?.render ?? 0, clampNum(f.t_render_ms, 0, MAX_T_MS, 3, 't_render_ms'));
    const capture = Math.max(render, prev?.capture ?? 0, clampNum(f.t_capture_ms, 0, MAX_T_MS, 3, 't_capture_ms'));
    const sim = Math.max(prev?.sim ?? 0, clampNum(f.sim_t_ms, 0, MAX_T_MS, 3, 'sim_t_ms'));
    const infractions = f.infractions.slice(0, MAX_INFRACTIONS_PER_FRAME).map((inf) => {
      const out: Record<string, string | number> = { kind: inf.kind };
      for (const [k, v] of Object.entries(inf)) {
        if (k === 'kind') continue;
        if (typeof v === 'number') {
          if (Number.isFinite(v)) out[k] = v;
        } else if (typeof v === 'string') out[k] = v.slice(0, 256);
      }
      return out;
    });
    const line = {
      frame_id: f.frame_id,
      t_render_ms: render,
      t_capture_ms: capture,
      sim_t_ms: sim,
      vehicle: pose(f.vehicle, 'vehicle'),
      camera: pose(f.camera, 'camera'),
      speed_mps: clampNum(f.speed_mps, 0, 150, 4, 'speed_mps'),
      controls: {
        steer: clampNum(f.controls.steer, -1, 1, 4, 'controls.steer'),
        throttle: clampNum(f.controls.throttle, 0, 1, 4, 'controls.throttle'),
        brake: clampNum(f.controls.brake, 0, 1, 4, 'controls.brake'),
      },
      command: f.command,
      route: {
        progress: clampNum(f.route.progress, 0, 1, 6, 'route.progress'),
        distance_remaining_m: clampNum(f.route.distance_remaining_m, 0, 1e6, 3, 'route.distance_remaining_m'),
      },
      infractions,
      diffusion_frame_id: f.diffusion_frame_id === null ? null : Math.max(0, Math.floor(f.diffusion_frame_id)),
    };
    this.frames.push(JSON.stringify(line));
    this.frameIds.add(f.frame_id);
    this.last = { id: f.frame_id, render, capture, sim };
  }

  /** `simMs`: the simulation time the event takes effect at (`sim_t_ms`, docs/session-format.md §7). */
  addEvent(ev: InputEvent, simMs?: number): void {
    const t = Math.max(this.lastEventT, clampNum(ev.t_ms, 0, MAX_T_MS, 3, 'event.t_ms'));
    this.lastEventT = t;
    const line: Record<string, unknown> = {
      t_ms: t, device: ev.device, kind: ev.kind, code: ev.code.slice(0, 64) || 'unknown',
      value: clampNum(ev.value, -1, 1, 4, 'event.value'),
    };
    if (simMs !== undefined) {
      const sim = Math.max(this.lastEventSim, clampNum(simMs, 0, MAX_T_MS, 3, 'event.sim_t_ms'));
      this.lastEventSim = sim;
      line.sim_t_ms = sim;
    }
    this.events.push(JSON.stringify(line));
  }

  addLatency(p: LatencyProbe): void {
    const t = Math.max(this.lastLatencyT, clampNum(p.t_ms, 0, MAX_T_MS, 3, 'latency.t_ms'));
    this.lastLatencyT = t;
    const sent = clampNum(p.sent_ms, 0, MAX_T_MS, 3, 'latency.sent_ms');
    const received = Math.max(sent, clampNum(p.received_ms, 0, MAX_T_MS, 3, 'latency.received_ms'));
    const line: Record<string, unknown> = { t_ms: t, kind: p.kind, sent_ms: sent, received_ms: received };
    if (p.frame_id !== undefined) line.frame_id = p.frame_id;
    this.latency.push(JSON.stringify(line));
  }

  /** The text of one of the three JSONL files: one object per line, final newline. */
  text(name: typeof FRAMES_NAME | typeof EVENTS_NAME | typeof LATENCY_NAME): string {
    const lines = name === FRAMES_NAME ? this.frames : name === EVENTS_NAME ? this.events : this.latency;
    return lines.length ? lines.join('\n') + '\n' : '';
  }
}

export interface FileEntry {
  path: string;
  size_bytes: number;
  sha256: string;
  content_type: string;
}

export interface ManifestInput {
  sessionId: string;
  playerId: string;
  createdAt: Date;
  clientBuild: string;
  userAgent: string;
  city: { name: string; seed: number | null; source: string | null };
  route: { routeId: string; start: [number, number]; goal: [number, number]; length_m: number };
  width: number;
  height: number;
  fpsTarget: number;
  fovDeg: number;
  mount: { x_m: number; y_m: number; z_m: number; pitch_deg: number; yaw_deg: number; roll_deg: number };
  cellPx: number;
  /**
   * `plain_from_frame_id`: the stream was lost and the plain render was shown from this frame on;
   * `pairing*`: how frames' diffusion_frame_id were found (a hosted model's link, media/hosted.ts).
   */
  diffusion: {
    enabled: boolean; backend: string | null; prompt: string | null; model: string | null;
    plain_from_frame_id?: number | null;
    pairing?: 'barcode' | 'latency'; pairing_latency_ms?: number | null; pairing_error_ms?: number;
    pairing_samples?: number;
  };
  durationS: number;
  frameCount: number;
  files: FileEntry[];
}

/** Focal length in pixels for a horizontal field of view. */
export function focalPx(width: number, fovDeg: number): number {
  return width / 2 / Math.tan((fovDeg * Math.PI) / 360);
}

/** manifest.json as an object, field by field as §3 of the spec lists them. */
export function buildManifest(m: ManifestInput): Record<string, unknown> {
  const fx = num(focalPx(m.width, m.fovDeg), 4, 'fx');
  const pt = (p: [number, number]) => ({ x_m: num(p[0], 3, 'x_m'), y_m: num(p[1], 3, 'y_m'), z_m: 0 });
  return {
    schema_version: SCHEMA_VERSION,
    session_id: m.sessionId,
    player_id: m.playerId,
    created_at: m.createdAt.toISOString(),
    client: { build: m.clientBuild.slice(0, 128) || 'web', user_agent: m.userAgent.slice(0, 512) },
    city: { name: m.city.name.slice(0, 128) || 'city', seed: m.city.seed, source: m.city.source?.slice(0, 256) ?? null },
    route: { route_id: m.route.routeId, start: pt(m.route.start), goal: pt(m.route.goal),
      length_m: Math.max(0.001, num(m.route.length_m, 3, 'route.length_m')) },
    recording: { width: m.width, height: m.height, fps_target: m.fpsTarget, codec: 'vp8', container: 'webm' },
    camera: {
      intrinsics: { fov_deg: m.fovDeg, fx, fy: fx, cx: m.width / 2, cy: m.height / 2 },
      mount: {
        x_m: m.mount.x_m, y_m: m.mount.y_m, z_m: m.mount.z_m,
        pitch_deg: m.mount.pitch_deg, yaw_deg: m.mount.yaw_deg, roll_deg: m.mount.roll_deg,
      },
    },
    barcode: { cells: BARCODE_CELLS, cell_px: m.cellPx, bits: BARCODE_BITS, marker: [...BARCODE_MARKER],
      parity: 'even', origin: 'bottom-left', threshold: BARCODE_THRESHOLD },
    diffusion: m.diffusion,
    duration_s: Math.max(0.001, num(m.durationS, 3, 'duration_s')),
    frame_count: m.frameCount,
    files: m.files,
  };
}

export type Digest = (data: ArrayBuffer) => Promise<ArrayBuffer>;

/** WebCrypto SHA-256 (the browser's, or Node's globalThis.crypto in tests). */
export const webCryptoDigest: Digest = (data) => globalThis.crypto.subtle.digest('SHA-256', data);

export async function sha256Hex(data: Blob | ArrayBuffer | Uint8Array, digest: Digest = webCryptoDigest): Promise<string> {
  let buf: ArrayBuffer;
  if (data instanceof Uint8Array) buf = data.slice().buffer;
  else if (data instanceof ArrayBuffer) buf = data;
  else buf = await data.arrayBuffer();
  const h = new Uint8Array(await digest(buf));
  return Array.from(h, (b) => b.toString(16).padStart(2, '0')).join('');
}

export interface SessionFile {
  path: string;
  blob: Blob;
  sha256: string;
  contentType: string;
}

/** The files of a finished session with their hashes, and the manifest bytes that list them. */
export async function assembleSession(log: SessionLog, video: Blob, manifest: Omit<ManifestInput, 'files' | 'frameCount'>,
  digest: Digest = webCryptoDigest): Promise<{ files: SessionFile[]; manifest: Record<string, unknown>; manifestBlob: Blob }> {
  const enc = new TextEncoder();
  const parts: [string, Blob, string][] = [
    [VIDEO_NAME, video, VIDEO_CONTENT_TYPE],
    [FRAMES_NAME, new Blob([enc.encode(log.text(FRAMES_NAME))]), JSONL_CONTENT_TYPE],
    [EVENTS_NAME, new Blob([enc.encode(log.text(EVENTS_NAME))]), JSONL_CONTENT_TYPE],
    [LATENCY_NAME, new Blob([enc.encode(log.text(LATENCY_NAME))]), JSONL_CONTENT_TYPE],
  ];
  const files: SessionFile[] = [];
  for (const [path, blob, contentType] of parts) {
    files.push({ path, blob, contentType, sha256: await sha256Hex(blob, digest) });
  }
  const m = buildManifest({
    ...manifest, frameCount: log.frameCount,
    files: files.map((f) => ({ path: f.path, size_bytes: f.blob.size, sha256: f.sha256, content_type: f.contentType })),
  });
  const manifestBlob = new Blob([enc.encode(JSON.stringify(m, null, 1) + '\n')], { type: 'application/json' });
  return { files, manifest: m, manifestBlob };
}
