import { InvalidInput, ModelNotLoaded } from '../core/errors.ts';
import type { StateModel } from '../models/types.ts';
import { isPersisted, originEstimate, requestPersistence } from '../store/quota.ts';
import type { StateStore } from '../store/store.ts';
import type { CallOptions, FileProgress, Health, LoadModelRequest, ModelInfo, Statecart } from './api.ts';
import { exportCartridge, importCartridge } from './cartridges.ts';
import { chooseCodec, codecChooser } from './codec-optimizer.ts';
import { Engine } from './engine.ts';

/** Loads models for the engine: the browser's worker loads them with onnxruntime-web, Node tests with onnxruntime-node. */
export interface ModelHost {
  load(req: LoadModelRequest, onProgress?: (p: FileProgress) => void, signal?: AbortSignal): Promise<StateModel>;
  /** What health() reports about the runtime. */
  environment(): { crossOriginIsolated: boolean; threads: number };
}

/**
 * statecart in the same thread: the engine, the store and a model host behind
 * the one Statecart interface. The worker runs one of these; Node and the
 * tests use it directly.
 */
export class LocalStatecart implements Statecart {
  readonly engine: Engine;
  private current: { model: StateModel; info: ModelInfo } | null = null;
  private loading: Promise<unknown> | null = null;

  constructor(
    readonly store: StateStore,
    private readonly host: ModelHost,
  ) {
    this.engine = new Engine(store, (id) => this.getModel(id));
  }

  /** The loaded model, or the one asked for (loaded now). */
  async getModel(id?: string): Promise<StateModel> {
    if (this.loading) await this.loading.catch(() => undefined);
    if (this.current && (!id || id === this.current.model.id)) return this.current.model;
    if (!id) throw new ModelNotLoaded({ reason: 'No model is loaded: call loadModel({ model: "tiny-gpt2" }) first.' });
    await this.loadModel({ model: id });
    return this.current!.model;
  }

  get model(): StateModel | null {
    return this.current?.model ?? null;
  }

  async loadModel(req: LoadModelRequest, opts: { signal?: AbortSignal; onProgress?: (p: FileProgress) => void } = {}): Promise<ModelInfo> {
    if (!req || typeof req.model !== 'string' || !req.model) throw new InvalidInput('loadModel: give { model: id }');
    const cur = this.current;
    if (
      cur &&
      cur.model.id === req.model &&
      (!req.device || req.device === 'auto' || req.device === cur.model.device) &&
      (!req.dtype || req.dtype === cur.model.identity.dtype)
    )
      return cur.info;
    const t0 = performance.now();
    const p = this.host.load(req, opts.onProgress, opts.signal);
    this.loading = p;
    try {
      const model = await p;
      if (this.current) await this.current.model.dispose().catch(() => undefined);
      const info: ModelInfo = {
        id: model.id,
        arch: model.arch,
        sliceable: model.sliceable,
        device: model.device,
        adapter: model.adapter,
        deviceReason: model.deviceReason,
        fingerprint: model.fingerprint,
        dtype: model.identity.dtype,
        maxTokens: model.maxTokens,
        loadMs: performance.now() - t0,
      };
      this.current = { model, info };
      return info;
    } finally {
      if (this.loading === p) this.loading = null;
    }
  }

