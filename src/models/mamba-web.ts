import * as ort from 'onnxruntime-web/webgpu';
import { AutoTokenizer } from '@huggingface/transformers';
import { throwIfAborted } from '../core/errors.ts';
import { canonicalize } from '../core/canonical-json.ts';
import { utf8 } from '../core/bytes.ts';
import { sha256Hex } from '../core/sha256.ts';
import type { StateModel } from './types.ts';
import type { DerivedFiles, LoadContext } from './load.ts';
import { createMambaModel, type OrtLike } from './mamba.ts';

/**
 * Mamba runs on onnxruntime-web directly (transformers.js has no Mamba type),
 * the same `onnxruntime-web/webgpu` module transformers.js imports, so the page
 * loads one runtime. Its tokenizer still comes through transformers.js.
 *
 * A folder with statecart.json is a prepared model (`npm run models`). A Hub
 * checkpoint (state-spaces/mamba-130m-hf: config.json, model.safetensors,
 * tokenizer.json) is converted here, in memory, by the same builder that
 * scripts/make-models.ts runs, so the fingerprint and state keys are the ones
 * an offline build of the same weights gives. The converted files are kept
 * (`LoadContext.derived`) under the checkpoint's digest and the builder's, so
 * a reload does not convert again, and a changed builder converts anew.
 */
export async function loadMambaWeb(o: LoadContext): Promise<StateModel> {
  const source = o.source ?? o.modelId;
  const tok = await AutoTokenizer.from_pretrained(source, o.revision ? { revision: o.revision } : {});
  const tokenizer = {
    encode: (text: string) => Array.from((tok as unknown as { encode: (t: string) => number[] }).encode(text)),
    decode: (ids: number[]) => (tok as unknown as { decode: (t: number[], o?: object) => string }).decode(ids, { skip_special_tokens: false }),
  };
  // A Hub checkpoint is known by its loader (it passes where converted files go); a local folder may be one too.
  const first = o.derived ? null : await o.readFile('statecart.json').catch(() => null);
  let built: Map<string, Uint8Array> | null = null;
  let fresh = false;
  if (!first) {
    const r = await convertedCheckpoint(o);
    built = r.files;
    fresh = r.fresh;
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
    // Just hashed and packed by the conversion; files read back from a cache are checked.
    verifyWeights: !fresh,
    tokenizer,
  });
}

const CONVERSION_STEPS = 3;
const yieldNow = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

/** The graphs and packed weights of a checkpoint: from the derived-files cache, or converted now (with progress) and kept. */
async function convertedCheckpoint(o: LoadContext): Promise<{ files: Map<string, Uint8Array>; fresh: boolean }> {
  const builder = await mambaBuilderDigest();
  const known = await o.knownDigest?.('model.safetensors');
  const prefix = (digest: string) => `mamba/${encodeURIComponent(o.modelId)}/${digest}/${builder}/`;
  if (known && o.derived) {
    const kept = await readDerived(o.derived, prefix(known));
    if (kept) return { files: kept, fresh: false };
  }
  const step = `converting model.safetensors to ONNX graphs`;
  const progress = async (n: number) => {
    o.onProgress?.({ file: step, loaded: n, total: CONVERSION_STEPS });
    // (lets the progress message, and a cancel, through)
    await yieldNow();
    throwIfAborted(o.signal);
  };
  await progress(0);
  // Only now: the builder and onnx-proto are not needed for prepared models.
  const { mambaWeightsFromSafetensors, buildMambaFiles } = await import('./mamba-build.ts');
  const { weights, info } = await mambaWeightsFromSafetensors(await o.readFile('model.safetensors'));
  await progress(1);
  // (what convertMambaCheckpoint does, in two steps so that each reports)
  const files = (await buildMambaFiles(weights, { ...info, converted: 'in the browser' }, { id: o.modelId })).files;
  await progress(2);
  if (o.derived) await writeDerived(o.derived, prefix(info.sha256 as string), files);
  await progress(3);
  return { files, fresh: true };
}

const INDEX = 'files.json';

/** Every file, then the index naming them: a conversion cut short leaves no index, so it is never taken for a whole one. */
async function writeDerived(d: DerivedFiles, prefix: string, files: Map<string, Uint8Array>): Promise<void> {
  for (const [p, b] of files) await d.put(prefix + p, b);
  await d.put(prefix + INDEX, utf8(JSON.stringify([...files.keys()])));
}

async function readDerived(d: DerivedFiles, prefix: string): Promise<Map<string, Uint8Array> | null> {
  const index = await d.get(prefix + INDEX);
  if (!index) return null;
  const out = new Map<string, Uint8Array>();
  for (const p of JSON.parse(new TextDecoder().decode(index)) as string[]) {
    const b = await d.get(prefix + p);
    if (!b) return null;
    out.set(p, b);
  }
  return out;
}

let builderDigest: Promise<string> | null = null;

/**
 * A digest of what the converter makes: every file of a tiny model built by
 * the same code (≈ 20 ms). Any change to the graph builder or the weight
 * packing changes it, so kept conversions are never reused across builders.
 */
function mambaBuilderDigest(): Promise<string> {
  builderDigest ??= (async () => {
    const { buildMambaFiles, seededMambaWeights } = await import('./mamba-build.ts');
    const w = seededMambaWeights({ n_layer: 1, d_model: 4, d_inner: 8, d_state: 2, d_conv: 2, dt_rank: 1, vocab_size: 8 }, 1, 1);
    const f = (await buildMambaFiles(w, { kind: 'builder-probe' }, { id: 'probe' })).files;
    const each: Record<string, string> = {};
    for (const [p, b] of f) each[p] = await sha256Hex(b);
    return (await sha256Hex(utf8(canonicalize(each)))).slice(0, 16);
  })();
  return builderDigest;
}
