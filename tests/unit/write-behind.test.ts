import { describe, it, expect } from 'vitest';
import { localStatecart } from './support/node-engine.ts';
import { audit } from './support/synthetic-state.ts';
import { snapshot } from './support/idb-snapshot.ts';
import { StateStore } from '../../src/store/store.ts';
import { listenStore, type StoreEvent } from '../../src/store/broadcast.ts';
import type { LocalStatecart } from '../../src/engine/statecart.ts';
import type { Sampling } from '../../src/engine/sampling.ts';

// Issue 14, item 3: writes go behind the calls. A call resolves once its
// state is in memory and its write is queued; flush() waits for every queued
// write, { durable: true } for the call's own; a write that fails is reported
// once and leaves the store as it was; a crash loses only queued states.

const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 17) % 50257);
const SEEDED: Sampling = { temperature: 0.9, topK: 40, seed: 1234 };

let n = 0;
const dbName = () => `write-behind-${process.pid}-${++n}`;

async function loaded(o: { dbName?: string; hotBytes?: number } = {}): Promise<LocalStatecart> {
  const sc = await localStatecart({ dbName: o.dbName ?? dbName(), ...(o.hotBytes ? { hotBytes: o.hotBytes } : {}) });
  await sc.loadModel({ model: 'tiny-gpt2' });
  return sc;
}

/** Plain recomputation of the whole text and its continuation (no lookup, no store). */
async function plain(sc: LocalStatecart, tokens: number[], maxNewTokens: number, sampling?: Sampling): Promise<number[]> {
  return (await sc.runUncached({ tokens, maxNewTokens, ...(sampling ? { sampling } : {}) })).outputTokens;
}

async function stateTokens(sc: LocalStatecart, key: string): Promise<number[]> {
  return (await sc.store.getManifest(key))!.tokens;
}

