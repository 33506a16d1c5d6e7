/**
 * Fault injection for write transactions (tests only): counts the IndexedDB
 * requests a write makes and, after the n-th one has succeeded, runs an
 * action — abort the transaction (what a crash does to an uncommitted one),
 * or close the worker outright (the browser test). A test sweeps n over every
 * request of a write and checks that the store holds the state whole or not
 * at all.
 */
export interface WriteFault {
  afterRequests: number;
  /** Default: abort the transaction. */
  action?: (tx: IDBTransaction) => void;
}

const REQUESTS = new Set(['get', 'getKey', 'getAll', 'getAllKeys', 'put', 'add', 'delete', 'clear', 'count', 'openCursor', 'openKeyCursor']);

export function safeAbort(tx: IDBTransaction): void {
  try {
    tx.abort();
  } catch {
    /* already committed or aborted */
  }
}

/** An object store that counts its requests' successes and fires `fault` after the n-th. */
export function countingStore(s: IDBObjectStore, counter: { n: number }, fault: WriteFault | null): IDBObjectStore {
  return new Proxy(s, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target) as unknown;
      if (typeof v !== 'function') return v;
      if (typeof prop !== 'string' || !REQUESTS.has(prop)) return (v as (...a: unknown[]) => unknown).bind(target);
      return (...args: unknown[]) => {
        const req = (v as (...a: unknown[]) => IDBRequest).apply(target, args);
        // Registered before the caller's handlers, so the fault lands between
        // this request's success and whatever the writer does next.
        req.addEventListener('success', () => {
          counter.n++;
          if (fault && counter.n === fault.afterRequests) (fault.action ?? safeAbort)(target.transaction);
        });
        return req;
      };
    },
  });
}
