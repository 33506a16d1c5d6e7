import type { ModelState, RunOptions, StateModel } from '../models/types.ts';
import type { StateStore, Tier } from '../store/store.ts';
import type { Manifest } from '../store/manifest.ts';
import { BLOCK_TOKENS, blockChain, keyOf, prefixKeys, stateKey } from '../core/state-key.ts';
import { ContextOverflow, InvalidInput, ModelMismatch, throwIfAborted, CorruptBlob, StateNotFound } from '../core/errors.ts';
import { blobDigest, signReceipt, type Receipt, type SignedReceipt } from '../core/receipts.ts';
import { makeSampler, validateSampling, type Sampling } from './sampling.ts';
import { truncateState } from '../models/state-layout.ts';

export interface CreateStateRequest {
  /** Model id; defaults to the loaded model. */
  model?: string;
  text?: string;
  tokens?: number[];
  label?: string;
}

export interface CreateStateResult {
  stateKey: string;
  tokens: number;
  bytes: number;
  /** Tokens found already computed in the store (a prefix) and not processed again. */
  reused: number;
  processed: number;
  receipt: SignedReceipt;
  timings: { totalMs: number; prefillMs: number; lookupMs: number; storeMs: number };
}

export interface InferRequest {
  stateKey: string;
  /** New text after the state (may be empty). */
  delta?: string;
  deltaTokens?: number[];
  maxNewTokens?: number;
  sampling?: Sampling;
}

export interface Savings {
  /** Tokens that came from the cache instead of being processed. */
  tokensReused: number;
  /** Tokens this request ran through the model (delta, plus one per generated token). */
  tokensProcessed: number;
  /** What a request without the cache would have run: the whole text, plus generation. */
  naiveTokens: number;
  /** 1 − processed / naive. */
  fraction: number;
}

export interface InferResult {
  newStateKey: string;
  output: string;
  outputTokens: number[];
  deltaTokens: number;
  savings: Savings;
  receipt: SignedReceipt;
  /** Which tier the starting state came from. */
  tier: Tier | 'recomputed';
  timings: { totalMs: number; restoreMs: number; prefillMs: number; generateMs: number; storeMs: number };
}

export interface StateInfo {
  key: string;
  tokens: number;
  bytes: number;
  tier: Tier;
  parent: string | null;
  codec: string;
  model: string;
  label?: string;
  pinned: boolean;
  createdAt: number;
  lastUsed: number;
  receipt: string | null;
  text?: string;
}

const now = () => performance.now();

/**
 * The State Pack protocol, written against a StateModel and a StateStore only:
 * nothing here knows about workers, the DOM or a particular runtime.
 */
export class Engine {
  /** Receipt per state key, in memory; the hash also lives in the manifest. */
  private receipts = new Map<string, SignedReceipt>();

  constructor(
    readonly store: StateStore,
    private getModel: (id?: string) => Promise<StateModel>,
  ) {}

  private async modelFor(id?: string): Promise<StateModel> {
    return this.getModel(id);
  }

  private async tokensOf(model: StateModel, text: string | undefined, tokens: number[] | undefined, what: string): Promise<number[]> {
    if (tokens) {
      for (const t of tokens) {
        if (!Number.isInteger(t) || t < 0 || t >= model.vocabSize) throw new InvalidInput(`${what}: token id ${t} is not in ${model.id}'s vocabulary (0–${model.vocabSize - 1})`);
      }
      return [...tokens];
    }
    if (typeof text !== 'string') throw new InvalidInput(`${what}: give text or tokens`);
    return model.tokenize(text);
  }

