// What computed a state (device, runtimes, dtype) is recorded beside it — in
// its manifest and its cartridges — and never changes its key.
import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { expectedModel, exportCartridge, importCartridge } from '../../src/engine/cartridges.ts';
import { cartridgeProvenance, parseCartridge } from '../../src/formats/cartridge.ts';
import type { Provenance } from '../../src/core/model-fingerprint.ts';
import { StateStore } from '../../src/store/store.ts';

const TEXT = 'A state records what computed it, beside it and never inside its key. ';
const PROV: Provenance = { device: 'cpu', adapter: null, dtype: 'fp32', runtimes: { 'onnxruntime-node': '1.30.0', 'transformers.js': '4.3.1' } };

describe('provenance', () => {
  it('goes into the manifest and the cartridge, and back into the importing store; the key is the same with or without it', async () => {
    const plain = await nodeEngine();
    const without = await plain.engine.createState({ text: TEXT });
    expect((await plain.store.getManifest(without.stateKey))!.provenance).toBeUndefined();

    const a = await nodeEngine();
    a.model.provenance = PROV;
    try {
      const s = await a.engine.createState({ text: TEXT });
      expect(s.stateKey).toBe(without.stateKey);
      expect((await a.store.getManifest(s.stateKey))!.provenance).toEqual(PROV);

      const host = { store: a.store, getModel: async () => a.model };
      const blob = (await exportCartridge(host, s.stateKey)).blob;
      const bytes = new Uint8Array(await blob.arrayBuffer());
      const parsed = await parseCartridge(bytes, expectedModel(a.model));
      expect(JSON.parse(parsed.metadata.provenance!)).toEqual(PROV);
      expect(cartridgeProvenance(parsed.metadata)).toEqual(PROV);

      // Imported elsewhere (by a model with no provenance of its own): the file's is kept.
      a.model.provenance = undefined;
      const other = new StateStore({ dbName: `provenance-${process.pid}-import` });
      const r = await importCartridge({ store: other, getModel: async () => a.model }, bytes);
      expect(r.stateKey).toBe(s.stateKey);
      expect((await other.getManifest(s.stateKey))!.provenance).toEqual(PROV);
    } finally {
      a.model.provenance = undefined;
    }
  });

  it('a malformed provenance is ignored, never an error (it is informative)', () => {
    expect(cartridgeProvenance({})).toBeUndefined();
    expect(cartridgeProvenance({ provenance: 'not json' })).toBeUndefined();
    expect(cartridgeProvenance({ provenance: JSON.stringify({ ...PROV, dtype: 'int4' }) })).toBeUndefined();
    expect(cartridgeProvenance({ provenance: JSON.stringify({ ...PROV, runtimes: { x: 1 } }) })).toBeUndefined();
    expect(cartridgeProvenance({ provenance: JSON.stringify(PROV) })).toEqual(PROV);
  });
});
