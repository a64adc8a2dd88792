/**
 * Linking a Solana wallet with Sign-In With Solana (docs/wallets.md): the wallet the browser injects
 * (window.phantom.solana or window.solana: connect(), signMessage(bytes)) connects, the gateway issues
 * the exact message to sign, the wallet signs its UTF-8 bytes, and the gateway checks and links it.
 * Only a message is signed: no transaction, no fee. Keys and signatures travel base58.
 */
import bs58 from 'bs58';
import type { Wallet, WalletChallenge } from './rewards';

/** A Solana public key as wallets hand it out (a PublicKey object, or already a base58 string). */
export type PublicKeyLike = string | { toBase58?: () => string; toBytes?: () => Uint8Array; toString(): string };

/** The part of an injected Solana wallet (Phantom's provider and those copying it) the game uses. */
export interface SolanaProvider {
  connect(): Promise<{ publicKey: PublicKeyLike } | void>;
  signMessage(message: Uint8Array, display?: 'utf8' | 'hex'): Promise<{ signature: Uint8Array } | Uint8Array>;
  publicKey?: PublicKeyLike | null;
  isPhantom?: boolean;
}

/** What went wrong, for the page to say: no wallet, the player declined, the wallet failed, the gateway refused. */
export type WalletErrorKind = 'no_wallet' | 'refused' | 'wallet_failed' | 'gateway';

export class WalletError extends Error {
  constructor(readonly kind: WalletErrorKind, message: string, readonly status = 0) {
    super(message);
  }
}

/** The gateway calls the link needs (GatewayClient has them). */
export interface WalletGateway {
  walletChallenge(address: string): Promise<WalletChallenge>;
  linkWallet(message: string, signatureB58: string): Promise<Wallet>;
}

/** The injected wallet of this page, if there is one. */
export function findProvider(win: unknown): SolanaProvider | null {
  const w = (win ?? {}) as { phantom?: { solana?: unknown }; solana?: unknown };
  for (const p of [w.phantom?.solana, w.solana]) {
    const q = p as Partial<SolanaProvider> | undefined;
    if (q && typeof q.connect === 'function' && typeof q.signMessage === 'function') return q as SolanaProvider;
  }
  return null;
}

/** The base58 spelling of a public key; throws when it is not a 32-byte key. */
export function addressOf(key: PublicKeyLike | null | undefined): string {
  let address = '';
  if (typeof key === 'string') address = key;
  else if (key && typeof key.toBase58 === 'function') address = key.toBase58();
  else if (key && typeof key.toBytes === 'function') address = bs58.encode(key.toBytes());
  else if (key) address = String(key);
  let bytes: Uint8Array;
  try {
    bytes = bs58.decode(address);
  } catch {
    throw new WalletError('wallet_failed', `the wallet gave a public key that is not base58 (${address.slice(0, 60) || 'none'})`);
  }
  if (bytes.length !== 32) throw new WalletError('wallet_failed', `the wallet's public key is ${bytes.length} bytes, not 32`);
  return address;
}

/** True for a wallet's "the user said no" (EIP-1193 code 4001, as Phantom answers, or its wording). */
function refused(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; name?: unknown } | null;
  if (e && (e.code === 4001 || e.code === 'ACTION_REJECTED')) return true;
  return /reject|denied|declin|cancel/i.test(`${e?.name ?? ''} ${e?.message ?? String(err)}`);
}

const why = (err: unknown) => (err instanceof Error ? err.message : String((err as { message?: unknown })?.message ?? err));

/**
 * Links the provider's wallet to the player: connect, ask the gateway for the challenge, sign it,
 * send it back. Resolves with the linked wallet; throws WalletError saying which step failed.
 */
export async function linkWallet(gateway: WalletGateway, provider: SolanaProvider | null): Promise<Wallet> {
  if (!provider) {
    throw new WalletError('no_wallet', 'No Solana wallet was found in this browser. Install a wallet extension ' +
      '(such as Phantom), reload the page, and try again.');
  }
  let key: PublicKeyLike | null | undefined;
  try {
    const c = await provider.connect();
    key = (c && 'publicKey' in c ? c.publicKey : null) ?? provider.publicKey;
  } catch (err) {
    if (refused(err)) throw new WalletError('refused', 'The wallet did not connect: the request was declined.');
    throw new WalletError('wallet_failed', `The wallet could not connect: ${why(err)}`);
  }
  const address = addressOf(key);
  let challenge: WalletChallenge;
  try {
    challenge = await gateway.walletChallenge(address);
  } catch (err) {
    throw gatewayRefusal('The gateway gave no message to sign', err);
  }
  // Sign only a message that names this wallet: a gateway asking for another address's signature is wrong.
  if (challenge.message.split('\n')[1] !== address) {
    throw new WalletError('gateway', 'The gateway asked to sign a message for another address; nothing was signed.');
  }
  let signature: Uint8Array;
  try {
    const s = await provider.signMessage(new TextEncoder().encode(challenge.message), 'utf8');
    signature = s instanceof Uint8Array ? s : s.signature;
  } catch (err) {
    if (refused(err)) throw new WalletError('refused', 'You declined to sign the message, so no wallet was linked.');
    throw new WalletError('wallet_failed', `The wallet could not sign the message: ${why(err)}`);
  }
  if (!(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new WalletError('wallet_failed', `The wallet's signature is not 64 bytes (${signature?.length ?? 'none'}).`);
  }
  try {
    return await gateway.linkWallet(challenge.message, bs58.encode(signature));
  } catch (err) {
    throw gatewayRefusal('The gateway refused the link', err);
  }
}

function gatewayRefusal(what: string, err: unknown): WalletError {
  const status = typeof (err as { status?: unknown })?.status === 'number' ? (err as { status: number }).status : 0;
  return new WalletError('gateway', `${what}: ${why(err)}`, status);
}
