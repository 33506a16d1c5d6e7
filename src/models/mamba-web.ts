import * as ort from 'onnxruntime-web/webgpu';
import { AutoTokenizer } from '@huggingface/transformers';
import type { StateModel } from './types.ts';
import type { LoadContext } from './load.ts';
import { createMambaModel, type OrtLike } from './mamba.ts';

/**
 * Mamba runs on onnxruntime-web directly (transformers.js has no Mamba type),
 * the same `onnxruntime-web/webgpu` module transformers.js imports, so the page
 * loads one runtime. Its tokenizer still comes through transformers.js.
 *
 * A folder without statecart.json is taken as a Hub checkpoint
 * (state-spaces/mamba-130m-hf: config.json, model.safetensors,
 * tokenizer.json): its graphs are built here, in memory, by the same builder
 * that scripts/make-models.ts runs, so the fingerprint and state keys are the
 * ones an offline build of the same weights gives.
 */
export async function loadMambaWeb(o: LoadContext): Promise<StateModel> {
  const tok = await AutoTokenizer.from_pretrained(o.modelId);
  const tokenizer = {
    encode: (text: string) => Array.from((tok as unknown as { encode: (t: string) => number[] }).encode(text)),
    decode: (ids: number[]) => (tok as unknown as { decode: (t: number[], o?: object) => string }).decode(ids, { skip_special_tokens: false }),
  };
  let built: Map<string, Uint8Array> | null = null;
  const first = await o.readFile('statecart.json').catch(() => null);
  if (!first) {
    // Only now: the builder and onnx-proto are not needed for prepared models.
    const { convertMambaCheckpoint } = await import('./mamba-build.ts');
    built = (await convertMambaCheckpoint(await o.readFile('model.safetensors'), { id: o.modelId })).files;
  }
  return createMambaModel({
    ort: ort as unknown as OrtLike,
    baseUrl: o.base,
    modelId: o.modelId,
    device: o.device,
    adapter: o.adapter,
    deviceReason: o.deviceReason,
    fetchBytes: async (url) => {
      const p = url.slice(o.base.length);
      if (p === 'statecart.json' && first) return first;
      return built?.get(p) ?? o.readFile(p);
    },
    // Just hashed and packed here; hashing 500 MB again would only cost time.
    verifyWeights: !built,
    tokenizer,
  });
}
