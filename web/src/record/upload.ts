/**
 * The gateway's HTTP API as the game uses it (docs/api.md): an anonymous player whose device token
 * is kept in localStorage, sessions, presigned uploads (single PUT or multipart, every request
 * retried with backoff so an upload resumes after a dropped connection), completion, the
 * diffusion signaling offer, the hosted diffusion token, and the player's rewards and wallet. No DOM: fetch, storage and sleep are injected so tests run it in Node.
 */
import { MANIFEST_NAME, type SessionFile } from './session';
import { parseOutcome, type SessionOutcome } from './outcome';
import {
  parseContributions, parseLeaderboard, parseWallet, parseWalletChallenge, parseWalletState,
  type Contributions, type Leaderboard, type Wallet, type WalletChallenge, type WalletState,
} from './rewards';

export interface Problem {
  code: string;
  path: string;
  message: string;
}

export class GatewayError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly problems: Problem[] = [],
    readonly retryAfter_s: number | null = null) {
    super(message);
  }
}

export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface UploadProgress {
  sentBytes: number;
  totalBytes: number;
  file: string;
  /** Set while a request is being retried: what went wrong and which try comes next. */
  retry?: { attempt: number; reason: string };
}

export interface PlayerTotals {
  player_id: string;
  sessions_total: number;
  sessions_uploaded: number;
  sessions_rejected: number;
  seconds_uploaded: number;
}

export interface SessionView {
  session_id: string;
  player_id: string;
  state: string;
  problems: Problem[];
  duration_s: number;
}

export interface CompleteResult {
  accepted: boolean;
  problems: Problem[];
  session: SessionView;
}

/** The gateway's answer to POST /v1/diffusion/hosted-token: what the game needs to stream to the provider. */
export interface HostedToken {
  provider: string;
  model: string;
  realtime_url: string;
  token: string;
  expires_at: string;
}

interface UploadTarget {
  path: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  multipart_upload_id: string;
  parts: { part_number: number; url: string; offset_bytes: number; size_bytes: number }[];
}

export interface GatewayClientOptions {
  baseUrl?: string;
  fetch?: typeof fetch;
  storage?: KeyValueStore;
  sleep?: (ms: number) => Promise<void>;
  /** Tries per request, the first included. */
  attempts?: number;
  backoffMs?: number;
  clientBuild?: string;
}

const TOKEN_KEY = 'scale-diffusion.device_token';
const PLAYER_KEY = 'scale-diffusion.player_id';
const RETRYABLE = new Set([408, 425, 429, 500, 502, 503, 504]);
// Headers a browser sets itself; fetch refuses to send them from script.
const FORBIDDEN_HEADERS = new Set(['content-length', 'host', 'connection']);

class MemoryStore implements KeyValueStore {
  private m = new Map<string, string>();
  getItem(k: string) { return this.m.get(k) ?? null; }
  setItem(k: string, v: string) { this.m.set(k, v); }
  removeItem(k: string) { this.m.delete(k); }
}

export class GatewayClient {
  private readonly base: string;
  private readonly fetchImpl: typeof fetch;
  private readonly storage: KeyValueStore;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly clientBuild: string;
  private pendingPlayer: Promise<string> | null = null;

  constructor(opts: GatewayClientOptions = {}) {
    this.base = (opts.baseUrl ?? '').replace(/\/$/, '');
    this.fetchImpl = opts.fetch ?? ((...a: Parameters<typeof fetch>) => fetch(...a));
    this.storage = opts.storage ?? new MemoryStore();
    this.sleep = opts.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.attempts = opts.attempts ?? 6;
    this.backoffMs = opts.backoffMs ?? 500;
    this.clientBuild = opts.clientBuild ?? 'web';
  }

  get token(): string | null {
    return this.storage.getItem(TOKEN_KEY);
  }

  get playerId(): string | null {
    return this.storage.getItem(PLAYER_KEY);
  }

