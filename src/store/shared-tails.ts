import { promisifyRequest } from 'idb-keyval';
import { BLOCK_TOKENS, prefixKeys } from '../core/state-key.ts';
import { CorruptBlob } from '../core/errors.ts';
import type { BlockRef, Manifest } from './manifest.ts';
import type { TensorSpec } from '../models/state-layout.ts';

/**
 * Shared partial tails (GPT-2).
 *
 * A full 16-token block is named by its chain hash and so is stored once for
 * every state that contains it. A state whose length is not a multiple of 16
 * also has a partial last block, named by its own state key. In a chain of
 * deltas (an agent loop: base → +delta → +delta …) every step leaves such a
 * tail, and the next step, which extends it, writes the same tokens again
 * in a longer block: without care a chain stores up to 15 tokens twice per step.
 *
 * So when a state is written, every stored prefix state whose tail ends
 * strictly inside one of the new state's blocks (same codec) is re-pointed at
 * the head of the new block (`blobTokens` says how many tokens that blob
 * holds; a reader keeps the first `end - start`), and the tails that no longer
 * have a reader are deleted, all in the write's own transaction. A KV prefix
 * of a block is exactly the KV of the shorter sequence (causal attention), so
 * the shorter state reads the same numbers as before.
 *
 * Only the tails a prefix state owns are replaced: a tail already re-pointed
 * to a branch that the new state does not extend keeps that branch's blob.
 */

export interface TailCandidate {
  /** State key of a prefix of the new state that ends inside a block. */
  key: string;
  /** Index of the new state's block that holds that prefix's tail. */
  block: number;
}

/** The prefix states (by key) whose tails a state of these tokens could hold. */
export async function tailCandidates(modelFp: string, tokens: number[]): Promise<TailCandidate[]> {
  if (tokens.length < 2) return [];
  const keys = await prefixKeys(modelFp, tokens);
  const out: TailCandidate[] = [];
  for (let L = 1; L < tokens.length; L++) if (L % BLOCK_TOKENS !== 0) out.push({ key: keys[L - 1]!, block: Math.floor(L / BLOCK_TOKENS) });
  return out;
}

/**
 * Runs inside the transaction that writes `manifest`, after its blob digests
 * are final. `s` is the store's one object store (keys `m:` and `b:`).
 */
export async function repointTails(s: IDBObjectStore, manifest: Manifest, candidates: TailCandidate[]): Promise<number> {
  if (manifest.arch !== 'gpt2' || candidates.length === 0) return 0;
  const found = (await Promise.all(candidates.map((c) => promisifyRequest(s.get('m:' + c.key) as IDBRequest<Manifest | undefined>)))) as (
    | Manifest
    | undefined
  )[];
  const owned = new Set<string>();
  const hits: { m: Manifest; target: BlockRef }[] = [];
  found.forEach((m, i) => {
    if (m?.arch !== 'gpt2' || m.modelFp !== manifest.modelFp || m.key === manifest.key) return;
    const ref = m.blocks[m.blocks.length - 1];
    const target = manifest.blocks[candidates[i]!.block];
    if (!ref || !target || ref.start !== target.start || ref.end >= target.end || ref.codec !== target.codec) return;
    // int8 and kivi4 take their scales over the whole block: the head of a
    // longer block would decode to slightly other numbers than the short one.
    if (ref.codec !== 'fp32' && ref.codec !== 'fp16') return;
    hits.push({ m, target });
    if (ref.key.startsWith(m.key + '/') && ref.blobTokens === undefined) owned.add(ref.key);
  });
  let moved = 0;
  for (const { m, target } of hits) {
    const i = m.blocks.length - 1;
    const ref = m.blocks[i]!;
    // A reader of a blob that is about to go is always one of these prefixes.
    if (!owned.has(ref.key)) continue;
    m.blocks[i] = { ...ref, key: target.key, digest: target.digest, bytes: target.bytes, blobTokens: target.end - target.start };
    s.put(m, 'm:' + m.key);
    moved++;
  }
  for (const k of owned) s.delete('b:' + k);
  return moved;
}

/** The first `n` tokens of a decoded GPT-2 block that holds `span` tokens. */
export function headOfBlock(data: Float32Array, specs: TensorSpec[], span: number, n: number): Float32Array {
  if (n === span) return data;
  let size = 0;
  for (const s of specs) size += s.dims[0]! * n * s.dims[2]!;
  const out = new Float32Array(size);
  let o = 0;
  let i = 0;
  for (const s of specs) {
    const h = s.dims[0]!;
    const d = s.dims[2]!;
    for (let k = 0; k < h; k++) {
      out.set(data.subarray(i, i + n * d), o);
      o += n * d;
      i += span * d;
    }
  }
  if (i !== data.length) throw new CorruptBlob(`a shared KV block should hold ${span} tokens, its size says otherwise`);
  return out;
}
