/**
 * The default city, generated without any download: a Manhattan-proportioned grid of one-way and
 * two-way avenues and streets with lots of realistic building heights, as a city object of format v1.
 */
import type { City, CityBuilding, CityEdge, CityNode, NodeControl } from './city';
import type { Vec2 } from './geometry';
import { Rng } from './rng';

export interface GridOptions {
  seed: number;
  avenues: number;
  streets: number;
  /** Curb-to-curb block size between two streets (north-south), metres. */
  blockNS_m: number;
  /** Curb-to-curb block size between two avenues (east-west), metres. */
  blockEW_m: number;
  avenueWidth_m: number;
  streetWidth_m: number;
  majorStreetWidth_m: number;
  sidewalk_m: number;
}

export const DEFAULT_GRID: Omit<GridOptions, 'seed'> = {
  avenues: 5,
  streets: 10,
  blockNS_m: 80,
  blockEW_m: 274,
  avenueWidth_m: 30,
  streetWidth_m: 18,
  majorStreetWidth_m: 30,
  sidewalk_m: 4.5,
};

const AVENUE_NAMES = ['10th Avenue', '9th Avenue', '8th Avenue', '7th Avenue', '6th Avenue', '5th Avenue',
  'Madison Avenue', 'Park Avenue', 'Lexington Avenue', '3rd Avenue', '2nd Avenue', '1st Avenue'];

function ordinal(n: number): string {
  const s = n % 100 >= 11 && n % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th';
  return `${n}${s}`;
}

/** Log-normal building height with a mid-rise median and occasional towers, in metres. */
export function drawHeight(rng: Rng, onAvenue: boolean): number {
  if (rng.chance(onAvenue ? 0.07 : 0.02)) return rng.range(110, 330); // towers
  const median = onAvenue ? 38 : 21;
  const h = median * Math.exp((onAvenue ? 0.6 : 0.45) * rng.normal());
  return Math.min(420, Math.max(7, h));
}

