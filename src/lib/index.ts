/**
 * statecart for web apps: one call starts the worker and returns a client
 * with the Statecart interface (the same one the engine has in-thread), plus
 * what only a page has: store-change events and the worker's life.
 *
 *   const sc = await createStatecart({ model: 'tiny-gpt2' });
 *   // or a Hub model: { model: 'hf:Xenova/gpt2', dtype: 'q8', hubUrl: 'http://127.0.0.1:8080/' (a mirror; default the Hub) }
 *   const { stateKey } = await sc.createState({ text: systemPrompt });
 *   const { output, newStateKey } = await sc.infer({ stateKey, delta: question, maxNewTokens: 32 });
 */
import { Aborted } from '../core/errors.ts';
import { STATECART_METHODS, type CallOptions, type DeviceChoice, type Dtype, type LoadModelRequest, type Statecart } from '../engine/api.ts';
import { FILES_CACHE, FILES_META_CACHE, ModelFileCache } from '../models/hub-files.ts';
import { downloadInfo, type DownloadInfo } from '../models/hub-load.ts';
import { DEFAULT_HUB_URL } from '../models/registry.ts';
import { listenStore, type StoreEvent } from '../store/broadcast.ts';
import { requestPersistence as askPersistence } from '../store/quota.ts';
import type { InitOptions } from '../worker/host.ts';
import type { RemoteStatus } from '../engine/remote.ts';
import { registerWire, WireOptions } from '../worker/wire.ts';
import { DEBUG } from './debug.ts';
import { WorkerSupervisor } from './supervisor.ts';

export * from '../core/errors.ts';
export { verifyReceipts, type Receipt, type SignedReceipt } from '../core/receipts.ts';
export type * from '../engine/api.ts';
export type { StoreEvent };
export { MODELS, DEFAULT_HUB_URL, DEFAULT_PAGE_MODEL, hubDtypes, pendingDtype, resolveModelId, type ModelEntry } from '../models/registry.ts';
export type { DownloadInfo, RemoteStatus };
export { registerStatePack, serveStatePack, type StatePackWorker } from './statepack-host.ts';
export { statePackRoute, type HttpRequest, type HttpResponse } from './statepack-http.ts';

/**
 * What loading a model would download, asked before the download: each
 * file's size (HEAD requests to the Hub or mirror for the files not kept yet;
 * none for those kept), and whether everything is kept already.
 */
export async function modelDownloadInfo(model: string, o: { dtype?: Dtype; hubUrl?: string | URL; signal?: AbortSignal } = {}): Promise<DownloadInfo> {
  const here = typeof document !== 'undefined' ? document.baseURI : self.location.href;
  const hubUrl = o.hubUrl !== undefined ? new URL(o.hubUrl, here).href : DEFAULT_HUB_URL;
  return downloadInfo(model, { hubUrl, files: await ModelFileCache.open(), ...(o.dtype ? { dtype: o.dtype } : {}), ...(o.signal ? { signal: o.signal } : {}) });
}

/** Deletes every downloaded (and converted) model file of this origin; the next load downloads them again. */
export async function clearModelFiles(): Promise<void> {
  if (typeof caches === 'undefined') return;
  await caches.delete(FILES_CACHE);
  await caches.delete(FILES_META_CACHE);
}

