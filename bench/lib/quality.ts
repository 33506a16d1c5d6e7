/**
 * Model quality for the bench's `quality[]` rows: perplexity on held-out
 * Brown text (the documents scripts/train/brown.ts keeps out of micro-gpt2's
 * training), computed in Node on the ONNX graph the page is served
 * (public/models/<id>/onnx/model.onnx, built by scripts/make-models.ts), so a
 * row describes the model as it runs, not the checkpoint it came from.
 */
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { brownDocs, brownSplit, tokenStream } from '../../scripts/train/brown.ts';
import type { QualityRow } from './types.ts';

/** Tokens per window: short enough that one window's logits (window × 50257 floats) stay near 100 MB. */
const QUALITY_WINDOW = 512;
/** Windows measured: the first QUALITY_WINDOWS × QUALITY_WINDOW tokens of the held-out stream. */
const QUALITY_WINDOWS = 4;

let heldOut: number[] | undefined;
/** The held-out token stream (EOT doc EOT doc …), the one train_micro.py evaluates on. */
function heldOutStream(): number[] {
  heldOut ??= tokenStream(brownSplit(brownDocs()).heldout);
  return heldOut;
}

/** Sum of −ln p(ids[i+1] | ids[..i]) over one window's logits (rows × vocab, row i predicts ids[i+1]). */
export function windowNll(logits: Float32Array, ids: number[], vocab: number): number {
  if (logits.length < (ids.length - 1) * vocab) throw new Error(`logits hold ${logits.length / vocab} rows, want ${ids.length - 1}`);
  let nll = 0;
  for (let i = 0; i < ids.length - 1; i++) {
    const row = logits.subarray(i * vocab, (i + 1) * vocab);
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (row[v]! > max) max = row[v]!;
    let sum = 0;
    for (let v = 0; v < vocab; v++) sum += Math.exp(row[v]! - max);
    const target = ids[i + 1]!;
    if (!(target >= 0 && target < vocab)) throw new Error(`token ${target} is outside the vocabulary of ${vocab}`);
    nll += Math.log(sum) + max - row[target]!;
  }
  return nll;
}

const i64 = (xs: number[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), dims);

/** Logits of every position of `ids` (one batch row, no past) from a statecart GPT-2 ONNX graph. */
async function onnxLogits(session: ort.InferenceSession, config: { n_layer: number; n_head: number; n_embd: number }, ids: number[]): Promise<Float32Array> {
  const S = ids.length;
  const D = config.n_embd / config.n_head;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids, [1, S]),
    attention_mask: i64(new Array(S).fill(1), [1, S]),
    position_ids: i64(
      Array.from({ length: S }, (_, i) => i),
      [1, S],
    ),
    // 0: every row.
    num_logits_to_keep: i64([0], []),
  };
  for (let l = 0; l < config.n_layer; l++) {
    feeds[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [1, config.n_head, 0, D]);
    feeds[`past_key_values.${l}.value`] = new ort.Tensor('float32', new Float32Array(0), [1, config.n_head, 0, D]);
  }
  const out = await session.run(feeds);
  return out.logits!.data as Float32Array;
}

/**
 * Perplexity of the GPT-2 model in `modelDir` (a folder make-models wrote) on
 * `windows` non-overlapping windows of `window` held-out tokens; each window
 * starts from an empty context, so `heldOutTokens` = windows × (window − 1).
 */
export async function heldOutPerplexity(model: string, modelDir: string, o: { window?: number; windows?: number } = {}): Promise<QualityRow> {
  const window = o.window ?? QUALITY_WINDOW;
  const windows = o.windows ?? QUALITY_WINDOWS;
  const { readFile } = await import('node:fs/promises');
  const cfg = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8')) as { n_layer: number; n_head: number; n_embd: number; vocab_size: number };
  const stream = heldOutStream();
  if (stream.length < window * windows) throw new Error(`the held-out text has ${stream.length} tokens, fewer than ${window * windows}`);
  const session = await ort.InferenceSession.create(join(modelDir, 'onnx', 'model.onnx'));
  try {
    let nll = 0;
    let n = 0;
    for (let w = 0; w < windows; w++) {
      const ids = stream.slice(w * window, (w + 1) * window);
      nll += windowNll(await onnxLogits(session, cfg, ids), ids, cfg.vocab_size);
      n += ids.length - 1;
    }
    return { model, heldOutTokens: n, perplexity: Math.exp(nll / n) };
  } finally {
    await session.release();
  }
}
