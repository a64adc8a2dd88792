/**
 * What one recorded drive writes, frame by frame: joins the world's state at each rendered frame
 * with the controls applied in the step right after it (docs/session-format.md §6.2), the
 * infractions found since the frame before, the raw input events and the latency probes.
 */
import { cameraPose, vehiclePose, type CameraMount } from '../sim/camera';
import type { InputEvent } from '../sim/input';
import type { World } from '../sim/world';
import { SessionLog, type FrameRecord } from './session';

export class Recording {
  readonly log = new SessionLog();
  private pending: FrameRecord | null = null;
  private nextId = 0;

  constructor(private readonly world: World, private readonly mount: CameraMount) {}

  /** The id the next rendered frame carries in its barcode. */
  get nextFrameId(): number {
    return this.nextId;
  }

  /**
   * Logs the frame just rendered and handed to the recorder (page-clock times in ms since the
   * recorder's start). Its controls are filled in by the next step (`afterStep`).
   */
  frameRendered(tRender_ms: number, tCapture_ms: number, diffusionFrameId: number | null = null, probe = true): number {
    this.flush();
    const w = this.world;
    const p = w.player;
    const tr = w.tracker;
    const id = this.nextId++;
    this.pending = {
      frame_id: id,
      t_render_ms: tRender_ms,
      t_capture_ms: tCapture_ms,
      sim_t_ms: w.sim_t_ms,
      vehicle: vehiclePose(p.x, p.y, p.yaw),
      camera: cameraPose(p.x, p.y, p.yaw, this.mount),
      speed_mps: w.speed_mps,
      controls: { ...w.controls },
      command: tr.command,
      route: { progress: tr.progress, distance_remaining_m: tr.distanceRemaining },
      infractions: w.drainInfractions(),
      diffusion_frame_id: diffusionFrameId,
    };
    if (probe) this.log.addLatency({ t_ms: tCapture_ms, kind: 'frame_present', sent_ms: tRender_ms, received_ms: tCapture_ms, frame_id: id });
    return id;
  }

  /** Sets the times of the frame waiting for its controls (frame 0 is timed at the recorder's start). */
  retime(tRender_ms: number, tCapture_ms: number): void {
    if (this.pending) {
      this.pending.t_render_ms = tRender_ms;
      this.pending.t_capture_ms = tCapture_ms;
    }
  }

  /** Call after each simulation step: the pending frame gets the controls that step applied. */
  afterStep(): void {
    this.flush();
  }

  private flush(): void {
    if (!this.pending) return;
    const c = this.world.controls;
    this.pending.controls = { steer: c.steer, throttle: c.throttle, brake: c.brake };
    this.log.addFrame(this.pending);
    this.pending = null;
  }

  /**
   * Logs a raw event the world has just been given: with the simulation time it takes effect at (the
   * step that starts then is the first to see it), so that a replay applies it where the game did.
   */
  event(ev: InputEvent): void {
    this.log.addEvent(ev, this.world.sim_t_ms);
  }

  probe(kind: string, sent_ms: number, received_ms: number, frameId: number | null = null): void {
    this.log.addLatency({ t_ms: received_ms, kind, sent_ms, received_ms, frame_id: frameId });
  }

  /** Ends the recording: the last frame takes the controls in force now. */
  finish(): SessionLog {
    if (this.pending) {
      const c = this.world.mapper.current();
      this.pending.controls = { steer: c.steer, throttle: c.throttle, brake: c.brake };
      this.log.addFrame(this.pending);
      this.pending = null;
    }
    return this.log;
  }
}
