/**
 * The hosted diffusion view (Decart's Mirage, docs/diffusion.md "Hosted (Mirage)"): the gateway mints a
 * short-lived client token (POST /v1/diffusion/hosted-token; the provider's API key stays on the
 * server) and the game does the WebRTC signaling with the provider itself, over its WebSocket:
 *
 *   game → provider  {type: "prompt", prompt, enhance_prompt}   ← {type: "prompt_ack", prompt, success, error}
 *   game → provider  {type: "offer", sdp}                        ← {type: "answer", sdp}
 *   either way       {type: "ice-candidate", candidate}          (RTCIceCandidateInit, or null at the end)
 *   provider → game  {type: "error", error} fails the stream; session_id, generation_started and the
 *                    rest are informational and ignored.
 *
 * (The messages of Decart's public JavaScript SDK before its move to LiveKit, DecartAI/sdk
 * packages/sdk/src/realtime/types.ts and webrtc-connection.ts; the URL is
 * `<realtime_url>?api_key=<token>&model=<model>`, as its realtime/client.ts builds it.)
 *
 * A hosted model need not keep the barcode the game draws on each render, so pictures are paired with
 * renders two ways (LatencyPairing): by the barcode when it reads, else by the model's latency, measured
 * from barcode reads while they worked (or assumed from the configuration), with the error stated. The
 * manifest's diffusion block records which (`pairing`, `pairing_latency_ms`, `pairing_error_ms`,
 * `pairing_samples`; docs/session-format.md §3).
 */
import type { GatewayClient } from '../record/upload';
import { StreamWatch, readVideoBarcode, streamElements } from './diffusion';

/** How a link paired the pictures it showed with the renders they were made from (manifest `diffusion.pairing*`). */
export interface PairingSummary {
  pairing: 'barcode' | 'latency';
  pairing_latency_ms: number | null;
  pairing_error_ms: number;
  pairing_samples: number;
}

/** What the game needs of a diffusion stream, whoever serves it: DiffusionLink (the gateway's pods) or HostedLink. */
export interface DiffusionStream {
  readonly video: HTMLVideoElement;
  backend: string;
  model: string | null;
  readonly live: boolean;
  connect(client: GatewayClient, sessionId: string, prompt: string): Promise<void>;
  /** Sends the current render; `frameId` is the id drawn on it (a link that pairs by latency keeps its send time). */
  send(source: HTMLCanvasElement, frameId?: number): void;
  lostReason(now?: number): string | null;
  shownFrameId(): number | null;
  /** How shownFrameId() paired pictures and renders; a link without it pairs by barcode only. */
  pairingSummary?(): PairingSummary;
  close(): void;
}

// --- the provider's signaling messages ------------------------------------------------------------

export type ServerMessage =
  | { type: 'answer'; sdp: string }
  | { type: 'ice-candidate'; candidate: RTCIceCandidateInit | null }
  | { type: 'prompt_ack'; prompt: string; success: boolean; error: string | null }
  | { type: 'error'; error: string }
  /** Anything else the provider says (session_id, generation_started, generation_tick, …). */
  | { type: 'info'; name: string };

/** The WebSocket URL of a stream: the realtime URL with the client token and the model as its query. */
export function realtimeUrl(base: string, token: string, model: string): string {
  const url = new URL(base);
  url.searchParams.set('api_key', token);
  url.searchParams.set('model', model);
  return url.toString();
}

/** The prompt, exactly as given: the provider's prompt enhancement is off, the manifest records what was asked. */
export function promptMessage(prompt: string): string {
  return JSON.stringify({ type: 'prompt', prompt, enhance_prompt: false });
}

export function offerMessage(sdp: string): string {
  return JSON.stringify({ type: 'offer', sdp });
}

export function candidateMessage(candidate: RTCIceCandidateInit | null): string {
  return JSON.stringify({ type: 'ice-candidate', candidate });
}

const str = (v: unknown): v is string => typeof v === 'string';