  /**
   * The longest prefix of `tokens` already computed: a stored state whose key
   * is one of the prefix keys, or (GPT-2) a run of stored 16-token blocks from
   * the start. Returns nothing found as { reused: 0 }.
   */
  async findPrefix(model: StateModel, tokens: number[], minLen = 1): Promise<{ state?: ModelState; reused: number; key?: string; tier?: Tier }> {
    if (tokens.length === 0) return { reused: 0 };
    const keys = await prefixKeys(model.fingerprint, tokens);
    // Hot tier first: no IndexedDB at all when a recent state matches.
    for (let L = tokens.length; L >= minLen; L--) {
      if (this.store.hot.has(keys[L - 1]!)) {
        const m = await this.store.getManifest(keys[L - 1]!);
        if (m) {
          const r = await this.store.getState(keys[L - 1]!);
          return { state: r.state, reused: L, key: keys[L - 1], tier: r.tier };
        }
      }
    }
    const manifests = await this.store.getManifests(keys);
    let bestManifest = 0;
    for (let L = tokens.length; L >= minLen; L--) {
      const m = manifests[L - 1];
      if (m && m.modelFp === model.fingerprint) {
        bestManifest = L;
        break;
      }
    }
    let bestBlocks = 0;
    if (model.arch === 'gpt2') {
      const chain = await blockChain(model.fingerprint, tokens);
      const full = Math.floor(tokens.length / BLOCK_TOKENS);
      const present = await this.store.hasBlobs(chain.slice(0, full).map((h) => keyOf(h) + '/fp32'));
      let k = 0;
      while (k < full && present[k]) k++;
      bestBlocks = k * BLOCK_TOKENS;
    }
    if (bestManifest === 0 && bestBlocks < minLen) return { reused: 0 };
    if (bestManifest >= bestBlocks) {
      try {
        const r = await this.store.getState(keys[bestManifest - 1]!);
        return { state: r.state, reused: bestManifest, key: keys[bestManifest - 1], tier: r.tier };
      } catch (e) {
        // A damaged state is never served; fall back to recomputing.
        if (e instanceof CorruptBlob) return { reused: 0 };
        throw e;
      }
    }
    const state = await this.store.getBlockPrefix(model, tokens.slice(0, bestBlocks));
    if (!state) return { reused: 0 };
    return { state, reused: bestBlocks, tier: 'stored' };
  }

  async createState(req: CreateStateRequest, ro: RunOptions = {}): Promise<CreateStateResult> {
    const t0 = now();
    const model = await this.modelFor(req.model);
    const tokens = await this.tokensOf(model, req.text, req.tokens, 'createState');
    if (tokens.length === 0) throw new InvalidInput('createState: the text has no tokens; a state holds at least one token.');
    if (tokens.length > model.maxTokens) {
      throw new ContextOverflow(`${model.id} holds at most ${model.maxTokens} tokens; this text has ${tokens.length}. Shorten it, or create a shorter base and compact.`, { limit: model.maxTokens, wanted: tokens.length });
    }
    const key = await stateKey(model.fingerprint, tokens);
    const tl = now();
    const existing = await this.store.getManifest(key);
    if (existing) {
      const receipt = this.receipts.get(key) ?? (await this.makeReceipt('create', model, [], tokens.length, key, existing, 0, tokens.length, null));
      return { stateKey: key, tokens: tokens.length, bytes: existing.bytes, reused: tokens.length, processed: 0, receipt, timings: { totalMs: now() - t0, prefillMs: 0, lookupMs: now() - tl, storeMs: 0 } };
    }
    const prefix = await this.findPrefix(model, tokens);
    const lookupMs = now() - tl;
    throwIfAborted(ro.signal);
    const tp = now();
    const rest = tokens.slice(prefix.reused);
    const { state } = await model.prefill(rest, prefix.state, progressOffset(ro, prefix.reused, tokens.length));
    const prefillMs = now() - tp;
    throwIfAborted(ro.signal);
    const ts = now();
    const prev = prefix.key ? (this.receipts.get(prefix.key)?.hash ?? (await this.store.getManifest(prefix.key))?.receipt ?? null) : null;
    const manifest = await this.store.putState({ state, modelId: model.id, modelFp: model.fingerprint, key, parent: prefix.key ?? null, receipt: null, label: req.label });
    const receipt = await this.makeReceipt('create', model, prefix.key ? [prefix.key] : [], rest.length, key, manifest, rest.length, prefix.reused, prev);
    await this.store.setReceipt(key, receipt);
    const storeMs = now() - ts;
    return { stateKey: key, tokens: tokens.length, bytes: manifest.bytes, reused: prefix.reused, processed: rest.length, receipt, timings: { totalMs: now() - t0, prefillMs, lookupMs, storeMs } };
  }

