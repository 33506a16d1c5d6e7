import { loadGpt2 } from './gpt2.ts';
import type { Arch } from './registry.ts';
import type { Device, StateModel } from './types.ts';

/** What a loader needs: where the model's files are, and the device chosen for it. */
export interface LoadContext {
  modelId: string;
  /** URL of the model's folder (ends with "/"). */
  base: string;
  device: Device;
  adapter: string | null;
  deviceReason: string;
  /** Reads a file of the model by its path inside the folder. */
  readFile: (path: string) => Promise<Uint8Array>;
  onProgress?: (p: { file: string; loaded: number; total: number }) => void;
}

/**
 * One loader per architecture, as transformers.js maps a model type to a
 * class: the layers above name an architecture only to look it up here.
 */
const LOADERS: Record<Arch, (c: LoadContext) => Promise<StateModel>> = {
  gpt2: (c) =>
    loadGpt2({ modelId: c.modelId, device: c.device, adapter: c.adapter, deviceReason: c.deviceReason, readFile: c.readFile, onLoadProgress: c.onProgress }),
  // Mamba runs on onnxruntime-web directly; only its pages load that code.
  mamba: async (c) => (await import('./mamba-web.ts')).loadMambaWeb(c),
};

export function loadModel(arch: Arch, c: LoadContext): Promise<StateModel> {
  return LOADERS[arch](c);
}
