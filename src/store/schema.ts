import { promisifyRequest, type UseStore } from 'idb-keyval';
import { StatecartError } from '../core/errors.ts';

/**
 * The IndexedDB schema, versioned, so that a change reaches every tab through
 * IndexedDB's own upgrade protocol instead of each tab guessing.
 *
 * v1 (idb-keyval's createStore, opened without a version): one object store
 *    `kv` with `m:<stateKey>` manifests and `b:<blockKey>` blobs.
 * v2: adds `use` (state key → last-use time in ms). Reads record their use
 *    there, in batches, so that least-recent eviction does not rewrite whole
 *    manifests on every read; a transaction on `use` alone never waits on a
 *    large blob write in `kv`. The upgrade copies each manifest's lastUsed.
 */
export const DB_VERSION = 2;
export const KV = 'kv';
export const USE = 'use';

export interface Database {
  /** The `kv` object store in idb-keyval's shape, so code written against createStore is unchanged. */
  idb: UseStore;
  /** A transaction over several object stores (eviction touches `kv` and `use` at once). */
  tx<T>(stores: string[], mode: IDBTransactionMode, cb: (tx: IDBTransaction) => T | PromiseLike<T>): Promise<T>;
  close(): void;
}

export function openDatabase(name: string): Database {
  let dbp: Promise<IDBDatabase> | null = null;
  const get = (): Promise<IDBDatabase> => {
    if (dbp) return dbp;
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = (ev) => upgrade(req.result, req.transaction!, ev.oldVersion);
    // Another tab still holds an older connection and ignores versionchange
    // (a tab running v1 code): the open waits until that tab closes.
    req.onblocked = () => console.warn(`statecart: upgrading database "${name}" to v${DB_VERSION} waits until other tabs of this site close it`);
    const p = promisifyRequest(req).then(
      (db) => {
        // Let a newer tab upgrade: close, and reopen on the next call.
        const drop = () => {
          if (dbp === p) dbp = null;
        };
        db.onversionchange = () => {
          db.close();
          drop();
        };
        db.onclose = drop;
        return db;
      },
      (e: unknown) => {
        dbp = null;
        if ((e as { name?: string })?.name === 'VersionError') {
          throw new StatecartError(
            `The statecart database "${name}" was upgraded by a newer version of statecart in another tab (this page knows schema v${DB_VERSION}). Reload this page.`,
          );
        }
        throw e;
      },
    );
    dbp = p;
    return p;
  };
  return {
    idb: (mode, cb) => get().then((db) => cb(db.transaction(KV, mode).objectStore(KV))),
    tx: (stores, mode, cb) => get().then((db) => cb(db.transaction(stores, mode))),
    close: () => {
      void dbp?.then(
        (db) => db.close(),
        () => undefined,
      );
      dbp = null;
    },
  };
}

function upgrade(db: IDBDatabase, tx: IDBTransaction, oldVersion: number): void {
  if (oldVersion < 1) db.createObjectStore(KV);
  if (oldVersion < 2) {
    const use = db.createObjectStore(USE);
    if (oldVersion >= 1) {
      // Runs inside the versionchange transaction: no other tab sees v2 until it is done.
      const cur = tx.objectStore(KV).openCursor(IDBKeyRange.bound('m:', 'm:\uffff'));
      cur.onsuccess = () => {
        const c = cur.result;
        if (!c) return;
        const m = c.value as { key?: string; lastUsed?: number };
        if (typeof m?.key === 'string' && typeof m.lastUsed === 'number') use.put(m.lastUsed, m.key);
        c.continue();
      };
    }
  }
}

/** Last-use times from the `use` store of a transaction that covers it. */
export async function readUse(tx: IDBTransaction): Promise<Map<string, number>> {
  const u = tx.objectStore(USE);
  const [ks, vs] = await Promise.all([promisifyRequest(u.getAllKeys()), promisifyRequest(u.getAll() as IDBRequest<number[]>)]);
  const out = new Map<string, number>();
  ks.forEach((k, i) => out.set(String(k), vs[i]!));
  return out;
}
