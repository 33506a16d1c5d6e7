/**
 * A plain TypeScript GPT-2 forward pass on Float32Arrays: no ONNX, no DOM, no
 * Node APIs. It is the known answer that the ONNX graph (src/models/gpt2-onnx.ts)
 * and the state cache must match. Batch size 1; accumulates in float64.
 *
 * Weights use the Hugging Face `gpt2` names and layouts (Conv1D: x @ W, so
 * `c_attn.weight` is [n_embd, 3·n_embd]); the LM head is tied to `wte`.
 */

export interface GPT2Config {
  n_layer: number;
  n_head: number;
  n_embd: number;
  n_positions: number;
  vocab_size: number;
  layer_norm_epsilon: number;
}

export interface NamedTensor {
  shape: number[];
  data: Float32Array;
}

export interface GPT2Weights {
  config: GPT2Config;
  /** Keyed by HF name without the `transformer.` prefix, in gpt2TensorSpecs order. */
  tensors: Map<string, NamedTensor>;
}

/** One layer's key or value cache: dims [n_head, length, head_dim]. */
export interface GPT2LayerKV {
  key: Float32Array;
  value: Float32Array;
  /** Tokens held (the middle dimension). */
  length: number;
}

/** The tensors of a GPT-2 checkpoint, in a fixed order, with their shapes. */
export function gpt2TensorSpecs(c: GPT2Config): { name: string; shape: number[]; kind: 'weight' | 'bias' | 'ln_weight' | 'ln_bias' }[] {
  const E = c.n_embd;
  const out: { name: string; shape: number[]; kind: 'weight' | 'bias' | 'ln_weight' | 'ln_bias' }[] = [
    { name: 'wte.weight', shape: [c.vocab_size, E], kind: 'weight' },
    { name: 'wpe.weight', shape: [c.n_positions, E], kind: 'weight' },
  ];
  for (let l = 0; l < c.n_layer; l++) {
    const h = `h.${l}`;
    out.push(
      { name: `${h}.ln_1.weight`, shape: [E], kind: 'ln_weight' },
      { name: `${h}.ln_1.bias`, shape: [E], kind: 'ln_bias' },
      { name: `${h}.attn.c_attn.weight`, shape: [E, 3 * E], kind: 'weight' },
      { name: `${h}.attn.c_attn.bias`, shape: [3 * E], kind: 'bias' },
      { name: `${h}.attn.c_proj.weight`, shape: [E, E], kind: 'weight' },
      { name: `${h}.attn.c_proj.bias`, shape: [E], kind: 'bias' },
      { name: `${h}.ln_2.weight`, shape: [E], kind: 'ln_weight' },
      { name: `${h}.ln_2.bias`, shape: [E], kind: 'ln_bias' },
      { name: `${h}.mlp.c_fc.weight`, shape: [E, 4 * E], kind: 'weight' },
      { name: `${h}.mlp.c_fc.bias`, shape: [4 * E], kind: 'bias' },
      { name: `${h}.mlp.c_proj.weight`, shape: [4 * E, E], kind: 'weight' },
      { name: `${h}.mlp.c_proj.bias`, shape: [E], kind: 'bias' },
    );
  }
  out.push({ name: 'ln_f.weight', shape: [E], kind: 'ln_weight' }, { name: 'ln_f.bias', shape: [E], kind: 'ln_bias' });
  return out;
}

/** The value the ONNX graph puts on masked attention scores (float32 lowest). */
export const MASKED_SCORE = -3.4028234663852886e38;

function get(w: GPT2Weights, name: string): Float32Array {
  const t = w.tensors.get(name);
  if (!t) throw new Error(`missing weight ${name}`);
  return t.data;
}

