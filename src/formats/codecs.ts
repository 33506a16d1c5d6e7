import { CorruptBlob, InvalidInput, MissingParent } from '../core/errors.ts';
import { float16ToFloat32, float32ToFloat16, HALF_MAX } from './fp16.ts';

/**
 * State codecs. Every encoding is self-describing: a 4-byte-aligned header
 * carries the codec, the dims and the parameters, so `decode` needs only the
 * bytes (a delta also needs its parent). Layout, all little-endian:
 *
 *   0  "SCC" 0x01            magic + layout version
 *   4  u8  codec id          1 fp32, 2 fp16, 6 int8, 7 kivi4, 5 delta
 *                            (3 int8 and 4 kivi4: the earlier layouts, decoded only)
 *   5  u8  ndims             0..8
 *   6  u16 P                 bytes of codec parameters
 *   8  u32 × ndims           dims
 *   .. P bytes of parameters, then zero padding to a multiple of 4
 *   .. payload (per codec, below); the total length is exact
 *
 * The quantizing codecs see a tensor as [G, T, C]: C = the last axis
 * (channels; head_dim for KV), T = the one before (tokens for KV
 * [n_head, tokens, head_dim]), G = the product of the rest (heads). A 1-D
 * tensor is [1, n, 1]; a scalar [1, 1, 1].
 */

export interface Tensor {
  dims: number[];
  data: Float32Array;
}

export type CodecName = 'fp32' | 'fp16' | 'int8' | 'kivi4';

export interface CodecParams {
  /** kivi4: 'key' quantizes per channel (over tokens), 'value' per token (over channels). Default 'key'. */
  kind?: 'key' | 'value';
  /** kivi4: the most recent R tokens stay fp16, unquantized (KIVI's residual window). Default 16; 0 for whole blocks. */
  residual?: number;
}

export interface Codec {
  readonly name: CodecName;
  readonly id: number;
  readonly lossless: boolean;
  encode(t: Tensor, params?: CodecParams): Uint8Array;
  decode(bytes: Uint8Array): Tensor;
}

const MAGIC = [0x53, 0x43, 0x43, 0x01];
const MAX_DIMS = 8;
// int8 and kivi4 got one-byte parameters under new ids (6, 7); the ids they had (3, 4) still decode exactly.
const ID = { fp32: 1, fp16: 2, int8v1: 3, kivi4v1: 4, delta: 5, int8: 6, kivi4: 7 } as const;
const NAME_OF: Record<number, CodecName | 'delta'> = { 1: 'fp32', 2: 'fp16', 3: 'int8', 4: 'kivi4', 5: 'delta', 6: 'int8', 7: 'kivi4' };

// ---------------------------------------------------------------- header

function checkTensor(t: Tensor, codec: string): number {
  if (!t || !Array.isArray(t.dims) || !(t.data instanceof Float32Array)) {
    throw new InvalidInput(`${codec}: a tensor is { dims: number[], data: Float32Array }`);
  }
  if (t.dims.length > MAX_DIMS) throw new InvalidInput(`${codec}: at most ${MAX_DIMS} dims, got ${t.dims.length}`);
  let n = 1;
  for (const d of t.dims) {
    if (!Number.isInteger(d) || d < 0 || d > 0xffffffff) throw new InvalidInput(`${codec}: dims must be integers in [0, 2^32), got [${t.dims.join(', ')}]`);
    n *= d;
  }
  if (n !== t.data.length) throw new InvalidInput(`${codec}: dims [${t.dims.join(', ')}] hold ${n} elements but data has ${t.data.length}`);
  return n;
}

function headerSize(ndims: number, p: number): number {
  return (8 + 4 * ndims + p + 3) & ~3;
}

function writeHeader(id: number, dims: number[], params: Uint8Array, payload: number): { out: Uint8Array; dv: DataView; off: number } {
  const h = headerSize(dims.length, params.length);
  const out = new Uint8Array(h + payload);
  out.set(MAGIC, 0);
  out[4] = id;
  out[5] = dims.length;
  const dv = new DataView(out.buffer);
  dv.setUint16(6, params.length, true);
  dims.forEach((d, i) => dv.setUint32(8 + 4 * i, d, true));
  out.set(params, 8 + 4 * dims.length);
  return { out, dv, off: h };
}

export interface CodecHeader {
  id: number;
  name: CodecName | 'delta';
  dims: number[];
  /** Element count (a safe integer). */
  n: number;
  params: Uint8Array;
  /** Where the payload starts. */
  off: number;
}

const corrupt = (msg: string): CorruptBlob => new CorruptBlob({ problem: `encoded state tensor: ${msg}` });

