import { promisifyRequest } from 'idb-keyval';
import { CorruptBlob, StateNotFound, type CorruptBlockFacts } from '../core/errors.ts';
import type { KeyChain } from '../core/key-chain.ts';
import { digestOf } from '../core/sha256.ts';
import { stateBytes, type ModelState, type TensorSpec } from '../core/state.ts';
import { decodeBlock, headOfBlock, joinBlocks } from './blocks.ts';
import type { HotEntry, StoreCore } from './context.ts';
import {
  BLOBS_OF,
  blobId,
  blobKeyFor,
  blobKeyOf,
  getBlob,
  getManifest,
  putManifest,
  allManifests,
  type BlockRecord,
  type Damage,
  type Manifest,
} from './records.ts';

/**
 * Reading states: from the hot tier, or from IndexedDB with every blob's
 * digest checked as it arrives. A damaged blob is never served: the state is
 * marked damaged (so the engine recomputes it from its tokens) and the bad
 * bytes are deleted.
 */

export type Tier = 'hot' | 'stored';

/** Most precise first: when a block is stored under several codecs, the best one is read. */
export const CODEC_PREFERENCE: readonly string[] = ['fp32', 'fp16', 'int8', 'kivi4'];

/** A manifest from the hot tier (no read) or from IndexedDB (one read). */
export async function lookup(core: StoreCore, key: string): Promise<{ manifest: Manifest; hot: boolean } | undefined> {
  const h = core.hot.get(key);
  if (h) return { manifest: h.manifest, hot: true };
  const m = await core.kv('readonly', (s) => getManifest(s, key));
  return m ? { manifest: m, hot: false } : undefined;
}

/** Manifests for many keys in one transaction (prefix lookup asks for dozens). */
export function getManifests(core: StoreCore, keys: string[]): Promise<(Manifest | undefined)[]> {
  if (keys.length === 0) return Promise.resolve([]);
  return core.kv('readonly', (s) => Promise.all(keys.map((k) => getManifest(s, k))));
}

/**
 * A state whose manifest the caller holds: the hot copy, or its blobs read in
 * one transaction and checked. If a blob is missing, the manifest is read
 * again in that transaction, so a state deleted meanwhile by another page is
 * reported as not found rather than as damaged.
 */
export async function restore(core: StoreCore, manifest: Manifest): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
  const key = manifest.key;
  const h = core.hot.get(key);
  core.noteUse(key);
  if (h) return { state: h.state, tier: 'hot', manifest: h.manifest };
  const { recs, current } = await core.kv('readonly', async (s) => {
    const r = await Promise.all(manifest.blocks.map((b) => getBlob(s, b.key)));
    const cur = r.some((x) => !x) ? await getManifest(s, key) : manifest;
    return { recs: r, current: cur };
  });
  if (!current) {
    core.hot.delete(key);
    throw new StateNotFound(key);
  }
  if (current !== manifest && JSON.stringify(current.blocks) !== JSON.stringify(manifest.blocks)) return restore(core, current);
  core.counters.blobReads += recs.length;
  const blocks: { start: number; end: number; data: Float32Array }[] = [];
  for (let i = 0; i < recs.length; i++) {
    const ref = manifest.blocks[i]!;
    const rec = recs[i];
    const where = { key, block: ref.key, start: ref.start, end: ref.end };
    if (!rec) {
      await markDamaged(core, manifest, 'missing', [ref.key]);
      throw new CorruptBlob({ ...where, reason: 'missing' });
    }
    const bytes = new Uint8Array(rec.data);
    const digest = await digestOf(bytes);
    if (digest !== ref.digest) {
      if (digest === rec.digest) {
        // The blob is intact but is not the one this manifest was written
        // against (another device recomputed the block): not served as this
        // state, not deleted either, as it is good for whoever wrote it.
        await markDamaged(core, manifest, 'replaced', [ref.key]);
        throw new CorruptBlob({ ...where, reason: 'replaced', expected: ref.digest, actual: digest });
      }
      // The damaged blob is removed so that the next write of this block
      // (a recompute from the tokens) stores good bytes again.
      await markDamaged(core, manifest, 'digest mismatch', [ref.key], [{ key: ref.key, bytes }]);
      throw new CorruptBlob({ ...where, reason: 'digest mismatch', expected: ref.digest, actual: digest });
    }
    let data: Float32Array;
    try {
      const span = ref.blobTokens ?? ref.end - ref.start;
      data = headOfBlock(decodeBlock(manifest.tensors, ref.start, ref.start + span, ref.codec ?? 'fp32', bytes), manifest.tensors, span, ref.end - ref.start);
    } catch (e) {
      throw new CorruptBlob({ ...where, reason: 'undecodable', problem: e instanceof Error ? e.message : String(e) } satisfies CorruptBlockFacts);
    }
    blocks.push({ start: ref.start, end: ref.end, data });
  }
  const state = joinBlocks(manifest.tokens, manifest.tensors, blocks);
  // Every blob checked out (a missing one came back, written by a recompute): no longer damaged.
  let m = manifest;
  if (manifest.damaged) m = (await clearDamaged(core, key, manifest)) ?? manifest;
  core.hot.set(key, { state, manifest: m }, stateBytes(state));
  return { state, tier: 'stored', manifest: m };
}

