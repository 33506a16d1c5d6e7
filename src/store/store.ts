import type { UseStore } from 'idb-keyval';
import { InvalidInput, StateNotStored } from '../core/errors.ts';
import type { KeyChain } from '../core/key-chain.ts';
import type { ModelState, TensorSpec } from '../core/state.ts';
import type { BlockCodec } from './blocks.ts';
import { StoreChannel } from './broadcast.ts';
import type { HotEntry, StoreCore } from './context.ts';
import type { WriteFault } from './fault.ts';
import { HotCache } from './hot-cache.ts';
import * as maintenance from './maintenance.ts';
import { isPersisted, originEstimate } from './quota.ts';
import * as read from './read.ts';
import type { CodecPolicy, Manifest } from './records.ts';
import { openDatabase, type Database } from './schema.ts';
import * as write from './write.ts';
import { WriteQueue, type WriteQueueStats } from './write-queue.ts';
import { TextIndex, type StoredText } from './text-index.ts';

export type { Tier } from './read.ts';
export type { EvictResult, RepairReport, Usage } from './maintenance.ts';
export type { PutInput, PutResult, QueuedPut } from './write.ts';
export type { WriteQueueStats } from './write-queue.ts';
export type { StoredText } from './text-index.ts';

export interface StoreOptions {
  dbName?: string;
  /** Byte budget of the in-memory tier of decoded states. */
  hotBytes?: number;
  /** Codec of new states (default fp32). 'auto' needs a chooser: see setCodecPolicy. */
  codec?: CodecPolicy;
  /** Most bytes of blobs the store may hold; older unpinned states are evicted to stay under it. */
  budgetBytes?: number | null;
  /** How long reads' last-use times wait before being written in one batch (ms). */
  useFlushMs?: number;
  /**
   * Most bytes of states held in memory while their writes are queued
   * (write-behind); a call that would queue more waits for the oldest write
   * to land. Default: the hot tier's budget, at least 64 MiB.
   */
  queueBytes?: number;
}

export interface StorageInfo {
  /** Unique blob bytes of this store. */
  storeBytes: number;
  budgetBytes: number | null;
  /** navigator.storage.estimate() for the whole origin, or null where unknown. */
  usage: number | null;
  quota: number | null;
  persisted: boolean | null;
}

/** Picks a codec for a state about to be stored (the 'auto' policy; it runs the model). */
export type CodecChooser = (state: ModelState, policy: CodecPolicy, modelId: string) => Promise<BlockCodec>;

/** What a write needs besides the codec, which the store's policy decides. */
export type PutRequest = Omit<write.PutInput, 'codec'> & { codec?: BlockCodec };

/**
 * The state store: IndexedDB (manifests and blobs, src/store/records.ts) and
 * a hot tier of decoded states in memory. Its jobs live in their own files —
 * reading and verifying (read.ts), writing (write.ts), keeping order
 * (maintenance.ts) — and share one StoreCore; this class holds that core and
 * the codec policy, and is the one object the engine talks to.
 */
export class StateStore {
  readonly dbName: string;
  readonly channel: StoreChannel;
  /** The check run on open: orphan blobs removed, manifests with missing blobs marked damaged. */
  readonly ready: Promise<maintenance.RepairReport>;
  /** The decoded states in memory (tests clear it to force reads from IndexedDB). */
  readonly hot: HotCache<HotEntry>;
  private readonly core: StoreCore;
  private policy: CodecPolicy = { codec: 'fp32' };
  private chooser: CodecChooser | undefined;
  private useTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly useFlushMs: number;
  private readonly queueBytes: number;
  private readonly texts = new TextIndex();

