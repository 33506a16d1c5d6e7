// Store tests that need no model: GPT-2-shaped states whose numbers depend only
// on (position, token), so that a prefix's blocks equal the longer state's
// (what the store's block sharing and shared tails rely on), as for real KV.
import { promisifyRequest } from 'idb-keyval';
import type { ModelState } from '../../../src/models/types.ts';
import type { StateStore } from '../../../src/store/store.ts';
import type { BlockRecord, Manifest } from '../../../src/store/records.ts';
import { storeState } from './put.ts';
import { digestOf } from '../../../src/core/sha256.ts';

export const FP = 'c0ffee'.padEnd(64, '0');

export function syntheticState(tokens: number[], layers = 2, heads = 2, headDim = 8): ModelState {
  const tensors = [];
  const T = tokens.length;
  for (let l = 0; l < layers; l++) {
    for (const kind of ['key', 'value']) {
      const data = new Float32Array(heads * T * headDim);
      for (let h = 0; h < heads; h++)
        for (let t = 0; t < T; t++)
          for (let d = 0; d < headDim; d++) {
            data[(h * T + t) * headDim + d] = Math.sin(tokens[t]! * 0.37 + t * 1.3 + l * 7 + h * 3 + d * 0.11 + (kind === 'key' ? 0 : 0.5));
          }
      tensors.push({ name: `layers.${l}.${kind}`, dims: [heads, T, headDim], tokenAxis: 1, data });
    }
  }
  return { tokens: [...tokens], tensors };
}

export function tokensFor(seed: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 7919 + i * 31) % 50000);
}

export async function putSynthetic(store: StateStore, tokens: number[], parent: string | null = null): Promise<Manifest> {
  return storeState(store, { state: syntheticState(tokens), modelId: 'synthetic', modelFp: FP, parent });
}

export interface Audit {
  manifests: Manifest[];
  blobs: Map<string, BlockRecord>;
  /** Blob keys no manifest names. */
  orphans: string[];
  /** "state → blob" for each blob a manifest names that is not stored. */
  missing: string[];
  /** Blobs whose bytes do not match the digest stored with them. */
  badDigest: string[];
}

/** Everything in a store's `kv`, checked: orphans, dangling references, bad bytes. */
export async function audit(store: StateStore): Promise<Audit> {
  const [keys, values] = await store.idb('readonly', (s) => Promise.all([promisifyRequest(s.getAllKeys()), promisifyRequest(s.getAll())]));
  const manifests: Manifest[] = [];
  const blobs = new Map<string, BlockRecord>();
  keys.forEach((k, i) => {
    const key = String(k);
    if (key.startsWith('m:')) manifests.push(values[i] as Manifest);
    else if (key.startsWith('b:')) blobs.set(key.slice(2), values[i] as BlockRecord);
    else throw new Error(`unexpected key ${key}`);
  });
  const named = new Set(manifests.flatMap((m) => m.blocks.map((b) => b.key)));
  const orphans = [...blobs.keys()].filter((k) => !named.has(k));
  const missing = manifests.flatMap((m) => m.blocks.filter((b) => !blobs.has(b.key)).map((b) => `${m.key} → ${b.key}`));
  const badDigest: string[] = [];
  for (const [k, rec] of blobs) if ((await digestOf(new Uint8Array(rec.data))) !== rec.digest) badDigest.push(k);
  return { manifests, blobs, orphans, missing, badDigest };
}

export function maxDiff(a: ModelState, b: ModelState): number {
  let m = 0;
  if (a.tensors.length !== b.tensors.length) return Infinity;
  a.tensors.forEach((t, i) => {
    const u = b.tensors[i]!;
    if (t.data.length !== u.data.length) m = Infinity;
    else for (let j = 0; j < t.data.length; j++) m = Math.max(m, Math.abs(t.data[j]! - u.data[j]!));
  });
  return m;
}
