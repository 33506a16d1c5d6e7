/**
 * statecart's one interface. Two implementations have it: the engine in the
 * same thread (src/engine/statecart.ts: Node, tests, a worker's inside) and
 * the client that talks to a worker (src/lib/index.ts). Every method takes a
 * request and, optionally, a signal and a progress callback, so a caller
 * never learns which one it holds (web-llm's MLCEngineInterface, for states).
 */
import type { CodecConstraints, CodecPolicy } from '../store/records.ts';
import type { SignedReceipt } from '../core/receipts.ts';
import type { Dtype } from '../core/model-fingerprint.ts';
import type { Progress } from '../core/state.ts';
import type { EvictResult, RepairReport, StorageInfo, Tier, WriteQueueStats } from '../store/store.ts';
import type { Sampling } from './sampling.ts';
import type { CodecReport } from './codec-optimizer.ts';
import type { ExportOptions, ImportResult } from './cartridges.ts';

export type { Progress, Sampling, CodecReport, ExportOptions, ImportResult, EvictResult, RepairReport, StorageInfo, Tier, SignedReceipt, WriteQueueStats };
export type { CodecConstraints, CodecPolicy, Dtype };

export interface CallOptions {
  /** Cancels the call; a cancelled call rejects with Aborted and writes nothing. */
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  /**
   * A call that makes a state resolves once the state is in memory and its
   * write is queued (write-behind): other calls here can use it at once, and
   * it reaches IndexedDB (and other pages) a moment later. With `durable:
   * true` the call also waits until its own write has landed, and rejects
   * with that write's error if it fails. See flush().
   */
  durable?: boolean;
}

export type DeviceChoice = 'auto' | 'webgpu' | 'wasm';

// ---------------------------------------------------------------- protocol

export interface CreateStateRequest {
  /** Model id; defaults to the loaded model. */
  model?: string;
  text?: string;
  tokens?: number[];
  label?: string;
  /**
   * Models whose states cannot be cut by token (Mamba): keep a checkpoint
   * state at every multiple of this many tokens passed in the prefill, so that
   * a later text sharing part of this one resumes from the last checkpoint
   * (default DEFAULT_CHECKPOINT_EVERY; 0: none). Ignored for KV models, whose
   * 16-token blocks already serve any shared prefix.
   */
  checkpointEvery?: number;
}

/**
 * Why a request reused what it did: where reuse stopped, and why there.
 * `stoppedAt` is the token position the reason is about (where the text
 * differs, the end of what was evicted or refused); `tokensReused` ≤ it.
 */
export interface Reuse {
  /** The stored state reused (null: nothing, or a run of 16-token KV blocks). */
  fromKey: string | null;
  tier: Tier | 'recomputed' | 'remote';
  tokensReused: number;
  stoppedAt: number;
  /** In words: why reuse stopped where it did. */
  reason: string;
  /** The same, as a code. */
  cause: ReuseCause;
}

/**
 * whole: everything was stored. differs: the text differs from every stored
 * text at stoppedAt (or, KV, inside the next 16-token block). no-checkpoint: a
 * stored Mamba text agrees further, but no state exists between the reused one
 * and stoppedAt. evicted: what was stored there was evicted. other-model: the
 * stored state belongs to another model build. damaged: a blob of the stored
 * state was damaged; it was recomputed. mismatch: the manifest under the key
 * names other token ids (never served).
 */
export type ReuseCause = 'whole' | 'differs' | 'no-checkpoint' | 'evicted' | 'other-model' | 'damaged' | 'mismatch';

/** Checkpoint spacing of a Mamba prefill when a request does not say (see docs/protocol.md, "Checkpoints"). */
export const DEFAULT_CHECKPOINT_EVERY = 256;

export interface CreateStateResult {
  stateKey: string;
  tokens: number;
  bytes: number;
  /** Tokens found already computed in the store (a prefix) and not processed again. */
  reused: number;
  processed: number;
  receipt: SignedReceipt;
  /** Where reuse stopped and why. */
  reuse: Reuse;
  /** Checkpoint states stored by this prefill (Mamba; their keys). */
  checkpoints: string[];
  timings: { totalMs: number; prefillMs: number; lookupMs: number; storeMs: number };
  /** Set when remotes are configured and took part: the state a remote supplied, and remotes that could not be used. */
  remote?: RemoteReport;
}

