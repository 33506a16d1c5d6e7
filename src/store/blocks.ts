import { frameParts } from '../formats/frame.ts';
import { BLOCK_TOKENS } from '../core/key-chain.ts';
import { CorruptBlob } from '../core/errors.ts';
import { dimsAt, isSliceable, sliceTokens, type ModelState, type StateTensor, type TensorSpec } from '../core/state.ts';
import { decodeInt8Into, getCodec, isCodecName, peekCodec, type CodecName, type CodecParams } from '../formats/codecs.ts';

/**
 * How a state is cut into stored blocks. A state whose tensors have a token
 * axis (a KV cache) is sliced along it into 16-token blocks, and a block is
 * shared by every state whose tokens start the same way; a fixed-size state
 * (SSM) cannot be sliced, so it is one block holding every tensor whole.
 */
export type { TensorSpec };

export interface BlockSlice {
  /** Token range [start, end) this block covers (a fixed-size state: the whole state). */
  start: number;
  end: number;
  /** fp32 values: each tensor's slice, in tensor order, row-major. */
  data: Float32Array;
}

/** Name under which a state's last logits are stored beside its tensors ([vocab, 1]: one int8 scale for all). */
const LOGITS_TENSOR = 'last_logits';

/** The specs a stored state's blocks hold: its tensors, and its last logits when it keeps them. */
export function tensorSpecs(state: ModelState): TensorSpec[] {
  const specs: TensorSpec[] = state.tensors.map((t) => ({ name: t.name, dims: [...t.dims], ...(t.tokenAxis !== undefined ? { tokenAxis: t.tokenAxis } : {}) }));
  // Only a fixed-size state keeps them (a KV state recomputes them from its last token).
  if (state.logits && !isSliceable(state.tensors)) specs.push({ name: LOGITS_TENSOR, dims: [state.logits.length, 1] });
  return specs;
}

/** Cuts a state into blocks covering [from, tokens.length) (from must be block-aligned). */
export function cutBlocks(state: ModelState, from = 0): BlockSlice[] {
  const n = state.tokens.length;
  if (!isSliceable(state.tensors)) {
    const parts = state.tensors.map((t) => t.data);
    if (state.logits) parts.push(state.logits);
    let size = 0;
    for (const p of parts) size += p.length;
    const data = new Float32Array(size);
    let o = 0;
    for (const p of parts) {
      data.set(p, o);
      o += p.length;
    }
    return [{ start: 0, end: n, data }];
  }
  if (from % BLOCK_TOKENS !== 0) throw new RangeError('blocks start at multiples of 16 tokens');
  const out: BlockSlice[] = [];
  for (let start = from; start < n; start += BLOCK_TOKENS) {
    const end = Math.min(start + BLOCK_TOKENS, n);
    out.push({ start, end, data: sliceAll(state.tensors, start, end) });
  }
  return out;
}

