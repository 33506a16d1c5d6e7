import { createHash } from 'node:crypto';
import type { StateStore } from '../../../src/store/store.ts';

/** Every key and value of a store's IndexedDB, values as stable text (blob bytes hashed). */
export async function snapshot(store: StateStore): Promise<Map<string, string>> {
  const [keys, values] = await store.idb('readonly', (s) =>
    Promise.all([
      new Promise<IDBValidKey[]>((r, j) => {
        const q = s.getAllKeys();
        q.onsuccess = () => r(q.result);
        q.onerror = () => j(q.error);
      }),
      new Promise<unknown[]>((r, j) => {
        const q = s.getAll();
        q.onsuccess = () => r(q.result);
        q.onerror = () => j(q.error);
      }),
    ]),
  );
  const out = new Map<string, string>();
  keys.forEach((k, i) => out.set(String(k), stable(values[i])));
  return out;
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x) =>
    x instanceof ArrayBuffer ? 'bytes:' + createHash('sha256').update(new Uint8Array(x)).digest('hex') + ':' + x.byteLength : x,
  );
}

/** Blob records (key → stored byte length). */
export async function blobSizes(store: StateStore): Promise<Map<string, number>> {
  const snap = await store.idb(
    'readonly',
    (s) =>
      new Promise<{ k: IDBValidKey[]; v: { data: ArrayBuffer }[] }>((r) => {
        const range = IDBKeyRange.bound('b:', 'b:\uffff');
        const q1 = s.getAllKeys(range);
        q1.onsuccess = () => {
          const q2 = s.getAll(range);
          q2.onsuccess = () => r({ k: q1.result, v: q2.result });
        };
      }),
  );
  const m = new Map<string, number>();
  snap.k.forEach((k, i) => m.set(String(k), snap.v[i]!.data.byteLength));
  return m;
}