  createState: Statecart['createState'] = (req, o) => this.engine.createState(req, runOptions(o));
  infer: Statecart['infer'] = (req, o) => this.engine.infer(req, runOptions(o));
  runUncached: Statecart['runUncached'] = (req, o) => this.engine.runUncached(req, runOptions(o));
  merge: Statecart['merge'] = (req, o) => this.engine.merge(req, runOptions(o));
  compact: Statecart['compact'] = (req, o) => this.engine.compact(req, runOptions(o));
  getState: Statecart['getState'] = (req) => this.engine.getState(keyOf(req, 'getState'));
  listStates: Statecart['listStates'] = () => this.engine.listStates();
  deleteState: Statecart['deleteState'] = (req) => this.engine.deleteState(keyOf(req, 'deleteState'));
  pinState: Statecart['pinState'] = (req) => this.store.setPinned(keyOf(req, 'pinState'), req.pinned ?? true);
  receipt: Statecart['receipt'] = (req) => this.engine.receiptOf(keyOf(req, 'receipt'));
  verifyState: Statecart['verifyState'] = (req) => this.store.verify(keyOf(req, 'verifyState'));
  tokenize: Statecart['tokenize'] = async (req) => (await this.getModel()).tokenize(req?.text ?? '');
  decode: Statecart['decode'] = async (req) => (await this.getModel()).decode(req?.tokens ?? []);
  chooseCodec: Statecart['chooseCodec'] = (req) =>
    chooseCodec({ store: this.store, getModel: (id) => this.getModel(id) }, keyOf(req, 'chooseCodec'), req.constraints ?? {});
  setCodecPolicy: Statecart['setCodecPolicy'] = async (req) =>
    this.store.setCodecPolicy(
      req,
      codecChooser((id) => this.getModel(id)),
    );
  exportCartridge: Statecart['exportCartridge'] = async (req) => {
    const { stateKey, ...o } = req ?? ({} as { stateKey: string });
    return (await exportCartridge({ store: this.store, getModel: (id) => this.getModel(id) }, keyOf({ stateKey }, 'exportCartridge'), o)).blob;
  };
  importCartridge: Statecart['importCartridge'] = (req, o) => {
    if (!req || req.source === undefined || req.source === null) throw new InvalidInput('importCartridge: give { source } (bytes, a Blob or File, or a URL)');
    return importCartridge({ store: this.store, getModel: (id) => this.getModel(id) }, req.source, { signal: o?.signal });
  };
  evict: Statecart['evict'] = (req) => this.store.evict(req);
  setBudget: Statecart['setBudget'] = (req) => this.store.setBudget(req?.bytes ?? null);
  storageInfo: Statecart['storageInfo'] = () => this.store.storageInfo();
  requestPersistence: Statecart['requestPersistence'] = () => requestPersistence();
  checkStore: Statecart['checkStore'] = () => this.store.repair();
  clearStore: Statecart['clearStore'] = () => this.store.clear();
  flush: Statecart['flush'] = () => this.store.flush();

  health: Statecart['health'] = async (): Promise<Health> => {
    const [u, est, persisted] = await Promise.all([this.store.usage(), originEstimate(), isPersisted()]);
    const m = this.current?.model;
    const env = this.host.environment();
    const st = this.store.stats();
    return {
      device: m?.device ?? null,
      adapter: m?.adapter ?? null,
      deviceReason: m?.deviceReason ?? null,
      model: m?.id ?? null,
      modelFp: m?.fingerprint ?? null,
      // (a state whose write is queued is in memory too)
      statesHot: st.statesHot + st.writes.queued,
      statesStored: u.states,
      bytesStored: u.bytes,
      logicalBytes: u.logicalBytes,
      blobReads: st.blobReads,
      quota: est,
      crossOriginIsolated: env.crossOriginIsolated,
      threads: env.threads,
      persisted,
      budgetBytes: this.store.budgetBytes,
      statesDamaged: u.damaged,
      statesPinned: u.pinned,
      writes: st.writes,
    };
  };
}

function runOptions(o?: CallOptions): { signal?: AbortSignal; onProgress?: CallOptions['onProgress']; durable?: boolean } {
  return { ...(o?.signal ? { signal: o.signal } : {}), ...(o?.onProgress ? { onProgress: o.onProgress } : {}), ...(o?.durable ? { durable: true } : {}) };
}

function keyOf(req: { stateKey?: unknown } | undefined, what: string): string {
  if (!req || typeof req.stateKey !== 'string') throw new InvalidInput(`${what}: give { stateKey }`);
  return req.stateKey;
}
