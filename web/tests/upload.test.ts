import { describe, expect, it } from 'vitest';
import { GatewayClient, GatewayError, type KeyValueStore } from '../src/record/upload';
import type { SessionFile } from '../src/record/session';

class Store implements KeyValueStore {
  m = new Map<string, string>();
  getItem(k: string) { return this.m.get(k) ?? null; }
  setItem(k: string, v: string) { this.m.set(k, v); }
  removeItem(k: string) { this.m.delete(k); }
}

interface Call { method: string; url: string; body: unknown; headers: Record<string, string> }

/**
 * A stand-in for the gateway and its store (the real one is exercised by tests/e2e): records every
 * request, issues one multipart target for big files, and drops chosen requests like a flaky network.
 */
function fakeGateway(opts: { multipartAbove: number; partSize: number; failFirst?: Set<string>; offer503?: boolean }) {
  const calls: Call[] = [];
  const stored = new Map<string, number>();
  const failed = new Set<string>();
  const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const method = init?.method ?? 'GET';
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const raw = init?.body;
    const body = typeof raw === 'string' ? JSON.parse(raw) : raw instanceof Blob ? raw.size : raw;
    calls.push({ method, url, body, headers });
    if (opts.failFirst?.has(url) && !failed.has(url)) {
      failed.add(url);
      throw new TypeError('Failed to fetch'); // the connection dropped
    }
    if (url === '/v1/players' && method === 'POST') return json(201, { player_id: 'p-1', device_token: 'tok-1' });
    if (url === '/v1/players/me') {
      if (headers.Authorization !== 'Bearer tok-1') return json(401, { error: { code: 'unauthenticated', message: 'bad token' } });
      return json(200, { player_id: 'p-1', sessions_total: 1, sessions_uploaded: 1, sessions_rejected: 0, seconds_uploaded: 60 });
    }
    if (url === '/v1/sessions' && method === 'POST') return json(201, { session_id: 's-1', player_id: 'p-1', state: 'OPEN', problems: [], duration_s: 0 });
    if (url === '/v1/diffusion/ice-servers' && method === 'GET') {
      return json(200, { ice_servers: [{ urls: ['stun:stun.example.org:3478'], username: null, credential: null },
        { urls: ['turn:turn.example.org:3478'], username: '1800000000:p-1', credential: 'c2VjcmV0' }], expires_at: 1800000000 });
    }
    if (url === '/v1/diffusion/offer') {
      return opts.offer503 ? json(503, { error: { code: 'unavailable', message: 'no diffusion service', problems: [] } }) : json(200, {});
    }
    if (url.endsWith('/upload-urls')) {
      const files = (body as { files: { path: string; size_bytes: number }[] }).files;
      return json(200, { targets: files.map((f) => f.size_bytes >= opts.multipartAbove
        ? { path: f.path, method: 'PUT', url: '', headers: {}, multipart_upload_id: `mp-${f.path}`,
          parts: Array.from({ length: Math.ceil(f.size_bytes / opts.partSize) }, (_, i) => ({
            part_number: i + 1, url: `/store/${f.path}?part=${i + 1}`, offset_bytes: i * opts.partSize,
            size_bytes: Math.min(opts.partSize, f.size_bytes - i * opts.partSize) })) }
        : { path: f.path, method: 'PUT', url: `/store/${f.path}`, headers: { 'Content-Type': 'x', 'Content-Length': String(f.size_bytes) },
          multipart_upload_id: '', parts: [] }) });
    }
    if (url.startsWith('/store/') && method === 'PUT') {
      stored.set(url, body as number);
      return new Response(JSON.stringify({}), { status: 200, headers: { ETag: `"etag-${url.split('part=')[1] ?? '0'}"` } });
    }
    if (url.endsWith('/multipart/complete')) return json(200, { size_bytes: 1 });
    if (url.endsWith('/complete')) return json(200, { accepted: true, problems: [], session: { session_id: 's-1', state: 'UPLOADED' } });
    return json(404, { error: { code: 'not_found', message: url } });
  }) as typeof fetch;
  return { calls, stored, fetchImpl };
}

const file = (path: string, size: number): SessionFile => ({ path, blob: new Blob([new Uint8Array(size)]), sha256: 'a'.repeat(64), contentType: 'application/x-ndjson' });

