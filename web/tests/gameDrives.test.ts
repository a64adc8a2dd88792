import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FIXTURE_URL, drivesDocument } from './gameDrives';

// The processor's replay test reads the same file (services/processor/tests/test_replay.py).
const PATH = fileURLToPath(FIXTURE_URL);

describe('recorded game drives', () => {
  it('the game records exactly the fixture\'s drives', () => {
    const fresh = drivesDocument() as { drives: { name: string; frames: string[]; events: string[]; collisions: number }[] };
    const text = JSON.stringify(fresh) + '\n';
    if (process.env.UPDATE_FIXTURES === '1') writeFileSync(PATH, text);
    expect(readFileSync(PATH, 'utf8')).toBe(text);
    // What the fixture is for: the crash drive touches a building, the traffic drive pauses and hitches.
    const [traffic, crash] = fresh.drives;
    expect(crash.collisions).toBeGreaterThan(0);
    const sims = traffic.frames.map((l) => JSON.parse(l).sim_t_ms as number);
    const renders = traffic.frames.map((l) => JSON.parse(l).t_render_ms as number);
    expect(renders[renders.length - 1] - sims[sims.length - 1]).toBeGreaterThan(1000); // paused over a second
    expect(traffic.events.every((l) => typeof JSON.parse(l).sim_t_ms === 'number')).toBe(true);
  });
});