export interface StatecartOptions {
  /** Model to load at start (default: none; call loadModel): a local one (`tiny-gpt2`) or a Hub one (`hf:Xenova/gpt2`). */
  model?: string;
  /** Hub models: the weights' dtype (`fp32`, `q8`; default the model's own). */
  dtype?: Dtype;
  /** The Hugging Face Hub, or a Hub-shaped mirror (docs/hub-mirror.md), for `hf:` models. Default https://huggingface.co/. */
  hubUrl?: string | URL;
  device?: DeviceChoice;
  /** URL of the local models folder (default: `models/` next to the page). */
  modelsBase?: string | URL;
  /** URL of onnxruntime-web's wasm files (default: the copies shipped with the library; from source, `ort/` next to the page). */
  ortBase?: string | URL;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
  /** Most bytes of state blobs to keep; older unpinned states are evicted to stay under it. */
  budgetBytes?: number;
  /** A worker you started yourself (it must run src/worker/worker.ts). */
  worker?: Worker;
  /**
   * One engine for every tab of the origin: the worker is a SharedWorker, so
   * tabs share one model load and one hot tier. Default: true where the browser
   * has SharedWorker and the page is not cross-origin isolated. On a COOP/COEP
   * host a dedicated worker runs WASM on several threads, which browsers do not
   * give a shared worker, so there each page keeps its own unless this says
   * true. With `worker`, or without SharedWorker, each page has its own.
   */
  shared?: boolean;
  /**
   * Remote state hosts, read through after the local store: on a miss, or when
   * a remote holds a longer prefix than the store, the state is fetched, checked
   * and stored (layout: `<remote>/<model_fp>/index.json`, `<key-hex>.safetensors`;
   * `npm run publish-states` writes it). Relative URLs are resolved against the page.
   */
  remotes?: (string | URL)[];
  /** A remote that sends nothing for this long is taken as unreachable and the work is done locally (ms, default 8000). */
  remoteTimeoutMs?: number;
  /** Heartbeat period and hang limit of the worker supervisor (ms). */
  heartbeatMs?: number;
  hangMs?: number;
  /** Told when a crashed or hung worker was replaced. */
  onRestart?: (reason: string, restarts: number) => void;
}

/** The Statecart interface through a worker, and what only a page has. */
export interface StatecartClient extends Statecart {
  /** Called when any page or worker of this origin stores, deletes, evicts or finds damaged states in this store. Returns an unsubscribe function. */
  onStoreChange(fn: (e: StoreEvent) => void): () => void;
  /** Stops the worker (a shared worker: leaves it; the last tab out closes the engine); the store stays in IndexedDB. */
  terminate(): void;
  /** The current worker (a new one after a crash): a SharedWorker when `shared`. */
  readonly worker: Worker | SharedWorker;
  /** Whether this client shares the origin's engine with other tabs (a SharedWorker). */
  readonly shared: boolean;
  /** How many times the worker was replaced after a crash or hang. */
  readonly restarts: number;
  /** Replaces the remote state hosts (for every tab sharing the engine); an empty list turns the remote tier off. */
  setRemotes(remotes: (string | URL)[], opts?: { timeoutMs?: number }): Promise<void>;
  /** Each remote: reachable or not, how many states it lists for the loaded model, the last problem. */
  remoteStatus(): Promise<RemoteStatus[]>;
}

declare const __STATECART_LIB__: boolean | undefined;

/** The runtime's files: where the app says, or (library build) the worker's own copies, or (source) `ort/` beside the page. */
function ortBaseFor(ortBase: string | URL | undefined, here: string): string | undefined {
  if (ortBase !== undefined) return new URL(ortBase, here).href;
  return typeof __STATECART_LIB__ !== 'undefined' ? undefined : new URL('ort/', here).href;
}

