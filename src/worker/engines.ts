import { RemoteStateStore, RemoteTier } from '../engine/remote.ts';
import { remoteBase } from '../formats/remote-layout.ts';
import { LocalStatecart } from '../engine/statecart.ts';
import type { LoadModelRequest, ModelInfo } from '../engine/api.ts';
import { BrowserModelHost, type InitOptions } from './host.ts';

/** One engine: a store (with the remote tier behind it), its model, and how many pages use it. */
export interface EngineSlot {
  readonly id: number;
  /** The settings that make two pages' engines the same one (see settingsKey). */
  readonly settings: string;
  readonly sc: LocalStatecart;
  readonly store: RemoteStateStore;
  users: number;
  /** The model loaded, or being loaded, here (its id, and dtype when one was asked for). */
  modelId: string | null;
  /** A load in progress: a second page asking for the same model waits for it instead of loading it again. */
  loading: Promise<ModelInfo> | null;
}

/**
 * What decides whether two pages can share an engine: the same database, the
 * same model files and runtime, the same device choice. The budget and the
 * remotes are settings of the one engine (the last page to set them wins).
 */
export function settingsKey(o: InitOptions): string {
  return JSON.stringify([o.dbName ?? 'statecart', o.modelsBase, o.ortBase ?? null, o.hubUrl ?? null, o.device ?? 'auto', o.numThreads ?? null]);
}

/** Which model an engine holds: its id and, for Hub models, the dtype asked for (another dtype is another model). */
function modelKey(req: LoadModelRequest): string {
  return req.dtype ? `${req.model}#${req.dtype}` : req.model;
}

/**
 * The engines of one worker. A dedicated worker holds one; a shared worker
 * (one per origin) holds one per set of settings and model, and every tab
 * that asks for the same ones gets the same engine: one model load, one hot
 * tier. A page asking for another model than the engine it shares holds gets
 * an engine of its own (models are not swapped under another page's feet).
 */
export class Engines {
  private readonly slots: EngineSlot[] = [];
  private opening = new Map<string, Promise<EngineSlot>>();
  private next = 1;

  get size(): number {
    return this.slots.length;
  }

  /** The engine a page with these settings starts on (made when there is none), with the page's budget and remotes applied. */
  async open(o: InitOptions): Promise<EngineSlot> {
    const key = settingsKey(o);
    const slot = this.slots.find((s) => s.settings === key) ?? (await this.make(key, o, true));
    slot.users++;
    if (o.budgetBytes !== undefined && o.budgetBytes !== slot.store.budgetBytes) await slot.store.setBudget(o.budgetBytes);
    if (o.remotes !== undefined) setRemotes(slot, o.remotes, o.remoteTimeoutMs);
    return slot;
  }

  /**
   * The engine to run `loadModel(req)` on for a page now on `current`: the
   * same one when it holds no model or this model, else one that does (or a
   * new one). The page's use moves with it.
   */
  async forModel(current: EngineSlot, req: LoadModelRequest, o: InitOptions): Promise<EngineSlot> {
    const want = modelKey(req);
    if (current.modelId === null || current.modelId === want) {
      current.modelId = want;
      return current;
    }
    const same = (s: EngineSlot) => s.settings === current.settings;
    let slot = this.slots.find((s) => same(s) && s.modelId === want) ?? this.slots.find((s) => same(s) && s.modelId === null);
    slot ??= await this.make(current.settings, o, false);
    slot.modelId = want;
    slot.users++;
    if (current.store.remote) slot.store.remote = current.store.remote;
    this.release(current);
    return slot;
  }

  /**
   * Loads a model on an engine, one load at a time: a page asking for the
   * model another page is loading waits, then finds it loaded (no second load).
   */
  async load(slot: EngineSlot, run: () => Promise<ModelInfo>): Promise<ModelInfo> {
    while (slot.loading) await slot.loading.catch(() => undefined);
    const p = run();
    slot.loading = p;
    try {
      return await p;
    } finally {
      if (slot.loading === p) slot.loading = null;
    }
  }

  /** A page stopped using an engine; the last one out closes it (store connection and model). */
  release(slot: EngineSlot): void {
    slot.users = Math.max(0, slot.users - 1);
    if (slot.users > 0) return;
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    slot.store.close();
    void slot.sc.model?.dispose().catch(() => undefined);
  }

  private async make(key: string, o: InitOptions, shareOpening: boolean): Promise<EngineSlot> {
    // Two pages starting at once would otherwise open two engines for the same settings.
    const pending = shareOpening ? this.opening.get(key) : undefined;
    if (pending) return pending;
    const p = (async () => {
      const store = new RemoteStateStore({ dbName: o.dbName, hotBytes: o.hotBytes, budgetBytes: o.budgetBytes ?? null });
      // The open-time check (orphans, damaged states) runs before any request.
      await store.ready;
      const sc = new LocalStatecart(store, new BrowserModelHost(o));
      store.currentModel = () => sc.model;
      const slot: EngineSlot = { id: this.next++, settings: key, sc, store, users: 0, modelId: null, loading: null };
      this.slots.push(slot);
      return slot;
    })();
    if (shareOpening) this.opening.set(key, p);
    try {
      return await p;
    } finally {
      if (shareOpening) this.opening.delete(key);
    }
  }
}

/** Replaces an engine's remotes (an empty list: none). */
export function setRemotes(slot: EngineSlot, remotes: string[], timeoutMs?: number): void {
  const cur = slot.store.remote;
  const want = [...new Set(remotes.map((r) => remoteBase(r)))];
  if (cur && cur.remotes.join('\n') === want.join('\n') && cur.timeoutMs === (timeoutMs ?? cur.timeoutMs)) return;
  slot.store.remote = remotes.length ? new RemoteTier({ remotes, ...(timeoutMs ? { timeoutMs } : {}) }) : null;
}
