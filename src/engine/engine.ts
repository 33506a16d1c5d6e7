import type { ModelState, RunOptions, StateModel } from '../models/types.ts';
import type { PutRequest, PutResult, StateStore } from '../store/store.ts';
import type { Manifest } from '../store/records.ts';
import { KeyChain } from '../core/key-chain.ts';
import { ContextOverflow, InvalidInput, ModelMismatch, StateNotFound, throwIfAborted } from '../core/errors.ts';
import { blobDigest, signReceipt, type Receipt, type SignedReceipt } from '../core/receipts.ts';
import { truncateState } from '../core/state.ts';
import { makeSampler, validateSampling } from './sampling.ts';
import { findPrefix, type Found } from './lookup.ts';
import type {
  CompactKeep,
  CompactRequest,
  CompactResult,
  CreateStateRequest,
  CreateStateResult,
  InferRequest,
  InferResult,
  UncachedRequest,
  UncachedResult,
  MergeRequest,
  MergeResult,
  StateInfo,
} from './api.ts';

const now = () => performance.now();

/**
 * The State Pack protocol, written against a StateModel and a StateStore only:
 * nothing here knows about workers, the DOM or a particular runtime. A
 * request's state key travels as a value (a KeyChain made once per request and
 * handed to the store), so each token is hashed once per call.
 */
export class Engine {
  constructor(
    readonly store: StateStore,
    private getModel: (id?: string) => Promise<StateModel>,
  ) {}

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

  /** The longest stored prefix of the chain's tokens (src/engine/lookup.ts). */
  findPrefix(model: StateModel, chain: KeyChain, minLen = 1, known?: Manifest, maxLen = chain.length): Promise<Found> {
    return findPrefix(this.store, model, chain, minLen, known, maxLen);
  }

  /**
   * Every state the protocol makes goes to the store through here. Its write
   * goes behind the call (src/store/write-queue.ts): this resolves once the
   * state is in memory and its write is queued, or, for a durable call, once
   * the write has landed (rejecting with the write's error).
   */
  private async save(input: PutRequest, o: WriteOptions): Promise<PutResult> {
    const q = await this.store.queueState(input);
    return o.durable ? q.landed() : q;
  }

  /**
   * Computes and stores the state of `tokens`, reusing the longest stored
   * prefix. Nothing is written when the signal fires before the store write.
   */
  private async build(model: StateModel, tokens: number[], ro: WriteOptions, op: 'create' | 'compact', label?: string, input?: Manifest): Promise<Built> {
    const chain = await KeyChain.create(model.fingerprint, tokens);
    // Every prefix key, shortest first: the lookup below needs them all, and
    // asked in this order each token is hashed once.
    const key = chain.keysFrom(1)[tokens.length - 1]!;
    const tl = now();
    const existing = (await this.store.lookup(key))?.manifest;
    // A damaged state is built again (which stores it whole and clears the mark).
    if (existing && existing.modelFp === model.fingerprint && !existing.damaged) {
      return { key, manifest: existing, reused: tokens.length, processed: 0, existed: true, lookupMs: now() - tl, prefillMs: 0, storeMs: 0, receipt: null };
    }
    // (the whole text was just looked up: absent, or damaged)
    const prefix = await this.findPrefix(model, chain, 1, undefined, tokens.length - 1);
    const lookupMs = now() - tl;
    throwIfAborted(ro.signal);
    const tp = now();
    const rest = tokens.slice(prefix.reused);
    const run = model.open(prefix.state);
    let state: ModelState;
    try {
      const logits = await run.feed(rest, progressOffset(ro, prefix.reused, tokens.length));
      state = await run.state();
      if (model.keepsLastLogits) state.logits = logits;
    } finally {
      run.close();
    }
    const prefillMs = now() - tp;
    throwIfAborted(ro.signal);
    const ts = now();
    const inputs = input ? [input.key] : prefix.manifest ? [prefix.manifest.key] : [];
    const prev = (input ? input.receipt : prefix.manifest?.receipt) ?? null;
    const processed = rest.length;
    const res = await this.save(
      {
        state,
        chain,
        modelId: model.id,
        modelFp: model.fingerprint,
        arch: model.arch,
        parent: prefix.manifest ?? null,
        restoredFromParent: Boolean(prefix.manifest),
        label: label ?? existing?.label,
        receipt: (digest: string) => this.makeReceipt(op, model, inputs, op === 'compact' ? 0 : processed, key, digest, processed, prefix.reused, prev),
        // (a damaged state is written again whole)
        replace: Boolean(existing),
      },
      ro,
    );
    return {
      key,
      manifest: res.manifest,
      reused: prefix.reused,
      processed,
      existed: !res.written,
      lookupMs,
      prefillMs,
      storeMs: now() - ts,
      receipt: res.receipt,
    };
  }

