import { describe, expect, it } from 'vitest';
import { CityFormatError, parseCity } from '../src/sim/city';
import { generateCity } from '../src/sim/cityGen';
import { signedArea } from '../src/sim/geometry';
import { RoadNetwork } from '../src/sim/roads';

describe('city', () => {
  const city = generateCity(1);

  it('generates format v1 deterministically from a seed', () => {
    expect(city.format).toBe('scale-diffusion-city');
    expect(city.version).toBe(1);
    expect(city.source).toEqual({ kind: 'generated', seed: 1 });
    expect(JSON.stringify(generateCity(1))).toBe(JSON.stringify(city));
    expect(JSON.stringify(generateCity(2))).not.toBe(JSON.stringify(city));
    // A city file round-trips through JSON and the loader unchanged.
    expect(parseCity(JSON.parse(JSON.stringify(city)))).toEqual(city);
  });

  it('has Manhattan proportions: 80 m x 274 m blocks, 30 m avenues, 18 m streets', () => {
    const avenue = city.edges.find((e) => e.kind === 'avenue')!;
    const street = city.edges.find((e) => e.kind === 'street' && e.oneway === 'forward')!;
    expect(avenue.width_m).toBe(30);
    expect(street.width_m).toBe(18);
    const len = (e: typeof avenue) => Math.hypot(e.points[1][0] - e.points[0][0], e.points[1][1] - e.points[0][1]);
    expect(len(street) - 30).toBeCloseTo(274, 0); // between avenue centre lines, minus half of each avenue
    expect(len(avenue) - 18).toBeCloseTo(80, 0);
    expect(city.edges.some((e) => e.oneway === 'two_way')).toBe(true);
    expect(city.nodes.some((n) => n.control === 'signal')).toBe(true);
    expect(city.nodes.some((n) => n.control === 'stop')).toBe(true);
  });

  it('has counter-clockwise footprints and a realistic height distribution', () => {
    const heights = city.buildings.map((b) => b.height_m).sort((a, b) => a - b);
    for (const b of city.buildings) {
      expect(signedArea(b.footprint)).toBeGreaterThan(0);
      expect(b.footprint.length).toBeGreaterThanOrEqual(3);
    }
    const median = heights[Math.floor(heights.length / 2)];
    expect(median).toBeGreaterThan(15); // mid-rise
    expect(median).toBeLessThan(40);
    expect(heights[heights.length - 1]).toBeGreaterThan(100); // a few towers
    expect(heights.filter((h) => h > 100).length / heights.length).toBeLessThan(0.08);
    // No building stands on a street.
    const net = new RoadNetwork(city);
    for (const b of city.buildings) {
      const cx = b.footprint.reduce((a, p) => a + p[0], 0) / b.footprint.length;
      const cy = b.footprint.reduce((a, p) => a + p[1], 0) / b.footprint.length;
      expect(net.onRoad(cx, cy, 0)).toBe(false);
    }
  });

  it('loads an importer-style city, repairing loose parts and naming bad fields', () => {
    const raw = {
      format: 'scale-diffusion-city', version: 1, name: 'import', source: { kind: 'nyc-open-data', origin_wgs84: [-73.99, 40.74] },
      nodes: [{ id: 'a', x_m: 0, y_m: 0, control: 'signal' }, { id: 'b', x_m: 100, y_m: 5, control: 'weird' }],
      edges: [{ id: 'e', from: 'a', to: 'b', points: [[0, 0], [50, 3], [100, 5]], width_m: 12, lanes_forward: 0, lanes_backward: 0,
        oneway: 'two_way', name: 'W 23 St', kind: 'street' }],
      buildings: [{ id: 'x', footprint: [[0, 10], [0, 20], [10, 20], [10, 10], [0, 10]], height_m: 12, ground_m: 1, kind: 'building' }],
    };
    const c = parseCity(raw);
    expect(c.nodes[1].control).toBe('none');
    expect(c.edges[0].lanes_forward).toBe(1);
    expect(c.edges[0].lanes_backward).toBe(1);
    expect(c.buildings[0].footprint).toHaveLength(4); // closing vertex dropped
    expect(signedArea(c.buildings[0].footprint)).toBeGreaterThan(0); // re-oriented counter-clockwise
    expect(() => parseCity({ ...raw, version: 2 })).toThrow(CityFormatError);
    expect(() => parseCity({ ...raw, edges: [{ ...raw.edges[0], points: [[0, 0], [NaN, 1]] }] })).toThrow(/edges\[0\]\.points\[1\]/);
  });
});
