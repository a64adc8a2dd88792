/** Plane geometry in the city frame (metres, x east, y north). Pure functions, no allocation in hot paths. */

export type Vec2 = [number, number];

export const DEG = Math.PI / 180;

/** Angle wrapped to (-pi, pi]. */
export function wrapAngle(a: number): number {
  let r = a % (2 * Math.PI);
  if (r <= -Math.PI) r += 2 * Math.PI;
  else if (r > Math.PI) r -= 2 * Math.PI;
  return r;
}

/** Degrees wrapped to [-180, 180]. */
export function wrapDeg(d: number): number {
  let r = d % 360;
  if (r < -180) r += 360;
  else if (r > 180) r -= 360;
  return r;
}

export function dist(ax: number, ay: number, bx: number, by: number): number {
  return Math.hypot(bx - ax, by - ay);
}

export function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** Closest point on segment AB to P: [t in 0..1, squared distance]. */
export function projectOnSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): [number, number] {
  const dx = bx - ax;
  const dy = by - ay;
  const len2 = dx * dx + dy * dy;
  let t = len2 > 0 ? ((px - ax) * dx + (py - ay) * dy) / len2 : 0;
  t = clamp(t, 0, 1);
  const qx = ax + t * dx - px;
  const qy = ay + t * dy - py;
  return [t, qx * qx + qy * qy];
}

/** Signed area of a polygon (positive when counter-clockwise). */
export function signedArea(poly: readonly Vec2[]): number {
  let a = 0;
  for (let i = 0, n = poly.length; i < n; i++) {
    const p = poly[i];
    const q = poly[(i + 1) % n];
    a += p[0] * q[1] - q[0] * p[1];
  }
  return a / 2;
}

export function pointInPolygon(x: number, y: number, poly: readonly Vec2[]): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i];
    const [xj, yj] = poly[j];
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Do segments AB and CD intersect (touching counts)? */
export function segmentsIntersect(
  ax: number, ay: number, bx: number, by: number, cx: number, cy: number, dx: number, dy: number,
): boolean {
  const d1 = cross(cx, cy, dx, dy, ax, ay);
  const d2 = cross(cx, cy, dx, dy, bx, by);
  const d3 = cross(ax, ay, bx, by, cx, cy);
  const d4 = cross(ax, ay, bx, by, dx, dy);
  if (((d1 > 0 && d2 < 0) || (d1 < 0 && d2 > 0)) && ((d3 > 0 && d4 < 0) || (d3 < 0 && d4 > 0))) return true;
  return (d1 === 0 && onSeg(cx, cy, dx, dy, ax, ay)) || (d2 === 0 && onSeg(cx, cy, dx, dy, bx, by)) ||
    (d3 === 0 && onSeg(ax, ay, bx, by, cx, cy)) || (d4 === 0 && onSeg(ax, ay, bx, by, dx, dy));
}

function cross(ax: number, ay: number, bx: number, by: number, px: number, py: number): number {
  return (bx - ax) * (py - ay) - (by - ay) * (px - ax);
}

function onSeg(ax: number, ay: number, bx: number, by: number, px: number, py: number): boolean {
  return Math.min(ax, bx) <= px && px <= Math.max(ax, bx) && Math.min(ay, by) <= py && py <= Math.max(ay, by);
}

/** An oriented box: centre, heading (rad, CCW from +x), half length along heading, half width. */
export interface Obb {
  x: number;
  y: number;
  yaw: number;
  halfLength: number;
  halfWidth: number;
}

/** The four corners of an oriented box, counter-clockwise from front-left. */
export function obbCorners(b: Obb): Vec2[] {
  const c = Math.cos(b.yaw);
  const s = Math.sin(b.yaw);
  const fx = c * b.halfLength;
  const fy = s * b.halfLength;
  const lx = -s * b.halfWidth;
  const ly = c * b.halfWidth;
  return [
    [b.x + fx + lx, b.y + fy + ly],
    [b.x - fx + lx, b.y - fy + ly],
    [b.x - fx - lx, b.y - fy - ly],
    [b.x + fx - lx, b.y + fy - ly],
  ];
}

/** Separating-axis test between two oriented boxes. */
export function obbOverlap(a: Obb, b: Obb): boolean {
  const axes = [a.yaw, a.yaw + Math.PI / 2, b.yaw, b.yaw + Math.PI / 2];
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  for (const ang of axes) {
    const ux = Math.cos(ang);
    const uy = Math.sin(ang);
    const ra = a.halfLength * Math.abs(Math.cos(a.yaw - ang)) + a.halfWidth * Math.abs(Math.sin(a.yaw - ang));
    const rb = b.halfLength * Math.abs(Math.cos(b.yaw - ang)) + b.halfWidth * Math.abs(Math.sin(b.yaw - ang));
    if (Math.abs(dx * ux + dy * uy) > ra + rb) return false;
  }
  return true;
}

/** Does an oriented box touch a circle? */
export function obbCircleOverlap(b: Obb, cx: number, cy: number, r: number): boolean {
  const c = Math.cos(b.yaw);
  const s = Math.sin(b.yaw);
  const dx = cx - b.x;
  const dy = cy - b.y;
  const lx = clamp(dx * c + dy * s, -b.halfLength, b.halfLength);
  const ly = clamp(-dx * s + dy * c, -b.halfWidth, b.halfWidth);
  const ex = dx * c + dy * s - lx;
  const ey = -dx * s + dy * c - ly;
  return ex * ex + ey * ey <= r * r;
}