function layerNorm(x: Float64Array, rows: number, E: number, g: Float32Array, b: Float32Array, eps: number): Float64Array {
  const out = new Float64Array(rows * E);
  for (let r = 0; r < rows; r++) {
    const o = r * E;
    let mean = 0;
    for (let i = 0; i < E; i++) mean += x[o + i]!;
    mean /= E;
    let v = 0;
    for (let i = 0; i < E; i++) {
      const d = x[o + i]! - mean;
      v += d * d;
    }
    const inv = 1 / Math.sqrt(v / E + eps);
    for (let i = 0; i < E; i++) out[o + i] = (x[o + i]! - mean) * inv * g[i]! + b[i]!;
  }
  return out;
}

/** x [rows, K] @ W [K, N] + b [N] */
function linear(x: Float64Array, rows: number, K: number, W: Float32Array, b: Float32Array, N: number): Float64Array {
  const out = new Float64Array(rows * N);
  for (let r = 0; r < rows; r++) {
    const o = r * N;
    for (let n = 0; n < N; n++) out[o + n] = b[n]!;
    for (let k = 0; k < K; k++) {
      const a = x[r * K + k]!;
      if (a === 0) continue;
      const wo = k * N;
      for (let n = 0; n < N; n++) out[o + n]! += a * W[wo + n]!;
    }
  }
  return out;
}

const GELU_C = Math.sqrt(2 / Math.PI);
function geluTanh(v: number): number {
  return 0.5 * v * (1 + Math.tanh(GELU_C * (v + 0.044715 * v * v * v)));
}

export interface GPT2ForwardOptions {
  /** Per layer, the cache of the tokens before `tokens` (all layers the same length). */
  past?: GPT2LayerKV[];
  /** Position ids of `tokens`; default past_length + i. */
  positions?: ArrayLike<number>;
  /** 1/0 per key position, past then new (length past + tokens); default all ones. */
  attentionMask?: ArrayLike<number>;
  /** Only compute the logits of the last position (then `logits` has one row). */
  lastOnly?: boolean;
}

export interface GPT2ForwardResult {
  /** [rows, vocab_size], rows = tokens.length (or 1 with lastOnly). */
  logits: Float32Array;
  /** Per layer, the cache after `tokens`: dims [n_head, past + tokens, head_dim]. */
  present: GPT2LayerKV[];
}

