import { CorruptBlob, StateNotFound } from '../core/errors.ts';
import { BLOCK_TOKENS, type KeyChain } from '../core/key-chain.ts';
import type { ModelState, StateModel } from '../models/types.ts';
import type { Manifest } from '../store/records.ts';
import type { StateStore, Tier } from '../store/store.ts';

/**
 * A stored state under one of the request's prefix keys that the lookup
 * refused: it would have served more tokens than what was reused. The engine
 * heals the first two kinds (it recomputes those tokens anyway) and explains
 * all of them (src/engine/explain.ts).
 */
export type Passed =
  /** A blob of it was missing or corrupt (found now, or marked before). */
  | { kind: 'damaged'; at: number; key: string; why: string; manifest: Manifest }
  /** Its manifest names other token ids than the request's (edited, damaged, or a hash collision): never served. */
  | { kind: 'mismatch'; at: number; key: string; differsAt: number }
  /** Its manifest names another model build. */
  | { kind: 'other-model'; at: number; key: string; modelId: string; modelFp: string };

/** The longest stored prefix found for a request. */
export interface Found {
  /** Tokens of it (0: nothing found). */
  reused: number;
  state?: ModelState;
  /** Its manifest, when it is a stored state (not a run of blocks). */
  manifest?: Manifest;
  tier?: Tier;
  /** Stored states longer than `reused` that were refused, longest first. */
  passed: Passed[];
}

/**
 * Whether a stored manifest may serve the first `len` tokens of a request:
 * a hit is verified, not trusted. The key names the tokens only through a
 * hash, so the manifest's own token ids are compared with the request's; an
 * edited or damaged manifest, or a collision, is never served.
 */
export function refusal(m: Manifest, model: StateModel, tokens: readonly number[], len: number): Passed | null {
  if (m.modelFp !== model.fingerprint) return { kind: 'other-model', at: len, key: m.key, modelId: m.modelId, modelFp: m.modelFp };
  const d = firstDifference(m.tokens, tokens, len);
  if (d < len || m.tokens.length !== len) return { kind: 'mismatch', at: len, key: m.key, differsAt: d };
  if (m.damaged) return { kind: 'damaged', at: len, key: m.key, why: m.damaged.reason, manifest: m };
  return null;
}

/** The first index below `len` where the two lists differ (`len` when the first `len` agree). */
export function firstDifference(a: ArrayLike<number>, b: ArrayLike<number>, len = Math.max(a.length, b.length)): number {
  const n = Math.min(len, a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/**
 * The longest prefix of the chain's tokens already computed, at least
 * `minLen` long: a stored state whose key is one of the prefix keys, or
 * (sliceable states) a run of stored 16-token blocks from the start. `known`
 * is a state of length minLen the caller already holds the manifest of
 * (infer's own state): its manifest is not read again. Lengths above
 * `maxLen` are not looked at (the caller knows them absent).
 *
 * Every candidate state is verified (refusal) before it is restored; one
 * that is refused or turns out damaged is passed over for the next shorter
 * one, and reported in `passed`.
 */
export async function findPrefix(store: StateStore, model: StateModel, chain: KeyChain, minLen = 1, known?: Manifest, maxLen = chain.length): Promise<Found> {
  const n = maxLen;
  const passed: Passed[] = [];
  if (n === 0 || minLen > n) return { reused: 0, passed };
  const tokens = chain.tokens;
  const keys = chain.keysFrom(minLen, n);
  const pass = (p: Passed) => {
    if (!passed.some((x) => x.key === p.key)) passed.push(p);
  };
  // Hot tier first: no IndexedDB at all when a recent state matches.
  const h = store.longestHot(keys);
  if (h >= 0) {
    const L = minLen + h;
    const r = await store.getState(keys[h]!).catch((e: unknown) => {
      if (e instanceof StateNotFound) return null;
      throw e;
    });
    if (r) {
      const no = refusal(r.manifest, model, tokens, L);
      if (!no) return { reused: L, state: r.state, manifest: r.manifest, tier: r.tier, passed };
      pass(no);
    }
  }
  const ask = known ? keys.slice(1) : keys;
  const manifests = [...(known ? [known] : []), ...(await store.getManifests(ask))];
  // Sliceable states: full blocks stored from the start (blocks inside a
  // stored state are stored under their chain names, so the count starts
  // past the candidate); computed once, when first needed.
  let blocks: number | null = null;
  const blockRun = async (from: number): Promise<number> => {
    if (blocks === null) {
      const run = (await store.storedBlockRun(chain, Math.floor(from / BLOCK_TOKENS), Math.floor(n / BLOCK_TOKENS))) * BLOCK_TOKENS;
      blocks = run >= minLen ? run : 0;
    }
    return blocks;
  };
  // A run that failed to restore (a damaged block, now dropped): only a shorter one is tried again.
  let failedRun = Infinity;
  const fromBlocks = async (run: number): Promise<Found | null> => {
    const state = await store.restoreBlockPrefix(chain, run / BLOCK_TOKENS, model.stateSpecs);
    if (state) return { reused: run, state, tier: 'stored', passed };
    failedRun = run;
    blocks = null;
    return null;
  };
  for (let i = manifests.length - 1; i >= 0; i--) {
    const m = manifests[i];
    if (!m) continue;
    const L = minLen + i;
    const no = refusal(m, model, tokens, L);
    if (no) {
      pass(no);
      continue;
    }
    if (model.sliceable && failedRun === Infinity) {
      const run = await blockRun(L);
      if (run > L) {
        const b = await fromBlocks(run);
        if (b) return b;
      }
    }
    try {
      const r = await store.restore(m);
      return { reused: L, state: r.state, manifest: r.manifest, tier: r.tier, passed };
    } catch (e) {
      // A damaged state is never served: the next shorter one may be whole.
      if (!(e instanceof CorruptBlob) && !(e instanceof StateNotFound)) throw e;
      if (e instanceof CorruptBlob) pass({ kind: 'damaged', at: L, key: m.key, why: String(e.details.reason ?? 'damaged'), manifest: m });
      // (its blocks were counted as present: count again under the next candidate)
      blocks = null;
    }
  }
  if (model.sliceable) {
    const run = await blockRun(0);
    if (run > 0 && run < failedRun) {
      const b = await fromBlocks(run);
      if (b) return b;
    }
  }
  return { reused: 0, passed };
}
