// An Engine in Node: fake-indexeddb for the store, transformers.js' Node build
// (onnxruntime-node, CPU) for the model. The same engine code as the worker.
import 'fake-indexeddb/auto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { env } from '@huggingface/transformers';
import { Engine } from '../../../src/engine/engine.ts';
import { StateStore, type StoreOptions } from '../../../src/store/store.ts';
import { loadGpt2 } from '../../../src/models/gpt2.ts';
import type { StateModel } from '../../../src/models/types.ts';
import { LocalStatecart, type ModelHost } from '../../../src/engine/statecart.ts';

export const MODELS_DIR = join(process.cwd(), 'public/models');

const cache = new Map<string, Promise<StateModel>>();

export function nodeModel(id = 'tiny-gpt2'): Promise<StateModel> {
  let p = cache.get(id);
  if (!p) {
    env.allowLocalModels = true;
    env.allowRemoteModels = false;
    env.localModelPath = MODELS_DIR + '/';
    p = loadGpt2({ modelId: id, device: 'cpu', deviceReason: 'Node tests', readFile: async (f) => new Uint8Array(await readFile(join(MODELS_DIR, id, f))) });
    cache.set(id, p);
  }
  return p;
}

let n = 0;
/** A fresh engine on a fresh, uniquely named database. */
export async function nodeEngine(opts: StoreOptions & { model?: string } = {}): Promise<{ engine: Engine; store: StateStore; model: StateModel }> {
  const model = await nodeModel(opts.model);
  const store = new StateStore({ dbName: opts.dbName ?? `test-${process.pid}-${++n}`, hotBytes: opts.hotBytes });
  const engine = new Engine(store, async () => model);
  return { engine, store, model };
}

/** Loads the models of public/models with onnxruntime-node: the in-thread Statecart's host in Node. */
export const nodeHost: ModelHost = {
  load: (req) => nodeModel(req.model),
  environment: () => ({ crossOriginIsolated: false, threads: 1 }),
};

/** The in-thread Statecart (what the worker runs), on a fresh database. */
export async function localStatecart(opts: StoreOptions = {}): Promise<LocalStatecart> {
  const store = new StateStore({ dbName: opts.dbName ?? `test-${process.pid}-${++n}`, hotBytes: opts.hotBytes });
  return new LocalStatecart(store, nodeHost);
}