/** Runs `tokens` on top of `past`, returning logits for every new position and the new cache. */
export function gpt2Forward(w: GPT2Weights, tokens: ArrayLike<number>, opts: GPT2ForwardOptions = {}): GPT2ForwardResult {
  const c = w.config;
  const E = c.n_embd;
  const H = c.n_head;
  const D = E / H;
  const S = tokens.length;
  const P = opts.past?.[0]?.length ?? 0;
  const T = P + S;
  if (opts.past && opts.past.length !== c.n_layer) throw new Error(`past has ${opts.past.length} layers, model ${c.n_layer}`);
  if (opts.attentionMask && opts.attentionMask.length !== T) throw new Error(`attentionMask length ${opts.attentionMask.length}, want ${T}`);

  const wte = get(w, 'wte.weight');
  const wpe = get(w, 'wpe.weight');
  let x: Float64Array = new Float64Array(S * E);
  for (let s = 0; s < S; s++) {
    const t = tokens[s]!;
    const pos = opts.positions ? opts.positions[s]! : P + s;
    if (t < 0 || t >= c.vocab_size) throw new RangeError(`token ${t} out of range`);
    if (pos < 0 || pos >= c.n_positions) throw new RangeError(`position ${pos} out of range`);
    for (let i = 0; i < E; i++) x[s * E + i] = wte[t * E + i]! + wpe[pos * E + i]!;
  }

  // allowed[s][j]: query s (absolute P+s) may see key j.
  const allowed = new Uint8Array(S * T);
  for (let s = 0; s < S; s++) for (let j = 0; j < T; j++) allowed[s * T + j] = j <= P + s && opts.attentionMask?.[j] !== 0 ? 1 : 0;

  const present: GPT2LayerKV[] = [];
  const scale = 1 / Math.sqrt(D);
  const scores = new Float64Array(T);
  for (let l = 0; l < c.n_layer; l++) {
    const h = `h.${l}`;
    const a = layerNorm(x, S, E, get(w, `${h}.ln_1.weight`), get(w, `${h}.ln_1.bias`), c.layer_norm_epsilon);
    const qkv = linear(a, S, E, get(w, `${h}.attn.c_attn.weight`), get(w, `${h}.attn.c_attn.bias`), 3 * E);
    const key = new Float32Array(H * T * D);
    const value = new Float32Array(H * T * D);
    const pk = opts.past?.[l];
    for (let hd = 0; hd < H; hd++) {
      if (pk && P > 0) {
        key.set(pk.key.subarray(hd * P * D, (hd + 1) * P * D), hd * T * D);
        value.set(pk.value.subarray(hd * P * D, (hd + 1) * P * D), hd * T * D);
      }
      for (let s = 0; s < S; s++)
        for (let d = 0; d < D; d++) {
          key[(hd * T + P + s) * D + d] = qkv[s * 3 * E + E + hd * D + d]!;
          value[(hd * T + P + s) * D + d] = qkv[s * 3 * E + 2 * E + hd * D + d]!;
        }
    }
    present.push({ key, value, length: T });

    const attn = new Float64Array(S * E);
    for (let hd = 0; hd < H; hd++) {
      for (let s = 0; s < S; s++) {
        let max = -Infinity;
        for (let j = 0; j < T; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qkv[s * 3 * E + hd * D + d]! * key[(hd * T + j) * D + d]!;
          const v = allowed[s * T + j] ? dot * scale : MASKED_SCORE;
          scores[j] = v;
          if (v > max) max = v;
        }
        let sum = 0;
        for (let j = 0; j < T; j++) {
          const e = Math.exp(scores[j]! - max);
          scores[j] = e;
          sum += e;
        }
        for (let j = 0; j < T; j++) {
          const pj = scores[j]! / sum;
          if (pj === 0) continue;
          for (let d = 0; d < D; d++) attn[s * E + hd * D + d]! += pj * value[(hd * T + j) * D + d]!;
        }
      }
    }
    const proj = linear(attn, S, E, get(w, `${h}.attn.c_proj.weight`), get(w, `${h}.attn.c_proj.bias`), E);
    for (let i = 0; i < S * E; i++) x[i]! += proj[i]!;

    const m = layerNorm(x, S, E, get(w, `${h}.ln_2.weight`), get(w, `${h}.ln_2.bias`), c.layer_norm_epsilon);
    const fc = linear(m, S, E, get(w, `${h}.mlp.c_fc.weight`), get(w, `${h}.mlp.c_fc.bias`), 4 * E);
    for (let i = 0; i < fc.length; i++) fc[i] = geluTanh(fc[i]!);
    const mp = linear(fc, S, 4 * E, get(w, `${h}.mlp.c_proj.weight`), get(w, `${h}.mlp.c_proj.bias`), E);
    for (let i = 0; i < S * E; i++) x[i]! += mp[i]!;
  }

  const first = opts.lastOnly ? S - 1 : 0;
  const rows = S - first;
  x = layerNorm(x.subarray(first * E), rows, E, get(w, 'ln_f.weight'), get(w, 'ln_f.bias'), c.layer_norm_epsilon);
  const V = c.vocab_size;
  const logits = new Float32Array(rows * V);
  for (let r = 0; r < rows; r++) {
    for (let v = 0; v < V; v++) {
      let dot = 0;
      const o = v * E;
      for (let i = 0; i < E; i++) dot += x[r * E + i]! * wte[o + i]!;
      logits[r * V + v] = dot;
    }
  }
  return { logits, present };
}

/** Index of the largest value in row `row` of a [rows, n] array (first on ties). */
export function argmaxRow(a: Float32Array, n: number, row = 0): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = a[row * n + i]!;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}
