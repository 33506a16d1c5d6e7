/**
 * A Mamba-1 model folder, as files in memory (scripts/make-models.ts writes
 * them; the worker converts a Hub checkpoint with the same code), that
 * src/models/mamba.ts loads:
 *
 *   config.json              Hugging Face MambaConfig fields
 *   statecart.json           { id, arch, config, dtype, weights_sha256, weight_source }
 *   onnx/prefill.onnx        T a multiple of 8 (chunked scan)
 *   onnx/tail.onnx           any T (pairwise scan, meant for the < 8 leftovers)
 *   onnx/step.onnx           T = 1
 *   onnx/prefill-scan.onnx   any T, the recurrence in an ONNX Scan (what CPUs run instead of prefill + tail)
 *   onnx/weights.bin         every weight, fp32, shared by the graphs
 *   tokenizer.json, tokenizer_config.json   GPT-2's (src/models/tokenizer-json.ts)
 *
 * weights_sha256 is the sha256 of onnx/weights.bin: the graphs hold no
 * weights, only the computation, so the weights file is what makes a model.
 *
 * Weight sources: seeded (deterministic, `scale` multiplies embeddings and the
 * in/x/out projections so that greedy continuations vary), or a
 * `model.safetensors` in the `state-spaces/mamba-130m-hf` layout (F32, F16 or
 * BF16; dims read from the tensor shapes). Same inputs → byte-identical files.
 */
import { sha256Hex } from '../core/sha256.ts';
import { readSafetensors } from '../formats/safetensors.ts';
import { hash32, mulberry32 } from './gpt2-weights.ts';
import { buildMambaGraph, packMambaWeights, mambaWeightsFromTensors, WEIGHTS_FILE, SUBCHUNK } from './mamba-onnx.ts';
import type { MambaDims, MambaLayerWeights, MambaWeights } from './mamba-reference.ts';
import { RMS_EPS } from './mamba-reference.ts';

export type MambaPreset = 'tiny-mamba' | 'mamba-130m-shape';

/**
 * tiny-mamba uses the GPT-2 vocabulary unpadded (50,257) so every logit is a
 * real token. mamba-130m-shape keeps the Hub checkpoint's 50,280 embedding
 * rows (its config.json says vocab_size 50280: GPT-NeoX's 50,277 tokens padded
 * to a multiple of 8); with the GPT-2 tokenizer, rows 50,257.. are never fed.
 */
export const MAMBA_PRESETS: Record<MambaPreset, MambaDims> = {
  'tiny-mamba': { n_layer: 2, d_model: 64, d_inner: 128, d_state: 16, d_conv: 4, dt_rank: 4, vocab_size: 50257 },
  'mamba-130m-shape': { n_layer: 24, d_model: 768, d_inner: 1536, d_state: 16, d_conv: 4, dt_rank: 48, vocab_size: 50280 },
};

/** Tokens per prefill call that the runner uses (a multiple of the sub-chunk). */
const DEFAULT_CHUNK = 64;

/**
 * At scale 1 (the usual init) greedy decoding on tiny-mamba repeats one token
 * after two; at 4 it varies and the graphs still match the reference to ~6e-6.
 */
export const DEFAULT_SCALE: Record<MambaPreset, number> = { 'tiny-mamba': 4, 'mamba-130m-shape': 1 };

export interface WriteMambaOptions {
  preset: MambaPreset;
  seed?: number;
  /** Seeded source only. Default: DEFAULT_SCALE[preset] (tiny-mamba 4, so that greedy text varies). */
  scale?: number;
  /** Use the weights of this Hub-layout model.safetensors instead of seeded ones (dims come from the file). */
  safetensors?: Uint8Array;
  /** Defaults to the preset name, or `state-spaces/mamba-130m-hf` for a safetensors source. */
  id?: string;
  /** Tokens per prefill run (default 64). */
  chunk?: number;
  /** Tokens per sub-chunk of the prefill scan (factored form inside, pairwise across). */
  subchunk?: number;
}

export interface StatecartJson {
  id: string;
  arch: 'mamba';
  config: MambaDims & { chunk: number; subchunk: number };
  dtype: 'fp32';
  weights_sha256: string;
  weight_source: Record<string, unknown>;
  files: { prefill: string; tail: string; step: string; prefill_scan: string; weights: string };
}

// ---------------------------------------------------------------- seeded weights

const MAMBA_SEEDED_PRNG = 'mulberry32-uniform/fnv1a(seed:name) v1';

function uniform(n: number, seed: number, name: string, bound: number): Float32Array {
  const next = mulberry32(hash32(`${seed}:${name}`));
  const out = new Float32Array(n);
  const k = (2 * bound) / 4294967296;
  for (let i = 0; i < n; i++) out[i] = next() * k - bound;
  return out;
}

