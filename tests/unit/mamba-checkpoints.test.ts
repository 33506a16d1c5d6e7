import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { Engine } from '../../src/engine/engine.ts';
import { DEFAULT_CHECKPOINT_EVERY } from '../../src/engine/api.ts';
import { StateStore } from '../../src/store/store.ts';
import type { StateModel } from '../../src/models/types.ts';
import { loadNodeModel, pseudoTokens } from './support/codec-models.ts';

// Issue 18, part 1: a Mamba state exists only at the end of its text, so the
// engine keeps checkpoint states every K tokens of a prefill; a text sharing
// 1,000 tokens with a stored 1,100-token one then resumes from the last
// checkpoint before token 1,000 instead of from nothing.

let n = 0;
async function fresh(model: StateModel, checkpointEvery?: number) {
  const store = new StateStore({ dbName: `mamba-ck-${process.pid}-${++n}` });
  return { store, engine: new Engine(store, async () => model, checkpointEvery === undefined ? {} : { checkpointEvery }) };
}

describe('Mamba checkpoints (tiny-mamba, Node, fake IndexedDB)', () => {
  it('the 1,000-of-1,100 case recomputes at most K + its own tokens, and equals a full recompute', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const K = DEFAULT_CHECKPOINT_EVERY;
    const { store, engine } = await fresh(model);
    const stored = pseudoTokens(1100, model.vocabSize, 1);
    const a = await engine.createState({ tokens: stored });
    expect(a.processed).toBe(1100);
    // One checkpoint at every multiple of K passed: 256, 512, 768, 1024.
    expect(a.checkpoints).toHaveLength(Math.floor(1099 / K));
    const own = pseudoTokens(100, model.vocabSize, 2);
    const req = [...stored.slice(0, 1000), ...own];
    await store.dropHot(); // from IndexedDB, as after a restart
    const b = await engine.createState({ tokens: req });
    expect(b.processed).toBeLessThanOrEqual(K + own.length);
    expect(b.reused).toBe(Math.floor(1000 / K) * K);
    expect(b.reuse.fromKey).toBe(a.checkpoints[Math.floor(1000 / K) - 1]);
    expect(b.reuse.tier).toBe('stored');
    expect(b.reuse.cause).toBe('no-checkpoint');
    expect(b.reuse.stoppedAt).toBe(1000);
    expect(b.reuse.reason).toContain('no checkpoint before token 1000');
    // A full recompute, with nothing stored and no checkpoints: the same key, the same numbers, the same continuation.
    const ref = await fresh(model, 0);
    const c = await ref.engine.createState({ tokens: req });
    expect(c.processed).toBe(req.length);
    expect(c.checkpoints).toEqual([]);
    expect(b.stateKey).toBe(c.stateKey);
    await store.dropHot();
    await ref.store.dropHot();
    const sb = (await store.getState(b.stateKey)).state;
    const sc = (await ref.store.getState(c.stateKey)).state;
    // K is a multiple of the runner's 64-token prefill chunk, so the pieces are the chunks a whole prefill runs: bit for bit.
    sb.tensors.forEach((t, i) => expect(t.data).toEqual(sc.tensors[i]!.data));
    const gb = await engine.infer({ stateKey: b.stateKey, maxNewTokens: 8 });
    const gc = await ref.engine.infer({ stateKey: c.stateKey, maxNewTokens: 8 });
    expect(gb.outputTokens).toEqual(gc.outputTokens);
    // The checkpoint it resumed from was counted as a hit; the others were not.
    await store.flushUse();
    const list = await engine.listStates();
    const hit = list.find((s) => s.key === b.reuse.fromKey)!;
    expect(hit.checkpoint).toBe(true);
    expect(hit.hits).toBe(1);
    expect(list.filter((s) => s.checkpoint && s.key !== hit.key).every((s) => s.hits === 0)).toBe(true);
  });

  it('without checkpoints the same request recomputes everything, and says why', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { engine } = await fresh(model, 0);
    const stored = pseudoTokens(1100, model.vocabSize, 1);
    await engine.createState({ tokens: stored });
    const req = [...stored.slice(0, 1000), ...pseudoTokens(100, model.vocabSize, 2)];
    const b = await engine.createState({ tokens: req });
    expect(b.processed).toBe(req.length);
    expect(b.reuse).toMatchObject({ cause: 'no-checkpoint', stoppedAt: 1000, tokensReused: 0, fromKey: null, tier: 'recomputed' });
    expect(b.reuse.reason).toContain('no checkpoint before token 1000');
  });

  it('infer keeps checkpoints inside a long delta, and a later text resumes from one', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { engine } = await fresh(model, 64);
    const base = await engine.createState({ tokens: pseudoTokens(40, model.vocabSize, 3) });
    expect(base.checkpoints).toEqual([]);
    const delta = pseudoTokens(150, model.vocabSize, 4);
    const r = await engine.infer({ stateKey: base.stateKey, deltaTokens: delta, maxNewTokens: 2 });
    // 40 + 150 = 190 tokens of prompt: boundaries at 64 and 128.
    expect(r.checkpoints).toHaveLength(2);
    const req = [...pseudoTokens(40, model.vocabSize, 3), ...delta.slice(0, 100), ...pseudoTokens(5, model.vocabSize, 5)];
    const c = await engine.createState({ tokens: req });
    expect(c.reused).toBe(128);
    expect(c.reuse.fromKey).toBe(r.checkpoints[1]);
    expect(c.processed).toBe(req.length - 128);
  });

  it('write-behind: a checkpoint whose queued write finds the store full is dropped unreported; the state asked for is reported', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { store, engine } = await fresh(model, 16);
    const base = await engine.createState({ tokens: pseudoTokens(10, model.vocabSize, 7) }, { durable: true });
    await store.setPinned(base.stateKey, true);
    // Room for nothing more: the pinned base fills the budget.
    await store.setBudget((await store.usage()).bytes);
    const r = await engine.createState({ tokens: pseudoTokens(40, model.vocabSize, 8) });
    expect(r.checkpoints).toHaveLength(2);
    const err = await store.flush().then(
      () => null,
      (e: Error & { details?: Record<string, unknown> }) => e,
    );
    expect(err?.name).toBe('StateNotStored');
    expect(err?.details?.keys).toEqual([r.stateKey]);
    expect(await store.getManifest(r.stateKey)).toBeUndefined();
    for (const k of r.checkpoints) expect(await store.getManifest(k)).toBeUndefined();
    expect((await store.usage()).states).toBe(1);
  });

  it('checkpointEvery is checked', async () => {
    const model = await loadNodeModel('tiny-mamba');
    const { engine } = await fresh(model);
    await expect(engine.createState({ tokens: [1, 2, 3], checkpointEvery: -1 })).rejects.toMatchObject({ name: 'InvalidInput' });
    await expect(engine.createState({ tokens: [1, 2, 3], checkpointEvery: 1.5 })).rejects.toMatchObject({ name: 'InvalidInput' });
  });
});