/** Reads and checks the header only. */
function readCodecHeader(bytes: Uint8Array): CodecHeader {
  if (!(bytes instanceof Uint8Array)) throw corrupt('expected bytes (Uint8Array)');
  if (bytes.length < 8) throw corrupt(`${bytes.length} bytes is shorter than the 8-byte header — truncated`);
  for (let i = 0; i < 4; i++) if (bytes[i] !== MAGIC[i]) throw corrupt('bad magic (expected "SCC\\x01") — not an encoded tensor, or damaged');
  const id = bytes[4]!;
  const name = NAME_OF[id];
  if (!name) throw corrupt(`unknown codec id ${id}`);
  const ndims = bytes[5]!;
  if (ndims > MAX_DIMS) throw corrupt(`${ndims} dims (at most ${MAX_DIMS})`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const p = dv.getUint16(6, true);
  const off = headerSize(ndims, p);
  if (bytes.length < off) throw corrupt(`header needs ${off} bytes, have ${bytes.length} — truncated`);
  const dims: number[] = [];
  let n = 1;
  for (let i = 0; i < ndims; i++) {
    const d = dv.getUint32(8 + 4 * i, true);
    dims.push(d);
    n *= d;
  }
  // Every payload holds at least n/2 bytes, so a bigger n is a lie; this also keeps n safe.
  if (n > 2 * bytes.length + 2) throw corrupt(`dims [${dims.join(', ')}] need more bytes than the ${bytes.length} given`);
  return { id, name, dims, n, params: bytes.subarray(8 + 4 * ndims, 8 + 4 * ndims + p), off };
}

/** The codec and dims of encoded bytes, without decoding. */
export function peekCodec(bytes: Uint8Array): { codec: CodecName | 'delta'; dims: number[] } {
  const h = readCodecHeader(bytes);
  return { codec: h.name, dims: h.dims };
}

function expectLength(bytes: Uint8Array, want: number, what: string): void {
  if (bytes.length !== want) {
    throw corrupt(`${what} should be ${want} bytes, is ${bytes.length} — ${bytes.length < want ? 'truncated' : 'has trailing bytes'}`);
  }
}

/** A typed view of `bytes[off, off + n·size)`, copied only when unaligned. */
function viewOf<T>(C: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number }, bytes: Uint8Array, off: number, n: number): T {
  const at = bytes.byteOffset + off;
  if (at % C.BYTES_PER_ELEMENT === 0) return new C(bytes.buffer, at, n);
  return new C(bytes.slice(off, off + n * C.BYTES_PER_ELEMENT).buffer, 0, n);
}

/** [G, T, C] as described at the top. */
function gtc(dims: number[]): [number, number, number] {
  if (dims.length === 0) return [1, 1, 1];
  if (dims.length === 1) return [1, dims[0]!, 1];
  const C = dims[dims.length - 1]!;
  const T = dims[dims.length - 2]!;
  let G = 1;
  for (let i = 0; i < dims.length - 2; i++) G *= dims[i]!;
  return [G, T, C];
}

const f32one = new Float32Array(1);
const u32one = new Uint32Array(f32one.buffer);
/** The next float32 above a non-negative float32. */
function nextUp(x: number): number {
  f32one[0] = x;
  u32one[0] = u32one[0]! + 1;
  return f32one[0]!;
}

/**
 * The float32 step for `range / levels`, rounded up if needed so that
 * range / step ≤ levels: no value is ever clamped, so |error| ≤ step / 2.
 */
function stepFor(range: number, levels: number): number {
  if (range === 0) return 0;
  let s = Math.fround(range / levels);
  while (range / s > levels) s = nextUp(s);
  return s;
}

function checkFinite(data: Float32Array, codec: string): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (x - x !== 0) throw new InvalidInput(`${codec}: element ${i} is ${x}; only finite values can be quantized`);
  }
}

// ---------------------------------------------------------------- fp32

const fp32: Codec = {
  name: 'fp32',
  id: ID.fp32,
  lossless: true,
  encode(t) {
    const n = checkTensor(t, 'fp32');
    const { out, off } = writeHeader(ID.fp32, t.dims, new Uint8Array(0), 4 * n);
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, 4 * n), off);
    return out;
  },
  decode(bytes) {
    const h = expectCodec(bytes, ID.fp32);
    expectLength(bytes, h.off + 4 * h.n, 'fp32 data');
    return { dims: h.dims, data: viewOf(Float32Array, bytes, h.off, h.n).slice() };
  },
};

function expectCodec(bytes: Uint8Array, ...ids: number[]): CodecHeader {
  const h = readCodecHeader(bytes);
  if (!ids.includes(h.id)) throw corrupt(`this is ${h.name} data, not ${NAME_OF[ids[0]!]}`);
  return h;
}

// ---------------------------------------------------------------- fp16

/** After conversion: an infinite half means the float was infinite or ≥ 65520 in magnitude. */
function checkHalfRange(half: Uint16Array, data: Float32Array, codec: string): void {
  for (let i = 0; i < half.length; i++) {
    if ((half[i]! & 0x7fff) === 0x7c00) {
      throw new InvalidInput(`${codec}: element ${i} is ${data[i]}, outside the half-precision range (±${HALF_MAX}); use fp32 or int8`);
    }
  }
}

