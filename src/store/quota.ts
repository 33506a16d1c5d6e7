import { blobNameOf, useGoneKey, useHitKey, type Manifest } from './records.ts';

/**
 * Eviction: which states to drop so that the store fits a byte limit.
 *
 * The store's size is the sum of its unique blobs (a block shared by many
 * states counts once), so dropping a state frees only the blobs no other
 * remaining state names. Pinned states are never chosen. Checkpoints (states
 * kept at K-token boundaries inside a Mamba prefill) that no request ever
 * reused go first, least recently used first among them: most never will be
 * (Marconi, MLSys 2025, evicts such speculative SSM states first). Then every
 * other state, least recently used first; a checkpoint that was reused counts
 * as a state like any other.
 */
export interface EvictionPlan {
  /** State keys to delete, in the order chosen. */
  victims: string[];
  /** Blob keys (without "b:") that no remaining state names, with their sizes. */
  freed: Map<string, number>;
  bytesBefore: number;
  bytesAfter: number;
  /** bytesAfter + extraBytes fits the limit. */
  fits: boolean;
}

export interface PlanInput {
  manifests: Manifest[];
  /**
   * The store's `use` records and its unflushed reads: last use per state key,
   * and hit counts under useHitKey(key) (a manifest's own `hits`, when list()
   * filled it in, counts too).
   */
  lastUsed: Map<string, number>;
  limitBytes: number;
  /** Bytes about to be added (the new blobs of a write). */
  extraBytes?: number;
  /** Blobs that must stay whoever else names them (the blocks a write is about to reuse). */
  keepBlobs?: Set<string>;
  /** States that must not be chosen (the one being written). */
  protect?: Set<string>;
}

export function uniqueBytes(manifests: Manifest[]): number {
  const seen = new Map<string, number>();
  for (const m of manifests) for (const b of m.blocks) seen.set(b.key, b.bytes);
  let n = 0;
  for (const v of seen.values()) n += v;
  return n;
}

export function lastUseOf(m: Manifest, lastUsed: Map<string, number>): number {
  return Math.max(m.lastUsed ?? 0, lastUsed.get(m.key) ?? 0);
}

export function hitsOf(m: Manifest, use: Map<string, number>): number {
  return Math.max(m.hits ?? 0, use.get(useHitKey(m.key)) ?? 0);
}

/** A checkpoint no request has reused yet: the first to go. */
const unhitCheckpoint = (m: Manifest, use: Map<string, number>): boolean => Boolean(m.checkpoint) && hitsOf(m, use) === 0;

export function planEviction(p: PlanInput): EvictionPlan {
  const extra = p.extraBytes ?? 0;
  const owners = new Map<string, number>();
  const size = new Map<string, number>();
  for (const m of p.manifests) {
    for (const k of new Set(m.blocks.map((b) => b.key))) owners.set(k, (owners.get(k) ?? 0) + 1);
    for (const b of m.blocks) size.set(b.key, b.bytes);
  }
  let bytes = 0;
  for (const v of size.values()) bytes += v;
  const before = bytes;
  const candidates = p.manifests
    .filter((m) => !m.pinned && !p.protect?.has(m.key))
    .sort(
      (a, b) =>
        Number(unhitCheckpoint(b, p.lastUsed)) - Number(unhitCheckpoint(a, p.lastUsed)) ||
        lastUseOf(a, p.lastUsed) - lastUseOf(b, p.lastUsed) ||
        a.createdAt - b.createdAt ||
        (a.key < b.key ? -1 : 1),
    );
  const victims: string[] = [];
  const freed = new Map<string, number>();
  for (const m of candidates) {
    if (bytes + extra <= p.limitBytes) break;
    victims.push(m.key);
    for (const k of new Set(m.blocks.map((b) => b.key))) {
      const n = owners.get(k)! - 1;
      owners.set(k, n);
      if (n === 0 && !p.keepBlobs?.has(k)) {
        freed.set(k, size.get(k)!);
        bytes -= size.get(k)!;
      }
    }
  }
  return { victims, freed, bytesBefore: before, bytesAfter: bytes, fits: bytes + extra <= p.limitBytes };
}

/**
 * Records an eviction in the `use` store, in the evicting transaction: the
 * victims' last-use times and hit counts go, and each victim and freed block
 * leaves a `gone:` record under its name, so that a later request whose
 * prefix it was can say that reuse stopped there because of eviction.
 */
export function recordEviction(use: IDBObjectStore, plan: Pick<EvictionPlan, 'victims' | 'freed'>, at = Date.now()): void {
  for (const v of plan.victims) {
    use.delete(v);
    use.delete(useHitKey(v));
    use.put(at, useGoneKey(v));
  }
  for (const k of plan.freed.keys()) use.put(at, useGoneKey(blobNameOf(k)));
}

/** What the browser says about this origin's storage; null where it says nothing (Node, old browsers). */
export async function originEstimate(): Promise<{ usage: number; quota: number } | null> {
  try {
    const est = await (globalThis.navigator as Navigator | undefined)?.storage?.estimate?.();
    if (!est || typeof est.quota !== 'number') return null;
    return { usage: est.usage ?? 0, quota: est.quota };
  } catch {
    return null;
  }
}

export async function isPersisted(): Promise<boolean | null> {
  try {
    const f = (globalThis.navigator as Navigator | undefined)?.storage?.persisted;
    return f ? await f.call(navigator.storage) : null;
  } catch {
    return null;
  }
}

/**
 * Asks the browser not to clear this origin's storage under pressure. Only a
 * page can ask (StorageManager.persist is not exposed to workers): there it
 * returns the browser's answer; in a worker it returns the current status.
 */
export async function requestPersistence(): Promise<{ persisted: boolean | null; asked: boolean }> {
  const storage = (globalThis.navigator as Navigator | undefined)?.storage;
  if (storage && typeof storage.persist === 'function') {
    try {
      return { persisted: await storage.persist(), asked: true };
    } catch {
      return { persisted: await isPersisted(), asked: false };
    }
  }
  return { persisted: await isPersisted(), asked: false };
}

/**
 * Bytes this store may still add before the origin's quota: a write that
 * would go past it evicts first instead of failing half-way. A margin stays
 * free, as estimate() is approximate and other data of the origin grows too.
 */
export function roomUnderQuota(est: { usage: number; quota: number } | null): number {
  if (!est || !(est.quota > 0)) return Infinity;
  const margin = Math.min(est.quota * 0.05, 64 * 1024 * 1024);
  return Math.max(0, est.quota - est.usage - margin);
}
