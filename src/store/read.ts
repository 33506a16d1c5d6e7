import { promisifyRequest } from 'idb-keyval';
import { CorruptBlob, StateNotFound, type CorruptBlockFacts } from '../core/errors.ts';
import { BLOCK_TOKENS, type KeyChain } from '../core/key-chain.ts';
import { digestOf } from '../core/sha256.ts';
import { isSliceable, stateBytes, type ModelState, type StateTensor, type TensorSpec } from '../core/state.ts';
import { allocTensors, decodeBlock, joinBlocks, placeBlock } from './blocks.ts';
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
const CODEC_PREFERENCE: readonly string[] = ['fp32', 'fp16', 'int8', 'kivi4'];

/** A state held in memory: queued for writing (not landed yet), or in the hot tier. */
function inMemory(core: StoreCore, key: string): HotEntry | undefined {
  return core.queue.entry(key) ?? core.hot.get(key);
}

/** A manifest from memory (a queued or hot state: no read) or from IndexedDB (one read). */
export async function lookup(core: StoreCore, key: string): Promise<{ manifest: Manifest; hot: boolean } | undefined> {
  const h = inMemory(core, key);
  if (h) return { manifest: h.manifest, hot: true };
  const m = await core.kv('readonly', (s) => getManifest(s, key));
  return m ? { manifest: m, hot: false } : undefined;
}

/** Manifests for many keys in one transaction (prefix lookup asks for dozens); queued states' from memory. */
export async function getManifests(core: StoreCore, keys: string[]): Promise<(Manifest | undefined)[]> {
  if (keys.length === 0) return [];
  const queued = keys.map((k) => core.queue.entry(k)?.manifest);
  const ask = keys.filter((_, i) => !queued[i]);
  const got = ask.length ? await core.kv('readonly', (s) => Promise.all(ask.map((k) => getManifest(s, k)))) : [];
  let j = 0;
  return queued.map((q) => q ?? got[j++]);
}

/**
 * A state whose manifest the caller holds: the copy in memory, or read from
 * IndexedDB in one pass (readChecked). If a blob is missing, the manifest is
 * read again in that transaction, so a state deleted meanwhile by another
 * page is reported as not found rather than as damaged.
 */
export async function restore(core: StoreCore, manifest: Manifest): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
  const key = manifest.key;
  const h = inMemory(core, key);
  core.noteUse(key);
  if (h) return { state: h.state, tier: 'hot', manifest: h.manifest };
  return readChecked(core, key, manifest);
}

/** A stored state by key: from memory, or its manifest and blobs read in one transaction. */
export async function getState(core: StoreCore, key: string): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
  const h = inMemory(core, key);
  if (h) {
    core.noteUse(key);
    return { state: h.state, tier: 'hot', manifest: h.manifest };
  }
  return readChecked(core, key);
}

/** What one read pass found: the records, their digests (computed as they arrived) and the state assembled from them. */
interface Pass {
  manifest: Manifest | undefined;
  recs: (BlockRecord | undefined)[];
  digests: Promise<string>[];
  /** Tensors filled block by block (a sliceable state), or the decoded block (a fixed-size one). */
  tensors: StateTensor[] | null;
  decoded: (Float32Array | undefined)[];
  /** Blocks whose bytes could not be decoded or placed (reported only if their digest is right). */
  undecodable: Map<number, string>;
  /** The manifest as stored now, read again in the same transaction because a blob was missing. */
  current: Manifest | undefined;
}

/**
 * One read-only transaction: the manifest (unless the caller holds it), then
 * every blob it names, requested at once. As each blob arrives its SHA-256 is
 * started and its values are copied (decoded) into the state's tensors, so
 * hashing overlaps the reads and the bytes are copied once, into the buffers
 * the runtime is handed. Nothing is served before every digest has matched.
 */
