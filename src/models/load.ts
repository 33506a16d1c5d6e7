import type { Dtype } from '../core/model-fingerprint.ts';
import { loadGpt2 } from './gpt2.ts';
import type { Arch } from './registry.ts';
import type { Device, StateModel } from './types.ts';

/** Files made from a model's own (a converted checkpoint), kept across visits under a name that says what they were made from. */
export interface DerivedFiles {
  get(name: string): Promise<Uint8Array | undefined>;
  put(name: string, bytes: Uint8Array): Promise<void>;
}

/** What a loader needs: where the model's files are, and the device chosen for it. */
export interface LoadContext {
  /** statecart's id of the model (`tiny-gpt2`, `hf:Xenova/gpt2`). */
  modelId: string;
  /** What transformers.js loads: a local folder's name or a Hub repository (default: modelId). */
  source?: string;
  /** Hub revision (default main). */
  revision?: string;
  /** URL of the model's folder (ends with "/"). */
  base: string;
  /** Default fp32. */
  dtype?: Dtype;
  device: Device;
  adapter: string | null;
  deviceReason: string;
  /** Reads a file of the model by its path inside the folder (Hub files: from the download cache, no network). */
  readFile: (path: string) => Promise<Uint8Array>;
  /**
   * sha256 hex of a file as the runtime read it (undefined when it did not
   * read it through statecart's cache): the fingerprint hashes the bytes the
   * session was built from without fetching them again.
   */
  digestOf?: (path: string) => string | undefined;
  /** sha256 hex of a file recorded when it was downloaded (no read); undefined if unknown. */
  knownDigest?: (path: string) => Promise<string | undefined>;
  /** Where converted files are kept (Mamba checkpoints from the Hub). */
  derived?: DerivedFiles;
  signal?: AbortSignal;
  onProgress?: (p: { file: string; loaded: number; total: number }) => void;
}

/**
 * One loader per architecture, as transformers.js maps a model type to a
 * class: the layers above name an architecture only to look it up here.
 */
const LOADERS: Record<Arch, (c: LoadContext) => Promise<StateModel>> = {
  gpt2: (c) =>
    loadGpt2({
      modelId: c.modelId,
      source: c.source,
      revision: c.revision,
      dtype: c.dtype,
      device: c.device,
      adapter: c.adapter,
      deviceReason: c.deviceReason,
      readFile: c.readFile,
      digestOf: c.digestOf,
      onLoadProgress: c.onProgress,
    }),
  // Mamba runs on onnxruntime-web directly; only its pages load that code.
  mamba: async (c) => (await import('./mamba-web.ts')).loadMambaWeb(c),
};

export function loadModel(arch: Arch, c: LoadContext): Promise<StateModel> {
  return LOADERS[arch](c);
}
