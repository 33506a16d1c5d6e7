/**
 * Small, generic helpers for building ONNX graphs with `onnx-proto`.
 *
 * Used by the GPT-2 builder (gpt2-onnx.ts) and meant to be shared by other
 * graph builders (Mamba). Nothing here knows about a particular model.
 *
 * Determinism: the same calls in the same order give byte-identical output.
 */
import p from 'onnx-proto';

const { onnx } = p;
export { onnx };

export const DT = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
} as const;
export type DataType = (typeof DT)[keyof typeof DT];

const ATTR = onnx.AttributeProto.AttributeType;

/** A dimension: a fixed size or a symbolic name. */
export type Dim = number | string;

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] } | { ints: number[] };

export interface Initializer {
  name: string;
  dataType: number;
  dims: number[];
  /** Little-endian element bytes. Not copied: keep the backing buffer alive and unchanged until encoded. */
  bytes: Uint8Array;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('onnx-util assumes a little-endian host');
}

/** The bytes of a typed array, without copying. */
function viewBytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function attribute(name: string, v: AttrValue): p.onnx.IAttributeProto {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`attribute ${name}: use { float: x } for non-integers`);
    return { name, type: ATTR.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: ATTR.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: ATTR.INTS, ints: v };
  if ('float' in v) return { name, type: ATTR.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: ATTR.FLOATS, floats: v.floats };
  return { name, type: ATTR.INTS, ints: v.ints };
}

function valueInfo(name: string, elemType: number, dims: Dim[]): p.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

/**
 * Accumulates nodes, initializers, inputs and outputs. `op` returns the
 * output names, auto-named `<prefix>_<counter>` unless given.
 */
export class GraphBuilder {
  readonly nodes: p.onnx.INodeProto[] = [];
  readonly initializers: Initializer[] = [];
  readonly inputs: p.onnx.IValueInfoProto[] = [];
  readonly outputs: p.onnx.IValueInfoProto[] = [];
  private counter = 0;
  private constCache = new Map<string, string>();
  private names = new Set<string>();

  constructor(readonly name = 'graph') {}

  /** A fresh unique value name. */
  fresh(hint = 't'): string {
    let n: string;
    do n = `${hint}_${this.counter++}`;
    while (this.names.has(n));
    this.names.add(n);
    return n;
  }

