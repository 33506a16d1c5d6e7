// Loaded into the dev server's page by tests/e2e/gpt2-run.spec.ts (Vite serves
// it as a module): tiny-gpt2 through transformers.js on this page's
// onnxruntime-web, with runners made by src/models/gpt2-run.ts on its session,
// so that one test can drive them on WASM and on WebGPU and compare the paths.
import { AutoModelForCausalLM, env, Tensor } from '@huggingface/transformers';
import {
  createGpt2Runner,
  type CacheMode,
  type Gpt2Runner,
  type GpuDeviceLike,
  type OrtSessionLike,
  type OrtTensorLike,
} from '../../../src/models/gpt2-run.ts';
import type { ModelState } from '../../../src/models/types.ts';

type Device = 'wasm' | 'webgpu';

/** GPU buffers made and destroyed on this page (counted from before the runtime makes its device). */
export const gpuBuffers = { made: 0, destroyed: 0 };

function countGpuBuffers(): void {
  const G = globalThis as unknown as {
    GPUDevice?: { prototype: { createBuffer: (...a: unknown[]) => unknown } };
    GPUBuffer?: { prototype: { destroy: () => void } };
  };
  if (!G.GPUDevice || !G.GPUBuffer) return;
  const create = G.GPUDevice.prototype.createBuffer;
  G.GPUDevice.prototype.createBuffer = function (this: unknown, ...a: unknown[]) {
    gpuBuffers.made++;
    return create.apply(this, a);
  };
  const destroy = G.GPUBuffer.prototype.destroy;
  G.GPUBuffer.prototype.destroy = function (this: unknown) {
    gpuBuffers.destroyed++;
    return destroy.apply(this);
  };
}

export let loaded: {
  device: Device;
  auto: Gpt2Runner;
  present: Gpt2Runner;
  session: OrtSessionLike;
  tensor: (type: string, data: unknown, dims: number[]) => OrtTensorLike;
} | null = null;

/** The auto runner's GPU read-backs so far (rows only, or whole buffers). */
export const reads = () => ({ ...loaded!.auto.reads });

export async function load(device: Device, modelId = 'tiny-gpt2', threads = 1): Promise<{ auto: CacheMode; present: CacheMode; kvType: string }> {
  countGpuBuffers();
  const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number } };
  onnx.wasm!.wasmPaths = {
    mjs: new URL('/ort/ort-wasm-simd-threaded.asyncify.mjs', location.href).href,
    wasm: new URL('/ort/ort-wasm-simd-threaded.asyncify.wasm', location.href).href,
  };
  onnx.wasm!.numThreads = threads;
  env.allowLocalModels = true;
  env.allowRemoteModels = false;
  env.localModelPath = '/models/';
  const model = await AutoModelForCausalLM.from_pretrained(modelId, { dtype: 'fp32', device } as Record<string, unknown>);
  const cfg = (await (await fetch(`/models/${modelId}/config.json`)).json()) as Record<string, number>;
  const config = { n_layer: cfg.n_layer!, n_head: cfg.n_head!, n_embd: cfg.n_embd!, n_positions: cfg.n_positions!, vocab_size: cfg.vocab_size! };
  const common = {
    modelId,
    session: (model as unknown as { sessions: Record<string, OrtSessionLike> }).sessions.model!,
    tensor: (type: string, data: unknown, dims: number[]) =>
      (new Tensor(type as 'float32', data as Float32Array, dims) as unknown as { ort_tensor: OrtTensorLike }).ort_tensor,
    config,
    gpuDevice: async () => (await (env.backends.onnx as { webgpu?: { device?: unknown } }).webgpu?.device) as GpuDeviceLike | undefined,
  };
  const auto = createGpt2Runner({ ...common, device });
  // The path for graphs without new rows: CPU arrays of present.* (on WebGPU too: the device says only where the cache lives).
  const present = createGpt2Runner({ ...common, device: 'wasm', cache: 'present' });
  loaded = { device, auto, present, session: common.session, tensor: common.tensor };
  return { auto: auto.mode, present: present.mode, kvType: auto.kvType };
}

export interface Outcome {
  /** The logits after parts 0, 7, 14 … and the last (null for the others: less to send). */
  logits: (number[] | null)[];
  tokens: number[];
  tensors: { name: string; dims: number[]; data: number[] }[];
}

const plain = (s: ModelState) => s.tensors.map((t) => ({ name: t.name, dims: t.dims, data: Array.from(t.data) }));

/**
 * Feeds `parts` on top of `from` (a state given as plain arrays) and returns
 * every part's logits and the state. `stateEvery` also reads the state in
 * between (the rows read back so far must not be read again wrongly).
 */
export async function feed(which: 'auto' | 'present', parts: number[][], from?: Outcome, stateEvery = 0): Promise<Outcome> {
  const r = loaded![which];
  const start: ModelState | undefined = from && {
    tokens: from.tokens,
    tensors: from.tensors.map((t) => ({ name: t.name, dims: t.dims, tokenAxis: 1, data: Float32Array.from(t.data) })),
  };
  const run = r.open(start);
  try {
    const logits: (number[] | null)[] = [];
    for (const [i, p] of parts.entries()) {
      const l = await run.feed(p);
      logits.push(i % 7 === 0 || i === parts.length - 1 ? Array.from(l) : null);
      if (stateEvery && i % stateEvery === 0) await run.state();
    }
    const s = await run.state();
    return { logits, tokens: s.tokens, tensors: plain(s) };
  } finally {
    run.close();
  }
}

/** `runs` runs of `parts` each, closed; how many GPU buffers stay alive after them. */
export async function churn(runs: number, parts: number[][], close = true): Promise<number> {
  for (let i = 0; i < runs; i++) {
    const run = loaded!.auto.open();
    for (const p of parts) await run.feed(p);
    await run.state();
    if (close) run.close();
  }
  return gpuBuffers.made - gpuBuffers.destroyed;
}