const fp16: Codec = {
  name: 'fp16',
  id: ID.fp16,
  lossless: false,
  encode(t) {
    const n = checkTensor(t, 'fp16');
    const { out, off } = writeHeader(ID.fp16, t.dims, new Uint8Array(0), 2 * n);
    checkHalfRange(float32ToFloat16(t.data, new Uint16Array(out.buffer, off, n)), t.data, 'fp16');
    return out;
  },
  decode(bytes) {
    const h = expectCodec(bytes, ID.fp16);
    expectLength(bytes, h.off + 2 * h.n, 'fp16 data');
    return { dims: h.dims, data: float16ToFloat32(viewOf(Uint16Array, bytes, h.off, h.n)) };
  },
};

// ---------------------------------------------------------------- coded steps

/**
 * Quantizer steps stored in one byte each: step = base · 2^(−k/16) with
 * k ∈ [0, 255] and one float32 `base` per tensor (its largest step). In a
 * 16-token KV block the per-channel parameters cost as much as a third of
 * the codes when kept as float32; a byte each keeps the steps within 4.5% of
 * the ideal (never below it, so nothing is clamped) over 16 octaves.
 *
 * The fractions are literals, and the product is rounded the same way
 * everywhere, so every engine decodes the same bits.
 */
const FRAC16 = [
  1.0,
  0.9576032806985737,
  0.9170040432046712,
  0.8781260801866497,
  0.8408964152537145,
  0.8052451659746271,
  0.7711054127039704,
  0.7384130729697497,
  Math.SQRT1_2,
  0.6771277734684463,
  0.6484197773255048,
  0.620928906036742,
  0.5946035575013605,
  0.5693943173783458,
  0.5452538663326288,
  0.5221368912137069,
];
const POW2NEG = Array.from({ length: 16 }, (_, i) => 1 / (1 << i));

function codedStep(base: number, k: number): number {
  return Math.fround(base * FRAC16[k & 15]! * POW2NEG[k >> 4]!);
}

/** The largest code whose step is still ≥ need (so no value is clamped); 255 for a zero need. */
function stepCode(base: number, need: number): number {
  if (!(need > 0)) return 255;
  let k = Math.min(255, Math.max(0, Math.floor(16 * Math.log2(base / need))));
  while (k > 0 && codedStep(base, k) < need) k--;
  while (k < 255 && codedStep(base, k + 1) >= need) k++;
  return k;
}

/** One byte per need; base = the largest need. */
function codeSteps(need: Float32Array): { base: number; codes: Uint8Array; steps: Float32Array } {
  let base = 0;
  for (let i = 0; i < need.length; i++) if (need[i]! > base) base = need[i]!;
  const codes = new Uint8Array(need.length);
  const steps = new Float32Array(need.length);
  for (let i = 0; i < need.length; i++) {
    codes[i] = stepCode(base, need[i]!);
    steps[i] = codedStep(base, codes[i]!);
  }
  return { base, codes, steps };
}

function stepsOf(base: number, codes: Uint8Array): Float32Array {
  const steps = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) steps[i] = codedStep(base, codes[i]!);
  return steps;
}

function readBase(bytes: Uint8Array, at: number, what: string): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(at, true);
  if (!(v >= 0 && v < Infinity)) throw corrupt(`${what} is ${v}; it is finite and non-negative`);
  return v;
}

// ---------------------------------------------------------------- int8

/**
 * Symmetric absmax per channel: one step per (g, c), taken over the T axis
 * (for KV: per head and head_dim channel, over tokens — KV outliers live in
 * fixed channels). q = round(x / step) ∈ [-127, 127]; |error| ≤ step / 2.
 *
 * Codec id 6 (current) payload: float32 base, G·C step codes (one byte each,
 * see "coded steps"), then G·T·C int8.
 * Codec id 3 (written before; still decoded exactly): G·C float32 steps, then G·T·C int8.
 */
function int8Need(data: Float32Array, G: number, T: number, C: number): Float32Array {
  const absmax = new Float32Array(G * C);
  for (let g = 0; g < G; g++) {
    const a = g * C;
    for (let t = 0; t < T; t++) {
      const row = (g * T + t) * C;
      for (let c = 0; c < C; c++) {
        const v = Math.abs(data[row + c]!);
        if (v > absmax[a + c]!) absmax[a + c] = v;
      }
    }
  }
  for (let i = 0; i < absmax.length; i++) absmax[i] = stepFor(absmax[i]!, 127);
  return absmax;
}

/** The steps the int8 encoder uses for `data`. */
function int8Steps(data: Float32Array, G: number, T: number, C: number): { base: number; codes: Uint8Array; steps: Float32Array } {
  return codeSteps(int8Need(data, G, T, C));
}

