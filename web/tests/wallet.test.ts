import { createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import bs58 from 'bs58';
import { describe, expect, it } from 'vitest';
import { GatewayClient, type KeyValueStore } from '../src/record/upload';
import { WalletError, findProvider, linkWallet, type SolanaProvider } from '../src/record/wallet';

class Store implements KeyValueStore {
  m = new Map<string, string>([['scale-diffusion.device_token', 'tok-1']]);
  getItem(k: string) { return this.m.get(k) ?? null; }
  setItem(k: string, v: string) { this.m.set(k, v); }
  removeItem(k: string) { this.m.delete(k); }
}

/** A keypair's raw 32-byte public key. */
const rawPublic = (k: KeyObject) => new Uint8Array(Buffer.from(k.export({ format: 'jwk' }).x!, 'base64url'));

/**
 * What a browser wallet extension does, which cannot run here: it holds a real ed25519 key, connects
 * (handing out a PublicKey-like object), and signs the bytes it is given — unless the player declines.
 */
function fakeWallet(opts: { declineConnect?: boolean; declineSign?: boolean; returnBareBytes?: boolean } = {}) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = rawPublic(publicKey);
  const signed: Uint8Array[] = [];
  const key = { toBytes: () => raw, toString: () => 'PublicKey' };
  const provider: SolanaProvider = {
    isPhantom: true,
    async connect() {
      if (opts.declineConnect) throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
      return { publicKey: key };
    },
    async signMessage(message: Uint8Array) {
      if (opts.declineSign) throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
      signed.push(message);
      const signature = new Uint8Array(sign(null, message, privateKey));
      return opts.returnBareBytes ? signature : { signature, publicKey: key };
    },
  };
  return { provider, address: bs58.encode(raw), signed };
}

interface Call { method: string; url: string; body: unknown; auth: string | undefined }

/**
 * The gateway's wallet endpoints as docs/wallets.md specifies them, stubbed through the client's fetch:
 * a challenge for the address, and a link that verifies the signature over the message it issued.
 */
function fakeGateway(opts: { linkStatus?: number; linkError?: { code: string; message: string }; challengeFor?: string } = {}) {
  const calls: Call[] = [];
  const issued = new Map<string, string>(); // message → address
  const json = (status: number, body: unknown) => new Response(status === 204 ? null : JSON.stringify(body), { status });
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    const method = init?.method ?? 'GET';
    const body = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
    calls.push({ method, url, body, auth: (init?.headers as Record<string, string>)?.Authorization });
    if (url === '/v1/wallet/challenge' && method === 'POST') {
      const address = opts.challengeFor ?? body.address;
      const message = `127.0.0.1:8080 wants you to sign in with your Solana account:\n${address}\n\n` +
        'Link this wallet to your Scale Diffusion player to receive contribution rewards.\n\nURI: http://127.0.0.1:8080\n' +
        'Version: 1\nChain ID: devnet\nNonce: 6Qx0bT2kLw9PZr4mVd1cHa\nIssued At: 2026-12-02T10:00:00Z\nExpiration Time: 2026-12-02T10:10:00Z';
      issued.set(message, address);
      return json(200, { message, nonce: '6Qx0bT2kLw9PZr4mVd1cHa', expires_at: '2026-12-02T10:10:00Z' });
    }
    if (url === '/v1/wallet/link' && method === 'POST') {
      if (opts.linkStatus) return json(opts.linkStatus, { error: { ...opts.linkError, problems: [] } });
      const address = issued.get(body.message);
      if (!address) return json(400, { error: { code: 'invalid_argument', message: 'not the challenge that was issued' } });
      const sig = bs58.decode(body.signature);
      const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(bs58.decode(address)).toString('base64url') }, format: 'jwk' });
      if (sig.length !== 64 || !verify(null, new TextEncoder().encode(body.message), key, sig)) {
        return json(400, { error: { code: 'invalid_argument', message: 'the signature does not verify' } });
      }
      return json(200, { address, linked_at: '2026-12-02T10:00:05Z', chain_id: 'devnet' });
    }
    if (url === '/v1/wallet' && method === 'DELETE') return json(204, null);
    return json(404, { error: { code: 'not_found', message: url } });
  }) as typeof fetch;
  const client = new GatewayClient({ fetch: fetchImpl, storage: new Store(), sleep: async () => {} });
  return { calls, client };
}

