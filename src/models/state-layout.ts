import type { ModelState, StateTensor } from './types.ts';
import { BLOCK_TOKENS } from '../core/state-key.ts';
import { CorruptBlob } from '../core/errors.ts';

/**
 * How a state is cut into stored blocks. A GPT-2 KV state is sliced along
 * its token axis into 16-token blocks (a block is shared by every state whose
 * tokens start the same way); a Mamba state cannot be sliced by token, so it
 * is one block holding every tensor whole.
 */
export interface TensorSpec {
  name: string;
  /** Dims of the whole state's tensor. */
  dims: number[];
}

export interface BlockSlice {
  /** Token range [start, end) this block covers (Mamba: the whole state). */
  start: number;
  end: number;
  /** fp32 bytes: each tensor's slice, in tensor order, row-major. */
  data: Float32Array;
}

export const TOKEN_AXIS = 1; // GPT-2 KV tensors are [n_head, tokens, head_dim]

export function tensorSpecs(state: ModelState): TensorSpec[] {
  return state.tensors.map((t) => ({ name: t.name, dims: [...t.dims] }));
}

/** Cuts a state into blocks covering [from, tokens.length) (from must be block-aligned). */
export function cutBlocks(state: ModelState, from = 0): BlockSlice[] {
  const n = state.tokens.length;
  if (state.arch === 'mamba') {
    let size = 0;
    for (const t of state.tensors) size += t.data.length;
    const data = new Float32Array(size);
    let o = 0;
    for (const t of state.tensors) {
      data.set(t.data, o);
      o += t.data.length;
    }
    return [{ start: 0, end: n, data }];
  }
  if (from % BLOCK_TOKENS !== 0) throw new RangeError('blocks start at multiples of 16 tokens');
  const out: BlockSlice[] = [];
  for (let start = from; start < n; start += BLOCK_TOKENS) {
    const end = Math.min(start + BLOCK_TOKENS, n);
    out.push({ start, end, data: sliceTokens(state.tensors, start, end) });
  }
  return out;
}

function sliceTokens(tensors: StateTensor[], start: number, end: number): Float32Array {
  const len = end - start;
  let size = 0;
  for (const t of tensors) size += t.dims[0]! * len * t.dims[2]!;
  const out = new Float32Array(size);
  let o = 0;
  for (const t of tensors) {
    const [h, T, d] = t.dims as [number, number, number];
    for (let i = 0; i < h; i++) {
      const src = (i * T + start) * d;
      out.set(t.data.subarray(src, src + len * d), o);
      o += len * d;
    }
  }
  return out;
}

/** Rebuilds a whole state from its blocks, in token order. */
export function joinBlocks(
  arch: 'gpt2' | 'mamba',
  tokens: number[],
  specs: TensorSpec[],
  blocks: { start: number; end: number; data: Float32Array }[],
): ModelState {
  if (arch === 'mamba') {
    const data = blocks[0]?.data;
    let o = 0;
    const tensors = specs.map((s) => {
      const size = s.dims.reduce((a, b) => a * b, 1);
      if (!data || o + size > data.length) throw new CorruptBlob('a stored Mamba state is shorter than its manifest says');
      const t = { name: s.name, dims: [...s.dims], data: data.slice(o, o + size) };
      o += size;
      return t;
    });
    return { arch, tokens: [...tokens], tensors };
  }
  const T = tokens.length;
  const tensors = specs.map((s) => ({
    name: s.name,
    dims: [s.dims[0]!, T, s.dims[2]!],
    data: new Float32Array(s.dims[0]! * T * s.dims[2]!),
  }));
  let covered = 0;
  for (const b of blocks) {
    if (b.start !== covered) throw new CorruptBlob(`state blocks are not contiguous at token ${covered}`);
    const len = b.end - b.start;
    let o = 0;
    for (const t of tensors) {
      const [h, , d] = t.dims as [number, number, number];
      for (let i = 0; i < h; i++) {
        if (o + len * d > b.data.length) throw new CorruptBlob('a stored KV block is shorter than its manifest says');
        t.data.set(b.data.subarray(o, o + len * d), (i * T + b.start) * d);
        o += len * d;
      }
    }
    if (o !== b.data.length) throw new CorruptBlob('a stored KV block is longer than its manifest says');
    covered = b.end;
  }
  if (covered !== T) throw new CorruptBlob(`state blocks cover ${covered} of ${T} tokens`);
  return { arch, tokens: [...tokens], tensors };
}

/** The first `n` tokens of a GPT-2 state (a prefix of a KV cache is the KV cache of the prefix). */
export function truncateState(state: ModelState, n: number): ModelState {
  if (state.arch !== 'gpt2') throw new RangeError('only a KV state can be cut by token');
  if (n === state.tokens.length) return state;
  const tensors = state.tensors.map((t) => {
    const [h, T, d] = t.dims as [number, number, number];
    const data = new Float32Array(h * n * d);
    for (let i = 0; i < h; i++) data.set(t.data.subarray(i * T * d, (i * T + n) * d), i * n * d);
    return { name: t.name, dims: [h, n, d], data };
  });
  return { arch: state.arch, tokens: state.tokens.slice(0, n), tensors };
}

export function stateBytes(state: ModelState): number {
  let n = 0;
  for (const t of state.tensors) n += t.data.byteLength;
  return n;
}
