import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { Engine } from '../../src/engine/engine.ts';
import { StateStore } from '../../src/store/store.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';

describe('engine on tiny-mamba (Node, fake IndexedDB)', () => {
  it('keeps the last logits with a Mamba state: a request adding no tokens runs none of the context again', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const store = new StateStore({ dbName: `mamba-engine-${process.pid}` });
    const engine = new Engine(store, async () => model);
    const tokens = pseudoTokens(150, model.vocabSize, 3);
    const a = await engine.createState({ tokens });
    expect(a.processed).toBe(150);
    // From IndexedDB, not from memory: the logits must have been stored, digest-checked, with the state.
    await store.dropHot();
    const r = await engine.infer({ stateKey: a.stateKey, maxNewTokens: 6 });
    expect(r.tier).toBe('stored');
    expect(r.savings.tokensReused).toBe(150);
    expect(r.savings.tokensProcessed).toBe(6); // one step per generated token, no context
    // The same request with nothing cached.
    const fresh = new Engine(new StateStore({ dbName: `mamba-engine-fresh-${process.pid}` }), async () => model);
    const b = await fresh.createState({ tokens: tokens.slice(0, 100) });
    const c = await fresh.infer({ stateKey: b.stateKey, deltaTokens: tokens.slice(100), maxNewTokens: 6 });
    expect(r.outputTokens).toEqual(c.outputTokens);
    expect(r.newStateKey).toBe(c.newStateKey);
    // The manifest names the logits beside the conv and SSM tensors.
    const info = await store.getManifest(a.stateKey);
    expect(info!.tensors.map((t) => t.name)).toContain('last_logits');
  });
});