/** A message from the provider; throws, naming it, when it is not JSON or a known message is malformed. */
export function parseServerMessage(data: unknown): ServerMessage {
  let m: unknown;
  try {
    m = JSON.parse(String(data));
  } catch {
    throw new Error('the provider sent a message that is not JSON');
  }
  if (typeof m !== 'object' || m === null || !str((m as { type?: unknown }).type)) {
    throw new Error('the provider sent a message without a type');
  }
  const o = m as Record<string, unknown>;
  const bad = () => new Error(`the provider sent a malformed ${o.type} message`);
  switch (o.type) {
    case 'answer':
      if (!str(o.sdp) || !o.sdp.startsWith('v=0')) throw bad();
      return { type: 'answer', sdp: o.sdp };
    case 'ice-candidate': {
      const c = o.candidate;
      if (c === null || c === undefined) return { type: 'ice-candidate', candidate: null };
      const cc = c as Record<string, unknown>;
      if (typeof c !== 'object' || !str(cc.candidate)) throw bad();
      return { type: 'ice-candidate', candidate: {
        candidate: cc.candidate,
        sdpMid: str(cc.sdpMid) ? cc.sdpMid : null,
        sdpMLineIndex: typeof cc.sdpMLineIndex === 'number' ? cc.sdpMLineIndex : null,
      } };
    }
    case 'prompt_ack':
      if (!str(o.prompt) || typeof o.success !== 'boolean' || !(o.error === null || o.error === undefined || str(o.error))) throw bad();
      return { type: 'prompt_ack', prompt: o.prompt, success: o.success, error: str(o.error) ? o.error : null };
    case 'error':
      return { type: 'error', error: str(o.error) && o.error ? o.error : 'the provider reported an error without a reason' };
    default:
      return { type: 'info', name: o.type as string };
  }
}

// --- pairing pictures with renders ----------------------------------------------------------------

/** The latency to assume before any barcode read measured one (`?diffusion_latency_ms=`), and its error. */
export const DEFAULT_LATENCY_MS = 150;
export const DEFAULT_LATENCY_ERROR_MS = 100;
/** A barcode naming a render sent longer ago than this is taken for a misread. */
const MAX_LATENCY_MS = 10_000;

export interface Paired {
  frameId: number;
  by: 'barcode' | 'latency';
  /** The stated bound on |send time of the paired render − send time of the true one|; 0 by barcode. */
  errorMs: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * Pairs each picture shown with the render it was made from. Pure (times are `performance.now()` ms
 * passed in), so the rule is tested without a browser:
 *
 * - a picture whose barcode reads an id the game sent is that render; its latency (presentation − send
 *   time) is kept, the last `keepSamples` of them;
 * - otherwise the picture is the render sent closest to `presentation − L`, L the median kept latency
 *   (or `defaultLatencyMs` when none was read). Its error bound is S + |that render's send time −
 *   (presentation − L)|, where S is the largest |kept latency − L| but at least the median interval
 *   between renders sent (or `defaultErrorMs` with no reads): the true render was sent within S of
 *   `presentation − L` as long as the latency stays within the range it was seen in.
 */
export class LatencyPairing {
  private readonly ids: number[] = [];
  private readonly times: number[] = [];
  private readonly samples: number[] = [];
  private samplesTotal = 0;
  private latencyPaired = 0;
  private maxErrorMs = 0;

  constructor(readonly defaultLatencyMs = DEFAULT_LATENCY_MS, readonly defaultErrorMs = DEFAULT_LATENCY_ERROR_MS,
    readonly keepSent = 900, readonly keepSamples = 60) {}

  /** A render with this id went out at `t`. */
  sent(frameId: number, t: number): void {
    if (this.times.length && t < this.times[this.times.length - 1]) return; // the clock never goes back
    this.ids.push(frameId);
    this.times.push(t);
    if (this.ids.length > this.keepSent) {
      this.ids.shift();
      this.times.shift();
    }
  }

  /** The latency the estimate uses now: the median of the kept barcode latencies, or the configured one. */
  latencyMs(): number {
    return this.samples.length ? median(this.samples) : this.defaultLatencyMs;
  }

  /** The spread S the estimate states now (see the class comment). */
  spreadMs(): number {
    if (!this.samples.length) return this.defaultErrorMs;
    const l = this.latencyMs();
    const spread = Math.max(...this.samples.map((s) => Math.abs(s - l)));
    const gaps = this.times.slice(1).map((t, i) => t - this.times[i]);
    return Math.max(spread, gaps.length ? median(gaps) : 0);
  }