  constructor(opts: StoreOptions = {}) {
    this.dbName = opts.dbName ?? 'statecart';
    this.useFlushMs = opts.useFlushMs ?? 1000;
    this.hot = new HotCache(opts.hotBytes ?? 256 * 1024 * 1024);
    this.queueBytes = opts.queueBytes ?? Math.max(this.hot.budgetBytes, 64 * 1024 * 1024);
    this.channel = new StoreChannel(this.dbName);
    const db = openDatabase(this.dbName);
    this.ready = maintenance.repair(db);
    const ready = this.ready.catch(() => undefined);
    const core: StoreCore = {
      dbName: this.dbName,
      db,
      kv: ((mode, cb) => ready.then(() => core.db.idb(mode, cb))) as UseStore,
      tx: (stores, mode, cb) => ready.then(() => core.db.tx(stores, mode, cb)),
      hot: this.hot,
      queue: new WriteQueue(),
      channel: this.channel,
      usePending: new Map(),
      hitsPending: new Map(),
      noteUse: (key) => this.noteUse(key),
      budgetBytes: checkBudget(opts.budgetBytes ?? null),
      fault: null,
      counters: { blobReads: 0, lastWriteRequests: 0, lastBlocksPrepared: 0, damageDetected: 0 },
    };
    this.core = core;
    if (opts.codec) this.setCodecPolicy(opts.codec);
    // Another page deleted, evicted or found damaged these: drop the decoded copies held here.
    this.channel.on((e) => {
      if (e.type === 'deleted' || e.type === 'damaged') for (const k of e.keys) this.hot.delete(k);
      if (e.type === 'deleted' && e.reason === 'clear') this.hot.clear();
    });
  }

  // ------------------------------------------------------------ reading

  /** A state's manifest: from the hot tier (no read) or IndexedDB (one read). */
  async lookup(key: string): Promise<{ manifest: Manifest; hot: boolean } | undefined> {
    const r = await read.lookup(this.core, key);
    this.texts.note(r?.manifest);
    return r;
  }

  async getManifest(key: string): Promise<Manifest | undefined> {
    return (await this.lookup(key))?.manifest;
  }

  /** Manifests for many keys in one transaction. */
  async getManifests(keys: string[]): Promise<(Manifest | undefined)[]> {
    const ms = await read.getManifests(this.core, keys);
    for (const m of ms) this.texts.note(m);
    return ms;
  }

  /** The token ids of every stored state (kept in memory; reads only manifests this store has not seen). */
  async storedTexts(): Promise<StoredText[]> {
    const stored = await this.texts.all(this.core);
    // States whose writes are queued are served like stored ones: they count too.
    const have = new Set(stored.map((t) => t.key));
    for (const m of this.queued())
      if (!have.has(m.key)) stored.push({ key: m.key, modelId: m.modelId, modelFp: m.modelFp, tokens: Uint32Array.from(m.tokens) });
    return stored;
  }

  /** The longest of these keys held in memory (hot, or queued for writing), its index, or -1. */
  longestHot(keys: string[]): number {
    const q = this.core.queue;
    for (let i = keys.length - 1; i >= 0; i--) if (q.has(keys[i]!) || this.hot.has(keys[i]!)) return i;
    return -1;
  }

  /** 'queued': in memory, its write queued and not landed yet; 'hot': stored and in memory; 'stored': in IndexedDB only. */
  tierOf(key: string): read.Tier | 'queued' {
    return this.core.queue.has(key) ? 'queued' : this.hot.has(key) ? 'hot' : 'stored';
  }

  /** The state of a manifest the caller holds: hot, or read and checked. */
  restore(manifest: Manifest): Promise<{ state: ModelState; tier: read.Tier; manifest: Manifest }> {
    return read.restore(this.core, manifest);
  }

  getState(key: string): Promise<{ state: ModelState; tier: read.Tier; manifest: Manifest }> {
    return read.getState(this.core, key);
  }

  /** Full blocks of the chain stored from the start (in any codec), checking from block `from` up to `to`. */
  storedBlockRun(chain: KeyChain, from: number, to: number): Promise<number> {
    return read.storedBlockRun(this.core, chain, from, to);
  }

  /** A sliceable state rebuilt from the chain's first `blocks` stored blocks. */
  restoreBlockPrefix(chain: KeyChain, blocks: number, specs: TensorSpec[]): Promise<ModelState | undefined> {
    return read.restoreBlockPrefix(this.core, chain, blocks, specs);
  }

  /** Checks a stored state's blobs (a state whose write is queued is checked once it has landed). */
  async verify(key: string) {
    await this.core.queue.landing(key)?.catch(() => undefined);
    return read.verify(this.core, key);
  }

  // ------------------------------------------------------------ writing

  /**
   * Stores a state (and its receipt) in one transaction, after every write
   * queued before it, and resolves once it has landed; see src/store/write.ts.
   */
  async putState(input: PutRequest): Promise<write.PutResult> {
    // Eviction inside the write ranks states by their hits: count the recent ones.
    if (this.core.hitsPending.size) await this.flushUse();
    const r = await write.putState(this.core, { ...input, codec: await this.codecFor(input) });
    this.texts.set(r.manifest);
    return r;
  }

