/// <reference lib="webworker" />
// A worker that holds only the store (no model), for sweeping a crash over
// every IndexedDB request of a write: it closes itself after the n-th one.
import { StateStore } from '../../../src/store/store.ts';
import { putSynthetic } from '../../unit/support/synthetic-state.ts';

self.onmessage = async (ev: MessageEvent) => {
  const { dbName, prefixes, long, faultAfter } = ev.data as { dbName: string; prefixes: number[][]; long: number[]; faultAfter: number | null };
  try {
    const store = new StateStore({ dbName });
    if (ev.data.setup) {
      await store.clear();
      for (const p of prefixes) await putSynthetic(store, p);
      store.close();
      self.postMessage({ type: 'ready' });
      return;
    }
    await store.ready;
    if (faultAfter !== null) {
      store.faultAfterRequests(faultAfter, () => {
        // The page learns that the worker is gone from this last message.
        self.postMessage({ type: 'closing', at: faultAfter });
        self.close();
      });
    }
    await putSynthetic(store, long);
    self.postMessage({ type: 'done', requests: store.stats().lastWriteRequests });
  } catch (e) {
    self.postMessage({ type: 'error', name: (e as Error).name, message: (e as Error).message });
  }
};
