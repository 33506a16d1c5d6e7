import { promisifyRequest } from 'idb-keyval';
import { InvalidInput, StateNotFound } from '../core/errors.ts';
import type { StoreCore } from './context.ts';
import { hitsOf, lastUseOf, planEviction, recordEviction } from './quota.ts';
import {
  allBlobKeys,
  allManifests,
  blobId,
  getManifest,
  manifestId,
  MANIFESTS,
  putManifest,
  stateKeyOf,
  useGoneKey,
  useHitKey,
  useKeyKind,
  type Manifest,
} from './records.ts';
import { KV, USE, readUse, type Database } from './schema.ts';

/**
 * Keeping the store in order: listing, usage, pins, deletes (mark and sweep),
 * least-recently-used eviction, and the check run when the store opens.
 */

/** What the check run on open found and did. */
export interface RepairReport {
  states: number;
  blobs: number;
  /** Blobs no manifest named: deleted. */
  orphanBlobs: number;
  /** Manifests naming a missing blob: marked damaged (kept, so that they can be recomputed from their tokens). */
  damaged: number;
  /** Last-use records of states that no longer exist: deleted. */
  staleUse: number;
}

export interface EvictResult {
  evicted: string[];
  blobsFreed: number;
  bytesFreed: number;
  bytesBefore: number;
  bytesAfter: number;
  /** The store is now at or under the target (false when pinned states alone exceed it). */
  reached: boolean;
}

export interface Usage {
  states: number;
  blobs: number;
  /** Unique blob bytes (a shared block counts once). */
  bytes: number;
  /** Sum of every state's own bytes (shared blocks counted per state). */
  logicalBytes: number;
  damaged: number;
  pinned: number;
}

/** Every manifest, with lastUsed and hits as last recorded by any page (and by this one's unflushed reads). */
export async function list(core: StoreCore): Promise<Manifest[]> {
  const [ms, use] = await core.tx([KV, USE], 'readonly', (tx) => Promise.all([allManifests(tx.objectStore(KV)), readUse(tx)]));
  for (const [k, t] of core.usePending) use.set(k, Math.max(use.get(k) ?? 0, t));
  for (const m of ms) {
    m.lastUsed = lastUseOf(m, use);
    m.hits = hitsOf(m, use) + (core.hitsPending.get(m.key) ?? 0);
  }
  return ms;
}

/** Hit counts of these states (stored and not yet flushed). */
export async function hits(core: StoreCore, keys: string[]): Promise<number[]> {
  const stored = await core.tx([USE], 'readonly', (tx) => {
    const u = tx.objectStore(USE);
    return Promise.all(keys.map((k) => promisifyRequest(u.get(useHitKey(k))) as Promise<number | undefined>));
  });
  return keys.map((k, i) => (stored[i] ?? 0) + (core.hitsPending.get(k) ?? 0));
}

/** For each name (a state key or a block's chain name), when eviction removed it, or undefined. */
export async function evictedAt(core: StoreCore, names: string[]): Promise<(number | undefined)[]> {
  if (!names.length) return [];
  return core.tx([USE], 'readonly', async (tx) => {
    const u = tx.objectStore(USE);
    // Most stores have never evicted anything: one count answers for every name.
    if ((await promisifyRequest(u.count(IDBKeyRange.bound(useGoneKey(''), useGoneKey('\uffff'))))) === 0) return names.map(() => undefined);
    return Promise.all(names.map((k) => promisifyRequest(u.get(useGoneKey(k))) as Promise<number | undefined>));
  });
}

export async function usage(core: StoreCore): Promise<Usage> {
  const ms = await list(core);
  const seen = new Map<string, number>();
  let logical = 0;
  for (const m of ms) {
    logical += m.bytes;
    for (const b of m.blocks) seen.set(b.key, b.bytes);
  }
  let bytes = 0;
  for (const v of seen.values()) bytes += v;
  return {
    states: ms.length,
    blobs: seen.size,
    bytes,
    logicalBytes: logical,
    damaged: ms.filter((m) => m.damaged).length,
    pinned: ms.filter((m) => m.pinned).length,
  };
}

export async function setPinned(core: StoreCore, key: string, pinned: boolean): Promise<void> {
  const m = await core.kv('readwrite', async (s) => {
    const x = await getManifest(s, key);
    if (!x) throw new StateNotFound(key);
    x.pinned = pinned;
    putManifest(s, x);
    await promisifyRequest(s.transaction);
    return x;
  });
  const h = core.hot.get(key);
  if (h) h.manifest = m;
}

/** Writes the last-use times and hit counts of reads since the last flush, in one small transaction. */
export async function flushUse(core: StoreCore): Promise<void> {
  if (core.usePending.size === 0 && core.hitsPending.size === 0) return;
  const batch = [...core.usePending];
  const hitBatch = [...core.hitsPending];
  core.usePending.clear();
  core.hitsPending.clear();
  await core.tx([USE], 'readwrite', async (tx) => {
    const u = tx.objectStore(USE);
    for (const [k, t] of batch) u.put(t, k);
    // Counts add up: another page may have counted hits of the same state meanwhile.
    const had = await Promise.all(hitBatch.map(([k]) => promisifyRequest(u.get(useHitKey(k))) as Promise<number | undefined>));
    hitBatch.forEach(([k, n], i) => u.put((had[i] ?? 0) + n, useHitKey(k)));
    return promisifyRequest(tx);
  });
}

/**
 * Deletes a state's manifest, then sweeps every blob no remaining manifest
 * names. Mark-and-sweep rather than reference counts: a count can drift if a
 * tab dies between two writes; a sweep recomputes the truth from manifests.
 */