function readPass(core: StoreCore, key: string, known?: Manifest): Promise<Pass> {
  return core.kv(
    'readonly',
    (s) =>
      new Promise<Pass>((resolve, reject) => {
        const pass: Pass = { manifest: known, recs: [], digests: [], tensors: null, decoded: [], undecodable: new Map(), current: known };
        const blobs = (m: Manifest) => {
          pass.manifest = m;
          pass.current = m;
          const T = m.tokens.length;
          const sliceable = isSliceable(m.tensors);
          if (sliceable) {
            // The blocks must tile [0, T) before anything is placed.
            let covered = 0;
            for (const b of m.blocks) {
              if (b.start !== covered || b.end <= b.start)
                return reject(new CorruptBlob({ problem: `the blocks of state ${key} are not contiguous at token ${covered}` }));
              covered = b.end;
            }
            if (covered !== T) return reject(new CorruptBlob({ problem: `the blocks of state ${key} cover ${covered} of ${T} tokens` }));
            pass.tensors = allocTensors(m.tensors, T);
          }
          let left = m.blocks.length;
          let missing = false;
          const finish = () => {
            if (!missing) return resolve(pass);
            getManifest(s, key).then((cur) => {
              pass.current = cur;
              resolve(pass);
            }, reject);
          };
          if (left === 0) return finish();
          m.blocks.forEach((ref, i) => {
            const req = s.get(blobId(ref.key)) as IDBRequest<BlockRecord | undefined>;
            req.onerror = () => reject(req.error);
            req.onsuccess = () => {
              const rec = req.result;
              pass.recs[i] = rec;
              if (!rec) missing = true;
              else {
                const bytes = new Uint8Array(rec.data);
                pass.digests[i] = digestOf(bytes);
                try {
                  const span = ref.blobTokens ?? ref.end - ref.start;
                  const data = decodeBlock(m.tensors, ref.start, ref.start + span, ref.codec ?? 'fp32', bytes);
                  if (pass.tensors) placeBlock(pass.tensors, T, ref.start, ref.end, data, span);
                  else pass.decoded[i] = data;
                } catch (e) {
                  pass.undecodable.set(i, e instanceof Error ? e.message : String(e));
                }
              }
              if (--left === 0) finish();
            };
          });
        };
        if (known) blobs(known);
        else
          getManifest(s, key).then((m) => {
            if (!m) resolve(pass);
            else blobs(m);
          }, reject);
      }),
  );
}

async function readChecked(core: StoreCore, key: string, known?: Manifest): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
  const pass = await readPass(core, key, known);
  const manifest = pass.manifest;
  if (!manifest || !pass.current) {
    core.hot.delete(key);
    throw new StateNotFound(key);
  }
  if (!known) core.noteUse(key);
  const current = pass.current;
  if (current !== manifest && JSON.stringify(current.blocks) !== JSON.stringify(manifest.blocks)) return readChecked(core, key, current);
  core.counters.blobReads += pass.recs.filter(Boolean).length;
  const digests = await Promise.all(pass.digests);
  for (let i = 0; i < manifest.blocks.length; i++) {
    const ref = manifest.blocks[i]!;
    const rec = pass.recs[i];
    const where = { key, block: ref.key, start: ref.start, end: ref.end };
    if (!rec) {
      await markDamaged(core, manifest, 'missing', [ref.key]);
      throw new CorruptBlob({ ...where, reason: 'missing' });
    }
    const digest = digests[i]!;
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
      await markDamaged(core, manifest, 'digest mismatch', [ref.key], [{ key: ref.key, bytes: new Uint8Array(rec.data) }]);
      throw new CorruptBlob({ ...where, reason: 'digest mismatch', expected: ref.digest, actual: digest });
    }
    const problem = pass.undecodable.get(i);
    if (problem !== undefined) throw new CorruptBlob({ ...where, reason: 'undecodable', problem } satisfies CorruptBlockFacts);
  }
  let state: ModelState;
  if (pass.tensors) state = { tokens: [...manifest.tokens], tensors: pass.tensors };
  else
    state = joinBlocks(
      manifest.tokens,
      manifest.tensors,
      manifest.blocks.map((b, i) => ({ start: b.start, end: b.end, data: pass.decoded[i]! })),
    );
  // Every blob checked out (a missing one came back, written by a recompute): no longer damaged.
  let m = manifest;
  if (manifest.damaged) m = (await clearDamaged(core, key, manifest)) ?? manifest;
  core.hot.set(key, { state, manifest: m }, stateBytes(state));
  return { state, tier: 'stored', manifest: m };
}