describe('write-behind: a call returns before its write lands', () => {
  it('a queued state is usable at once, is not in IndexedDB until it lands, and continues exactly as plain recomputation — now, after it lands, and after a reload', async () => {
    const sc = await loaded();
    const db = sc.store.dbName;
    const base = await sc.createState({ tokens: ids(40, 1) });
    await sc.flush();
    sc.store.holdWrites(true);
    const d1 = ids(5, 2);
    const greedy = await sc.infer({ stateKey: base.stateKey, deltaTokens: d1, maxNewTokens: 6 });
    const seeded = await sc.infer({ stateKey: base.stateKey, deltaTokens: ids(7, 3), maxNewTokens: 6, sampling: SEEDED });
    // In memory and listed as not yet stored; another store of the same database does not see it.
    const listed = await sc.listStates();
    expect(listed.find((s) => s.key === greedy.newStateKey)?.tier).toBe('queued');
    expect((await sc.getState({ stateKey: seeded.newStateKey })).tier).toBe('queued');
    expect(sc.store.stats().writes.queued).toBe(2);
    const other = new StateStore({ dbName: db });
    expect(await other.getManifest(greedy.newStateKey)).toBeUndefined();
    // Continued while its write is still queued: from memory, and no token of it recomputed.
    const d2 = ids(4, 4);
    const next = await sc.infer({ stateKey: greedy.newStateKey, deltaTokens: d2, maxNewTokens: 5 });
    expect(next.tier).toBe('hot');
    expect(next.savings.tokensReused).toBe(40 + 5 + 6);
    const baseTokens = ids(40, 1);
    expect(greedy.outputTokens).toEqual(await plain(sc, [...baseTokens, ...d1], 6));
    expect(seeded.outputTokens).toEqual(await plain(sc, [...baseTokens, ...ids(7, 3)], 6, SEEDED));
    expect(next.outputTokens).toEqual(await plain(sc, [...(await stateTokens(sc, greedy.newStateKey)), ...d2], 5));

    sc.store.holdWrites(false);
    expect(await sc.flush()).toEqual({ stored: 3 });
    expect((await sc.getState({ stateKey: next.newStateKey })).tier).toBe('hot');
    for (const k of [greedy.newStateKey, seeded.newStateKey, next.newStateKey]) expect(await other.getManifest(k)).toBeDefined();
    other.close();

    // A reload: a new Statecart on the same database, nothing in memory.
    const again = await loaded({ dbName: db });
    for (const [key, sampling] of [
      [next.newStateKey, undefined],
      [seeded.newStateKey, SEEDED],
    ] as const) {
      const d = ids(3, 5);
      const r = await again.infer({ stateKey: key, deltaTokens: d, maxNewTokens: 6, ...(sampling ? { sampling } : {}) });
      expect(r.tier).toBe('stored');
      expect(r.outputTokens).toEqual(await plain(again, [...(await stateTokens(again, key)), ...d], 6, sampling));
    }
    const check = await again.checkStore();
    expect(check).toMatchObject({ orphanBlobs: 0, damaged: 0 });
  });

  it('durable waits for the call’s own write; flush() for every queued write; the order of writes is the order of calls', async () => {
    const sc = await loaded();
    const a = await sc.createState({ tokens: ids(50, 6) });
    sc.store.holdWrites(true);
    let durableDone = false;
    const durable = sc.infer({ stateKey: a.stateKey, deltaTokens: ids(3, 7), maxNewTokens: 2 }, { durable: true }).then((r) => {
      durableDone = true;
      return r;
    });
    // A chain made while every write is held: each continues a state whose write has not landed.
    const b = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(20, 8), maxNewTokens: 3 });
    const c = await sc.infer({ stateKey: b.newStateKey, deltaTokens: ids(9, 9), maxNewTokens: 3 });
    expect(durableDone).toBe(false);
    // A delete asked now applies after the writes queued before it.
    const del = sc.deleteState({ stateKey: b.newStateKey });
    sc.store.holdWrites(false);
    const d = await durable;
    expect(await sc.store.getManifest(d.newStateKey)).toBeDefined();
    expect((await del).deleted).toBe(true);
    await sc.flush();
    const keys = (await sc.listStates()).map((s) => s.key);
    expect(keys).toContain(c.newStateKey);
    expect(keys).not.toContain(b.newStateKey);
    // c named blocks of b, its parent: they stay, and c reads back whole from IndexedDB.
    expect((await sc.verifyState({ stateKey: c.newStateKey })).ok).toBe(true);
    await sc.store.dropHot();
    const more = ids(2, 10);
    const r = await sc.infer({ stateKey: c.newStateKey, deltaTokens: more, maxNewTokens: 4 });
    expect(r.tier).toBe('stored');
    expect(r.outputTokens).toEqual(await plain(sc, [...(await stateTokens(sc, c.newStateKey)), ...more], 4));
    expect((await sc.checkStore()).orphanBlobs).toBe(0);
    // Clearing with writes queued: they land first, then everything goes.
    sc.store.holdWrites(true);
    await sc.infer({ stateKey: c.newStateKey, deltaTokens: ids(2, 11), maxNewTokens: 1 });
    const cleared = sc.clearStore();
    sc.store.holdWrites(false);
    await cleared;
    expect(await sc.listStates()).toEqual([]);
  });

  it('a failed queued write leaves the store as it was, is reported once to flush() (and to other pages), and a durable call gets its own error', async () => {
    const sc = await loaded();
    const a = await sc.createState({ tokens: ids(40, 12) });
    await sc.pinState({ stateKey: a.stateKey });
    // Room for nothing more: the base is pinned and fills the budget.
    await sc.setBudget({ bytes: (await sc.health()).bytesStored });
    const before = await snapshot(sc.store);
    const heard: StoreEvent[] = [];
    const stop = listenStore(sc.store.dbName, (e) => heard.push(e));
    const r = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(20, 13), maxNewTokens: 2 });
    const err = await sc.flush().then(
      () => null,
      (e: Error & { details?: Record<string, unknown> }) => e,
    );
    expect(err?.name).toBe('StateNotStored');
    expect(err?.details).toMatchObject({ keys: [r.newStateKey], cause: 'QuotaExceeded' });
    // Once: the next flush has nothing to report.
    expect(await sc.flush()).toEqual({ stored: 0 });
    expect(await snapshot(sc.store)).toEqual(before);
    await expect(sc.getState({ stateKey: r.newStateKey })).rejects.toMatchObject({ name: 'StateNotFound' });
    const h = await sc.health();
    expect(h.writes).toMatchObject({ queued: 0, failed: 1 });
    expect(h.writes.lastError).toMatch(/budget/);
    // The other pages' channel said so (a hint; polled, no time asserted).
    for (let i = 0; i < 100 && !heard.some((e) => e.type === 'failed'); i++) await new Promise((res) => setTimeout(res, 10));
    expect(heard.find((e) => e.type === 'failed')).toMatchObject({ keys: [r.newStateKey] });
    stop();
    // A durable call is told itself, with the write's own error; flush() does not report it again.
    await expect(sc.infer({ stateKey: a.stateKey, deltaTokens: ids(20, 14), maxNewTokens: 2 }, { durable: true })).rejects.toMatchObject({
      name: 'QuotaExceeded',
    });
    expect(await sc.flush()).toEqual({ stored: 0 });
    expect(await snapshot(sc.store)).toEqual(before);
  });

  it('a state continued from a parent whose write failed is written whole', async () => {
    const sc = await loaded();
    const a = await sc.createState({ tokens: ids(40, 15) });
    await sc.flush();
    sc.store.holdWrites(true);
    const p = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(5, 16), maxNewTokens: 3 }); // 48 tokens: its third block is new
    const child = await sc.infer({ stateKey: p.newStateKey, deltaTokens: ids(10, 17), maxNewTokens: 2 });
    // The parent's transaction is cut off after its first request.
    sc.store.faultAfterRequests(1);
    sc.store.holdWrites(false);
    await expect(sc.flush()).rejects.toMatchObject({ name: 'StateNotStored', details: { keys: [p.newStateKey] } });
    const m = (await sc.store.getManifest(child.newStateKey))!;
    expect(m.blocks.length).toBe(Math.ceil(m.tokens.length / 16));
    expect((await sc.verifyState({ stateKey: child.newStateKey })).ok).toBe(true);
    const au = await audit(sc.store);
    expect(au).toMatchObject({ orphans: [], missing: [], badDigest: [] });
    await sc.store.dropHot();
    const r = await sc.infer({ stateKey: child.newStateKey, maxNewTokens: 4 });
    expect(r.tier).toBe('stored');
    expect(r.outputTokens).toEqual(await plain(sc, m.tokens, 4));
  });

  it('a queued state stays in memory until it lands, however small the hot tier', async () => {
    const sc = await loaded({ hotBytes: 1 });
    const a = await sc.createState({ tokens: ids(30, 18) });
    sc.store.holdWrites(true);
    const r = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(4, 19), maxNewTokens: 2 });
    expect(sc.store.hot.size).toBe(0);
    const next = await sc.infer({ stateKey: r.newStateKey, maxNewTokens: 1 });
    expect(next.tier).toBe('hot');
    sc.store.holdWrites(false);
    await sc.flush();
    // Landed: now only IndexedDB has it (the hot tier holds nothing this big).
    expect((await sc.getState({ stateKey: r.newStateKey })).tier).toBe('stored');
  });
});

