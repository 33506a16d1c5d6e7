import type { ModelRun, ModelState, RunOptions, StateModel } from '../models/types.ts';
import type { PutRequest, PutResult, StateStore } from '../store/store.ts';
import type { Manifest } from '../store/records.ts';
import { KeyChain } from '../core/key-chain.ts';
import { ContextOverflow, CorruptBlob, InvalidInput, ModelMismatch, QuotaExceeded, StateNotFound, throwIfAborted } from '../core/errors.ts';
import { blobDigest, signReceipt, type Receipt, type SignedReceipt } from '../core/receipts.ts';
import { truncateState } from '../core/state.ts';
import { makeSampler, validateSampling } from './sampling.ts';
import { findPrefix, refusal, type Found, type Passed } from './lookup.ts';
import { explainReuse } from './explain.ts';
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
  Reuse,
  StateInfo,
} from './api.ts';
import { DEFAULT_CHECKPOINT_EVERY } from './api.ts';

const now = () => performance.now();

/**
 * The State Pack protocol, written against a StateModel and a StateStore only:
 * nothing here knows about workers, the DOM or a particular runtime. A
 * request's state key travels as a value (a KeyChain made once per request and
 * handed to the store), so each token is hashed once per call.
 */
export class Engine {
  /** Checkpoint spacing of Mamba prefills when a request does not say (0: none). */
  checkpointEvery: number;

  constructor(
    readonly store: StateStore,
    private getModel: (id?: string) => Promise<StateModel>,
    opts: { checkpointEvery?: number } = {},
  ) {
    this.checkpointEvery = checkpointSpacing(opts.checkpointEvery, DEFAULT_CHECKPOINT_EVERY, 'Engine');
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
  private async build(
    model: StateModel,
    tokens: number[],
    ro: WriteOptions,
    op: 'create' | 'compact',
    label?: string,
    input?: Manifest,
    every = this.checkpointEvery,
  ): Promise<Built> {
    const chain = await KeyChain.create(model.fingerprint, tokens);
    const n = tokens.length;
    // Every prefix key, shortest first: the lookup below needs them all, and
    // asked in this order each token is hashed once.
    const key = chain.keysFrom(1)[n - 1]!;
    const tl = now();
    const found = await this.store.lookup(key);
    const existing = found?.manifest;
    // A stored state is served only when its manifest names exactly these tokens, for this model, undamaged.
    const refused = existing ? refusal(existing, model, tokens, n) : null;
    if (existing && !refused) {
      this.store.noteHit(key);
      const reuse: Reuse = {
        fromKey: key,
        tier: found.hot ? 'hot' : 'stored',
        tokensReused: n,
        stoppedAt: n,
        cause: 'whole',
        reason: `all ${n} tokens were already stored (state ${shortKey(key)}, ${found.hot ? 'hot' : 'stored'} tier)`,
      };
      return {
        key,
        manifest: existing,
        reused: n,
        processed: 0,
        existed: true,
        lookupMs: now() - tl,
        prefillMs: 0,
        storeMs: 0,
        receipt: null,
        reuse,
        checkpoints: [],
      };
    }
    // (the whole text was just looked up: absent, or refused)
    const prefix = await this.findPrefix(model, chain, 1, undefined, n - 1);
    const passed = refused ? [refused, ...prefix.passed] : prefix.passed;
    if (prefix.manifest) this.store.noteHit(prefix.manifest.key);
    const lookupMs = now() - tl;
    throwIfAborted(ro.signal);
    const tp = now();
    // States to take on the way: checkpoints, and refused states this prefill passes through (to heal them).
    const plan = takePlan(model, prefix.reused, n, every, passed, false);
    // Explained against the store as the lookup saw it, before this request writes.
    const reuse = await explainReuse({
      store: this.store,
      model,
      chain,
      target: n,
      reused: prefix.reused,
      fromKey: prefix.manifest?.key ?? null,
      tier: prefix.reused > 0 ? (prefix.tier ?? 'stored') : 'recomputed',
      passed,
      checkpointEvery: model.sliceable ? 0 : every,
      healed: new Set([...[...plan.heal.values()].map((p) => p.key), ...(existing ? [key] : [])]),
    });
    throwIfAborted(ro.signal);
    const run = model.open(prefix.state);
    let state: ModelState;
    let taken: Map<number, ModelState>;
    try {
      const r = await feedTaking(model, run, tokens, prefix.reused, n, plan.stops, ro);
      taken = r.taken;
      state = await run.state();
      if (model.keepsLastLogits) state.logits = r.logits;
    } finally {
      run.close();
    }
    const prefillMs = now() - tp;
    throwIfAborted(ro.signal);
    const ts = now();
    const inputs = input ? [input.key] : prefix.manifest ? [prefix.manifest.key] : [];
    const prev = (input ? input.receipt : prefix.manifest?.receipt) ?? null;
    const processed = n - prefix.reused;
    const res = await this.save(
      {
        state,
        chain,
        modelId: model.id,
        modelFp: model.fingerprint,
        provenance: model.provenance,
        arch: model.arch,
        parent: prefix.manifest ?? null,
        // (its first tokens are that manifest's numbers as read: lossy blocks can be taken by reference too)
        restoredFromParent: Boolean(prefix.manifest),
        label: label ?? (refused?.kind === 'damaged' ? existing?.label : undefined),
        receipt: (digest: string) => this.makeReceipt(op, model, inputs, op === 'compact' ? 0 : processed, key, digest, processed, prefix.reused, prev),
        // (a refused state under this key is written over)
        replace: Boolean(existing),
      },
      ro,
    );
    const extra = await this.saveTaken(model, chain, state, taken, plan, prefix.reused, prefix.manifest ?? null, inputs, prev, ro);
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
      reuse,
      checkpoints: extra.checkpoints,
    };
  }