function sliceAll(tensors: StateTensor[], start: number, end: number): Float32Array {
  const parts = tensors.map((t) => sliceTokens(t, start, end));
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Float32Array(size);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const product = (xs: readonly number[]): number => xs.reduce((a, b) => a * b, 1);

/** Rebuilds a whole state from its blocks, in token order. */
export function joinBlocks(tokens: number[], specs: TensorSpec[], blocks: { start: number; end: number; data: Float32Array }[]): ModelState {
  const stateSpecs = specs.filter((s) => s.name !== LOGITS_TENSOR);
  if (!isSliceable(stateSpecs)) {
    const data = blocks[0]?.data;
    let o = 0;
    let logits: Float32Array | undefined;
    const tensors: StateTensor[] = [];
    for (const s of specs) {
      const size = product(s.dims);
      if (!data || o + size > data.length) throw new CorruptBlob({ problem: 'a stored state is shorter than its manifest says' });
      if (s.name === LOGITS_TENSOR) logits = data.slice(o, o + size);
      else tensors.push({ name: s.name, dims: [...s.dims], data: data.slice(o, o + size) });
      o += size;
    }
    return { tokens: [...tokens], tensors, ...(logits ? { logits } : {}) };
  }
  const T = tokens.length;
  const tensors = allocTensors(stateSpecs, T);
  let covered = 0;
  for (const b of blocks) {
    if (b.start !== covered) throw new CorruptBlob({ problem: `state blocks are not contiguous at token ${covered}` });
    placeBlock(tensors, T, b.start, b.end, b.data);
    covered = b.end;
  }
  if (covered !== T) throw new CorruptBlob({ problem: `state blocks cover ${covered} of ${T} tokens` });
  return { tokens: [...tokens], tensors };
}

/** Zeroed tensors of a sliceable state of T tokens, for placeBlock to fill. */
export function allocTensors(specs: TensorSpec[], T: number): StateTensor[] {
  return specs.map((s) => {
    const dims = dimsAt(s, T);
    return { name: s.name, dims, tokenAxis: s.tokenAxis, data: new Float32Array(product(dims)) };
  });
}

/**
 * Copies one block's values into a state's tensors (T tokens): `data` is in
 * BlockSlice layout with `span` tokens per row, of which the first
 * `end − start` are kept (a shorter state's tail in a longer state's block).
 * One copy, straight from the bytes read to the tensors handed to the runtime.
 */
export function placeBlock(tensors: StateTensor[], T: number, start: number, end: number, data: Float32Array, span = end - start): void {
  const len = end - start;
  let o = 0;
  for (const t of tensors) {
    const ax = t.tokenAxis!;
    const outer = product(t.dims.slice(0, ax));
    const inner = product(t.dims.slice(ax + 1));
    for (let i = 0; i < outer; i++) {
      if (o + span * inner > data.length) throw new CorruptBlob({ problem: 'a stored KV block is shorter than its manifest says' });
      t.data.set(data.subarray(o, o + len * inner), (i * T + start) * inner);
      o += span * inner;
    }
  }
  if (o !== data.length) throw new CorruptBlob({ problem: 'a stored KV block is longer than its manifest says' });
}

// ------------------------------------------------------------ encoded blocks

/**
 * A block stored with a codec other than fp32 is a frame of one encoding per
 * tensor slice, in tensor order (GPT-2: each layer's key and value slice
 * [n_head, len, head_dim]; Mamba: each tensor whole). An fp32 block keeps the
 * bare layout of BlockSlice.data: blobs written before codecs existed, and
 * by other writers, stay readable, and the fastest path stays a plain view.
 *
 * Frame: "SCB" 0x01, u32 count, u32 × count byte lengths, then each encoding
 * padded with zeros to a multiple of 4 bytes (so typed views need no copy).
 */
const FRAME_MAGIC = [0x53, 0x43, 0x42, 0x01];

export type BlockCodec = CodecName;

/** Dims of each tensor's slice within a block of `len` tokens. */
export function sliceDims(specs: TensorSpec[], len: number): number[][] {
  return specs.map((s) => dimsAt(s, len));
}

/**
 * KIVI's rule: keys per channel, values per token. Inside a 16-token block
 * there is no residual window: the block is complete and immutable once stored.
 */
export function codecParamsFor(name: string): CodecParams {
  return { kind: name.endsWith('.value') ? 'value' : 'key', residual: 0 };
}

export function encodeBlock(specs: TensorSpec[], block: BlockSlice, codec: BlockCodec): Uint8Array {
  if (codec === 'fp32') return new Uint8Array(block.data.buffer, block.data.byteOffset, block.data.byteLength);
  const c = getCodec(codec);
  const dims = sliceDims(specs, block.end - block.start);
  const parts: Uint8Array[] = [];
  let o = 0;
  specs.forEach((s, i) => {
    const n = dims[i]!.reduce((a, b) => a * b, 1);
    parts.push(c.encode({ dims: dims[i]!, data: block.data.subarray(o, o + n) }, codecParamsFor(s.name)));
    o += n;
  });
  if (o !== block.data.length) throw new RangeError('block data does not match the tensor specs');
  return frameParts(FRAME_MAGIC, parts);
}

/** The inverse of encodeBlock: fp32 data in BlockSlice layout, checked against the specs. */
export function decodeBlock(specs: TensorSpec[], start: number, end: number, codec: string, bytes: Uint8Array): Float32Array {
  const dims = sliceDims(specs, end - start);
  let total = 0;
  for (const d of dims) total += d.reduce((a, b) => a * b, 1);
  if (codec === 'fp32') {
    if (bytes.byteLength !== 4 * total)
      throw new CorruptBlob({ problem: `an fp32 block of tokens ${start}–${end} should be ${4 * total} bytes, is ${bytes.byteLength}` });
    return bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, total) : new Float32Array(bytes.slice().buffer);
  }
  if (!isCodecName(codec)) throw new CorruptBlob({ problem: `a stored block names the unknown codec "${codec}"` });
  if (bytes.length < 8 || FRAME_MAGIC.some((b, i) => bytes[i] !== b))
    throw new CorruptBlob({ problem: `a ${codec} block of tokens ${start}–${end} does not start with the block frame magic` });
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = dv.getUint32(4, true);
  if (count !== specs.length) throw new CorruptBlob({ problem: `a ${codec} block holds ${count} tensors, the state has ${specs.length}` });
  const out = new Float32Array(total);
  let at = 8 + 4 * count;
  let o = 0;
  for (let i = 0; i < count; i++) {
    const len = dv.getUint32(8 + 4 * i, true);
    if (at + len > bytes.length) throw new CorruptBlob({ problem: `a ${codec} block is truncated at tensor ${specs[i]!.name}` });
    const part = bytes.subarray(at, at + len);
    const h = peekCodec(part);
    if (h.codec !== codec) throw new CorruptBlob({ problem: `tensor ${specs[i]!.name} in a ${codec} block is encoded as ${h.codec}` });
    const want = dims[i]!;
    if (h.dims.length !== want.length || h.dims.some((d, j) => d !== want[j]))
      throw new CorruptBlob({ problem: `tensor ${specs[i]!.name} is [${h.dims.join(', ')}] in its block, expected [${want.join(', ')}]` });
    // int8 straight into the block's buffer, so that restoring an int8 state is not slower than fp32 (bench/codec-restore.ts).
    if (codec === 'int8') o += decodeInt8Into(part, out, o);
    else {
      const t = getCodec(codec).decode(part);
      out.set(t.data, o);
      o += t.data.length;
    }
    at += (len + 3) & ~3;
  }
  if (at !== bytes.length) throw new CorruptBlob({ problem: `a ${codec} block has ${bytes.length - at} trailing bytes` });
  return out;
}
