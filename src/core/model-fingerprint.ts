import { canonicalize } from './canonical-json.ts';
import { sha256Hex } from './sha256.ts';
import { utf8 } from './bytes.ts';

const FORMAT_VERSION = 1;

/** How a model's numbers are stored: fp32, fp16 (weights and KV I/O in float16), q8 (int8 weights, dynamic quantization). */
export type Dtype = 'fp32' | 'fp16' | 'q8';

/**
 * What a model's identity is made of: every file whose bytes change a
 * state's values, by digest, and the numbers that shape a state.
 */
export interface ModelIdentity {
  arch: 'gpt2' | 'mamba';
  /** The architecture numbers that shape a state (layers, heads, widths, vocabulary, context). */
  config: Record<string, number | string>;
  /** sha256 hex of the weights file as loaded (GPT-2: the one ONNX file of the dtype, graph and weights; Mamba: onnx/weights.bin). */
  weights_sha256: string;
  /**
   * sha256 hex over the computation graphs when they are files apart from the
   * weights (Mamba: prefill, tail and step, see `graphsDigest`). Absent when
   * the weights file holds the graph (GPT-2), so those fingerprints are unchanged.
   */
  graphs_sha256?: string;
  /** sha256 hex of tokenizer.json. */
  tokenizer_sha256: string;
  dtype: Dtype;
}

/**
 * What computed a state, recorded beside it (manifest, cartridge) and never
 * part of its key: the same model on another device or runtime version
 * computes the same state up to float rounding.
 */
export interface Provenance {
  device: string;
  adapter: string | null;
  dtype: Dtype;
  /** Runtime name → version (e.g. `onnxruntime-web`, `transformers.js`). */
  runtimes: Record<string, string>;
}

/** model_fp = sha256(RFC 8785 JSON of the identity plus the format version), as hex. */
export async function modelFingerprint(id: ModelIdentity): Promise<string> {
  const doc: Record<string, unknown> = {
    arch: id.arch,
    config: id.config,
    weights_sha256: id.weights_sha256,
    tokenizer_sha256: id.tokenizer_sha256,
    dtype: id.dtype,
    format_version: FORMAT_VERSION,
  };
  if (id.graphs_sha256 !== undefined) doc.graphs_sha256 = id.graphs_sha256;
  return sha256Hex(utf8(canonicalize(doc)));
}

/** One digest over named graph files: sha256 of the RFC 8785 JSON of `{ name: sha256 hex of its bytes }`. */
export async function graphsDigest(graphs: Record<string, Uint8Array>): Promise<string> {
  const each: Record<string, string> = {};
  for (const [name, bytes] of Object.entries(graphs)) each[name] = await sha256Hex(bytes);
  return sha256Hex(utf8(canonicalize(each)));
}
