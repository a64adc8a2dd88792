/**
 * The Three.js scene of a city: ground, streets with markings, buildings (merged into a few draw
 * calls), traffic lights and stop signs, and instanced NPC cars and pedestrians updated per frame.
 * World frame: x east, y north, z up — the same metres as the simulation.
 */
import * as THREE from 'three';
import type { City } from '../sim/city';
import { Polyline } from '../sim/geometry';
import { Rng } from '../sim/rng';
import type { RoadNetwork } from '../sim/roads';
import type { Signals } from '../sim/signals';
import type { Traffic } from '../sim/traffic';
import { MeshBuilder, bakeLight, hex, type V3 } from './meshBuilder';

// Layers on the ground; the ground itself is tiled so that no triangle is huge (software GL
// interpolates depth across a kilometre-wide triangle too coarsely for centimetre layers).
const Z_ROAD = 0.04;
const Z_JUNCTION = 0.07;
const Z_MARK = 0.11;
const GROUND_TILE_M = 100;

const ASPHALT = hex(0x2e3034);
const CONCRETE = hex(0x9c9a94);
const WHITE = hex(0xe8e8e2);
const YELLOW = hex(0xe0b23a);

const FACADES = [0x9a5b45, 0x8c4f3c, 0xb07a5c, 0xc9b79a, 0xd8d0c0, 0x7f8a93, 0x6f7c86, 0xa8a39a, 0x8b6a52, 0xbfb2a0];
const CAR_COLORS = [0xf2c200, 0xf2c200, 0x1d1d1f, 0xd9d9d9, 0x2f4f8f, 0x8f1d1d, 0x6c7a89, 0xf0f0f0];
const CLOTHES = [0x2b3a55, 0x6b2d2d, 0x3d5a3d, 0x222222, 0x8a7355, 0x5a4a7a];

/**
 * Facades with windows computed in the shader from the wall's UVs (one unit = one window bay by one
 * storey) instead of a texture: software GL samples a texture slowly, and a few comparisons are
 * cheap. Where windows get smaller than a few pixels they fade to their average, like a mipmap.
 */
function facadeMaterial(): THREE.ShaderMaterial {
  return new THREE.ShaderMaterial({
    uniforms: THREE.UniformsUtils.merge([THREE.UniformsLib.fog]),
    fog: true,
    vertexShader: /* glsl */ `
      attribute vec3 color;
      varying vec3 vColor;
      varying vec2 vUv;
      #include <fog_pars_vertex>
      void main() {
        vColor = color;
        vUv = uv;
        vec4 mvPosition = modelViewMatrix * vec4(position, 1.0);
        gl_Position = projectionMatrix * mvPosition;
        #include <fog_vertex>
      }`,
    fragmentShader: /* glsl */ `
      varying vec3 vColor;
      varying vec2 vUv;
      #include <fog_pars_fragment>
      void main() {
        vec2 f = fract(vUv);
        float window = step(0.25, f.x) * step(f.x, 0.75) * step(0.22, f.y) * step(f.y, 0.78);
        float size = max(fwidth(vUv.x), fwidth(vUv.y));
        float detail = clamp(1.0 - (size - 0.12) / 0.3, 0.0, 1.0);
        float glass = mix(0.28, window, detail);
        vec3 pane = vec3(0.10, 0.13, 0.18) + 0.12 * f.y;
        gl_FragColor = vec4(mix(vColor, pane * (0.6 + 0.8 * vColor), glass * 0.85), 1.0);
        #include <colorspace_fragment>
        #include <fog_fragment>
      }`,
  });
}

