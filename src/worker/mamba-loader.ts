import * as ort from 'onnxruntime-web/webgpu';
import { AutoTokenizer } from '@huggingface/transformers';
import type { StateModel } from '../models/types.ts';
import type { DevicePick } from './device.ts';
import { createMambaModel, type OrtLike } from '../models/mamba.ts';

/**
 * Mamba runs on onnxruntime-web directly (transformers.js has no Mamba type),
 * the same `onnxruntime-web/webgpu` module transformers.js imports, so the page
 * loads one runtime. Its tokenizer still comes through transformers.js.
 */
export async function loadMambaForWorker(o: { modelId: string; base: string; pick: DevicePick; readFile: (p: string) => Promise<Uint8Array> }): Promise<StateModel> {
  const tok = await AutoTokenizer.from_pretrained(o.modelId);
  const tokenizer = {
    encode: (text: string) => Array.from((tok as unknown as { encode: (t: string) => number[] }).encode(text)),
    decode: (ids: number[]) => (tok as unknown as { decode: (t: number[], o?: object) => string }).decode(ids, { skip_special_tokens: false }),
  };
  return createMambaModel({
    ort: ort as unknown as OrtLike,
    baseUrl: o.base,
    modelId: o.modelId,
    device: o.pick.device,
    adapter: o.pick.adapter,
    deviceReason: o.pick.reason,
    fetchBytes: (url) => o.readFile(url.slice(o.base.length)),
    tokenizer,
  });
}
