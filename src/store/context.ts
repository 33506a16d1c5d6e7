import type { UseStore } from 'idb-keyval';
import type { ModelState } from '../core/state.ts';
import type { StoreChannel } from './broadcast.ts';
import type { WriteFault } from './fault.ts';
import type { HotCache } from './hot-cache.ts';
import type { Manifest } from './records.ts';
import type { Database } from './schema.ts';
import type { WriteQueue } from './write-queue.ts';

/** A decoded state in memory, with the manifest it was read or written with. */
export interface HotEntry {
  state: ModelState;
  manifest: Manifest;
}

/**
 * What the store's parts (reading, writing, maintenance) share: one database
 * connection, the hot tier, the channel to other pages, the pending last-use
 * times and the counters tests and health() read. src/store/store.ts makes
 * one and hands it to each part.
 */
export interface StoreCore {
  readonly dbName: string;
  /** The versioned database; tests wrap it to inject IndexedDB errors. */
  db: Database;
  /** The `kv` object store, after the open-time check. */
  readonly kv: UseStore;
  /** A transaction over several object stores, after the open-time check. */
  tx<T>(stores: string[], mode: IDBTransactionMode, cb: (tx: IDBTransaction) => T | PromiseLike<T>): Promise<T>;
  readonly hot: HotCache<HotEntry>;
  /** The store's write order, and the states queued behind calls that have not landed (src/store/write-queue.ts). */
  readonly queue: WriteQueue;
  readonly channel: StoreChannel;
  /** Last-use times of reads not yet written (batched into the `use` store). */
  readonly usePending: Map<string, number>;
  /** Hits (reuses by a request) not yet added to the `use` store's counts. */
  readonly hitsPending: Map<string, number>;
  noteUse(key: string): void;
  budgetBytes: number | null;
  /** The next write transaction's injected fault (tests only). */
  fault: WriteFault | null;
  readonly counters: {
    /** IndexedDB reads of blobs, so tests and health() can see which tier served. */
    blobReads: number;
    /** Requests the last write transaction made (a fault-injection sweep goes over 1..this). */
    lastWriteRequests: number;
    /** Blocks the last write cut, encoded and hashed (the rest it took from its parent by reference). */
    lastBlocksPrepared: number;
    /** Corrupt or missing blobs found by reads since the store was opened. */
    damageDetected: number;
  };
}