  /**
   * Write-behind: resolves once the state is held in memory (lookups find
   * it) and its write is queued; `landed()` waits for the write. Only what
   * the state adds to its parent is cut, hashed and encoded before this
   * resolves; the transaction runs behind. A failed write is reported to
   * whoever waits on landed(), else to the next flush() (and to other pages,
   * as a 'failed' store event).
   */
  async queueState(input: PutRequest): Promise<write.QueuedPut> {
    // Eviction inside the write ranks states by their hits: the recent ones are
    // counted just before it, in the queue (not on the caller's path).
    if (this.core.hitsPending.size) this.core.queue.run(() => this.flushUse()).catch(() => undefined);
    return write.queueState(this.core, { ...input, codec: await this.codecFor(input) }, { behind: true, maxQueuedBytes: this.queueBytes });
  }

  private async codecFor(input: PutRequest): Promise<BlockCodec> {
    return input.codec ?? (this.policy.codec !== 'auto' ? this.policy.codec : await this.chooser!(input.state, this.policy, input.modelId));
  }

  /**
   * Waits for every write queued so far. Rejects with StateNotStored if a
   * queued write failed and no caller was told yet (each failure is reported
   * once); resolves with how many queued writes landed while it waited.
   */
  async flush(): Promise<{ stored: number }> {
    const before = this.core.queue.stats().landed;
    await this.core.queue.settled();
    const failed = this.core.queue.takeFailures();
    if (failed.length) {
      const first = failed[0]!.error;
      throw new StateNotStored({ keys: failed.map((f) => f.key), reason: first.message, cause: first.name });
    }
    return { stored: this.core.queue.stats().landed - before };
  }

  /** Resolves once every write queued so far has landed or failed (reports nothing). */
  settled(): Promise<void> {
    return this.core.queue.settled();
  }

  /** The states whose writes are queued and have not landed, newest entry per key. */
  queued(): Manifest[] {
    return this.core.queue.entries().map((e) => e.manifest);
  }

  /** Tests: lets queued writes land, then empties the hot tier, so that the next read comes from IndexedDB. */
  async dropHot(): Promise<void> {
    await this.core.queue.settled();
    this.hot.clear();
  }

  /**
   * The codec for states stored from now on; stored states keep theirs.
   * 'auto' asks `chooser` (which measures quality by running the model, see
   * src/engine/codec-optimizer.ts) for every new state.
   */
  setCodecPolicy(policy: CodecPolicy, chooser?: CodecChooser): void {
    const ok = ['fp32', 'fp16', 'int8', 'kivi4', 'auto'];
    if (!policy || !ok.includes(policy.codec)) throw new InvalidInput(`codec policy: codec is one of ${ok.join(', ')}, got ${String(policy?.codec)}`);
    if (policy.codec === 'auto' && !chooser && !this.chooser) throw new InvalidInput("codec policy 'auto' needs a chooser that can run the model");
    this.policy = { codec: policy.codec, ...(policy.constraints ? { constraints: { ...policy.constraints } } : {}) };
    if (chooser) this.chooser = chooser;
  }

  getCodecPolicy(): CodecPolicy {
    return { ...this.policy };
  }

  // ------------------------------------------------------------ maintenance

  /** Every stored manifest, and (after them) the states whose writes are queued and not landed yet. */
  async list(): Promise<Manifest[]> {
    const ms = await maintenance.list(this.core);
    for (const m of ms) this.texts.note(m);
    const have = new Set(ms.map((m) => m.key));
    for (const m of this.queued()) if (!have.has(m.key)) ms.push(m);
    return ms;
  }

  usage(): Promise<maintenance.Usage> {
    return maintenance.usage(this.core);
  }

  // Maintenance writes take their turn in the write queue: a pin, delete,
  // eviction or clear asked after a state's write applies to what that write stored.

  setPinned(key: string, pinned: boolean): Promise<void> {
    return this.core.queue.run(() => maintenance.setPinned(this.core, key, pinned));
  }

  delete(key: string): Promise<{ blobsFreed: number; bytesFreed: number }> {
    this.texts.forget(key);
    return this.core.queue.run(() => maintenance.remove(this.core, key));
  }

  async evict(opts: { targetBytes: number }): Promise<maintenance.EvictResult> {
    return this.core.queue.run(async () => {
      if (this.core.hitsPending.size) await this.flushUse();
      return maintenance.evict(this.core, opts);
    });
  }