  input(name: string, elemType: number, dims: Dim[]): string {
    this.names.add(name);
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Declares a graph output; if `value` differs from `name`, an Identity renames it. */
  output(name: string, value: string, elemType: number, dims: Dim[]): string {
    if (value !== name) this.op('Identity', [value], {}, [name]);
    this.outputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /**
   * Adds a node. `outputs` is either a list of names or a count of fresh ones.
   * Returns the output names. Empty-string inputs mark omitted optional inputs.
   */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outputs: string[] | number = 1, domain = ''): string[] {
    const outs = typeof outputs === 'number' ? Array.from({ length: outputs }, () => this.fresh(opType.toLowerCase())) : outputs;
    for (const o of outs) this.names.add(o);
    const node: p.onnx.INodeProto = {
      input: inputs,
      output: outs,
      name: `${opType}_${this.nodes.length}`,
      opType,
      attribute: Object.keys(attrs)
        .sort()
        .map((k) => attribute(k, attrs[k]!)),
    };
    if (domain) node.domain = domain;
    this.nodes.push(node);
    return outs;
  }

  /** Single-output shorthand for `op`. */
  op1(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, name?: string): string {
    return this.op(opType, inputs, attrs, name ? [name] : 1)[0]!;
  }

  initializer(name: string, dataType: number, dims: number[], bytes: Uint8Array): string {
    if (this.names.has(name)) throw new Error(`duplicate value name ${name}`);
    this.names.add(name);
    this.initializers.push({ name, dataType, dims, bytes });
    return name;
  }

  float32(name: string, dims: number[], data: Float32Array): string {
    const n = dims.reduce((a, b) => a * b, 1);
    if (n !== data.length) throw new Error(`${name}: ${data.length} values for dims [${dims}]`);
    return this.initializer(name, DT.FLOAT, dims, viewBytes(data));
  }

  /** A deduplicated constant initializer. `dims` [] makes a scalar. */
  private constant(kind: 'f' | 'i' | 'b', values: number[], dims: number[]): string {
    const key = `${kind}:${dims.join('x')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.fresh(kind === 'f' ? 'const_f' : kind === 'i' ? 'const_i' : 'const_b');
    this.names.delete(name); // initializer() re-adds it
    if (kind === 'f') this.initializer(name, DT.FLOAT, dims, viewBytes(new Float32Array(values)));
    else if (kind === 'i') this.initializer(name, DT.INT64, dims, viewBytes(new BigInt64Array(values.map((v) => BigInt(v)))));
    else this.initializer(name, DT.BOOL, dims, new Uint8Array(values.map((v) => (v ? 1 : 0))));
    this.constCache.set(key, name);
    return name;
  }

  /** int64 1-D constant (shapes, axes, split sizes). */
  ints(values: number[]): string {
    return this.constant('i', values, [values.length]);
  }
  /** int64 scalar constant (Range arguments). */
  int(value: number): string {
    return this.constant('i', [value], []);
  }
  /** float32 scalar constant. */
  float(value: number): string {
    return this.constant('f', [value], []);
  }
  floats(values: number[]): string {
    return this.constant('f', values, [values.length]);
  }

  // ---- convenience wrappers for common ops (opset >= 13 conventions) ----

  /** Dimension `axis` of `x`'s shape as an int64 scalar. */
  dimScalar(x: string, axis: number): string {
    const shape = this.op1('Shape', [x]);
    return this.op1('Gather', [shape, this.int(axis)], { axis: 0 });
  }
  /** Dimension `axis` of `x`'s shape as an int64 [1] tensor. */
  dim1(x: string, axis: number): string {
    return this.op1('Shape', [x], { start: axis, end: axis + 1 });
  }
  unsqueeze(x: string, axes: number[]): string {
    return this.op1('Unsqueeze', [x, this.ints(axes)]);
  }
  squeeze(x: string, axes: number[]): string {
    return this.op1('Squeeze', [x, this.ints(axes)]);
  }
  reshape(x: string, shape: number[] | string): string {
    return this.op1('Reshape', [x, typeof shape === 'string' ? shape : this.ints(shape)]);
  }
  transpose(x: string, perm: number[]): string {
    return this.op1('Transpose', [x], { perm });
  }
  matmul(a: string, b: string): string {
    return this.op1('MatMul', [a, b]);
  }
  add(a: string, b: string): string {
    return this.op1('Add', [a, b]);
  }
  mul(a: string, b: string): string {
    return this.op1('Mul', [a, b]);
  }
  split(x: string, axis: number, sizes: number[]): string[] {
    return this.op('Split', [x, this.ints(sizes)], { axis }, sizes.length);
  }
  concat(xs: string[], axis: number): string {
    return this.op1('Concat', xs, { axis });
  }
  /** x @ W + b */
  linear(x: string, w: string, b?: string): string {
    const y = this.matmul(x, w);
    return b ? this.add(y, b) : y;
  }
  /** LayerNormalization (opset 17) over the last axis. */
  layerNorm(x: string, gamma: string, beta: string, epsilon: number): string {
    return this.op1('LayerNormalization', [x, gamma, beta], { axis: -1, epsilon: { float: epsilon } });
  }
  /** 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) from basic ops (any opset). */
  geluTanhBasic(x: string): string {
    const x3 = this.mul(this.mul(x, x), x);
    const inner = this.mul(this.add(x, this.mul(x3, this.float(0.044715))), this.float(Math.sqrt(2 / Math.PI)));
    const t = this.add(this.op1('Tanh', [inner]), this.float(1));
    return this.mul(this.mul(x, t), this.float(0.5));
  }
}

export interface EncodeOptions {
  opset: number;
  /** Default 9 (onnxruntime ≥ 1.15 reads it). */
  irVersion?: number;
  producerName?: string;
  docString?: string;
  /**
   * When set, initializers with at least `minBytes` bytes (default 1024) are
   * written to one external data file named `location` (relative to the
   * .onnx file) instead of inline; encodeModel then returns its bytes too.
   */
  external?: { location: string; minBytes?: number; align?: number };
  metadata?: Record<string, string>;
}

export interface EncodedModel {
  model: Uint8Array;
  /** The external data file's bytes when `external` was asked for. */
  externalData?: Uint8Array;
}

/** Serializes the graph to ONNX protobuf bytes (deterministic). */
export function encodeModel(g: GraphBuilder, opts: EncodeOptions): EncodedModel {
  const initializer: p.onnx.ITensorProto[] = [];
  const extParts: Uint8Array[] = [];
  let extLen = 0;
  const align = opts.external?.align ?? 64;
  for (const init of g.initializers) {
    if (opts.external && init.bytes.length >= (opts.external.minBytes ?? 1024)) {
      const pad = (align - (extLen % align)) % align;
      if (pad) {
        extParts.push(new Uint8Array(pad));
        extLen += pad;
      }
      initializer.push({
        name: init.name,
        dataType: init.dataType,
        dims: init.dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: opts.external.location },
          { key: 'offset', value: String(extLen) },
          { key: 'length', value: String(init.bytes.length) },
        ],
      });
      extParts.push(init.bytes);
      extLen += init.bytes.length;
    } else {
      initializer.push({ name: init.name, dataType: init.dataType, dims: init.dims, rawData: init.bytes });
    }
  }
  const model: p.onnx.IModelProto = {
    irVersion: opts.irVersion ?? 9,
    producerName: opts.producerName ?? 'statecart',
    opsetImport: [{ domain: '', version: opts.opset }],
    graph: {
      name: g.name,
      node: g.nodes,
      initializer,
      input: g.inputs,
      output: g.outputs,
    },
  };
  if (opts.docString) model.docString = opts.docString;
  if (opts.metadata) {
    model.metadataProps = Object.keys(opts.metadata)
      .sort()
      .map((key) => ({ key, value: opts.metadata![key]! }));
  }
  // fromObject keeps a Uint8Array rawData by reference (no copy); encode
  // copies each once into the output buffer.
  const bytes = onnx.ModelProto.encode(onnx.ModelProto.fromObject(model)).finish();
  const out: EncodedModel = { model: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
  if (opts.external) {
    const ext = new Uint8Array(extLen);
    let o = 0;
    for (const part of extParts) {
      ext.set(part, o);
      o += part.length;
    }
    out.externalData = ext;
  }
  return out;
}