/** lookup + restore: a stored state by key. */
export async function getState(core: StoreCore, key: string): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
  const found = await lookup(core, key);
  if (!found) throw new StateNotFound(key);
  return restore(core, found.manifest);
}

/**
 * For each full block of the chain in [from, to), the key of a stored blob
 * holding it, in any codec (the most precise one when there are several).
 */
export async function blockKeysFor(core: StoreCore, chain: KeyChain, from: number, to: number): Promise<(string | undefined)[]> {
  const names: string[] = [];
  for (let i = from; i < to; i++) names.push(chain.blockKey(i));
  if (names.length === 0) return [];
  const found = await core.kv('readonly', (s) => Promise.all(names.map((n) => promisifyRequest(s.getAllKeys(BLOBS_OF(n))) as Promise<IDBValidKey[]>)));
  return found.map((ks, i) => {
    const have = new Set(ks.map(blobKeyOf));
    for (const c of CODEC_PREFERENCE) {
      const k = blobKeyFor(names[i]!, c);
      if (have.has(k)) return k;
    }
    return undefined;
  });
}

/** How many full blocks from the start of the chain are stored (in any codec), counting from `from` (known present before it). */
export async function storedBlockRun(core: StoreCore, chain: KeyChain, from: number, to: number): Promise<number> {
  const keys = await blockKeysFor(core, chain, from, to);
  let k = 0;
  while (k < keys.length && keys[k]) k++;
  return from + k;
}

/**
 * A sliceable state rebuilt from stored blocks alone (the first `blocks` full
 * blocks of the chain): any state that starts with these tokens stored them,
 * whether or not a state of exactly this length exists.
 */
export async function restoreBlockPrefix(core: StoreCore, chain: KeyChain, blocks: number, specs: TensorSpec[]): Promise<ModelState | undefined> {
  const tokens = chain.tokens.slice(0, blocks * 16);
  const found = await blockKeysFor(core, chain, 0, blocks);
  if (found.some((k) => k === undefined)) return undefined;
  const keys = found as string[];
  const recs = await core.kv('readonly', (s) => Promise.all(keys.map((k) => getBlob(s, k))));
  core.counters.blobReads += recs.length;
  const out = [];
  for (let i = 0; i < recs.length; i++) {
    const rec = recs[i];
    if (!rec) return undefined;
    const bytes = new Uint8Array(rec.data);
    if ((await digestOf(bytes)) !== rec.digest) {
      // Damaged: removed (and its states marked), so that the recompute that follows stores good bytes.
      await markDamaged(core, null, 'digest mismatch', [keys[i]!], [{ key: keys[i]!, bytes }]);
      return undefined;
    }
    try {
      out.push({ start: i * 16, end: (i + 1) * 16, data: decodeBlock(specs, i * 16, (i + 1) * 16, rec.codec ?? 'fp32', bytes) });
    } catch {
      return undefined;
    }
  }
  try {
    return joinBlocks(tokens, specs, out);
  } catch {
    return undefined;
  }
}

