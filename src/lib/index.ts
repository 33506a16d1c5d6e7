/**
 * statecart for web apps: one call starts the worker and returns a client
 * whose methods mirror the worker's, with AbortSignal and progress callbacks.
 *
 *   const sc = await createStatecart({ model: 'tiny-gpt2' });
 *   const { stateKey } = await sc.createState({ text: systemPrompt });
 *   const { output, newStateKey } = await sc.infer({ stateKey, delta: question, maxNewTokens: 32 });
 */
import * as Comlink from 'comlink';
import type { WorkerApi, InitOptions, Health, ModelInfo } from '../worker/api.ts';
import type {
  CreateStateRequest,
  CreateStateResult,
  InferRequest,
  InferResult,
  StateInfo,
  MergeRequest,
  MergeResult,
  CompactRequest,
  CompactResult,
} from '../engine/engine.ts';
import type { Progress } from '../models/types.ts';
import type { DeviceChoice } from '../worker/device.ts';
import type { SignedReceipt } from '../core/receipts.ts';
import type { ExportOptions, ImportResult } from '../engine/cartridges.ts';
import { Aborted, reviveError } from '../core/errors.ts';
import { WorkerSupervisor } from './supervisor.ts';
import type { CodecReport, CodecRow } from '../engine/codec-optimizer.ts';
import type { CodecConstraints, CodecPolicy } from '../store/manifest.ts';
import type { EvictResult, RepairReport, StorageInfo } from '../store/store.ts';
import { listenStore, type StoreEvent } from '../store/broadcast.ts';
import { requestPersistence as askPersistence } from '../store/quota.ts';
export type { CodecReport, CodecRow, CodecConstraints, CodecPolicy };
export type { EvictResult, RepairReport, StorageInfo, StoreEvent };

export * from '../core/errors.ts';
export { verifyReceipts, type Receipt, type SignedReceipt } from '../core/receipts.ts';
export type { MergeRequest, MergeResult, CompactRequest, CompactResult, CompactKeep } from '../engine/engine.ts';
export type { CreateStateRequest, CreateStateResult, InferRequest, InferResult, StateInfo, Health, ModelInfo, Progress, DeviceChoice };
export type { ExportOptions, ImportResult };
export { MODELS } from '../models/registry.ts';

export interface StatecartOptions {
  /** Model to load at start (default: none; call loadModel). */
  model?: string;
  device?: DeviceChoice;
  /** URL of the local models folder (default: `models/` next to the page). */
  modelsBase?: string | URL;
  /** URL of onnxruntime-web's wasm files (default: `ort/` next to the page). */
  ortBase?: string | URL;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
  /** Most bytes of state blobs to keep; older unpinned states are evicted to stay under it. */
  budgetBytes?: number;
  /** A worker you started yourself (it must run src/worker/worker.ts). */
  worker?: Worker;
  /** Heartbeat period and hang limit of the worker supervisor (ms). */
  heartbeatMs?: number;
  hangMs?: number;
  /** Told when a crashed or hung worker was replaced. */
  onRestart?: (reason: string, restarts: number) => void;
}

