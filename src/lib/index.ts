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
import type { CreateStateRequest, CreateStateResult, InferRequest, InferResult, StateInfo } from '../engine/engine.ts';
import type { Progress } from '../models/types.ts';
import type { DeviceChoice } from '../worker/device.ts';
import type { SignedReceipt } from '../core/receipts.ts';
import { Aborted, reviveError } from '../core/errors.ts';

export * from '../core/errors.ts';
export { verifyReceipts, type Receipt, type SignedReceipt } from '../core/receipts.ts';
export type { CreateStateRequest, CreateStateResult, InferRequest, InferResult, StateInfo, Health, ModelInfo, Progress, DeviceChoice };
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
  /** A worker you started yourself (it must run src/worker/worker.ts). */
  worker?: Worker;
}

export interface CallOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface StatecartClient {
  loadModel(model: string, opts?: { device?: DeviceChoice; onProgress?: (p: { file: string; loaded: number; total: number }) => void }): Promise<ModelInfo>;
  createState(req: CreateStateRequest, opts?: CallOptions): Promise<CreateStateResult>;
  infer(req: InferRequest, opts?: CallOptions): Promise<InferResult>;
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
  /** Stops the worker; the store stays in IndexedDB. */
  terminate(): void;
  readonly worker: Worker;
}

let seq = 0;

async function call<T>(p: () => Promise<T>): Promise<T> {
  try {
    return await p();
  } catch (e) {
    const err = e as { name?: string; message?: string };
    throw reviveError({ name: err?.name ?? 'Error', message: err?.message ?? String(e) });
  }
}

export async function createStatecart(o: StatecartOptions = {}): Promise<StatecartClient> {
  const here = typeof document !== 'undefined' ? document.baseURI : self.location.href;
  const worker = o.worker ?? new Worker(new URL('../worker/worker.ts', import.meta.url), { type: 'module', name: 'statecart' });
  const remote = Comlink.wrap<WorkerApi>(worker);
  const init: InitOptions = {
    modelsBase: new URL(o.modelsBase ?? 'models/', here).href,
    ortBase: new URL(o.ortBase ?? 'ort/', here).href,
    device: o.device ?? 'auto',
    ...(o.numThreads ? { numThreads: o.numThreads } : {}),
    ...(o.dbName ? { dbName: o.dbName } : {}),
    ...(o.hotBytes ? { hotBytes: o.hotBytes } : {}),
  };
  await call(() => remote.init(init));

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
    worker,
    loadModel: (model, lo) => call(() => remote.loadModel({ model, device: lo?.device }, lo?.onProgress ? Comlink.proxy(lo.onProgress) : undefined)),
    createState: (req, opts) => cancellable((id, pr) => remote.createState(req, id, pr), opts),
    infer: (req, opts) => cancellable((id, pr) => remote.infer(req, id, pr), opts),
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
    terminate: () => worker.terminate(),
  };
  if (o.model) await client.loadModel(o.model, { device: o.device });
  return client;
}
