import { concatBytes, toHex, tokensToBytes, utf8, fromHex } from './bytes.ts';
import { sha256 } from './sha256.ts';
import { InvalidInput } from './errors.ts';

/** Tokens per chained block, as in vLLM's prefix cache. */
export const BLOCK_TOKENS = 16;
export const KEY_DOMAIN = 'statecart/v1';

export function fpBytes(modelFp: string | Uint8Array): Uint8Array {
  const b = typeof modelFp === 'string' ? fromHex(modelFp.replace(/^sha256:/, '')) : modelFp;
  if (b.length !== 32) throw new InvalidInput('a model fingerprint is 32 bytes of SHA-256');
  return b;
}

/**
 * Chain hashes of every block: entry i covers tokens [0, min(16(i+1), n)).
 * block_0 = sha256("statecart/v1" ‖ fp ‖ ids 0..15), block_i = sha256(block_{i-1} ‖ ids of block i);
 * a partial last block hashes the same way.
 */
export async function blockChain(modelFp: string | Uint8Array, tokens: ArrayLike<number>): Promise<Uint8Array[]> {
  const fp = fpBytes(modelFp);
  const out: Uint8Array[] = [];
  let prev: Uint8Array = concatBytes([utf8(KEY_DOMAIN), fp]);
  for (let start = 0; start < tokens.length; start += BLOCK_TOKENS) {
    const ids = Array.prototype.slice.call(tokens, start, Math.min(start + BLOCK_TOKENS, tokens.length)) as number[];
    prev = await sha256(concatBytes([prev, tokensToBytes(ids)]));
    out.push(prev);
  }
  return out;
}

export const keyOf = (hash: Uint8Array): string => 'sha256:' + toHex(hash);

/** The state key of a token sequence: the chain hash after its last token. */
export async function stateKey(modelFp: string | Uint8Array, tokens: ArrayLike<number>): Promise<string> {
  if (tokens.length === 0) throw new InvalidInput('a state has at least one token; the key of an empty token list is not defined');
  const chain = await blockChain(modelFp, tokens);
  return keyOf(chain[chain.length - 1]!);
}

/**
 * The state key of every prefix length 1..n (or fromLength..n; shorter slots
 * are ''), for longest-prefix lookup.
 * Costs one small hash per token (each hashes at most 32 + 64 bytes).
 */
export async function prefixKeys(modelFp: string | Uint8Array, tokens: ArrayLike<number>, fromLength = 1): Promise<string[]> {
  const fp = fpBytes(modelFp);
  const keys: string[] = [];
  let prev: Uint8Array = concatBytes([utf8(KEY_DOMAIN), fp]);
  for (let start = 0; start < tokens.length; start += BLOCK_TOKENS) {
    const end = Math.min(start + BLOCK_TOKENS, tokens.length);
    const ids = Array.prototype.slice.call(tokens, start, end) as number[];
    for (let l = 1; l <= ids.length; l++) {
      // Lengths below `fromLength` are not wanted: only whole blocks are hashed
      // there (the chain needs them), and their slots are left empty.
      if (start + l < fromLength && l !== ids.length) {
        keys.push('');
        continue;
      }
      const h = await sha256(concatBytes([prev, tokensToBytes(ids.slice(0, l))]));
      keys.push(start + l < fromLength ? '' : keyOf(h));
      if (l === ids.length) prev = h;
    }
  }
  return keys;
}
