import type { UseStore } from 'idb-keyval';
import { InvalidInput } from '../core/errors.ts';
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
import { TextIndex, type StoredText } from './text-index.ts';

export type { Tier } from './read.ts';
export type { EvictResult, RepairReport, Usage } from './maintenance.ts';
export type { PutInput, PutResult } from './write.ts';
export type { StoredText } from './text-index.ts';
export { CODEC_PREFERENCE } from './read.ts';

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
  private readonly texts = new TextIndex();

  constructor(opts: StoreOptions = {}) {
    this.dbName = opts.dbName ?? 'statecart';
    this.useFlushMs = opts.useFlushMs ?? 1000;
    this.hot = new HotCache(opts.hotBytes ?? 256 * 1024 * 1024);
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
      channel: this.channel,
      usePending: new Map(),
      hitsPending: new Map(),
      noteUse: (key) => this.noteUse(key),
      budgetBytes: checkBudget(opts.budgetBytes ?? null),
      fault: null,
      counters: { blobReads: 0, lastWriteRequests: 0, damageDetected: 0 },
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
  storedTexts(): Promise<StoredText[]> {
    return this.texts.all(this.core);
  }

  /** The longest of these keys held in the hot tier (its index), or -1. */
  longestHot(keys: string[]): number {
    for (let i = keys.length - 1; i >= 0; i--) if (this.hot.has(keys[i]!)) return i;
    return -1;
  }

  tierOf(key: string): read.Tier {
    return this.hot.has(key) ? 'hot' : 'stored';
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

  verify(key: string) {
    return read.verify(this.core, key);
  }

  // ------------------------------------------------------------ writing

  /** Stores a state (and its receipt) in one transaction; see src/store/write.ts. */
  async putState(input: PutRequest): Promise<write.PutResult> {
    // Eviction inside the write ranks states by their hits: count the recent ones.
    if (this.core.hitsPending.size) await this.flushUse();
    const codec = input.codec ?? (this.policy.codec !== 'auto' ? this.policy.codec : await this.chooser!(input.state, this.policy, input.modelId));
    const r = await write.putState(this.core, { ...input, codec });
    this.texts.set(r.manifest);
    return r;
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

  async list(): Promise<Manifest[]> {
    const ms = await maintenance.list(this.core);
    for (const m of ms) this.texts.note(m);
    return ms;
  }

  usage(): Promise<maintenance.Usage> {
    return maintenance.usage(this.core);
  }

  setPinned(key: string, pinned: boolean): Promise<void> {
    return maintenance.setPinned(this.core, key, pinned);
  }

  delete(key: string): Promise<{ blobsFreed: number; bytesFreed: number }> {
    this.texts.forget(key);
    return maintenance.remove(this.core, key);
  }

  async evict(opts: { targetBytes: number }): Promise<maintenance.EvictResult> {
    if (this.core.hitsPending.size) await this.flushUse();
    return maintenance.evict(this.core, opts);
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

  /** Runs the open-time check again. */
  repair(): Promise<maintenance.RepairReport> {
    return maintenance.repair(this.core.db);
  }

  clear(): Promise<void> {
    return maintenance.clear(this.core);
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
  stats(): { statesHot: number; bytesHot: number; blobReads: number; damageDetected: number; lastWriteRequests: number } {
    const c = this.core.counters;
    return {
      statesHot: this.hot.size,
      bytesHot: this.hot.bytes,
      blobReads: c.blobReads,
      damageDetected: c.damageDetected,
      lastWriteRequests: c.lastWriteRequests,
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
