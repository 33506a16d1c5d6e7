/**
 * What a model state is, for every layer above the models: plain typed arrays
 * and shapes, never a live runtime buffer. Whether a state can be cut by token
 * is a property of its tensors (a token axis), not of an architecture name:
 * a KV cache grows along one axis and any prefix of it is the state of the
 * prefix; an SSM state has a fixed size and cannot be cut.
 */

/** A state tensor's name and dims, and which axis (if any) grows with the tokens. */
export interface TensorSpec {
  /** `layers.N.key` / `layers.N.value` (KV), `layers.N.conv` / `layers.N.ssm` (SSM). */
  name: string;
  /** Dims without a batch axis. For a tensor with a token axis, that entry is the state's token count. */
  dims: number[];
  /** The axis that grows with tokens (KV: 1 in [n_head, tokens, head_dim]); absent for a fixed-size tensor. */
  tokenAxis?: number;
}

export interface StateTensor extends TensorSpec {
  data: Float32Array;
}

export interface ModelState {
  /** Every token the state has seen, from the first. */
  tokens: number[];
  tensors: StateTensor[];
  /**
   * The last position's logits, when the model keeps them (a state that
   * cannot be cut back by a token could not recompute them without re-running
   * the whole text). Runners ignore this field.
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

/** States with these tensors can be cut by token: every tensor has a token axis. */
export function isSliceable(specs: readonly TensorSpec[]): boolean {
  return specs.length > 0 && specs.every((s) => s.tokenAxis !== undefined);
}

/** The spec's dims with its token axis (if any) set to `tokens`. */
export function dimsAt(spec: TensorSpec, tokens: number): number[] {
  const d = [...spec.dims];
  if (spec.tokenAxis !== undefined) d[spec.tokenAxis] = tokens;
  return d;
}

const product = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

/** Elements before and after the token axis: a tensor is [outer, tokens, inner]. */
function around(t: TensorSpec): { outer: number; T: number; inner: number } {
  const ax = t.tokenAxis!;
  return { outer: product(t.dims.slice(0, ax)), T: t.dims[ax]!, inner: product(t.dims.slice(ax + 1)) };
}

/** Tokens [start, end) of a tensor with a token axis, as a new array in the same layout. */
export function sliceTokens(t: StateTensor, start: number, end: number): Float32Array {
  const { outer, T, inner } = around(t);
  const n = end - start;
  const out = new Float32Array(outer * n * inner);
  for (let o = 0; o < outer; o++) out.set(t.data.subarray((o * T + start) * inner, (o * T + end) * inner), o * n * inner);
  return out;
}

/** The state of the first `n` tokens (a prefix of a KV cache is the KV cache of the prefix). */
export function truncateState(state: ModelState, n: number): ModelState {
  if (n === state.tokens.length) return state;
  if (!isSliceable(state.tensors)) throw new RangeError('a fixed-size state cannot be cut by token');
  const tensors = state.tensors.map((t) => ({ name: t.name, dims: dimsAt(t, n), tokenAxis: t.tokenAxis, data: sliceTokens(t, 0, n) }));
  return { tokens: state.tokens.slice(0, n), tensors };
}

/** Joins tensors over consecutive token ranges (same spec, each with its own token count) along the token axis. */
export function concatTokens(parts: StateTensor[]): StateTensor {
  const first = parts[0]!;
  let T = 0;
  for (const p of parts) T += p.dims[first.tokenAxis!]!;
  const dims = dimsAt(first, T);
  const { outer, inner } = around(first);
  const data = new Float32Array(outer * T * inner);
  let at = 0;
  for (const p of parts) {
    const n = p.dims[first.tokenAxis!]!;
    for (let o = 0; o < outer; o++) data.set(p.data.subarray(o * n * inner, (o + 1) * n * inner), (o * T + at) * inner);
    at += n;
  }
  return { name: first.name, dims, tokenAxis: first.tokenAxis, data };
}

export function stateBytes(state: ModelState): number {
  let n = 0;
  for (const t of state.tensors) n += t.data.byteLength;
  return n + (state.logits?.byteLength ?? 0);
}