const int8: Codec = {
  name: 'int8',
  id: ID.int8,
  lossless: false,
  encode(t) {
    const n = checkTensor(t, 'int8');
    checkFinite(t.data, 'int8');
    const [G, T, C] = gtc(t.dims);
    const { base, codes, steps } = int8Steps(t.data, G, T, C);
    const { out, dv, off } = writeHeader(ID.int8, t.dims, new Uint8Array(0), 4 + G * C + n);
    dv.setFloat32(off, base, true);
    out.set(codes, off + 4);
    const q = new Int8Array(out.buffer, off + 4 + G * C, n);
    const inv = new Float64Array(steps.length);
    for (let i = 0; i < steps.length; i++) inv[i] = steps[i] === 0 ? 0 : 1 / steps[i]!;
    const d = t.data;
    for (let g = 0; g < G; g++) {
      for (let tt = 0; tt < T; tt++) {
        const row = (g * T + tt) * C;
        for (let c = 0; c < C; c++) {
          // Multiplying by the reciprocal can land a hair off x / s; ±127 clamps that.
          const r = Math.round(d[row + c]! * inv[g * C + c]!);
          q[row + c] = r > 127 ? 127 : Math.max(r, -127);
        }
      }
    }
    return out;
  },
  decode(bytes) {
    const h = expectCodec(bytes, ID.int8, ID.int8v1);
    const out = new Float32Array(h.n);
    decodeInt8Into(bytes, out, 0);
    return { dims: h.dims, data: out };
  },
};

/**
 * Decodes int8 bytes (either layout) into `out` at `o`, without a temporary
 * array per tensor: the store restores int8 blocks through this, so that
 * restoring an int8 state is not slower than restoring fp32. Returns the
 * element count.
 */
export function decodeInt8Into(bytes: Uint8Array, out: Float32Array, o: number): number {
  const h = expectCodec(bytes, ID.int8, ID.int8v1);
  const [G, T, C] = gtc(h.dims);
  let steps: Float32Array;
  let at: number;
  if (h.id === ID.int8v1) {
    expectLength(bytes, h.off + 4 * G * C + h.n, 'int8 data');
    steps = viewOf(Float32Array, bytes, h.off, G * C);
    for (let i = 0; i < steps.length; i++) {
      const s = steps[i]!;
      if (!(s >= 0 && s < Infinity)) throw corrupt(`int8 scale ${i} is ${s}; scales are finite and non-negative`);
    }
    at = h.off + 4 * G * C;
  } else {
    expectLength(bytes, h.off + 4 + G * C + h.n, 'int8 data');
    steps = stepsOf(readBase(bytes, h.off, 'the int8 step base'), bytes.subarray(h.off + 4, h.off + 4 + G * C));
    at = h.off + 4 + G * C;
  }
  if (o + h.n > out.length) throw new RangeError('decodeInt8Into: the output is too short');
  const q = new Int8Array(bytes.buffer, bytes.byteOffset + at, h.n);
  for (let g = 0; g < G; g++) {
    const sg = g * C;
    for (let t = 0; t < T; t++) {
      const row = (g * T + t) * C;
      const dst = o + row;
      for (let c = 0; c < C; c++) out[dst + c] = q[row + c]! * steps[sg + c]!;
    }
  }
  return h.n;
}

// ---------------------------------------------------------------- kivi4

/**
 * 4-bit asymmetric quantization after KIVI (Liu et al., 2024): keys per
 * channel — one (min, step) per (g, c) over the quantized tokens — because
 * key outliers sit in fixed channels; values per token — one (min, step)
 * per (g, t) over C — because value error matters per token in the
 * attention-weighted sum. The last R tokens (R = `residual`, default 16)
 * stay fp16, as KIVI keeps its recent window in full precision.
 *
 * Parameters (P = 8): u8 kind (0 key, 1 value), u8 0, u16 0, u32 r (the
 * residual tokens actually kept, min(R, T)). With Tq = T − r and
 * groups = G·C (key) or G·Tq (value), codec id 7 (current) payload:
 *   float32 lo, float32 dmin, float32 base
 *   groups × u8 min codes                   min = lo + m·dmin (≤ the group's min)
 *   groups × u8 step codes                  see "coded steps"
 *   G·r·C fp16                              the residual tokens, row-major
 *   ceil(G·Tq·C / 2) bytes                  4-bit codes of [G, Tq, C], low nibble first
 * Codec id 4 (written before; still decoded exactly) has groups × (float32
 * min, float32 step) in place of the first three lines.
 * x ≈ min + q·step, q ∈ [0, 15]; |error| ≤ step / 2 per group.
 */
interface KiviLayout {
  G: number;
  T: number;
  C: number;
  r: number;
  Tq: number;
  groups: number;
  /** Bytes of the per-group parameters. */
  paramBytes: number;
  payload: number;
}

