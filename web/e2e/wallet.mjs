// A stand-in for a browser wallet extension (Phantom's injected provider), which cannot run in the
// test browser: window.solana with connect() and signMessage(bytes), backed by a real ed25519 key
// held here, in Node. The page sees what it would see with the extension; the gateway and the
// ingest verify real signatures.
import { generateKeyPairSync, sign } from 'node:crypto';
import bs58 from 'bs58';

/** Installs the provider into every page of `context` before the game loads; returns its address. */
export async function installTestWallet(context) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const address = bs58.encode(Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url'));
  const signed = [];
  await context.exposeBinding('__sdTestWalletSign', (_source, bytes) => {
    const message = Buffer.from(bytes);
    signed.push(message.toString('utf8'));
    return Array.from(sign(null, message, privateKey));
  });
  await context.addInitScript((addr) => {
    const key = { toBase58: () => addr, toString: () => addr };
    window.solana = {
      isPhantom: true,
      publicKey: null,
      async connect() { this.publicKey = key; return { publicKey: key }; },
      async signMessage(bytes) {
        const signature = new Uint8Array(await window.__sdTestWalletSign(Array.from(bytes)));
        return { signature, publicKey: key };
      },
    };
  }, address);
  return { address, signed };
}
