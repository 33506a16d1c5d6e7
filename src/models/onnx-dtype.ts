/**
 * Our fp32 GPT-2 ONNX model (gpt2-onnx.ts) in the two other precisions the
 * Hub's transformers.js repositories ship, made the way those files are made:
 *
 *   model_fp16.onnx       every float tensor float16, graph inputs and outputs
 *                         included (onnxconverter_common's
 *                         convert_float_to_float16 with keep_io_types=False,
 *                         as transformers.js' scripts/quantize.py runs it): the
 *                         past_key_values.* inputs, present.* outputs and the
 *                         logits are float16. transformers.js reads the cache
 *                         dtype from the session's input metadata and casts
 *                         float16 logits to float32 before sampling.
 *   model_quantized.onnx  onnxruntime.quantization.quantize_dynamic as
 *                         transformers.js' "q8" runs it (per_channel and
 *                         reduce_range off; int8 weights unless the model has a
 *                         Conv; MatMulConstBOnly): every MatMul whose B is a
 *                         constant becomes
 *                           DynamicQuantizeLinear(A) → MatMulInteger(Aq, Wq, Azp, Wzp)
 *                           → Cast(float) → Mul(·, A_scale·W_scale)
 *                         with per-tensor weight scales. Everything else (the
 *                         embeddings' Gather, LayerNorm, attention, the KV cache)
 *                         stays float32.
 *
 * Our LM head is MatMul(x, Transpose(wte)), tied to the embedding. The Hub's
 * exports store the head as a constant, so quantize_dynamic quantizes it (that
 * is what makes Xenova/gpt2's model_quantized.onnx 281 MB: int8 layers and
 * head, fp32 wte for the Gather). To match, `foldTransposedWeights` (default
 * on) quantizes the transposed constant in place of the Transpose, and wte
 * stays float32 for the Gather. For a small model whose embedding dominates
 * (tiny-gpt2) the q8 file is therefore larger than the fp32 one.
 *
 * Only ops whose float math is type-generic are accepted (FP16_OPS); anything
 * else throws rather than silently producing a graph that mixes types. The
 * ops used are in onnxruntime's CPU EP, which is what onnxruntime-web's WASM
 * backend is built from (MatMulInteger and DynamicQuantizeLinear have no
 * WebGPU kernels; a WebGPU session runs them on the CPU).
 *
 * Pure: bytes in, bytes out, deterministic, no Node APIs.
 */
import type p from 'onnx-proto';
import { float32ToFloat16, HALF_MAX } from '../formats/fp16.ts';
import { DT, onnx } from './onnx-util.ts';

type Model = p.onnx.ModelProto;
type Tensor = p.onnx.ITensorProto;
type Node = p.onnx.INodeProto;

/**
 * Ops that compute in their input's float type (or touch no floats), so that
 * turning every float tensor into float16 keeps the graph well typed. Cast and
 * Constant are handled on their own. Range is here for its integer use (our
 * graphs' positions): ONNX has no float16 Range, so a float Range would need
 * a Cast around it.
 */
const FP16_OPS: ReadonlySet<string> = new Set([
  'Add',
  'And',
  'Concat',
  'Div',
  'Equal',
  'Expand',
  'Gather',
  'Gelu',
  'Identity',
  'LayerNormalization',
  'LessOrEqual',
  'Less',
  'MatMul',
  'Max',
  'Min',
  'Mul',
  'Neg',
  'Pow',
  'Range',
  'Reshape',
  'Shape',
  'Slice',
  'Softmax',
  'Split',
  'Sqrt',
  'Squeeze',
  'Sub',
  'Tanh',
  'Transpose',
  'Unsqueeze',
  'Where',
  'Cast',
  'Constant',
]);

function decode(bytes: Uint8Array): Model {
  // rawData fields come back as views of `bytes` (no copies).
  return onnx.ModelProto.decode(bytes);
}

