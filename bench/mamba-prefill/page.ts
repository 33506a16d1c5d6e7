// The profile page: one module worker (./worker.ts) that runs onnxruntime-web
// as the statecart worker does (WASM, the same .wasm, N threads).
import * as Comlink from 'comlink';
import type { ProfileApi } from './worker.ts';

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'profile' });
const api = Comlink.wrap<ProfileApi>(worker);
(window as unknown as { profile: typeof api }).profile = api;
document.title += ' (ready)';
