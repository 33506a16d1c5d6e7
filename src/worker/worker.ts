/// <reference lib="webworker" />
import * as Comlink from 'comlink';
import { env } from '@huggingface/transformers';
import { Engine } from '../engine/engine.ts';
import { exportCartridge, importCartridge } from '../engine/cartridges.ts';
import { StateStore } from '../store/store.ts';
import { isPersisted, requestPersistence } from '../store/quota.ts';
import { chooseCodec, codecChooser } from '../engine/codec-optimizer.ts';
import { loadGpt2 } from '../models/gpt2.ts';
import { findModel } from '../models/registry.ts';
import { pickDevice, type DeviceChoice } from './device.ts';
import type { StateModel } from '../models/types.ts';
import { DEVICE_LOST, type Health, type InitOptions, type ModelInfo, type WorkerApi } from './api.ts';
import { ModelNotLoaded, serializeError } from '../core/errors.ts';
import type { SignedReceipt, Receipt } from '../core/receipts.ts';

let opts: InitOptions | null = null;
let store: StateStore | null = null;
let engine: Engine | null = null;
let current: { model: StateModel; info: ModelInfo } | null = null;
let loading: Promise<{ model: StateModel; info: ModelInfo }> | null = null;
const calls = new Map<string, AbortController>();

function need<T>(x: T | null, what: string): T {
  if (!x) throw new ModelNotLoaded(`${what}: call init() first.`);
  return x;
}

function hubOrLocalBase(id: string): string {
  const entry = findModel(id);
  if (entry?.source === 'hub' || (!entry && id.includes('/'))) return `https://huggingface.co/${id}/resolve/main/`;
  return new URL(`${id}/`, need(opts, 'loadModel').modelsBase).href;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new ModelNotLoaded(`Could not fetch ${url} (HTTP ${r.status}). Run \`npm run models\` to generate the local models.`);
  return new Uint8Array(await r.arrayBuffer());
}

async function load(id: string, choice: DeviceChoice, onFile?: (p: { file: string; loaded: number; total: number }) => void) {
  const o = need(opts, 'loadModel');
  const entry = findModel(id);
  const arch = entry?.arch ?? 'gpt2';
  const pick = await pickDevice(choice);
  const t0 = performance.now();
  const base = hubOrLocalBase(id);
  env.allowLocalModels = entry?.source !== 'hub';
  env.allowRemoteModels = entry?.source === 'hub';
  // transformers.js treats a full http(s) URL as remote, not local: give it the path.
  env.localModelPath = new URL(o.modelsBase).pathname;
  let model: StateModel;
  if (arch === 'gpt2') {
    model = await loadGpt2({
      modelId: id,
      device: pick.device,
      adapter: pick.adapter,
      deviceReason: pick.reason,
      readFile: (p) => fetchBytes(base + p),
      onLoadProgress: onFile,
    });
  } else {
    const { loadMambaForWorker } = await import('./mamba-loader.ts');
    model = await loadMambaForWorker({ modelId: id, base, pick, readFile: (p) => fetchBytes(base + p) });
  }
  const info: ModelInfo = {
    id,
    arch,
    device: model.device,
    adapter: model.adapter,
    deviceReason: model.deviceReason,
    fingerprint: model.fingerprint,
    maxTokens: model.maxTokens,
    loadMs: performance.now() - t0,
  };
  return { model, info };
}

async function getModel(id?: string): Promise<StateModel> {
  if (loading) await loading.catch(() => undefined);
  if (current && (!id || id === current.model.id)) return current.model;
  if (!id) throw new ModelNotLoaded('No model is loaded: call loadModel({ model: "tiny-gpt2" }) first.');
  await api.loadModel({ model: id });
  return current!.model;
}

/** Errors cross comlink as plain { name, message }; the client revives them by name. */
function wrap<A extends unknown[], R>(fn: (...a: A) => Promise<R>): (...a: A) => Promise<R> {
  return async (...a: A) => {
    try {
      return await fn(...a);
    } catch (e) {
      const s = serializeError(e);
      const err = new Error(s.message);
      err.name = s.name;
      throw err;
    }
  };
}

function withCall(callId: string | undefined): AbortController {
  const ac = new AbortController();
  if (callId) calls.set(callId, ac);
  return ac;
}

/** Tells the client's supervisor, which restarts the worker on WASM. */
function reportDeviceLost(message: string): void {
  self.postMessage({ type: DEVICE_LOST, message });
  self.close();
}

async function watchWebGpuDevice(): Promise<void> {
  type DeviceLike = { lost?: Promise<{ message: string; reason: string }> };
  const dev = (await (env.backends.onnx as { webgpu?: { device?: Promise<DeviceLike> | DeviceLike } }).webgpu?.device) as DeviceLike | undefined;
  dev?.lost?.then((info) => reportDeviceLost(info.message || info.reason || 'unknown'));
}

