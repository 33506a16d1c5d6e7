import { createSHA256, type IHasher } from 'hash-wasm';
import { concatBytes, fromHex, toHex, tokensToBytes, utf8 } from './bytes.ts';
import { InvalidInput } from './errors.ts';

/** Tokens per chained block, as in vLLM's prefix cache. */
export const BLOCK_TOKENS = 16;
const KEY_DOMAIN = 'statecart/v1';

/**
 * What every chain hashed, for tests that count work per call: tokens fed to
 * SHA-256 (each once per chain) and digests taken (one per block, plus one per
 * prefix key asked for inside a block).
 */
export const hashStats = { tokens: 0, digests: 0 };

let hasher: IHasher | null = null;
let loading: Promise<IHasher> | null = null;

/**
 * The streaming SHA-256 the chains use (hash-wasm, in WebAssembly). WebCrypto
 * has no streaming form, and a chain needs one: a key inside a block is the
 * hash of the block's prefix, so the hasher's state is saved after each token
 * and a digest taken from a copy, instead of hashing the prefix again.
 */
async function chainHasherReady(): Promise<void> {
  if (hasher) return;
  loading ??= createSHA256();
  hasher = await loading;
}

function h(): IHasher {
  if (!hasher) throw new Error('internal: await chainHasherReady() (or KeyChain.create) before hashing');
  return hasher;
}

function fpBytes(modelFp: string | Uint8Array): Uint8Array {
  const b = typeof modelFp === 'string' ? fromHex(modelFp.replace(/^sha256:/, '')) : modelFp;
  if (b.length !== 32) throw new InvalidInput('a model fingerprint is 32 bytes of SHA-256');
  return b;
}

const keyOf = (hash: Uint8Array): string => 'sha256:' + toHex(hash);

/**
 * The state keys of one token sequence, as a value: made once per request,
 * grown as tokens are appended (the delta, then each generated token), and
 * carried down from the engine to the store, so each token is hashed once.
 *
 *   block_0 = sha256("statecart/v1" ‖ model_fp ‖ ids 0..15), block_i = sha256(block_{i-1} ‖ ids of block i)
 *   key(L)  = "sha256:" + hex of the chain hash after token L (a partial last block hashes the same way)
 *
 * Everything is computed on first use and kept: block hashes in order, and
 * within the block being extended a saved hasher state, so asking for the key
 * at every length costs one 4-byte update and one digest per length.
 */
export class KeyChain {
  private readonly root: Uint8Array;
  private readonly ids: number[];
  /** full[i]: the chain hash after block i (tokens 0..16(i+1)). */
  private readonly full: Uint8Array[] = [];
  /** Keys asked for, by length. */
  private readonly keys = new Map<number, string>();
  /** The hasher inside block `cursorBlock`, after `cursorAt` tokens of the sequence. */
  private cursor: Uint8Array | null = null;
  private cursorBlock = -1;
  private cursorAt = 0;

  private constructor(
    readonly modelFp: string,
    tokens: ArrayLike<number>,
  ) {
    this.root = concatBytes([utf8(KEY_DOMAIN), fpBytes(modelFp)]);
    this.ids = Array.from(tokens);
    for (const t of this.ids) if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new RangeError(`token id out of range: ${t}`);
  }

  /** A chain over `tokens` (nothing is hashed until a key is asked for). */
  static async create(modelFp: string, tokens: ArrayLike<number> = []): Promise<KeyChain> {
    await chainHasherReady();
    return new KeyChain(modelFp, tokens);
  }

  get length(): number {
    return this.ids.length;
  }

  get tokens(): readonly number[] {
    return this.ids;
  }