describe('linking a wallet with Sign-In With Solana', () => {
  it('signs exactly the message the gateway issued and sends it back with a base58 signature that verifies', async () => {
    const w = fakeWallet();
    const gw = fakeGateway();
    const linked = await linkWallet(gw.client, w.provider);
    expect(linked).toEqual({ address: w.address, linked_at: '2026-12-02T10:00:05Z', chain_id: 'devnet' });
    const [challenge, link] = gw.calls;
    expect(challenge).toMatchObject({ method: 'POST', url: '/v1/wallet/challenge', body: { address: w.address }, auth: 'Bearer tok-1' });
    expect(link.url).toBe('/v1/wallet/link');
    expect(link.auth).toBe('Bearer tok-1');
    // The wallet was handed the message's UTF-8 bytes, and the link carries that message unchanged.
    expect(new TextDecoder().decode(w.signed[0])).toBe((link.body as { message: string }).message);
    expect(bs58.decode((link.body as { signature: string }).signature)).toHaveLength(64);
    expect(gw.calls).toHaveLength(2);
  });

  it('accepts a wallet whose signMessage answers the bare signature bytes', async () => {
    const w = fakeWallet({ returnBareBytes: true });
    expect((await linkWallet(fakeGateway().client, w.provider)).address).toBe(w.address);
  });

  it('says plainly when there is no wallet, and asks the gateway nothing', async () => {
    const gw = fakeGateway();
    const err = await linkWallet(gw.client, findProvider({})).catch((e) => e);
    expect(err).toBeInstanceOf(WalletError);
    expect(err.kind).toBe('no_wallet');
    expect(err.message).toMatch(/No Solana wallet was found/);
    expect(gw.calls).toHaveLength(0);
  });

  it('stops when the player declines to connect or to sign; nothing is linked', async () => {
    const gw = fakeGateway();
    const noConnect = await linkWallet(gw.client, fakeWallet({ declineConnect: true }).provider).catch((e) => e);
    expect([noConnect.kind, noConnect.message]).toEqual(['refused', 'The wallet did not connect: the request was declined.']);
    expect(gw.calls).toHaveLength(0);
    const noSign = await linkWallet(gw.client, fakeWallet({ declineSign: true }).provider).catch((e) => e);
    expect(noSign.kind).toBe('refused');
    expect(noSign.message).toMatch(/declined to sign/);
    expect(gw.calls.map((c) => c.url)).toEqual(['/v1/wallet/challenge']);
  });

  it("passes on the gateway's refusal with its message, asked once", async () => {
    const gw = fakeGateway({ linkStatus: 409, linkError: { code: 'already_exists', message: 'this wallet is linked to another player' } });
    const err = await linkWallet(gw.client, fakeWallet().provider).catch((e) => e);
    expect(err).toBeInstanceOf(WalletError);
    expect([err.kind, err.status]).toEqual(['gateway', 409]);
    expect(err.message).toBe('The gateway refused the link: this wallet is linked to another player');
    const unavailable = fakeGateway({ linkStatus: 503, linkError: { code: 'unavailable', message: 'the ingest is not configured' } });
    const e503 = await linkWallet(unavailable.client, fakeWallet().provider).catch((e) => e);
    expect(e503.message).toMatch(/the ingest is not configured/);
    expect(unavailable.calls.filter((c) => c.url === '/v1/wallet/link')).toHaveLength(1); // never retried
  });

  it('signs nothing when the message names another address', async () => {
    const w = fakeWallet();
    const gw = fakeGateway({ challengeFor: fakeWallet().address });
    const err = await linkWallet(gw.client, w.provider).catch((e) => e);
    expect(err.kind).toBe('gateway');
    expect(w.signed).toHaveLength(0);
  });

  it('finds the injected provider (phantom.solana first) and unlinks with DELETE', async () => {
    const a = fakeWallet().provider;
    const b = fakeWallet().provider;
    expect(findProvider({ phantom: { solana: a }, solana: b })).toBe(a);
    expect(findProvider({ solana: b })).toBe(b);
    expect(findProvider({ solana: { connect() {} } })).toBeNull();
    const gw = fakeGateway();
    await gw.client.unlinkWallet();
    expect(gw.calls).toEqual([{ method: 'DELETE', url: '/v1/wallet', body: undefined, auth: 'Bearer tok-1' }]);
  });
});
