import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { promisifyRequest } from 'idb-keyval';
import { Engine } from '../../src/engine/engine.ts';
import { StateStore } from '../../src/store/store.ts';
import type { BlockRecord, Manifest } from '../../src/store/records.ts';
import type { StateModel } from '../../src/models/types.ts';
import { nodeModel } from './support/node-engine.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';

// Issue 18, part 2: every createState and infer result says where reuse
// stopped and why. Each test below makes one reason happen.

let n = 0;
async function setup(opts: { budgetBytes?: number; checkpointEvery?: number } = {}) {
  const [gpt2, mamba] = await Promise.all([nodeModel('tiny-gpt2'), loadNodeModel('tiny-mamba')]);
  const models: Record<string, StateModel> = { 'tiny-gpt2': gpt2, 'tiny-mamba': mamba };
  const store = new StateStore({ dbName: `reasons-${process.pid}-${++n}`, budgetBytes: opts.budgetBytes ?? null });
  const engine = new Engine(
    store,
    async (id) => models[id ?? 'tiny-gpt2']!,
    opts.checkpointEvery === undefined ? {} : { checkpointEvery: opts.checkpointEvery },
  );
  return { store, engine, gpt2, mamba };
}

const ids = (len: number, salt: number) => pseudoTokens(len, 50257, salt);

async function editManifest(store: StateStore, key: string, edit: (m: Manifest) => void): Promise<void> {
  // Writes go behind the calls: edit what has landed, not what a queued write puts back later.
  await store.flush();
  await store.idb('readwrite', async (s) => {
    const m = (await promisifyRequest(s.get('m:' + key))) as Manifest;
    edit(m);
    s.put(m, 'm:' + key);
    return promisifyRequest(s.transaction);
  });
  // As after a restart: nothing decoded in memory.
  await store.dropHot();
}

async function flipBlob(store: StateStore, blobKey: string): Promise<void> {
  await store.flush();
  await store.idb('readwrite', async (s) => {
    const rec = (await promisifyRequest(s.get('b:' + blobKey))) as BlockRecord;
    const bytes = new Uint8Array(rec.data.slice(0));
    bytes[9]! ^= 4;
    s.put({ ...rec, data: bytes.buffer }, 'b:' + blobKey);
    return promisifyRequest(s.transaction);
  });
  await store.dropHot();
}

