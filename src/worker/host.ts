/// <reference lib="webworker" />
import { env } from '@huggingface/transformers';
import { ModelNotLoaded } from '../core/errors.ts';
import type { DeviceChoice, FileProgress, LoadModelRequest } from '../engine/api.ts';
import type { ModelHost } from '../engine/statecart.ts';
import { loadModel } from '../models/load.ts';
import { findModel } from '../models/registry.ts';
import type { StateModel } from '../models/types.ts';
import { pickDevice } from './device.ts';
import { reportDeviceLost } from './device-lost.ts';

declare const __STATECART_LIB__: boolean | undefined;
declare const __STATECART_ORT_MJS__: string;
declare const __STATECART_ORT_WASM__: string;

/**
 * onnxruntime-web's loader and wasm: from `ortBase` when given; in the library
 * build, the copies shipped beside this worker (written as literal
 * `new URL(file, import.meta.url)` so that an app's bundler copies them too).
 */
function ortPaths(ortBase: string | undefined): { mjs: string; wasm: string } {
  if (!ortBase && typeof __STATECART_LIB__ !== 'undefined') return { mjs: __STATECART_ORT_MJS__, wasm: __STATECART_ORT_WASM__ };
  const base = ortBase ?? new URL('ort/', self.location.href).href;
  return { mjs: new URL('ort-wasm-simd-threaded.asyncify.mjs', base).href, wasm: new URL('ort-wasm-simd-threaded.asyncify.wasm', base).href };
}

/** What the page tells a new worker: where the models and the runtime's files are, and the store's settings. */
export interface InitOptions {
  /** Absolute URL of the folder holding local models (`<id>/config.json` …). */
  modelsBase: string;
  /** Absolute URL of the folder holding onnxruntime-web's .mjs/.wasm files (default: the library's own copies, or `ort/` beside the page). */
  ortBase?: string;
  device?: DeviceChoice;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
  /** Most bytes of blobs the store may hold; least-recently-used unpinned states are evicted to stay under it. */
  budgetBytes?: number | null;
  /** Remote state hosts (absolute URLs) read through after the local store (src/engine/remote.ts). */
  remotes?: string[];
  /** A remote that sends nothing for this long is taken as unreachable (ms). */
  remoteTimeoutMs?: number;
}

/** Models this worker loaded (every tab's, in a shared worker): the tests count them. */
export const hostStats = { modelLoads: 0 };

async function fetchBytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok)
    throw new ModelNotLoaded({
      reason: `could not fetch ${url} (HTTP ${r.status}). Run \`npm run models\` to generate the local models.`,
      url,
      status: r.status,
    });
  return new Uint8Array(await r.arrayBuffer());
}

/**
 * Loads models in the browser: the device from src/worker/device.ts, GPT-2
 * through transformers.js, Mamba through onnxruntime-web (the runtime
 * transformers.js imports), local models from the page's models folder.
 */
export class BrowserModelHost implements ModelHost {
  constructor(private readonly o: InitOptions) {
    const onnx = env.backends.onnx as { wasm?: { wasmPaths?: unknown; numThreads?: number } };
    if (onnx.wasm) {
      onnx.wasm.wasmPaths = ortPaths(o.ortBase);
      // numThreads is read once, when the first session is made.
      onnx.wasm.numThreads = o.numThreads ?? (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
    }
  }

  environment(): { crossOriginIsolated: boolean; threads: number } {
    const onnx = env.backends.onnx as { wasm?: { numThreads?: number } };
    return { crossOriginIsolated: self.crossOriginIsolated, threads: onnx.wasm?.numThreads ?? 1 };
  }

  async load(req: LoadModelRequest, onProgress?: (p: FileProgress) => void): Promise<StateModel> {
    const id = req.model;
    hostStats.modelLoads++;
    const entry = findModel(id);
    const pick = await pickDevice(req.device ?? this.o.device ?? 'auto');
    const hub = entry?.source === 'hub' || (!entry && id.includes('/'));
    const base = hub ? `https://huggingface.co/${id}/resolve/main/` : new URL(`${id}/`, this.o.modelsBase).href;
    env.allowLocalModels = !hub;
    env.allowRemoteModels = hub;
    // transformers.js treats a full http(s) URL as remote, not local: give it the path.
    env.localModelPath = new URL(this.o.modelsBase).pathname;
    const readFile = (p: string) => fetchBytes(base + p);
    const model = await loadModel(entry?.arch ?? 'gpt2', {
      modelId: id,
      base,
      device: pick.device,
      adapter: pick.adapter,
      deviceReason: pick.reason,
      readFile,
      onProgress,
    });
    if (model.device === 'webgpu') void watchWebGpuDevice();
    return model;
  }
}

/** A lost WebGPU device ends the worker; the client's supervisor starts a new one on WASM. */
async function watchWebGpuDevice(): Promise<void> {
  type DeviceLike = { lost?: Promise<{ message: string; reason: string }> };
  const dev = (await (env.backends.onnx as { webgpu?: { device?: Promise<DeviceLike> | DeviceLike } }).webgpu?.device) as DeviceLike | undefined;
  dev?.lost?.then((info) => reportDeviceLost(info.message || info.reason || 'unknown'));
}