describe('a crash before a queued write lands (the statecart worker closed with writes queued)', () => {
  /** A base and one queued continuation; the store as a later page opens it. */
  async function scenario(cut: (sc: LocalStatecart) => Promise<void>) {
    const sc = await loaded();
    const base = await sc.createState({ tokens: ids(70, 20) });
    const kept = await sc.infer({ stateKey: base.stateKey, deltaTokens: ids(3, 21), maxNewTokens: 1 });
    await sc.flush();
    const durable = await sc.infer({ stateKey: base.stateKey, deltaTokens: ids(6, 22), maxNewTokens: 1 }, { durable: true });
    const before = await snapshot(sc.store);
    sc.store.holdWrites(true);
    const r = await sc.infer({ stateKey: kept.newStateKey, deltaTokens: ids(30, 23), maxNewTokens: 4 });
    await cut(sc);
    // A later page: a new connection, the open-time check first. (The crashed store's memory is gone with it.)
    const store = new StateStore({ dbName: sc.store.dbName });
    const report = await store.ready;
    const au = await audit(store);
    const present = (await store.getManifest(r.newStateKey)) !== undefined;
    return { report, au, present, before, after: await snapshot(store), keys: [base.stateKey, kept.newStateKey, durable.newStateKey], r, store };
  }

  it('a write never started, or cut off after any of its IndexedDB requests: the state is absent or whole, never partial; what flush() or durable stored survives', async () => {
    // How many requests the queued write makes when nothing goes wrong.
    const total = await requestsOfCleanWrite();
    expect(total).toBeGreaterThan(5);
    const tally = { tried: 0, absent: 0, whole: 0 };
    // 0: the worker closed before the write started (the write stays held forever).
    for (let k = 0; k <= total; k++) {
      const s = await scenario(async (sc) => {
        if (k === 0) return;
        sc.store.faultAfterRequests(k);
        sc.store.holdWrites(false);
        await sc.flush().catch(() => undefined);
      });
      tally.tried++;
      expect(s.report.orphanBlobs, `cut after request ${k}`).toBe(0);
      expect(s.report.damaged).toBe(0);
      expect(s.au).toMatchObject({ orphans: [], missing: [], badDigest: [] });
      if (s.present) {
        tally.whole++;
        expect((await s.store.verify(s.r.newStateKey)).ok).toBe(true);
      } else {
        tally.absent++;
        expect(s.after, `cut after request ${k}: the store changed though the state is absent`).toEqual(s.before);
      }
      // What was stored before (flushed, durable) reads back whole.
      for (const key of s.keys) expect((await s.store.verify(key)).ok).toBe(true);
      s.store.close();
    }
    console.log(
      `[write-behind] queued write cut off: ${tally.tried} points (0 = never started, then after each of its ${total} requests): absent ${tally.absent}, whole ${tally.whole}, partial 0, orphans 0`,
    );
    expect(tally.tried).toBe(total + 1);
    // An abort before the commit, at every point.
    expect(tally.absent).toBe(total + 1);
  });

  /** The request count of the scenario's queued write, landing normally (and then present). */
  async function requestsOfCleanWrite(): Promise<number> {
    let requests = 0;
    const s = await scenario(async (sc) => {
      sc.store.holdWrites(false);
      await sc.flush();
      requests = sc.store.stats().lastWriteRequests;
    });
    expect(s.present).toBe(true);
    s.store.close();
    return requests;
  }
});
