/**
 * A GPT-2 model folder as files in memory: what scripts/make-models.ts writes
 * to disk and what a Hub-shaped mirror serves. No Node APIs.
 *
 *   config.json, generation_config.json, tokenizer.json, tokenizer_config.json,
 *   onnx/model.onnx, statecart.json
 */
import { sha256Hex } from '../core/sha256.ts';
import { buildGpt2Onnx } from './gpt2-onnx.ts';
import type { GPT2Config, GPT2Weights } from './gpt2-reference.ts';
import { GPT2_EOS_ID, type TokenizerFiles } from './tokenizer-json.ts';

export interface Gpt2StatecartJson {
  id: string;
  arch: 'gpt2';
  config: { n_layer: number; n_head: number; n_embd: number; n_positions: number; vocab_size: number };
  dtype: 'fp32';
  weights_sha256: string;
  tokenizer_sha256: string;
  weight_source: Record<string, unknown>;
}

const json = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v, null, 2) + '\n');

/** The Hugging Face config.json of a GPT-2 model. */
export function gpt2HfConfig(c: GPT2Config): Record<string, unknown> {
  return {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    bos_token_id: GPT2_EOS_ID,
    embd_pdrop: 0.1,
    eos_token_id: GPT2_EOS_ID,
    initializer_range: 0.02,
    layer_norm_epsilon: c.layer_norm_epsilon,
    model_type: 'gpt2',
    n_ctx: c.n_positions,
    n_embd: c.n_embd,
    n_head: c.n_head,
    n_inner: null,
    n_layer: c.n_layer,
    n_positions: c.n_positions,
    reorder_and_upcast_attn: false,
    resid_pdrop: 0.1,
    scale_attn_by_inverse_layer_idx: false,
    scale_attn_weights: true,
    tie_word_embeddings: true,
    use_cache: true,
    vocab_size: c.vocab_size,
    'transformers.js_config': { dtype: 'fp32' },
  };
}

/** Every file of a GPT-2 model folder, by path inside the folder. */
export async function buildGpt2Files(
  id: string,
  weights: GPT2Weights,
  weightSource: Record<string, unknown>,
  tokenizer: TokenizerFiles,
): Promise<{ statecart: Gpt2StatecartJson; files: Map<string, Uint8Array> }> {
  const c = weights.config;
  if (c.vocab_size !== 50257) throw new Error(`${id}: the GPT-2 tokenizer needs vocab_size 50257, got ${c.vocab_size}`);
  const onnxBytes = buildGpt2Onnx(weights);
  const statecart: Gpt2StatecartJson = {
    id,
    arch: 'gpt2',
    config: { n_layer: c.n_layer, n_head: c.n_head, n_embd: c.n_embd, n_positions: c.n_positions, vocab_size: c.vocab_size },
    dtype: 'fp32',
    weights_sha256: await sha256Hex(onnxBytes),
    tokenizer_sha256: await sha256Hex(tokenizer.tokenizerJson),
    weight_source: weightSource,
  };
  const files = new Map<string, Uint8Array>([
    ['config.json', json(gpt2HfConfig(c))],
    ['generation_config.json', json({ bos_token_id: GPT2_EOS_ID, eos_token_id: GPT2_EOS_ID })],
    ['tokenizer.json', tokenizer.tokenizerJson],
    ['tokenizer_config.json', tokenizer.tokenizerConfigJson],
    ['onnx/model.onnx', onnxBytes],
    ['statecart.json', json(statecart)],
  ]);
  return { statecart, files };
}