export async function remove(core: StoreCore, key: string): Promise<{ blobsFreed: number; bytesFreed: number }> {
  core.hot.delete(key);
  core.usePending.delete(key);
  core.hitsPending.delete(key);
  const r = await core.tx([KV, USE], 'readwrite', async (tx) => {
    const s = tx.objectStore(KV);
    tx.objectStore(USE).delete(key);
    tx.objectStore(USE).delete(useHitKey(key));
    s.delete(manifestId(key));
    const manifests = await allManifests(s);
    const live = new Set<string>();
    for (const m of manifests) if (m.key !== key) for (const b of m.blocks) live.add(b.key);
    const blobKeys = await allBlobKeys(s);
    const sizes = new Map<string, number>();
    for (const m of manifests) for (const b of m.blocks) sizes.set(b.key, b.bytes);
    let blobsFreed = 0;
    let bytesFreed = 0;
    for (const k of blobKeys) {
      if (live.has(k)) continue;
      s.delete(blobId(k));
      blobsFreed++;
      bytesFreed += sizes.get(k) ?? 0;
    }
    await promisifyRequest(tx);
    return { blobsFreed, bytesFreed };
  });
  core.channel.post({ type: 'deleted', keys: [key], reason: 'delete' });
  return r;
}

/**
 * Deletes least-recently-used unpinned states until the store holds at most
 * `targetBytes` (0: every unpinned state). Blocks that remaining states use
 * stay. One transaction: a reader in another page sees a state whole or not at all.
 */
export async function evict(core: StoreCore, opts: { targetBytes: number }): Promise<EvictResult> {
  const target = opts?.targetBytes;
  if (typeof target !== 'number' || !(target >= 0)) throw new InvalidInput('evict: targetBytes is a number of bytes ≥ 0');
  const pendingUse = new Map(core.usePending);
  const r = await core.tx([KV, USE], 'readwrite', async (tx) => {
    const s = tx.objectStore(KV);
    const use = tx.objectStore(USE);
    const [ms, used] = await Promise.all([allManifests(s), readUse(tx)]);
    for (const [k, t] of pendingUse) used.set(k, Math.max(used.get(k) ?? 0, t));
    const plan = planEviction({ manifests: ms, lastUsed: used, limitBytes: target });
    for (const v of plan.victims) s.delete(manifestId(v));
    recordEviction(use, plan);
    let bytesFreed = 0;
    for (const [k, n] of plan.freed) {
      s.delete(blobId(k));
      bytesFreed += n;
    }
    await promisifyRequest(tx);
    return { evicted: plan.victims, blobsFreed: plan.freed.size, bytesFreed, bytesBefore: plan.bytesBefore, bytesAfter: plan.bytesAfter, reached: plan.fits };
  });
  for (const k of r.evicted) {
    core.hot.delete(k);
    core.usePending.delete(k);
    core.hitsPending.delete(k);
  }
  core.channel.post({ type: 'deleted', keys: r.evicted, reason: 'evict' });
  return r;
}

/**
 * The check run when the store opens: blobs that no manifest names are
 * deleted, and manifests that name a missing blob are marked damaged. Kept
 * rather than deleted: their tokens are intact, so the engine recomputes
 * them (and clears the mark) when their model is loaded; until then they
 * are listed as damaged and never served. One transaction, so it sees no
 * other tab's write half-done.
 */
export async function repair(db: Database): Promise<RepairReport> {
  return db.tx([KV, USE], 'readwrite', async (tx) => {
    const s = tx.objectStore(KV);
    const use = tx.objectStore(USE);
    const [ms, blobKeys, useAll] = await Promise.all([allManifests(s), allBlobKeys(s), readUse(tx)]);
    const have = new Set(blobKeys);
    const named = new Set<string>();
    const stateKeys = new Set<string>();
    let damaged = 0;
    const now = Date.now();
    for (const m of ms) {
      stateKeys.add(m.key);
      for (const b of m.blocks) named.add(b.key);
      const missing = [...new Set(m.blocks.filter((b) => !have.has(b.key)).map((b) => b.key))];
      if (missing.length) {
        damaged++;
        if (m.damaged?.reason !== 'missing' || m.damaged.blocks.join() !== missing.join()) {
          m.damaged = { reason: 'missing', blocks: missing, at: now };
          putManifest(s, m);
        }
      }
    }
    let orphanBlobs = 0;
    for (const k of have) {
      if (!named.has(k)) {
        s.delete(blobId(k));
        orphanBlobs++;
      }
    }
    let staleUse = 0;
    for (const [k, v] of useAll) {
      const u = useKeyKind(k);
      // An eviction record is about something that is gone: it stays (for a month).
      const stale = u.kind === 'gone' ? now - v > GONE_KEPT_MS : !stateKeys.has(u.key);
      if (stale) {
        use.delete(k);
        staleUse++;
      }
    }
    await promisifyRequest(tx);
    return { states: ms.length, blobs: have.size, orphanBlobs, damaged, staleUse };
  });
}

/** How long an eviction record is kept to explain a miss (ms). */
const GONE_KEPT_MS = 30 * 24 * 3600 * 1000;

/** Deletes every state and blob of this store. */
export async function clear(core: StoreCore): Promise<void> {
  core.hot.clear();
  core.usePending.clear();
  core.hitsPending.clear();
  const keys = await core.tx([KV, USE], 'readwrite', async (tx) => {
    const ks = (await promisifyRequest(tx.objectStore(KV).getAllKeys(MANIFESTS()))) as IDBValidKey[];
    tx.objectStore(KV).clear();
    tx.objectStore(USE).clear();
    await promisifyRequest(tx);
    return ks.map(stateKeyOf);
  });
  core.channel.post({ type: 'deleted', keys, reason: 'clear' });
}
