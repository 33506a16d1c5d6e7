import 'fake-indexeddb/auto';
import { describe, it, expect, vi, afterEach } from 'vitest';
import { StateStore } from '../../src/store/store.ts';
import { stateKey } from '../../src/core/key-chain.ts';
import { QuotaExceeded } from '../../src/core/errors.ts';
import type { Database } from '../../src/store/schema.ts';
import { audit, FP, maxDiff, putSynthetic, syntheticState, tokensFor } from './support/synthetic-state.ts';
import { snapshot } from './support/idb-snapshot.ts';

let n = 0;
const fresh = (budgetBytes: number | null = null) => new StateStore({ dbName: `quota-${process.pid}-${++n}`, budgetBytes });
const keyOf = (t: number[]) => stateKey(FP, t);

// Time moves one second per call, so that last-use order is never a tie.
function tick(): void {
  let clock = 1_700_000_000_000;
  vi.spyOn(Date, 'now').mockImplementation(() => (clock += 1000));
}
afterEach(() => vi.restoreAllMocks());

async function expectWhole(store: StateStore, tokens: number[]): Promise<void> {
  const { state } = await store.getState(await keyOf(tokens));
  expect(maxDiff(state, syntheticState(tokens))).toBe(0);
}

/** Makes the store's next `failures` read-write transactions fail as a full disk does. */
function quotaFull(store: StateStore, failures: number): { thrown: () => number } {
  const real: Database = store.db;
  let left = failures;
  let thrown = 0;
  store.db = {
    ...real,
    tx: (stores, mode, cb) =>
      real.tx(stores, mode, async (tx) => {
        if (mode !== 'readwrite' || !stores.includes('kv') || left <= 0) return cb(tx);
        left--;
        thrown++;
        // What IndexedDB does when a put goes past the quota: the transaction aborts with this error.
        const r = Promise.resolve(cb(tx)).catch(() => undefined);
        try {
          tx.abort();
        } catch {
          /* finished */
        }
        await r;
        throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      }),
  };
  return { thrown: () => thrown };
}