/**
 * For each full block of the chain in [from, to), the key of a stored blob
 * holding it, in any codec (the most precise one when there are several).
 */
async function blockKeysFor(core: StoreCore, chain: KeyChain, from: number, to: number): Promise<(string | undefined)[]> {
  const names: string[] = [];
  for (let i = from; i < to; i++) names.push(chain.blockKey(i));
  if (names.length === 0) return [];
  const found = await core.kv('readonly', (s) => Promise.all(names.map((n) => promisifyRequest(s.getAllKeys(BLOBS_OF(n))) as Promise<IDBValidKey[]>)));
  return found.map((ks, i) => preferred(names[i]!, ks));
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
  const T = blocks * BLOCK_TOKENS;
  const tokens = chain.tokens.slice(0, T);
  const names: string[] = [];
  for (let i = 0; i < blocks; i++) names.push(chain.blockKey(i));
  if (names.length === 0 || !isSliceable(specs)) return undefined;
  const tensors = allocTensors(specs, T);
  // One transaction: which blobs hold the blocks, then (if every block has
  // one) those blobs, each hashed and placed as it arrives.
  const pass = await core.kv(
    'readonly',
    (s) =>
      new Promise<{ keys: string[]; recs: (BlockRecord | undefined)[]; digests: Promise<string>[]; bad: boolean } | undefined>((resolve, reject) => {
        let left = names.length;
        const found: IDBValidKey[][] = [];
        names.forEach((n, i) => {
          const q = s.getAllKeys(BLOBS_OF(n));
          q.onerror = () => reject(q.error);
          q.onsuccess = () => {
            found[i] = q.result;
            if (--left > 0) return;
            const keys = found.map((ks, j) => preferred(names[j]!, ks));
            if (keys.some((k) => k === undefined)) return resolve(undefined);
            const out = { keys: keys as string[], recs: [] as (BlockRecord | undefined)[], digests: [] as Promise<string>[], bad: false };
            let pending = keys.length;
            (keys as string[]).forEach((k, b) => {
              const r = s.get(blobId(k)) as IDBRequest<BlockRecord | undefined>;
              r.onerror = () => reject(r.error);
              r.onsuccess = () => {
                const rec = r.result;
                out.recs[b] = rec;
                if (rec) {
                  const bytes = new Uint8Array(rec.data);
                  out.digests[b] = digestOf(bytes);
                  try {
                    const start = b * BLOCK_TOKENS;
                    placeBlock(tensors, T, start, start + BLOCK_TOKENS, decodeBlock(specs, start, start + BLOCK_TOKENS, rec.codec ?? 'fp32', bytes));
                  } catch {
                    out.bad = true;
                  }
                } else out.bad = true;
                if (--pending === 0) resolve(out);
              };
            });
          };
        });
      }),
  );
  if (!pass) return undefined;
  core.counters.blobReads += pass.recs.filter(Boolean).length;
  const digests = await Promise.all(pass.digests);
  for (let i = 0; i < pass.recs.length; i++) {
    const rec = pass.recs[i];
    if (rec && digests[i] !== rec.digest) {
      // Damaged: removed (and its states marked), so that the recompute that follows stores good bytes.
      await markDamaged(core, null, 'digest mismatch', [pass.keys[i]!], [{ key: pass.keys[i]!, bytes: new Uint8Array(rec.data) }]);
      return undefined;
    }
  }
  if (pass.bad) return undefined;
  return { tokens, tensors };
}

/** The stored blob of a block name in the most precise codec there is. */
function preferred(name: string, ids: IDBValidKey[]): string | undefined {
  const have = new Set(ids.map(blobKeyOf));
  for (const c of CODEC_PREFERENCE) {
    const k = blobKeyFor(name, c);
    if (have.has(k)) return k;
  }
  return undefined;
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
async function markDamaged(
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
