/**
 * Tells the other pages and workers of this origin what changed in a store.
 * Messages are hints, never the truth: every read checks IndexedDB, so a lost
 * or late message can only leave a page showing an old list, never serve a
 * state that is gone. Receivers drop hot copies of deleted states and refresh
 * their views.
 */
const CHANNEL = 'statecart';

export type StoreEvent =
  /** States landed in IndexedDB (a write-behind state: when its write landed, not when its call returned). */
  | { type: 'put'; db: string; keys: string[]; from: string }
  /** A queued write failed: these states, which their calls returned, were not stored. */
  | { type: 'failed'; db: string; keys: string[]; reason: string; from: string }
  | { type: 'deleted'; db: string; keys: string[]; reason: 'delete' | 'evict' | 'clear'; from: string }
  | { type: 'damaged'; db: string; keys: string[]; from: string };

type Payload = StoreEvent extends infer E ? (E extends StoreEvent ? Omit<E, 'db' | 'from'> : never) : never;

export class StoreChannel {
  /** Identifies this end, so that a listener can tell its own messages from others'. */
  readonly id = Math.random().toString(36).slice(2);
  private ch: BroadcastChannel | null;
  private listeners = new Set<(e: StoreEvent) => void>();
  received = 0;

  constructor(readonly db: string) {
    this.ch = typeof BroadcastChannel === 'function' ? new BroadcastChannel(CHANNEL) : null;
    // Node's channel would keep a test process alive.
    (this.ch as unknown as { unref?: () => void } | null)?.unref?.();
    if (this.ch) {
      this.ch.onmessage = (ev: MessageEvent) => {
        const e = ev.data as StoreEvent;
        if (!e || e.db !== this.db || e.from === this.id) return;
        this.received++;
        for (const l of this.listeners) l(e);
      };
    }
  }

  post(p: Payload): void {
    if (!this.ch || p.keys.length === 0) return;
    try {
      this.ch.postMessage({ ...p, db: this.db, from: this.id });
    } catch {
      /* a closed channel: others will see the change on their next read */
    }
  }

  on(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    this.ch?.close();
    this.ch = null;
  }
}

/** Listens to a store's changes from any page or worker of this origin (the library's onStoreChange). */
export function listenStore(db: string, fn: (e: StoreEvent) => void): () => void {
  if (typeof BroadcastChannel !== 'function') return () => undefined;
  const ch = new BroadcastChannel(CHANNEL);
  ch.onmessage = (ev: MessageEvent) => {
    const e = ev.data as StoreEvent;
    if (e && e.db === db) fn(e);
  };
  return () => ch.close();
}
