import type { StateModel } from '../models/types.ts';
import type { DevicePick } from './device.ts';
import { ModelNotLoaded } from '../core/errors.ts';

/** Filled in when the Mamba runner lands (issue: Mamba). */
export async function loadMambaForWorker(o: { modelId: string; base: string; pick: DevicePick; readFile: (p: string) => Promise<Uint8Array> }): Promise<StateModel> {
  throw new ModelNotLoaded(`${o.modelId}: Mamba is not wired into the worker yet.`);
}
