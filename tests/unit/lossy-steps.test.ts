import { describe, it, expect } from 'vitest';
import { localStatecart } from './support/node-engine.ts';
import type { ModelState } from '../../src/core/state.ts';

// A step under a lossy codec encodes only its new tokens: the parent's full
// blocks are taken by reference when the state was continued from the parent
// as read (its first tokens hold the parent's decoded numbers), and the hot
// copy still holds exactly what a read from IndexedDB returns.

const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 17) % 50257);

function sameBits(a: ModelState, b: ModelState): boolean {
  if (a.tensors.length !== b.tensors.length) return false;
  return a.tensors.every((t, i) => {
    const u = b.tensors[i]!;
    return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength));
  });
}

describe('steps under a lossy codec', () => {
  for (const codec of ['int8', 'fp16'] as const) {
    it(`${codec}: a continued state takes its parent's blocks by reference, and its hot copy is what IndexedDB gives back`, async () => {
      const sc = await localStatecart();
      await sc.loadModel({ model: 'tiny-gpt2' });
      await sc.setCodecPolicy({ codec });
      const a = await sc.createState({ tokens: ids(70, 1) });
      const b = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(30, 2), maxNewTokens: 3 });
      // 103 tokens: blocks 4, 5 and the partial 6 are new; a's full blocks 0–3 are not encoded again.
      expect(sc.store.stats().lastBlocksPrepared).toBe(3);
      const c = await sc.infer({ stateKey: b.newStateKey, deltaTokens: ids(12, 3), maxNewTokens: 3 });
      // 118 tokens: only block 6 (now full) and the partial 7.
      expect(sc.store.stats().lastBlocksPrepared).toBe(2);
      await sc.flush();
      const ma = (await sc.store.getManifest(a.stateKey))!;
      const mb = (await sc.store.getManifest(b.newStateKey))!;
      const mc = (await sc.store.getManifest(c.newStateKey))!;
      for (const m of [ma, mb, mc]) expect(m.codec).toBe(codec);
      // a's 4 full blocks are b's first 4, b's 6 full blocks are c's first 6: same blobs, same digests.
      expect(mb.blocks.slice(0, 4).map((x) => [x.key, x.digest])).toEqual(ma.blocks.slice(0, 4).map((x) => [x.key, x.digest]));
      expect(mc.blocks.slice(0, 6).map((x) => [x.key, x.digest])).toEqual(mb.blocks.slice(0, 6).map((x) => [x.key, x.digest]));
      // What the hot tier serves is what a read from IndexedDB gives, bit for bit.
      const hot = new Map<string, ModelState>();
      for (const k of [b.newStateKey, c.newStateKey]) {
        const r = await sc.store.getState(k);
        expect(r.tier).toBe('hot');
        hot.set(k, r.state);
      }
      await sc.store.dropHot();
      for (const k of [b.newStateKey, c.newStateKey]) {
        const r = await sc.store.getState(k);
        expect(r.tier).toBe('stored');
        expect(sameBits(r.state, hot.get(k)!), `${k} from IndexedDB`).toBe(true);
      }
      // So a continuation does not depend on the tier it came from.
      await sc.store.dropHot();
      const fromStore = await sc.infer({ stateKey: c.newStateKey, deltaTokens: ids(5, 4), maxNewTokens: 6 });
      expect(fromStore.tier).toBe('stored');
      const fromHot = await sc.infer({ stateKey: c.newStateKey, deltaTokens: ids(5, 4), maxNewTokens: 6 });
      expect(fromHot.tier).toBe('hot');
      expect(fromHot.outputTokens).toEqual(fromStore.outputTokens);
      expect((await sc.checkStore()).orphanBlobs).toBe(0);
    });
  }
});
