import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { StateStore } from '../../src/store/store.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { audit, FP, maxDiff, putSynthetic, syntheticState, tokensFor } from './support/synthetic-state.ts';
import { snapshot } from './support/idb-snapshot.ts';

let n = 0;
const fresh = () => new StateStore({ dbName: `crash-${process.pid}-${++n}` });

// A 20-block state (19 full 16-token blocks and a 12-token tail) written over a
// store that already holds two of its prefixes: the write reuses their full
// blocks and moves their tails onto its own (shared-tails.ts), so a cut-off
// write could, if it were not one transaction, damage states that existed before.
const LONG = tokensFor(1, 316);
const PREFIXES = [LONG.slice(0, 40), LONG.slice(0, 75)];

describe('crash-safe writes: a write cut off after each of its IndexedDB requests', () => {
  it('leaves the store as before or as after, never between, with no orphans', async () => {
    // How many requests does the write make when nothing goes wrong?
    const probe = fresh();
    for (const p of PREFIXES) await putSynthetic(probe, p);
    await putSynthetic(probe, LONG);
    const total = probe.stats().lastWriteRequests;
    const after = await snapshot(probe);
    expect(total).toBeGreaterThan(40);
    // The write did move the prefixes' tails onto its blocks (so faults hit that step too).
    expect([...after.values()].filter((v) => v.includes('"blobTokens"')).length).toBe(PREFIXES.length);

    let tried = 0;
    let whole = 0;
    let absent = 0;
    for (let k = 1; k <= total; k++) {
      const store = fresh();
      for (const p of PREFIXES) await putSynthetic(store, p);
      const before = await snapshot(store);
      store.faultAfterRequests(k);
      const err = await putSynthetic(store, LONG).then(
        () => null,
        (e: Error) => e,
      );
      tried++;
      // What a later page sees: a fresh connection, which runs the open-time check.
      const reopened = new StateStore({ dbName: store.dbName });
      const report = await reopened.ready;
      expect(report.orphanBlobs, `fault after request ${k}`).toBe(0);
      expect(report.damaged).toBe(0);
      const a = await audit(reopened);
      expect(a.orphans).toEqual([]);
      expect(a.missing).toEqual([]);
      expect(a.badDigest).toEqual([]);
      const snap = await snapshot(reopened);
      if (err) {
        expect(snap, `fault after request ${k}: store changed though the write failed`).toEqual(before);
        absent++;
      } else {
        expect(snap).toEqual(after);
        whole++;
      }
      // Every state present reads back whole and equal to what was written.
      for (const t of [...PREFIXES, ...(err ? [] : [LONG])]) {
        const { state } = await reopened.getState(await stateKey(FP, t));
        expect(maxDiff(state, syntheticState(t))).toBe(0);
      }
      store.close();
      reopened.close();
    }
    console.log(
      `[crash] write of a 20-block state: ${total} IndexedDB requests, faults tried ${tried}, store as before ${absent}, as after ${whole}, orphans 0, states lost 0`,
    );
    expect(tried).toBe(total);
    // A fault after the last request still aborts before the commit.
    expect(absent).toBe(total);
  });

  it('the open-time check removes orphan blobs and marks manifests with missing blobs damaged', async () => {
    const store = fresh();
    const a = await putSynthetic(store, tokensFor(2, 50));
    const b = await putSynthetic(store, tokensFor(3, 20));
    // Damage the database behind the store's back: an orphan blob and a missing one.
    await store.idb('readwrite', (s) => {
      s.put({ digest: 'sha256:00', codec: 'fp32', data: new ArrayBuffer(8) }, 'b:sha256:orphan/fp32');
      s.delete('b:' + b.blocks[1]!.key);
      return new Promise((r) => (s.transaction.oncomplete = r));
    });
    store.close();
    const again = new StateStore({ dbName: store.dbName });
    const report = await again.ready;
    expect(report).toMatchObject({ states: 2, orphanBlobs: 1, damaged: 1 });
    const au = await audit(again);
    expect(au.orphans).toEqual([]);
    const list = await again.list();
    expect(list.find((m) => m.key === b.key)!.damaged).toMatchObject({ reason: 'missing', blocks: [b.blocks[1]!.key] });
    expect(list.find((m) => m.key === a.key)!.damaged).toBeUndefined();
    await expect(again.getState(b.key)).rejects.toMatchObject({ name: 'CorruptBlob' });
    // Written again (a recompute from its tokens): whole, and no longer damaged.
    await putSynthetic(again, tokensFor(3, 20));
    expect((await again.getManifest(b.key))!.damaged).toBeUndefined();
    expect((await again.verify(b.key)).ok).toBe(true);
    again.close();
  });
});
