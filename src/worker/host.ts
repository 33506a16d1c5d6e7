/// <reference lib="webworker" />
import { env } from '@huggingface/transformers';
import { ModelNotLoaded } from '../core/errors.ts';
import type { Provenance } from '../core/model-fingerprint.ts';
import type { DeviceChoice, FileProgress, LoadModelRequest } from '../engine/api.ts';
import type { ModelHost } from '../engine/statecart.ts';
import { fetchWithProgress, fromRuntimeError, ModelFileCache, RuntimeFileCache } from '../models/hub-files.ts';
import { prepareHubLoad } from '../models/hub-load.ts';
import { configureTransformers } from '../models/transformers-env.ts';
import { loadModel } from '../models/load.ts';
import { type Arch, DEFAULT_HUB_URL, hubFiles, resolveModelId } from '../models/registry.ts';
import type { StateModel } from '../models/types.ts';
import { pickDevice } from './device.ts';
import { watchLost } from './device-lost.ts';

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
  /** The Hugging Face Hub, or a Hub-shaped mirror (docs/hub-mirror.md), for `hf:` models (default https://huggingface.co/). */
  hubUrl?: string;
  device?: DeviceChoice;
  numThreads?: number;
  dbName?: string;
  hotBytes?: number;
  /** Most bytes of blobs the store may hold; least-recently-used unpinned states are evicted to stay under it. */
  budgetBytes?: number | null;
}

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
 * transformers.js imports); local models from the page's models folder, Hub
 * models (`hf:owner/name`) from the Hub or a mirror, each file downloaded once
 * into the Cache API and read by the runtime from there.
 */
export class BrowserModelHost implements ModelHost {
  private files: Promise<{ files: ModelFileCache; runtime: RuntimeFileCache }> | null = null;

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

  private caches(): Promise<{ files: ModelFileCache; runtime: RuntimeFileCache }> {
    this.files ??= ModelFileCache.open().then((files) => ({ files, runtime: new RuntimeFileCache(files) }));
    return this.files;
  }

  async load(req: LoadModelRequest, onProgress?: (p: FileProgress) => void, signal?: AbortSignal): Promise<StateModel> {
    const id = req.model;
    const ref = resolveModelId(id);
    const hubUrl = this.o.hubUrl ?? DEFAULT_HUB_URL;
    const { files, runtime } = await this.caches();
    const pick = await pickDevice(req.device ?? this.o.device ?? 'auto');
    const device = { device: pick.device, adapter: pick.adapter, deviceReason: pick.reason };
    let model: StateModel;
    try {
      if (ref.kind === 'local') {
        if (req.dtype && req.dtype !== 'fp32')
          throw new ModelNotLoaded({ model: id, reason: `the local models are fp32; dtype ${req.dtype} is for Hub models.` });
        const base = new URL(`${id}/`, this.o.modelsBase).href;
        // transformers.js treats a full http(s) URL as remote, not local: give it the path.
        const local = new URL(this.o.modelsBase).pathname;
        // (transformers.js' key for a local file: the models folder's path, the model, the file)
        const key = (p: string) => `${local.endsWith('/') ? local : `${local}/`}${id}/${p}`;
        configureTransformers({ hubUrl, runtime, local });
        // The files transformers.js reads, fetched once here (with progress and cancel) and held for it.
        const held = new Map<string, Uint8Array>();
        try {
          await holdLocalFiles(ref.entry.arch, base, key, runtime, held, signal, onProgress);
          model = await loadModel(ref.entry.arch, {
            modelId: id,
            base,
            ...device,
            readFile: async (p) => held.get(p) ?? fetchBytes(base + p),
            digestOf: (p) => runtime.digest(key(p)),
            signal,
            onProgress,
          });
        } finally {
          for (const p of held.keys()) runtime.release(key(p));
        }
      } else {
        const hub = await prepareHubLoad({
          model: id,
          repo: ref.repo,
          revision: ref.revision,
          entry: ref.entry,
          dtype: req.dtype,
          hubUrl,
          files,
          runtime,
          signal,
          onProgress,
        });
        configureTransformers({ hubUrl, runtime, local: null });
        model = await loadModel(hub.arch, { ...hub.context, ...device });
      }
    } catch (e) {
      throw fromRuntimeError(e, id);
    }
    model.provenance = provenanceOf(model);
    if (model.device === 'webgpu') void watchWebGpuDevice();
    return model;
  }
}

/** A local model's files that transformers.js reads (GPT-2; Mamba's loader reads its own), fetched once and held for it. */
async function holdLocalFiles(
  arch: Arch,
  base: string,
  key: (p: string) => string,
  runtime: RuntimeFileCache,
  held: Map<string, Uint8Array>,
  signal?: AbortSignal,
  onProgress?: (p: FileProgress) => void,
): Promise<void> {
  if (arch !== 'gpt2') return;
  await Promise.all(
    hubFiles(arch, 'fp32').map(async (f) => {
      const b = await fetchWithProgress(base + f.path, {
        signal,
        optional: f.optional,
        onProgress: (loaded, total) => onProgress?.({ file: f.path, loaded, total }),
      });
      if (!b) return;
      held.set(f.path, b);
      runtime.hold(key(f.path), b);
    }),
  );
}

/** The device and runtime versions that compute this model's states. */
function provenanceOf(m: StateModel): Provenance {
  const ortEnv = env.backends.onnx as { versions?: Record<string, string> };
  const runtimes: Record<string, string> = { 'transformers.js': env.version };
  const ortVersion = ortEnv.versions?.web ?? ortEnv.versions?.common;
  if (ortVersion) runtimes['onnxruntime-web'] = ortVersion;
  return { device: m.device, adapter: m.adapter, dtype: m.identity.dtype, runtimes };
}

/** A lost WebGPU device ends the worker; the client's supervisor starts a new one on WASM. */
async function watchWebGpuDevice(): Promise<void> {
  type DeviceLike = { lost?: Promise<{ message: string; reason: string }> };
  const dev = (await (env.backends.onnx as { webgpu?: { device?: Promise<DeviceLike> | DeviceLike } }).webgpu?.device) as DeviceLike | undefined;
  if (dev) watchLost(dev);
}