export async function createStatecart(o: StatecartOptions = {}): Promise<StatecartClient> {
  registerWire();
  const here = typeof document !== 'undefined' ? document.baseURI : self.location.href;
  const init: InitOptions = {
    modelsBase: new URL(o.modelsBase ?? 'models/', here).href,
    ...(ortBaseFor(o.ortBase, here) ? { ortBase: ortBaseFor(o.ortBase, here) } : {}),
    device: o.device ?? 'auto',
    ...(o.numThreads ? { numThreads: o.numThreads } : {}),
    ...(o.dbName ? { dbName: o.dbName } : {}),
    ...(o.hotBytes ? { hotBytes: o.hotBytes } : {}),
    ...(o.budgetBytes !== undefined ? { budgetBytes: o.budgetBytes } : {}),
    ...(o.hubUrl !== undefined ? { hubUrl: new URL(o.hubUrl, here).href } : {}),
    ...(o.remotes ? { remotes: o.remotes.map((r) => new URL(r, here).href) } : {}),
    ...(o.remoteTimeoutMs ? { remoteTimeoutMs: o.remoteTimeoutMs } : {}),
  };
  const shared = !o.worker && typeof SharedWorker !== 'undefined' && (o.shared ?? !globalThis.crossOriginIsolated);
  // The model last asked for, so that a replacement worker loads it again. The
  // one named here loads the same way, in the worker's setup: compiling a model
  // can keep a worker busy for seconds, and the heartbeat starts after setup.
  let lastModel: LoadModelRequest | null = o.model
    ? { model: o.model, ...(o.device ? { device: o.device } : {}), ...(o.dtype ? { dtype: o.dtype } : {}) }
    : null;
  const sup: WorkerSupervisor = new WorkerSupervisor(
    // (written out in full: bundlers find the worker by these exact expressions)
    (generation): Worker | SharedWorker =>
      shared
        ? new SharedWorker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: `statecart#${generation}` })
        : o.worker && sup.restarts === 0
          ? o.worker
          : new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: 'statecart' }),
    async (r, s) => {
      await r.init(s.deviceLost ? { ...init, device: 'wasm' } : init);
      if (lastModel) await r.call('loadModel', s.deviceLost ? { ...lastModel, device: 'wasm' } : lastModel);
    },
    { heartbeatMs: o.heartbeatMs, hangMs: o.hangMs, onRestart: o.onRestart },
  );
  await sup.start();

  // Every call goes to the current worker; a crash rejects it with WorkerCrashed.
  // A cancelled call stops the worker's work and writes nothing.
  const call = (method: (typeof STATECART_METHODS)[number], req: unknown, opts?: CallOptions): Promise<unknown> => {
    if (opts?.signal?.aborted) return Promise.reject(new Aborted({ before: true }));
    const wire = opts && (opts.signal || opts.onProgress || opts.durable) ? new WireOptions(opts) : undefined;
    return sup.run((remote) => (remote.call as (m: string, r: unknown, o?: WireOptions) => Promise<unknown>)(method, req, wire));
  };
  const methods = Object.fromEntries(STATECART_METHODS.map((m) => [m, (req: unknown, opts?: CallOptions) => call(m, req, opts)])) as unknown as Statecart;

  const client: StatecartClient = {
    ...methods,
    loadModel: async (req, lo) => {
      const info = await methods.loadModel(req, lo);
      lastModel = { model: req.model, ...(req.device ? { device: req.device } : {}), ...(req.dtype ? { dtype: req.dtype } : {}) };
      return info;
    },
    // A URL is resolved against the page, not the worker.
    importCartridge: (req, io) => {
      const src = req?.source;
      return methods.importCartridge(typeof src === 'string' || src instanceof URL ? { source: new URL(src, here).href } : req, io);
    },
    setBudget: async (req, bo) => {
      const r = await methods.setBudget(req, bo);
      // A replacement worker keeps the budget.
      init.budgetBytes = req.bytes;
      return r;
    },
    // StorageManager.persist() exists in pages only: ask here when we are one.
    requestPersistence: (req, po) =>
      typeof navigator !== 'undefined' && typeof navigator.storage?.persist === 'function' ? askPersistence() : methods.requestPersistence(req, po),
    onStoreChange: (fn) => listenStore(init.dbName ?? 'statecart', fn),
    terminate: () => sup.close(),
    get worker() {
      return sup.worker;
    },
    get shared() {
      return sup.shared;
    },
    setRemotes: async (remotes, ro) => {
      const list = remotes.map((r) => new URL(r, here).href);
      await sup.run((r) => r.setRemotes(list, ro?.timeoutMs));
      // A replacement worker gets them too.
      init.remotes = list;
      if (ro?.timeoutMs) init.remoteTimeoutMs = ro.timeoutMs;
    },
    remoteStatus: () => sup.run((r) => r.remoteStatus()),
    get restarts() {
      return sup.restarts;
    },
  };
  // The testing entry (src/lib/testing.ts) reaches the worker's debug hooks through this; the client's type does not show it.
  Object.defineProperty(client, DEBUG, { value: sup, enumerable: false });
  return client;
}