describe('byte budget and eviction', () => {
  it('creates states under a small budget: pinned survive, least recent go first, shared blocks stay, nothing half-written', async () => {
    tick();
    const base = tokensFor(9, 48); // three full blocks shared by every state below
    const per = 256; // bytes per token of the synthetic state
    const store = fresh(base.length * per + 4 * 20 * per); // room for the base and four 20-token extensions
    const pinned = [...base, ...tokensFor(100, 20)];
    await putSynthetic(store, pinned);
    await store.setPinned(await keyOf(pinned), true);
    const made: number[][] = [];
    const evictedOrder: string[] = [];
    const seen = new Set<string>();
    let created = 1;
    for (let i = 0; i < 14; i++) {
      const t = [...base, ...tokensFor(200 + i, 20)];
      await putSynthetic(store, t);
      created++;
      made.push(t);
      const list = await store.list();
      const keys = new Set(list.map((m) => m.key));
      for (const m of made) {
        const k = await keyOf(m);
        if (seen.has(k) && !keys.has(k) && !evictedOrder.includes(k)) evictedOrder.push(k);
        if (keys.has(k)) seen.add(k);
      }
      const u = await store.usage();
      expect(u.bytes).toBeLessThanOrEqual(store.budgetBytes!);
      const a = await audit(store);
      expect(a.orphans).toEqual([]);
      expect(a.missing).toEqual([]);
      // (verify checks every digest without counting as a use)
      for (const m of list) expect((await store.verify(m.key)).ok).toBe(true);
      // Reading the first state keeps it recent: it must outlive later ones.
      const keep = await keyOf(made[0]!);
      if (await store.getManifest(keep)) await store.getState(keep);
    }
    for (const m of await store.list()) await expectWhole(store, m.tokens);
    const finalKeys = new Set((await store.list()).map((m) => m.key));
    expect(finalKeys.has(await keyOf(pinned))).toBe(true);
    expect(finalKeys.has(await keyOf(made[0]!))).toBe(true);
    // Everyone else went in creation order (their last use), the oldest first.
    const expected = [];
    for (const m of made.slice(1)) if (!finalKeys.has(await keyOf(m))) expected.push(await keyOf(m));
    expect(evictedOrder).toEqual(expected);
    expect(evictedOrder.length).toBeGreaterThanOrEqual(8);
    console.log(
      `[budget] ${created} states created under a ${store.budgetBytes}-byte budget: ${evictedOrder.length} evicted least-recent first, ${finalKeys.size} kept (1 pinned, 1 kept recent by reads), 0 half-written, 0 lost blocks`,
    );
  });

  it('a write that cannot fit even after evicting every unpinned state fails with QuotaExceeded and changes nothing', async () => {
    tick();
    const store = fresh(3 * 16 * 256);
    const a = tokensFor(1, 32);
    const b = tokensFor(2, 10);
    await putSynthetic(store, a);
    await store.setPinned(await keyOf(a), true);
    await putSynthetic(store, b);
    const before = await snapshot(store);
    const err = await putSynthetic(store, tokensFor(3, 40)).catch((e: Error) => e);
    expect(err).toBeInstanceOf(QuotaExceeded);
    expect((err as QuotaExceeded).message).toMatch(/Nothing was written/);
    expect(await snapshot(store)).toEqual(before); // b was not evicted for a write that failed anyway
  });

  it('maps a real QuotaExceededError from IndexedDB to QuotaExceeded, after evicting and retrying once', async () => {
    tick();
    const store = fresh();
    const old = tokensFor(5, 40);
    const pinned = tokensFor(6, 16);
    await putSynthetic(store, old);
    await putSynthetic(store, pinned);
    await store.setPinned(await keyOf(pinned), true);
    // The disk is full once: the store frees room (the unpinned state) and writes.
    const full = quotaFull(store, 1);
    const next = tokensFor(7, 30);
    await putSynthetic(store, next);
    expect(full.thrown()).toBe(1);
    const keys = (await store.list()).map((m) => m.key);
    expect(keys).not.toContain(await keyOf(old));
    expect(keys).toContain(await keyOf(pinned));
    await expectWhole(store, next);
    // Full for good, nothing unpinned left that would help: a typed error, nothing written.
    await store.setPinned(await keyOf(next), true);
    const before = await snapshot(store);
    const full2 = quotaFull(store, 2);
    const err = await putSynthetic(store, tokensFor(8, 30)).catch((e: Error) => e);
    expect(err).toBeInstanceOf(QuotaExceeded);
    expect(full2.thrown()).toBe(2);
    expect(await snapshot(store)).toEqual(before);
    expect((await audit(store)).orphans).toEqual([]);
  });

  it('evict({ targetBytes: 0 }) drops every unpinned state and keeps blocks pinned states use; setBudget evicts at once', async () => {
    tick();
    const store = fresh();
    const base = tokensFor(11, 32);
    const p = [...base, ...tokensFor(12, 5)];
    await putSynthetic(store, p);
    await store.setPinned(await keyOf(p), true);
    for (let i = 0; i < 5; i++) await putSynthetic(store, [...base, ...tokensFor(20 + i, 18)]);
    const before = await store.usage();
    const r = await store.evict({ targetBytes: 0 });
    expect(r.evicted.length).toBe(5);
    expect(r.reached).toBe(false); // the pinned state alone is more than 0 bytes
    const after = await store.usage();
    expect(after.states).toBe(1);
    expect(before.bytes - after.bytes).toBe(r.bytesFreed);
    expect((await audit(store)).missing).toEqual([]);
    await expectWhole(store, p);
    await store.setPinned(await keyOf(p), false);
    for (let i = 0; i < 3; i++) await putSynthetic(store, tokensFor(40 + i, 16));
    const s = await store.setBudget(2 * 16 * 256);
    expect(s!.reached).toBe(true);
    expect((await store.usage()).bytes).toBeLessThanOrEqual(2 * 16 * 256);
  });
});