  /**
   * Counts a reuse of a stored state by a request (listStates shows it;
   * eviction keeps reused checkpoints). Written in a batch with last-use times.
   */
  noteHit(key: string): void {
    this.core.hitsPending.set(key, (this.core.hitsPending.get(key) ?? 0) + 1);
    this.scheduleFlush();
  }

  /** Hit counts of these states. */
  hits(keys: string[]): Promise<number[]> {
    return maintenance.hits(this.core, keys);
  }

  /** When eviction removed each of these names (state keys, or blocks' chain names); undefined where it did not. */
  evictedAt(names: string[]): Promise<(number | undefined)[]> {
    return maintenance.evictedAt(this.core, names);
  }

  /** Runs the open-time check again (after the writes queued before it). */
  repair(): Promise<maintenance.RepairReport> {
    return this.core.queue.run(() => maintenance.repair(this.core.db));
  }

  clear(): Promise<void> {
    return this.core.queue.run(() => maintenance.clear(this.core));
  }

  /** Marks a state as used now (eviction goes least-recent first). */
  async touch(key: string): Promise<void> {
    this.noteUse(key);
    await this.flushUse();
  }

  flushUse(): Promise<void> {
    return maintenance.flushUse(this.core);
  }

  get budgetBytes(): number | null {
    return this.core.budgetBytes;
  }

  /** Sets (or, with null, removes) the byte budget; evicts at once if the store is over it. */
  async setBudget(bytes: number | null): Promise<maintenance.EvictResult | null> {
    this.core.budgetBytes = checkBudget(bytes);
    if (this.core.budgetBytes === null) return null;
    return this.evict({ targetBytes: this.core.budgetBytes });
  }

  async storageInfo(): Promise<StorageInfo> {
    const [u, est, persisted] = await Promise.all([this.usage(), originEstimate(), isPersisted()]);
    return { storeBytes: u.bytes, budgetBytes: this.core.budgetBytes, usage: est?.usage ?? null, quota: est?.quota ?? null, persisted };
  }

  /** What this store has counted since it was opened (health(), tests). */
  stats(): {
    statesHot: number;
    bytesHot: number;
    blobReads: number;
    damageDetected: number;
    lastWriteRequests: number;
    lastBlocksPrepared: number;
    writes: WriteQueueStats;
  } {
    const c = this.core.counters;
    return {
      statesHot: this.hot.size,
      bytesHot: this.hot.bytes,
      blobReads: c.blobReads,
      damageDetected: c.damageDetected,
      lastWriteRequests: c.lastWriteRequests,
      lastBlocksPrepared: c.lastBlocksPrepared,
      writes: this.core.queue.stats(),
    };
  }

  // ------------------------------------------------------------ tests

  /** The versioned database (tests wrap it to inject IndexedDB errors). */
  get db(): Database {
    return this.core.db;
  }
  set db(d: Database) {
    this.core.db = d;
  }

  /** The `kv` object store in idb-keyval's shape (tests read and edit records with it). */
  get idb(): UseStore {
    return this.core.kv;
  }

  /**
   * Tests: the next write transaction runs `action` (default: abort) after its
   * n-th IndexedDB request has succeeded (src/store/fault.ts).
   */
  faultAfterRequests(n: number, action?: WriteFault['action']): void {
    if (!Number.isInteger(n) || n < 1) throw new InvalidInput('faultAfterRequests: n is a whole number ≥ 1');
    this.core.fault = { afterRequests: n, ...(action ? { action } : {}) };
  }

  /** Tests: holds queued writes before they start (a window between a call's return and its write), or lets them go. */
  holdWrites(on: boolean): void {
    this.core.queue.hold(on);
  }

  /** Stops listening to other pages and closes the database connection. */
  close(): void {
    if (this.useTimer) clearTimeout(this.useTimer);
    this.useTimer = null;
    this.channel.close();
    this.core.db.close();
  }

  /** Records a read; written in a batch later, in the small `use` store, so reads stay reads. */
  private noteUse(key: string): void {
    this.core.usePending.set(key, Date.now());
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.useTimer) return;
    this.useTimer = setTimeout(() => {
      this.useTimer = null;
      void this.flushUse().catch(() => undefined);
    }, this.useFlushMs);
  }
}

function checkBudget(b: number | null): number | null {
  if (b === null || b === undefined) return null;
  if (typeof b !== 'number' || !(b >= 0) || !Number.isFinite(b)) throw new InvalidInput('budgetBytes is a number of bytes ≥ 0, or null for none');
  return b;
}
