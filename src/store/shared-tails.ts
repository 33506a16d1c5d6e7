import { putManifest, blobId, type Manifest } from './records.ts';

/**
 * Shared partial tails (sliceable states).
 *
 * A full 16-token block is named by its chain hash and so is stored once for
 * every state that contains it. A state whose length is not a multiple of 16
 * also has a partial last block, named by its own state key. In a chain of
 * deltas (an agent loop: base → +delta → +delta …) every step leaves such a
 * tail, and the next step, which extends it, writes the same tokens again
 * in a longer block: without care a chain stores up to 15 tokens twice per step.
 *
 * So when a state is written, every stored prefix state whose tail ends
 * strictly inside one of the blocks it writes (same codec) is re-pointed at
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

/**
 * Runs inside the transaction that writes `manifest`, after its blob digests
 * are final; `stored` holds the candidates' manifests as read in that
 * transaction (it rewrites them).
 */
export function repointTails(s: IDBObjectStore, manifest: Manifest, candidates: TailCandidate[], stored: Map<string, Manifest | undefined>): Manifest[] {
  if (candidates.length === 0) return [];
  const found = candidates.map((c) => stored.get(c.key));
  const byBlock = new Map(manifest.blocks.map((b) => [Math.floor(b.start / 16), b]));
  const owned = new Set<string>();
  const hits: { m: Manifest; target: (typeof manifest.blocks)[number] }[] = [];
  found.forEach((m, i) => {
    if (!m || m.modelFp !== manifest.modelFp || m.key === manifest.key) return;
    const ref = m.blocks[m.blocks.length - 1];
    const target = byBlock.get(candidates[i]!.block);
    if (!ref || !target || ref.start !== target.start || ref.end >= target.end || ref.codec !== target.codec) return;
    // int8 and kivi4 take their scales over the whole block: the head of a
    // longer block would decode to slightly other numbers than the short one.
    if (ref.codec !== 'fp32' && ref.codec !== 'fp16') return;
    hits.push({ m, target });
    if (ref.key.startsWith(m.key + '/') && ref.blobTokens === undefined) owned.add(ref.key);
  });
  const moved: Manifest[] = [];
  for (const { m, target } of hits) {
    const i = m.blocks.length - 1;
    const ref = m.blocks[i]!;
    // A reader of a blob that is about to go is always one of these prefixes.
    if (!owned.has(ref.key)) continue;
    m.blocks[i] = { ...ref, key: target.key, digest: target.digest, bytes: target.bytes, blobTokens: target.end - target.start };
    putManifest(s, m);
    moved.push(m);
  }
  for (const k of owned) s.delete(blobId(k));
  return moved;
}
