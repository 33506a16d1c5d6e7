/// <reference lib="webworker" />
/**
 * The plain baseline: what a page without statecart pays. A worker of the
 * bench page's own that loads the same model files with the same runtime
 * (transformers.js' onnxruntime-web), device and WASM thread count as the
 * statecart worker, through the project's model layer directly (src/models),
 * and runs prefill of the whole text plus greedy generation. No state key is
 * hashed, nothing is stored, nothing is looked up.
 */
import * as Comlink from 'comlink';
import { env } from '@huggingface/transformers';
import * as ort from 'onnxruntime-web/webgpu';
import { loadModel } from '../../src/models/load.ts';
import { findModel } from '../../src/models/registry.ts';
import type { ModelState, StateModel } from '../../src/models/types.ts';

let modelsBase = '';
let model: StateModel | null = null;
let held: { state: ModelState; logits: Float32Array } | null = null;

/** The engine's greedy pick (src/engine/sampling.ts): the first of equal maxima wins, so plain and cached outputs can be compared token for token. */
function argmax(logits: Float32Array): number {
  let best = 0;
  let v = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    if (logits[i]! > v) {
      v = logits[i]!;
      best = i;
    }
  }
  return best;
}

async function fetchBytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`plain worker: could not fetch ${url} (HTTP ${r.status})`);
  return new Uint8Array(await r.arrayBuffer());
}

function need(): StateModel {
  if (!model) throw new Error('plain worker: call load() first');
  return model;
}

const wasmEnv = () => (env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number } }).wasm;

/**
 * `maxNewTokens` greedy tokens after `state`'s logits, in one run of the model
 * (as the engine generates); the last one is not run back in (a plain page
 * needs no state after it).
 */
async function generateFrom(m: StateModel, state: ModelState | undefined, logits: Float32Array, maxNewTokens: number): Promise<number[]> {
  const out: number[] = [];
  const run = m.open(state);
  try {
    for (let i = 0; i < maxNewTokens; i++) {
      const tok = argmax(logits);
      out.push(tok);
      if (i + 1 < maxNewTokens) logits = await run.feed([tok]);
    }
  } finally {
    run.close();
  }
  return out;
}

const api = {
  /** As the statecart worker's init (src/worker/worker.ts): the same wasm files, and the thread count it reports. numThreads is read once, at the first session. */
  async init(o: { modelsBase: string; ortBase: string; numThreads: number }) {
    modelsBase = o.modelsBase;
    const w = wasmEnv();
    if (w) {
      w.wasmPaths = {
        mjs: new URL('ort-wasm-simd-threaded.asyncify.mjs', o.ortBase).href,
        wasm: new URL('ort-wasm-simd-threaded.asyncify.wasm', o.ortBase).href,
      };
      w.numThreads = o.numThreads;
    }
  },

  async load(o: { model: string; device: 'wasm' | 'webgpu' }) {
    const t0 = performance.now();
    const base = new URL(`${o.model}/`, modelsBase).href;
    const entry = findModel(o.model);
    if (!entry) throw new Error(`plain worker: ${o.model} is not in the registry`);
    env.allowLocalModels = true;
    env.allowRemoteModels = false;
    env.localModelPath = new URL(modelsBase).pathname;
    // The same loader the statecart worker uses (src/models/load.ts).
    model = await loadModel(entry.arch, {
      modelId: o.model,
      base,
      device: o.device,
      adapter: null,
      deviceReason: 'bench',
      readFile: (p) => fetchBytes(base + p),
    });
    // onnxruntime-web sets this back to 1 when it cannot run threads (no cross-origin isolation).
    const threads = ort.env.wasm.numThreads ?? wasmEnv()?.numThreads ?? 1;
    return { loadMs: performance.now() - t0, fingerprint: model.fingerprint, device: model.device, threads, sameEnv: ort.env.wasm === wasmEnv() };
  },

  /** Prefill of `tokens` from nothing, then `maxNewTokens` greedy tokens (1: just the first token, from the prefill's logits). */
  async generate(o: { tokens: number[]; maxNewTokens: number }) {
    const m = need();
    const r = await m.prefill(o.tokens);
    return { outputTokens: await generateFrom(m, r.state, r.logits, o.maxNewTokens) };
  },

  /** Prefills `tokens` and keeps the state here, for decode timings that leave the prefill out. */
  async hold(tokens: number[]) {
    const m = need();
    held = await m.prefill(tokens);
    return tokens.length;
  },

  /** `maxNewTokens` greedy tokens from the held state (which stays as it was). */
  async generateFromHeld(maxNewTokens: number) {
    const m = need();
    if (!held) throw new Error('plain worker: call hold() first');
    return { outputTokens: await generateFrom(m, held.state, held.logits, maxNewTokens) };
  },

  async dispose() {
    held = null;
    await model?.dispose();
    model = null;
  },
};

export type PlainApi = typeof api;
Comlink.expose(api);