  /**
   * Stores what a prefill took on its way, after the state it was asked for:
   * checkpoints (best effort: one that does not fit is left out) and the
   * states of refused manifests it passed through (written over them). Their
   * writes go behind the call too, queued after the state's own, and a
   * durable call waits for them as well.
   */
  private async saveTaken(
    model: StateModel,
    chain: KeyChain,
    final: ModelState,
    taken: Map<number, ModelState>,
    plan: TakePlan,
    reused: number,
    parent: Manifest | null,
    inputs: string[],
    prev: string | null,
    ro: WriteOptions,
    op: 'create' | 'compact' | 'infer' = 'create',
  ): Promise<{ checkpoints: string[]; healed: string[] }> {
    const checkpoints: string[] = [];
    const healed: string[] = [];
    let last = parent;
    for (const at of plan.all) {
      const st = taken.get(at) ?? (model.sliceable ? truncateState(final, at) : undefined);
      if (!st) continue;
      const c = chain.prefix(at);
      const k = c.key();
      const heal = plan.heal.get(at);
      const checkpoint = plan.checkpoints.has(at);
      // A damaged state is the same state once recomputed: it keeps its receipt, label and parent, so chains through it stay valid.
      const was = heal?.kind === 'damaged' ? heal.manifest : null;
      const wasParent = was?.parent ? ((await this.store.getManifest(was.parent)) ?? null) : null;
      try {
        const r = await this.save(
          {
            state: st,
            chain: c,
            modelId: model.id,
            modelFp: model.fingerprint,
            provenance: model.provenance,
            arch: model.arch,
            parent: was ? wasParent : last,
            ...(was?.label ? { label: was.label } : {}),
            ...(was
              ? { keepReceipt: { hash: was.receipt, ...(was.receiptJson ? { json: was.receiptJson } : {}) } }
              : {
                  receipt: (digest: string) =>
                    this.makeReceipt(op === 'compact' ? 'create' : op, model, inputs, at - reused, k, digest, at - reused, reused, prev),
                }),
            ...(checkpoint || was?.checkpoint ? { checkpoint: true } : {}),
            // A checkpoint whose queued write finds the store full is dropped, not reported (as below).
            ...(heal ? {} : { bestEffort: true }),
            replace: Boolean(heal),
          },
          ro,
        );
        if (checkpoint) {
          checkpoints.push(k);
          last = r.manifest;
        }
        if (heal) healed.push(heal.key);
      } catch (e) {
        // A checkpoint is an optimisation: a full store does not fail the request.
        if (!(e instanceof QuotaExceeded) || heal) throw e;
      }
    }
    return { checkpoints, healed };
  }

