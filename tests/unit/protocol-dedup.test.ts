import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { blobSizes } from './support/idb-snapshot.ts';
import { BLOCK_TOKENS } from '../../src/core/key-chain.ts';
import type { ModelState, StateModel } from '../../src/models/types.ts';

const ids = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503)) >>> 0).map((x) => (x % 50000) + 1);
// 20 deltas of 10–40 tokens; 512 + their sum stays within GPT-2's 1,024.
const DELTAS = [10, 40, 17, 33, 25, 12, 38, 21, 29, 15, 36, 19, 27, 11, 40, 23, 31, 14, 35, 20];
const kvBytesPerToken = (m: StateModel) => m.stateSpecs.reduce((a, s) => a + s.dims[0]! * s.dims[2]! * 4, 0);

function sameState(a: ModelState, b: ModelState): boolean {
  if (a.tokens.join() !== b.tokens.join() || a.tensors.length !== b.tensors.length) return false;
  return a.tensors.every((t, i) => {
    const u = b.tensors[i]!;
    if (t.name !== u.name || t.data.length !== u.data.length) return false;
    for (let j = 0; j < t.data.length; j++) if (!Object.is(t.data[j], u.data[j])) return false;
    return true;
  });
}

describe('dedup: shared blocks and shared tails', () => {
  it('a 512-token base with 20 chained deltas stores ≤ 1.05 × unique tokens × KV bytes per token', async () => {
    const { engine, store, model } = await nodeEngine();
    expect(DELTAS.every((d) => d >= 10 && d <= 40)).toBe(true);
    const base = await engine.createState({ tokens: ids(512, 1) });
    const keys = [base.stateKey];
    const held: ModelState[] = [(await store.getState(base.stateKey)).state];
    let key = base.stateKey;
    for (let i = 0; i < DELTAS.length; i++) {
      const r = await engine.infer({ stateKey: key, deltaTokens: ids(DELTAS[i]!, 100 + i), maxNewTokens: 0 });
      expect(r.savings.tokensProcessed).toBe(DELTAS[i]);
      key = r.newStateKey;
      keys.push(key);
      held.push((await store.getState(key)).state);
    }
    const unique = 512 + DELTAS.reduce((a, b) => a + b, 0);
    expect((await engine.getState(key)).tokens).toBe(unique);
    await store.flush();
    const sizes = await blobSizes(store);
    const stored = [...sizes.values()].reduce((a, b) => a + b, 0);
    const bound = unique * kvBytesPerToken(model);
    console.log(
      `[dedup] chain: ${keys.length} states, ${unique} unique tokens, ${sizes.size} blobs, ${stored} bytes stored, ratio ${(stored / bound).toFixed(4)} (bound 1.05); logical ${(await store.usage()).logicalBytes} bytes`,
    );
    expect(stored).toBeLessThanOrEqual(1.05 * bound);
    // Every state of the chain still reads back, from IndexedDB, exactly as it was computed.
    await store.dropHot();
    for (let i = 0; i < keys.length; i++) {
      const { state, tier } = await store.getState(keys[i]!);
      expect(tier).toBe('stored');
      expect(sameState(state, held[i]!), `state ${i} (${held[i]!.tokens.length} tokens) reads back bit-exact`).toBe(true);
    }
    // Releasing the longest state keeps the shorter ones whole (their tails now live in its blocks).
    await store.dropHot();
    await engine.deleteState(key);
    const prev = await store.getState(keys[keys.length - 2]!);
    expect(sameState(prev.state, held[held.length - 2]!)).toBe(true);
    expect((await store.verify(keys[keys.length - 2]!)).ok).toBe(true);
  });

  it('a branch does not take over a tail that another branch shares', async () => {
    const { engine, store } = await nodeEngine();
    const root = ids(40, 7);
    const p = await engine.createState({ tokens: root });
    const heldP = (await store.getState(p.stateKey)).state;
    const t = await engine.createState({ tokens: [...root, 5, 6, 7] }); // p's tail → t's block
    const n = await engine.createState({ tokens: [...root, 9, 9] }); // branches from p inside the same block
    await store.dropHot();
    expect(sameState((await store.getState(p.stateKey)).state, heldP)).toBe(true);
    for (const k of [t.stateKey, n.stateKey]) expect((await store.verify(k)).ok).toBe(true);
    await engine.deleteState(t.stateKey);
    await store.dropHot();
    expect(sameState((await store.getState(p.stateKey)).state, heldP)).toBe(true);
    expect(p.tokens % BLOCK_TOKENS).not.toBe(0);
  });

  it('one base shared by 100 agents is stored once', async () => {
    const { engine, store, model } = await nodeEngine();
    const baseTokens = ids(512, 3);
    const base = await engine.createState({ tokens: baseTokens });
    await store.flush();
    const baseBlobs = [...(await blobSizes(store)).keys()];
    expect(baseBlobs.length).toBe(512 / BLOCK_TOKENS);
    for (let a = 0; a < 100; a++) {
      const suffix = ids(5, 1000 + a);
      if (a % 2 === 0) {
        const r = await engine.createState({ tokens: [...baseTokens, ...suffix] });
        expect(r.reused).toBe(512);
      } else {
        const r = await engine.infer({ stateKey: base.stateKey, deltaTokens: suffix, maxNewTokens: 0 });
        expect(r.savings.tokensReused).toBe(512);
      }
    }
    await store.flush();
    const sizes = await blobSizes(store);
    const u = await store.usage();
    expect(u.states).toBe(101);
    // The base's 32 blocks once, plus each agent's own 5-token tail.
    expect(sizes.size).toBe(32 + 100);
    for (const k of baseBlobs) expect(sizes.has(k)).toBe(true);
    const stored = [...sizes.values()].reduce((x, y) => x + y, 0);
    expect(stored).toBe((512 + 100 * 5) * kvBytesPerToken(model));
    console.log(
      `[dedup] 100 agents on a 512-token base: ${sizes.size} blobs, ${stored} bytes stored vs ${u.logicalBytes} logical (${(u.logicalBytes / stored).toFixed(1)}×)`,
    );
  });
});
