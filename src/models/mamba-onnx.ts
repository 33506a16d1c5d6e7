/**
 * Mamba-1 ONNX graphs (opset 17) for onnxruntime-web, built with onnx-proto.
 *
 * Four graphs share one external weights file:
 *   prefill       input_ids [1, T], T a multiple of 8 (dynamic)  — chunked scan (GPUs)
 *   tail          input_ids [1, T], any T ≥ 1 (meant for T < 8)  — pairwise scan, O(T²) (GPUs)
 *   step          input_ids [1, 1]                               — one recurrence step
 *   prefill-scan  input_ids [1, T], any T ≥ 1                    — ONNX Scan over tokens (CPUs)
 * Each also takes `conv_state.N` [1, d_inner, d_conv-1] and `ssm_state.N`
 * [1, d_inner, d_state] per layer and returns `logits` [1, vocab] (last
 * position only), `conv_state_out.N` and `ssm_state_out.N`.
 *
 * Why the scan looks the way it does (DESIGN.md, "Mamba on onnxruntime-web"):
 * Scan/Loop fall back to the CPU on the web EPs, so the recurrence
 * h_t = exp(a_t)·h_{t-1} + u_t (a = max(dt·A, −20), u = dt·x ⊗ B) is solved in
 * closed form. Inside 8-token sub-chunks the factored form
 * exp(L_t)·CumSum(exp(−L_s)·u_s) is cheap (O(T)); it runs on two blocks of 4
 * with L centred on each block's 2nd token, so exponents stay within ±40
 * (exp(40)·u overflows fp32 only for |u| > 1e21), and the second block adds
 * the first one's end state decayed by exp(L_t).
 * Across sub-chunks the start state of each is a masked pairwise sum over the
 * earlier sub-chunks' end states, with exp(G_j − G_i) where the mask adds
 * −1e30 to the exponent before Exp (never inf·0). Masks come from Range +
 * Less + Where, not Trilu; softplus is Relu(x) + Log(1 + Exp(−|x|)).
 *
 * On a CPU that closed form is the cost: its ~30 passes over [T, d_inner,
 * d_state] tensors (5 of them Exp) took 2–3× the time of all the matrix
 * products of a mamba-130m prefill on WASM (bench/profile-mamba-web.ts).
 * `prefill-scan` runs the recurrence itself in an ONNX Scan instead: per
 * token dA = exp(dt ⊗ A), h = dA·h + B ⊗ dt·x (one Gemm) and y = C·h, on
 * [d_state, d_inner] tensors that stay in cache; one Exp per element and no
 * big intermediate. It is the reference recurrence, so it is stable at any
 * weight scale, and needs no clamp: exp(dt·A) ≤ 1 since dt ≥ 0 and A < 0 (the
 * reference's clamp at −20 moves a state by < 2.1e-9 of itself). Scan falls
 * back to the CPU on the web's GPU backends, so there the runner uses
 * `prefill` and `tail`, and on CPUs `prefill-scan` and `step`.
 */
import { GraphBuilder, DT, onnx, type Dim } from './onnx-util.ts';
import type { MambaDims, MambaLayerWeights, MambaWeights } from './mamba-reference.ts';
import { DT_A_CLAMP, RMS_EPS } from './mamba-reference.ts';
import { tensorToFloat32 } from '../formats/fp16.ts';

const OPSET = 17;
// Sub-chunks of 8 (the pairwise part is O((T/8)²)); inside, the factored form runs on two
// blocks of 4 so that centred exponents stay within ±40 (one block of 8, ±80, gave NaN on
// tiny-mamba at scale 16: exp(80)·u overflows fp32 for |u| > 6e3).
export const SUBCHUNK = 8;
export const WEIGHTS_FILE = 'weights.bin';
const BIG = 2147483647; // Slice "to the end"
const MASKED = -1e30; // exponent for masked pairs: Exp gives exactly 0

export type MambaGraphKind = 'prefill' | 'tail' | 'step' | 'prefill-scan';

/** Where one tensor lies in the weights file. */
export interface WeightEntry {
  name: string;
  dims: number[];
  offset: number;
  length: number;
}

export interface PackedWeights {
  bytes: Uint8Array;
  entries: Map<string, WeightEntry>;
}