  async createState(req: CreateStateRequest, ro: WriteOptions = {}): Promise<CreateStateResult> {
    const t0 = now();
    const model = await this.getModel(req.model);
    const tokens = await this.tokensOf(model, req.text, req.tokens, 'createState');
    if (tokens.length === 0) throw new InvalidInput('createState: the text has no tokens; a state holds at least one token.');
    if (tokens.length > model.maxTokens) throw new ContextOverflow({ modelId: model.id, limit: model.maxTokens, wanted: tokens.length, op: 'createState' });
    const every = checkpointSpacing(req.checkpointEvery, this.checkpointEvery, 'createState');
    const b = await this.build(model, tokens, ro, 'create', req.label, undefined, every);
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
      reuse: b.reuse,
      checkpoints: b.checkpoints,
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
    const every = checkpointSpacing(req.checkpointEvery, this.checkpointEvery, 'infer');
    const chain = await KeyChain.create(model.fingerprint, [...base.tokens, ...delta]);
    // (a copy: the chain grows with the output below)
    const full = [...chain.tokens];
    // A verified hit: the manifest's token ids must be the ones its key names.
    // If not (edited, or damaged), there is no telling which tokens the key
    // stands for, so nothing can be recomputed: it is removed, never served.
    const named = n0 > 0 ? chain.keyAt(n0) : null;
    if (named !== base.key) {
      await this.store.delete(base.key);
      throw new CorruptBlob({
        problem: `the manifest stored under ${base.key} names ${n0} token ids whose key is ${named ?? '(none: no tokens)'}, not ${base.key}: it is not the state of that key (an edited or damaged manifest). It was removed without being served; create the state again with createState.`,
      });
    }
    // Restore: the longest stored prefix of state + delta (at least the state itself, when it is intact).
    const found = await this.findPrefix(model, chain, n0, base);
    if (found.manifest) this.store.noteHit(found.manifest.key);
    let tier: InferResult['tier'] = found.reused > 0 ? (found.tier ?? 'stored') : 'recomputed';
    const restoreMs = now() - tr;
    throwIfAborted(ro.signal);
    const tp = now();
    let reused = found.reused;
    let processed = 0;
    // (the state itself, when it could not be restored, is recomputed from its tokens and stored again below, which heals it)
    const plan = takePlan(model, reused, full.length, every, found.passed, maxNew > 0);
    // Explained against the store as the lookup saw it, before this request writes.
    const refusedEnd = maxNew === 0 && found.passed.some((p) => p.at === full.length);
    const reuse = await explainReuse({
      store: this.store,
      model,
      chain,
      target: full.length,
      reused: found.reused,
      fromKey: found.reused > 0 ? (found.manifest?.key ?? null) : null,
      tier: found.reused > 0 ? (found.tier ?? 'stored') : 'recomputed',
      passed: found.passed,
      checkpointEvery: model.sliceable ? 0 : every,
      healed: new Set([...plan.heal.values(), ...found.passed.filter((p) => refusedEnd && p.at === full.length)].map((p) => p.key)),
    });
    throwIfAborted(ro.signal);
    let taken = new Map<number, ModelState>();
    let run = model.open(found.state);
    try {
      let logits: Float32Array | undefined;
      if (reused < full.length) {
        const r = await feedTaking(model, run, full, reused, full.length, plan.stops, ro);
        logits = r.logits;
        taken = r.taken;
        processed += full.length - reused;
      } else {
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
          provenance: model.provenance,
          arch: model.arch,
          parent: found.manifest && found.reused >= n0 ? found.manifest : base,
          // (its first tokens are that manifest's numbers as read: lossy blocks can be taken by reference too)
          restoredFromParent: Boolean(found.manifest && found.reused >= n0),
          receipt: (digest) => this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, digest, processed, reused, prev),
          // (a refused state under this key is written over)
          ...(refusedEnd ? { replace: true } : {}),
        },
        ro,
      );
      const extra = await this.saveTaken(
        model,
        chain,
        state,
        taken,
        plan,
        found.reused,
        found.reused >= n0 ? (found.manifest ?? base) : base,
        [req.stateKey],
        prev,
        ro,
        'infer',
      );
      // Already stored (the same tokens came out before): this call's receipt is made, not stored.
      const receipt =
        res.receipt ?? (await this.makeReceipt('infer', model, [req.stateKey], delta.length, newKey, await stateDigest(res.manifest), processed, reused, prev));
      const storeMs = now() - ts;
      // (not full.length: `full` is the chain's own list, which the output was appended to)
      const naive = n0 + delta.length + maxNew;
      return {
        newStateKey: newKey,
        // (transformers.js refuses to decode an empty list)
        output: out.length ? model.decode(out) : '',
        outputTokens: out,
        deltaTokens: delta.length,
        savings: { tokensReused: reused, tokensProcessed: processed, naiveTokens: naive, fraction: naive ? 1 - processed / naive : 0 },
        receipt,
        tier,
        reuse: { ...reuse, tokensReused: reused },
        checkpoints: extra.checkpoints,
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
        provenance: model.provenance,
        arch: model.arch,
        parent: null,
        label: last.label,
        pinned: last.pinned,
        receipt: (digest) => this.makeReceipt('merge', model, [...keys], 0, last.key, digest, 0, state.tokens.length, last.receipt ?? null),
        replace: true,
      },
      // The intermediates are deleted only once the merged state has landed.
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
      reuse: b.reuse,
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
    const [hits] = await this.store.hits([key]);
    return this.info({ ...m, hits });
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
      ...(m.checkpoint ? { checkpoint: true as const } : {}),
      hits: m.hits ?? 0,
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
  reuse: Reuse;
  checkpoints: string[];
}

