/// <reference lib="webworker" />
// Prefill timings on onnxruntime-web's WASM backend: a Mamba model folder
// through the project's runner (src/models/mamba.ts) and the GPT-2 graph
// directly, with the same runtime module, .wasm and thread count as the
// statecart worker; optionally with onnxruntime's profiler on.
import * as Comlink from 'comlink';
import * as ort from 'onnxruntime-web/webgpu';
import { createMambaModel, type MambaModel, type MambaPrefillGraphs, type OrtLike } from '../../src/models/mamba.ts';

const get = async (url: string): Promise<Uint8Array> => {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
};
const ids = (n: number, vocab = 8192): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13) % vocab);
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

let mamba: MambaModel | null = null;
let gpt2: { s: ort.InferenceSession; cfg: { n_layer: number; n_head: number; n_embd: number } } | null = null;

const api = {
  init(o: { numThreads: number }) {
    ort.env.wasm.wasmPaths = { wasm: new URL('/ort/ort-wasm-simd-threaded.asyncify.wasm', location.href).href };
    ort.env.wasm.numThreads = o.numThreads;
  },
  async loadMamba(o: { base: string; sessionOptions?: Record<string, unknown>; prefillGraphs?: MambaPrefillGraphs }) {
    await mamba?.dispose();
    const t0 = performance.now();
    mamba = await createMambaModel({
      ort: ort as unknown as OrtLike,
      baseUrl: o.base,
      device: 'wasm',
      fetchBytes: get,
      tokenizer: { encode: () => [], decode: () => '' },
      verifyWeights: false,
      sessionOptions: o.sessionOptions,
      prefillGraphs: o.prefillGraphs,
    });
    return { ms: performance.now() - t0, threads: ort.env.wasm.numThreads, graphs: mamba.prefillGraphs };
  },
  async mambaPrefill(o: { tokens: number; reps: number; warm?: number }) {
    if (!mamba) throw new Error('loadMamba first');
    if (o.warm !== 0) await mamba.prefill(ids(o.warm ?? 64));
    const ms: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const t0 = performance.now();
      await mamba.prefill(ids(o.tokens));
      ms.push(performance.now() - t0);
    }
    return { ms, median: median(ms) };
  },
  async endMambaProfiling() {
    for (const s of Object.values((mamba as unknown as { sessions: Record<string, ort.InferenceSession> }).sessions)) s.endProfiling();
  },
  async disposeMamba() {
    await mamba?.dispose();
    mamba = null;
  },
  async loadGpt2(o: { base: string; sessionOptions?: Record<string, unknown> }) {
    const cfg = JSON.parse(new TextDecoder().decode(await get(o.base + 'statecart.json'))).config;
    const s = await ort.InferenceSession.create(await get(o.base + 'onnx/model.onnx'), {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
      ...o.sessionOptions,
    });
    gpt2 = { s, cfg };
  },
  async gpt2Prefill(o: { tokens: number; reps: number; warm?: number }) {
    if (!gpt2) throw new Error('loadGpt2 first');
    const { s, cfg } = gpt2;
    const D = cfg.n_embd / cfg.n_head;
    const feeds = (n: number) => {
      const f: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids(n), BigInt), [1, n]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
        position_ids: new ort.Tensor(
          'int64',
          BigInt64Array.from({ length: n }, (_, i) => BigInt(i)),
          [1, n],
        ),
        num_logits_to_keep: new ort.Tensor('int64', BigInt64Array.from([1n]), []),
      };
      for (let l = 0; l < cfg.n_layer; l++) {
        f[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.n_head, 0, D]);
        f[`past_key_values.${l}.value`] = new ort.Tensor('float32', new Float32Array(0), [1, cfg.n_head, 0, D]);
      }
      return f;
    };
    if (o.warm !== 0) await s.run(feeds(16));
    const ms: number[] = [];
    for (let r = 0; r < o.reps; r++) {
      const t0 = performance.now();
      await s.run(feeds(o.tokens));
      ms.push(performance.now() - t0);
    }
    return { ms, median: median(ms) };
  },
  async endGpt2Profiling() {
    gpt2?.s.endProfiling();
  },
  async disposeGpt2() {
    await gpt2?.s.release();
    gpt2 = null;
  },
};

export type ProfileApi = typeof api;
Comlink.expose(api);
