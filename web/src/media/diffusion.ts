/**
 * The diffusion view: a WebRTC stream through the gateway's signaling (POST /v1/diffusion/offer).
 * The rendered frames go out on one track; the diffusion service answers with a stylised stream
 * that the game shows and records instead of its own render. ICE: host candidates, plus the STUN/TURN
 * servers the gateway names (GET /v1/diffusion/ice-servers; none by default).
 * When the gateway answers 503 (no diffusion service, every slot busy), `connect` throws with its reason.
 *
 * The service draws, on each frame it returns, the barcode of the rendered frame it made it from;
 * `shownFrameId()` reads it back from the frame on screen, and the game logs it as `diffusion_frame_id`.
 */
import { BARCODE_CELLS, defaultCellPx, readBarcode } from '../record/barcode';
import type { GatewayClient } from '../record/upload';

export const DIFFUSION_PROMPT = 'a New York street on a bright afternoon, photorealistic';

/** How long the stream may send no new frame while the game sends renders before it counts as lost. */
export const STALL_MS = 2000;
/** How long a `disconnected` peer connection may take to come back before the stream counts as lost. */
export const DISCONNECT_GRACE_MS = 2000;

/**
 * Decides when a live stream is lost: the peer connection failed or closed, stayed disconnected past
 * DISCONNECT_GRACE_MS, or no new frame came back for STALL_MS while renders were being sent. Times are
 * `performance.now()` milliseconds; pure, so the rules are tested without a browser.
 */
export class StreamWatch {
  private lastFrameAt: number | null = null;
  private disconnectedAt: number | null = null;
  private ended: string | null = null;

  constructor(readonly stallMs = STALL_MS, readonly graceMs = DISCONNECT_GRACE_MS) {}

  /** A new returned frame was presented. */
  frame(now: number): void {
    this.lastFrameAt = now;
  }

  /** The peer connection's `connectionState` changed. */
  state(state: RTCPeerConnectionState | string, now: number): void {
    if (state === 'failed' || state === 'closed') this.ended ??= `the connection ${state}`;
    else if (state === 'disconnected') this.disconnectedAt ??= now;
    else if (state === 'connected') this.disconnectedAt = null;
  }

  /** Why the stream is lost at `now`, or null while it is live. */
  lost(now: number): string | null {
    if (this.ended) return this.ended;
    if (this.disconnectedAt !== null && now - this.disconnectedAt >= this.graceMs) {
      return `the connection stayed disconnected for ${Math.round((now - this.disconnectedAt) / 1000)} s`;
    }
    if (this.lastFrameAt !== null && now - this.lastFrameAt >= this.stallMs) {
      return `no frame came back for ${((now - this.lastFrameAt) / 1000).toFixed(1)} s`;
    }
    return null;
  }
}

export class DiffusionLink {
  private pc: RTCPeerConnection | null = null;
  readonly video: HTMLVideoElement;
  /** Count of returned frames seen so far; null until the first one. */
  framesSeen: number | null = null;
  backend = 'webrtc';
  model: string | null = null;
  private readonly sendCanvas: HTMLCanvasElement;
  private sendTrack: CanvasCaptureMediaStreamTrack | null = null;
  /** The barcode strip of the frame on screen, copied out to read it. */
  private readonly stripCanvas: HTMLCanvasElement;
  /** Whether the stream still delivers (see StreamWatch). */
  readonly watch = new StreamWatch();

  constructor(readonly width: number, readonly height: number) {
    ({ video: this.video, sendCanvas: this.sendCanvas, stripCanvas: this.stripCanvas } = streamElements(width, height));
  }