  /** A picture presented at `t` whose barcode read `barcodeId` (null: it did not): the render it shows. */
  presented(t: number, barcodeId: number | null): Paired | null {
    if (barcodeId !== null) {
      const i = this.ids.lastIndexOf(barcodeId);
      const latency = i >= 0 ? t - this.times[i] : -1;
      if (latency >= 0 && latency <= MAX_LATENCY_MS) {
        this.samples.push(latency);
        if (this.samples.length > this.keepSamples) this.samples.shift();
        this.samplesTotal++;
        return { frameId: barcodeId, by: 'barcode', errorMs: 0 };
      }
    }
    if (!this.times.length) return null;
    const target = t - this.latencyMs();
    const i = this.nearest(target);
    const errorMs = this.spreadMs() + Math.abs(this.times[i] - target);
    this.latencyPaired++;
    this.maxErrorMs = Math.max(this.maxErrorMs, errorMs);
    return { frameId: this.ids[i], by: 'latency', errorMs };
  }

  /** What the manifest records: `latency` once any picture was paired by it, with the largest error stated. */
  summary(): PairingSummary {
    const measured = this.samples.length ? round1(this.latencyMs()) : null;
    if (!this.latencyPaired) {
      return { pairing: 'barcode', pairing_latency_ms: measured, pairing_error_ms: 0, pairing_samples: this.samplesTotal };
    }
    return { pairing: 'latency', pairing_latency_ms: round1(this.latencyMs()),
      pairing_error_ms: Math.ceil(this.maxErrorMs * 10) / 10, pairing_samples: this.samplesTotal };
  }

  /** The index of the render sent closest to `t` (send times ascend). */
  private nearest(t: number): number {
    let lo = 0;
    let hi = this.times.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.times[mid] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo > 0 && t - this.times[lo - 1] <= this.times[lo] - t ? lo - 1 : lo;
  }
}

// --- the link -------------------------------------------------------------------------------------

export interface HostedOptions {
  defaultLatencyMs?: number;
  defaultErrorMs?: number;
}

type Waiter = { type: ServerMessage['type']; resolve: (m: ServerMessage) => void };

/** The hosted diffusion stream, with the surface of DiffusionLink (DiffusionStream). */
export class HostedLink implements DiffusionStream {
  readonly video: HTMLVideoElement;
  framesSeen: number | null = null;
  backend = 'mirage';
  model: string | null = null;
  readonly watch = new StreamWatch();
  readonly pairer: LatencyPairing;
  private pc: RTCPeerConnection | null = null;
  private ws: WebSocket | null = null;
  private readonly sendCanvas: HTMLCanvasElement;
  private sendTrack: CanvasCaptureMediaStreamTrack | null = null;
  private readonly stripCanvas: HTMLCanvasElement;
  private shown: number | null = null;
  /** Why the provider ended the stream (an error message, the socket closing), once it did. */
  private ended: string | null = null;
  private waiting: Waiter | null = null;
  private rejectEnded: (e: Error) => void = () => {};
  /** Rejects when the provider ends the stream: every step of connect() races it. */
  private readonly endedNow = new Promise<never>((_, reject) => { this.rejectEnded = reject; });

  constructor(readonly width: number, readonly height: number, opts: HostedOptions = {}) {
    this.pairer = new LatencyPairing(opts.defaultLatencyMs, opts.defaultErrorMs);
    ({ video: this.video, sendCanvas: this.sendCanvas, stripCanvas: this.stripCanvas } = streamElements(width, height));
    this.endedNow.catch(() => {});
  }

