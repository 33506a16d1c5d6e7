import type { ModelIdentity, Provenance } from '../core/model-fingerprint.ts';
import type { ModelState, RunOptions, TensorSpec } from '../core/state.ts';

export type { ModelState, Progress, RunOptions, StateTensor, TensorSpec } from '../core/state.ts';

export type Device = 'webgpu' | 'wasm' | 'cpu';

/**
 * A run of the model on top of a state: the runtime may keep the state
 * between calls (it does not turn into JS arrays per token); `state()` makes
 * it plain arrays once, at the end.
 */
export interface ModelRun {
  /** Every token of the run's state: the start state's, then each token fed. */
  readonly tokens: readonly number[];
  /** Runs new tokens; resolves to the logits of the last one. */
  feed(tokens: number[], opts?: RunOptions): Promise<Float32Array>;
  /** The state after every token fed so far, as plain arrays. */
  state(): Promise<ModelState>;
  /** Frees what the runtime holds for this run. */
  close(): void;
}

/**
 * A language model whose state statecart caches. What differs between
 * architectures is said here, as properties, so that the layers above never
 * test an architecture's name.
 */
export interface StateModel {
  readonly id: string;
  /** The architecture's name, for display and cartridge metadata only. */
  readonly arch: string;
  /** Hex sha256 model fingerprint (DESIGN.md, "State keys"). */
  readonly fingerprint: string;
  readonly identity: ModelIdentity;
  readonly device: Device;
  readonly adapter: string | null;
  /** Why this device was chosen ("forced", "no WebGPU adapter", ...). */
  readonly deviceReason: string;
  /** Most tokens one state may hold (GPT-2: n_positions; Mamba: unbounded → Infinity). */
  readonly maxTokens: number;
  readonly vocabSize: number;
  /** Names, dims and token axes of the state's tensors (a token axis has 0 here). */
  readonly stateSpecs: TensorSpec[];
  /**
   * A prefix of a state is the state of the prefix, so states can be cut by
   * token: stored in 16-token blocks shared between states, truncated, and
   * rebuilt from any run of stored blocks (KV caches). False for a
   * fixed-size state (SSM), which exists only at the end of its text.
   */
  readonly sliceable: boolean;
  /**
   * States keep their last position's logits (stored with them): a state that
   * cannot be cut back by one token could not recompute them otherwise.
   */
  readonly keepsLastLogits: boolean;
  /** What computes this model's states (device, runtimes, dtype), set by the host that loaded it; recorded with each state, not in its key. */
  provenance?: Provenance;
  tokenize(text: string): Promise<number[]>;
  decode(tokens: number[]): string;
  /** Starts a run on top of `from` (or on nothing). */
  open(from?: ModelState): ModelRun;
  /**
   * Runs `tokens` (the new ones only) on top of `from` (or from nothing) and
   * returns the state after them and the logits of the last position.
   */
  prefill(tokens: number[], from?: ModelState, opts?: RunOptions): Promise<{ state: ModelState; logits: Float32Array }>;
  dispose(): Promise<void>;
}

/** prefill() as one run: open, feed, read the state, close. */
export async function prefillByRun(
  model: StateModel,
  tokens: number[],
  from?: ModelState,
  opts?: RunOptions,
): Promise<{ state: ModelState; logits: Float32Array }> {
  const run = model.open(from);
  try {
    const logits = await run.feed(tokens, opts);
    return { state: await run.state(), logits };
  } finally {
    run.close();
  }
}