/**
 * Checks every blob of a state against its digest without decoding it. What
 * it finds is handled as a read would: the state is marked damaged and a
 * corrupt blob is deleted; a state found whole loses its damaged mark.
 */
export async function verify(
  core: StoreCore,
  key: string,
): Promise<{ ok: boolean; blocks: number; damaged: { key: string; start: number; end: number; reason: string }[] }> {
  const { manifest, recs } = await core.kv('readonly', async (s) => {
    const m = await getManifest(s, key);
    if (!m) return { manifest: m, recs: [] };
    return { manifest: m, recs: await Promise.all(m.blocks.map((b) => getBlob(s, b.key))) };
  });
  if (!manifest) throw new StateNotFound(key);
  const damaged: { key: string; start: number; end: number; reason: Damage['reason'] }[] = [];
  const drop: { key: string; bytes: Uint8Array }[] = [];
  for (let i = 0; i < recs.length; i++) {
    const ref = manifest.blocks[i]!;
    const rec = recs[i];
    if (!rec) {
      damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason: 'missing' });
      continue;
    }
    const bytes = new Uint8Array(rec.data);
    const digest = await digestOf(bytes);
    if (digest === ref.digest) continue;
    const reason = digest === rec.digest ? 'replaced' : 'digest mismatch';
    damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason });
    if (reason === 'digest mismatch') drop.push({ key: ref.key, bytes });
  }
  for (const r of ['missing', 'digest mismatch', 'replaced'] as const) {
    const ks = damaged.filter((d) => d.reason === r).map((d) => d.key);
    if (ks.length)
      await markDamaged(
        core,
        manifest,
        r,
        ks,
        drop.filter((d) => ks.includes(d.key)),
      );
  }
  if (!damaged.length && manifest.damaged) await clearDamaged(core, key, manifest);
  return { ok: damaged.length === 0, blocks: recs.length, damaged };
}

/**
 * Marks damaged every state that names one of `blobKeys` and deletes the
 * corrupt blobs in `drop` (only if they still hold the bytes that were read:
 * another page may have rewritten them meanwhile). One transaction.
 */
export async function markDamaged(
  core: StoreCore,
  m: Manifest | null,
  reason: Damage['reason'],
  blobKeys: string[],
  drop: { key: string; bytes: Uint8Array }[] = [],
): Promise<string[]> {
  core.counters.damageDetected++;
  const bad = new Set(blobKeys);
  const at = Date.now();
  const keys = await core.kv('readwrite', async (s) => {
    const marked: string[] = [];
    for (const d of drop) {
      const cur = (await promisifyRequest(s.get(blobId(d.key)))) as BlockRecord | undefined;
      if (cur && sameBytes(new Uint8Array(cur.data), d.bytes)) s.delete(blobId(d.key));
    }
    // 'replaced' concerns this state only; a missing or corrupt blob, every state naming it.
    const ms = reason === 'replaced' && m ? [await getManifest(s, m.key)] : await allManifests(s);
    for (const x of ms) {
      if (!x) continue;
      const hit = [...new Set(x.blocks.filter((b) => bad.has(b.key)).map((b) => b.key))];
      if (!hit.length) continue;
      x.damaged = { reason, blocks: hit, at };
      putManifest(s, x);
      marked.push(x.key);
    }
    await promisifyRequest(s.transaction);
    return marked;
  });
  for (const k of keys) core.hot.delete(k);
  core.channel.post({ type: 'damaged', keys });
  return keys;
}

/** Clears a damaged mark, only if nobody rewrote the manifest since it was read; the manifest as now stored. */
async function clearDamaged(core: StoreCore, key: string, seen: Manifest): Promise<Manifest | undefined> {
  return core.kv('readwrite', async (s) => {
    const m = await getManifest(s, key);
    if (m?.damaged && JSON.stringify(m.blocks) === JSON.stringify(seen.blocks)) {
      delete m.damaged;
      putManifest(s, m);
    }
    await promisifyRequest(s.transaction);
    return m;
  });
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The hot copy of a state, if any (tests, the codec optimizer). */
export function hotEntry(core: StoreCore, key: string): HotEntry | undefined {
  return core.hot.get(key);
}