  /** Gets a token from the gateway, signals with the provider; resolves once the first picture arrived. */
  async connect(client: GatewayClient, sessionId: string, prompt: string, timeoutMs = 15000): Promise<void> {
    const token = await client.hostedToken(sessionId);
    this.backend = token.provider;
    this.model = token.model;
    const ws = new WebSocket(realtimeUrl(token.realtime_url, token.token, token.model));
    this.ws = ws;
    ws.onmessage = (e) => {
      let m: ServerMessage;
      try {
        m = parseServerMessage(e.data);
      } catch (err) {
        this.end(err instanceof Error ? err.message : String(err));
        return;
      }
      this.received(m);
    };
    ws.onclose = (e) => this.end(`the provider closed the stream (code ${e.code}${e.reason ? `: ${e.reason}` : ''})`);
    await this.within(new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error('the provider\'s WebSocket could not be opened'));
    }), timeoutMs, 'the provider\'s WebSocket did not open in time');
    ws.send(promptMessage(prompt));
    const ack = await this.next('prompt_ack', timeoutMs);
    if (ack.type === 'prompt_ack' && !ack.success) throw new Error(`the provider refused the prompt: ${ack.error ?? 'no reason given'}`);

    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addEventListener('connectionstatechange', () => this.watch.state(pc.connectionState, performance.now()));
    const stream = this.sendCanvas.captureStream(0);
    this.sendTrack = stream.getVideoTracks()[0] as CanvasCaptureMediaStreamTrack;
    const sender = pc.addTrack(this.sendTrack, stream); // one sendrecv transceiver, as the provider's SDK offers
    const vp8 = RTCRtpReceiver.getCapabilities?.('video')?.codecs.filter((c) => c.mimeType.toLowerCase() === 'video/vp8');
    const transceiver = pc.getTransceivers().find((t) => t.sender === sender);
    if (vp8?.length && transceiver?.setCodecPreferences) transceiver.setCodecPreferences(vp8);
    const arrived = new Promise<void>((resolve) => {
      pc.ontrack = (e) => {
        this.video.srcObject = e.streams[0] ?? new MediaStream([e.track]);
        void this.video.play();
        const presented = (now: number, meta: VideoFrameCallbackMetadata) => {
          this.framesSeen = (this.framesSeen ?? 0) + 1;
          this.watch.frame(now);
          this.shown = this.pairer.presented(meta.presentationTime ?? now, this.readBarcode())?.frameId ?? null;
          resolve();
          this.video.requestVideoFrameCallback(presented);
        };
        this.video.requestVideoFrameCallback(presented);
      };
    });
    let offered = false;
    pc.onicecandidate = (e) => {
      if (offered && this.ws?.readyState === WebSocket.OPEN) this.ws.send(candidateMessage(e.candidate ? e.candidate.toJSON() : null));
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise<void>((resolve) => { // the offer carries the candidates gathered by then; later ones trickle
      if (pc.iceGatheringState === 'complete') return resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      window.setTimeout(resolve, 1500);
    });
    ws.send(offerMessage(pc.localDescription!.sdp));
    offered = true;
    const answer = await this.next('answer', timeoutMs);
    if (answer.type === 'answer') await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    await this.within(arrived, timeoutMs, 'the hosted diffusion stream sent no frame in time');
  }

  /** Sends the canvas's current render; its id and send time are kept for pairing by latency. */
  send(source: HTMLCanvasElement, frameId?: number): void {
    const ctx = this.sendCanvas.getContext('2d');
    if (!ctx || !this.sendTrack) return;
    ctx.drawImage(source, 0, 0, this.width, this.height);
    this.sendTrack.requestFrame();
    if (frameId !== undefined) this.pairer.sent(frameId, performance.now());
  }

  get live(): boolean {
    return this.pc !== null && this.framesSeen !== null;
  }

  /** Why the stream is lost now: the provider ended it, or StreamWatch's rules; null while it delivers. */
  lostReason(now = performance.now()): string | null {
    return this.live ? this.ended ?? this.watch.lost(now) : null;
  }

  /** The render the picture on screen was made from: by its barcode when it reads, else by latency. */
  shownFrameId(): number | null {
    return this.shown;
  }

  pairingSummary(): PairingSummary {
    return this.pairer.summary();
  }

  close(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    this.pc?.close();
    this.pc = null;
  }

  private received(m: ServerMessage): void {
    if (m.type === 'error') {
      this.end(`the provider reported: ${m.error}`);
    } else if (m.type === 'ice-candidate') {
      if (m.candidate) void this.pc?.addIceCandidate(m.candidate).catch(() => {});
    } else if (this.waiting?.type === m.type) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve(m);
    }
  }

  private end(reason: string): void {
    this.ended ??= reason;
    this.waiting = null;
    this.rejectEnded(new Error(this.ended));
  }

  /** The next message of this type, failing when the provider ends the stream first or is too slow. */
  private next(type: ServerMessage['type'], timeoutMs: number): Promise<ServerMessage> {
    if (this.ended) return Promise.reject(new Error(this.ended));
    return this.within(new Promise<ServerMessage>((resolve) => {
      this.waiting = { type, resolve };
    }), timeoutMs, `the provider sent no ${type} in time`);
  }

  private within<T>(p: Promise<T>, ms: number, why: string): Promise<T> {
    let timer = 0;
    const late = new Promise<never>((_, reject) => {
      timer = window.setTimeout(() => reject(new Error(why)), ms);
    });
    return Promise.race([p, this.endedNow, late]).finally(() => window.clearTimeout(timer));
  }

  /** The frame id in the barcode strip of the picture just presented; null when it does not read. */
  private readBarcode(): number | null {
    return readVideoBarcode(this.video, this.stripCanvas);
  }
}