/**
 * Deterministic Mamba weights, close to the reference init: projections
 * U(±1/√fan_in)·scale, embeddings U with std 0.02·scale, conv U(±1/√d_conv),
 * dt bias = softplus⁻¹ of a log-uniform dt in [0.001, 0.1], A_log = log(1..N),
 * D = 1, norms = 1.
 */
export function seededMambaWeights(d: MambaDims, seed = 1, scale = 1): MambaWeights {
  const E = d.d_inner;
  const N = d.d_state;
  const K = d.d_conv;
  const R = d.dt_rank;
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const layers: MambaLayerWeights[] = [];
  for (let l = 0; l < d.n_layer; l++) {
    const p = `backbone.layers.${l}.mixer.`;
    const u = uniform(E, seed, p + 'dt_proj.bias', 0.5);
    const dtB = new Float32Array(E);
    for (let e = 0; e < E; e++) {
      const dt = Math.max(Math.exp((u[e]! + 0.5) * (Math.log(0.1) - Math.log(0.001)) + Math.log(0.001)), 1e-4);
      dtB[e] = dt + Math.log(-Math.expm1(-dt));
    }
    const Alog = new Float32Array(E * N);
    for (let e = 0; e < E; e++) for (let n = 0; n < N; n++) Alog[e * N + n] = Math.log(n + 1);
    layers.push({
      norm: ones(d.d_model),
      in_proj: uniform(2 * E * d.d_model, seed, p + 'in_proj.weight', scale / Math.sqrt(d.d_model)),
      conv_w: uniform(E * K, seed, p + 'conv1d.weight', 1 / Math.sqrt(K)),
      conv_b: uniform(E, seed, p + 'conv1d.bias', 1 / Math.sqrt(K)),
      x_proj: uniform((R + 2 * N) * E, seed, p + 'x_proj.weight', scale / Math.sqrt(E)),
      dt_proj_w: uniform(E * R, seed, p + 'dt_proj.weight', 1 / Math.sqrt(R)),
      dt_proj_b: dtB,
      A_log: Alog,
      D: ones(E),
      out_proj: uniform(d.d_model * E, seed, p + 'out_proj.weight', scale / Math.sqrt(E)),
    });
  }
  return {
    dims: d,
    embeddings: uniform(d.vocab_size * d.d_model, seed, 'backbone.embeddings.weight', 0.02 * Math.sqrt(3) * scale),
    layers,
    norm_f: ones(d.d_model),
  };
}

// ---------------------------------------------------------------- safetensors weights

export async function mambaWeightsFromSafetensors(bytes: Uint8Array): Promise<{ weights: MambaWeights; info: Record<string, unknown> }> {
  const st = readSafetensors(bytes);
  const weights = mambaWeightsFromTensors(st.tensors as unknown as Map<string, { dtype: string; shape: number[]; data: ArrayLike<number> }>);
  return { weights, info: { kind: 'safetensors', file: 'model.safetensors', sha256: await sha256Hex(bytes) } };
}

/** The weights in the Hub's layout, as writeSafetensors input (for tests of the safetensors path). */
export function mambaWeightsToSafetensorsInput(w: MambaWeights): { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] {
  const d = w.dims;
  const E = d.d_inner;
  const out: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] = [];
  const add = (name: string, shape: number[], data: Float32Array): void => void out.push({ name, dtype: 'F32', shape, data });
  add('backbone.embeddings.weight', [d.vocab_size, d.d_model], w.embeddings);
  w.layers.forEach((L, l) => {
    const p = `backbone.layers.${l}.`;
    const m = p + 'mixer.';
    add(m + 'A_log', [E, d.d_state], L.A_log);
    add(m + 'D', [E], L.D);
    add(m + 'conv1d.bias', [E], L.conv_b);
    add(m + 'conv1d.weight', [E, 1, d.d_conv], L.conv_w);
    add(m + 'dt_proj.bias', [E], L.dt_proj_b);
    add(m + 'dt_proj.weight', [E, d.dt_rank], L.dt_proj_w);
    add(m + 'in_proj.weight', [2 * E, d.d_model], L.in_proj);
    add(m + 'out_proj.weight', [d.d_model, E], L.out_proj);
    add(m + 'x_proj.weight', [d.dt_rank + 2 * d.d_state, E], L.x_proj);
    add(p + 'norm.weight', [d.d_model], L.norm);
  });
  add('backbone.norm_f.weight', [d.d_model], w.norm_f);
  return out;
}

// ---------------------------------------------------------------- writing