  async createState(req: CreateStateRequest, ro: WriteOptions = {}): Promise<CreateStateResult> {
    const t0 = now();
    const model = await this.getModel(req.model);
    const tokens = await this.tokensOf(model, req.text, req.tokens, 'createState');
    if (tokens.length === 0) throw new InvalidInput('createState: the text has no tokens; a state holds at least one token.');
    if (tokens.length > model.maxTokens) throw new ContextOverflow({ modelId: model.id, limit: model.maxTokens, wanted: tokens.length, op: 'createState' });
    const b = await this.build(model, tokens, ro, 'create', req.label);
    // A hit makes nothing: its receipt says so (nothing processed, the state
    // itself as input) and chains to the receipt that made the state.
    const receipt =
      b.receipt ?? (await this.makeReceipt('create', model, [b.key], 0, b.key, await stateDigest(b.manifest), 0, tokens.length, b.manifest.receipt ?? null));
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

  async infer(req: InferRequest, ro: WriteOptions = {}): Promise<InferResult> {
    const t0 = now();
    validateSampling(req?.sampling);
    const maxNew = req?.maxNewTokens ?? 16;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InvalidInput('infer: maxNewTokens must be a whole number ≥ 0');
    const tr = now();
    const base = (await this.store.lookup(req?.stateKey))?.manifest;
    if (!base) throw new StateNotFound(req?.stateKey);
    const model = await this.getModel(base.modelId);
    if (base.modelFp !== model.fingerprint)
      throw new ModelMismatch({ kind: 'state', key: base.key, modelId: base.modelId, stateFp: base.modelFp, loadedFp: model.fingerprint });
    const delta = await this.tokensOf(model, req.delta ?? '', req.deltaTokens, 'infer');
    const n0 = base.tokens.length;
    if (n0 + delta.length + maxNew > model.maxTokens) {
      throw new ContextOverflow({
        modelId: model.id,
        limit: model.maxTokens,
        wanted: n0 + delta.length + maxNew,
        state: n0,
        delta: delta.length,
        maxNewTokens: maxNew,
        op: 'infer',
      });
    }
    const chain = await KeyChain.create(model.fingerprint, [...base.tokens, ...delta]);
    const full = chain.tokens;
    // Restore: the longest stored prefix of state + delta (at least the state itself, when it is intact).
    const found = base.damaged ? { reused: 0 as number } : await this.findPrefix(model, chain, n0, base);
    let tier: InferResult['tier'] = found.reused > 0 ? (found.tier ?? 'stored') : 'recomputed';
    const restoreMs = now() - tr;
    throwIfAborted(ro.signal);
    const tp = now();
    let reused = found.reused;
    let processed = 0;
    let run = model.open(found.state);
    try {
      let logits: Float32Array | undefined;
      if (reused < n0) {
        // The state itself could not be restored (a damaged or missing blob): it
        // is recomputed from its tokens and stored again, which heals it.
        tier = 'recomputed';
        logits = await run.feed(base.tokens.slice(reused), progressOffset(ro, reused, full.length));
        processed += n0 - reused;
        throwIfAborted(ro.signal);
        const healed = await run.state();
        if (model.keepsLastLogits) healed.logits = logits;
        await this.save(
          {
            state: healed,
            chain: chain.prefix(n0),
            modelId: model.id,
            modelFp: model.fingerprint,
            arch: model.arch,
            parent: null,
            label: base.label,
            keepReceipt: { hash: base.receipt, ...(base.receiptJson ? { json: base.receiptJson } : {}) },
            replace: true,
          },
          ro,
        );
      }
      const pos = reused + processed;
      if (pos < full.length) {
        logits = await run.feed(full.slice(pos), progressOffset(ro, pos, full.length));
        processed += full.length - pos;
      } else if (!logits) {
        // Everything is cached, but generation needs the last position's logits.
        const kept = found.state?.logits;
        if (kept && kept.length === model.vocabSize) logits = kept;
        else if (model.sliceable && full.length > 1) {
          // A KV state cut back by one token recomputes them from that token.
          run.close();
          run = model.open(truncateState(found.state!, full.length - 1));
          logits = await run.feed([full[full.length - 1]!], ro);
          processed += 1;
          reused -= 1;
        } else {
          run.close();
          run = model.open();
          logits = await run.feed([...full], ro);
          processed = full.length;
          reused = 0;
          tier = 'recomputed';
        }
      }
      if (!logits) throw new Error('internal: no logits after restore');
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
        logits = await run.feed([tok]);
        processed++;
      }
      const generateMs = now() - tg;
      throwIfAborted(ro.signal);
      chain.append(out);
      const state = await run.state();
      if (model.keepsLastLogits) state.logits = logits;
      // storeMs: what this call waits for the store (its write is queued, not waited for, unless durable).
      const ts = now();
      const newKey = chain.key();
      const prev = base.receipt ?? null;
      const res = await this.save(
        {
          state,
          chain,
          modelId: model.id,
          modelFp: model.fingerprint,
          arch: model.arch,
          parent: found.manifest && found.reused >= n0 ? found.manifest : base,
          // (its first tokens are that manifest's numbers as read: lossy blocks can be taken by reference too)
          restoredFromParent: Boolean(found.manifest && found.reused >= n0),
          receipt: (digest) => this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, digest, processed, reused, prev),
        },
        ro,
      );
      // Already stored (the same tokens came out before): this call's receipt is made, not stored.
      const receipt =
        res.receipt ?? (await this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, await stateDigest(res.manifest), processed, reused, prev));
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
    } finally {
      run.close();
    }
  }

  /** Prefill of the whole text and generation, with no lookup, no hashing and no store. */
  async runUncached(req: UncachedRequest, ro: RunOptions = {}): Promise<UncachedResult> {
    const t0 = now();
    validateSampling(req?.sampling);
    const maxNew = req?.maxNewTokens ?? 0;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new InvalidInput('runUncached: maxNewTokens must be a whole number ≥ 0');
    const model = await this.getModel(req.model);
    const tokens = await this.tokensOf(model, req.text, req.tokens, 'runUncached');
    if (tokens.length === 0) throw new InvalidInput('runUncached: the text has no tokens');
    if (tokens.length + maxNew > model.maxTokens) throw new ContextOverflow({ modelId: model.id, limit: model.maxTokens, wanted: tokens.length + maxNew });
    const run = model.open();
    try {
      let logits = await run.feed(tokens, ro);
      const prefillMs = now() - t0;
      const tg = now();
      const sample = makeSampler(req.sampling);
      const out: number[] = [];
      for (let i = 0; i < maxNew; i++) {
        throwIfAborted(ro.signal);
        const tok = sample(logits);
        out.push(tok);
        if (i + 1 < maxNew) logits = await run.feed([tok]);
      }
      return {
        output: out.length ? model.decode(out) : '',
        outputTokens: out,
        tokensProcessed: tokens.length + Math.max(0, maxNew - 1),
        timings: { totalMs: now() - t0, prefillMs, generateMs: now() - tg },
      };
    } finally {
      run.close();
    }
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
  async merge(req: MergeRequest, ro: WriteOptions = {}): Promise<MergeResult> {
    const keys = req?.stateKeys;
    if (!Array.isArray(keys) || keys.length === 0 || keys.some((k) => typeof k !== 'string'))
      throw new InvalidInput('merge: stateKeys is a non-empty list of state keys, oldest first');
    const ms = await this.store.getManifests(keys);
    ms.forEach((m, i) => {
      if (!m) throw new StateNotFound(keys[i]!, 'merge');
    });
    const manifests = ms as Manifest[];
    const last = manifests[manifests.length - 1]!;
    const model = await this.getModel(last.modelId);
    for (let i = 0; i < manifests.length; i++) {
      const m = manifests[i]!;
      if (m.modelFp !== model.fingerprint)
        throw new ModelMismatch({ kind: 'state', key: m.key, modelId: m.modelId, stateFp: m.modelFp, loadedFp: model.fingerprint });
      if (i > 0 && !extendsTokens(m.tokens, manifests[i - 1]!.tokens)) {
        throw new InvalidInput(
          `merge: the keys are not a chain: state ${i} (${m.key}, ${m.tokens.length} tokens) does not begin with the tokens of state ${i - 1} (${manifests[i - 1]!.key}). Give the keys oldest first.`,
          { index: i },
        );
      }
    }
    throwIfAborted(ro.signal);
    const { state } = await this.store.restore(last);
    throwIfAborted(ro.signal);
    // The last step that may be cancelled: from here on the merge is written.
    const chain = await KeyChain.create(model.fingerprint, last.tokens);
    const res = await this.save(
      {
        state,
        chain,
        modelId: model.id,
        modelFp: model.fingerprint,
        arch: model.arch,
        parent: null,
        label: last.label,
        pinned: last.pinned,
        receipt: (digest) => this.makeReceipt('merge', model, [...keys], 0, last.key, digest, 0, state.tokens.length, last.receipt ?? null),
        replace: true,
        // The intermediates are deleted only once the merged state has landed.
      },
      { ...ro, durable: true },
    );
    const receipt = res.receipt!;
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
      released.push(m.key);
      blobsFreed += r.blobsFreed;
      bytesFreed += r.bytesFreed;
    }
    return { newStateKey: last.key, tokens: state.tokens.length, bytes: res.manifest.bytes, receipt, released, keptPinned, blobsFreed, bytesFreed };
  }

  /**
   * A fresh state from the kept part of a long one (system prompt + recent
   * window), by prefilling those tokens again: past the first part, the kept
   * tokens sit at new positions, so their KV must be recomputed. The first
   * part is a prefix of the old state, so it comes from the store.
   */
  async compact(req: CompactRequest, ro: WriteOptions = {}): Promise<CompactResult> {
    const t0 = now();
    const base = (await this.store.lookup(req?.stateKey))?.manifest;
    if (!base) throw new StateNotFound(req?.stateKey);
    const model = await this.getModel(base.modelId);
    if (base.modelFp !== model.fingerprint)
      throw new ModelMismatch({ kind: 'state', key: base.key, modelId: base.modelId, stateFp: base.modelFp, loadedFp: model.fingerprint });
    const n = base.tokens.length;
    const { first, last } = keepOf(req.keep, model.maxTokens);
    const kept = first + last >= n ? [...base.tokens] : [...base.tokens.slice(0, first), ...base.tokens.slice(n - last)];
    if (kept.length > model.maxTokens) throw new ContextOverflow({ modelId: model.id, limit: model.maxTokens, wanted: kept.length, op: 'compact' });
    const stepsFolded = await this.chainLength(base);
    const b = await this.build(model, kept, ro, 'compact', req.label, base);
    const receipt =
      b.receipt ?? (await this.makeReceipt('compact', model, [base.key], 0, b.key, await stateDigest(b.manifest), b.processed, b.reused, base.receipt ?? null));
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
    if (!m) throw new StateNotFound(key);
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
    return { deleted: true, ...r };
  }

  /** The receipt that made a state, as stored with it. */
  async receiptOf(key: string): Promise<SignedReceipt | null> {
    const m = await this.store.getManifest(key);
    if (!m?.receiptJson || !m.receipt) return null;
    return { receipt: JSON.parse(m.receiptJson) as Receipt, hash: m.receipt };
  }

  private info(m: Manifest): StateInfo {
    return {
      key: m.key,
      tokens: m.tokens.length,
      bytes: m.bytes,
      tier: this.store.tierOf(m.key),
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

  private makeReceipt(
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
    return signReceipt({
      op,
      model_fp: model.fingerprint,
      input_keys: inputs,
      delta_tokens: deltaTokens,
      output_key: outKey,
      blob_digest: digest,
      tokens_processed: processed,
      tokens_reused: reused,
      prev,
    });
  }
}

/** A call's run options, and whether it waits for its own write to land (src/engine/api.ts, CallOptions.durable). */
type WriteOptions = RunOptions & { durable?: boolean };

interface Built {
  key: string;
  manifest: Manifest;
  reused: number;
  processed: number;
  /** The state was already stored: nothing was computed or written. */
  existed: boolean;
  lookupMs: number;
  prefillMs: number;
  storeMs: number;
  /** The receipt written with the state (null when nothing was written). */
  receipt: SignedReceipt | null;
}

/**
 * blob_digest of a stored state: as written with it; for a state written
 * before manifests kept it, from the receipt that made it, else from its
 * blocks' digests (the same list, when no tail of it was shared since).
 */
export async function stateDigest(m: Manifest): Promise<string> {
  if (m.blobDigest) return m.blobDigest;
  if (m.receiptJson) {
    const r = JSON.parse(m.receiptJson) as Receipt;
    if (r.output_key === m.key) return r.blob_digest;
  }
  return blobDigest(m.blocks.map((b) => b.digest));
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