export class CityScene {
  readonly scene = new THREE.Scene();
  private readonly cars: THREE.InstancedMesh;
  private readonly carCabins: THREE.InstancedMesh;
  private readonly peds: THREE.InstancedMesh;
  private readonly pedHeads: THREE.InstancedMesh;
  private readonly lamps: THREE.InstancedMesh;
  /** Per lamp: [DirEdge, which lamp 0 red 1 yellow 2 green]. */
  private readonly lampInfo: [number, number][] = [];
  readonly player: THREE.Group;
  private readonly m = new THREE.Matrix4();
  private readonly q = new THREE.Quaternion();
  private readonly zAxis = new THREE.Vector3(0, 0, 1);
  private readonly v = new THREE.Vector3();
  private readonly one = new THREE.Vector3(1, 1, 1);
  private readonly zero = new THREE.Vector3(0, 0, 0);
  private readonly lampColors = {
    on: [hex(0xff2a1a), hex(0xffb81c), hex(0x2dff6a)],
    off: [hex(0x3a0d0a), hex(0x3a2c08), hex(0x0a3a18)],
  };

  constructor(readonly city: City, readonly net: RoadNetwork, readonly signals: Signals, traffic: Traffic) {
    const scene = this.scene;
    scene.background = hex(0xaecbe3);
    scene.fog = new THREE.Fog(hex(0xaecbe3), 180, 760);

    scene.add(this.buildGround());
    scene.add(this.buildBuildings());
    this.buildSignsAndLights();
    this.lamps = this.buildLamps();
    scene.add(this.lamps);

    // NPC cars: a body and a glasshouse per car, instanced.
    const n = Math.max(1, traffic.cars.length);
    const unlit = (color?: THREE.Color) => new THREE.MeshBasicMaterial({ vertexColors: true, color: color ?? new THREE.Color(1, 1, 1) });
    this.cars = new THREE.InstancedMesh(bakeLight(new THREE.BoxGeometry(4.5, 1.85, 0.8).translate(0, 0, 0.75)), unlit(), n);
    this.carCabins = new THREE.InstancedMesh(bakeLight(new THREE.BoxGeometry(2.3, 1.65, 0.6).translate(-0.3, 0, 1.45)),
      unlit(hex(0x2a3340)), n);
    traffic.cars.forEach((c, i) => this.cars.setColorAt(i, hex(CAR_COLORS[c.color % CAR_COLORS.length])));
    this.cars.count = traffic.cars.length;
    this.carCabins.count = traffic.cars.length;
    scene.add(this.cars, this.carCabins);

    const np = Math.max(1, traffic.peds.length);
    this.peds = new THREE.InstancedMesh(bakeLight(new THREE.BoxGeometry(0.42, 0.3, 1.45).translate(0, 0, 0.725)), unlit(), np);
    this.pedHeads = new THREE.InstancedMesh(bakeLight(new THREE.BoxGeometry(0.24, 0.24, 0.26).translate(0, 0, 1.6)),
      unlit(hex(0xc69c7e)), np);
    traffic.peds.forEach((p, i) => this.peds.setColorAt(i, hex(CLOTHES[p.color % CLOTHES.length])));
    this.peds.count = traffic.peds.length;
    this.pedHeads.count = traffic.peds.length;
    scene.add(this.peds, this.pedHeads);
    for (const mesh of [this.cars, this.carCabins, this.peds, this.pedHeads]) {
      mesh.instanceMatrix.setUsage(THREE.DynamicDrawUsage);
      mesh.frustumCulled = false;
    }

    this.player = new THREE.Group();
    const body = new THREE.Mesh(bakeLight(new THREE.BoxGeometry(4.9, 2.0, 0.85).translate(0, 0, 0.75)), unlit(hex(0xd23b2a)));
    const cabin = new THREE.Mesh(bakeLight(new THREE.BoxGeometry(2.5, 1.8, 0.62).translate(-0.35, 0, 1.48)), unlit(hex(0x222a33)));
    this.player.add(body, cabin);
    scene.add(this.player);
  }

