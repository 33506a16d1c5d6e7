import type { ModelState, RunOptions, StateModel } from '../models/types.ts';
import type { StateStore, Tier } from '../store/store.ts';
import type { Manifest } from '../store/manifest.ts';
import { BLOCK_TOKENS, blockChain, prefixKeys, stateKey } from '../core/state-key.ts';
import { ContextOverflow, InvalidInput, ModelMismatch, throwIfAborted, CorruptBlob, StateNotFound } from '../core/errors.ts';
import { blobDigest, signReceipt, type Receipt, type SignedReceipt } from '../core/receipts.ts';
import { digestOf } from '../core/sha256.ts';
import { bytesOf } from '../core/bytes.ts';
import { makeSampler, validateSampling, type Sampling } from './sampling.ts';
import { cutBlocks, truncateState } from '../models/state-layout.ts';

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

export interface MergeRequest {
  /** A chain, oldest first: each state's tokens extend the one before. */
  stateKeys: string[];
}

export interface MergeResult {
  /** The merged state: the same tokens as the last key, so (content addressing) the same key. */
  newStateKey: string;
  tokens: number;
  bytes: number;
  receipt: SignedReceipt;
  /** Intermediate states whose manifests were deleted. */
  released: string[];
  /** Intermediates kept because they are pinned. */
  keptPinned: string[];
  blobsFreed: number;
  bytesFreed: number;
}

export interface CompactKeep {
  /** Tokens kept from the start (a system prompt): found in the store, not recomputed. */
  firstTokens?: number;
  /** Tokens kept from the end (the recent window). */
  lastTokens?: number;
}

export interface CompactRequest {
  stateKey: string;
  /** What to keep; by default the last half of the model's context. */
  keep?: CompactKeep;
  label?: string;
}

export interface CompactResult {
  newStateKey: string;
  /** Steps (the state and its ancestors by parent link) folded into the fresh state. */
  stepsFolded: number;
  /** Tokens in the fresh state. */
  tokens: number;
  /** Tokens left out. */
  tokensDropped: number;
  reused: number;
  processed: number;
  receipt: SignedReceipt;
  timings: { totalMs: number; prefillMs: number };
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
  /** Set when a blob of the state was found missing or corrupt: it is not served, and is recomputed from its tokens on the next infer or createState. */
  damaged?: { reason: string; blocks: number };
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
        if (!Number.isInteger(t) || t < 0 || t >= model.vocabSize)
          throw new InvalidInput(`${what}: token id ${t} is not in ${model.id}'s vocabulary (0–${model.vocabSize - 1})`);
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
    const keys = await prefixKeys(model.fingerprint, tokens, minLen);
    // Hot tier first: no IndexedDB at all when a recent state matches.
    for (let L = tokens.length; L >= minLen; L--) {
      if (this.store.hot.has(keys[L - 1]!)) {
        // getState reads the manifest itself (a deleted state is not served from memory).
        const r = await this.store.getState(keys[L - 1]!).catch((e: unknown) => {
          if (e instanceof StateNotFound) return null;
          throw e;
        });
        if (r) return { state: r.state, reused: L, key: keys[L - 1], tier: r.tier };
      }
    }
    const manifests: (Manifest | undefined)[] = new Array(minLen - 1).fill(undefined).concat(await this.store.getManifests(keys.slice(minLen - 1)));
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
      const present = await this.store.hasBlocks(chain.slice(0, full));
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