function kiviLayout(dims: number[], kind: 'key' | 'value', r: number, v1 = false): KiviLayout {
  const [G, T, C] = gtc(dims);
  const Tq = T - r;
  const groups = kind === 'key' ? G * C : G * Tq;
  const paramBytes = v1 ? 8 * groups : 12 + 2 * groups;
  const payload = paramBytes + 2 * G * r * C + Math.ceil((G * Tq * C) / 2);
  return { G, T, C, r, Tq, groups, paramBytes, payload };
}

function kiviParams(dims: number[], params: CodecParams | undefined): { kind: 'key' | 'value'; r: number } {
  const kind = params?.kind ?? 'key';
  if (kind !== 'key' && kind !== 'value') throw new InvalidInput(`kivi4: kind is 'key' or 'value', got ${String(kind)}`);
  const R = params?.residual ?? 16;
  if (!Number.isInteger(R) || R < 0) throw new InvalidInput(`kivi4: residual is a whole number of tokens, got ${R}`);
  const T = gtc(dims)[1];
  return { kind, r: Math.min(R, T) };
}

interface KiviGroups {
  lo: number;
  dmin: number;
  base: number;
  minCodes: Uint8Array;
  stepCodes: Uint8Array;
  /** Per group, as the decoder computes them. */
  mins: Float32Array;
  steps: Float32Array;
}

function storedMin(lo: number, dmin: number, m: number): number {
  return Math.fround(lo + m * dmin);
}

/** Each group's (min, step), as the encoder will store them. */
function kiviGroups(data: Float32Array, L: KiviLayout, kind: 'key' | 'value'): KiviGroups {
  const { G, T, C, Tq, groups } = L;
  const gmin = new Float64Array(groups).fill(Infinity);
  const gmax = new Float64Array(groups).fill(-Infinity);
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < Tq; t++) {
      const row = (g * T + t) * C;
      for (let c = 0; c < C; c++) {
        const k = kind === 'key' ? g * C + c : g * Tq + t;
        const v = data[row + c]!;
        if (v < gmin[k]!) gmin[k] = v;
        if (v > gmax[k]!) gmax[k] = v;
      }
    }
  }
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < groups; i++) {
    // A group with no values (keys when every token is in the residual window) quantizes nothing.
    if (gmin[i] === Infinity) {
      gmin[i] = 0;
      gmax[i] = 0;
    }
    lo = Math.min(lo, gmin[i]!);
    hi = Math.max(hi, gmin[i]!);
  }
  if (lo === Infinity) lo = hi = 0;
  const dmin = stepFor(hi - lo, 255);
  const minCodes = new Uint8Array(groups);
  const mins = new Float32Array(groups);
  const need = new Float32Array(groups);
  for (let i = 0; i < groups; i++) {
    let m = dmin === 0 ? 0 : Math.min(255, Math.max(0, Math.floor((gmin[i]! - lo) / dmin)));
    while (m > 0 && storedMin(lo, dmin, m) > gmin[i]!) m--;
    minCodes[i] = m;
    mins[i] = storedMin(lo, dmin, m);
    need[i] = stepFor(gmax[i]! - mins[i]!, 15);
  }
  const { base, codes: stepCodes, steps } = codeSteps(need);
  return { lo, dmin, base, minCodes, stepCodes, mins, steps };
}

function encodeKivi(t: Tensor, params?: CodecParams): Uint8Array {
  checkTensor(t, 'kivi4');
  checkFinite(t.data, 'kivi4');
  const { kind, r } = kiviParams(t.dims, params);
  const L = kiviLayout(t.dims, kind, r);
  const { G, T, C, Tq } = L;
  const p = new Uint8Array(8);
  p[0] = kind === 'key' ? 0 : 1;
  new DataView(p.buffer).setUint32(4, r, true);
  const { out, dv, off } = writeHeader(ID.kivi4, t.dims, p, L.payload);
  const q = kiviGroups(t.data, L, kind);
  dv.setFloat32(off, q.lo, true);
  dv.setFloat32(off + 4, q.dmin, true);
  dv.setFloat32(off + 8, q.base, true);
  out.set(q.minCodes, off + 12);
  out.set(q.stepCodes, off + 12 + L.groups);
  const d = t.data;
  if (r > 0) {
    const res = new Uint16Array(out.buffer, off + L.paramBytes, G * r * C);
    for (let g = 0; g < G; g++) {
      const src = d.subarray((g * T + Tq) * C, (g * T + T) * C);
      checkHalfRange(float32ToFloat16(src, res.subarray(g * r * C, (g + 1) * r * C)), src, 'kivi4 residual window');
    }
  }
  const codes = out.subarray(off + L.paramBytes + 2 * G * r * C);
  let i = 0; // index into [G, Tq, C]
  for (let g = 0; g < G; g++) {
    for (let tt = 0; tt < Tq; tt++) {
      const row = (g * T + tt) * C;
      for (let c = 0; c < C; c++, i++) {
        const k = kind === 'key' ? g * C + c : g * Tq + tt;
        const s = q.steps[k]!;
        let v = s === 0 ? 0 : Math.round((d[row + c]! - q.mins[k]!) / s);
        v = v < 0 ? 0 : Math.min(v, 15);
        codes[i >> 1]! |= (i & 1) === 0 ? v : v << 4;
      }
    }
  }
  return out;
}