  private buildGround(): THREE.Mesh {
    const b = new MeshBuilder();
    const { minX, minY, maxX, maxY } = this.net.bounds;
    const pad = 800;
    for (let x = minX - pad; x < maxX + pad; x += GROUND_TILE_M) {
      for (let y = minY - pad; y < maxY + pad; y += GROUND_TILE_M) {
        const x1 = x + GROUND_TILE_M, y1 = y + GROUND_TILE_M;
        b.quad([x, y, 0], [x1, y, 0], [x1, y1, 0], [x, y1, 0], [0, 0, 1], CONCRETE);
      }
    }
    const net = this.net;
    // Streets: a ribbon per edge, and a disc over each junction.
    net.edges.forEach((e, k) => {
      const line = net.edgeLines[k];
      const left = line.offset(-e.width_m / 2).points;
      const right = line.offset(e.width_m / 2).points;
      for (let i = 0; i + 1 < line.points.length; i++) {
        b.quad([left[i][0], left[i][1], Z_ROAD], [right[i][0], right[i][1], Z_ROAD], [right[i + 1][0], right[i + 1][1], Z_ROAD],
          [left[i + 1][0], left[i + 1][1], Z_ROAD], [0, 0, 1], ASPHALT);
      }
    });
    net.junctions.forEach((j, n) => {
      if (j.degree < 2) return;
      let r = 0;
      net.edges.forEach((e) => {
        if (e.from === net.nodes[n].id || e.to === net.nodes[n].id) r = Math.max(r, e.width_m / 2);
      });
      const [cx, cy] = net.nodePos(n);
      const center = b.vertex([cx, cy, Z_JUNCTION], [0, 0, 1], ASPHALT);
      const segs = 20;
      const ring: number[] = [];
      for (let i = 0; i < segs; i++) {
        const a = (i / segs) * Math.PI * 2;
        ring.push(b.vertex([cx + Math.cos(a) * r, cy + Math.sin(a) * r, Z_JUNCTION], [0, 0, 1], ASPHALT));
      }
      for (let i = 0; i < segs; i++) b.tri(center, ring[i], ring[(i + 1) % segs]);
    });
    this.buildMarkings(b);
    const mesh = new THREE.Mesh(b.build(), new THREE.MeshBasicMaterial({ vertexColors: true }));
    mesh.matrixAutoUpdate = false;
    return mesh;
  }