/** Hugging Face MambaConfig fields (transformers' configuration_mamba.py). */
export function hfMambaConfig(d: MambaDims): Record<string, unknown> {
  return {
    architectures: ['MambaForCausalLM'],
    model_type: 'mamba',
    vocab_size: d.vocab_size,
    hidden_size: d.d_model,
    state_size: d.d_state,
    num_hidden_layers: d.n_layer,
    intermediate_size: d.d_inner,
    expand: d.d_inner / d.d_model,
    conv_kernel: d.d_conv,
    time_step_rank: d.dt_rank,
    layer_norm_epsilon: RMS_EPS,
    use_bias: false,
    use_conv_bias: true,
    hidden_act: 'silu',
    initializer_range: 0.1,
    residual_in_fp32: true,
    time_step_scale: 1.0,
    time_step_min: 0.001,
    time_step_max: 0.1,
    time_step_init_scheme: 'random',
    time_step_floor: 0.0001,
    rescale_prenorm_residual: false,
    tie_word_embeddings: true,
    use_cache: true,
    // GPT-2 tokenizer: <|endoftext|> is 50256.
    bos_token_id: 50256,
    eos_token_id: 50256,
    pad_token_id: 50256,
  };
}

export interface MambaModelFiles {
  statecart: StatecartJson;
  weights: MambaWeights;
  /** Every file of the folder but the tokenizer's, by path inside it. */
  files: Map<string, Uint8Array>;
}

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v, null, 2) + '\n');

/** The graphs, packed weights, config.json and statecart.json for these weights. */
export async function buildMambaFiles(
  weights: MambaWeights,
  source: Record<string, unknown>,
  o: { id: string; chunk?: number; subchunk?: number },
): Promise<MambaModelFiles> {
  const chunk = o.chunk ?? DEFAULT_CHUNK;
  const subchunk = o.subchunk ?? SUBCHUNK;
  if (chunk <= 0 || chunk % subchunk !== 0) throw new Error(`chunk must be a positive multiple of ${subchunk}`);
  const packed = packMambaWeights(weights);
  const files = new Map<string, Uint8Array>([
    ['onnx/prefill.onnx', buildMambaGraph('prefill', weights.dims, packed, subchunk)],
    ['onnx/tail.onnx', buildMambaGraph('tail', weights.dims, packed)],
    ['onnx/step.onnx', buildMambaGraph('step', weights.dims, packed)],
    ['onnx/prefill-scan.onnx', buildMambaGraph('prefill-scan', weights.dims, packed)],
    [`onnx/${WEIGHTS_FILE}`, packed.bytes],
  ]);
  const statecart: StatecartJson = {
    id: o.id,
    arch: 'mamba',
    config: { ...weights.dims, chunk, subchunk },
    dtype: 'fp32',
    weights_sha256: await sha256Hex(packed.bytes),
    weight_source: source,
    files: {
      prefill: 'onnx/prefill.onnx',
      tail: 'onnx/tail.onnx',
      step: 'onnx/step.onnx',
      prefill_scan: 'onnx/prefill-scan.onnx',
      weights: `onnx/${WEIGHTS_FILE}`,
    },
  };
  files.set('config.json', json(hfMambaConfig(weights.dims)));
  files.set('statecart.json', json(statecart));
  return { statecart, weights, files };
}

/** A preset model with seeded weights, or the weights of a Hub checkpoint. */
export async function buildMambaModel(opts: WriteMambaOptions): Promise<MambaModelFiles> {
  if (opts.safetensors) {
    const r = await mambaWeightsFromSafetensors(opts.safetensors);
    return buildMambaFiles(r.weights, r.info, { id: opts.id ?? 'state-spaces/mamba-130m-hf', chunk: opts.chunk, subchunk: opts.subchunk });
  }
  const seed = opts.seed ?? 1;
  const scale = opts.scale ?? DEFAULT_SCALE[opts.preset];
  const weights = seededMambaWeights(MAMBA_PRESETS[opts.preset], seed, scale);
  return buildMambaFiles(
    weights,
    { kind: 'seeded', prng: MAMBA_SEEDED_PRNG, seed, scale },
    { id: opts.id ?? opts.preset, chunk: opts.chunk, subchunk: opts.subchunk },
  );
}

/**
 * Turns a Hub checkpoint (`model.safetensors` in the layout of
 * state-spaces/mamba-130m-hf) into our graphs and packed weights, in memory,
 * in the worker. The same weights give the same weights_sha256, hence the
 * same model fingerprint and state keys, as the files make-models writes.
 */
export async function convertMambaCheckpoint(
  safetensors: Uint8Array,
  o: { id: string; chunk?: number; subchunk?: number; revision?: string },
): Promise<MambaModelFiles> {
  const r = await mambaWeightsFromSafetensors(safetensors);
  const source = { ...r.info, converted: 'in the browser', ...(o.revision ? { revision: o.revision } : {}) };
  return buildMambaFiles(r.weights, source, o);
}
