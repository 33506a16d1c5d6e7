import type { CreateStateRequest, CreateStateResult, InferRequest, InferResult, StateInfo } from '../engine/engine.ts';
import type { Progress } from '../models/types.ts';
import type { DeviceChoice } from './device.ts';
import type { SignedReceipt } from '../core/receipts.ts';

export interface InitOptions {
  /** Absolute URL of the folder holding local models (`<id>/config.json` …). */
  modelsBase: string;
  /** Absolute URL of the folder holding onnxruntime-web's .mjs/.wasm files. */
  ortBase: string;
  device?: DeviceChoice;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
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
  init(opts: InitOptions): Promise<void>;
  loadModel(req: { model: string; device?: DeviceChoice }, onProgress?: (p: { file: string; loaded: number; total: number }) => void): Promise<ModelInfo>;
  createState(req: CreateStateRequest, callId?: string, onProgress?: ProgressFn): Promise<CreateStateResult>;
  infer(req: InferRequest, callId?: string, onProgress?: ProgressFn): Promise<InferResult>;
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
}