export interface InferRequest {
  stateKey: string;
  /** New text after the state (may be empty). */
  delta?: string;
  deltaTokens?: number[];
  maxNewTokens?: number;
  sampling?: Sampling;
  /** As in createState: checkpoints inside the delta's prefill (Mamba). */
  checkpointEvery?: number;
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
  /** Which tier the starting state came from ('remote': fetched from a remote state host during this call, then stored here). */
  tier: Tier | 'recomputed' | 'remote';
  /** Where reuse of the state + delta stopped and why. */
  reuse: Reuse;
  /** Checkpoint states stored inside the delta's prefill (Mamba; their keys). */
  checkpoints: string[];
  timings: { totalMs: number; restoreMs: number; prefillMs: number; generateMs: number; storeMs: number };
  remote?: RemoteReport;
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
  reuse: Reuse;
  timings: { totalMs: number; prefillMs: number };
  remote?: RemoteReport;
}

// ---------------------------------------------------------------- remotes

/** A state fetched from a remote state host (src/engine/remote.ts) and stored here, whose tokens a call reused. */
export interface RemoteSource {
  /** The remote, as configured (its base URL). */
  remote: string;
  /** The cartridge's URL. */
  url: string;
  stateKey: string;
  /** Tokens of that state (the reused tokens that came from the remote). */
  tokens: number;
  /** Bytes downloaded. */
  bytes: number;
  /** Time to download the file, and to check and store it. */
  fetchMs: number;
  importMs: number;
}

/** A remote that could not be used for a call (unreachable, no valid index, a refused file); the work was done locally. */
export interface RemoteNotice {
  remote: string;
  url: string;
  /** A typed error name (InvalidCartridge for a refused file) or 'Unreachable' / 'BadIndex'. */
  error: string;
  message: string;
}

export interface RemoteReport {
  /** The state a remote supplied, or null when none did. */
  from: RemoteSource | null;
  notices: RemoteNotice[];
}

export interface StateInfo {
  key: string;
  tokens: number;
  bytes: number;
  /** 'queued': made by a call that returned, held in memory, its write not landed yet (not in IndexedDB, not seen by other pages). */
  tier: Tier | 'queued';
  parent: string | null;
  codec: string;
  model: string;
  label?: string;
  pinned: boolean;
  createdAt: number;
  lastUsed: number;
  receipt: string | null;
  /** Set when a blob of the state was found missing or corrupt: it is not served, and is recomputed from its tokens on the next infer or createState. */
  damaged?: { reason: string; blocks: number };
  /** A checkpoint kept inside a longer Mamba prefill (not asked for by name); eviction takes unreused ones first. */
  checkpoint?: true;
  /** How many requests reused this state. */
  hits: number;
}

export interface UncachedRequest {
  model?: string;
  text?: string;
  tokens?: number[];
  maxNewTokens?: number;
  sampling?: Sampling;
}

export interface UncachedResult {
  output: string;
  outputTokens: number[];
  /** Tokens run through the model: the whole text, plus one per generated token. */
  tokensProcessed: number;
  timings: { totalMs: number; prefillMs: number; generateMs: number };
}

/** A state, by key. */
export interface StateRef {
  stateKey: string;
}

// ---------------------------------------------------------------- model and store

export interface LoadModelRequest {
  /** A local model (`tiny-gpt2`) or a Hub model (`hf:Xenova/gpt2`). */
  model: string;
  device?: DeviceChoice;
  /** Hub models: which weights file (default the model's own, fp32). States of different dtypes have different keys. */
  dtype?: Dtype;
}

/** Download progress of one model file. */
export interface FileProgress {
  file: string;
  loaded: number;
  total: number;
}

export interface ModelInfo {
  id: string;
  arch: string;
  /** States can be cut by token (a KV cache); false for a fixed-size state. */
  sliceable: boolean;
  device: string;
  adapter: string | null;
  deviceReason: string;
  fingerprint: string;
  /** The weights' dtype (fp32, q8, ...). */
  dtype?: string;
  maxTokens: number;
  loadMs: number;
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
  /** Write-behind: writes queued behind calls that returned, and what became of them since the worker started. */
  writes: WriteQueueStats;
}

/** What flush() waited for. */
export interface FlushResult {
  /** Queued writes that landed while it waited. */
  stored: number;
}

export interface VerifyResult {
  ok: boolean;
  blocks: number;
  damaged: { key: string; start: number; end: number; reason: string }[];
}

export interface ExportRequest extends ExportOptions {
  stateKey: string;
}

export type CartridgeSource = Uint8Array | ArrayBuffer | Blob | string | URL;

// ---------------------------------------------------------------- the interface

