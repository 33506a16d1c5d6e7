// A plain TypeScript Mamba-1 forward pass, one token at a time, on
// Float32Arrays. It is the known answer that the ONNX graphs (and through
// them the cache) must match, so it is written for clarity, not speed, and
// uses no DOM or Node API.
//
// Weights are kept in the Hugging Face layout of `state-spaces/mamba-130m-hf`
// (row-major, [out, in] for linear layers). The state layout is the one that
// the ONNX graphs and cartridges use, without the batch axis:
//   conv: [d_inner, d_conv - 1]  the last d_conv-1 conv inputs, oldest first
//   ssm:  [d_inner, d_state]
// (Hugging Face's MambaCache keeps d_conv columns; the oldest one is never
// read again, so a state here is 1/4 smaller for d_conv = 4.)

/** dt·A is clamped from below at this value everywhere (reference, step and
 * prefill graphs), so that the chunked scan cannot overflow. exp(-20) ≈ 2e-9:
 * a decay that small is already zero at fp32 next to any fresh input. */
export const DT_A_CLAMP = -20;

export const RMS_EPS = 1e-5;

export interface MambaDims {
  n_layer: number;
  d_model: number;
  d_inner: number;
  d_state: number;
  d_conv: number;
  dt_rank: number;
  vocab_size: number;
}

export interface MambaLayerWeights {
  norm: Float32Array; // [d_model]
  in_proj: Float32Array; // [2·d_inner, d_model]
  conv_w: Float32Array; // [d_inner, d_conv]  (HF conv1d.weight [d_inner, 1, d_conv])
  conv_b: Float32Array; // [d_inner]
  x_proj: Float32Array; // [dt_rank + 2·d_state, d_inner]
  dt_proj_w: Float32Array; // [d_inner, dt_rank]
  dt_proj_b: Float32Array; // [d_inner]
  A_log: Float32Array; // [d_inner, d_state]
  D: Float32Array; // [d_inner]
  out_proj: Float32Array; // [d_model, d_inner]
}

export interface MambaWeights {
  dims: MambaDims;
  embeddings: Float32Array; // [vocab, d_model], also the tied LM head
  layers: MambaLayerWeights[];
  norm_f: Float32Array; // [d_model]
}

export interface MambaRefState {
  /** Per layer, [d_inner, d_conv - 1]. */
  conv: Float32Array[];
  /** Per layer, [d_inner, d_state]. */
  ssm: Float32Array[];
}

export function zeroMambaState(d: MambaDims): MambaRefState {
  return {
    conv: Array.from({ length: d.n_layer }, () => new Float32Array(d.d_inner * (d.d_conv - 1))),
    ssm: Array.from({ length: d.n_layer }, () => new Float32Array(d.d_inner * d.d_state)),
  };
}

const f = Math.fround;
const silu = (x: number): number => x / (1 + Math.exp(-x));
// Written the way the graphs compute it (no Softplus op there).
const softplus = (x: number): number => Math.max(x, 0) + Math.log(1 + Math.exp(-Math.abs(x)));

function rmsNorm(x: Float32Array, w: Float32Array): Float32Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const r = Math.sqrt(ss / x.length + RMS_EPS);
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (x[i]! / r) * w[i]!;
  return out;
}

/** y = W·x for a row-major W [rows, cols]. */
function matVec(w: Float32Array, x: Float32Array, rows: number, cols: number): Float32Array {
  const y = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const o = r * cols;
    for (let c = 0; c < cols; c++) s += w[o + c]! * x[c]!;
    y[r] = s;
  }
  return y;
}

/** One layer's mixer on one token; updates `conv` and `ssm` in place. */
function mixerStep(d: MambaDims, L: MambaLayerWeights, hn: Float32Array, conv: Float32Array, ssm: Float32Array): Float32Array {
  const E = d.d_inner;
  const N = d.d_state;
  const K = d.d_conv;
  const R = d.dt_rank;
  const xz = matVec(L.in_proj, hn, 2 * E, d.d_model);
  const xc = new Float32Array(E);
  for (let e = 0; e < E; e++) {
    let s = L.conv_b[e]!;
    for (let k = 0; k < K - 1; k++) s += L.conv_w[e * K + k]! * conv[e * (K - 1) + k]!;
    s += L.conv_w[e * K + K - 1]! * xz[e]!;
    for (let k = 0; k < K - 2; k++) conv[e * (K - 1) + k] = conv[e * (K - 1) + k + 1]!;
    conv[e * (K - 1) + K - 2] = xz[e]!;
    xc[e] = silu(f(s));
  }
  const xdbl = matVec(L.x_proj, xc, R + 2 * N, E);
  const dtr = xdbl.subarray(0, R);
  const B = xdbl.subarray(R, R + N);
  const C = xdbl.subarray(R + N, R + 2 * N);
  const dtPre = matVec(L.dt_proj_w, dtr, E, R);
  const y = new Float32Array(E);
  for (let e = 0; e < E; e++) {
    const dt = f(softplus(f(dtPre[e]! + L.dt_proj_b[e]!)));
    const dx = f(dt * xc[e]!);
    let acc = 0;
    for (let n = 0; n < N; n++) {
      const A = -f(Math.exp(L.A_log[e * N + n]!));
      const a = Math.max(f(dt * A), DT_A_CLAMP);
      const h = f(f(Math.exp(a)) * ssm[e * N + n]! + f(dx * B[n]!));
      ssm[e * N + n] = h;
      acc += h * C[n]!;
    }
    const z = xz[E + e]!;
    y[e] = f(acc + L.D[e]! * xc[e]!) * silu(z);
  }
  return matVec(L.out_proj, y, d.d_model, E);
}

/**
 * Runs `tokens` on top of `state` (which is updated in place) and returns the
 * logits of the last token. Give a clone if the input state must survive.
 */
export function mambaReferenceForward(w: MambaWeights, tokens: readonly number[], state: MambaRefState): Float32Array {
  const d = w.dims;
  if (tokens.length === 0) throw new RangeError('at least one token');
  let x = new Float32Array(d.d_model);
  for (const tok of tokens) {
    if (!(tok >= 0 && tok < d.vocab_size)) throw new RangeError(`token id ${tok} outside the vocabulary`);
    x = w.embeddings.slice(tok * d.d_model, (tok + 1) * d.d_model);
    for (let l = 0; l < d.n_layer; l++) {
      const L = w.layers[l]!;
      const out = mixerStep(d, L, rmsNorm(x, L.norm), state.conv[l]!, state.ssm[l]!);
      for (let i = 0; i < d.d_model; i++) x[i] = x[i]! + out[i]!;
    }
  }
  return matVec(w.embeddings, rmsNorm(x, w.norm_f), d.vocab_size, d.d_model);
}