const api: WorkerApi = {
  ping: async () => Date.now(),
  debugFault: async (kind) => {
    if (kind === 'throw')
      setTimeout(() => {
        throw new Error('injected fault');
      });
    else if (kind === 'close') self.close();
    else if (kind === 'device-lost') reportDeviceLost('injected fault');
    else if (kind === 'hang')
      setTimeout(() => {
        for (;;) {
          /* busy forever */
        }
      });
  },
  init: wrap(async (o: InitOptions) => {
    opts = o;
    const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number } };
    if (onnx.wasm) {
      onnx.wasm.wasmPaths = {
        mjs: new URL('ort-wasm-simd-threaded.asyncify.mjs', o.ortBase).href,
        wasm: new URL('ort-wasm-simd-threaded.asyncify.wasm', o.ortBase).href,
      };
      // numThreads is read once, when the first session is made.
      onnx.wasm.numThreads = o.numThreads ?? (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
    }
    store?.close();
    store = new StateStore({ dbName: o.dbName, hotBytes: o.hotBytes, budgetBytes: o.budgetBytes ?? null });
    // The open-time check (orphans, damaged states) runs before any request.
    await store.ready;
    engine = new Engine(store, getModel);
  }),
  loadModel: wrap(async (req, onProgress) => {
    if (current && current.model.id === req.model && (!req.device || req.device === 'auto' || req.device === current.model.device)) return current.info;
    const p = load(req.model, req.device ?? opts?.device ?? 'auto', onProgress);
    loading = p;
    try {
      const r = await p;
      if (current) await current.model.dispose().catch(() => undefined);
      current = r;
      if (r.model.device === 'webgpu') void watchWebGpuDevice();
      return r.info;
    } finally {
      if (loading === p) loading = null;
    }
  }),
  createState: wrap(async (req, callId, onProgress) => {
    const ac = withCall(callId);
    try {
      return await need(engine, 'createState').createState(req, { signal: ac.signal, onProgress });
    } finally {
      if (callId) calls.delete(callId);
    }
  }),
  infer: wrap(async (req, callId, onProgress) => {
    const ac = withCall(callId);
    try {
      return await need(engine, 'infer').infer(req, { signal: ac.signal, onProgress });
    } finally {
      if (callId) calls.delete(callId);
    }
  }),
  merge: wrap(async (req, callId) => {
    const ac = withCall(callId);
    try {
      return await need(engine, 'merge').merge(req, { signal: ac.signal });
    } finally {
      if (callId) calls.delete(callId);
    }
  }),
  compact: wrap(async (req, callId, onProgress) => {
    const ac = withCall(callId);
    try {
      return await need(engine, 'compact').compact(req, { signal: ac.signal, onProgress });
    } finally {
      if (callId) calls.delete(callId);
    }
  }),
  cancel: async (callId) => {
    calls.get(callId)?.abort();
  },
  getState: wrap(async (key) => need(engine, 'getState').getState(key)),
  listStates: wrap(async () => need(engine, 'listStates').listStates()),
  deleteState: wrap(async (key) => need(engine, 'deleteState').deleteState(key)),
  pinState: wrap(async (key, pinned) => need(store, 'pinState').setPinned(key, pinned)),
  receipt: wrap(async (key): Promise<SignedReceipt | null> => {
    const e = need(engine, 'receipt');
    const r = e.receiptOf(key);
    if (r) return r;
    const m = await need(store, 'receipt').getManifest(key);
    if (m?.receiptJson && m.receipt) return { receipt: JSON.parse(m.receiptJson) as Receipt, hash: m.receipt };
    return null;
  }),
  tokenize: wrap(async (text) => (await getModel()).tokenize(text)),
  decode: wrap(async (tokens) => (await getModel()).decode(tokens)),
  health: wrap(async (): Promise<Health> => {
    const s = need(store, 'health');
    const u = await s.usage();
    let quota: Health['quota'] = null;
    try {
      const est = await navigator.storage?.estimate?.();
      if (est) quota = { usage: est.usage ?? 0, quota: est.quota ?? 0 };
    } catch {
      quota = null;
    }
    const onnx = env.backends.onnx as { wasm?: { numThreads?: number } };
    return {
      device: current?.model.device ?? null,
      adapter: current?.model.adapter ?? null,
      deviceReason: current?.model.deviceReason ?? null,
      model: current?.model.id ?? null,
      modelFp: current?.model.fingerprint ?? null,
      statesHot: s.hot.size,
      statesStored: u.states,
      bytesStored: u.bytes,
      logicalBytes: u.logicalBytes,
      blobReads: s.blobReads,
      quota,
      crossOriginIsolated: self.crossOriginIsolated,
      threads: onnx.wasm?.numThreads ?? 1,
      persisted: await isPersisted(),
      budgetBytes: s.budgetBytes,
      statesDamaged: u.damaged,
      statesPinned: u.pinned,
    };
  }),
  verifyState: wrap(async (key) => need(store, 'verifyState').verify(key)),
  probe: wrap(async (req) => {
    const model = await getModel();
    const from = req.stateKey ? (await need(store, 'probe').getState(req.stateKey)).state : undefined;
    const { logits } = await model.prefill(req.tokens, from);
    return Comlink.transfer(logits, [logits.buffer as ArrayBuffer]);
  }),
  clearStore: wrap(async () => need(store, 'clearStore').clear()),
  dropHot: wrap(async () => need(store, 'dropHot').hot.clear()),
  chooseCodec: wrap(async (stateKey, constraints) => chooseCodec({ store: need(store, 'chooseCodec'), getModel }, stateKey, constraints ?? {})),
  setCodecPolicy: wrap(async (policy) => need(store, 'setCodecPolicy').setCodecPolicy(policy, codecChooser(getModel))),
  exportCartridge: wrap(async (key, o) => (await exportCartridge({ store: need(store, 'exportCartridge'), getModel }, key, o)).blob),
  importCartridge: wrap(async (data) => importCartridge({ store: need(store, 'importCartridge'), getModel }, data)),
  evict: wrap(async (o) => need(store, 'evict').evict(o)),
  setBudget: wrap(async (bytes) => need(store, 'setBudget').setBudget(bytes)),
  storageInfo: wrap(async () => need(store, 'storageInfo').storageInfo()),
  requestPersistence: wrap(async () => requestPersistence()),
  checkStore: wrap(async () => need(store, 'checkStore').repair()),
  debugStoreFault: async (n) => need(store, 'debugStoreFault').faultAfterRequests(n, () => self.close()),
};

Comlink.expose(api);