  /**
   * Computes and stores the state of `tokens`, reusing the longest stored
   * prefix. Nothing is written when the signal fires before the store write.
   */
  private async build(model: StateModel, tokens: number[], ro: RunOptions, label?: string): Promise<Built> {
    const key = await stateKey(model.fingerprint, tokens);
    const tl = now();
    const existing = await this.store.getManifest(key);
    // A damaged state is built again (which stores it whole and clears the mark).
    if (existing && existing.modelFp === model.fingerprint && !existing.damaged) {
      return { key, manifest: existing, reused: tokens.length, processed: 0, prefixKey: key, existed: true, lookupMs: now() - tl, prefillMs: 0, storeMs: 0 };
    }
    const prefix = await this.findPrefix(model, tokens);
    const lookupMs = now() - tl;
    throwIfAborted(ro.signal);
    if (prefix.state && prefix.reused === tokens.length) {
      // A damaged state whose bytes turned out whole (its blocks were rewritten by
      // another state, or it read back fine): stored again as found, nothing to compute.
      const ts = now();
      const manifest = await this.store.putState({
        state: prefix.state,
        modelId: model.id,
        modelFp: model.fingerprint,
        key,
        parent: existing?.parent ?? null,
        receipt: existing?.receipt ?? null,
        receiptJson: existing?.receiptJson,
        label: label ?? existing?.label,
      });
      return { key, manifest, reused: tokens.length, processed: 0, prefixKey: key, existed: true, lookupMs, prefillMs: 0, storeMs: now() - ts };
    }
    const tp = now();
    const rest = tokens.slice(prefix.reused);
    const { state, logits } = await model.prefill(rest, prefix.state, progressOffset(ro, prefix.reused, tokens.length));
    keepLogits(state, logits);
    const prefillMs = now() - tp;
    throwIfAborted(ro.signal);
    const ts = now();
    const manifest = await this.store.putState({ state, modelId: model.id, modelFp: model.fingerprint, key, parent: prefix.key ?? null, receipt: null, label });
    return { key, manifest, reused: prefix.reused, processed: rest.length, prefixKey: prefix.key, existed: false, lookupMs, prefillMs, storeMs: now() - ts };
  }

  async createState(req: CreateStateRequest, ro: RunOptions = {}): Promise<CreateStateResult> {
    const t0 = now();
    const model = await this.modelFor(req.model);
    const tokens = await this.tokensOf(model, req.text, req.tokens, 'createState');
    if (tokens.length === 0) throw new InvalidInput('createState: the text has no tokens; a state holds at least one token.');
    if (tokens.length > model.maxTokens) {
      throw new ContextOverflow(
        `${model.id} holds at most ${model.maxTokens} tokens; this text has ${tokens.length}. Shorten it, or create a shorter base and compact.`,
        { limit: model.maxTokens, wanted: tokens.length },
      );
    }
    const b = await this.build(model, tokens, ro, req.label);
    let receipt: SignedReceipt;
    if (b.existed) {
      // A hit makes nothing: its receipt says so (nothing processed, the state
      // itself as input) and chains to the receipt that made the state.
      receipt = await this.makeReceipt(
        'create',
        model,
        [b.key],
        0,
        b.key,
        await this.digestOfState(b.manifest),
        0,
        tokens.length,
        await this.receiptHash(b.key),
      );
    } else {
      const prev = b.prefixKey ? await this.receiptHash(b.prefixKey) : null;
      receipt = await this.makeReceipt(
        'create',
        model,
        b.prefixKey ? [b.prefixKey] : [],
        b.processed,
        b.key,
        await this.digestOfState(b.manifest),
        b.processed,
        b.reused,
        prev,
      );
      await this.record(b.key, receipt);
    }
    return {
      stateKey: b.key,
      tokens: tokens.length,
      bytes: b.manifest.bytes,
      reused: b.reused,
      processed: b.processed,
      receipt,
      timings: { totalMs: now() - t0, prefillMs: b.prefillMs, lookupMs: b.lookupMs, storeMs: b.storeMs },
    };
  }

