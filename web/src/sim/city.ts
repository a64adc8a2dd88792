/**
 * City file format v1 ("scale-diffusion-city"), shared with the NYC Open Data importer
 * (`sdctl city import`). Local frame in metres: x east, y north, z up.
 */
import type { Vec2 } from './geometry';
import { signedArea } from './geometry';

export type NodeControl = 'signal' | 'stop' | 'none';
export type Oneway = 'forward' | 'backward' | 'two_way';
export type EdgeKind = 'avenue' | 'street' | 'other';
export type BuildingKind = 'building' | 'garage' | 'under_construction' | 'other';

export interface CityNode {
  id: string;
  x_m: number;
  y_m: number;
  control: NodeControl;
}

export interface CityEdge {
  id: string;
  from: string;
  to: string;
  /** Centerline from `from` to `to`, both ends included. */
  points: Vec2[];
  /** Curb to curb. */
  width_m: number;
  lanes_forward: number;
  lanes_backward: number;
  oneway: Oneway;
  name: string;
  kind: EdgeKind;
}

export interface CityBuilding {
  id: string;
  /** Counter-clockwise, not closed. */
  footprint: Vec2[];
  height_m: number;
  ground_m: number;
  kind: BuildingKind;
}

export interface CitySource {
  kind: 'generated' | 'nyc-open-data';
  seed?: number;
  bbox_wgs84?: [number, number, number, number];
  origin_wgs84?: [number, number];
  /** Credit that must be shown with the city (OpenStreetMap's ODbL notice for imported streets). */
  attribution?: string;
}

export interface City {
  format: 'scale-diffusion-city';
  version: 1;
  name: string;
  source: CitySource;
  nodes: CityNode[];
  edges: CityEdge[];
  buildings: CityBuilding[];
}

export class CityFormatError extends Error {}

function fail(where: string, what: string): never {
  throw new CityFormatError(`${where}: ${what}`);
}

function finite(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(where, `is ${JSON.stringify(v)}; expected a finite number`);
  return v;
}

function point(v: unknown, where: string): Vec2 {
  if (!Array.isArray(v) || v.length < 2) fail(where, 'expected [x_m, y_m]');
  return [finite(v[0], `${where}[0]`), finite(v[1], `${where}[1]`)];
}

/**
 * Checks a parsed city JSON and returns it typed. Repairs what an importer may legitimately leave
 * loose (clockwise footprints, a closing vertex, lane counts of 0 on a two-way street) and rejects
 * what the game cannot use, naming the field.
 */
export function parseCity(raw: unknown): City {
  if (typeof raw !== 'object' || raw === null) fail('city', 'expected a JSON object');
  const o = raw as Record<string, unknown>;
  if (o.format !== 'scale-diffusion-city') fail('city.format', `is ${JSON.stringify(o.format)}; expected "scale-diffusion-city"`);
  if (o.version !== 1) fail('city.version', `is ${JSON.stringify(o.version)}; this game reads version 1`);
  if (typeof o.name !== 'string' || !o.name) fail('city.name', 'expected a non-empty string');
  const source = { ...((o.source ?? { kind: 'generated' }) as CitySource) };
  if (source.attribution !== undefined && typeof source.attribution !== 'string') {
    fail('city.source.attribution', `is ${JSON.stringify(source.attribution)}; expected a string`);
  }
  if (!Array.isArray(o.nodes) || !Array.isArray(o.edges) || !Array.isArray(o.buildings)) {
    fail('city', 'expected arrays nodes, edges and buildings');
  }
  const nodes: CityNode[] = (o.nodes as Record<string, unknown>[]).map((n, i) => {
    const where = `nodes[${i}]`;
    const control = n.control === 'signal' || n.control === 'stop' ? n.control : 'none';
    return { id: String(n.id), x_m: finite(n.x_m, `${where}.x_m`), y_m: finite(n.y_m, `${where}.y_m`), control };
  });
  const ids = new Set(nodes.map((n) => n.id));
  const edges: CityEdge[] = [];
  (o.edges as Record<string, unknown>[]).forEach((e, i) => {
    const where = `edges[${i}]`;
    if (!ids.has(String(e.from)) || !ids.has(String(e.to))) fail(where, `from/to names a node that does not exist`);
    if (!Array.isArray(e.points) || e.points.length < 2) fail(`${where}.points`, 'expected at least two points');
    const points = (e.points as unknown[]).map((p, k) => point(p, `${where}.points[${k}]`));
    const oneway: Oneway = e.oneway === 'forward' || e.oneway === 'backward' ? e.oneway : 'two_way';
    let lf = Math.max(0, Math.round(Number(e.lanes_forward ?? 1)) || 0);
    let lb = Math.max(0, Math.round(Number(e.lanes_backward ?? 1)) || 0);
    if (oneway === 'forward') lb = 0;
    if (oneway === 'backward') lf = 0;
    if (oneway !== 'backward' && lf === 0) lf = 1;
    if (oneway !== 'forward' && lb === 0) lb = 1;
    const width = Number.isFinite(e.width_m as number) && (e.width_m as number) > 2 ? (e.width_m as number) : 3.3 * (lf + lb) + 2;
    const kind: EdgeKind = e.kind === 'avenue' || e.kind === 'street' ? e.kind : 'other';
    if (e.from === e.to) return; // a loop adds nothing to a street graph
    edges.push({
      id: String(e.id), from: String(e.from), to: String(e.to), points, width_m: width,
      lanes_forward: lf, lanes_backward: lb, oneway, name: typeof e.name === 'string' ? e.name : '', kind,
    });
  });
  const buildings: CityBuilding[] = [];
  (o.buildings as Record<string, unknown>[]).forEach((b, i) => {
    const where = `buildings[${i}]`;
    if (!Array.isArray(b.footprint)) fail(`${where}.footprint`, 'expected a list of points');
    let fp = (b.footprint as unknown[]).map((p, k) => point(p, `${where}.footprint[${k}]`));
    if (fp.length > 1 && fp[0][0] === fp[fp.length - 1][0] && fp[0][1] === fp[fp.length - 1][1]) fp = fp.slice(0, -1);
    if (fp.length < 3) return;
    if (signedArea(fp) < 0) fp = fp.reverse();
    const kinds: BuildingKind[] = ['building', 'garage', 'under_construction', 'other'];
    buildings.push({
      id: String(b.id), footprint: fp,
      height_m: Math.max(1, Number.isFinite(b.height_m as number) ? (b.height_m as number) : 10),
      ground_m: Number.isFinite(b.ground_m as number) ? (b.ground_m as number) : 0,
      kind: kinds.includes(b.kind as BuildingKind) ? (b.kind as BuildingKind) : 'other',
    });
  });
  if (edges.length === 0) fail('city.edges', 'has no usable street');
  return { format: 'scale-diffusion-city', version: 1, name: o.name, source, nodes, edges, buildings };
}