export interface CallOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface StatecartClient {
  loadModel(model: string, opts?: { device?: DeviceChoice; onProgress?: (p: { file: string; loaded: number; total: number }) => void }): Promise<ModelInfo>;
  createState(req: CreateStateRequest, opts?: CallOptions): Promise<CreateStateResult>;
  infer(req: InferRequest, opts?: CallOptions): Promise<InferResult>;
  /** Folds a chain of states (oldest first) into one standalone state and releases the others. */
  merge(req: MergeRequest, opts?: { signal?: AbortSignal }): Promise<MergeResult>;
  /** A fresh, shorter state from the kept part of a long one (system prompt + recent window). */
  compact(req: CompactRequest, opts?: CallOptions): Promise<CompactResult>;
  getState(key: string): Promise<StateInfo>;
  listStates(): Promise<StateInfo[]>;
  deleteState(key: string): Promise<{ deleted: boolean; blobsFreed: number; bytesFreed: number }>;
  pinState(key: string, pinned?: boolean): Promise<void>;
  receipt(key: string): Promise<SignedReceipt | null>;
  tokenize(text: string): Promise<number[]>;
  decode(tokens: number[]): Promise<string>;
  health(): Promise<Health>;
  verifyState(key: string): Promise<{ ok: boolean; blocks: number; damaged: { key: string; start: number; end: number; reason: string }[] }>;
  probe(req: { tokens: number[]; stateKey?: string }): Promise<Float32Array>;
  clearStore(): Promise<void>;
  dropHot(): Promise<void>;
  chooseCodec(stateKey: string, constraints?: CodecConstraints): Promise<CodecReport>;
  setCodecPolicy(policy: CodecPolicy): Promise<void>;
  /** A stored state as a `.safetensors` cartridge; `{ delta: ancestorKey }` stores only what follows that ancestor. */
  exportCartridge(key: string, opts?: ExportOptions): Promise<Blob>;
  /** Checks a cartridge completely against the loaded model, then stores it (a URL is resolved against the page and downloaded). */
  importCartridge(data: Uint8Array | ArrayBuffer | Blob | string | URL): Promise<ImportResult>;
  /** Evicts least-recently-used unpinned states until the store holds at most targetBytes (0: every unpinned state). */
  evict(opts: { targetBytes: number }): Promise<EvictResult>;
  /** Sets the store's byte budget (null: none); evicts at once if the store is over it. */
  setBudget(bytes: number | null): Promise<EvictResult | null>;
  /** Store bytes and budget, the origin's usage and quota, and whether storage is persistent. */
  storageInfo(): Promise<StorageInfo>;
  /** Asks the browser to keep this site's storage under pressure (navigator.storage.persist(), from the page). */
  requestPersistence(): Promise<{ persisted: boolean | null; asked: boolean }>;
  /** Runs the store's integrity check: orphan blobs removed, states with missing blobs marked damaged. */
  checkStore(): Promise<RepairReport>;
  /** Called when any page or worker of this origin stores, deletes, evicts or finds damaged states in this store. Returns an unsubscribe function. */
  onStoreChange(fn: (e: StoreEvent) => void): () => void;
  /** Fault injection, for tests: the next store write closes the worker after its n-th IndexedDB request. */
  debugStoreFault(afterRequests: number): Promise<void>;
  /** Stops the worker; the store stays in IndexedDB. */
  terminate(): void;
  /** The current worker (a new one after a crash). */
  readonly worker: Worker;
  /** How many times the worker was replaced after a crash or hang. */
  readonly restarts: number;
  /** Fault injection, for tests of recovery. */
  debugFault(kind: 'throw' | 'close' | 'hang' | 'device-lost'): Promise<void>;
}

let seq = 0;

