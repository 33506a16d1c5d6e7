import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { snapshot } from './support/idb-snapshot.ts';
import { verifyReceipts } from '../../src/core/receipts.ts';
import { stateKey } from '../../src/core/key-chain.ts';

const ids = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (((i + 1) * 7919 + seed * 104729) % 50000) + 1);

describe('merge and compact', () => {
  it('merge folds a chain into the last key, releases the intermediates, and continues as a fresh createState', async () => {
    const { engine, store, model } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(100, 1) });
    const b = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(23, 2), maxNewTokens: 3 });
    const c = await engine.infer({ stateKey: b.newStateKey, deltaTokens: ids(17, 3), maxNewTokens: 4 });
    const lastInfo = await engine.getState(c.newStateKey);
    const m = await engine.merge({ stateKeys: [a.stateKey, b.newStateKey, c.newStateKey] });
    expect(m.newStateKey).toBe(c.newStateKey);
    expect(m.released).toEqual([a.stateKey, b.newStateKey]);
    expect(m.tokens).toBe(lastInfo.tokens);
    const info = await engine.getState(m.newStateKey);
    expect(info.parent).toBeNull();
    expect((await store.list()).map((x) => x.key)).toEqual([m.newStateKey]);
    expect((await store.verify(m.newStateKey)).ok).toBe(true);
    // Receipt: op merge, chained to the last input's receipt, and the chain verifies.
    expect(m.receipt.receipt.op).toBe('merge');
    expect(m.receipt.receipt.input_keys).toEqual([a.stateKey, b.newStateKey, c.newStateKey]);
    expect(m.receipt.receipt.prev).toBe(c.receipt.hash);
    expect(await verifyReceipts([a.receipt, b.receipt, c.receipt, m.receipt])).toEqual({ ok: true });
    // Continues exactly as a fresh state of the same tokens, from IndexedDB.
    await store.dropHot();
    const after = await engine.infer({ stateKey: m.newStateKey, maxNewTokens: 8 });
    const tokens = (await store.getManifest(m.newStateKey))!.tokens;
    const fresh = await nodeEngine();
    const f = await fresh.engine.createState({ tokens });
    expect(f.stateKey).toBe(m.newStateKey);
    expect(f.stateKey).toBe(await stateKey(model.fingerprint, tokens));
    const g = await fresh.engine.infer({ stateKey: f.stateKey, maxNewTokens: 8 });
    expect(after.outputTokens).toEqual(g.outputTokens);
    expect(after.newStateKey).toBe(g.newStateKey);
  });

  it('merge refuses keys that are not a chain, and unknown keys, writing nothing', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(30, 1) });
    const b = await engine.createState({ tokens: ids(30, 2) });
    const before = await snapshot(store);
    expect((await engine.merge({ stateKeys: [a.stateKey, b.stateKey] }).catch((e) => e)).name).toBe('InvalidInput');
    expect((await engine.merge({ stateKeys: [a.stateKey, 'sha256:' + '0'.repeat(64)] }).catch((e) => e)).name).toBe('StateNotFound');
    expect((await engine.merge({ stateKeys: [] }).catch((e) => e)).name).toBe('InvalidInput');
    expect(await snapshot(store)).toEqual(before);
  });

  it('merge keeps pinned intermediates', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(20, 4) });
    const b = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(5, 5), maxNewTokens: 0 });
    await store.setPinned(a.stateKey, true);
    const m = await engine.merge({ stateKeys: [a.stateKey, b.newStateKey] });
    expect(m.released).toEqual([]);
    expect(m.keptPinned).toEqual([a.stateKey]);
    expect((await engine.getState(a.stateKey)).tokens).toBe(20);
  });

  it('compact keeps the system prompt and the recent window, and continues as a fresh createState of those tokens', async () => {
    const { engine, store, model } = await nodeEngine();
    const system = ids(64, 9);
    const a = await engine.createState({ tokens: [...system, ...ids(600, 10)] });
    const b = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(200, 11), maxNewTokens: 4 });
    const c = await engine.infer({ stateKey: b.newStateKey, deltaTokens: ids(100, 12), maxNewTokens: 4 });
    const full = (await store.getManifest(c.newStateKey))!.tokens;
    expect(full.length).toBe(972);
    const r = await engine.compact({ stateKey: c.newStateKey, keep: { firstTokens: 64, lastTokens: 200 } });
    const kept = [...full.slice(0, 64), ...full.slice(full.length - 200)];
    expect(r.tokens).toBe(264);
    expect(r.tokensDropped).toBe(972 - 264);
    expect(r.newStateKey).toBe(await stateKey(model.fingerprint, kept));
    // The system prompt's 4 blocks came from the store; the window was prefilled again.
    expect(r.reused).toBe(64);
    expect(r.processed).toBe(200);
    expect(r.stepsFolded).toBe(3);
    expect(r.receipt.receipt.op).toBe('compact');
    expect(r.receipt.receipt.input_keys).toEqual([c.newStateKey]);
    expect(r.receipt.receipt.prev).toBe(c.receipt.hash);
    expect(await verifyReceipts([a.receipt, b.receipt, c.receipt, r.receipt])).toEqual({ ok: true });
    await store.dropHot();
    const cont = await engine.infer({ stateKey: r.newStateKey, deltaTokens: ids(10, 13), maxNewTokens: 8 });
    const fresh = await nodeEngine();
    const f = await fresh.engine.createState({ tokens: kept });
    expect(f.stateKey).toBe(r.newStateKey);
    const g = await fresh.engine.infer({ stateKey: f.stateKey, deltaTokens: ids(10, 13), maxNewTokens: 8 });
    expect(cont.outputTokens).toEqual(g.outputTokens);
    expect(cont.newStateKey).toBe(g.newStateKey);
    // Now there is room again where the long state had none.
    expect((await engine.infer({ stateKey: c.newStateKey, deltaTokens: ids(60, 14), maxNewTokens: 0 }).catch((e) => e)).name).toBe('ContextOverflow');
  });

  it('compact validates keep and writes nothing when cancelled', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(700, 20) });
    expect((await engine.compact({ stateKey: a.stateKey, keep: { firstTokens: -1 } }).catch((e) => e)).name).toBe('InvalidInput');
    expect((await engine.compact({ stateKey: a.stateKey, keep: { firstTokens: 0, lastTokens: 0 } }).catch((e) => e)).name).toBe('InvalidInput');
    const before = await snapshot(store);
    const ac = new AbortController();
    const err = await engine
      .compact(
        { stateKey: a.stateKey, keep: { firstTokens: 16, lastTokens: 500 } },
        {
          signal: ac.signal,
          onProgress: (p) => {
            if (p.done >= 200) ac.abort();
          },
        },
      )
      .catch((e) => e);
    expect(err.name).toBe('Aborted');
    expect(await snapshot(store)).toEqual(before);
    // The default keeps the last half of the context.
    const d = await engine.compact({ stateKey: a.stateKey });
    expect(d.tokens).toBe(512);
  });
});
