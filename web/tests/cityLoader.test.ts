import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { listCities, loadCity } from '../src/game/cityLoader';
import { DEFAULT_CITY, parseConfig } from '../src/game/config';

/** Serves web/public/ as the built game would: /cities/... from the files the build copies. */
const servePublic: typeof fetch = async (input) => {
  const path = String(input);
  try {
    const body = readFileSync(new URL(`../public${path}`, import.meta.url), 'utf8');
    return new Response(body, { status: 200, headers: { 'Content-Type': 'application/json' } });
  } catch {
    return new Response('not found', { status: 404 });
  }
};

describe('city loading', () => {
  it('loads the default city file shipped with the game, with its attribution', async () => {
    const loaded = await loadCity(parseConfig('').cityUrl, 1, servePublic);
    expect(loaded.source).toBe(`/cities/${DEFAULT_CITY}.json`);
    expect(loaded.city.name).toBe('East Village');
    expect(loaded.city.source.kind).toBe('nyc-open-data');
    expect(loaded.city.source.attribution).toMatch(/© OpenStreetMap contributors, ODbL/);
    expect(loaded.seed).toBeNull();
  });

  it('generates the grid for ?city=grid, and offers both on the start screen', async () => {
    const cfg = parseConfig('?city=grid&city_seed=3');
    const loaded = await loadCity(cfg.cityUrl, cfg.citySeed, servePublic);
    expect([loaded.city.source.kind, loaded.seed, loaded.source]).toEqual(['generated', 3, null]);
    expect(await listCities(servePublic)).toEqual(['east-village', 'grid']);
  });
});