  /** Offers a stream of the render; resolves when the answer is applied and the first frame arrived. */
  async connect(client: GatewayClient, sessionId: string, prompt: string, timeoutMs = 8000): Promise<void> {
    // Host candidates unless the gateway names STUN/TURN servers (TURN with this player's own credentials).
    const pc = new RTCPeerConnection({ iceServers: await client.diffusionIceServers() });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this.watch.state(pc.connectionState, performance.now()));
    const stream = this.sendCanvas.captureStream(0);
    this.sendTrack = stream.getVideoTracks()[0] as CanvasCaptureMediaStreamTrack;
    pc.addTrack(this.sendTrack, stream);
    pc.addTransceiver('video', { direction: 'recvonly' });
    const arrived = new Promise<void>((resolve) => {
      pc.ontrack = (e) => {
        this.video.srcObject = e.streams[0] ?? new MediaStream([e.track]);
        void this.video.play();
        const count = (now: number) => {
          this.framesSeen = (this.framesSeen ?? 0) + 1;
          this.watch.frame(now);
          resolve();
          this.video.requestVideoFrameCallback(count);
        };
        this.video.requestVideoFrameCallback(count);
      };
    });
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise<void>((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const done = () => pc.iceGatheringState === 'complete' && resolve();
      pc.addEventListener('icegatheringstatechange', done);
      window.setTimeout(resolve, 1500);
    });
    const answer = await client.diffusionOffer(sessionId, pc.localDescription!.sdp, prompt);
    this.backend = answer.backend || 'webrtc';
    this.model = answer.model || answer.backend || null;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp_answer });
    await Promise.race([arrived, new Promise((_, reject) => window.setTimeout(
      () => reject(new Error('the diffusion stream sent no frame in time')), timeoutMs))]);
  }

  /** Sends the canvas's current render to the diffusion service. */
  send(source: HTMLCanvasElement): void {
    const ctx = this.sendCanvas.getContext('2d');
    if (!ctx || !this.sendTrack) return;
    ctx.drawImage(source, 0, 0, this.width, this.height);
    this.sendTrack.requestFrame();
  }

  get live(): boolean {
    return this.pc !== null && this.framesSeen !== null;
  }

  /** Why the stream is lost now (StreamWatch), or null while it delivers. */
  lostReason(now = performance.now()): string | null {
    return this.live ? this.watch.lost(now) : null;
  }

  /**
   * The frame id the service drew on the returned frame now on screen: the rendered frame that picture
   * was made from. Null when there is none yet or its barcode does not read (markers or parity).
   */
  shownFrameId(): number | null {
    return readVideoBarcode(this.video, this.stripCanvas);
  }

  close(): void {
    this.pc?.close();
    this.pc = null;
  }
}

/**
 * What a diffusion link draws with: the muted inline video element the returned stream plays in, the
 * canvas of the render's size it sends from, and a canvas to copy barcode strips out of.
 */
export function streamElements(width: number, height: number):
    { video: HTMLVideoElement; sendCanvas: HTMLCanvasElement; stripCanvas: HTMLCanvasElement } {
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  const sendCanvas = document.createElement('canvas');
  sendCanvas.width = width;
  sendCanvas.height = height;
  return { video, sendCanvas, stripCanvas: document.createElement('canvas') };
}

/**
 * The frame id in the barcode strip of the picture a video element shows now (its bottom-left cells),
 * copied out through `strip`; null when there is no picture yet or the strip does not read.
 */
export function readVideoBarcode(video: HTMLVideoElement, strip: HTMLCanvasElement): number | null {
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h) return null;
  const cell = defaultCellPx(h);
  const stripW = BARCODE_CELLS * cell;
  if (stripW > w) return null;
  if (strip.width !== stripW || strip.height !== cell) {
    strip.width = stripW;
    strip.height = cell;
  }
  const ctx = strip.getContext('2d', { willReadFrequently: true });
  if (!ctx) return null;
  ctx.drawImage(video, 0, h - cell, stripW, cell, 0, 0, stripW, cell);
  return readStrip(ctx.getImageData(0, 0, stripW, cell).data, stripW, cell);
}

/** The frame id in a barcode strip (RGBA pixels, `cell` rows of `width`), by its luma (BT.601). */
export function readStrip(rgba: ArrayLike<number>, width: number, cell: number): number | null {
  const luma = new Float32Array(width * cell);
  for (let i = 0; i < luma.length; i++) {
    luma[i] = 0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2];
  }
  return readBarcode(luma, width, cell, cell);
}