const ALIGN = 64;

/**
 * Lays out the weights file in the order the graphs use them, already in the
 * layout the graphs want (linear weights transposed to [in, out] for MatMul,
 * conv weights as [d_conv, d_inner] so that each tap is its own initializer).
 * The embedding stays [vocab, d_model]: Gather reads it and the tied head is a
 * Gemm with transB, so it is stored once.
 */
export function packMambaWeights(w: MambaWeights): PackedWeights {
  const d = w.dims;
  const E = d.d_inner;
  const N = d.d_state;
  const K = d.d_conv;
  const R = d.dt_rank;
  const parts: { name: string; dims: number[]; data: Float32Array }[] = [];
  const add = (name: string, dims: number[], data: Float32Array): void => {
    const n = dims.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new Error(`${name}: ${data.length} values for [${dims}]`);
    parts.push({ name, dims, data });
  };
  add('embeddings', [d.vocab_size, d.d_model], w.embeddings);
  w.layers.forEach((L, l) => {
    const p = `layers.${l}.`;
    add(p + 'norm', [d.d_model], L.norm);
    add(p + 'in_proj_t', [d.d_model, 2 * E], transpose(L.in_proj, 2 * E, d.d_model));
    add(p + 'conv_w_t', [K, E], transpose(L.conv_w, E, K));
    add(p + 'conv_b', [E], L.conv_b);
    add(p + 'x_proj_t', [E, R + 2 * N], transpose(L.x_proj, R + 2 * N, E));
    add(p + 'dt_proj_t', [R, E], transpose(L.dt_proj_w, E, R));
    add(p + 'dt_proj_b', [E], L.dt_proj_b);
    add(p + 'A_log', [E, N], L.A_log);
    add(p + 'D', [E], L.D);
    add(p + 'out_proj_t', [E, d.d_model], transpose(L.out_proj, d.d_model, E));
  });
  add('norm_f', [d.d_model], w.norm_f);

  let total = 0;
  const entries = new Map<string, WeightEntry>();
  for (const p of parts) {
    total = Math.ceil(total / ALIGN) * ALIGN;
    entries.set(p.name, { name: p.name, dims: p.dims, offset: total, length: p.data.byteLength });
    total += p.data.byteLength;
  }
  const bytes = new Uint8Array(total);
  for (const p of parts) {
    const e = entries.get(p.name)!;
    bytes.set(new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength), e.offset);
  }
  // Conv taps: views into conv_w_t, one [d_inner] row per tap.
  for (let l = 0; l < d.n_layer; l++) {
    const c = entries.get(`layers.${l}.conv_w_t`)!;
    for (let k = 0; k < K; k++) {
      const name = `layers.${l}.conv_w_t.${k}`;
      entries.set(name, { name, dims: [E], offset: c.offset + k * E * 4, length: E * 4 });
    }
  }
  return { bytes, entries };
}

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}