  async infer(req: InferRequest, ro: RunOptions = {}): Promise<InferResult> {
    const t0 = now();
    validateSampling(req.sampling);
    const maxNew = req.maxNewTokens ?? 16;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InvalidInput('infer: maxNewTokens must be a whole number ≥ 0');
    const base = await this.store.getManifest(req.stateKey);
    if (!base)
      throw new StateNotFound(`No stored state has the key ${req.stateKey}. Create it with createState, or import its cartridge.`, { key: req.stateKey });
    const model = await this.modelFor(base.modelId);
    if (base.modelFp !== model.fingerprint)
      throw new ModelMismatch(
        `State ${req.stateKey} belongs to another build of ${base.modelId} (fingerprint ${base.modelFp.slice(0, 12)}…, loaded ${model.fingerprint.slice(0, 12)}…).`,
      );
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
    // Only prefixes at least as long as the state itself are wanted here.
    const found = await this.findPrefix(model, full, base.tokens.length);
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
      keepLogits(state, logits);
      await this.store.putState({
        state,
        modelId: model.id,
        modelFp: model.fingerprint,
        key: base.key,
        parent: base.parent,
        receipt: base.receipt,
        receiptJson: base.receiptJson,
        label: base.label,
      });
    }
    const pos = reused + processed;
    if (pos < full.length) {
      const r = await model.prefill(full.slice(pos), state, progressOffset(ro, pos, full.length));
      state = r.state;
      logits = r.logits;
      processed += full.length - pos;
    } else if (!logits) {
      // Everything is cached, but generation needs the last position's logits.
      if (state?.logits && state.logits.length === model.vocabSize) {
        logits = state.logits;
      } else if (model.arch === 'gpt2' && full.length > 1) {
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
    let lastYield = now();
    for (let i = 0; i < maxNew; i++) {
      // An onnxruntime run does not return to the worker's message loop; without
      // this, a long generation would not see cancel() or the heartbeat.
      if (now() - lastYield > 50) {
        await new Promise((r) => setTimeout(r, 0));
        lastYield = now();
      }
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
    if (!manifest || manifest.damaged) {
      keepLogits(state, logits);
      manifest = await this.store.putState({ state, modelId: model.id, modelFp: model.fingerprint, key: newKey, parent: req.stateKey, receipt: null });
    }
    const prev = await this.receiptHash(req.stateKey);
    const receipt = await this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, await this.digestOfState(manifest), processed, reused, prev);
    await this.record(newKey, receipt);
    const storeMs = now() - ts;
    const naive = full.length + maxNew;
    return {
      newStateKey: newKey,
      // (transformers.js refuses to decode an empty list)
      output: out.length ? model.decode(out) : '',
      outputTokens: out,
      deltaTokens: delta.length,
      savings: { tokensReused: reused, tokensProcessed: processed, naiveTokens: naive, fraction: naive ? 1 - processed / naive : 0 },
      receipt,
      tier,
      timings: { totalMs: now() - t0, restoreMs, prefillMs, generateMs, storeMs },
    };
  }

  /**
   * Folds a chain (base → delta → …, each extending the one before) into one
   * standalone state for the last key's tokens and releases the others.
   *
   * The merged state has the last key (same tokens, same key). Standalone
   * means: its manifest has no parent and it is written whole, as a fresh
   * state, so each of its blocks is present under its own name or shared by
   * content (a full block by its chain hash) — none is reached through another
   * state. Deleting the intermediates then frees only what nothing else uses
   * (the store's mark-and-sweep).
   */
  async merge(req: MergeRequest, ro: RunOptions = {}): Promise<MergeResult> {
    const keys = req?.stateKeys;
    if (!Array.isArray(keys) || keys.length === 0 || keys.some((k) => typeof k !== 'string'))
      throw new InvalidInput('merge: stateKeys is a non-empty list of state keys, oldest first');
    const ms = await this.store.getManifests(keys);
    ms.forEach((m, i) => {
      if (!m) throw new StateNotFound(`merge: no stored state has the key ${keys[i]}.`, { key: keys[i] });
    });
    const manifests = ms as Manifest[];
    const last = manifests[manifests.length - 1]!;
    const model = await this.modelFor(last.modelId);
    for (let i = 0; i < manifests.length; i++) {
      const m = manifests[i]!;
      if (m.modelFp !== model.fingerprint)
        throw new ModelMismatch(
          `merge: state ${m.key} belongs to another model build (fingerprint ${m.modelFp.slice(0, 12)}…, loaded ${model.fingerprint.slice(0, 12)}…).`,
        );
      if (i > 0 && !extendsTokens(m.tokens, manifests[i - 1]!.tokens)) {
        throw new InvalidInput(
          `merge: the keys are not a chain: state ${i} (${m.key}, ${m.tokens.length} tokens) does not begin with the tokens of state ${i - 1} (${manifests[i - 1]!.key}). Give the keys oldest first.`,
          { index: i },
        );
      }
    }
    throwIfAborted(ro.signal);
    const { state } = await this.store.getState(last.key);
    throwIfAborted(ro.signal);
    // The last step that may be cancelled: from here on the merge is written.
    const manifest = await this.store.putState({
      state,
      modelId: model.id,
      modelFp: model.fingerprint,
      key: last.key,
      parent: null,
      receipt: null,
      label: last.label,
    });
    const receipt = await this.makeReceipt(
      'merge',
      model,
      [...keys],
      0,
      last.key,
      await this.digestOfState(manifest),
      0,
      state.tokens.length,
      await this.receiptHash(last.key),
    );
    await this.record(last.key, receipt);
    const released: string[] = [];
    const keptPinned: string[] = [];
    let blobsFreed = 0;
    let bytesFreed = 0;
    for (const m of manifests) {
      if (m.key === last.key || released.includes(m.key) || keptPinned.includes(m.key)) continue;
      if (m.pinned) {
        keptPinned.push(m.key);
        continue;
      }
      const r = await this.store.delete(m.key);
      this.receipts.delete(m.key);
      released.push(m.key);
      blobsFreed += r.blobsFreed;
      bytesFreed += r.bytesFreed;
    }
    return { newStateKey: last.key, tokens: state.tokens.length, bytes: manifest.bytes, receipt, released, keptPinned, blobsFreed, bytesFreed };
  }

  /**
   * A fresh state from the kept part of a long one (system prompt + recent
   * window), by prefilling those tokens again: past the first part, the kept
   * tokens sit at new positions, so their KV must be recomputed. The first
   * part is a prefix of the old state, so it comes from the store.
   */
  async compact(req: CompactRequest, ro: RunOptions = {}): Promise<CompactResult> {
    const t0 = now();
    const base = await this.store.getManifest(req?.stateKey);
    if (!base) throw new StateNotFound(`No stored state has the key ${req?.stateKey}.`, { key: req?.stateKey });
    const model = await this.modelFor(base.modelId);
    if (base.modelFp !== model.fingerprint) throw new ModelMismatch(`State ${base.key} belongs to another build of ${base.modelId}.`);
    const n = base.tokens.length;
    const { first, last } = keepOf(req.keep, model.maxTokens);
    const kept = first + last >= n ? [...base.tokens] : [...base.tokens.slice(0, first), ...base.tokens.slice(n - last)];
    if (kept.length > model.maxTokens)
      throw new ContextOverflow(`compact: keeping ${kept.length} tokens still exceeds ${model.id}'s ${model.maxTokens}. Keep fewer.`, {
        limit: model.maxTokens,
        wanted: kept.length,
      });
    const stepsFolded = await this.chainLength(base);
    const b = await this.build(model, kept, ro, req.label);
    const prev = await this.receiptHash(base.key);
    const receipt = await this.makeReceipt('compact', model, [base.key], 0, b.key, await this.digestOfState(b.manifest), b.processed, b.reused, prev);
    if (!b.existed) await this.record(b.key, receipt);
    return {
      newStateKey: b.key,
      stepsFolded,
      tokens: kept.length,
      tokensDropped: n - kept.length,
      reused: b.reused,
      processed: b.processed,
      receipt,
      timings: { totalMs: now() - t0, prefillMs: b.prefillMs },
    };
  }

  /** How many states lead to this one by parent links (itself included). */
  private async chainLength(m: Manifest): Promise<number> {
    let steps = 1;
    const seen = new Set([m.key]);
    let p = m.parent;
    while (p && !seen.has(p)) {
      seen.add(p);
      const pm = await this.store.getManifest(p);
      if (!pm) break;
      steps++;
      p = pm.parent;
    }
    return steps;
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
      ...(m.damaged ? { damaged: { reason: m.damaged.reason, blocks: m.damaged.blocks.length } } : {}),
    };
  }

