import type { KeyChain } from '../core/key-chain.ts';
import type { StateModel } from '../models/types.ts';
import type { StateStore, Tier } from '../store/store.ts';
import type { Reuse } from './api.ts';
import { firstDifference, type Passed } from './lookup.ts';

/**
 * Why reuse stopped where it did, in words, for every createState and infer
 * result. The lookup itself stays cheap (keys of the request's prefixes);
 * the explanation of a partial hit reads what it needs after it: the states
 * the lookup refused (damaged, not matching, another model), the store's
 * eviction records for the request's prefix keys, and the token ids of the
 * stored states, to find how far the nearest stored text agrees.
 */
export interface ExplainInput {
  store: StateStore;
  model: StateModel;
  /** The request's tokens (at least `target` of them). */
  chain: KeyChain;
  /** Tokens the request could have taken from the store (createState: all; infer: state + delta). */
  target: number;
  reused: number;
  fromKey: string | null;
  tier: Tier | 'recomputed';
  passed: Passed[];
  /** Checkpoint spacing used for this model's prefills (0: none), for the words. */
  checkpointEvery: number;
  /** Keys of refused states that the request stored again (healed). */
  healed?: ReadonlySet<string>;
}

const short = (k: string): string => k.replace(/^sha256:/, '').slice(0, 12);

export async function explainReuse(x: ExplainInput): Promise<Reuse> {
  const L = x.reused;
  const base = { fromKey: x.fromKey, tier: x.tier, tokensReused: L };
  if (L >= x.target) {
    return {
      ...base,
      stoppedAt: x.target,
      cause: 'whole',
      reason: `all ${x.target} tokens were already stored${x.fromKey ? ` (state ${short(x.fromKey)}, ${x.tier} tier)` : ''}: nothing was recomputed`,
    };
  }
  const from = L > 0 ? `reuse stopped at token ${L}` : 'nothing was reused';
  // 1. A stored state that would have served more, refused by the lookup.
  const refused = x.passed.filter((p) => p.at > L).sort((a, b) => b.at - a.at)[0];
  if (refused) {
    const healed = x.healed?.has(refused.key);
    if (refused.kind === 'damaged')
      return {
        ...base,
        stoppedAt: refused.at,
        cause: 'damaged',
        reason: `the stored state of the first ${refused.at} tokens (${short(refused.key)}) had a damaged blob (${refused.why}): it was not served, so ${from} and those tokens were recomputed${healed ? ', and the state stored again whole' : ''}`,
      };
    if (refused.kind === 'mismatch')
      return {
        ...base,
        stoppedAt: refused.at,
        cause: 'mismatch',
        reason: `the state stored under the key of the first ${refused.at} tokens (${short(refused.key)}) names other token ids (they differ at token ${refused.differsAt}): an edited or damaged manifest, or a hash collision. It was not served (${from})${healed ? ', and the state of these tokens was stored under its key instead' : ''}`,
      };
    return {
      ...base,
      stoppedAt: refused.at,
      cause: 'other-model',
      reason: `the state stored under the key of the first ${refused.at} tokens (${short(refused.key)}) belongs to another model (${refused.modelId}, fingerprint ${refused.modelFp.slice(0, 12)}…): not served, so ${from}`,
    };
  }
  // 2. What was stored past this point and evicted.
  const lengths: number[] = [];
  for (let m = L + 1; m <= x.target; m++) lengths.push(m);
  const gone = await x.store.evictedAt(lengths.map((m) => x.chain.keyAt(m)));
  let evicted = -1;
  gone.forEach((t, i) => {
    if (t !== undefined) evicted = i;
  });
  if (evicted >= 0) {
    const at = lengths[evicted]!;
    return {
      ...base,
      stoppedAt: at,
      cause: 'evicted',
      reason: `the stored ${x.model.sliceable ? 'blocks' : 'state'} of the first ${at} tokens ${x.model.sliceable ? 'were' : 'was'} evicted (${new Date(gone[evicted]!).toISOString()}) to make room: ${from}`,
    };
  }
  // 3. How far the nearest stored text agrees with this one.
  const tokens = x.chain.tokens.slice(0, x.target);
  const refusedKeys = new Set(x.passed.map((p) => p.key));
  let same = { n: 0, key: '' };
  let other = { n: 0, key: '', modelId: '' };
  let sameCount = 0;
  for (const m of await x.store.storedTexts()) {
    if (refusedKeys.has(m.key)) continue;
    const d = firstDifference(m.tokens, tokens, x.target);
    if (m.modelFp === x.model.fingerprint) {
      sameCount++;
      if (d > same.n) same = { n: d, key: m.key };
    } else if (d > other.n) other = { n: d, key: m.key, modelId: m.modelId };
  }
  if (other.n > Math.max(same.n, L))
    return {
      ...base,
      stoppedAt: other.n,
      cause: 'other-model',
      reason: `the stored state ${short(other.key)} shares the first ${other.n} tokens, but belongs to another model (${other.modelId}): a state is only reused by the model build that made it, so ${from}`,
    };
  if (same.n > L) {
    if (x.model.sliceable)
      return {
        ...base,
        stoppedAt: same.n,
        cause: 'differs',
        reason: `the text differs at token ${same.n} from the stored state ${short(same.key)}; a KV state is reused by whole stored states or 16-token blocks, so ${from}`,
      };
    const every = x.checkpointEvery > 0 ? `checkpoints are kept every ${x.checkpointEvery} tokens` : 'no checkpoints were kept';
    return {
      ...base,
      stoppedAt: same.n,
      cause: 'no-checkpoint',
      reason: `the stored state ${short(same.key)} shares the first ${same.n} tokens, but a ${x.model.arch} state exists only where one was stored: there is no checkpoint before token ${same.n}${L > 0 ? ` after token ${L}` : ''} (${every}), so ${from}`,
    };
  }
  const why =
    sameCount === 0
      ? `nothing is stored for ${x.model.id} yet`
      : L > 0
        ? `the text differs at token ${L} from every stored text`
        : 'the text differs at token 0 from every stored text (no stored text starts the same way)';
  return { ...base, stoppedAt: L, cause: 'differs', reason: `${why}: ${from}` };
}
