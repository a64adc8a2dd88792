/**
 * The game's WebGL view: one renderer on the canvas that is shown and recorded, the recording
 * camera (mount and FOV of the manifest) and the chase camera, the frame-index barcode drawn with
 * scissored clears after everything else, and the diffusion output composited when it is on.
 */
import * as THREE from 'three';
import { barcodeCells } from '../record/barcode';
import { poseAxes, verticalFov, type CameraMount, type Pose } from '../sim/camera';
import type { City } from '../sim/city';
import type { World } from '../sim/world';
import { CityScene } from './cityScene';

export type ViewMode = 'driver' | 'chase';

export class GameView {
  readonly renderer: THREE.WebGLRenderer;
  city: CityScene;
  readonly driverCam: THREE.PerspectiveCamera;
  readonly chaseCam: THREE.PerspectiveCamera;
  private readonly chasePos = new THREE.Vector3();
  private chaseReady = false;
  private readonly basis = new THREE.Matrix4();
  private compositor: { scene: THREE.Scene; cam: THREE.OrthographicCamera; tex: THREE.VideoTexture } | null = null;

  constructor(readonly canvas: HTMLCanvasElement, public width: number, public height: number, city: City, world: World,
    readonly mount: CameraMount) {
    this.renderer = new THREE.WebGLRenderer({
      canvas, antialias: false, alpha: false, preserveDrawingBuffer: false, powerPreference: 'high-performance',
    });
    this.renderer.setPixelRatio(1);
    this.renderer.setSize(width, height, false);
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.city = new CityScene(city, world.net, world.signals, world.traffic);
    this.driverCam = new THREE.PerspectiveCamera(verticalFov(mount.fov_deg, width, height), width / height, 0.5, 800);
    this.chaseCam = new THREE.PerspectiveCamera(60, width / height, 0.5, 800);
  }

  /** Points a Three.js camera along a pose of the city frame (x forward, y left, z up body axes). */
  applyPose(cam: THREE.Camera, p: Pose): void {
    const { forward, left, up } = poseAxes(p);
    // A Three.js camera looks down its -Z with +Y up and +X to the right.
    this.basis.makeBasis(
      new THREE.Vector3(-left[0], -left[1], -left[2]),
      new THREE.Vector3(up[0], up[1], up[2]),
      new THREE.Vector3(-forward[0], -forward[1], -forward[2]),
    );
    cam.quaternion.setFromRotationMatrix(this.basis);
    cam.position.set(p.x_m, p.y_m, p.z_m);
    cam.updateMatrixWorld(true);
  }

  private updateChase(world: World, snap: boolean): void {
    const car = world.player;
    const back = 8.5;
    const target = new THREE.Vector3(car.x - Math.cos(car.yaw) * back, car.y - Math.sin(car.yaw) * back, 3.6);
    if (!this.chaseReady || snap) {
      this.chasePos.copy(target);
      this.chaseReady = true;
    } else {
      this.chasePos.lerp(target, 0.18);
    }
    this.chaseCam.position.copy(this.chasePos);
    this.chaseCam.up.set(0, 0, 1);
    this.chaseCam.lookAt(car.x + Math.cos(car.yaw) * 6, car.y + Math.sin(car.yaw) * 6, 1.2);
    this.chaseCam.updateMatrixWorld(true);
  }

  /** Renders the world from the driver (recording) camera or the chase camera. */
  render(world: World, mode: ViewMode, cameraPoseNow: Pose, snapChase = false): void {
    this.city.update(world.traffic, world.t_s, world.player);
    this.city.player.visible = mode === 'chase';
    let cam: THREE.PerspectiveCamera;
    if (mode === 'driver') {
      this.applyPose(this.driverCam, cameraPoseNow);
      cam = this.driverCam;
    } else {
      this.updateChase(world, snapChase);
      cam = this.chaseCam;
    }
    this.renderer.render(this.city.scene, cam);
  }

  /** Shows a video (the diffusion output) over the whole canvas instead of the render. */
  drawVideo(video: HTMLVideoElement): void {
    if (!this.compositor) {
      const tex = new THREE.VideoTexture(video);
      tex.colorSpace = THREE.SRGBColorSpace;
      const scene = new THREE.Scene();
      scene.add(new THREE.Mesh(new THREE.PlaneGeometry(2, 2), new THREE.MeshBasicMaterial({ map: tex })));
      this.compositor = { scene, cam: new THREE.OrthographicCamera(-1, 1, 1, -1, 0, 1), tex };
    }
    this.renderer.render(this.compositor.scene, this.compositor.cam);
  }

  /**
   * The frame-index barcode: each cell a scissored clear to pure white or black, after everything
   * else, so no blending, filtering or anti-aliasing touches it.
   */
  drawBarcode(frameId: number, cellPx: number): void {
    const r = this.renderer;
    const prevColor = new THREE.Color();
    r.getClearColor(prevColor);
    const prevAlpha = r.getClearAlpha();
    r.setScissorTest(true);
    for (const cell of barcodeCells(frameId, cellPx, this.width, this.height)) {
      r.setScissor(cell.x, cell.y, cell.size, cell.size);
      r.setClearColor(cell.white ? 0xffffff : 0x000000, 1);
      r.clear(true, false, false);
    }
    r.setScissorTest(false);
    r.setClearColor(prevColor, prevAlpha);
  }

  /** Shows another world of the same city (a new drive): rebuilds the scene's objects. */
  setWorld(city: City, world: World): void {
    this.city.scene.traverse((o) => {
      const mesh = o as THREE.Mesh;
      if (mesh.geometry) mesh.geometry.dispose();
      const mat = mesh.material as THREE.Material | THREE.Material[] | undefined;
      if (Array.isArray(mat)) mat.forEach((m) => m.dispose());
      else mat?.dispose();
    });
    this.city = new CityScene(city, world.net, world.signals, world.traffic);
    this.chaseReady = false;
  }

  dispose(): void {
    this.renderer.dispose();
  }
}
