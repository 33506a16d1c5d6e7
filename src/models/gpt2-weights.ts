/**
 * GPT-2 weight sources: a deterministic seeded generator, and a
 * `model.safetensors` in the Hugging Face `gpt2` layout. Both produce the
 * GPT2Weights object that the ONNX builder and the TypeScript reference take.
 */
import { sha256Hex } from '../core/sha256.ts';
import { readSafetensors } from '../formats/safetensors.ts';
import { mulberry32u32 } from '../core/prng.ts';
import { tensorToFloat32 } from '../formats/fp16.ts';
import { gpt2TensorSpecs, type GPT2Config, type GPT2Weights, type NamedTensor } from './gpt2-reference.ts';

export type { GPT2Config, GPT2Weights, NamedTensor };

// ---------------------------------------------------------------- seeded PRNG

/** FNV-1a over UTF-16 code units → uint32; mixes the seed with a tensor name. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** mulberry32, as uint32s (src/core/prng.ts). */
export const mulberry32 = mulberry32u32;

/** Fills `out` with N(mean, std²) samples (Box–Muller on mulberry32), rounded to float32. */
function fillNormal(out: Float32Array, seed: number, mean: number, std: number): Float32Array {
  const next = mulberry32(seed);
  const TWO32 = 4294967296;
  for (let i = 0; i < out.length; i += 2) {
    const u1 = (next() + 0.5) / TWO32; // (0, 1): log never sees 0
    const u2 = next() / TWO32;
    const r = Math.sqrt(-2 * Math.log(u1));
    const th = 2 * Math.PI * u2;
    out[i] = mean + std * r * Math.cos(th);
    if (i + 1 < out.length) out[i + 1] = mean + std * r * Math.sin(th);
  }
  return out;
}

export interface SeededOptions {
  seed: number;
  /** std of weights and biases = 0.02 × scale. */
  scale: number;
}

const SEEDED_PRNG = 'mulberry32+box-muller/fnv1a(seed:name) v1';

/** What statecart.json records about a seeded source. */
export function seededSourceInfo(o: SeededOptions) {
  return {
    kind: 'seeded' as const,
    prng: SEEDED_PRNG,
    seed: o.seed,
    scale: o.scale,
    std: 0.02 * o.scale,
    layer_norm: 'weight 1 + 0.1·N(0,1), bias 0.1·N(0,1)',
  };
}

/**
 * Deterministic GPT-2 weights. Every tensor has its own stream, seeded by
 * fnv1a(`${seed}:${name}`), so a tensor's values do not depend on the others.
 * Linear weights, biases and embeddings: N(0, (0.02·scale)²); layer norms:
 * weight 1 + 0.1·N(0,1), bias 0.1·N(0,1) (small but not trivial, so a swapped
 * gamma/beta shows).
 */
export function seededGpt2Weights(config: GPT2Config, o: SeededOptions): GPT2Weights {
  const tensors = new Map<string, NamedTensor>();
  const std = 0.02 * o.scale;
  for (const spec of gpt2TensorSpecs(config)) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const seed = hash32(`${o.seed}:${spec.name}`);
    if (spec.kind === 'ln_weight') fillNormal(data, seed, 1, 0.1);
    else if (spec.kind === 'ln_bias') fillNormal(data, seed, 0, 0.1);
    else fillNormal(data, seed, 0, std);
    tensors.set(spec.name, { shape: spec.shape, data });
  }
  return { config, tensors };
}

// ---------------------------------------------------------- safetensors source

function toFloat32(dtype: string, data: ArrayLike<number> | ArrayBufferView): Float32Array {
  return tensorToFloat32(dtype, data, 'a GPT-2 weight');
}

export interface SafetensorsGpt2Options {
  /** Overrides; otherwise read from a config.json beside the file, else n_embd / 64 and 1e-5. */
  n_head?: number;
  layer_norm_epsilon?: number;
}

/** Names in an HF gpt2 checkpoint that are not weights we need (buffers, the tied head). */
const IGNORED = /^(h\.\d+\.attn\.(bias|masked_bias)|lm_head\.weight)$/;

/** Builds GPT2Weights from the tensors of an HF `gpt2` safetensors file (`transformer.` prefix optional). */
export function gpt2WeightsFromTensors(
  raw: Map<string, { dtype: string; shape: number[]; data: ArrayLike<number> | ArrayBufferView }>,
  o: Required<Pick<SafetensorsGpt2Options, 'n_head' | 'layer_norm_epsilon'>> | SafetensorsGpt2Options = {},
): GPT2Weights {
  const byName = new Map<string, { dtype: string; shape: number[]; data: ArrayLike<number> | ArrayBufferView }>();
  for (const [k, v] of raw) byName.set(k.startsWith('transformer.') ? k.slice('transformer.'.length) : k, v);
  const wte = byName.get('wte.weight');
  const wpe = byName.get('wpe.weight');
  if (!wte || !wpe) throw new Error('not a GPT-2 checkpoint: wte.weight / wpe.weight missing');
  let n_layer = 0;
  for (const k of byName.keys()) {
    const m = /^h\.(\d+)\./.exec(k);
    if (m) n_layer = Math.max(n_layer, Number(m[1]) + 1);
  }
  const n_embd = wte.shape[1]!;
  const config: GPT2Config = {
    n_layer,
    n_head: o.n_head ?? n_embd / 64,
    n_embd,
    n_positions: wpe.shape[0]!,
    vocab_size: wte.shape[0]!,
    layer_norm_epsilon: o.layer_norm_epsilon ?? 1e-5,
  };
  if (!Number.isInteger(config.n_head) || n_embd % config.n_head !== 0) throw new Error(`n_head ${config.n_head} does not divide n_embd ${n_embd}`);
  const tensors = new Map<string, NamedTensor>();
  const specs = gpt2TensorSpecs(config);
  const want = new Set(specs.map((s) => s.name));
  for (const spec of specs) {
    const t = byName.get(spec.name);
    if (!t) throw new Error(`GPT-2 checkpoint lacks ${spec.name}`);
    if (t.shape.join(',') !== spec.shape.join(',')) throw new Error(`${spec.name}: shape [${t.shape}], want [${spec.shape}]`);
    tensors.set(spec.name, { shape: spec.shape, data: toFloat32(t.dtype, t.data) });
  }
  for (const k of byName.keys()) if (!want.has(k) && !IGNORED.test(k)) throw new Error(`unexpected tensor ${k} in GPT-2 checkpoint`);
  return { config, tensors };
}

/**
 * Reads an HF gpt2-layout model.safetensors (its bytes; `n_head` and
 * `layer_norm_epsilon` from the config.json beside it, when the caller has it).
 */
export async function gpt2WeightsFromSafetensors(
  bytes: Uint8Array,
  o: SafetensorsGpt2Options & { file?: string } = {},
): Promise<{ weights: GPT2Weights; info: Record<string, unknown> }> {
  const st = readSafetensors(bytes);
  const weights = gpt2WeightsFromTensors(st.tensors as Map<string, { dtype: string; shape: number[]; data: ArrayLike<number> }>, o);
  const info = { kind: 'safetensors' as const, file: o.file ?? 'model.safetensors', sha256: await sha256Hex(bytes) };
  return { weights, info };
}

/** The weights as writeSafetensors input, HF `gpt2` names (no prefix), spec order. */
export function gpt2WeightsToSafetensorsInput(w: GPT2Weights): { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] {
  return gpt2TensorSpecs(w.config).map((s) => {
    const t = w.tensors.get(s.name)!;
    return { name: s.name, dtype: 'F32' as const, shape: t.shape, data: t.data };
  });
}
