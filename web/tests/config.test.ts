import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/game/config';

describe('URL settings', () => {
  it('defaults to a 1280x720, 30 fps, one-minute session with the evaluator camera', () => {
    const c = parseConfig('', () => 99);
    expect([c.width, c.height, c.fpsTarget, c.durationS, c.seed]).toEqual([1280, 720, 30, 60, 99]);
    expect(c.mount).toEqual({ x_m: 1.3, y_m: 0, z_m: 2.3, pitch_deg: 0, yaw_deg: 0, roll_deg: 0, fov_deg: 100 });
    expect(c.autopilot).toBe(false);
    expect(c.upload).toBe(true);
  });

  it('reads the scripted-route mode and the recording camera', () => {
    const c = parseConfig('?autopilot=1&seed=7&duration_s=32&size=640x360&fov=90&mount=1.5,0,1.6,-5,0,0&city=manhattan-midtown');
    expect([c.autopilot, c.seed, c.durationS, c.width, c.height]).toEqual([true, 7, 32, 640, 360]);
    expect(c.mount).toEqual({ x_m: 1.5, y_m: 0, z_m: 1.6, pitch_deg: -5, yaw_deg: 0, roll_deg: 0, fov_deg: 90 });
    expect(c.cityUrl).toBe('/cities/manhattan-midtown.json');
    expect(parseConfig('?size=641x361').width).toBe(640); // even sizes only
  });

  it('plays the real East Village by default and the generated grid with ?city=grid', () => {
    expect(parseConfig('').cityUrl).toBe('/cities/east-village.json');
    expect(parseConfig('?city=').cityUrl).toBe('/cities/east-village.json');
    const grid = parseConfig('?city=grid&city_seed=5');
    expect([grid.cityUrl, grid.citySeed]).toEqual([null, 5]);
  });
});