/** Does an oriented box touch a polygon (any simple polygon, convex or not)? */
export function obbPolygonOverlap(b: Obb, poly: readonly Vec2[]): boolean {
  const corners = obbCorners(b);
  if (pointInPolygon(b.x, b.y, poly)) return true;
  for (const [x, y] of poly) if (obbCircleOverlap(b, x, y, 0)) return true;
  for (let i = 0; i < 4; i++) {
    const p = corners[i];
    const q = corners[(i + 1) % 4];
    for (let j = 0, k = poly.length - 1; j < poly.length; k = j++) {
      if (segmentsIntersect(p[0], p[1], q[0], q[1], poly[k][0], poly[k][1], poly[j][0], poly[j][1])) return true;
    }
  }
  return false;
}

/** A polyline with cumulative arc length, sampled by distance. */
export class Polyline {
  readonly points: Vec2[];
  readonly cum: number[];
  readonly length: number;

  constructor(points: Vec2[]) {
    this.points = points;
    this.cum = [0];
    for (let i = 1; i < points.length; i++) {
      this.cum.push(this.cum[i - 1] + dist(points[i - 1][0], points[i - 1][1], points[i][0], points[i][1]));
    }
    this.length = this.cum[this.cum.length - 1];
  }

  private segmentAt(s: number): number {
    const cum = this.cum;
    let lo = 0;
    let hi = cum.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (cum[mid] <= s) lo = mid;
      else hi = mid - 1;
    }
    return Math.max(0, lo);
  }

  /** Point and heading (rad) at arc length s (clamped to the ends). */
  sample(s: number): { x: number; y: number; heading: number } {
    const n = this.points.length;
    if (n === 1) return { x: this.points[0][0], y: this.points[0][1], heading: 0 };
    const sc = clamp(s, 0, this.length);
    const i = this.segmentAt(sc);
    const a = this.points[i];
    const b = this.points[i + 1];
    const segLen = this.cum[i + 1] - this.cum[i];
    const t = segLen > 0 ? (sc - this.cum[i]) / segLen : 0;
    return { x: a[0] + (b[0] - a[0]) * t, y: a[1] + (b[1] - a[1]) * t, heading: Math.atan2(b[1] - a[1], b[0] - a[0]) };
  }

  /** Closest arc length to P, searching only segments that overlap [sMin, sMax]. */
  project(px: number, py: number, sMin = 0, sMax = Infinity): { s: number; d2: number } {
    let best = { s: 0, d2: Infinity };
    for (let i = 0; i + 1 < this.points.length; i++) {
      if (this.cum[i + 1] < sMin || this.cum[i] > sMax) continue;
      const a = this.points[i];
      const b = this.points[i + 1];
      const [t, d2] = projectOnSegment(px, py, a[0], a[1], b[0], b[1]);
      if (d2 < best.d2) best = { s: this.cum[i] + t * (this.cum[i + 1] - this.cum[i]), d2 };
    }
    return best;
  }

  /** The polyline shifted sideways by `offset` metres (positive to the right of travel). */
  offset(offset: number): Polyline {
    if (offset === 0) return this;
    const pts = this.points;
    const out: Vec2[] = [];
    for (let i = 0; i < pts.length; i++) {
      const prev = pts[Math.max(0, i - 1)];
      const next = pts[Math.min(pts.length - 1, i + 1)];
      let hx = next[0] - prev[0];
      let hy = next[1] - prev[1];
      const l = Math.hypot(hx, hy) || 1;
      hx /= l;
      hy /= l;
      // Right of heading (hx, hy) is (hy, -hx).
      out.push([pts[i][0] + hy * offset, pts[i][1] - hx * offset]);
    }
    return new Polyline(out);
  }

  /** The part between arc lengths s0 and s1 (s0 < s1), as a new polyline. */
  slice(s0: number, s1: number): Polyline {
    const a = this.sample(s0);
    const out: Vec2[] = [[a.x, a.y]];
    for (let i = 1; i + 1 < this.points.length; i++) {
      if (this.cum[i] > s0 && this.cum[i] < s1) out.push([this.points[i][0], this.points[i][1]]);
    }
    const b = this.sample(s1);
    out.push([b.x, b.y]);
    return new Polyline(out);
  }
}

/** A uniform grid over the plane that maps cells to item indices, for fast "what is near here" queries. */
export class SpatialGrid {
  private readonly cells = new Map<number, number[]>();

  constructor(readonly cellSize: number) {}

  private key(ix: number, iy: number): number {
    return (ix + 32768) * 65536 + (iy + 32768);
  }

  /** Registers item `id` in every cell its bounding box touches. */
  insert(id: number, minX: number, minY: number, maxX: number, maxY: number): void {
    const c = this.cellSize;
    for (let ix = Math.floor(minX / c); ix <= Math.floor(maxX / c); ix++) {
      for (let iy = Math.floor(minY / c); iy <= Math.floor(maxY / c); iy++) {
        const k = this.key(ix, iy);
        let list = this.cells.get(k);
        if (!list) this.cells.set(k, (list = []));
        if (list[list.length - 1] !== id) list.push(id);
      }
    }
  }

  /** Items whose boxes touch the cells within `r` of (x, y); may contain duplicates. */
  query(x: number, y: number, r: number, out: number[] = []): number[] {
    out.length = 0;
    const c = this.cellSize;
    for (let ix = Math.floor((x - r) / c); ix <= Math.floor((x + r) / c); ix++) {
      for (let iy = Math.floor((y - r) / c); iy <= Math.floor((y + r) / c); iy++) {
        const list = this.cells.get(this.key(ix, iy));
        if (list) for (const id of list) out.push(id);
      }
    }
    return out;
  }
}
