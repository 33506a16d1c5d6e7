// The worker's engine registry (src/worker/engines.ts): what makes two pages share one engine.
import 'fake-indexeddb/auto';
import { describe, expect, it } from 'vitest';
import { Engines, settingsKey } from '../../src/worker/engines.ts';
import type { InitOptions } from '../../src/worker/host.ts';
import type { ModelInfo } from '../../src/engine/api.ts';

// The browser model host reads self.crossOriginIsolated when an engine is made (nothing is loaded here).
(globalThis as { self?: unknown }).self ??= globalThis;

let n = 0;
const opts = (o: Partial<InitOptions> = {}): InitOptions => ({
  modelsBase: 'http://x/models/',
  ortBase: 'http://x/ort/',
  device: 'wasm',
  dbName: `engines-${process.pid}-${n}`,
  ...o,
});

describe('one engine per origin: the shared worker’s registry', () => {
  it('pages with the same settings get the same engine; other settings, or another model, get their own; the last page out closes it', async () => {
    n++;
    const e = new Engines();
    const [a, b] = await Promise.all([e.open(opts()), e.open(opts())]);
    expect(b).toBe(a);
    expect(a.users).toBe(2);
    expect(e.size).toBe(1);
    // The budget and the remotes are the engine's: the last page to set them wins.
    const c = await e.open(opts({ budgetBytes: 4096, remotes: ['http://127.0.0.1:5299/states/'] }));
    expect(c).toBe(a);
    expect(a.store.budgetBytes).toBe(4096);
    expect(a.store.remote?.remotes).toEqual(['http://127.0.0.1:5299/states/']);
    e.release(c);
    const other = await e.open(opts({ dbName: `engines-other-${process.pid}` }));
    expect(other).not.toBe(a);
    expect(settingsKey(opts())).not.toBe(settingsKey(opts({ device: 'webgpu' })));

    // A model: the first page to load one names the engine's model; another model goes elsewhere.
    expect(await e.forModel(a, { model: 'tiny-gpt2' }, opts())).toBe(a);
    const mamba = await e.forModel(a, { model: 'tiny-mamba' }, opts());
    expect(mamba).not.toBe(a);
    expect(mamba.modelId).toBe('tiny-mamba');
    expect(mamba.store.remote).toBe(a.store.remote);
    expect(a.users).toBe(1); // the page moved
    // A page asking for the model an engine already holds joins it.
    const joined = await e.forModel(b, { model: 'tiny-mamba' }, opts());
    expect(joined).toBe(mamba);
    expect(mamba.users).toBe(2);
    expect(e.size).toBe(2 + 1 - 1); // a (closed when its last page left), mamba, other
    expect(a.users).toBe(0);
    e.release(mamba);
    e.release(mamba);
    e.release(other);
    expect(e.size).toBe(0);
  });

  it('two pages loading the same model at once share one load', async () => {
    n++;
    const e = new Engines();
    const slot = await e.open(opts());
    let loads = 0;
    let resolve!: () => void;
    const gate = new Promise<void>((r) => (resolve = r));
    const info = { id: 'tiny-gpt2' } as ModelInfo;
    let loaded = false;
    // What LocalStatecart.loadModel does: a second call for the loaded model returns at once.
    const run = async () => {
      if (loaded) return info;
      loads++;
      await gate;
      loaded = true;
      return info;
    };
    const p1 = e.load(slot, run);
    const p2 = e.load(slot, run);
    resolve();
    expect(await Promise.all([p1, p2])).toEqual([info, info]);
    expect(loads).toBe(1);
    e.release(slot);
  });
});