describe('gateway client', () => {
  it('keeps the device token, uploads parts with retries after a dropped connection, the manifest last, then completes', async () => {
    const gw = fakeGateway({ multipartAbove: 1000, partSize: 400, failFirst: new Set(['/store/video.webm?part=2', '/store/events.jsonl']) });
    const storage = new Store();
    const sleeps: number[] = [];
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage, sleep: async (ms) => { sleeps.push(ms); } });
    expect(await client.ensurePlayer()).toBe('p-1');
    expect(storage.getItem('scale-diffusion.device_token')).toBe('tok-1');
    const session = await client.createSession('grid-1', 'r-1-0');
    const progress: string[] = [];
    const result = await client.uploadSession(session.session_id,
      [file('video.webm', 1100), file('frames.jsonl', 300), file('events.jsonl', 50), file('latency.jsonl', 20)],
      new Blob(['{}']), (p) => progress.push(`${p.file}:${p.sentBytes}/${p.totalBytes}${p.retry ? ':retry' : ''}`));
    expect(result.accepted).toBe(true);
    const puts = gw.calls.filter((c) => c.method === 'PUT').map((c) => c.url);
    // part 2 and events.jsonl were retried after the dropped connection; the manifest came last.
    expect(puts).toEqual(['/store/video.webm?part=1', '/store/video.webm?part=2', '/store/video.webm?part=2', '/store/video.webm?part=3',
      '/store/frames.jsonl', '/store/events.jsonl', '/store/events.jsonl', '/store/latency.jsonl', '/store/manifest.json']);
    const mp = gw.calls.find((c) => c.url.endsWith('/multipart/complete'))!;
    expect(mp.body).toEqual({ path: 'video.webm', multipart_upload_id: 'mp-video.webm',
      parts: [{ part_number: 1, etag: '"etag-1"' }, { part_number: 2, etag: '"etag-2"' }, { part_number: 3, etag: '"etag-3"' }] });
    expect(gw.calls[gw.calls.length - 1].url).toBe('/v1/sessions/s-1/complete');
    // Content-Length is the browser's to set; the signed Content-Type is sent.
    const single = gw.calls.find((c) => c.url === '/store/frames.jsonl')!;
    expect(single.headers).toEqual({ 'Content-Type': 'x' });
    expect(sleeps.length).toBe(2);
    expect(progress.some((p) => p.endsWith(':retry'))).toBe(true);
    expect(progress[progress.length - 1]).toBe(`manifest.json:${1100 + 300 + 50 + 20 + 2}/${1100 + 300 + 50 + 20 + 2}`);
  });

  it('makes a new player when the stored token is no longer accepted', async () => {
    const gw = fakeGateway({ multipartAbove: 1e9, partSize: 1 });
    const storage = new Store();
    storage.setItem('scale-diffusion.device_token', 'expired');
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage, sleep: async () => {} });
    expect(await client.ensurePlayer()).toBe('p-1');
    expect(client.token).toBe('tok-1');
  });

  it('makes one player when two screens ask at once', async () => {
    const gw = fakeGateway({ multipartAbove: 1e9, partSize: 1 });
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    expect(await Promise.all([client.ensurePlayer(), client.ensurePlayer()])).toEqual(['p-1', 'p-1']);
    expect(gw.calls.filter((c) => c.url === '/v1/players')).toHaveLength(1);
    expect(await client.ensurePlayer()).toBe('p-1'); // later: the stored token is checked again
    expect(gw.calls.filter((c) => c.url === '/v1/players/me')).toHaveLength(1);
  });

  it('asks for the diffusion stream once and reports the 503 reason', async () => {
    const gw = fakeGateway({ multipartAbove: 1e9, partSize: 1, offer503: true });
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    await client.ensurePlayer();
    const err = await client.diffusionOffer('s-1', 'v=0\r\n', 'p').catch((e) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect(err.status).toBe(503);
    expect(err.message).toBe('no diffusion service');
    expect(gw.calls.filter((c) => c.url === '/v1/diffusion/offer')).toHaveLength(1);
  });

  it('passes on the ICE servers the gateway names, TURN credentials included', async () => {
    const gw = fakeGateway({ multipartAbove: 1e9, partSize: 1 });
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    await client.ensurePlayer();
    expect(await client.diffusionIceServers()).toEqual([
      { urls: ['stun:stun.example.org:3478'] },
      { urls: ['turn:turn.example.org:3478'], username: '1800000000:p-1', credential: 'c2VjcmV0' },
    ]);
    const call = gw.calls.find((c) => c.url === '/v1/diffusion/ice-servers')!;
    expect(call.headers.Authorization).toBe('Bearer tok-1');
  });

  it('gives up with a clear error when the gateway stays unreachable', async () => {
    const client = new GatewayClient({ fetch: (async () => { throw new TypeError('Failed to fetch'); }) as typeof fetch,
      storage: new Store(), sleep: async () => {}, attempts: 3 });
    await expect(client.ensurePlayer()).rejects.toThrow(/could not be reached after 3 tries/);
  });
});