  /** Lane lines, centre lines, stop lines and zebra crosswalks. */
  private buildMarkings(b: MeshBuilder): void {
    const net = this.net;
    const dashed = (line: Polyline, width: number, color: THREE.Color, dash: number, gap: number) => {
      for (let s = gap / 2; s + dash <= line.length; s += dash + gap) {
        const p = line.sample(s + dash / 2);
        b.groundRect(p.x, p.y, p.heading, dash / 2, width / 2, Z_MARK, color);
      }
    };
    const solid = (line: Polyline, width: number, color: THREE.Color) => {
      for (let i = 0; i + 1 < line.points.length; i++) {
        const a = line.points[i];
        const c = line.points[i + 1];
        const len = Math.hypot(c[0] - a[0], c[1] - a[1]);
        if (len < 0.05) continue;
        b.groundRect((a[0] + c[0]) / 2, (a[1] + c[1]) / 2, Math.atan2(c[1] - a[1], c[0] - a[0]), len / 2, width / 2, Z_MARK, color);
      }
    };
    net.edges.forEach((_e, k) => {
      const [t0, t1] = net.edgeTrims[k];
      const base = net.edgeLines[k];
      if (base.length - t0 - t1 < 2) return;
      const mid = base.slice(t0, base.length - t1);
      const [fwd, bwd] = net.edgeDirs[k];
      const de = net.dirEdges[fwd >= 0 ? fwd : bwd];
      const total = (de.lanes + de.oppositeLanes) * de.laneWidth;
      // Carriageway edges (parking lanes lie outside them).
      solid(mid.offset(-total / 2), 0.15, WHITE);
      solid(mid.offset(total / 2), 0.15, WHITE);
      if (fwd >= 0 && bwd >= 0) {
        // Double yellow between the directions, measured in the edge's from->to frame.
        const divider = -total / 2 + net.dirEdges[bwd].lanes * de.laneWidth;
        solid(mid.offset(divider - 0.12), 0.12, YELLOW);
        solid(mid.offset(divider + 0.12), 0.12, YELLOW);
      }
      for (const d of [fwd, bwd]) {
        if (d < 0) continue;
        const dd = net.dirEdges[d];
        const dirLine = d === fwd ? mid : new Polyline([...mid.points].reverse());
        for (let lane = 1; lane < dd.lanes; lane++) {
          const off = (net.laneOffset(dd, lane - 1) + net.laneOffset(dd, lane)) / 2;
          dashed(dirLine.offset(off), 0.12, WHITE, 3, 9);
        }
        // Stop line across this direction's lanes, where a junction is ahead.
        if (net.junctions[dd.to].degree >= 3) {
          const stopS = dd.line.length - dd.endTrim;
          const p = dd.line.sample(stopS);
          const o0 = net.laneOffset(dd, 0) - dd.laneWidth / 2;
          const o1 = net.laneOffset(dd, dd.lanes - 1) + dd.laneWidth / 2;
          const oc = (o0 + o1) / 2;
          const rx = Math.sin(p.heading), ry = -Math.cos(p.heading);
          b.groundRect(p.x + rx * oc - Math.cos(p.heading) * 0.25, p.y + ry * oc - Math.sin(p.heading) * 0.25,
            p.heading, 0.25, (o1 - o0) / 2, Z_MARK, WHITE);
        }
      }
    });
    for (const cw of net.crosswalks()) {
      const len = Math.hypot(cw.b[0] - cw.a[0], cw.b[1] - cw.a[1]) - 2;
      const across = Math.atan2(cw.b[1] - cw.a[1], cw.b[0] - cw.a[0]);
      for (let s = -len / 2 + 0.4; s <= len / 2 - 0.4; s += 1.2) {
        b.groundRect(cw.center[0] + Math.cos(across) * s, cw.center[1] + Math.sin(across) * s, cw.streetHeading, 1.5, 0.3, Z_MARK, WHITE);
      }
    }
  }

  /**
   * Buildings, merged per city chunk: few draw calls, and chunks out of view are culled and the
   * rest drawn front to back, so hidden facades cost little in software GL.
   */
  private buildBuildings(): THREE.Group {
    const rng = new Rng(7);
    const roof = hex(0x5d5a55);
    const chunk = 120;
    const builders = new Map<string, MeshBuilder>();
    for (const bd of this.city.buildings) {
      const fp = bd.footprint;
      let cx = 0, cy = 0;
      for (const [x, y] of fp) { cx += x / fp.length; cy += y / fp.length; }
      const key = `${Math.floor(cx / chunk)},${Math.floor(cy / chunk)}`;
      let b = builders.get(key);
      if (!b) builders.set(key, (b = new MeshBuilder()));
      let base = FACADES[rng.int(FACADES.length)];
      if (bd.height_m > 90) base = rng.pick([0x6d8297, 0x7d94a8, 0x8a9aa6, 0x5f7383]);
      if (bd.kind === 'garage') base = 0x8d8d88;
      if (bd.kind === 'under_construction') base = 0xb3a58a;
      const color = hex(base).multiplyScalar(rng.range(0.85, 1.1));
      // Streets are flat (city format v1 §6): buildings stand on z = 0 whatever their ground_m.
      const z0 = 0;
      const z1 = bd.height_m;
      const floors = bd.height_m / 3.4;
      for (let i = 0; i < fp.length; i++) {
        const p = fp[i];
        const q = fp[(i + 1) % fp.length];
        const dx = q[0] - p[0];
        const dy = q[1] - p[1];
        const len = Math.hypot(dx, dy);
        if (len < 0.01) continue;
        const n: V3 = [dy / len, -dx / len, 0];
        const bays = Math.max(1, Math.round(len / 3.8));
        const uvs: [number, number][] = bd.kind === 'garage'
          ? [[0.02, 0.02], [0.02, 0.02], [0.02, 0.02], [0.02, 0.02]]
          : [[0, 0], [bays, 0], [bays, floors], [0, floors]];
        b.quad([p[0], p[1], z0], [q[0], q[1], z0], [q[0], q[1], z1], [p[0], p[1], z1], n, color, uvs);
      }
      const contour = fp.map(([x, y]) => new THREE.Vector2(x, y));
      const tris = THREE.ShapeUtils.triangulateShape(contour, []);
      const first = b.vertexCount;
      for (const [x, y] of fp) b.vertex([x, y, z1], [0, 0, 1], roof);
      for (const [a, c, d] of tris) b.tri(first + a, first + c, first + d);
    }
    const mat = facadeMaterial();
    const group = new THREE.Group();
    for (const b of builders.values()) {
      const mesh = new THREE.Mesh(b.build(), mat);
      mesh.matrixAutoUpdate = false;
      group.add(mesh);
    }
    return group;
  }

