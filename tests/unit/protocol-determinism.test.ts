import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { snapshot } from './support/idb-snapshot.ts';
import { canonicalize } from '../../src/core/canonical-json.ts';
import type { Engine } from '../../src/engine/engine.ts';
import type { StateStore } from '../../src/store/store.ts';

const ids = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (((i + 3) * 6151 + seed * 7307) % 50000) + 1);

/** A fixed sequence of every protocol call; returns keys and receipts. */
async function script(engine: Engine): Promise<{ keys: string[]; receipts: string[] }> {
  const keys: string[] = [];
  const receipts: string[] = [];
  const note = (k: string, r: { receipt: unknown; hash: string }) => {
    keys.push(k);
    receipts.push(canonicalize(r.receipt) + ' ' + r.hash);
  };
  const a = await engine.createState({ text: 'You are a careful assistant. Answer briefly. '.repeat(3) });
  note(a.stateKey, a.receipt);
  const b = await engine.infer({ stateKey: a.stateKey, delta: ' Question one?', maxNewTokens: 6 });
  note(b.newStateKey, b.receipt);
  const c = await engine.infer({ stateKey: b.newStateKey, delta: ' Two?', maxNewTokens: 6, sampling: { temperature: 0.8, topK: 50, topP: 0.9, seed: 99 } });
  note(c.newStateKey, c.receipt);
  const d = await engine.createState({ tokens: [...ids(40, 1)] });
  note(d.stateKey, d.receipt);
  const m = await engine.merge({ stateKeys: [a.stateKey, b.newStateKey, c.newStateKey] });
  note(m.newStateKey, m.receipt);
  const k = await engine.compact({ stateKey: m.newStateKey, keep: { firstTokens: 16, lastTokens: 10 } });
  note(k.newStateKey, k.receipt);
  await engine.deleteState(d.stateKey);
  return { keys, receipts };
}

const blobs = (snap: Map<string, string>) => [...snap].filter(([k]) => k.startsWith('b:'));
/** Manifests without their wall-clock fields. */
const manifests = (snap: Map<string, string>) =>
  [...snap]
    .filter(([k]) => k.startsWith('m:'))
    .map(([k, v]) => {
      const { createdAt: _c, lastUsed: _l, ...rest } = JSON.parse(v);
      return [k, rest];
    });

describe('determinism, cancel, hot tier', () => {
  it('the same calls from an empty store give the same keys, blob digests and receipts', async () => {
    const runs = [];
    for (let i = 0; i < 2; i++) {
      const { engine, store } = await nodeEngine();
      const r = await script(engine);
      await store.flush();
      runs.push({ ...r, snap: await snapshot(store) });
    }
    const [x, y] = runs as [(typeof runs)[0], (typeof runs)[0]];
    // Six results, five keys: the merge of a chain has its last state's key.
    expect(x.keys[4]).toBe(x.keys[2]);
    expect(new Set(x.keys).size).toBe(x.keys.length - 1);
    expect(y.keys).toEqual(x.keys);
    expect(y.receipts).toEqual(x.receipts);
    expect(blobs(x.snap).length).toBeGreaterThan(0);
    expect(blobs(y.snap)).toEqual(blobs(x.snap));
    expect(manifests(y.snap)).toEqual(manifests(x.snap));
  });

  async function withStates(): Promise<{ engine: Engine; store: StateStore; key: string }> {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(100, 5) });
    await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(9, 6), maxNewTokens: 2 });
    await store.flush();
    return { engine, store, key: a.stateKey };
  }

  it('a createState cancelled halfway through prefill leaves the store byte for byte as it was', async () => {
    const { engine, store } = await withStates();
    const before = await snapshot(store);
    const ac = new AbortController();
    const seen: number[] = [];
    const err = await engine
      .createState(
        { tokens: [...ids(100, 5), ...ids(800, 7)] },
        {
          signal: ac.signal,
          onProgress: (p) => {
            seen.push(p.done);
            if (p.done >= 450) ac.abort();
          },
        },
      )
      .catch((e) => e);
    expect(err.name).toBe('Aborted');
    expect(seen[0]).toBeGreaterThanOrEqual(100); // the stored prefix counts as done
    expect(seen[seen.length - 1]).toBeLessThan(900);
    expect(await snapshot(store)).toEqual(before);
  });

  it('an infer cancelled during its delta leaves the store as it was', async () => {
    const { engine, store, key } = await withStates();
    const before = await snapshot(store);
    const ac = new AbortController();
    const err = await engine
      .infer(
        { stateKey: key, deltaTokens: ids(600, 8), maxNewTokens: 4 },
        {
          signal: ac.signal,
          onProgress: (p) => {
            if (p.done >= 300) ac.abort();
          },
        },
      )
      .catch((e) => e);
    expect(err.name).toBe('Aborted');
    expect(await snapshot(store)).toEqual(before);
  });

  it('progress is monotonic and ends at the total', async () => {
    const { engine } = await nodeEngine();
    const seen: { done: number; total: number }[] = [];
    await engine.createState({ tokens: ids(700, 9) }, { onProgress: (p) => seen.push(p) });
    expect(seen.length).toBeGreaterThan(2);
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.done).toBeGreaterThanOrEqual(seen[i - 1]!.done);
    expect(seen.every((p) => p.total === 700 && p.done <= 700)).toBe(true);
    expect(seen[seen.length - 1]!.done).toBe(700);
  });

  it('a second infer on the same state reads no blob from IndexedDB; getState says which tier', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ tokens: ids(200, 10) });
    await store.dropHot();
    expect((await engine.getState(a.stateKey)).tier).toBe('stored');
    const r0 = store.stats().blobReads;
    const first = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(5, 11), maxNewTokens: 3 });
    expect(first.tier).toBe('stored');
    const r1 = store.stats().blobReads;
    expect(r1).toBeGreaterThan(r0);
    expect((await engine.getState(a.stateKey)).tier).toBe('hot');
    const second = await engine.infer({ stateKey: a.stateKey, deltaTokens: ids(5, 11), maxNewTokens: 3 });
    expect(second.tier).toBe('hot');
    expect(store.stats().blobReads).toBe(r1);
    expect(second.outputTokens).toEqual(first.outputTokens);
  });
});
