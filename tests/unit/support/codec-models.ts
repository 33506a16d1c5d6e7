// Models for codec tests and benchmarks in Node: GPT-2 through transformers.js'
// Node build, Mamba through onnxruntime-node, from any models folder
// (public/models for the tiny ones, .cache/models for the *-shape ones).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { env } from '@huggingface/transformers';
import { loadGpt2 } from '../../../src/models/gpt2.ts';
import { createMambaModel, type OrtLike } from '../../../src/models/mamba.ts';
import type { StateModel } from '../../../src/models/types.ts';

export const PUBLIC_MODELS = join(process.cwd(), 'public/models');
export const CACHE_MODELS = join(process.cwd(), '.cache/models');

const cache = new Map<string, Promise<StateModel>>();

export function loadNodeModel(id: string, root = id.endsWith('-shape') ? CACHE_MODELS : PUBLIC_MODELS): Promise<StateModel> {
  const k = root + '|' + id;
  let p = cache.get(k);
  if (!p) {
    p = (async () => {
      const meta = JSON.parse(await readFile(join(root, id, 'statecart.json'), 'utf8')) as { arch: string };
      if (meta.arch === 'mamba') {
        // Token ids are fed directly; the tokenizer only has to exist.
        return createMambaModel({
          ort: ort as unknown as OrtLike,
          baseUrl: join(root, id),
          modelId: id,
          device: 'cpu',
          fetchBytes: async (f) => new Uint8Array(await readFile(f)),
          tokenizer: { encode: (s) => Array.from(s, (c) => c.charCodeAt(0)), decode: (ids) => String.fromCharCode(...ids) },
        });
      }
      env.allowLocalModels = true;
      env.allowRemoteModels = false;
      env.localModelPath = root + '/';
      return loadGpt2({ modelId: id, device: 'cpu', deviceReason: 'Node', readFile: async (f) => new Uint8Array(await readFile(join(root, id, f))) });
    })();
    cache.set(k, p);
  }
  return p;
}

/** Deterministic pseudo-text: ids spread over the vocabulary. */
export function pseudoTokens(n: number, vocab: number, salt = 0): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % vocab);
}