  async infer(req: InferRequest, ro: RunOptions = {}): Promise<InferResult> {
    const t0 = now();
    validateSampling(req.sampling);
    const maxNew = req.maxNewTokens ?? 16;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InvalidInput('infer: maxNewTokens must be a whole number ≥ 0');
    const base = await this.store.getManifest(req.stateKey);
    if (!base) throw new StateNotFound(`No stored state has the key ${req.stateKey}. Create it with createState, or import its cartridge.`, { key: req.stateKey });
    const model = await this.modelFor(base.modelId);
    if (base.modelFp !== model.fingerprint) throw new ModelMismatch(`State ${req.stateKey} belongs to another build of ${base.modelId} (fingerprint ${base.modelFp.slice(0, 12)}…, loaded ${model.fingerprint.slice(0, 12)}…).`);
    const delta = await this.tokensOf(model, req.delta ?? '', req.deltaTokens, 'infer');
    const full = [...base.tokens, ...delta];
    if (full.length + maxNew > model.maxTokens) {
      throw new ContextOverflow(
        `${model.id} holds at most ${model.maxTokens} tokens: the state has ${base.tokens.length}, the delta ${delta.length}, and ${maxNew} new tokens were asked for. Call compact({ stateKey, keep }) to fold the state into a shorter one, then infer from it.`,
        { limit: model.maxTokens, wanted: full.length + maxNew },
      );
    }
    // Restore: the longest stored prefix of state + delta (at least the state itself, when it is intact).
    const tr = now();
    const found = await this.findPrefix(model, full);
    let tier: InferResult['tier'] = found.reused > 0 ? (found.tier ?? 'stored') : 'recomputed';
    const restoreMs = now() - tr;
    throwIfAborted(ro.signal);
    const tp = now();
    let state: ModelState | undefined = found.state;
    let logits: Float32Array | undefined;
    let reused = found.reused;
    let processed = 0;
    if (reused < base.tokens.length) {
      // The state itself could not be restored (a damaged or missing blob): it
      // is recomputed from its tokens and stored again, which heals it.
      tier = 'recomputed';
      const r = await model.prefill(base.tokens.slice(reused), state, progressOffset(ro, reused, full.length));
      state = r.state;
      logits = r.logits;
      processed += base.tokens.length - reused;
      throwIfAborted(ro.signal);
      await this.store.putState({ state, modelId: model.id, modelFp: model.fingerprint, key: base.key, parent: base.parent, receipt: base.receipt, receiptJson: base.receiptJson, label: base.label });
    }
    const pos = reused + processed;
    if (pos < full.length) {
      const r = await model.prefill(full.slice(pos), state, progressOffset(ro, pos, full.length));
      state = r.state;
      logits = r.logits;
      processed += full.length - pos;
    } else if (!logits) {
      // Everything is cached, but generation needs the last position's logits.
      if (model.arch === 'gpt2' && full.length > 1) {
        const r = await model.prefill([full[full.length - 1]!], truncateState(state!, full.length - 1), ro);
        state = r.state;
        logits = r.logits;
        processed += 1;
        reused -= 1;
      } else {
        const r = await model.prefill(full, undefined, ro);
        state = r.state;
        logits = r.logits;
        processed = full.length;
        reused = 0;
        tier = 'recomputed';
      }
    }
    if (!state || !logits) throw new Error('internal: no state after restore');
    const prefillMs = now() - tp;
    const tg = now();
    const sample = makeSampler(req.sampling);
    const out: number[] = [];
    for (let i = 0; i < maxNew; i++) {
      throwIfAborted(ro.signal);
      const tok = sample(logits);
      out.push(tok);
      // The last token is run too, so that the new state holds the whole output.
      const r = await model.prefill([tok], state);
      state = r.state;
      logits = r.logits;
      processed++;
    }
    const generateMs = now() - tg;
    throwIfAborted(ro.signal);
    const ts = now();
    const newKey = await stateKey(model.fingerprint, state.tokens);
    let manifest = await this.store.getManifest(newKey);
    if (!manifest) {
      manifest = await this.store.putState({ state, modelId: model.id, modelFp: model.fingerprint, key: newKey, parent: req.stateKey, receipt: null });
    }
    const prev = this.receipts.get(req.stateKey)?.hash ?? base.receipt ?? null;
    const receipt = await this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, manifest, processed, reused, prev);
    await this.store.setReceipt(newKey, receipt);
    const storeMs = now() - ts;
    const naive = full.length + maxNew;
    return {
      newStateKey: newKey,
      output: model.decode(out),
      outputTokens: out,
      deltaTokens: delta.length,
      savings: { tokensReused: reused, tokensProcessed: processed, naiveTokens: naive, fraction: naive ? 1 - processed / naive : 0 },
      receipt,
      tier,
      timings: { totalMs: now() - t0, restoreMs, prefillMs, generateMs, storeMs },
    };
  }

  async getState(key: string): Promise<StateInfo> {
    const m = await this.store.getManifest(key);
    if (!m) throw new StateNotFound(`No stored state has the key ${key}.`, { key });
    return this.info(m);
  }

  async listStates(): Promise<StateInfo[]> {
    const ms = await this.store.list();
    return ms.sort((a, b) => a.createdAt - b.createdAt).map((m) => this.info(m));
  }

  async deleteState(key: string): Promise<{ deleted: boolean; blobsFreed: number; bytesFreed: number }> {
    const m = await this.store.getManifest(key);
    if (!m) return { deleted: false, blobsFreed: 0, bytesFreed: 0 };
    const r = await this.store.delete(key);
    this.receipts.delete(key);
    return { deleted: true, ...r };
  }

  receiptOf(key: string): SignedReceipt | undefined {
    return this.receipts.get(key);
  }

  private info(m: Manifest): StateInfo {
    return {
      key: m.key,
      tokens: m.tokens.length,
      bytes: m.bytes,
      tier: this.store.hot.has(m.key) ? 'hot' : 'stored',
      parent: m.parent,
      codec: m.codec,
      model: m.modelId,
      pinned: m.pinned,
      createdAt: m.createdAt,
      lastUsed: m.lastUsed,
      receipt: m.receipt,
      ...(m.label ? { label: m.label } : {}),
    };
  }

  private async makeReceipt(op: Receipt['op'], model: StateModel, inputs: string[], deltaTokens: number, outKey: string, m: Manifest, processed: number, reused: number, prev: string | null): Promise<SignedReceipt> {
    const r: Receipt = {
      op,
      model_fp: model.fingerprint,
      input_keys: inputs,
      delta_tokens: deltaTokens,
      output_key: outKey,
      blob_digest: await blobDigest(m.blocks.map((b) => b.digest)),
      tokens_processed: processed,
      tokens_reused: reused,
      prev,
    };
    const s = await signReceipt(r);
    this.receipts.set(outKey, s);
    return s;
  }
}

/** Reports prefill progress over the whole text, counting reused tokens as done. */
function progressOffset(ro: RunOptions, offset: number, total: number): RunOptions {
  return {
    ...ro,
    onProgress: ro.onProgress ? (p) => ro.onProgress!({ done: offset + p.done, total }) : undefined,
  };
}
