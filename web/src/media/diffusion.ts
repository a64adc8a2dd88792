/**
 * The diffusion view: a WebRTC stream through the gateway's signaling (POST /v1/diffusion/offer).
 * The rendered frames go out on one track; the diffusion service answers with a stylised stream
 * that the game shows and records instead of its own render. Host candidates only (iceServers: []).
 * When the gateway answers 503 (no diffusion service yet), `connect` throws with its reason.
 */
import type { GatewayClient } from '../record/upload';

export const DIFFUSION_PROMPT = 'a New York street on a bright afternoon, photorealistic';

export class DiffusionLink {
  private pc: RTCPeerConnection | null = null;
  readonly video: HTMLVideoElement;
  /** Count of decoded output frames seen (the diffusion_frame_id of what is shown). */
  frameId: number | null = null;
  backend = 'webrtc';
  model: string | null = null;
  private readonly sendCanvas: HTMLCanvasElement;
  private sendTrack: CanvasCaptureMediaStreamTrack | null = null;

  constructor(readonly width: number, readonly height: number) {
    this.video = document.createElement('video');
    this.video.muted = true;
    this.video.playsInline = true;
    this.sendCanvas = document.createElement('canvas');
    this.sendCanvas.width = width;
    this.sendCanvas.height = height;
  }

  /** Offers a stream of the render; resolves when the answer is applied and the first frame arrived. */
  async connect(client: GatewayClient, sessionId: string, prompt: string, timeoutMs = 8000): Promise<void> {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    const stream = this.sendCanvas.captureStream(0);
    this.sendTrack = stream.getVideoTracks()[0] as CanvasCaptureMediaStreamTrack;
    pc.addTrack(this.sendTrack, stream);
    pc.addTransceiver('video', { direction: 'recvonly' });
    const arrived = new Promise<void>((resolve) => {
      pc.ontrack = (e) => {
        this.video.srcObject = e.streams[0] ?? new MediaStream([e.track]);
        void this.video.play();
        const count = () => {
          this.frameId = (this.frameId ?? -1) + 1;
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
    return this.pc !== null && this.frameId !== null;
  }

  close(): void {
    this.pc?.close();
    this.pc = null;
  }
}
