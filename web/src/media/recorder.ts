/**
 * Records a canvas exactly: `captureStream(0)` and one `requestFrame()` after each render, so the
 * video holds one frame per rendered frame — never a duplicate or a drop from sampling.
 */

export const VP8_MIME = 'video/webm;codecs=vp8';
/** 8 Mbit/s at 1280x720, scaled with the pixel count, never below 2.5 Mbit/s. */
export function bitrateFor(width: number, height: number): number {
  return Math.max(2.5e6, Math.round((8e6 * width * height) / (1280 * 720)));
}

/** Wait this long after the last frame before stop(), or the last frames are lost. */
export const STOP_DELAY_MS = 500;

export class CanvasRecorder {
  private readonly stream: MediaStream;
  private readonly track: CanvasCaptureMediaStreamTrack;
  private readonly recorder: MediaRecorder;
  private readonly chunks: Blob[] = [];
  private stopped: Promise<Blob> | null = null;
  /** performance.now() at the moment MediaRecorder.start() was called: the page clock's zero. */
  t0 = 0;
  /** performance.now() when stop() was called. */
  tStop = 0;

  constructor(canvas: HTMLCanvasElement, bitsPerSecond: number) {
    if (typeof MediaRecorder === 'undefined' || !MediaRecorder.isTypeSupported(VP8_MIME)) {
      throw new Error('this browser cannot record VP8 video (MediaRecorder with video/webm;codecs=vp8)');
    }
    this.stream = canvas.captureStream(0);
    this.track = this.stream.getVideoTracks()[0] as CanvasCaptureMediaStreamTrack;
    this.recorder = new MediaRecorder(this.stream, { mimeType: VP8_MIME, videoBitsPerSecond: bitsPerSecond });
    this.recorder.ondataavailable = (e) => {
      if (e.data && e.data.size > 0) this.chunks.push(e.data);
    };
  }

  /** Starts recording; returns t0 (performance.now() at start()). */
  start(): number {
    this.t0 = performance.now();
    this.recorder.start(1000);
    return this.t0;
  }

  /** Hands the canvas's current picture to the recorder as the next video frame. */
  frame(): void {
    this.track.requestFrame();
  }

  /** Waits for the last frames to be encoded, stops, and returns the WebM. */
  stop(): Promise<Blob> {
    if (!this.stopped) {
      this.stopped = new Promise<Blob>((resolve, reject) => {
        window.setTimeout(() => {
          this.recorder.onstop = () => {
            this.stream.getTracks().forEach((t) => t.stop());
            resolve(new Blob(this.chunks, { type: 'video/webm' }));
          };
          this.recorder.onerror = (e) => reject(new Error(`recording failed: ${String((e as ErrorEvent).message ?? e)}`));
          this.tStop = performance.now();
          this.recorder.stop();
        }, STOP_DELAY_MS);
      });
    }
    return this.stopped;
  }

  get state(): RecordingState {
    return this.recorder.state;
  }
}