/** Generates the grid city for a seed; the same seed always gives the same city. */
export function generateCity(seed: number, options: Partial<Omit<GridOptions, 'seed'>> = {}): City {
  const o: GridOptions = { ...DEFAULT_GRID, ...options, seed };
  const rng = new Rng(seed);
  const layoutRng = rng.fork(1);
  const buildingRng = rng.fork(2);

  // Avenues run north-south (along y) at x positions; streets east-west at y positions.
  const nA = o.avenues;
  const nS = o.streets;
  const twoWayAvenue = Math.floor(nA / 2);
  const avenueWidth = Array.from({ length: nA }, () => o.avenueWidth_m);
  const streetMajor = Array.from({ length: nS }, (_, j) => j % 4 === 2);
  const streetWidth = streetMajor.map((m) => (m ? o.majorStreetWidth_m : o.streetWidth_m));
  const xs: number[] = [0];
  for (let i = 1; i < nA; i++) xs.push(xs[i - 1] + o.blockEW_m + (avenueWidth[i - 1] + avenueWidth[i]) / 2);
  const ys: number[] = [0];
  for (let j = 1; j < nS; j++) ys.push(ys[j - 1] + o.blockNS_m + (streetWidth[j - 1] + streetWidth[j]) / 2);
  const cx = xs[nA - 1] / 2;
  const cy = ys[nS - 1] / 2;
  for (let i = 0; i < nA; i++) xs[i] = Math.round((xs[i] - cx) * 100) / 100;
  for (let j = 0; j < nS; j++) ys[j] = Math.round((ys[j] - cy) * 100) / 100;

  const nodeId = (i: number, j: number) => `n${i}_${j}`;
  const nodes: CityNode[] = [];
  for (let i = 0; i < nA; i++) {
    for (let j = 0; j < nS; j++) {
      const boundaryI = i === 0 || i === nA - 1;
      const boundaryJ = j === 0 || j === nS - 1;
      let control: NodeControl = 'signal';
      if (boundaryI && boundaryJ) control = 'none';
      else if (!streetMajor[j] && i !== twoWayAvenue && layoutRng.chance(0.18)) control = 'stop';
      nodes.push({ id: nodeId(i, j), x_m: xs[i], y_m: ys[j], control });
    }
  }

  const edges: CityEdge[] = [];
  const avenueOffset = Math.max(0, Math.floor((AVENUE_NAMES.length - nA) / 2));
  for (let i = 0; i < nA; i++) {
    const twoWay = i === twoWayAvenue;
    const north = i % 2 === 0;
    for (let j = 0; j + 1 < nS; j++) {
      const a = nodeId(i, j);
      const b = nodeId(i, j + 1);
      const pa: Vec2 = [xs[i], ys[j]];
      const pb: Vec2 = [xs[i], ys[j + 1]];
      const forward = twoWay || north;
      edges.push({
        id: `av${i}_${j}`, from: forward ? a : b, to: forward ? b : a, points: forward ? [pa, pb] : [pb, pa],
        width_m: avenueWidth[i], lanes_forward: twoWay ? 2 : 4, lanes_backward: twoWay ? 2 : 0,
        oneway: twoWay ? 'two_way' : 'forward', name: AVENUE_NAMES[(avenueOffset + i) % AVENUE_NAMES.length],
        kind: 'avenue',
      });
    }
  }
  for (let j = 0; j < nS; j++) {
    const twoWay = streetMajor[j];
    const east = j % 2 === 0;
    const name = `${ordinal(14 + j)} Street`;
    for (let i = 0; i + 1 < nA; i++) {
      const a = nodeId(i, j);
      const b = nodeId(i + 1, j);
      const pa: Vec2 = [xs[i], ys[j]];
      const pb: Vec2 = [xs[i + 1], ys[j]];
      const forward = twoWay || east;
      edges.push({
        id: `st${j}_${i}`, from: forward ? a : b, to: forward ? b : a, points: forward ? [pa, pb] : [pb, pa],
        width_m: streetWidth[j], lanes_forward: twoWay ? 2 : 2, lanes_backward: twoWay ? 2 : 0,
        oneway: twoWay ? 'two_way' : 'forward', name, kind: 'street',
      });
    }
  }

  const buildings: CityBuilding[] = [];
  const gap = 0.25;
  let bid = 0;
  const addBuilding = (x0: number, y0: number, x1: number, y1: number, onAvenue: boolean) => {
    if (x1 - x0 < 4 || y1 - y0 < 4) return;
    let kind: CityBuilding['kind'] = 'building';
    let height = drawHeight(buildingRng, onAvenue);
    const r = buildingRng.next();
    if (r < 0.035) {
      kind = 'garage';
      height = buildingRng.range(8, 16);
    } else if (r < 0.05) {
      kind = 'under_construction';
      height = buildingRng.range(10, 60);
    } else if (r < 0.07) {
      kind = 'other';
    }
    const round = (v: number) => Math.round(v * 100) / 100;
    buildings.push({
      id: `b${bid++}`,
      footprint: [[round(x0), round(y0)], [round(x1), round(y0)], [round(x1), round(y1)], [round(x0), round(y1)]],
      height_m: round(height), ground_m: 0, kind,
    });
  };
  for (let i = 0; i + 1 < nA; i++) {
    for (let j = 0; j + 1 < nS; j++) {
      const lx0 = xs[i] + avenueWidth[i] / 2 + o.sidewalk_m;
      const lx1 = xs[i + 1] - avenueWidth[i + 1] / 2 - o.sidewalk_m;
      const ly0 = ys[j] + streetWidth[j] / 2 + o.sidewalk_m;
      const ly1 = ys[j + 1] - streetWidth[j + 1] / 2 - o.sidewalk_m;
      if (buildingRng.chance(0.04)) continue; // an open plaza now and then
      const midY = (ly0 + ly1) / 2;
      // Corner buildings face the avenues across the whole depth of the block.
      const cornerW = [buildingRng.range(18, 32), buildingRng.range(18, 32)];
      addBuilding(lx0, ly0, lx0 + cornerW[0] - gap, ly1, true);
      addBuilding(lx1 - cornerW[1] + gap, ly0, lx1, ly1, true);
      // Mid-block lots face the streets, one row each side, 7.6 m (25 ft) multiples wide.
      for (const [y0, y1] of [[ly0, midY - gap / 2], [midY + gap / 2, ly1]] as const) {
        let x = lx0 + cornerW[0];
        const end = lx1 - cornerW[1];
        while (end - x > 6) {
          const w = Math.min(end - x, 7.6 * (1 + buildingRng.int(4)) + buildingRng.range(-0.5, 0.5));
          const depthCut = buildingRng.chance(0.3) ? buildingRng.range(0, 8) : 0; // rear yards
          if (y0 < midY) addBuilding(x + gap, y0, x + w - gap, y1 - depthCut, false);
          else addBuilding(x + gap, y0 + depthCut, x + w - gap, y1, false);
          x += w;
        }
      }
    }
  }

  return {
    format: 'scale-diffusion-city', version: 1, name: `grid-${seed}`,
    source: { kind: 'generated', seed }, nodes, edges, buildings,
  };
}
