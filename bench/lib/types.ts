/**
 * The shape of bench/results/latest.json. Every timing is in milliseconds;
 * a Stat is the median of its samples, with min and max beside it.
 */

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export type BenchDevice = 'wasm' | 'webgpu';

/** Where a row ran: the device, and for WebGPU whether the adapter was a software one. */
export interface RunTarget {
  model: string;
  device: BenchDevice;
  /** True when WebGPU ran on a software adapter (SwiftShader): slow, tiny models only. */
  softwareAdapter?: boolean;
}

export interface AgentLoopResult extends RunTarget {
  steps: number;
  baseTokens: number;
  /** Delta tokens of each step, in order. */
  deltaTokens: number[];
  newTokensPerStep: number;
  /** Input tokens the naive run (re-prefill of everything each step) put through the model. */
  naiveTokens: number;
  /** Input tokens the cached run put through the model, the base's first prefill included. */
  cachedTokens: number;
  /** The same, without the base's first prefill (what a loop on an already-stored base pays). */
  cachedTokensNoBase: number;
  tokensSavedPct: number;
  /** Wall time of the 20 naive steps, each: createState(full text) in a cleared store + infer. */
  naiveMs: number;
  /** Of naiveMs, the model's work only (prefill + generation, no store writes). */
  naiveComputeMs: number;
  /** Wall time of the cached loop: createState(base) + 20 infers. */
  cachedMs: number;
  /** The same without the base's createState. */
  cachedStepsMs: number;
  naiveStepMs: Stat;
  cachedStepMs: Stat;
  /** naiveMs / cachedMs. */
  speedup: number;
  /** naiveComputeMs / cachedMs: against a naive server that stores nothing. */
  speedupVsCompute: number;
  identicalOutputs: boolean;
  /** Where a cached step's time goes, as the worker times it (medians over the steps). */
  cachedBreakdown: { restoreMs: number; prefillMs: number; generateMs: number; storeMs: number; otherMs: number };
}

export interface RestoreRow extends RunTarget {
  tokens: number;
  stateBytes: number;
  /** createState of the text in a cleared store: prefill + store write. */
  recomputeMs: Stat;
  /** Of recomputeMs, the prefill alone. */
  recomputePrefillMs: Stat;
  /** Restore from the in-memory tier (the worker's own restore timer). */
  hotMs: Stat;
  /** Restore from IndexedDB after dropHot(), every blob digest-checked. */
  storedMs: Stat;
  /** Wall time of infer(1 new token, 0 generated) on the hot / stored base: restore plus one token. */
  hotFirstLogitsMs: Stat;
  storedFirstLogitsMs: Stat;
  /** Physical floor: a raw IndexedDB read of the same blobs plus SHA-256 of their bytes, in the page. */
  floorMs: Stat;
  /** One restore from IndexedDB cut into its steps (timed in the page), to show where the time goes. */
  storedProfile?: { prefixKeysMs: number; manifestsMs: number; blockChainMs: number; getStateMs: number };
}

/** Issue #3's measurement: prefill a base vs continue it by a few tokens. */
export interface ContinueRow extends RunTarget {
  baseTokens: number;
  newTokens: number;
  prefillBaseMs: Stat;
  continueHotMs: Stat;
  continueStoredMs: Stat;
  /** The same new tokens with no base at all (a fresh prefill of just them). */
  freshMs: Stat;
}

export interface StorageResult extends RunTarget {
  /** The agent loop's store: unique blob bytes. */
  chainBytes: number;
  /** Sum of every state's own size, as if no block were shared. */
  chainLogicalBytes: number;
  /** KV bytes of the loop's unique tokens (the final state's size). */
  uniqueKvBytes: number;
  ratio: number;
  states: number;
  agents: number;
  agentDeltaTokens: number;
  /** One base plus `agents` continuations of it: unique blob bytes. */
  agentsBytes: number;
  /** The same agents, each holding a full copy of its state. */
  naiveAgentsBytes: number;
  baseBytes: number;
}

export interface MambaRestoreRow extends RunTarget {
  tokens: number;
  stateBytes: number;
  reprefillMs: Stat;
  restoreMs: Stat;
  restoreStoredMs: Stat;
  speedup: number;
  /** Set when the row was merged from another script's output rather than measured in this run. */
  from?: string;
}

export interface LoadRow extends RunTarget {
  /** Wall time of loadModel in the page (fetch + session creation). */
  wallMs: number;
  /** The worker's own figure. */
  loadMs: number;
  adapter: string | null;
  deviceReason: string;
  threads: number;
}

export interface CodecRow {
  model: string;
  codec: string;
  bytes: number;
  maxLogitError: number;
  greedyMatch: boolean;
  /** The codec the optimizer picked for this state. */
  chosen?: boolean;
  /** Where the row came from, when merged from another script's output. */
  from?: string;
  [k: string]: unknown;
}

export interface SkipNote {
  what: string;
  reason: string;
}

export interface MachineInfo {
  cores: number;
  hardwareConcurrency: number;
  platform: string;
  node: string;
  cpuModel: string;
  memoryGiB: number;
  /** 1-, 5- and 15-minute load averages when the run started, and when it ended. */
  loadAvg: number[];
  loadAvgEnd?: number[];
}

export interface BrowserInfo {
  name: string;
  version: string;
  userAgent: string;
  crossOriginIsolated: boolean;
  threads: number;
  webgpuAdapter: string | null;
  webgpuSoftware: boolean | null;
}

export interface BenchResults {
  version: 1;
  mode: 'quick' | 'full';
  date: string;
  commit: string;
  dirty: boolean;
  machine: MachineInfo;
  browser: BrowserInfo;
  devices: BenchDevice[];
  note: string;
  durationS: number;
  loads: LoadRow[];
  agentLoop: AgentLoopResult[];
  restore: RestoreRow[];
  continue: ContinueRow[];
  storage: StorageResult[];
  mambaRestore: MambaRestoreRow[];
  codecs: CodecRow[];
  skipped: SkipNote[];
}