  private async makeReceipt(
    op: Receipt['op'],
    model: StateModel,
    inputs: string[],
    deltaTokens: number,
    outKey: string,
    digest: string,
    processed: number,
    reused: number,
    prev: string | null,
  ): Promise<SignedReceipt> {
    const r: Receipt = {
      op,
      model_fp: model.fingerprint,
      input_keys: inputs,
      delta_tokens: deltaTokens,
      output_key: outKey,
      blob_digest: digest,
      tokens_processed: processed,
      tokens_reused: reused,
      prev,
    };
    return signReceipt(r);
  }

  /** The receipt that made a state: kept in memory and in its manifest. */
  private async record(key: string, receipt: SignedReceipt): Promise<void> {
    this.receipts.set(key, receipt);
    await this.store.setReceipt(key, receipt);
  }

  private async receiptHash(key: string): Promise<string | null> {
    return this.receipts.get(key)?.hash ?? (await this.store.getManifest(key))?.receipt ?? null;
  }

  /**
   * blob_digest of a state: sha256 of the JSON list of the digests of its
   * blocks as written when it was made (full 16-token blocks, then the tail).
   * A tail may later be shared with a longer state's block (shared-tails.ts);
   * the digest names the state's own cut, so it does not change when that happens.
   */
  private async digestOfState(m: Manifest): Promise<string> {
    if (!m.blocks.some((b) => b.blobTokens !== undefined)) return blobDigest(m.blocks.map((b) => b.digest));
    if (m.receiptJson) {
      const r = JSON.parse(m.receiptJson) as Receipt;
      if (r.output_key === m.key) return r.blob_digest;
    }
    // No receipt to read it from: recut the decoded state as it would be written.
    const { state } = await this.store.getState(m.key);
    if (m.codec !== 'fp32') return blobDigest(m.blocks.map((b) => b.digest));
    const ds: string[] = [];
    for (const blk of cutBlocks(state)) ds.push(await digestOf(bytesOf(blk.data)));
    return blobDigest(ds);
  }
}

