import { describe, expect, it } from 'vitest';
import { GatewayClient, GatewayError, type KeyValueStore } from '../src/record/upload';
import type { SessionFile } from '../src/record/session';

class Store implements KeyValueStore {
  m = new Map<string, string>([['scale-diffusion.device_token', 'tok-1']]);
  getItem(k: string) { return this.m.get(k) ?? null; }
  setItem(k: string, v: string) { this.m.set(k, v); }
  removeItem(k: string) { this.m.delete(k); }
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
const error = (status: number, code: string, headers: Record<string, string> = {}) =>
  json(status, { error: { code, message: `${code} happened`, problems: [] } }, headers);

/** A fetch that answers each URL from a script of responses, then with `fallback`; records every call. */
function scripted(script: Record<string, Response[]>, fallback: (url: string, init?: RequestInit) => Response) {
  const calls: string[] = [];
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    calls.push(`${init?.method ?? 'GET'} ${url}`);
    const queued = script[url];
    if (queued && queued.length) return queued.shift()!;
    return fallback(url, init);
  }) as typeof fetch;
  return { calls, fetchImpl };
}

const me = () => json(200, { player_id: 'p-1', sessions_total: 0, sessions_uploaded: 0, sessions_rejected: 0, seconds_uploaded: 0 });

describe('gateway client retries', () => {
  for (const status of [408, 425, 429, 500, 502, 503, 504]) {
    it(`retries HTTP ${status} and then succeeds`, async () => {
      const gw = scripted({ '/v1/players/me': [error(status, 'busy')] }, me);
      const sleeps: number[] = [];
      const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async (ms) => { sleeps.push(ms); }, backoffMs: 100 });
      expect((await client.me()).player_id).toBe('p-1');
      expect(gw.calls).toEqual(['GET /v1/players/me', 'GET /v1/players/me']);
      expect(sleeps).toEqual([100]);
    });
  }

  it('waits as long as Retry-After says (capped at 30 s) instead of its own backoff', async () => {
    const gw = scripted({ '/v1/players/me': [error(429, 'rate_limited', { 'Retry-After': '7' }),
      error(503, 'unavailable', { 'Retry-After': '120' }), error(429, 'rate_limited')] }, me);
    const sleeps: number[] = [];
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async (ms) => { sleeps.push(ms); }, backoffMs: 100 });
    await client.me();
    expect(sleeps).toEqual([7000, 30000, 400]);  // Retry-After, capped Retry-After, then the third backoff step
  });

  for (const status of [400, 401, 403, 404, 409, 413]) {
    it(`does not retry HTTP ${status}: it is an answer`, async () => {
      const gw = scripted({ '/v1/players/me': [error(status, 'nope')] }, me);
      const sleeps: number[] = [];
      const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async (ms) => { sleeps.push(ms); } });
      const err = await client.me().catch((e) => e);
      expect(err).toBeInstanceOf(GatewayError);
      expect([err.status, err.code, err.message]).toEqual([status, 'nope', 'nope happened']);
      expect(gw.calls).toHaveLength(1);
      expect(sleeps).toEqual([]);
    });
  }

  it('reports the last Retry-After when it gives up on a 429', async () => {
    const gw = scripted({}, () => error(429, 'rate_limited', { 'Retry-After': '9' }));
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {}, attempts: 3 });
    const err = await client.me().catch((e) => e);
    expect([err.status, err.retryAfter_s]).toEqual([429, 9]);
    expect(gw.calls).toHaveLength(3);
  });
});

describe('gateway client upload URLs', () => {
  const file = (path: string, size: number): SessionFile => ({ path, blob: new Blob([new Uint8Array(size)]), sha256: 'a'.repeat(64), contentType: 'text/plain' });

  function gateway(expiredPuts: number) {
    let issued = 0;
    let expired = 0;
    const uploadCalls: number[] = [];
    const gw = scripted({}, (url, init) => {
      if (url.endsWith('/upload-urls')) {
        issued += 1;
        uploadCalls.push(issued);
        const files = JSON.parse(String(init?.body)).files as { path: string }[];
        return json(200, { targets: files.map((f) => ({ path: f.path, method: 'PUT', url: `/store/${f.path}?v=${issued}`,
          headers: {}, multipart_upload_id: '', parts: [] })) });
      }
      if (url.startsWith('/store/')) {
        if (url.endsWith('?v=1') && expired < expiredPuts) {
          expired += 1;
          return error(403, 'UrlExpired');
        }
        if (url.includes('?v=') && !url.endsWith(`?v=${issued}`)) return error(403, 'UrlExpired');
        return new Response('{}', { status: 200, headers: { ETag: '"e"' } });
      }
      if (url.endsWith('/complete')) return json(200, { accepted: true, problems: [], session: { session_id: 's-1', state: 'UPLOADED' } });
      return error(404, 'not_found');
    });
    return { ...gw, uploadCalls };
  }

  it('asks for fresh URLs when one has expired and uploads through them', async () => {
    const gw = gateway(1);
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    const result = await client.uploadSession('s-1', [file('frames.jsonl', 10), file('events.jsonl', 5)], new Blob(['{}']));
    expect(result.accepted).toBe(true);
    expect(gw.uploadCalls).toEqual([1, 2]);
    expect(gw.calls.filter((c) => c.startsWith('PUT'))).toEqual(['PUT /store/frames.jsonl?v=1', 'PUT /store/frames.jsonl?v=2',
      'PUT /store/events.jsonl?v=2', 'PUT /store/manifest.json?v=2']);
  });

  it('gives up after renewing twice, naming the expiry', async () => {
    const gw = scripted({}, (url, init) => url.endsWith('/upload-urls')
      ? json(200, { targets: JSON.parse(String(init?.body)).files.map((f: { path: string }) => ({ path: f.path, method: 'PUT',
        url: `/store/${f.path}`, headers: {}, multipart_upload_id: '', parts: [] })) })
      : error(403, 'UrlExpired'));
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    const err = await client.uploadSession('s-1', [file('frames.jsonl', 10)], new Blob(['{}'])).catch((e) => e);
    expect([err.status, err.code]).toEqual([403, 'UrlExpired']);
    expect(gw.calls.filter((c) => c.endsWith('/upload-urls'))).toHaveLength(3);
    expect(gw.calls.some((c) => c.endsWith('/complete'))).toBe(false);
  });

  it('does not renew on a 403 that is not an expiry (a forged or sealed URL)', async () => {
    const gw = scripted({}, (url, init) => url.endsWith('/upload-urls')
      ? json(200, { targets: JSON.parse(String(init?.body)).files.map((f: { path: string }) => ({ path: f.path, method: 'PUT',
        url: `/store/${f.path}`, headers: {}, multipart_upload_id: '', parts: [] })) })
      : error(403, 'SignatureInvalid'));
    const client = new GatewayClient({ fetch: gw.fetchImpl, storage: new Store(), sleep: async () => {} });
    const err = await client.uploadSession('s-1', [file('frames.jsonl', 10)], new Blob(['{}'])).catch((e) => e);
    expect([err.status, err.code]).toEqual([403, 'SignatureInvalid']);
    expect(gw.calls.filter((c) => c.endsWith('/upload-urls'))).toHaveLength(1);
  });
});