  /**
   * One request, retried on network failures and retryable statuses with exponential backoff
   * (Retry-After honoured). `onRetry` hears about each retry.
   */
  private async request(url: string, init: RequestInit, onRetry?: (attempt: number, reason: string) => void): Promise<Response> {
    let lastError: unknown = null;
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      let reason: string;
      let waitMs = Math.min(8000, this.backoffMs * 2 ** (attempt - 1));
      try {
        const resp = await this.fetchImpl(url, init);
        if (!RETRYABLE.has(resp.status) || attempt === this.attempts) return resp;
        reason = `HTTP ${resp.status}`;
        const ra = Number(resp.headers.get('Retry-After'));
        if (Number.isFinite(ra) && ra > 0) waitMs = Math.min(30000, ra * 1000);
      } catch (err) {
        lastError = err;
        reason = err instanceof Error ? err.message : String(err);
        if (attempt === this.attempts) break;
      }
      onRetry?.(attempt + 1, reason);
      await this.sleep(waitMs);
    }
    throw new GatewayError(0, 'network', `the gateway could not be reached after ${this.attempts} tries: ${
      lastError instanceof Error ? lastError.message : String(lastError)}`);
  }

  private async call<T>(method: string, path: string, body?: unknown, auth = true, retry = true): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    const init: RequestInit = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
    const resp = retry ? await this.request(this.base + path, init) : await this.once(this.base + path, init);
    return (await this.parse(resp)) as T;
  }

  private async once(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchImpl(url, init);
    } catch (err) {
      throw new GatewayError(0, 'network', `the gateway could not be reached: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async parse(resp: Response): Promise<unknown> {
    const text = await resp.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) {
      const err = (data as { error?: { code?: string; message?: string; problems?: Problem[] } } | null)?.error;
      const ra = Number(resp.headers.get('Retry-After'));
      throw new GatewayError(resp.status, err?.code ?? `http_${resp.status}`,
        err?.message ?? (text.slice(0, 200) || `HTTP ${resp.status}`), err?.problems ?? [], Number.isFinite(ra) && ra > 0 ? ra : null);
    }
    return data;
  }

  /**
   * Makes sure there is a player with a working device token; returns the player id. Calls made
   * while one is under way share it, so two screens asking at once make one player, not two.
   */
  ensurePlayer(): Promise<string> {
    this.pendingPlayer ??= this.makePlayer().finally(() => { this.pendingPlayer = null; });
    return this.pendingPlayer;
  }

  private async makePlayer(): Promise<string> {
    if (this.token) {
      try {
        const me = await this.me();
        this.storage.setItem(PLAYER_KEY, me.player_id);
        return me.player_id;
      } catch (err) {
        if (!(err instanceof GatewayError) || err.status !== 401) throw err;
        this.storage.removeItem(TOKEN_KEY); // expired or from another gateway: start afresh
      }
    }
    const p = await this.call<{ player_id: string; device_token: string }>('POST', '/v1/players',
      { client_build: this.clientBuild }, false);
    this.storage.setItem(TOKEN_KEY, p.device_token);
    this.storage.setItem(PLAYER_KEY, p.player_id);
    return p.player_id;
  }

  me(): Promise<PlayerTotals> {
    return this.call<PlayerTotals>('GET', '/v1/players/me');
  }

  createSession(city: string, routeId: string): Promise<SessionView> {
    return this.call<SessionView>('POST', '/v1/sessions', {
      client_build: this.clientBuild, city: city.slice(0, 128), route_id: routeId.slice(0, 128),
    });
  }

  /** What processing made of the session (accepted seconds, rejected segments, points); see outcome.ts. */
  async sessionOutcome(sessionId: string): Promise<SessionOutcome> {
    return parseOutcome(await this.call<unknown>('GET', `/v1/sessions/${encodeURIComponent(sessionId)}/outcome`));
  }

  /** The player's credits (newest first, `pageSize` of them from `pageToken`), balances and today's cap. */
  async contributions(pageSize = 50, pageToken = ''): Promise<Contributions> {
    const q = new URLSearchParams({ page_size: String(pageSize) });
    if (pageToken) q.set('page_token', pageToken);
    return parseContributions(await this.call<unknown>('GET', `/v1/players/me/contributions?${q}`));
  }

  /** Points credited in an ISO week (`2026-W49`; this week when empty), highest first, the player's row marked. */
  async leaderboard(week = ''): Promise<Leaderboard> {
    return parseLeaderboard(await this.call<unknown>('GET', `/v1/leaderboard${week ? `?week=${encodeURIComponent(week)}` : ''}`));
  }

  /** The player's linked wallet (null if none) and its link log. */
  async wallet(): Promise<WalletState> {
    return parseWalletState(await this.call<unknown>('GET', '/v1/wallet'));
  }

  /** The Sign-In With Solana message the wallet at `address` (base58) must sign. Asked once: it is rate limited. */
  async walletChallenge(address: string): Promise<WalletChallenge> {
    return parseWalletChallenge(await this.call<unknown>('POST', '/v1/wallet/challenge', { address }, true, false));
  }

  /**
   * Links the wallet that signed `message` (its ed25519 signature, base58). Sent once, never retried:
   * a retry of a link that did arrive would find its challenge spent.
   */
  async linkWallet(message: string, signatureB58: string): Promise<Wallet> {
    return parseWallet(await this.call<unknown>('POST', '/v1/wallet/link', { message, signature: signatureB58 }, true, false));
  }

  /** Unlinks the player's wallet; GatewayError 404 when none is linked. */
  async unlinkWallet(): Promise<void> {
    await this.call<unknown>('DELETE', '/v1/wallet', undefined, true, false);
  }

  getSession(sessionId: string): Promise<SessionView> {
    return this.call<SessionView>('GET', `/v1/sessions/${encodeURIComponent(sessionId)}`);
  }

  /** Relays an SDP offer to the diffusion service; throws GatewayError 503 with the reason when there is none. */
  diffusionOffer(sessionId: string, sdpOffer: string, prompt: string): Promise<{ sdp_answer: string; stream_id: string; backend: string; model?: string }> {
    // 503 here is an answer ("no diffusion service"), not a hiccup: asked once, never retried.
    return this.call('POST', '/v1/diffusion/offer', { session_id: sessionId, sdp_offer: sdpOffer, prompt }, true, false);
  }

  /** The STUN/TURN servers for the diffusion peer connection (TURN credentials are this player's, and expire). */
  async diffusionIceServers(): Promise<RTCIceServer[]> {
    const r = await this.call<{ ice_servers: { urls: string[]; username?: string | null; credential?: string | null }[] }>(
      'GET', '/v1/diffusion/ice-servers');
    return r.ice_servers.map((s) => ({
      urls: s.urls, ...(s.username ? { username: s.username } : {}), ...(s.credential ? { credential: s.credential } : {}),
    }));
  }

  /**
   * A short-lived client token of the gateway's hosted diffusion provider (docs/diffusion.md "Hosted
   * (Mirage)"); GatewayError 409 when the gateway has none, 502/503 when the provider failed. Asked once.
   */
  hostedToken(sessionId: string): Promise<HostedToken> {
    return this.call('POST', '/v1/diffusion/hosted-token', { session_id: sessionId }, true, false);
  }

  private async targets(sessionId: string, files: { path: string; blob: Blob; sha256: string; contentType: string }[]): Promise<Map<string, UploadTarget>> {
    const body = { files: files.map((f) => ({ path: f.path, size_bytes: f.blob.size, sha256: f.sha256, content_type: f.contentType })) };
    const r = await this.call<{ targets: UploadTarget[] }>('POST', `/v1/sessions/${encodeURIComponent(sessionId)}/upload-urls`, body);
    return new Map(r.targets.map((t) => [t.path, t]));
  }

  private async put(url: string, body: Blob, headers: Record<string, string>, progress: (retry?: { attempt: number; reason: string }) => void): Promise<Response> {
    const h: Record<string, string> = {};
    for (const [k, v] of Object.entries(headers)) if (!FORBIDDEN_HEADERS.has(k.toLowerCase())) h[k] = v;
    const resp = await this.request(url, { method: 'PUT', body, headers: h }, (attempt, reason) => progress({ attempt, reason }));
    if (!resp.ok) await this.parse(resp);
    return resp;
  }

  /**
   * Uploads every file (multipart where the gateway says so), then the manifest, then completes the
   * session. An expired URL is replaced by a fresh one; failed requests are retried.
   */
  async uploadSession(sessionId: string, files: SessionFile[], manifest: Blob,
    onProgress: (p: UploadProgress) => void = () => {}): Promise<CompleteResult> {
    const manifestFile = { path: MANIFEST_NAME, blob: manifest, sha256: '', contentType: 'application/json' };
    const all = [...files, manifestFile];
    const totalBytes = all.reduce((a, f) => a + f.blob.size, 0);
    let sentBytes = 0;
    let targets = await this.targets(sessionId, all);
    const sid = encodeURIComponent(sessionId);

    for (const f of all) {
      const report = (retry?: { attempt: number; reason: string }) => onProgress({ sentBytes, totalBytes, file: f.path, retry });
      report();
      const sentBefore = sentBytes;
      for (let renewals = 0; ; renewals++) {
        sentBytes = sentBefore;
        const t = targets.get(f.path);
        if (!t) throw new GatewayError(0, 'no_target', `the gateway gave no upload URL for ${f.path}`);
        try {
          if (!t.multipart_upload_id) {
            await this.put(t.url, f.blob, t.headers, report);
            sentBytes += f.blob.size;
          } else {
            const etags: { part_number: number; etag: string }[] = [];
            for (const part of t.parts) {
              const chunk = f.blob.slice(part.offset_bytes, part.offset_bytes + part.size_bytes);
              const resp = await this.put(part.url, chunk, {}, report);
              etags.push({ part_number: part.part_number, etag: resp.headers.get('ETag') ?? '' });
              sentBytes += part.size_bytes;
              report();
            }
            await this.call('POST', `/v1/sessions/${sid}/multipart/complete`,
              { path: f.path, multipart_upload_id: t.multipart_upload_id, parts: etags });
          }
          break;
        } catch (err) {
          // Upload URLs expire (15 min by default): ask for fresh ones once or twice.
          if (err instanceof GatewayError && err.status === 403 && err.code === 'UrlExpired' && renewals < 2) {
            targets = await this.targets(sessionId, all);
            continue;
          }
          throw err;
        }
      }
      report();
    }
    return this.call<CompleteResult>('POST', `/v1/sessions/${sid}/complete`);
  }
}
