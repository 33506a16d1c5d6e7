import { CorruptBlob, StateNotFound } from '../core/errors.ts';
import { BLOCK_TOKENS, type KeyChain } from '../core/key-chain.ts';
import type { ModelState, StateModel } from '../models/types.ts';
import type { Manifest } from '../store/records.ts';
import type { StateStore, Tier } from '../store/store.ts';
import { improveFromRemote } from './remote.ts';

/** The longest stored prefix found for a request. */
export interface Found {
  /** Tokens of it (0: nothing found). */
  reused: number;
  state?: ModelState;
  /** Its manifest, when it is a stored state (not a run of blocks). */
  manifest?: Manifest;
  /** 'remote': fetched from a remote state host just now (and stored here). */
  tier?: Tier | 'remote';
}

/**
 * The longest prefix of the chain's tokens already computed, at least
 * `minLen` long: a stored state whose key is one of the prefix keys, or
 * (sliceable states) a run of stored 16-token blocks from the start. `known`
 * is a state of length minLen the caller already holds the manifest of
 * (infer's own state): its manifest is not read again. Lengths above
 * `maxLen` are not looked at (the caller knows them absent).
 */
export async function findPrefix(store: StateStore, model: StateModel, chain: KeyChain, minLen = 1, known?: Manifest, maxLen = chain.length): Promise<Found> {
  const local = await findLocalPrefix(store, model, chain, minLen, known, maxLen);
  // A remote state host may hold a longer prefix (src/engine/remote.ts); with no remotes this is `local`.
  return improveFromRemote(store, model, chain, minLen, maxLen, known, local);
}

async function findLocalPrefix(
  store: StateStore,
  model: StateModel,
  chain: KeyChain,
  minLen: number,
  known: Manifest | undefined,
  maxLen: number,
): Promise<Found> {
  const n = maxLen;
  if (n === 0 || minLen > n) return { reused: 0 };
  const keys = chain.keysFrom(minLen, n);
  // Hot tier first: no IndexedDB at all when a recent state matches.
  const h = store.longestHot(keys);
  if (h >= 0) {
    const L = minLen + h;
    const r = await store.getState(keys[h]!).catch((e: unknown) => {
      if (e instanceof StateNotFound) return null;
      throw e;
    });
    if (r) return { reused: L, state: r.state, manifest: r.manifest, tier: r.tier };
  }
  const ask = known ? keys.slice(1) : keys;
  const manifests = [...(known ? [known] : []), ...(await store.getManifests(ask))];
  let best = 0;
  let bestManifest: Manifest | undefined;
  for (let i = manifests.length - 1; i >= 0; i--) {
    const m = manifests[i];
    if (m && m.modelFp === model.fingerprint && !m.damaged) {
      best = minLen + i;
      bestManifest = m;
      break;
    }
  }
  let bestBlocks = 0;
  if (model.sliceable) {
    // Blocks inside a stored state are stored (under their chain names): look only past it.
    const from = Math.floor(best / BLOCK_TOKENS);
    bestBlocks = (await store.storedBlockRun(chain, from, Math.floor(n / BLOCK_TOKENS))) * BLOCK_TOKENS;
    if (bestBlocks < minLen) bestBlocks = 0;
  }
  if (bestManifest && best >= bestBlocks) {
    try {
      const r = await store.restore(bestManifest);
      return { reused: best, state: r.state, manifest: r.manifest, tier: r.tier };
    } catch (e) {
      // A damaged state is never served; fall back to what else there is, or recompute.
      if (!(e instanceof CorruptBlob) && !(e instanceof StateNotFound)) throw e;
      if (bestBlocks === 0) return { reused: 0 };
    }
  }
  if (bestBlocks === 0) return { reused: 0 };
  const state = await store.restoreBlockPrefix(chain, bestBlocks / BLOCK_TOKENS, model.stateSpecs);
  if (!state) return { reused: 0 };
  return { reused: bestBlocks, state, tier: 'stored' };
}
