import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Recording } from '../src/record/recording';
import { EVENTS_NAME, FRAMES_NAME, LATENCY_NAME, NonFiniteError, SessionLog, assembleSession, focalPx } from '../src/record/session';
import { Autopilot } from '../src/sim/autopilot';
import { CARLA_FRONT_CAMERA } from '../src/sim/camera';
import { generateCity } from '../src/sim/cityGen';
import { World } from '../src/sim/world';

const FRAME_KEYS = ['frame_id', 't_render_ms', 't_capture_ms', 'sim_t_ms', 'vehicle', 'camera', 'speed_mps', 'controls',
  'command', 'route', 'infractions', 'diffusion_frame_id'];

/**
 * The repository's Python (made by `make install`), which holds the session validator. Missing, the test
 * fails and says how to make it: a validator check that silently does not run would pass for anything.
 */
function projectPython(): string {
  const python = fileURLToPath(new URL('../../.venv/bin/python', import.meta.url));
  if (!existsSync(python)) {
    throw new Error(`no Python at ${python}: run \`make install\` at the repository root so this test can ` +
      'run the session validator');
  }
  return python;
}

/** A recorded drive without a browser: 30 fps frames on a simulated page clock, the scripted driver's events. */
function recordDrive(seconds: number) {
  const world = new World(generateCity(2), { seed: 4, cars: 20, pedestrians: 20 });
  const rec = new Recording(world, CARLA_FRONT_CAMERA);
  let pageMs = 0;
  const events: number[] = [];
  const pilot = new Autopilot(world, (ev) => {
    const full = { ...ev, t_ms: pageMs };
    world.input(full);
    rec.event(full);
    events.push(pageMs);
  });
  rec.frameRendered(0, 0, null, false);
  rec.probe('frame_present', 0, 0, 0);
  for (let step = 1; step <= seconds * 60; step++) {
    pageMs = step * (1000 / 60) + 0.4;
    pilot.update(1 / 60);
    world.step();
    rec.afterStep();
    if (step % 2 === 0) rec.frameRendered(pageMs + 1.1, pageMs + 3.2);
  }
  return { world, log: rec.finish(), events };
}

describe('recorder log', () => {
  it('has one complete line per rendered frame, with the controls of the following step', () => {
    const { world, log } = recordDrive(20);
    expect(log.frameCount).toBe(20 * 30 + 1);
    const frames = log.text(FRAMES_NAME).trimEnd().split('\n').map((l) => JSON.parse(l));
    frames.forEach((f, i) => {
      expect(Object.keys(f)).toEqual(FRAME_KEYS);
      expect(f.frame_id).toBe(i);
      expect(f.t_capture_ms).toBeGreaterThanOrEqual(f.t_render_ms);
      expect([1, 2, 3, 4, -1]).toContain(f.command);
      expect(f.camera.z_m).toBe(2.3);
      if (i) expect(f.sim_t_ms).toBeGreaterThan(frames[i - 1].sim_t_ms);
    });
    expect(frames.some((f) => f.controls.throttle > 0)).toBe(true);
    expect(frames[frames.length - 1].route.progress).toBeGreaterThan(0.05);
    // Infractions are logged once each, on a frame.
    const logged = frames.flatMap((f) => f.infractions);
    expect(logged.length).toBe(world.history.length);
    // events.jsonl holds the scripted driver's gamepad events in time order; latency one probe per frame.
    const events = log.text(EVENTS_NAME).trimEnd().split('\n').map((l) => JSON.parse(l));
    expect(events.length).toBeGreaterThan(10);
    expect(events.every((e) => e.device === 'gamepad')).toBe(true);
    expect(events.map((e) => e.t_ms)).toEqual([...events.map((e) => e.t_ms)].sort((a, b) => a - b));
    expect(log.text(LATENCY_NAME).trimEnd().split('\n')).toHaveLength(log.frameCount);
  });

  it('never writes a non-finite number', () => {
    const log = new SessionLog();
    const frame = JSON.parse(recordDrive(1).log.frames[0]);
    expect(() => log.addFrame({ ...frame, speed_mps: NaN })).toThrow(NonFiniteError);
    expect(() => log.addFrame({ ...frame, vehicle: { ...frame.vehicle, x_m: Infinity } })).toThrow(NonFiniteError);
    expect(() => log.addEvent({ t_ms: NaN, device: 'keyboard', kind: 'keydown', code: 'KeyW', value: 1 })).toThrow(NonFiniteError);
    expect(log.frameCount).toBe(0);
  });

  it('lists every file in the manifest with its exact size and SHA-256, and passes the Python validator', async () => {
    const { world, log } = recordDrive(12);
    const video = new Blob([new Uint8Array(4096).map((_, i) => i * 7)]);
    const { files, manifest, manifestBlob } = await assembleSession(log, video, {
      sessionId: 's-test-1', playerId: 'p-test', createdAt: new Date('2026-01-02T03:04:05.678Z'), clientBuild: 'web-test',
      userAgent: 'vitest', city: { name: 'grid-2', seed: 2, source: null },
      route: { routeId: world.route.id, start: world.route.start, goal: world.route.goal, length_m: world.route.length },
      width: 640, height: 360, fpsTarget: 30, fovDeg: 100, mount: CARLA_FRONT_CAMERA, cellPx: 8,
      diffusion: { enabled: false, backend: null, prompt: null, model: null }, durationS: 12.5,
    });
    expect(manifest.frame_count).toBe(log.frameCount);
    const listed = manifest.files as { path: string; size_bytes: number; sha256: string; content_type: string }[];
    expect(listed.map((f) => f.path)).toEqual(['video.webm', 'frames.jsonl', 'events.jsonl', 'latency.jsonl']);
    const dir = mkdtempSync(join(tmpdir(), 'sd-session-'));
    for (const f of files) {
      const bytes = new Uint8Array(await f.blob.arrayBuffer());
      const entry = listed.find((l) => l.path === f.path)!;
      expect(entry.size_bytes).toBe(bytes.length);
      expect(entry.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      writeFileSync(join(dir, f.path), bytes);
    }
    writeFileSync(join(dir, 'manifest.json'), new Uint8Array(await manifestBlob.arrayBuffer()));
    const intr = (manifest.camera as { intrinsics: { fx: number } }).intrinsics;
    expect(intr.fx).toBeCloseTo(focalPx(640, 100), 3);
    // The judge: the project's validator (manifest, sizes, hashes, every log line; the video here is
    // a stand-in, so without decoding it).
    const python = projectPython();
    const out = spawnSync(python, ['-c', [
      'import sys, json',
      'from pathlib import Path',
      'from sd_common.session_format.validate import validate_session',
      'r = validate_session(Path(sys.argv[1]), deep=False)',
      'print(json.dumps(r.to_dict()))',
    ].join('\n'), dir], { encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    const report = JSON.parse(out.stdout);
    expect(report.problems).toEqual([]);
    expect(report.stats.frames_logged).toBe(log.frameCount);
  });
});