export interface Statecart {
  /** Loads a model (the one later calls use by default); progress is per file downloaded. */
  loadModel(req: LoadModelRequest, opts?: { signal?: AbortSignal; onProgress?: (p: FileProgress) => void }): Promise<ModelInfo>;
  /** Prefills a text once (reusing the longest stored prefix) and stores its state. */
  createState(req: CreateStateRequest, opts?: CallOptions): Promise<CreateStateResult>;
  /** Restores a state, runs only the delta, generates, stores the new state. */
  infer(req: InferRequest, opts?: CallOptions): Promise<InferResult>;
  /** The model with nothing cached and nothing stored (no hashing, no store): what a page without statecart pays. */
  runUncached(req: UncachedRequest, opts?: CallOptions): Promise<UncachedResult>;
  /** Folds a chain of states (oldest first) into one standalone state and releases the others. */
  merge(req: MergeRequest, opts?: CallOptions): Promise<MergeResult>;
  /** A fresh, shorter state from the kept part of a long one (system prompt + recent window). */
  compact(req: CompactRequest, opts?: CallOptions): Promise<CompactResult>;
  getState(req: StateRef, opts?: CallOptions): Promise<StateInfo>;
  listStates(req?: Record<string, never>, opts?: CallOptions): Promise<StateInfo[]>;
  deleteState(req: StateRef, opts?: CallOptions): Promise<{ deleted: boolean; blobsFreed: number; bytesFreed: number }>;
  pinState(req: StateRef & { pinned?: boolean }, opts?: CallOptions): Promise<void>;
  /** The receipt that made a state, or null. */
  receipt(req: StateRef, opts?: CallOptions): Promise<SignedReceipt | null>;
  /** Checks a state's blobs against their digests (a damaged one is marked, and recomputed on next use). */
  verifyState(req: StateRef, opts?: CallOptions): Promise<VerifyResult>;
  tokenize(req: { text: string }, opts?: CallOptions): Promise<number[]>;
  decode(req: { tokens: number[] }, opts?: CallOptions): Promise<string>;
  health(req?: Record<string, never>, opts?: CallOptions): Promise<Health>;
  /** Measures every codec on a stored state (by running the model) and names the smallest meeting the constraints. */
  chooseCodec(req: StateRef & { constraints?: CodecConstraints }, opts?: CallOptions): Promise<CodecReport>;
  /** How states stored from now on are encoded ('auto': chooseCodec's choice for each new state). */
  setCodecPolicy(req: CodecPolicy, opts?: CallOptions): Promise<void>;
  /** A stored state as a `.safetensors` cartridge; `delta: ancestorKey` stores only what follows that ancestor. */
  exportCartridge(req: ExportRequest, opts?: CallOptions): Promise<Blob>;
  /** Checks a cartridge completely against the loaded model, then stores it; nothing is written if any check fails. A string is a URL. */
  importCartridge(req: { source: CartridgeSource }, opts?: CallOptions): Promise<ImportResult>;
  /** Evicts least-recently-used unpinned states until the store holds at most targetBytes (0: every unpinned state). */
  evict(req: { targetBytes: number }, opts?: CallOptions): Promise<EvictResult>;
  /** Sets the store's byte budget (null: none); evicts at once if the store is over it. */
  setBudget(req: { bytes: number | null }, opts?: CallOptions): Promise<EvictResult | null>;
  /** Store bytes and budget, the origin's usage and quota, and whether storage is persistent. */
  storageInfo(req?: Record<string, never>, opts?: CallOptions): Promise<StorageInfo>;
  /** Asks the browser to keep this site's storage under pressure. */
  requestPersistence(req?: Record<string, never>, opts?: CallOptions): Promise<{ persisted: boolean | null; asked: boolean }>;
  /** Runs the store's integrity check: orphan blobs removed, states with missing blobs marked damaged. */
  checkStore(req?: Record<string, never>, opts?: CallOptions): Promise<RepairReport>;
  /** Deletes every stored state. */
  clearStore(req?: Record<string, never>, opts?: CallOptions): Promise<void>;
  /**
   * Waits until every state made so far is stored (write-behind: calls
   * return before their writes land). Rejects with StateNotStored when a
   * queued write failed since the last report; each failure is reported once.
   */
  flush(req?: Record<string, never>, opts?: CallOptions): Promise<FlushResult>;
}

/** The protocol methods, by name (the worker handler and the client list them once, here). */
export const STATECART_METHODS = [
  'loadModel',
  'createState',
  'infer',
  'runUncached',
  'merge',
  'compact',
  'getState',
  'listStates',
  'deleteState',
  'pinState',
  'receipt',
  'verifyState',
  'tokenize',
  'decode',
  'health',
  'chooseCodec',
  'setCodecPolicy',
  'exportCartridge',
  'importCartridge',
  'evict',
  'setBudget',
  'storageInfo',
  'requestPersistence',
  'checkStore',
  'clearStore',
  'flush',
] as const satisfies readonly (keyof Statecart)[];

// Every method of the interface is in the list above (a compile error here names the one missing).
type Unlisted = Exclude<keyof Statecart, (typeof STATECART_METHODS)[number]>;
export const METHODS_COMPLETE: [Unlisted] extends [never] ? true : Unlisted = true;