interface Built {
  key: string;
  manifest: Manifest;
  reused: number;
  processed: number;
  /** The stored state the computation started from, if one. */
  prefixKey?: string;
  /** The state was already stored: nothing was computed or written. */
  existed: boolean;
  lookupMs: number;
  prefillMs: number;
  storeMs: number;
}

function extendsTokens(longer: number[], shorter: number[]): boolean {
  if (longer.length < shorter.length) return false;
  for (let i = 0; i < shorter.length; i++) if (longer[i] !== shorter[i]) return false;
  return true;
}

function keepOf(keep: CompactKeep | undefined, maxTokens: number): { first: number; last: number } {
  const bad = (x: unknown) => x !== undefined && !(Number.isInteger(x) && (x as number) >= 0);
  if (keep !== undefined && (typeof keep !== 'object' || keep === null)) throw new InvalidInput('compact: keep is { firstTokens?, lastTokens? }');
  if (bad(keep?.firstTokens) || bad(keep?.lastTokens)) throw new InvalidInput('compact: keep.firstTokens and keep.lastTokens are whole numbers ≥ 0');
  let first = keep?.firstTokens ?? 0;
  let last = keep?.lastTokens ?? 0;
  if (keep?.firstTokens === undefined && keep?.lastTokens === undefined) {
    if (!Number.isFinite(maxTokens))
      throw new InvalidInput('compact: this model has no context limit; say what to keep with keep: { firstTokens, lastTokens }');
    first = 0;
    last = Math.floor(maxTokens / 2);
  }
  if (first + last === 0) throw new InvalidInput('compact: keep at least one token');
  return { first, last };
}

/** Reports prefill progress over the whole text, counting reused tokens as done. */
function progressOffset(ro: RunOptions, offset: number, total: number): RunOptions {
  return {
    ...ro,
    onProgress: ro.onProgress ? (p) => ro.onProgress!({ done: offset + p.done, total }) : undefined,
  };
}

/** A Mamba state keeps its last logits (see ModelState.logits); a GPT-2 one recomputes them from one token. */
function keepLogits(state: ModelState, logits: Float32Array): void {
  if (state.arch === 'mamba') state.logits = logits;
}
