import { describe, expect, it } from 'vitest';
import {
  LatencyPairing, candidateMessage, offerMessage, parseServerMessage, promptMessage, realtimeUrl,
} from '../src/media/hosted';
import { GatewayClient, GatewayError, type KeyValueStore } from '../src/record/upload';
import { parseConfig } from '../src/game/config';

describe('the hosted provider\'s signaling messages', () => {
  it('builds the stream URL with the client token and the model as its query', () => {
    expect(realtimeUrl('wss://api3.decart.ai/v1/stream', 'ek_a+b/c', 'mirage_v2'))
      .toBe('wss://api3.decart.ai/v1/stream?api_key=ek_a%2Bb%2Fc&model=mirage_v2');
    expect(realtimeUrl('ws://127.0.0.1:8765/v1/stream?region=eu', 't', 'm'))
      .toBe('ws://127.0.0.1:8765/v1/stream?region=eu&api_key=t&model=m');
  });

  it('sends the prompt as asked, an offer and trickled candidates', () => {
    expect(JSON.parse(promptMessage('a rainy "street"'))).toEqual({ type: 'prompt', prompt: 'a rainy "street"', enhance_prompt: false });
    expect(JSON.parse(offerMessage('v=0\r\n'))).toEqual({ type: 'offer', sdp: 'v=0\r\n' });
    const c = { candidate: 'candidate:1 1 udp 2122260223 10.0.0.2 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 };
    expect(JSON.parse(candidateMessage(c))).toEqual({ type: 'ice-candidate', candidate: c });
    expect(JSON.parse(candidateMessage(null))).toEqual({ type: 'ice-candidate', candidate: null });
  });

  it('reads the provider\'s answers, acknowledgements, candidates and errors', () => {
    expect(parseServerMessage('{"type":"answer","sdp":"v=0\\r\\no=-"}')).toEqual({ type: 'answer', sdp: 'v=0\r\no=-' });
    expect(parseServerMessage(JSON.stringify({ type: 'prompt_ack', prompt: 'p', success: false, error: 'too long' })))
      .toEqual({ type: 'prompt_ack', prompt: 'p', success: false, error: 'too long' });
    expect(parseServerMessage('{"type":"ice-candidate","candidate":{"candidate":"candidate:2 1 udp 1 1.2.3.4 9 typ host","sdpMid":"0","sdpMLineIndex":0}}'))
      .toEqual({ type: 'ice-candidate', candidate: { candidate: 'candidate:2 1 udp 1 1.2.3.4 9 typ host', sdpMid: '0', sdpMLineIndex: 0 } });
    expect(parseServerMessage('{"type":"ice-candidate","candidate":null}')).toEqual({ type: 'ice-candidate', candidate: null });
    expect(parseServerMessage('{"type":"error","error":"the client token has expired"}'))
      .toEqual({ type: 'error', error: 'the client token has expired' });
    expect(parseServerMessage('{"type":"error"}').type).toBe('error');
    expect(parseServerMessage('{"type":"session_id","session_id":"s","server_ip":"1.2.3.4","server_port":1}'))
      .toEqual({ type: 'info', name: 'session_id' });
    expect(parseServerMessage('{"type":"generation_started"}')).toEqual({ type: 'info', name: 'generation_started' });
  });

  it('names what is wrong with a message it cannot use', () => {
    expect(() => parseServerMessage('not json')).toThrow('not JSON');
    expect(() => parseServerMessage('[1]')).toThrow('without a type');
    expect(() => parseServerMessage('{"type":"answer","sdp":"hello"}')).toThrow('malformed answer');
    expect(() => parseServerMessage('{"type":"answer"}')).toThrow('malformed answer');
    expect(() => parseServerMessage('{"type":"prompt_ack","prompt":"p"}')).toThrow('malformed prompt_ack');
    expect(() => parseServerMessage('{"type":"ice-candidate","candidate":{"sdpMid":"0"}}')).toThrow('malformed ice-candidate');
  });
});

/** Renders sent every `intervalMs` from t = 0, ids 0, 1, 2, …; returns their send times. */
function sendRenders(p: LatencyPairing, n: number, intervalMs: number, firstId = 0): number[] {
  const times = [];
  for (let i = 0; i < n; i++) {
    p.sent(firstId + i, i * intervalMs);
    times.push(i * intervalMs);
  }
  return times;
}

describe('pairing pictures with the renders they were made from', () => {
  it('takes a read barcode as it is and learns the latency from it', () => {
    const p = new LatencyPairing(150, 100);
    sendRenders(p, 30, 33);
    // pictures of renders 0..9 shown 200 ms after each was sent
    for (let id = 0; id < 10; id++) expect(p.presented(id * 33 + 200, id)).toEqual({ frameId: id, by: 'barcode', errorMs: 0 });
    expect(p.latencyMs()).toBe(200);
    expect(p.summary()).toEqual({ pairing: 'barcode', pairing_latency_ms: 200, pairing_error_ms: 0, pairing_samples: 10 });
  });

  it('once the barcode is lost, picks the render sent one measured latency before the picture', () => {
    const p = new LatencyPairing(150, 100);
    sendRenders(p, 60, 33); // ids 0..59, sent at 0, 33, …, 1947
    const lat = [190, 200, 210, 200, 205];
    lat.forEach((l, id) => p.presented(id * 33 + l, id));
    expect(p.latencyMs()).toBe(200);
    // a picture shown at 1500 without a barcode: 1500 - 200 = 1300, closest render 39 (sent at 1287)
    const paired = p.presented(1500, null)!;
    expect(paired.frameId).toBe(39);
    expect(paired.by).toBe('latency');
    // spread: max |l - 200| = 10, but never less than the interval between renders (33); plus |1287 - 1300|
    expect(paired.errorMs).toBeCloseTo(33 + 13, 6);
    const s = p.summary();
    expect(s.pairing).toBe('latency');
    expect(s.pairing_latency_ms).toBe(200);
    expect(s.pairing_error_ms).toBeCloseTo(46, 6);
    expect(s.pairing_samples).toBe(5);
  });

  it('states a wider error when the measured latency varied more than a frame', () => {
    const p = new LatencyPairing();
    sendRenders(p, 100, 20);
    [100, 180, 140, 260, 140].forEach((l, id) => p.presented(id * 20 + l, id)); // median 140, spread 120
    const paired = p.presented(1000, null)!; // 1000 - 140 = 860: render 43, sent exactly then
    expect(paired.frameId).toBe(43);
    expect(paired.errorMs).toBe(120);
    // ... and the truth is inside it: had the latency been 260 the render was 37 (sent 740), 120 ms away
    expect(Math.abs(37 * 20 - 43 * 20)).toBeLessThanOrEqual(paired.errorMs);
  });

  it('uses the configured latency and its configured error when no barcode ever read', () => {
    const p = new LatencyPairing(150, 100);
    sendRenders(p, 50, 33);
    const paired = p.presented(1000, null)!; // 850: closest render 26 (sent at 858)
    expect(paired).toEqual({ frameId: 26, by: 'latency', errorMs: 100 + 8 });
    expect(p.summary()).toEqual({ pairing: 'latency', pairing_latency_ms: 150, pairing_error_ms: 108, pairing_samples: 0 });
  });

  it('records the largest error it stated over the drive', () => {
    const p = new LatencyPairing(150, 100);
    sendRenders(p, 10, 33);
    p.presented(100, null); // before much was sent: 100 - 150 = -50, render 0 at 0: 50 ms off the target
    p.presented(300, null); // 150: render 5 at 165, 15 ms off
    expect(p.summary().pairing_error_ms).toBe(150);
  });

  it('does not take a barcode naming no render it sent, or one sent too long ago, for a measurement', () => {
    const p = new LatencyPairing(150, 100);
    sendRenders(p, 10, 33, 500); // ids 500..509
    expect(p.presented(400, 7)!.by).toBe('latency'); // id 7 was never sent: a misread
    expect(p.presented(20_000, 500)!.by).toBe('latency'); // 20 s: not a model's latency
    expect(p.summary().pairing_samples).toBe(0);
  });

  it('has nothing to pair before a render was sent, and forgets renders beyond its window', () => {
    const p = new LatencyPairing(150, 100, 5);
    expect(p.presented(10, null)).toBeNull();
    sendRenders(p, 20, 10); // keeps ids 15..19
    expect(p.presented(500, 3)!.by).toBe('latency');
    expect(p.presented(500, 3)!.frameId).toBe(19);
  });
});

describe('the game asks for the hosted view', () => {
  it('by ?diffusion=mirage, with the latency to assume', () => {
    const c = parseConfig('?diffusion=mirage&diffusion_latency_ms=90&diffusion_latency_error_ms=40', () => 1);
    expect([c.diffusion, c.diffusionProvider, c.diffusionLatencyMs, c.diffusionLatencyErrorMs]).toEqual([true, 'mirage', 90, 40]);
    const pods = parseConfig('?diffusion=1', () => 1);
    expect([pods.diffusion, pods.diffusionProvider, pods.diffusionLatencyMs]).toEqual([true, 'gateway', 150]);
    expect(parseConfig('', () => 1).diffusion).toBe(false);
  });

  it('gets its token from the gateway once, and reports a gateway without hosted diffusion', async () => {
    const calls: { url: string; body: unknown }[] = [];
    const store: KeyValueStore = { getItem: () => 'tok-1', setItem: () => {}, removeItem: () => {} };
    let hostedOn = true;
    const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
      calls.push({ url: String(input), body: JSON.parse(String(init?.body)) });
      return hostedOn
        ? new Response(JSON.stringify({ provider: 'mirage', model: 'mirage_v2', realtime_url: 'wss://x/v1/stream', token: 'ek_1', expires_at: '2030-01-01T00:00:00Z' }), { status: 200 })
        : new Response(JSON.stringify({ error: { code: 'failed_precondition', message: 'hosted diffusion is off' } }), { status: 409 });
    }) as typeof fetch;
    const client = new GatewayClient({ fetch: fetchImpl, storage: store, sleep: async () => {} });
    expect((await client.hostedToken('s-1')).token).toBe('ek_1');
    expect(calls).toEqual([{ url: '/v1/diffusion/hosted-token', body: { session_id: 's-1' } }]);
    hostedOn = false;
    const err = await client.hostedToken('s-1').catch((e) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect([err.status, err.message]).toEqual([409, 'hosted diffusion is off']);
    expect(calls).toHaveLength(2);
  });
});