describe('reuse: why reuse stopped where it did', () => {
  it('whole: everything was stored', async () => {
    const { engine } = await setup();
    const t = ids(40, 1);
    const a = await engine.createState({ tokens: t });
    expect(a.reuse).toMatchObject({ cause: 'differs', tokensReused: 0, fromKey: null, tier: 'recomputed', stoppedAt: 0 });
    expect(a.reuse.reason).toContain('nothing is stored for tiny-gpt2 yet');
    const b = await engine.createState({ tokens: t });
    expect(b.reuse).toMatchObject({ cause: 'whole', tokensReused: 40, stoppedAt: 40, fromKey: a.stateKey, tier: 'hot' });
  });

  it('differs: a KV text that leaves a stored one inside a block reuses the whole blocks before, and says at which token', async () => {
    const { engine } = await setup();
    const stored = ids(100, 2);
    await engine.createState({ tokens: stored });
    const req = [...stored.slice(0, 40), ...ids(20, 3)];
    const r = await engine.createState({ tokens: req });
    expect(r.reused).toBe(32); // two whole 16-token blocks
    expect(r.reuse).toMatchObject({ cause: 'differs', stoppedAt: 40, tokensReused: 32, fromKey: null, tier: 'stored' });
    expect(r.reuse.reason).toContain('differs at token 40');
    // infer: the state is reused, and the delta is new.
    const i = await engine.infer({ stateKey: r.stateKey, deltaTokens: ids(5, 4), maxNewTokens: 2 });
    expect(i.reuse).toMatchObject({ cause: 'differs', stoppedAt: 60, tokensReused: 60, fromKey: r.stateKey });
    // What a request without the cache would run: the 65 tokens read, and 2 generated.
    expect(i.savings.naiveTokens).toBe(60 + 5 + 2);
    expect(i.reuse.reason).toContain('differs at token 60');
  });

  it('evicted: what was stored for these tokens was evicted (by evict, and by a write over the budget)', async () => {
    const { engine, store } = await setup();
    const t = ids(100, 5);
    await engine.createState({ tokens: t });
    await store.evict({ targetBytes: 0 });
    const r = await engine.createState({ tokens: [...t, ...ids(10, 6)] });
    expect(r.reused).toBe(0);
    expect(r.reuse).toMatchObject({ cause: 'evicted', stoppedAt: 100, tokensReused: 0 });
    expect(r.reuse.reason).toContain('evicted');
    // Under a budget, the write of another state evicts the least recent one.
    const small = await setup();
    const u = ids(64, 7);
    const a = await small.engine.createState({ tokens: u });
    await small.store.setBudget(a.bytes + 16);
    await small.engine.createState({ tokens: ids(64, 8) });
    expect((await small.engine.listStates()).map((s) => s.key)).not.toContain(a.stateKey);
    const again = await small.engine.createState({ tokens: u });
    expect(again.reuse).toMatchObject({ cause: 'evicted', stoppedAt: 64 });
  });

  it('other-model: a stored text of another model is never reused, and the result says so', async () => {
    const { engine, store, gpt2 } = await setup();
    const t = ids(50, 9);
    await engine.createState({ model: 'tiny-gpt2', tokens: t });
    const r = await engine.createState({ model: 'tiny-mamba', tokens: [...t, ...ids(5, 10)] });
    expect(r.reused).toBe(0);
    expect(r.reuse).toMatchObject({ cause: 'other-model', stoppedAt: 50 });
    expect(r.reuse.reason).toContain('another model (tiny-gpt2)');
    // A manifest under one of the request's own keys that names another model build: refused, written over.
    const m = await engine.createState({ model: 'tiny-mamba', tokens: ids(30, 11) });
    await editManifest(store, m.stateKey, (x) => (x.modelFp = gpt2.fingerprint));
    const again = await engine.createState({ model: 'tiny-mamba', tokens: [...ids(30, 11), ...ids(4, 12)] });
    expect(again.reused).toBe(0);
    expect(again.reuse).toMatchObject({ cause: 'other-model', stoppedAt: 30 });
    expect((await store.getManifest(m.stateKey))!.modelFp).not.toBe(gpt2.fingerprint);
  });

  it('damaged: a KV state with a corrupt blob is recomputed, stored again whole, and explained', async () => {
    const { engine, store } = await setup();
    const t = ids(40, 13);
    const a = await engine.createState({ tokens: t });
    const clean = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(20, 14), maxNewTokens: 4 });
    await engine.deleteState(clean.newStateKey);
    const m = (await store.getManifest(a.stateKey))!;
    await flipBlob(store, m.blocks[m.blocks.length - 1]!.key); // its own partial last block (tokens 32–40)
    const r = await engine.createState({ tokens: [...t, ...ids(20, 14)] });
    expect(r.reuse).toMatchObject({ cause: 'damaged', stoppedAt: 40, tokensReused: 32 });
    expect(r.reuse.reason).toContain('damaged blob');
    expect((await store.verify(a.stateKey)).ok).toBe(true);
    expect((await engine.getState(a.stateKey)).damaged).toBeUndefined();
    const i = await engine.infer({ stateKey: r.stateKey, maxNewTokens: 4 });
    expect(i.outputTokens).toEqual(clean.outputTokens);
  });

  it('damaged: a Mamba checkpoint with a corrupt blob falls back to the one before, and is stored again', async () => {
    const { engine, store } = await setup({ checkpointEvery: 64 });
    const t = ids(200, 15);
    const a = await engine.createState({ model: 'tiny-mamba', tokens: t });
    expect(a.checkpoints).toHaveLength(3); // 64, 128, 192
    const ck = (await store.getManifest(a.checkpoints[1]!))!;
    await flipBlob(store, ck.blocks[0]!.key);
    const r = await engine.createState({ model: 'tiny-mamba', tokens: [...t.slice(0, 150), ...ids(10, 16)] });
    expect(r.reused).toBe(64);
    expect(r.reuse).toMatchObject({ cause: 'damaged', stoppedAt: 128, fromKey: a.checkpoints[0] });
    expect((await store.verify(a.checkpoints[1]!)).ok).toBe(true);
    expect((await engine.getState(a.checkpoints[1]!)).checkpoint).toBe(true);
  });

  it('no-checkpoint: a stored Mamba text agrees further, but no state exists between the reused one and there', async () => {
    const { engine } = await setup({ checkpointEvery: 64 });
    const t = ids(120, 17);
    await engine.createState({ model: 'tiny-mamba', tokens: t });
    const r = await engine.createState({ model: 'tiny-mamba', tokens: [...t.slice(0, 100), ...ids(8, 18)] });
    expect(r.reuse).toMatchObject({ cause: 'no-checkpoint', stoppedAt: 100, tokensReused: 64 });
    expect(r.reuse.reason).toContain('no checkpoint before token 100 after token 64');
  });

  it('mismatch: a manifest edited to name other token ids under the same key is never served, is healed, and is explained', async () => {
    for (const model of ['tiny-mamba', 'tiny-gpt2']) {
      const { engine, store } = await setup();
      const t = ids(40, 19);
      const ref = await setup();
      const want = await ref.engine.createState({ model, tokens: [...t, ...ids(8, 20)] });
      const wantNext = await ref.engine.infer({ stateKey: want.stateKey, maxNewTokens: 5 });
      const a = await engine.createState({ model, tokens: t });
      // Same key, other tokens: a forged manifest (or one damaged in a way its digests do not see).
      const forged = [...t];
      forged[7] = (forged[7]! + 1) % 50257;
      await editManifest(store, a.stateKey, (m) => (m.tokens = forged));
      const r = await engine.createState({ model, tokens: [...t, ...ids(8, 20)] });
      expect(r.reuse).toMatchObject({ cause: 'mismatch', stoppedAt: 40 });
      expect(r.reuse.reason).toContain('differ at token 7');
      // Never served: a Mamba state cannot be cut, so nothing is reused; KV reuses only the intact blocks, named by the request's own chain.
      expect(r.reused).toBe(model === 'tiny-mamba' ? 0 : 32);
      const next = await engine.infer({ stateKey: r.stateKey, maxNewTokens: 5 });
      expect(next.outputTokens).toEqual(wantNext.outputTokens);
      // Healed: the key holds the state of its own tokens again.
      expect((await store.getManifest(a.stateKey))!.tokens).toEqual(t);
      // The whole text's own key, edited: createState does not answer "already stored".
      await editManifest(store, a.stateKey, (m) => (m.tokens = forged));
      const b = await engine.createState({ model, tokens: t });
      expect(b.processed).toBeGreaterThan(0);
      expect(b.reuse).toMatchObject({ cause: 'mismatch', stoppedAt: 40 });
      expect((await store.getManifest(a.stateKey))!.tokens).toEqual(t);
      // infer on an edited key: its tokens are unknown, so it is refused and removed.
      await editManifest(store, a.stateKey, (m) => (m.tokens = forged));
      await expect(engine.infer({ stateKey: a.stateKey, maxNewTokens: 2 })).rejects.toMatchObject({ name: 'CorruptBlob' });
      expect(await store.getManifest(a.stateKey)).toBeUndefined();
    }
  });

  it('hits: listStates counts the requests that reused each state, and the counts survive a reopen', async () => {
    const { engine, store } = await setup();
    const t = ids(40, 21);
    const a = await engine.createState({ tokens: t });
    await engine.createState({ tokens: t });
    await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(3, 22), maxNewTokens: 1 });
    expect((await engine.listStates()).find((s) => s.key === a.stateKey)!.hits).toBe(2);
    expect((await engine.getState(a.stateKey)).hits).toBe(2);
    await store.flushUse();
    const again = new Engine(new StateStore({ dbName: store.dbName }), async () => nodeModel('tiny-gpt2'));
    expect((await again.listStates()).find((s) => s.key === a.stateKey)!.hits).toBe(2);
  });
});