/** Builds one graph's ONNX bytes; weights are external references into `WEIGHTS_FILE`. */
export function buildMambaGraph(kind: MambaGraphKind, d: MambaDims, packed: PackedWeights, subchunk = SUBCHUNK): Uint8Array {
  if (subchunk < 2 || subchunk % 2 !== 0) throw new Error('subchunk must be even and at least 2');
  const g = new GraphBuilder(`mamba_${kind}`);
  const E = d.d_inner;
  const N = d.d_state;
  const K = d.d_conv;
  const R = d.dt_rank;
  const used = new Set<string>();
  const W = (name: string): string => {
    if (!packed.entries.has(name)) throw new Error(`no weight ${name}`);
    used.add(name);
    return name;
  };
  const T: Dim = kind === 'step' ? 1 : 'T';
  const scan = kind === 'prefill-scan';

  const ids = g.input('input_ids', DT.INT64, [1, T]);
  const convIn: string[] = [];
  const ssmIn: string[] = [];
  for (let l = 0; l < d.n_layer; l++) {
    convIn.push(g.input(`conv_state.${l}`, DT.FLOAT, [1, E, K - 1]));
    ssmIn.push(g.input(`ssm_state.${l}`, DT.FLOAT, [1, E, N]));
  }

  const rmsNorm = (x: string, w: string): string => {
    // Pow(x, 2) lets onnxruntime's CPU optimizer fuse the norm into one SimplifiedLayerNormalization.
    const ms = g.op1('ReduceMean', [scan ? g.op1('Pow', [x, g.float(2)]) : g.mul(x, x)], { axes: [-1], keepdims: 1 });
    const r = g.op1('Sqrt', [g.add(ms, g.float(RMS_EPS))]);
    return g.mul(g.op1('Div', [x, r]), w);
  };
  const silu = (x: string): string => g.mul(x, g.op1('Sigmoid', [x]));
  const softplus = (x: string): string => g.add(g.op1('Relu', [x]), g.op1('Log', [g.add(g.float(1), g.op1('Exp', [g.op1('Neg', [g.op1('Abs', [x])])]))]));
  const slice = (x: string, start: number, end: number, axis: number): string => g.op1('Slice', [x, g.ints([start]), g.ints([end]), g.ints([axis])]);
  const cumsum = (x: string, axis: number): string => g.op1('CumSum', [x, g.int(axis)]);
  const exp = (x: string): string => g.op1('Exp', [x]);
  // [n, n, 1, 1]: 0 where row j may see column i (i ≤ j, or i < j), −1e30 elsewhere. Added to
  // the exponent before Exp (cheaper than a broadcast Where on [n, n, E, N]); the unmasked
  // exponents are at most 20·T, so the sum stays −1e30 and Exp gives exactly 0, never inf·0.
  // Built once and shared by every layer: ORT places the index part (Shape → Gather → Range →
  // Less) on the CPU on purpose, so one mask means one small host-to-GPU copy per run, not one per layer.
  let bias: string | null = null;
  const causalBias = (n: () => string, inclusive: boolean): string => {
    if (bias) return bias;
    const r = g.op1('Range', [g.int(0), n(), g.int(1)]);
    const see = g.op1(inclusive ? 'LessOrEqual' : 'Less', [g.reshape(r, [1, -1, 1, 1]), g.reshape(r, [-1, 1, 1, 1])]);
    bias = g.op1('Where', [see, g.float(0), g.float(MASKED)]);
    return bias;
  };

  // [1, T] → [T, d_model]
  let h = g.reshape(g.op1('Gather', [W('embeddings'), ids], { axis: 0 }), [-1, d.d_model]);
  const convOut: string[] = [];
  const ssmOut: string[] = [];

  for (let l = 0; l < d.n_layer; l++) {
    const p = `layers.${l}.`;
    const hn = rmsNorm(h, W(p + 'norm'));
    const [xs, z] = g.op('Split', [g.matmul(hn, W(p + 'in_proj_t'))], { axis: -1 }, 2) as [string, string];

    // Causal depthwise conv over [old d_conv-1 inputs ‖ T new ones].
    const stT = g.transpose(g.squeeze(convIn[l]!, [0]), [1, 0]); // [K-1, E]
    const xcat = g.concat([stT, xs], 0); // [T+K-1, E]
    let acc = W(p + 'conv_b');
    for (let k = 0; k < K; k++) {
      const tap = slice(xcat, k, k < K - 1 ? k - (K - 1) : BIG, 0); // rows k .. k+T-1
      acc = g.add(acc, g.mul(tap, W(`${p}conv_w_t.${k}`)));
    }
    convOut.push(g.unsqueeze(g.transpose(slice(xcat, -(K - 1), BIG, 0), [1, 0]), [0]));
    const xc = silu(acc); // [T, E]

    const [dtr, Bm, Cm] = g.split(g.matmul(xc, W(p + 'x_proj_t')), -1, [R, N, N]) as [string, string, string];
    const dt = softplus(g.add(g.matmul(dtr, W(p + 'dt_proj_t')), W(p + 'dt_proj_b'))); // [T, E]
    const A = g.op1('Neg', [exp(W(p + 'A_log'))]); // [E, N]
    if (scan) {
      const r = scanRecurrence(g, l, { dt, dtx: g.mul(dt, xc), B: Bm, C: Cm, At: g.transpose(A, [1, 0]), h0: ssmIn[l]!, E, N });
      ssmOut.push(r.hLast);
      h = g.add(h, g.matmul(g.mul(g.add(r.y, g.mul(xc, W(p + 'D'))), silu(z)), W(p + 'out_proj_t')));
      continue;
    }
    const a = g.op1('Max', [g.mul(g.unsqueeze(dt, [-1]), A), g.float(DT_A_CLAMP)]); // [T, E, N]
    const u = g.mul(g.unsqueeze(g.mul(dt, xc), [-1]), g.unsqueeze(Bm, [1])); // [T, E, N]
    const h0 = g.squeeze(ssmIn[l]!, [0]); // [E, N]

    let hs: string; // [T, E, N], the state after every token
    if (kind === 'step') {
      hs = g.add(g.mul(exp(a), h0), u);
    } else if (kind === 'tail') {
      const L = cumsum(a, 0); // [T, E, N]
      const diff = g.op1('Sub', [g.unsqueeze(L, [1]), g.unsqueeze(L, [0])]); // [t, s, E, N] = L_t − L_s
      const w = exp(
        g.add(
          diff,
          causalBias(() => g.dimScalar(a, 0), true),
        ),
      ); // s ≤ t
      const within = g.op1('ReduceSum', [g.mul(w, g.unsqueeze(u, [0])), g.ints([1])], { keepdims: 0 });
      hs = g.add(within, g.mul(exp(L), h0));
    } else {
      // Factored form on blocks of `half` tokens, centred so |exponent| ≤ 20·half/2.
      const half = subchunk >= 8 ? subchunk / 2 : subchunk;
      const parts = subchunk / half;
      const a5 = g.reshape(a, [-1, parts, half, E, N]); // [M, parts, half, E, N]
      const u5 = g.reshape(u, [-1, parts, half, E, N]);
      const Lh = cumsum(a5, 2); // decay within the block up to and including t
      const mid = half / 2 - 1;
      const Lc = g.op1('Sub', [Lh, slice(Lh, mid, mid + 1, 2)]);
      let intra5 = g.mul(exp(Lc), cumsum(g.mul(exp(g.op1('Neg', [Lc])), u5), 2)); // from a zero start
      let L5 = Lh;
      if (parts === 2) {
        // The second block starts from the first one's end state (and decay); the first from zero.
        const pad = g.ints([0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        const end = (x: string): string => g.op1('Pad', [slice(slice(x, 0, 1, 1), half - 1, half, 2), pad]); // [M, 2, 1, E, N]
        intra5 = g.add(intra5, g.mul(exp(Lh), end(intra5)));
        L5 = g.add(Lh, end(Lh));
      }
      const L = g.reshape(L5, [-1, subchunk, E, N]); // [M, sub, E, N] decay within the sub-chunk
      const intra = g.reshape(intra5, [-1, subchunk, E, N]);
      const S = g.squeeze(slice(intra, subchunk - 1, subchunk, 1), [1]); // [M, E, N] end states
      const Dsub = g.squeeze(slice(L, subchunk - 1, subchunk, 1), [1]); // [M, E, N] total decay
      const Gin = cumsum(Dsub, 0); // decay through the end of sub-chunk j
      const Gex = g.op1('Sub', [Gin, Dsub]); // decay before sub-chunk j
      const diff = g.op1('Sub', [g.unsqueeze(Gex, [1]), g.unsqueeze(Gin, [0])]); // [j, i, E, N]
      const w = exp(
        g.add(
          diff,
          causalBias(() => g.dimScalar(Dsub, 0), false),
        ),
      ); // i < j
      const cross = g.op1('ReduceSum', [g.mul(w, g.unsqueeze(S, [0])), g.ints([1])], { keepdims: 0 });
      const H = g.add(cross, g.mul(exp(Gex), h0)); // [M, E, N] state entering sub-chunk j
      hs = g.reshape(g.add(g.mul(exp(L), g.unsqueeze(H, [1])), intra), [-1, E, N]);
    }
    ssmOut.push(slice(hs, -1, BIG, 0)); // [1, E, N]

    const y = g.reshape(g.matmul(hs, g.unsqueeze(Cm, [-1])), [-1, E]); // Σ_n h·C
    const yd = g.mul(g.add(y, g.mul(xc, W(p + 'D'))), silu(z));
    h = g.add(h, g.matmul(yd, W(p + 'out_proj_t')));
  }

  const last = rmsNorm(slice(h, -1, BIG, 0), W('norm_f')); // [1, d_model]
  const logits = g.op1('Gemm', [last, W('embeddings')], { transB: 1 });
  g.output('logits', logits, DT.FLOAT, [1, d.vocab_size]);
  for (let l = 0; l < d.n_layer; l++) {
    g.output(`conv_state_out.${l}`, convOut[l]!, DT.FLOAT, [1, E, K - 1]);
    g.output(`ssm_state_out.${l}`, ssmOut[l]!, DT.FLOAT, [1, E, N]);
  }
  return encodeWithExternal(g, packed, used);
}

/**
 * One layer's selective scan as an ONNX Scan over the T tokens, n-major
 * ([N, E] per token, so every broadcast runs along d_inner). Takes dt and
 * dtx = dt·x [T, E], B and C [T, N], At = Aᵀ [N, E] and h0 = ssm_state.l
 * [1, E, N]; gives y [T, E] (Σ_n C·h after each token) and the last state [1, E, N].
 */
function scanRecurrence(
  g: GraphBuilder,
  l: number,
  o: { dt: string; dtx: string; B: string; C: string; At: string; h0: string; E: number; N: number },
): { y: string; hLast: string } {
  const { E, N } = o;
  // The body's values carry the layer in their names: a subgraph may not reuse a name of the graph around it.
  const b = new GraphBuilder(`scan_${l}`);
  const n = (s: string): string => `scan${l}_${s}`;
  const h = b.input(n('h'), DT.FLOAT, [N, E]);
  const dt = b.input(n('dt'), DT.FLOAT, [1, E]);
  const dtx = b.input(n('dtx'), DT.FLOAT, [1, E]);
  const B = b.input(n('B'), DT.FLOAT, [N, 1]);
  const C = b.input(n('C'), DT.FLOAT, [1, N]);
  const dA = b.op1('Exp', [b.op1('Mul', [dt, o.At], {}, n('dtA'))], {}, n('dA')); // At: from the outer graph
  const hNext = b.op1('Gemm', [B, dtx, b.op1('Mul', [dA, h], {}, n('decayed'))], {}, n('h_next')); // B ⊗ dtx + dA·h
  b.output(n('h_out'), hNext, DT.FLOAT, [N, E]);
  b.output(n('y'), b.op1('MatMul', [C, hNext], {}, n('Ch')), DT.FLOAT, [1, E]);
  const body = onnx.GraphProto.fromObject({ name: `scan_${l}`, node: b.nodes, input: b.inputs, output: b.outputs });

  const hIn = g.reshape(g.transpose(o.h0, [0, 2, 1]), [N, E]);
  const [hOut, ys] = [g.fresh('scan_h'), g.fresh('scan_y')];
  g.nodes.push({
    name: `Scan_${g.nodes.length}`,
    opType: 'Scan',
    // Token t's slices: dt[t] [1, E], dtx[t] [1, E], B[t] [N, 1], C[t] [1, N].
    input: [hIn, g.unsqueeze(o.dt, [1]), g.unsqueeze(o.dtx, [1]), g.unsqueeze(o.B, [2]), g.unsqueeze(o.C, [1])],
    output: [hOut, ys],
    attribute: [
      { name: 'body', type: onnx.AttributeProto.AttributeType.GRAPH, g: body },
      { name: 'num_scan_inputs', type: onnx.AttributeProto.AttributeType.INT, i: 4 },
    ],
  });
  return { y: g.reshape(ys, [-1, E]), hLast: g.unsqueeze(g.transpose(hOut, [1, 0]), [0]) };
}

/** Like onnx-util's encodeModel, but the weights are references into one shared file. */
function encodeWithExternal(g: GraphBuilder, packed: PackedWeights, used: Set<string>): Uint8Array {
  const initializer: ReturnType<typeof onnx.TensorProto.fromObject>[] = [];
  for (const init of g.initializers) {
    initializer.push(onnx.TensorProto.fromObject({ name: init.name, dataType: init.dataType, dims: init.dims, rawData: init.bytes }));
  }
  for (const name of [...used].sort()) {
    const e = packed.entries.get(name)!;
    initializer.push(
      onnx.TensorProto.fromObject({
        name,
        dataType: DT.FLOAT,
        dims: e.dims,
        dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [
          { key: 'location', value: WEIGHTS_FILE },
          { key: 'offset', value: String(e.offset) },
          { key: 'length', value: String(e.length) },
        ],
      }),
    );
  }
  const model = onnx.ModelProto.fromObject({
    irVersion: 8,
    producerName: 'statecart',
    opsetImport: [{ domain: '', version: OPSET }],
    graph: { name: g.name, node: g.nodes, input: g.inputs, output: g.outputs },
  });
  model.graph!.initializer = initializer;
  const bytes = onnx.ModelProto.encode(model).finish();
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------- Hub checkpoints

function toF32(dtype: string, data: ArrayLike<number>): Float32Array {
  // F32 is copied: the packed weights must not alias the checkpoint's buffer.
  return dtype === 'F32' ? Float32Array.from(data) : tensorToFloat32(dtype, data, 'a Mamba checkpoint');
}

/** Reads a `state-spaces/mamba-130m-hf`-layout checkpoint; dims come from the shapes. */
export function mambaWeightsFromTensors(tensors: Map<string, { dtype: string; shape: number[]; data: ArrayLike<number> }>): MambaWeights {
  const get = (name: string, shape?: number[]): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw new Error(`missing tensor ${name} in Mamba checkpoint`);
    if (shape && (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i]))) {
      throw new Error(`${name}: shape [${t.shape}], expected [${shape}]`);
    }
    return toF32(t.dtype, t.data);
  };
  const emb = tensors.get('backbone.embeddings.weight');
  if (!emb) throw new Error('missing backbone.embeddings.weight: not a MambaForCausalLM checkpoint');
  const [V, D] = emb.shape as [number, number];
  let n_layer = 0;
  while (tensors.has(`backbone.layers.${n_layer}.mixer.in_proj.weight`)) n_layer++;
  const m0 = 'backbone.layers.0.mixer.';
  const E = tensors.get(m0 + 'in_proj.weight')!.shape[0]! / 2;
  const K = tensors.get(m0 + 'conv1d.weight')!.shape[2]!;
  const N = tensors.get(m0 + 'A_log')!.shape[1]!;
  const R = tensors.get(m0 + 'dt_proj.weight')!.shape[1]!;
  const dims: MambaDims = { n_layer, d_model: D, d_inner: E, d_state: N, d_conv: K, dt_rank: R, vocab_size: V };
  for (const name of tensors.keys()) {
    if (/\.(in_proj|out_proj|x_proj)\.bias$/.test(name)) throw new Error(`${name}: biased projections are not supported`);
  }
  const embeddings = get('backbone.embeddings.weight', [V, D]);
  const head = tensors.get('lm_head.weight');
  if (head) {
    const h = toF32(head.dtype, head.data);
    if (h.length !== embeddings.length || h.some((v, i) => v !== embeddings[i]))
      throw new Error('lm_head.weight differs from the embeddings: untied heads are not supported');
  }
  const layers: MambaLayerWeights[] = [];
  for (let l = 0; l < n_layer; l++) {
    const p = `backbone.layers.${l}.`;
    const m = p + 'mixer.';
    layers.push({
      norm: get(p + 'norm.weight', [D]),
      in_proj: get(m + 'in_proj.weight', [2 * E, D]),
      conv_w: get(m + 'conv1d.weight', [E, 1, K]),
      conv_b: get(m + 'conv1d.bias', [E]),
      x_proj: get(m + 'x_proj.weight', [R + 2 * N, E]),
      dt_proj_w: get(m + 'dt_proj.weight', [E, R]),
      dt_proj_b: get(m + 'dt_proj.bias', [E]),
      A_log: get(m + 'A_log', [E, N]),
      D: get(m + 'D', [E]),
      out_proj: get(m + 'out_proj.weight', [D, E]),
    });
  }
  return { dims, embeddings, layers, norm_f: get('backbone.norm_f.weight', [D]) };
}