export async function createStatecart(o: StatecartOptions = {}): Promise<StatecartClient> {
  const here = typeof document !== 'undefined' ? document.baseURI : self.location.href;
  const init: InitOptions = {
    modelsBase: new URL(o.modelsBase ?? 'models/', here).href,
    ortBase: new URL(o.ortBase ?? 'ort/', here).href,
    device: o.device ?? 'auto',
    ...(o.numThreads ? { numThreads: o.numThreads } : {}),
    ...(o.dbName ? { dbName: o.dbName } : {}),
    ...(o.hotBytes ? { hotBytes: o.hotBytes } : {}),
    ...(o.budgetBytes !== undefined ? { budgetBytes: o.budgetBytes } : {}),
  };
  // The model last asked for, so that a replacement worker loads it again.
  let lastModel: { model: string; device?: DeviceChoice } | null = null;
  const sup: WorkerSupervisor = new WorkerSupervisor(
    (): Worker =>
      o.worker && sup.restarts === 0 ? o.worker : new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: 'statecart' }),
    async (r, s) => {
      await r.init(s.deviceLost ? { ...init, device: 'wasm' } : init);
      if (lastModel) await r.loadModel(s.deviceLost ? { ...lastModel, device: 'wasm' } : lastModel);
    },
    { heartbeatMs: o.heartbeatMs, hangMs: o.hangMs, onRestart: o.onRestart },
  );
  await sup.start().catch((e: unknown) => {
    const err = e as { name?: string; message?: string };
    throw reviveError({ name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  });
  // Every call goes to the current worker; a crash rejects it with WorkerCrashed.
  const remote = new Proxy({} as Comlink.Remote<WorkerApi>, { get: (_t, prop) => (sup.remote as unknown as Record<string | symbol, unknown>)[prop] });
  const call = <T>(p: () => Promise<T>): Promise<T> => sup.run(() => p());

  // A cancelled call stops the worker's work and rejects at once; the worker
  // writes nothing for it (its store write is the last step, and checks the signal).
  async function cancellable<T>(run: (id: string, progress?: Comlink.ProxyOrClone<(p: Progress) => void>) => Promise<T>, opts?: CallOptions): Promise<T> {
    const id = `c${++seq}`;
    if (opts?.signal?.aborted) throw new Aborted('The request was cancelled before it started; nothing was written.');
    const progress = opts?.onProgress ? Comlink.proxy(opts.onProgress) : undefined;
    const onAbort = () => void remote.cancel(id);
    opts?.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await call(() => run(id, progress));
    } finally {
      opts?.signal?.removeEventListener('abort', onAbort);
    }
  }

  const client: StatecartClient = {
    get worker() {
      return sup.worker;
    },
    get restarts() {
      return sup.restarts;
    },
    debugFault: (kind) => call(() => remote.debugFault(kind)),
    loadModel: async (model, lo) => {
      const info = await call(() => remote.loadModel({ model, device: lo?.device }, lo?.onProgress ? Comlink.proxy(lo.onProgress) : undefined));
      lastModel = { model, ...(lo?.device ? { device: lo.device } : {}) };
      return info;
    },
    createState: (req, opts) => cancellable((id, pr) => remote.createState(req, id, pr), opts),
    infer: (req, opts) => cancellable((id, pr) => remote.infer(req, id, pr), opts),
    merge: (req, opts) => cancellable((id) => remote.merge(req, id), opts),
    compact: (req, opts) => cancellable((id, pr) => remote.compact(req, id, pr), opts),
    getState: (key) => call(() => remote.getState(key)),
    listStates: () => call(() => remote.listStates()),
    deleteState: (key) => call(() => remote.deleteState(key)),
    pinState: (key, pinned = true) => call(() => remote.pinState(key, pinned)),
    receipt: (key) => call(() => remote.receipt(key)),
    tokenize: (text) => call(() => remote.tokenize(text)),
    decode: (tokens) => call(() => remote.decode(tokens)),
    health: () => call(() => remote.health()),
    verifyState: (key) => call(() => remote.verifyState(key)),
    probe: (req) => call(() => remote.probe(req)),
    clearStore: () => call(() => remote.clearStore()),
    dropHot: () => call(() => remote.dropHot()),
    chooseCodec: (stateKey, constraints) => call(() => remote.chooseCodec(stateKey, constraints)),
    setCodecPolicy: (policy) => call(() => remote.setCodecPolicy(policy)),
    exportCartridge: (key, eo) => call(() => remote.exportCartridge(key, eo)),
    importCartridge: (data) => call(() => remote.importCartridge(typeof data === 'string' || data instanceof URL ? new URL(data, here).href : data)),
    evict: (eo) => call(() => remote.evict(eo)),
    setBudget: async (bytes) => {
      const r = await call(() => remote.setBudget(bytes));
      // A replacement worker keeps the budget.
      init.budgetBytes = bytes;
      return r;
    },
    storageInfo: () => call(() => remote.storageInfo()),
    // StorageManager.persist() exists in pages only: ask here when we are one.
    requestPersistence: () =>
      typeof navigator !== 'undefined' && typeof navigator.storage?.persist === 'function' ? askPersistence() : call(() => remote.requestPersistence()),
    checkStore: () => call(() => remote.checkStore()),
    onStoreChange: (fn) => listenStore(init.dbName ?? 'statecart', fn),
    debugStoreFault: (n) => call(() => remote.debugStoreFault(n)),
    terminate: () => sup.close(),
  };
  if (o.model) await client.loadModel(o.model, { device: o.device });
  return client;
}
