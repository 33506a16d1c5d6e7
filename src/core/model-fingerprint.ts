import { canonicalize } from './canonical-json.ts';
import { sha256Hex } from './sha256.ts';
import { utf8 } from './bytes.ts';

export const FORMAT_VERSION = 1;

/** What a model's identity is made of; everything that changes a state's bytes. */
export interface ModelIdentity {
  arch: 'gpt2' | 'mamba';
  /** The architecture numbers that shape a state (layers, heads, widths, vocabulary, context). */
  config: Record<string, number | string>;
  /** sha256 hex of the weights file(s) as loaded. */
  weights_sha256: string;
  /** sha256 hex of tokenizer.json. */
  tokenizer_sha256: string;
  dtype: 'fp32' | 'fp16' | 'q8';
}

/** model_fp = sha256(RFC 8785 JSON of the identity plus the format version), as hex. */
export async function modelFingerprint(id: ModelIdentity): Promise<string> {
  const doc = {
    arch: id.arch,
    config: id.config,
    weights_sha256: id.weights_sha256,
    tokenizer_sha256: id.tokenizer_sha256,
    dtype: id.dtype,
    format_version: FORMAT_VERSION,
  };
  return sha256Hex(utf8(canonicalize(doc)));
}
