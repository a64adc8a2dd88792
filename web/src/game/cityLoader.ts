/** Where the city comes from: a city file of format v1 (the NYC importer's output) or the generator. */
import { parseCity, type City } from '../sim/city';
import { generateCity } from '../sim/cityGen';

export interface LoadedCity {
  city: City;
  /** The URL it was loaded from (manifest city.source), or null when generated. */
  source: string | null;
  /** The generator's seed (manifest city.seed), or null when loaded. */
  seed: number | null;
}

export async function loadCity(cityUrl: string | null, citySeed: number, fetchImpl: typeof fetch = fetch): Promise<LoadedCity> {
  if (!cityUrl) return { city: generateCity(citySeed), source: null, seed: citySeed };
  const resp = await fetchImpl(cityUrl);
  if (!resp.ok) throw new Error(`the city file ${cityUrl} could not be loaded: HTTP ${resp.status}`);
  const city = parseCity(await resp.json());
  const seed = city.source.kind === 'generated' && Number.isInteger(city.source.seed) ? city.source.seed! : null;
  return { city, source: cityUrl.slice(0, 256), seed };
}

/** Names of the city files offered next to the game (`/cities/index.json`: ["name", ...]), if any. */
export async function listCities(fetchImpl: typeof fetch = fetch): Promise<string[]> {
  try {
    const resp = await fetchImpl('/cities/index.json');
    if (!resp.ok) return [];
    const names = await resp.json();
    return Array.isArray(names) ? names.filter((n): n is string => typeof n === 'string' && /^[A-Za-z0-9._-]+$/.test(n)) : [];
  } catch {
    return [];
  }
}
