import { afterEach, describe, expect, it, vi } from 'vitest';
import { CanvasRecorder, STOP_BOUND_MS, STOP_POLL_MS, type Clock } from '../src/media/recorder';
import { clusterHead, concat, recorderHead, simpleBlock } from './webmBytes';

/** Virtual time: sleep() moves it on at once, so a 15 s wait takes no real time. */
class FakeClock implements Clock {
  t = 0;
  now(): number {
    return this.t;
  }
  async sleep(ms: number): Promise<void> {
    this.t += ms;
  }
}

/** The WebM a recorder writes for frames 0..n-1: a Cluster every 10 frames, one SimpleBlock per frame. */
function frameBytes(i: number): Uint8Array {
  const block = simpleBlock(1, { t: (i % 10) * 33, bytes: 40 + (i % 7) });
  return i % 10 === 0 ? concat([clusterHead(i * 33), block]) : block;
}

function fileOf(frames: number): Uint8Array {
  return concat([recorderHead(), ...Array.from({ length: frames }, (_, i) => frameBytes(i))]);
}

/**
 * A MediaRecorder whose encoder takes `latencyMs(i)` of virtual time for frame i (Infinity: never
 * done). Like Chromium's, requestData() and stop() hand over only what is encoded by then: a frame
 * still in the encoder at stop() is lost.
 */
function installFakeRecorder(clock: FakeClock, latencyMs: (i: number) => number, header = recorderHead()) {
  const state = { requestData: 0, emitted: [] as number[] };
  class FakeMediaRecorder {
    static isTypeSupported = (mime: string) => mime === 'video/webm;codecs=vp8';
    state: RecordingState = 'inactive';
    ondataavailable: ((e: { data: Blob }) => void) | null = null;
    onstop: ((e: Event) => void) | null = null;
    onerror: ((e: Event) => void) | null = null;
    private readonly pending: { i: number; readyAt: number }[] = [];
    private handed = 0;
    private headerSent = false;

    constructor(stream: { recorder?: FakeMediaRecorder }) {
      stream.recorder = this;
    }
    start(): void {
      this.state = 'recording';
      this.handOver(); // the canvas's current picture, as Chromium's canvas track does
    }
    handOver(): void {
      if (this.state !== 'recording') return;
      const i = this.handed++;
      this.pending.push({ i, readyAt: clock.now() + latencyMs(i) });
    }
    requestData(): void {
      if (this.state === 'inactive') throw new Error('InvalidStateError');
      state.requestData++;
      this.emit();
    }
    stop(): void {
      this.emit();
      this.state = 'inactive';
      void Promise.resolve().then(() => this.onstop?.(new Event('stop')));
    }
    private emit(): void {
      const parts: Uint8Array[] = [];
      if (!this.headerSent) parts.push(header);
      this.headerSent = true;
      while (this.pending.length && this.pending[0].readyAt <= clock.now()) {
        const { i } = this.pending.shift()!;
        parts.push(frameBytes(i));
        state.emitted.push(i);
      }
      const bytes = concat(parts);
      if (bytes.length) this.ondataavailable?.({ data: new Blob([bytes]) });
    }
  }
  vi.stubGlobal('MediaRecorder', FakeMediaRecorder);
  const stream = {
    recorder: undefined as FakeMediaRecorder | undefined,
    getVideoTracks: () => [{ requestFrame: () => stream.recorder!.handOver() }],
    getTracks: () => [{ stop: () => undefined }],
  };
  const canvas = { captureStream: () => stream } as unknown as HTMLCanvasElement;
  return { canvas, state };
}

/** Records `frames` frames (frame 0 at start, then one requestFrame each 33 ms) and stops. */
async function record(clock: FakeClock, canvas: HTMLCanvasElement, frames: number) {
  const rec = new CanvasRecorder(canvas, 1e6, { clock });
  rec.start();
  for (let i = 1; i < frames; i++) {
    clock.t += 33;
    rec.frame();
  }
  const lastHandedAt = clock.t;
  const video = new Uint8Array(await (await rec.stop()).arrayBuffer());
  return { rec, video, lastHandedAt, report: rec.report! };
}

afterEach(() => {
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('CanvasRecorder.stop', () => {
  it('waits for a last frame the encoder finishes 3 s late, and loses nothing', async () => {
    const clock = new FakeClock();
    const { canvas, state } = installFakeRecorder(clock, (i) => (i === 30 ? 3000 : 20));
    const { video, report, lastHandedAt } = await record(clock, canvas, 31);
    expect(state.emitted).toEqual(Array.from({ length: 31 }, (_, i) => i));
    expect(video).toEqual(fileOf(31));
    expect(report).toMatchObject({ framesHandedOver: 31, framesInVideo: 31, timedOut: false, readError: null });
    // It stopped at the first poll after the frame was there, not before and not much later.
    expect(lastHandedAt + report.waitedMs).toBeGreaterThanOrEqual(lastHandedAt + 3000);
    expect(report.waitedMs).toBeLessThan(3000 + 2 * STOP_POLL_MS);
  });

  it('stops at once when every frame is already there, and the video holds each frame exactly once', async () => {
    const clock = new FakeClock();
    const { canvas, state } = installFakeRecorder(clock, () => 0);
    const { video, report } = await record(clock, canvas, 50);
    expect(video).toEqual(fileOf(50));
    expect(report.framesInVideo).toBe(50);
    expect(report.waitedMs).toBeLessThanOrEqual(STOP_POLL_MS);
    expect(state.requestData).toBe(1);
  });

  it('gives up after the bound, stops anyway and says how many frames the video lacks', async () => {
    const clock = new FakeClock();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const { canvas } = installFakeRecorder(clock, (i) => (i === 30 ? Infinity : 20));
    const { video, report } = await record(clock, canvas, 31);
    expect(video).toEqual(fileOf(30));
    expect(report).toMatchObject({ framesHandedOver: 31, framesInVideo: 30, timedOut: true });
    expect(report.waitedMs).toBeGreaterThanOrEqual(STOP_BOUND_MS);
    expect(report.waitedMs).toBeLessThan(STOP_BOUND_MS + 2 * STOP_POLL_MS);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('holds 30 of the 31 frames'));
  });

  it('waits the whole bound when the WebM cannot be read, and says why', async () => {
    const clock = new FakeClock();
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const { canvas } = installFakeRecorder(clock, () => 0, new Uint8Array([0x1a, 0x45, 0xdf, 0xa3, 0x00]));
    const { report } = await record(clock, canvas, 5);
    expect(report.timedOut).toBe(true);
    expect(report.readError).toMatch(/invalid EBML variable-length integer at byte 4/);
    expect(warn).toHaveBeenCalledWith(expect.stringContaining('unreadable WebM'));
  });
});