function decodeKivi(bytes: Uint8Array): Tensor {
  const h = expectCodec(bytes, ID.kivi4, ID.kivi4v1);
  const v1 = h.id === ID.kivi4v1;
  if (h.params.length !== 8) throw corrupt(`kivi4 parameters are 8 bytes, found ${h.params.length}`);
  const kindByte = h.params[0]!;
  if (kindByte > 1) throw corrupt(`kivi4 kind byte is ${kindByte} (0 key, 1 value)`);
  const kind = kindByte === 0 ? 'key' : 'value';
  const r = new DataView(h.params.buffer, h.params.byteOffset, 8).getUint32(4, true);
  const [, T] = gtc(h.dims);
  if (r > T) throw corrupt(`kivi4 residual window of ${r} tokens is longer than the ${T} tokens`);
  const L = kiviLayout(h.dims, kind, r, v1);
  const { G, C, Tq, groups } = L;
  expectLength(bytes, h.off + L.payload, 'kivi4 data');
  let mins: Float32Array;
  let steps: Float32Array;
  if (v1) {
    const mm = viewOf(Float32Array, bytes, h.off, 2 * groups);
    for (let i = 0; i < mm.length; i++) {
      const v = mm[i]!;
      if (v - v !== 0 || ((i & 1) === 1 && v < 0)) throw corrupt(`kivi4 group ${i >> 1} has ${(i & 1) === 0 ? 'min' : 'step'} ${v}`);
    }
    mins = new Float32Array(groups);
    steps = new Float32Array(groups);
    for (let i = 0; i < groups; i++) {
      mins[i] = mm[2 * i]!;
      steps[i] = mm[2 * i + 1]!;
    }
  } else {
    const lo = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getFloat32(h.off, true);
    if (lo - lo !== 0) throw corrupt(`kivi4 min base is ${lo}; it is finite`);
    const dmin = readBase(bytes, h.off + 4, 'the kivi4 min step');
    const base = readBase(bytes, h.off + 8, 'the kivi4 step base');
    const mc = bytes.subarray(h.off + 12, h.off + 12 + groups);
    mins = new Float32Array(groups);
    for (let i = 0; i < groups; i++) mins[i] = storedMin(lo, dmin, mc[i]!);
    steps = stepsOf(base, bytes.subarray(h.off + 12 + groups, h.off + 12 + 2 * groups));
  }
  const out = new Float32Array(h.n);
  if (r > 0) {
    const res = float16ToFloat32(viewOf(Uint16Array, bytes, h.off + L.paramBytes, G * r * C));
    for (let g = 0; g < G; g++) out.set(res.subarray(g * r * C, (g + 1) * r * C), (g * T + Tq) * C);
  }
  const codes = bytes.subarray(h.off + L.paramBytes + 2 * G * r * C);
  let i = 0;
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < Tq; t++) {
      const row = (g * T + t) * C;
      for (let c = 0; c < C; c++, i++) {
        const b = codes[i >> 1]!;
        const q = (i & 1) === 0 ? b & 15 : b >> 4;
        const k = kind === 'key' ? g * C + c : g * Tq + t;
        out[row + c] = mins[k]! + q * steps[k]!;
      }
    }
  }
  return { dims: h.dims, data: out };
}

const kivi4: Codec = { name: 'kivi4', id: ID.kivi4, lossless: false, encode: encodeKivi, decode: decodeKivi };

// ---------------------------------------------------------------- registry

export const codecs: Readonly<Record<CodecName, Codec>> = Object.freeze({ fp32, fp16, int8, kivi4 });

export function isCodecName(x: unknown): x is CodecName {
  return typeof x === 'string' && Object.hasOwn(codecs, x);
}

export function getCodec(name: string): Codec {
  if (!isCodecName(name)) throw new InvalidInput(`unknown codec "${name}" (known: ${Object.keys(codecs).join(', ')})`);
  return codecs[name];
}

/** Decodes any codec's bytes; a delta needs its parent. */
export function decodeAny(bytes: Uint8Array, parent?: Tensor): Tensor {
  const h = readCodecHeader(bytes);
  if (h.name === 'delta') {
    if (!parent) throw new MissingParent({ kind: 'decode', problem: 'this tensor is a delta from a parent state; decode it with the parent' });
    return decodeDelta(bytes, parent);
  }
  return codecs[h.name].decode(bytes);
}

