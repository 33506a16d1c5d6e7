import 'fake-indexeddb/auto';
import { describe, it, expect } from 'vitest';
import { createStore, promisifyRequest } from 'idb-keyval';
import { StateStore } from '../../src/store/store.ts';
import { DB_VERSION } from '../../src/store/schema.ts';
import { audit, maxDiff, putSynthetic, syntheticState, tokensFor } from './support/synthetic-state.ts';
import { snapshot } from './support/idb-snapshot.ts';

let n = 0;

describe('schema versions', () => {
  it('upgrades a v1 database (idb-keyval createStore, one `kv` store) to v2 with every record intact', async () => {
    // The records a v1 store wrote: made here by the current writer, then
    // copied into a database opened exactly as v1 code opened it.
    const src = new StateStore({ dbName: `schema-src-${process.pid}-${++n}` });
    const states = [tokensFor(1, 40), tokensFor(1, 70), tokensFor(2, 9)];
    for (const t of states) await putSynthetic(src, t);
    await src.setPinned((await src.list())[0]!.key, true);
    const [keys, values] = await src.idb('readonly', (s) => Promise.all([promisifyRequest(s.getAllKeys()), promisifyRequest(s.getAll())]));
    const name = `schema-v1-${process.pid}-${++n}`;
    const v1 = createStore(name, 'kv');
    await v1('readwrite', (s) => {
      keys.forEach((k, i) => s.put(values[i], k));
      return promisifyRequest(s.transaction);
    });
    const version = await v1('readonly', (s) => s.transaction.db.version);
    expect(version).toBe(1);
    const lastUsed = new Map((values.filter((v) => (v as { key?: string }).key) as { key: string; lastUsed: number }[]).map((m) => [m.key, m.lastUsed]));
    // A v1 page closes its connection (or the upgrade waits for it).
    await v1('readonly', (s) => s.transaction.db.close());

    const store = new StateStore({ dbName: name });
    const report = await store.ready;
    expect(report).toMatchObject({ states: 3, orphanBlobs: 0, damaged: 0 });
    const upgraded = await store.idb('readonly', (s) => s.transaction.db);
    expect(upgraded.version).toBe(DB_VERSION);
    expect([...upgraded.objectStoreNames].sort()).toEqual(['kv', 'use']);
    // Every v1 record, byte for byte.
    const before = await snapshot(src);
    expect(await snapshot(store)).toEqual(before);
    // The upgrade copied each state's last use into `use`.
    const use = await store.db.tx(['use'], 'readonly', (tx) =>
      Promise.all([promisifyRequest(tx.objectStore('use').getAllKeys()), promisifyRequest(tx.objectStore('use').getAll())]),
    );
    expect(new Map(use[0].map((k, i) => [String(k), use[1][i] as number]))).toEqual(lastUsed);
    for (const t of states) {
      const m = await putSynthetic(new StateStore({ dbName: `scratch-${process.pid}-${++n}` }), t);
      const { state } = await store.getState(m.key);
      expect(maxDiff(state, syntheticState(t))).toBe(0);
    }
    expect((await store.list()).filter((m) => m.pinned).length).toBe(1);
    expect((await audit(store)).orphans).toEqual([]);
    // v1 code (idb-keyval without a version) still opens and reads the v2 database.
    const old = createStore(name, 'kv');
    const k0 = (await store.list())[0]!.key;
    const m0 = (await old('readonly', (s) => promisifyRequest(s.get('m:' + k0)))) as { key?: string } | undefined;
    expect(m0?.key).toBe(k0);
    const count = await old('readonly', (s) => promisifyRequest(s.count()));
    expect(count).toBe(keys.length);
    await old('readonly', (s) => s.transaction.db.close());
    store.close();
    src.close();
  });

  it('a page holding v2 steps aside when a newer schema opens, and then says to reload', async () => {
    const name = `schema-next-${process.pid}-${++n}`;
    const store = new StateStore({ dbName: name });
    await putSynthetic(store, tokensFor(3, 20));
    // Another tab with newer code upgrades to v3.
    const req = indexedDB.open(name, DB_VERSION + 1);
    req.onupgradeneeded = () => req.result.createObjectStore('v3-extra');
    const db3 = await promisifyRequest(req);
    expect(db3.version).toBe(DB_VERSION + 1);
    db3.close();
    const err = await store.list().catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/newer version of statecart.*Reload this page/);
  });
});