  /** Poles with signal heads on the far right of each signalled approach; stop signs at stop lines. */
  private buildSignsAndLights(): void {
    const net = this.net;
    const poles = new MeshBuilder();
    const grey = hex(0x2f3336);
    const red = hex(0xc0161a);
    const box = (cx: number, cy: number, z0: number, z1: number, hw: number, hl: number, heading: number, color: THREE.Color) => {
      const c = Math.cos(heading), s = Math.sin(heading);
      const corners: [number, number][] = [[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]].map(([a, d]) => [cx + c * a - s * d, cy + s * a + c * d]);
      for (let i = 0; i < 4; i++) {
        const p = corners[i], q = corners[(i + 1) % 4];
        const dx = q[0] - p[0], dy = q[1] - p[1], len = Math.hypot(dx, dy) || 1;
        poles.quad([p[0], p[1], z0], [q[0], q[1], z0], [q[0], q[1], z1], [p[0], p[1], z1], [dy / len, -dx / len, 0], color);
      }
      poles.quad([corners[3][0], corners[3][1], z1], [corners[0][0], corners[0][1], z1], [corners[1][0], corners[1][1], z1],
        [corners[2][0], corners[2][1], z1], [0, 0, 1], color);
    };
    for (const de of net.dirEdges) {
      const node = de.to;
      const e = net.edges[de.edge];
      const stop = de.line.sample(de.line.length - de.endTrim);
      const rx = Math.sin(stop.heading), ry = -Math.cos(stop.heading);
      const fx = Math.cos(stop.heading), fy = Math.sin(stop.heading);
      if (this.signals.hasLights(node) && this.signals.group[de.index] >= 0) {
        const [nx, ny] = net.nodePos(node);
        const far = de.endTrim;
        const px = nx + fx * far + rx * (e.width_m / 2 + 1.2);
        const py = ny + fy * far + ry * (e.width_m / 2 + 1.2);
        box(px, py, 0, 5.6, 0.09, 0.09, stop.heading, grey);
        // Mast arm over the road, and the head hanging at its end facing the approaching traffic.
        const armLen = Math.min(e.width_m / 2, 7);
        const ax = px - rx * armLen / 2, ay = py - ry * armLen / 2;
        box(ax, ay, 5.45, 5.6, armLen / 2, 0.06, stop.heading + Math.PI / 2, grey);
        const hx = px - rx * armLen, hy = py - ry * armLen;
        box(hx, hy, 4.15, 5.45, 0.2, 0.16, stop.heading, hex(0x1d2022));
        this.lampInfo.push([de.index, 0], [de.index, 1], [de.index, 2]);
        this.lampPos.push([hx - fx * 0.18, hy - fy * 0.18, stop.heading]);
      } else if (net.nodes[node].control === 'stop' && net.junctions[node].degree >= 3) {
        const px = stop.x + rx * (e.width_m / 2 + 0.8) + fx * 0.5;
        const py = stop.y + ry * (e.width_m / 2 + 0.8) + fy * 0.5;
        box(px, py, 0, 2.1, 0.04, 0.04, stop.heading, grey);
        // An octagon facing the traffic.
        const first = poles.vertexCount;
        const n: V3 = [-fx, -fy, 0];
        poles.vertex([px - fx * 0.06, py - fy * 0.06, 2.45], n, red);
        for (let i = 0; i < 8; i++) {
          const a = (i / 8) * Math.PI * 2 + Math.PI / 8;
          poles.vertex([px - fx * 0.06 + rx * Math.cos(a) * 0.4, py - fy * 0.06 + ry * Math.cos(a) * 0.4, 2.45 + Math.sin(a) * 0.4], n, red);
        }
        for (let i = 0; i < 8; i++) poles.tri(first, first + 1 + ((i + 1) % 8), first + 1 + i);
      }
    }
    const mesh = new THREE.Mesh(poles.build(), new THREE.MeshBasicMaterial({ vertexColors: true, side: THREE.DoubleSide }));
    mesh.matrixAutoUpdate = false;
    this.scene.add(mesh);
  }

