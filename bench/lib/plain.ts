/** The page's side of the plain baseline (bench/lib/plain-worker.ts). */
import * as Comlink from 'comlink';
import type { PlainApi } from './plain-worker.ts';

export interface PlainHandle {
  api: Comlink.Remote<PlainApi>;
  terminate(): void;
}

export async function openPlain(numThreads: number): Promise<PlainHandle> {
  const worker = new Worker(new URL('./plain-worker.ts', import.meta.url), { type: 'module', name: 'plain' });
  const api = Comlink.wrap<PlainApi>(worker);
  await api.init({ modelsBase: new URL('/models/', location.href).href, ortBase: new URL('/ort/', location.href).href, numThreads });
  return { api, terminate: () => worker.terminate() };
}
