import { describe, it, expect } from 'vitest';
import { promisifyRequest } from 'idb-keyval';
import { nodeEngine } from './support/node-engine.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { storeState } from './support/put.ts';

describe('a state written after its parent reuses the blocks the parent names', () => {
  it("shares the parent's full blocks by reference, reads back exact, and writes whole when one went missing", async () => {
    const { engine, store, model } = await nodeEngine();
    const tokens = Array.from({ length: 70 }, (_, i) => (i * 104729) % 50000);
    const a = await engine.createState({ tokens });
    const parent = (await store.getManifest(a.stateKey))!;
    const { state: pa } = await store.getState(a.stateKey);

    // Continued by 30 tokens: blocks 0–3 are the parent's; 4 and 5 are new.
    const b = await model.prefill(
      tokens.slice(0, 30).map((t) => (t + 7) % 50000),
      pa,
    );
    const bKey = await stateKey(model.fingerprint, b.state.tokens);
    const mb = await storeState(store, { state: b.state, modelId: model.id, modelFp: model.fingerprint, parent: a.stateKey });
    expect(mb.blocks.slice(0, 4).map((x) => [x.key, x.digest])).toEqual(parent.blocks.slice(0, 4).map((x) => [x.key, x.digest]));
    expect(mb.blocks).toHaveLength(7);
    await store.dropHot();
    const back = await store.getState(bKey);
    back.state.tensors.forEach((t, i) =>
      expect(
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(
          Buffer.from(b.state.tensors[i]!.data.buffer, b.state.tensors[i]!.data.byteOffset, b.state.tensors[i]!.data.byteLength),
        ),
      ).toBe(true),
    );
    expect((await store.verify(bKey)).ok).toBe(true);

    // A parent block deleted behind the store's back: the write falls back to writing every block.
    const c = await model.prefill([11, 12, 13], b.state);
    const cKey = await stateKey(model.fingerprint, c.state.tokens);
    const gone = parent.blocks[1]!.key;
    await store.idb('readwrite', (s) => promisifyRequest(s.delete('b:' + gone)));
    const mc = await storeState(store, { state: c.state, modelId: model.id, modelFp: model.fingerprint, parent: bKey });
    expect(mc.blocks[1]!.key).toBe(gone);
    await store.dropHot();
    expect((await store.verify(cKey)).ok).toBe(true);
    // The rewrite brought the block back, so the parent is whole again too.
    expect((await store.verify(bKey)).ok).toBe(true);
  });
});