  /** Adds tokens at the end; keys already computed stay valid. */
  append(tokens: ArrayLike<number>): this {
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) throw new RangeError(`token id out of range: ${t}`);
      this.ids.push(t);
    }
    return this;
  }

  /** A chain over the first `n` tokens that shares what this one computed. */
  prefix(n: number): KeyChain {
    const c = new KeyChain(this.modelFp, this.ids.slice(0, n));
    const blocks = Math.floor(n / BLOCK_TOKENS);
    for (let i = 0; i < Math.min(blocks, this.full.length); i++) c.full.push(this.full[i]!);
    for (const [L, k] of this.keys) if (L <= n) c.keys.set(L, k);
    return c;
  }

  /** The chain hash after full block i (tokens 0..16(i+1)). */
  blockHash(i: number): Uint8Array {
    if ((i + 1) * BLOCK_TOKENS > this.ids.length) throw new RangeError(`block ${i} is not complete in ${this.ids.length} tokens`);
    return this.full[i] ?? this.hashAt((i + 1) * BLOCK_TOKENS);
  }

  /** The key of the whole block i ("sha256:…"), the name under which its KV block is stored. */
  blockKey(i: number): string {
    return this.keyAt((i + 1) * BLOCK_TOKENS);
  }

  /** The state key of the first `n` tokens (1 ≤ n ≤ length). */
  keyAt(n: number): string {
    if (n < 1) throw new InvalidInput('a state has at least one token; the key of an empty token list is not defined');
    if (n > this.ids.length) throw new RangeError(`no key at ${n}: the chain has ${this.ids.length} tokens`);
    let k = this.keys.get(n);
    if (!k) {
      const b = n / BLOCK_TOKENS - 1;
      k = keyOf(Number.isInteger(b) && this.full[b] ? this.full[b]! : this.hashAt(n));
      this.keys.set(n, k);
    }
    return k;
  }

  /**
   * The chain hash after token n: sha256(previous block's hash ‖ ids of this
   * block up to n). Goes on from the saved hasher when it stands inside the
   * same block, not past n, so tokens are fed once however many lengths are asked.
   */
  private hashAt(n: number): Uint8Array {
    const b = Math.floor((n - 1) / BLOCK_TOKENS);
    const start = b * BLOCK_TOKENS;
    const end = start + BLOCK_TOKENS;
    // (before taking the shared hasher: a block hash uses it too)
    const prev = b === 0 ? this.root : this.blockHash(b - 1);
    const x = h();
    const resumed = Boolean(this.cursor && this.cursorBlock === b && this.cursorAt <= n);
    if (resumed) x.load(this.cursor!);
    else {
      x.init();
      x.update(prev);
      this.cursorAt = start;
    }
    // Inside a block that is being extended (a partial key was asked for
    // here, now or before), the keys of the lengths passed on the way are kept
    // too: lookups and shared tails ask for them, and this way no token is
    // fed twice. A block hashed whole only to reach a later one keeps none.
    const keepAll = n !== end || resumed;
    for (let m = this.cursorAt + 1; m < n && keepAll; m++) {
      x.update(tokensToBytes([this.ids[m - 1]!]));
      hashStats.tokens++;
      if (!this.keys.has(m)) {
        const saved = x.save();
        this.keys.set(m, keyOf(x.digest('binary')));
        hashStats.digests++;
        x.load(saved);
      }
      this.cursorAt = m;
    }
    if (n > this.cursorAt) {
      x.update(tokensToBytes(this.ids.slice(this.cursorAt, n)));
      hashStats.tokens += n - this.cursorAt;
    }
    this.cursor = x.save();
    this.cursorBlock = b;
    this.cursorAt = n;
    const out = x.digest('binary');
    hashStats.digests++;
    if (n === end) this.full[b] = out;
    return out;
  }

  /** The key of all the tokens. */
  key(): string {
    return this.keyAt(this.ids.length);
  }

  /** Keys of lengths from..to (inclusive), shortest first. */
  keysFrom(from: number, to = this.ids.length): string[] {
    const out: string[] = [];
    for (let n = Math.max(1, from); n <= to; n++) out.push(this.keyAt(n));
    return out;
  }
}

/** The state key of a token sequence (a one-off chain). */
export async function stateKey(modelFp: string | Uint8Array, tokens: ArrayLike<number>): Promise<string> {
  if (tokens.length === 0) throw new InvalidInput('a state has at least one token; the key of an empty token list is not defined');
  const fp = typeof modelFp === 'string' ? modelFp : toHex(modelFp);
  return (await KeyChain.create(fp, tokens)).key();
}
