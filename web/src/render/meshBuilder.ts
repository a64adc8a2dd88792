/** Accumulates triangles with normals, vertex colours and UVs into one BufferGeometry (one draw call). */
import * as THREE from 'three';

export type V3 = [number, number, number];

export class MeshBuilder {
  private pos: number[] = [];
  private nor: number[] = [];
  private col: number[] = [];
  private uv: number[] = [];
  private idx: number[] = [];

  get vertexCount(): number {
    return this.pos.length / 3;
  }

  vertex(p: V3, n: V3, c: THREE.Color, u = 0.02, v = 0.02): number {
    this.pos.push(p[0], p[1], p[2]);
    this.nor.push(n[0], n[1], n[2]);
    const f = lightFactor(n);
    this.col.push(c.r * f, c.g * f, c.b * f);
    this.uv.push(u, v);
    return this.vertexCount - 1;
  }

  tri(a: number, b: number, c: number): void {
    this.idx.push(a, b, c);
  }

  /** A quad a-b-c-d, counter-clockwise seen from the side the normal points to. */
  quad(a: V3, b: V3, c: V3, d: V3, n: V3, color: THREE.Color, uvs?: [number, number][]): void {
    const i0 = this.vertex(a, n, color, ...(uvs?.[0] ?? [0.02, 0.02]));
    const i1 = this.vertex(b, n, color, ...(uvs?.[1] ?? [0.02, 0.02]));
    const i2 = this.vertex(c, n, color, ...(uvs?.[2] ?? [0.02, 0.02]));
    const i3 = this.vertex(d, n, color, ...(uvs?.[3] ?? [0.02, 0.02]));
    this.tri(i0, i1, i2);
    this.tri(i0, i2, i3);
  }

  /** A flat rectangle on the ground at height z: centre, heading, half length, half width. */
  groundRect(cx: number, cy: number, heading: number, halfLength: number, halfWidth: number, z: number, color: THREE.Color): void {
    const c = Math.cos(heading);
    const s = Math.sin(heading);
    const fx = c * halfLength, fy = s * halfLength, lx = -s * halfWidth, ly = c * halfWidth;
    this.quad([cx - fx - lx, cy - fy - ly, z], [cx + fx - lx, cy + fy - ly, z], [cx + fx + lx, cy + fy + ly, z],
      [cx - fx + lx, cy - fy + ly, z], [0, 0, 1], color);
  }

  build(): THREE.BufferGeometry {
    const g = new THREE.BufferGeometry();
    g.setAttribute('position', new THREE.Float32BufferAttribute(this.pos, 3));
    g.setAttribute('normal', new THREE.Float32BufferAttribute(this.nor, 3));
    g.setAttribute('color', new THREE.Float32BufferAttribute(this.col, 3));
    g.setAttribute('uv', new THREE.Float32BufferAttribute(this.uv, 2));
    g.setIndex(this.vertexCount > 65535 ? new THREE.Uint32BufferAttribute(this.idx, 1) : new THREE.Uint16BufferAttribute(this.idx, 1));
    g.computeBoundingSphere();
    return g;
  }
}

/** Direction towards the sun (unit vector), for lighting baked into vertex colours. */
export const SUN_DIR: V3 = (() => {
  const v = [-0.3, -0.5, 0.8];
  const l = Math.hypot(v[0], v[1], v[2]);
  return [v[0] / l, v[1] / l, v[2] / l] as V3;
})();

/**
 * Sky light plus sunlight on a surface with normal n, as a factor on its albedo. The city never
 * moves its lights, so lighting is baked into vertex colours and every material is unlit: software
 * GL renders an unlit pixel several times faster than a lit one.
 */
export function lightFactor(n: V3): number {
  const sky = 0.62 + 0.28 * n[2];
  const sun = Math.max(0, n[0] * SUN_DIR[0] + n[1] * SUN_DIR[1] + n[2] * SUN_DIR[2]);
  return sky + 0.75 * sun;
}

/** Adds a colour attribute with baked light (white albedo) to a geometry with normals. */
export function bakeLight(g: THREE.BufferGeometry, albedo = new THREE.Color(1, 1, 1)): THREE.BufferGeometry {
  const n = g.getAttribute('normal');
  const colors: number[] = [];
  for (let i = 0; i < n.count; i++) {
    const f = lightFactor([n.getX(i), n.getY(i), n.getZ(i)]);
    colors.push(albedo.r * f, albedo.g * f, albedo.b * f);
  }
  g.setAttribute('color', new THREE.Float32BufferAttribute(colors, 3));
  return g;
}

/** sRGB hex to a linear THREE.Color. */
export function hex(h: number): THREE.Color {
  return new THREE.Color().setHex(h);
}