/**
 * blob_digest of a stored state: as written with it; for a state written
 * before manifests kept it, from the receipt that made it, else from its
 * blocks' digests (the same list, when no tail of it was shared since).
 */
async function stateDigest(m: Manifest): Promise<string> {
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

function checkpointSpacing(v: unknown, fallback: number, what: string): number {
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || (v as number) < 0) throw new InvalidInput(`${what}: checkpointEvery is a whole number of tokens ≥ 0 (0: no checkpoints)`);
  return v as number;
}

const shortKey = (k: string): string => k.replace(/^sha256:/, '').slice(0, 12);

/** What a prefill from `from` to `to` keeps on its way, besides the state at `to`. */
interface TakePlan {
  /** Positions whose states are stored after the request's own, ascending. */
  all: number[];
  /** Positions the run must stop at to read the state (a fixed-size state cannot be cut from the final one). */
  stops: number[];
  /** Checkpoint positions: every multiple of K passed (models that are not sliceable). */
  checkpoints: Set<number>;
  /** Refused stored states this prefill passes through: stored again from the request's tokens. */
  heal: Map<number, Passed>;
}

function takePlan(model: StateModel, from: number, to: number, every: number, passed: Passed[], includeEnd: boolean): TakePlan {
  const checkpoints = new Set<number>();
  // A KV model's 16-token blocks already serve any shared prefix: no checkpoints.
  if (!model.sliceable && every > 0) for (let at = (Math.floor(from / every) + 1) * every; at < to; at += every) checkpoints.add(at);
  const heal = new Map<number, Passed>();
  for (const p of passed) if (p.at > from && (p.at < to || (includeEnd && p.at === to))) heal.set(p.at, p);
  const all = [...new Set([...checkpoints, ...heal.keys()])].sort((a, b) => a - b);
  return { all, stops: model.sliceable ? [] : all, checkpoints, heal };
}

/**
 * Runs tokens [from, to) on `run`, stopping at each of `stops` (positions in
 * (from, to]) to read the state there. Reads progress over the whole text.
 */
async function feedTaking(
  model: StateModel,
  run: ModelRun,
  tokens: readonly number[],
  from: number,
  to: number,
  stops: number[],
  ro: RunOptions,
): Promise<{ logits: Float32Array; taken: Map<number, ModelState> }> {
  const taken = new Map<number, ModelState>();
  let pos = from;
  let logits: Float32Array | undefined;
  for (const at of [...stops.filter((x) => x > from && x < to), to]) {
    logits = await run.feed(tokens.slice(pos, at), progressOffset(ro, pos, tokens.length));
    pos = at;
    if (stops.includes(at)) {
      const st = await run.state();
      if (model.keepsLastLogits) st.logits = logits;
      taken.set(at, st);
    }
  }
  return { logits: logits!, taken };
}