/** The exact encoded size, without encoding. */
export function encodedSize(name: CodecName, dims: number[], params?: CodecParams): number {
  const n = dims.reduce((a, b) => a * b, 1);
  switch (name) {
    case 'fp32':
      return headerSize(dims.length, 0) + 4 * n;
    case 'fp16':
      return headerSize(dims.length, 0) + 2 * n;
    case 'int8': {
      const [G, , C] = gtc(dims);
      return headerSize(dims.length, 0) + 4 + G * C + n;
    }
    case 'kivi4': {
      const { kind, r } = kiviParams(dims, params);
      return headerSize(dims.length, 8) + kiviLayout(dims, kind, r).payload;
    }
  }
}

// ---------------------------------------------------------------- delta

/**
 * A child state as its difference from a parent state's tensor of the same
 * dims, then any inner codec. Parameters (P = 8): u8 inner codec id, u8 mode
 * (0 arithmetic, 1 xor), u16 0, u32 a 32-bit hash of the parent's bits (to
 * refuse the wrong parent). Payload: the inner codec's complete encoding.
 *
 * What this buys, honestly: nothing in size by itself. A Mamba SSM state
 * decays and is rewritten by every token, so child − parent is dense; the
 * conv state is a window of the last d_conv inputs and is wholly replaced
 * after d_conv tokens. With fp32 inside we XOR the bits (exact round trip);
 * the XOR has long runs of zero high bits when states are close, which only
 * an entropy coder (e.g. CompressionStream('deflate') over the blob) turns
 * into bytes saved. With a lossy inner codec (int8, kivi4) the delta's range
 * is usually smaller than the state's, so at the same size the error is
 * smaller: the gain is accuracy per byte, not bytes.
 */
export function encodeDelta(child: Tensor, parent: Tensor, inner: CodecName = 'int8', params?: CodecParams): Uint8Array {
  const n = checkTensor(child, 'delta');
  checkTensor(parent, 'delta parent');
  if (child.dims.length !== parent.dims.length || child.dims.some((d, i) => d !== parent.dims[i])) {
    throw new InvalidInput(`delta: child dims [${child.dims.join(', ')}] differ from parent dims [${parent.dims.join(', ')}]`);
  }
  const codec = getCodec(inner);
  const xor = inner === 'fp32';
  const diff = new Float32Array(n);
  if (xor) {
    const a = new Uint32Array(child.data.buffer, child.data.byteOffset, n);
    const b = new Uint32Array(parent.data.buffer, parent.data.byteOffset, n);
    const o = new Uint32Array(diff.buffer);
    for (let i = 0; i < n; i++) o[i] = a[i]! ^ b[i]!;
  } else {
    for (let i = 0; i < n; i++) diff[i] = child.data[i]! - parent.data[i]!;
  }
  const body = codec.encode({ dims: child.dims, data: diff }, params);
  const p = new Uint8Array(8);
  p[0] = codec.id;
  p[1] = xor ? 1 : 0;
  new DataView(p.buffer).setUint32(4, hashBits(parent.data), true);
  const { out, off } = writeHeader(ID.delta, child.dims, p, body.length);
  out.set(body, off);
  return out;
}

/**
 * Checks a delta's bytes as far as they can be checked without the parent
 * (header, inner codec, payload) and returns the decoded difference (XOR
 * bits for an fp32 inner).
 */
export function checkDelta(bytes: Uint8Array): { dims: number[]; inner: CodecName; diff: Tensor } {
  const { h, innerName } = deltaHeader(bytes);
  const diff = codecs[innerName].decode(bytes.subarray(h.off));
  if (diff.dims.length !== h.dims.length || diff.dims.some((d, i) => d !== h.dims[i])) throw corrupt('delta: inner dims differ from outer dims');
  return { dims: h.dims, inner: innerName, diff };
}

function deltaHeader(bytes: Uint8Array): { h: CodecHeader; innerName: CodecName; mode: number; hash: number } {
  const h = expectCodec(bytes, ID.delta);
  if (h.params.length !== 8) throw corrupt(`delta parameters are 8 bytes, found ${h.params.length}`);
  const innerName = NAME_OF[h.params[0]!];
  const mode = h.params[1]!;
  if (!innerName || innerName === 'delta') throw corrupt(`delta inner codec id ${h.params[0]} is not a base codec`);
  if (mode > 1 || (mode === 1) !== (innerName === 'fp32')) throw corrupt(`delta mode ${mode} does not fit inner codec ${innerName}`);
  const hash = new DataView(h.params.buffer, h.params.byteOffset, 8).getUint32(4, true);
  return { h, innerName, mode, hash };
}

