/**
 * Records a canvas exactly: `captureStream(0)` and one `requestFrame()` after each render, so the
 * video holds one frame per rendered frame — never a duplicate or a drop from sampling. The encoder
 * runs behind the page, by more on a loaded machine, so stop() waits until the WebM received holds
 * every frame handed over (counted in its bytes) rather than for a fixed time.
 */

import { WebmFrameCounter } from './webmFrames';

export const VP8_MIME = 'video/webm;codecs=vp8';
/** 8 Mbit/s at 1280x720, scaled with the pixel count, never below 2.5 Mbit/s. */
export function bitrateFor(width: number, height: number): number {
  return Math.max(2.5e6, Math.round((8e6 * width * height) / (1280 * 720)));
}

/**
 * After the last frame, stop() asks the recorder for its data every STOP_POLL_MS and stops as soon as
 * the WebM received holds every frame handed over; after STOP_BOUND_MS it stops anyway, and the
 * report says how many frames the video lacks (the session validator then names the drop).
 */
export const STOP_POLL_MS = 100;
export const STOP_BOUND_MS = 15_000;

/** The page clock and timers, replaceable in tests. */
export interface Clock {
  now(): number;
  sleep(ms: number): Promise<void>;
}

const PAGE_CLOCK: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export interface RecorderOptions {
  clock?: Clock;
  pollMs?: number;
  boundMs?: number;
}

/** What stop() found: the frames handed over and the frames the finished WebM holds. */
export interface StopReport {
  framesHandedOver: number;
  framesInVideo: number;
  /** From stop() to MediaRecorder.stop(). */
  waitedMs: number;
  /** The bound ran out before the video held every frame. */
  timedOut: boolean;
  /** Why the WebM could not be read, if it could not (the frame count is then unproven). */
  readError: string | null;
}

export class CanvasRecorder {
  private readonly stream: MediaStream;
  private readonly track: CanvasCaptureMediaStreamTrack;
  private readonly recorder: MediaRecorder;
  private readonly chunks: Blob[] = [];
  private readonly clock: Clock;
  private readonly pollMs: number;
  private readonly boundMs: number;
  private readonly counter = new WebmFrameCounter();
  /** The chunks are read in the order they arrived: each waits for the one before. */
  private reading: Promise<void> = Promise.resolve();
  private readError: string | null = null;
  private framesHandedOver = 0;
  private stopped: Promise<Blob> | null = null;
  /** performance.now() at the moment MediaRecorder.start() was called: the page clock's zero. */
  t0 = 0;
  /** performance.now() when stop() was called. */
  tStop = 0;
  /** Set when stop() has finished. */
  report: StopReport | null = null;

  constructor(canvas: HTMLCanvasElement, bitsPerSecond: number, options: RecorderOptions = {}) {
    if (typeof MediaRecorder === 'undefined' || !MediaRecorder.isTypeSupported(VP8_MIME)) {
      throw new Error('this browser cannot record VP8 video (MediaRecorder with video/webm;codecs=vp8)');
    }
    this.clock = options.clock ?? PAGE_CLOCK;
    this.pollMs = options.pollMs ?? STOP_POLL_MS;
    this.boundMs = options.boundMs ?? STOP_BOUND_MS;
    this.stream = canvas.captureStream(0);
    this.track = this.stream.getVideoTracks()[0] as CanvasCaptureMediaStreamTrack;
    this.recorder = new MediaRecorder(this.stream, { mimeType: VP8_MIME, videoBitsPerSecond: bitsPerSecond });
    this.recorder.ondataavailable = (e) => {
      if (!e.data || e.data.size === 0) return;
      const blob = e.data;
      this.chunks.push(blob);
      this.reading = this.reading.then(async () => {
        if (this.readError) return;
        try {
          this.counter.push(new Uint8Array(await blob.arrayBuffer()));
        } catch (err) {
          this.readError = err instanceof Error ? err.message : String(err);
        }
      });
    };
  }

  /** Starts recording; returns t0 (performance.now() at start()). */
  start(): number {
    this.t0 = this.clock.now();
    this.recorder.start(1000);
    // Chromium's canvas track hands a starting recorder the canvas's current picture: frame 0.
    this.framesHandedOver = 1;
    return this.t0;
  }

  /** Hands the canvas's current picture to the recorder as the next video frame. */
  frame(): void {
    this.track.requestFrame();
    this.framesHandedOver++;
  }

  /** Waits until the WebM holds every frame handed over (or the bound runs out), stops, returns the WebM. */
  stop(): Promise<Blob> {
    if (!this.stopped) this.stopped = this.drainAndStop();
    return this.stopped;
  }

  private async drainAndStop(): Promise<Blob> {
    this.tStop = this.clock.now();
    let timedOut = false;
    for (;;) {
      await this.reading;
      // Unreadable bytes prove nothing: then only the bound ends the wait.
      if (!this.readError && this.counter.videoFrames >= this.framesHandedOver) break;
      if (this.recorder.state === 'inactive') break;
      if (this.clock.now() - this.tStop >= this.boundMs) {
        timedOut = true;
        break;
      }
      this.recorder.requestData();
      await this.clock.sleep(this.pollMs);
    }
    const waitedMs = this.clock.now() - this.tStop;
    const video = await new Promise<Blob>((resolve, reject) => {
      this.recorder.onstop = () => {
        this.stream.getTracks().forEach((t) => t.stop());
        resolve(new Blob(this.chunks, { type: 'video/webm' }));
      };
      this.recorder.onerror = (e) => reject(new Error(`recording failed: ${String((e as ErrorEvent).message ?? e)}`));
      if (this.recorder.state === 'inactive') this.recorder.onstop(new Event('stop'));
      else this.recorder.stop();
    });
    await this.reading;
    this.report = { framesHandedOver: this.framesHandedOver, framesInVideo: this.counter.videoFrames, waitedMs,
      timedOut, readError: this.readError };
    if (this.report.framesInVideo !== this.framesHandedOver || this.readError) {
      const why = this.readError ? ` (unreadable WebM: ${this.readError})` : '';
      console.warn(`recorder: the video holds ${this.report.framesInVideo} of the ${this.framesHandedOver} frames ` +
        `handed over after waiting ${Math.round(waitedMs)} ms${why}`);
    }
    return video;
  }

  get state(): RecordingState {
    return this.recorder.state;
  }
}
