import type { ModelIdentity } from '../core/model-fingerprint.ts';

/** One state tensor: plain typed arrays and a shape, never a live GPU buffer. */
export interface StateTensor {
  /** `layers.N.key` / `layers.N.value` (GPT-2, dims [n_head, tokens, head_dim]); `layers.N.conv` / `layers.N.ssm` (Mamba). */
  name: string;
  dims: number[];
  data: Float32Array;
}

export interface ModelState {
  arch: 'gpt2' | 'mamba';
  /** Every token the state has seen, from the first. */
  tokens: number[];
  tensors: StateTensor[];
  /**
   * The last position's logits, when kept (Mamba): a Mamba state cannot be cut
   * back by a token to recompute them, so without these a request that adds
   * no tokens would re-run the whole text. Runners ignore this field.
   */
  logits?: Float32Array;
}

export interface Progress {
  done: number;
  total: number;
}

export interface RunOptions {
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export type Device = 'webgpu' | 'wasm' | 'cpu';

export interface StateModel {
  readonly id: string;
  readonly arch: 'gpt2' | 'mamba';
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
  /** Names and dims of the state's tensors (GPT-2: the token axis is 0 here). */
  readonly stateSpecs: { name: string; dims: number[] }[];
  tokenize(text: string): Promise<number[]>;
  decode(tokens: number[]): string;
  /**
   * Runs `tokens` (the new ones only) on top of `from` (or from nothing) and
   * returns the state after them and the logits of the last position.
   */
  prefill(tokens: number[], from?: ModelState, opts?: RunOptions): Promise<{ state: ModelState; logits: Float32Array }>;
  dispose(): Promise<void>;
}
