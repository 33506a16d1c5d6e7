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
import type { DeviceChoice } from './device.ts';
import type { SignedReceipt } from '../core/receipts.ts';
import type { CodecReport } from '../engine/codec-optimizer.ts';
import type { CodecConstraints, CodecPolicy } from '../store/manifest.ts';
import type { ExportOptions, ImportResult } from '../engine/cartridges.ts';
import type { EvictResult, RepairReport, StorageInfo } from '../store/store.ts';

/** Message a worker posts, outside comlink, when its WebGPU device is lost. */
export const DEVICE_LOST = 'statecart:device-lost';

export interface InitOptions {
  /** Absolute URL of the folder holding local models (`<id>/config.json` …). */
  modelsBase: string;
  /** Absolute URL of the folder holding onnxruntime-web's .mjs/.wasm files. */
  ortBase: string;
  device?: DeviceChoice;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
  /** Most bytes of blobs the store may hold; least-recently-used unpinned states are evicted to stay under it. */
  budgetBytes?: number | null;
}

export interface Health {
  device: string | null;
  adapter: string | null;
  deviceReason: string | null;
  model: string | null;
  modelFp: string | null;
  statesHot: number;
  statesStored: number;
  bytesStored: number;
  logicalBytes: number;
  blobReads: number;
  quota: { usage: number; quota: number } | null;
  crossOriginIsolated: boolean;
  threads: number;
  /** navigator.storage.persisted(): the browser will not clear the store under pressure (null: unknown). */
  persisted: boolean | null;
  budgetBytes: number | null;
  statesDamaged: number;
  statesPinned: number;
}

export interface ModelInfo {
  id: string;
  arch: 'gpt2' | 'mamba';
  device: string;
  adapter: string | null;
  deviceReason: string;
  fingerprint: string;
  maxTokens: number;
  loadMs: number;
}

export type ProgressFn = (p: Progress) => void;

/** What the worker offers; the library's client has the same methods, plus AbortSignal support. */
export interface WorkerApi {
  /** Heartbeat: the client's supervisor replaces a worker that stops answering. */
  ping(): Promise<number>;
  /** Fault injection for tests: 'throw' (uncaught error), 'close' (the worker exits), 'hang' (busy forever), 'device-lost'. */
  debugFault(kind: 'throw' | 'close' | 'hang' | 'device-lost'): Promise<void>;
  init(opts: InitOptions): Promise<void>;
  loadModel(req: { model: string; device?: DeviceChoice }, onProgress?: (p: { file: string; loaded: number; total: number }) => void): Promise<ModelInfo>;
  createState(req: CreateStateRequest, callId?: string, onProgress?: ProgressFn): Promise<CreateStateResult>;
  infer(req: InferRequest, callId?: string, onProgress?: ProgressFn): Promise<InferResult>;
  merge(req: MergeRequest, callId?: string): Promise<MergeResult>;
  compact(req: CompactRequest, callId?: string, onProgress?: ProgressFn): Promise<CompactResult>;
  cancel(callId: string): Promise<void>;
  getState(key: string): Promise<StateInfo>;
  listStates(): Promise<StateInfo[]>;
  deleteState(key: string): Promise<{ deleted: boolean; blobsFreed: number; bytesFreed: number }>;
  pinState(key: string, pinned: boolean): Promise<void>;
  receipt(key: string): Promise<SignedReceipt | null>;
  tokenize(text: string): Promise<number[]>;
  decode(tokens: number[]): Promise<string>;
  health(): Promise<Health>;
  /** Checks a state's blobs against their digests. */
  verifyState(key: string): Promise<{ ok: boolean; blocks: number; damaged: { key: string; start: number; end: number; reason: string }[] }>;
  /** Last-position logits after `tokens` (run on top of a stored state when given); stores nothing. */
  probe(req: { tokens: number[]; stateKey?: string }): Promise<Float32Array>;
  clearStore(): Promise<void>;
  /** Drops the hot tier, so the next read must come from IndexedDB (tests, benchmarks). */
  dropHot(): Promise<void>;
  /** Measures every codec on a stored state (by running the model) and names the smallest meeting the constraints. */
  chooseCodec(stateKey: string, constraints?: CodecConstraints): Promise<CodecReport>;
  /** How states stored from now on are encoded ('auto': chooseCodec's choice for each new state). */
  setCodecPolicy(policy: CodecPolicy): Promise<void>;
  /** A stored state as a cartridge (.safetensors); `delta` makes a delta cartridge against that ancestor. A Blob crosses by reference, not by copy. */
  exportCartridge(key: string, opts?: ExportOptions): Promise<Blob>;
  /** Validates a cartridge against the loaded model, then stores its state; nothing is written if any check fails. A string is a URL to download. */
  importCartridge(data: Uint8Array | ArrayBuffer | Blob | string): Promise<ImportResult>;
  /** Evicts least-recently-used unpinned states until the store holds at most targetBytes (0: all unpinned). */
  evict(opts: { targetBytes: number }): Promise<EvictResult>;
  /** Sets the byte budget (null: none), evicting at once if the store is over it. */
  setBudget(bytes: number | null): Promise<EvictResult | null>;
  /** Store bytes, budget, the origin's usage and quota, persistence. */
  storageInfo(): Promise<StorageInfo>;
  /** Asks for persistent storage where the worker can (browsers let only pages ask: the library's client asks from the page). */
  requestPersistence(): Promise<{ persisted: boolean | null; asked: boolean }>;
  /** Runs the store's open-time check again: orphan blobs removed, states with missing blobs marked damaged. */
  checkStore(): Promise<RepairReport>;
  /** Fault injection: the next store write closes this worker after its n-th IndexedDB request. */
  debugStoreFault(afterRequests: number): Promise<void>;
}