  private readonly lampPos: [number, number, number][] = [];

  private buildLamps(): THREE.InstancedMesh {
    const n = Math.max(1, this.lampInfo.length);
    const mesh = new THREE.InstancedMesh(new THREE.BoxGeometry(0.06, 0.26, 0.26), new THREE.MeshBasicMaterial(), n);
    this.lampInfo.forEach(([, which], i) => {
      const [x, y, heading] = this.lampPos[Math.floor(i / 3)];
      const z = 5.22 - which * 0.37;
      this.q.setFromAxisAngle(this.zAxis, heading);
      this.m.compose(this.v.set(x, y, z), this.q, this.one);
      mesh.setMatrixAt(i, this.m);
      mesh.setColorAt(i, this.lampColors.off[which]);
    });
    mesh.count = this.lampInfo.length;
    return mesh;
  }

  private placeInstance(mesh: THREE.InstancedMesh, i: number, x: number, y: number, yaw: number, visible = true): void {
    this.q.setFromAxisAngle(this.zAxis, yaw);
    this.m.compose(this.v.set(x, y, 0), this.q, visible ? this.one : this.zero);
    mesh.setMatrixAt(i, this.m);
  }

  /** Moves cars, pedestrians and the player, and switches the lamps, to the world's state. */
  update(traffic: Traffic, t_s: number, player: { x: number; y: number; yaw: number }): void {
    traffic.cars.forEach((c, i) => {
      this.placeInstance(this.cars, i, c.x, c.y, c.yaw);
      this.placeInstance(this.carCabins, i, c.x, c.y, c.yaw);
    });
    this.cars.instanceMatrix.needsUpdate = true;
    this.carCabins.instanceMatrix.needsUpdate = true;
    traffic.peds.forEach((p, i) => {
      this.placeInstance(this.peds, i, p.x, p.y, p.yaw, p.away_s === 0);
      this.placeInstance(this.pedHeads, i, p.x, p.y, p.yaw, p.away_s === 0);
    });
    this.peds.instanceMatrix.needsUpdate = true;
    this.pedHeads.instanceMatrix.needsUpdate = true;
    this.lampInfo.forEach(([de, which], i) => {
      const st = this.signals.stateFor(de, t_s);
      const on = (st === 'red' && which === 0) || (st === 'yellow' && which === 1) || (st === 'green' && which === 2);
      this.lamps.setColorAt(i, on ? this.lampColors.on[which] : this.lampColors.off[which]);
    });
    if (this.lamps.instanceColor) this.lamps.instanceColor.needsUpdate = true;
    this.player.position.set(player.x, player.y, 0);
    this.player.rotation.set(0, 0, player.yaw);
  }
}
