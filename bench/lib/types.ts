/**
 * The shape of bench/results/latest.json (format 2). Every timing is in
 * milliseconds. A Stat is the median of its samples, with min and max beside
 * it. User-facing times are wall times in the page, from the awaited call to
 * its result; the worker's own timers appear only in the labelled breakdowns.
 *
 * "Plain" is what a page without statecart pays: a second worker of the bench
 * page loads the same model files with the same runtime, device and thread
 * count through the project's model layer, and runs prefill of the whole text
 * plus greedy generation, with no hashing and no store (bench/lib/plain-worker.ts).
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

/**
 * Where one statecart call's page wall time goes (medians over its samples):
 * the engine's own timers, the rest of the engine's time that none of them
 * covers (manifest lookup, receipt), and the rest of the wall time (the
 * page ↔ worker messages and the worker's queue).
 */
export interface StepBreakdown {
  restoreMs: number;
  prefillMs: number;
  generateMs: number;
  storeMs: number;
  engineOtherMs: number;
  messagingMs: number;
}

/** State Pack's agent loop: a base, then steps that each add a delta and generate. */
export interface AgentLoopRow extends RunTarget {
  steps: number;
  baseTokens: number;
  /** Delta tokens of each step, in order. */
  deltaTokens: number[];
  newTokensPerStep: number;
  /** Input tokens the plain run put through the model: each step's whole text, plus newTokensPerStep − 1 generated tokens run back in. */
  plainTokens: number;
  /** Input tokens the cached run put through the model, the base's prefill included (statecart also runs the last generated token, to store the state after it). */
  cachedTokens: number;
  /** The same, without the base's prefill. */
  cachedTokensNoBase: number;
  tokensSavedPct: number;
  /** Sum of the plain steps' page wall times. */
  plainMs: number;
  /** Page wall time of createState(base) plus the sum of the steps' infer() wall times. */
  cachedMs: number;
  /** Of cachedMs, createState(base). */
  cachedBaseMs: number;
  /** cachedMs without the base's creation: a loop on a base stored earlier. */
  cachedStepsMs: number;
  /** plainMs / cachedMs. */
  speedupVsPlain: number;
  /** plainMs / cachedStepsMs. */
  speedupVsPlainBaseStored: number;
  plainStepMs: Stat;
  cachedStepMs: Stat;
  /** Every step's generated tokens are the same in the plain and the cached run. */
  identicalOutputs: boolean;
  /** Where a cached step's wall time goes. */
  cachedBreakdown: StepBreakdown;
}

/**
 * Time to first token: `newTokens` new tokens after a `baseTokens`-token
 * base, up to the first generated token, page wall time (medians).
 */
export interface TtftRow extends RunTarget {
  baseTokens: number;
  newTokens: number;
  /** Plain: the new tokens alone, no base (prefill + the first token). */
  aloneMs: number;
  /** statecart: infer(base in the in-memory tier, new tokens, 1 generated). */
  hotMs: number;
  /** statecart: the same with the base read from IndexedDB (after dropHot()). */
  storedMs: number;
  /** Plain: base + new tokens recomputed (prefill + the first token). */
  plainMs: number;
  /** The four as median (min–max). */
  spread: { alone: Stat; hot: Stat; stored: Stat; plain: Stat };
  hotBreakdown: StepBreakdown;
  storedBreakdown: StepBreakdown;
  /** The first generated token is the same in the plain, hot and stored runs, every repetition. */
  identicalFirstToken: boolean;
}

/** Cost of one generated token at a given context length. */
export interface DecodeRow extends RunTarget {
  context: number;
  /**
   * statecart, page wall time: (infer generating 1 + extraTokens) − (infer generating 1)
   * on the same hot base, divided by extraTokens; median over paired repetitions.
   */
  msPerToken: number;
  spread: Stat;
  extraTokens: number;
  /** The engine's generation timer of the longer call, divided by the tokens it generated. */
  workerMsPerToken: number;
  /** Plain, page wall time: the same difference from a state held in the plain worker. */
  plainMsPerToken: number;
}

/** Plain prefill throughput (no store, no hashing). */
export interface PrefillRow extends RunTarget {
  tokens: number;
  /** tokens / median wall time. */
  tokPerS: number;
  ms: Stat;
}