export function decodeDelta(bytes: Uint8Array, parent: Tensor): Tensor {
  const { h, mode, hash } = deltaHeader(bytes);
  if (
    !parent ||
    !(parent.data instanceof Float32Array) ||
    parent.data.length !== h.n ||
    parent.dims.length !== h.dims.length ||
    parent.dims.some((d, i) => d !== h.dims[i])
  ) {
    throw new MissingParent({
      kind: 'decode',
      problem: `delta: the parent given has dims [${parent?.dims?.join(', ')}], the delta was made from [${h.dims.join(', ')}]`,
    });
  }
  if (hashBits(parent.data) !== hash) {
    throw new MissingParent({
      kind: 'decode',
      problem: 'delta: the parent given is not the state this delta was made from (its bits hash differently); find the parent state it names',
    });
  }
  const inner = checkDelta(bytes).diff;
  const out = new Float32Array(h.n);
  if (mode === 1) {
    const a = new Uint32Array(inner.data.buffer, inner.data.byteOffset, h.n);
    const b = new Uint32Array(parent.data.buffer, parent.data.byteOffset, h.n);
    const o = new Uint32Array(out.buffer);
    for (let i = 0; i < h.n; i++) o[i] = a[i]! ^ b[i]!;
  } else {
    for (let i = 0; i < h.n; i++) out[i] = parent.data[i]! + inner.data[i]!;
  }
  return { dims: h.dims, data: out };
}

/** A fast non-cryptographic 32-bit hash of a float array's bits (murmur3-style mixing). */
function hashBits(data: Float32Array): number {
  const w = new Uint32Array(data.buffer, data.byteOffset, data.length);
  let h = 0x9747b28c ^ data.length;
  for (let i = 0; i < w.length; i++) {
    let k = Math.imul(w[i]!, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  return (Math.imul(h, 0xc2b2ae35) ^ (h >>> 16)) >>> 0;
}

// ---------------------------------------------------------------- bounds

const EPS = 2 ** -23; // covers the float32 rounding of the decoded value

/**
 * Each codec's stated worst-case absolute error, per element of `t`:
 * fp32 0; fp16 |x|·2^-11 (half an ulp of an 11-bit significand), or 2^-25
 * below 2^-14 (subnormal halves); int8 step/2 of the element's channel;
 * kivi4 step/2 of its group (fp16's bound inside the residual window).
 * Quantizers add |x|·2^-23 for the float32 rounding of min + q·step.
 * For a delta (pass `parent`), the inner codec's bound on child − parent.
 */
export function maxErrorBound(name: CodecName | 'delta', t: Tensor, params?: CodecParams & { inner?: CodecName }, parent?: Tensor): Float64Array {
  const n = checkTensor(t, 'maxErrorBound');
  const d = t.data;
  const out = new Float64Array(n);
  switch (name) {
    case 'fp32':
      return out;
    case 'fp16':
      for (let i = 0; i < n; i++) out[i] = halfBound(d[i]!);
      return out;
    case 'int8': {
      const [G, T, C] = gtc(t.dims);
      const s = int8Steps(d, G, T, C).steps;
      for (let g = 0; g < G; g++)
        for (let tt = 0; tt < T; tt++)
          for (let c = 0; c < C; c++) {
            const i = (g * T + tt) * C + c;
            out[i] = s[g * C + c]! / 2 + 127 * s[g * C + c]! * EPS;
          }
      return out;
    }
    case 'kivi4': {
      const { kind, r } = kiviParams(t.dims, params);
      const L = kiviLayout(t.dims, kind, r);
      const { mins, steps } = kiviGroups(d, L, kind);
      const { G, T, C, Tq } = L;
      for (let g = 0; g < G; g++)
        for (let tt = 0; tt < T; tt++)
          for (let c = 0; c < C; c++) {
            const i = (g * T + tt) * C + c;
            if (tt >= Tq) out[i] = halfBound(d[i]!);
            else {
              const k = kind === 'key' ? g * C + c : g * Tq + tt;
              out[i] = steps[k]! / 2 + (Math.abs(mins[k]!) + 15 * steps[k]!) * EPS;
            }
          }
      return out;
    }
    case 'delta': {
      if (!parent) throw new InvalidInput('maxErrorBound: a delta bound needs the parent');
      const inner = params?.inner ?? 'int8';
      if (inner === 'fp32') return out;
      const diff = new Float32Array(n);
      for (let i = 0; i < n; i++) diff[i] = d[i]! - parent.data[i]!;
      const b = maxErrorBound(inner, { dims: t.dims, data: diff }, params);
      for (let i = 0; i < n; i++) b[i] = b[i]! + (Math.abs(diff[i]!) + Math.abs(d[i]!) + b[i]!) * EPS;
      return b;
    }
    default:
      throw new InvalidInput(`maxErrorBound: unknown codec "${String(name)}"`);
  }
}

function halfBound(x: number): number {
  const a = Math.abs(x);
  return a < 2 ** -14 ? 2 ** -25 : a * 2 ** -11;
}