function encode(m: Model): Uint8Array {
  const b = onnx.ModelProto.encode(m).finish();
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** An int64 field as decoded (a number, or a Long when long.js is installed). */
const num = (x: unknown): number =>
  typeof x === 'number' ? x : x && typeof x === 'object' && 'toNumber' in x ? (x as { toNumber(): number }).toNumber() : Number(x);
const count = (dims: readonly unknown[] | null | undefined): number => (dims ?? []).reduce<number>((a, d) => a * num(d), 1);

/** A float32 initializer's values (raw_data or float_data). */
export function tensorFloats(t: Tensor): Float32Array {
  if (t.dataType !== DT.FLOAT) throw new Error(`tensor ${t.name}: not float32 (data type ${t.dataType})`);
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) throw new Error(`tensor ${t.name}: external data is not supported here`);
  const n = count(t.dims);
  if (t.rawData && t.rawData.length > 0) {
    if (t.rawData.length !== n * 4) throw new Error(`tensor ${t.name}: ${t.rawData.length} bytes for ${n} floats`);
    // Copy into a fresh buffer: the view may be unaligned, and in Node it may be a Buffer whose slice() does not copy.
    const own = new Uint8Array(t.rawData.length);
    own.set(t.rawData);
    return new Float32Array(own.buffer, 0, n);
  }
  const f = Float32Array.from(t.floatData ?? []);
  if (f.length !== n) throw new Error(`tensor ${t.name}: ${f.length} values for ${n} elements`);
  return f;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** float32 → float16 with out-of-range values clamped to ±65504 (as onnxconverter_common does), not turned into ±Infinity. */
function toHalfClamped(f: Float32Array): Uint16Array {
  const c = new Float32Array(f.length);
  for (let i = 0; i < f.length; i++) {
    const v = f[i]!;
    c[i] = Math.min(HALF_MAX, Math.max(-HALF_MAX, v));
  }
  return float32ToFloat16(c);
}

function tensorToHalf(t: Tensor): void {
  const half = toHalfClamped(tensorFloats(t));
  t.dataType = DT.FLOAT16;
  t.rawData = bytesOf(half);
  t.floatData = [];
}

function setFloatValueInfoTo(vis: p.onnx.IValueInfoProto[] | null | undefined, to: number): void {
  for (const vi of vis ?? []) {
    const tt = vi.type?.tensorType;
    if (tt && tt.elemType === DT.FLOAT) tt.elemType = to;
  }
}

/**
 * The float16 model: every float32 initializer, Constant, Cast target, graph
 * input, output and value_info becomes float16. Names, shapes and symbolic
 * dims (batch_size, past_sequence_length …) are unchanged.
 */
export function convertModelToFp16(model: Uint8Array, o: { producerName?: string } = {}): Uint8Array {
  const m = decode(model);
  const g = m.graph;
  if (!g) throw new Error('not an ONNX model: no graph');
  for (const n of g.node ?? []) {
    const op = n.opType ?? '';
    if ((n.domain ?? '') !== '' || !FP16_OPS.has(op)) {
      throw new Error(`fp16: op ${n.domain ? `${n.domain}.` : ''}${op} (node ${n.name}) is not known to be type-generic; add it to FP16_OPS after checking`);
    }
    for (const a of n.attribute ?? []) {
      if (a.g || a.graphs?.length) throw new Error(`fp16: node ${n.name} has a subgraph`);
      if (op === 'Cast' && a.name === 'to' && num(a.i) === DT.FLOAT) a.i = DT.FLOAT16;
      if (op === 'Constant' && a.t && a.t.dataType === DT.FLOAT) tensorToHalf(a.t);
      if (op === 'Constant' && (a.name === 'value_float' || a.name === 'value_floats')) throw new Error(`fp16: Constant ${n.name} uses ${a.name}`);
    }
  }
  for (const t of g.initializer ?? []) if (t.dataType === DT.FLOAT) tensorToHalf(t);
  setFloatValueInfoTo(g.input, DT.FLOAT16);
  setFloatValueInfoTo(g.output, DT.FLOAT16);
  setFloatValueInfoTo(g.valueInfo, DT.FLOAT16);
  if (o.producerName) m.producerName = o.producerName;
  return encode(m);
}

// ------------------------------------------------------------------ q8

export type WeightType = 'int8' | 'uint8';

export interface QuantizeOptions {
  /** int8 (symmetric, zero point 0; transformers.js' q8 for models without Conv) or uint8 (asymmetric). Default int8. */
  weightType?: WeightType;
  /** Quantize MatMul(x, Transpose(W)) with W constant as a constant Wᵀ (the tied LM head). Default true. */
  foldTransposedWeights?: boolean;
  producerName?: string;
}

/** numpy.rint: round half to even. */
function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export interface QuantizedWeight {
  q: Int8Array | Uint8Array;
  scale: number;
  zeroPoint: number;
}

/**
 * Per-tensor weight quantization as onnxruntime's quantize_data does it:
 * the range is widened to include 0; int8 is symmetric over [-127, 127]
 * (scale = max|w| / 127, zero point 0), uint8 asymmetric over [0, 255].
 */
export function quantizeWeight(w: Float32Array, type: WeightType): QuantizedWeight {
  let lo = 0;
  let hi = 0;
  for (let i = 0; i < w.length; i++) {
    const v = w[i]!;
    if (!Number.isFinite(v)) throw new Error('quantizeWeight: non-finite weight');
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  let qmin: number;
  let qmax: number;
  let zp: number;
  let scale: number;
  if (type === 'int8') {
    qmin = -127;
    qmax = 127;
    const absmax = Math.max(-lo, hi);
    scale = Math.fround((2 * absmax) / (qmax - qmin));
    zp = 0;
  } else {
    qmin = 0;
    qmax = 255;
    scale = Math.fround((hi - lo) / (qmax - qmin));
    zp = scale === 0 ? 0 : Math.min(qmax, Math.max(qmin, rint(qmin - lo / scale)));
  }
  if (scale === 0) scale = 1; // all zeros: any scale gives q = zp
  const q = type === 'int8' ? new Int8Array(w.length) : new Uint8Array(w.length);
  for (let i = 0; i < w.length; i++) q[i] = Math.min(qmax, Math.max(qmin, rint(w[i]! / scale) + zp));
  return { q, scale, zeroPoint: zp };
}

function floatScalar(name: string, v: number): Tensor {
  return { name, dataType: DT.FLOAT, dims: [], rawData: bytesOf(new Float32Array([v])) };
}

/**
 * The dynamically quantized model (see the file comment). Graph inputs,
 * outputs and their names stay as they are: the KV cache and logits are
 * float32.
 */
export function quantizeModelDynamic(model: Uint8Array, o: QuantizeOptions = {}): Uint8Array {
  const type = o.weightType ?? 'int8';
  const fold = o.foldTransposedWeights ?? true;
  const qType = type === 'int8' ? DT.INT8 : DT.UINT8;
  const m = decode(model);
  const g = m.graph;
  if (!g) throw new Error('not an ONNX model: no graph');
  const inits = new Map<string, Tensor>();
  for (const t of g.initializer ?? []) inits.set(t.name!, t);
  const producer = new Map<string, Node>();
  for (const n of g.node ?? []) for (const out of n.output ?? []) producer.set(out, n);

  /** The constant float32 2-D weight behind a MatMul's B input, if there is one. */
  const constWeight = (b: string): { name: string; data: Float32Array; dims: [number, number] } | null => {
    const t = inits.get(b);
    if (t) {
      if (t.dataType !== DT.FLOAT || (t.dims ?? []).length !== 2) return null;
      return { name: b, data: tensorFloats(t), dims: [num(t.dims![0]), num(t.dims![1])] };
    }
    const p = producer.get(b);
    if (!fold || !p || p.opType !== 'Transpose' || (p.domain ?? '') !== '') return null;
    const src = inits.get(p.input?.[0] ?? '');
    const perm = p.attribute?.find((a) => a.name === 'perm')?.ints?.map(num);
    if (!src || src.dataType !== DT.FLOAT || (src.dims ?? []).length !== 2 || (perm && !(perm[0] === 1 && perm[1] === 0))) return null;
    const [r, c] = [num(src.dims![0]), num(src.dims![1])];
    const a = tensorFloats(src);
    const t2 = new Float32Array(a.length);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t2[j * r + i] = a[i * c + j]!;
    return { name: `${src.name}_transposed`, data: t2, dims: [c, r] };
  };

  const newInits: Tensor[] = [];
  const out: Node[] = [];
  const quantizedActs = new Map<string, [string, string, string]>();
  const quantizedWeights = new Map<string, [string, string, string]>();
  const used = new Set<string>();
  for (const n of g.node ?? []) {
    const w = n.opType === 'MatMul' && (n.domain ?? '') === '' ? constWeight(n.input![1]!) : null;
    if (!w) {
      out.push(n);
      continue;
    }
    const a = n.input![0]!;
    const y = n.output![0]!;
    let qa = quantizedActs.get(a);
    if (!qa) {
      qa = [`${a}_quantized`, `${a}_scale`, `${a}_zero_point`];
      out.push({ name: `${a}_QuantizeLinear`, opType: 'DynamicQuantizeLinear', input: [a], output: [...qa] });
      quantizedActs.set(a, qa);
    }
    let qw = quantizedWeights.get(w.name);
    if (!qw) {
      const r = quantizeWeight(w.data, type);
      qw = [`${w.name}_quantized`, `${w.name}_scale`, `${w.name}_zero_point`];
      newInits.push({ name: qw[0], dataType: qType, dims: w.dims, rawData: bytesOf(r.q) });
      newInits.push(floatScalar(qw[1], r.scale));
      newInits.push({
        name: qw[2],
        dataType: qType,
        dims: [],
        rawData: type === 'int8' ? bytesOf(new Int8Array([r.zeroPoint])) : new Uint8Array([r.zeroPoint]),
      });
      quantizedWeights.set(w.name, qw);
    }
    const base = n.name || y;
    const mmOut = `${y}_output_quantized`;
    const castOut = `${mmOut}_cast_output`;
    const scales = `${base}_scales_mul`;
    out.push({ name: `${base}_quant`, opType: 'MatMulInteger', input: [qa[0], qw[0], qa[2], qw[2]], output: [mmOut] });
    out.push({
      name: `${mmOut}_cast`,
      opType: 'Cast',
      input: [mmOut],
      output: [castOut],
      attribute: [{ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DT.FLOAT }],
    });
    out.push({ name: `${base}_scales_mul_node`, opType: 'Mul', input: [qa[1], qw[1]], output: [scales] });
    out.push({ name: `${base}_output_scale_mul`, opType: 'Mul', input: [castOut, scales], output: [y] });
  }
  // Drop what no node reads any more (the float weights, a folded Transpose).
  const outputs = new Set((g.output ?? []).map((v) => v.name!));
  let nodes = out;
  for (;;) {
    used.clear();
    for (const n of nodes) for (const i of n.input ?? []) used.add(i);
    const kept = nodes.filter((n) => (n.output ?? []).some((x) => used.has(x) || outputs.has(x)));
    if (kept.length === nodes.length) break;
    nodes = kept;
  }
  g.node = nodes;
  g.initializer = [...(g.initializer ?? []).filter((t) => used.has(t.name!)), ...newInits];
  if (o.producerName) m.producerName = o.producerName;
  return encode(m);
}