export interface RestoreRow extends RunTarget {
  tokens: number;
  stateBytes: number;
  /** createState of the text in a cleared store: prefill + store write (page wall time). */
  recomputeMs: Stat;
  /** Of recomputeMs, the prefill alone (the engine's timer). */
  recomputePrefillMs: Stat;
  /** The engine's restore timer on a hit in the in-memory tier: a lookup in the worker, no data read. */
  hotMs: Stat;
  /** The engine's restore timer on a read from IndexedDB after dropHot(), every blob digest-checked. */
  storedMs: Stat;
  /** Page wall time of infer(0 generated) that restores the base and computes its next-token logits. */
  hotFirstLogitsMs: Stat;
  storedFirstLogitsMs: Stat;
  /** Physical floor: a raw IndexedDB read of the same blobs plus SHA-256 of their bytes, in the page. */
  floorMs: Stat;
  /** One restore from IndexedDB cut into its steps (timed in the page), to show where the time goes. */
  storedProfile?: { prefixKeysMs: number; manifestsMs: number; blockChainMs: number; getStateMs: number };
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
  /** createState in a cleared store (page wall time). */
  reprefillMs: Stat;
  /** The engine's restore timer, in-memory tier: a lookup in the worker. */
  restoreMs: Stat;
  /** The engine's restore timer, from IndexedDB. */
  restoreStoredMs: Stat;
  /** reprefillMs / restoreMs (medians): a prefill against an in-worker lookup, not a user-facing speedup. */
  reprefillOverHotLookup: number;
  /** Set when the row was merged from another script's output rather than measured in this run. */
  from?: string;
}

export interface LoadRow extends RunTarget {
  /** Page wall time of loadModel (fetch + session creation). */
  wallMs: number;
  /** The worker's own figure. */
  loadMs: number;
  adapter: string | null;
  deviceReason: string;
  /** onnxruntime-web's WASM thread count in the statecart worker, read back after the load. */
  threads: number;
  /** The plain worker's load (page wall time) and thread count; null when it did not run. */
  plainWallMs: number | null;
  plainThreads: number | null;
}

export interface CodecRow {
  model: string;
  codec: string;
  bytes: number;
  maxLogitError: number;
  greedyMatch: boolean;
  /** bytes / the same state's fp16 bytes. */
  bytesVsFp16?: number;
  /** Mean KL(fp32 ‖ codec) of the next-token distributions over the probe, nats. */
  meanKL?: number;
  /** Probe positions where the codec's argmax is fp32's, of greedyTotal. */
  greedyAgree?: number;
  greedyTotal?: number;
  /** Tokens in the measured state. */
  stateTokens?: number;
  /** The codec the optimizer picked for this state. */
  chosen?: boolean;
  /** Where the row came from, when merged from another script's output. */
  from?: string;
  [k: string]: unknown;
}

/** How well a model predicts held-out text (bench/lib/quality.ts): measured in the run, on the ONNX graph the page is served. */
export interface QualityRow {
  model: string;
  /** Tokens predicted (each window's first token has no context and is not counted). */
  heldOutTokens: number;
  /** exp(mean negative log-likelihood, nats) over those tokens. */
  perplexity: number;
}

export interface SkipNote {
  what: string;
  reason: string;
}

/** The host, as Node sees it. */
export interface MachineInfo {
  cores: number;
  platform: string;
  node: string;
  cpuModel: string;
  memoryGiB: number;
  /** 1-, 5- and 15-minute load averages when the run started, and when it ended. */
  loadAvg: number[];
  loadAvgEnd?: number[];
}

/** The browser, as the bench page sees it. */
export interface BrowserInfo {
  name: string;
  version: string;
  userAgent: string;
  /** navigator.hardwareConcurrency in the page (null: not recorded, format 1). */
  hardwareConcurrency: number | null;
  crossOriginIsolated: boolean;
  /** onnxruntime-web's WASM thread count in the statecart worker (read back after a WASM load). */
  threads: number;
  /** The same in the plain worker, which is given the statecart worker's count (null: no plain worker ran). */
  plainThreads: number | null;
  webgpuAdapter: string | null;
  webgpuSoftware: boolean | null;
}

export type BenchMode = 'full' | 'quick' | 'partial';

export interface BenchResults {
  version: 2;
  /** full: every model, every row (latest.*, the README); quick: the tiny models (latest-quick.*); partial: anything narrowed by flags. */
  mode: BenchMode;
  /** The command that produced this file. */
  command: string;
  date: string;
  commit: string;
  /** Tracked files differed from the commit when the run started. */
  dirty: boolean;
  machine: MachineInfo;
  browser: BrowserInfo;
  devices: BenchDevice[];
  note: string;
  durationS: number;
  /** What the less obvious figures mean, written by the run that made them. */
  definitions: Record<string, string>;
  loads: LoadRow[];
  agentLoop: AgentLoopRow[];
  ttft: TtftRow[];
  decode: DecodeRow[];
  prefill: PrefillRow[];
  restore: RestoreRow[];
  storage: StorageResult[];
  mambaRestore: MambaRestoreRow[];
  codecs: CodecRow[];
  /** Held-out perplexity of the trained and the seeded GPT-2 (absent in files written before it was measured). */
  quality: QualityRow[];
  skipped: SkipNote[];
  /** Set when this object was read from a file of an older format (see bench/lib/upgrade.ts). */
  upgradedFrom?: number;
}
