import { promisifyRequest, type UseStore } from 'idb-keyval';
import { digestOf } from '../core/sha256.ts';
import { CorruptBlob, InvalidInput, QuotaExceeded, StateNotFound, StatecartError } from '../core/errors.ts';
import { blockChain, keyOf } from '../core/state-key.ts';
import { bytesOf, toHex } from '../core/bytes.ts';
import type { ModelState } from '../models/types.ts';
import { cutBlocks, decodeBlock, encodeBlock, joinBlocks, stateBytes, tensorSpecs, type BlockCodec } from '../models/state-layout.ts';
import { HotCache } from './hot-cache.ts';
import type { BlockRecord, BlockRef, CodecPolicy, Manifest } from './manifest.ts';
import type { TensorSpec } from '../models/state-layout.ts';
import type { SignedReceipt } from '../core/receipts.ts';
import { canonicalize } from '../core/canonical-json.ts';
import { headOfBlock, repointTails, tailCandidates, type TailCandidate } from './shared-tails.ts';
import { KV, USE, openDatabase, type Database } from './schema.ts';
import { StoreChannel } from './broadcast.ts';
import { countingStore, safeAbort, type WriteFault } from './fault.ts';
import { isPersisted, lastUseOf, originEstimate, planEviction, roomUnderQuota, uniqueBytes } from './quota.ts';
import type { Damage } from './manifest.ts';

export type Tier = 'hot' | 'stored';

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

/** What the check run on open found and did. */
export interface RepairReport {
  states: number;
  blobs: number;
  /** Blobs no manifest named: deleted. */
  orphanBlobs: number;
  /** Manifests naming a missing blob: marked damaged (kept, so that they can be recomputed from their tokens). */
  damaged: number;
  /** Last-use records of states that no longer exist: deleted. */
  staleUse: number;
}

export interface EvictResult {
  evicted: string[];
  blobsFreed: number;
  bytesFreed: number;
  bytesBefore: number;
  bytesAfter: number;
  /** The store is now at or under the target (false when pinned states alone exceed it). */
  reached: boolean;
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
export type CodecChooser = (state: ModelState, input: PutInput, policy: CodecPolicy) => Promise<BlockCodec>;

/** Most precise first: when a block is stored under several codecs, the best one is read. */
export const CODEC_PREFERENCE: readonly BlockCodec[] = ['fp32', 'fp16', 'int8', 'kivi4'];

export interface PutInput {
  state: ModelState;
  modelId: string;
  modelFp: string;
  key: string;
  parent: string | null;
  receipt: string | null;
  receiptJson?: string;
  label?: string;
  /** Overrides the store's codec policy for this state. */
  codec?: BlockCodec;
  /** Cut and write every block, even those the parent names (the fallback when one went missing). */
  fullWrite?: boolean;
}

/** A block the parent names was not in the store at write time. */
class KnownBlockMissing extends Error {}

const M = 'm:'; // manifests
const B = 'b:'; // blobs

/**
 * IndexedDB holds two kinds of record in one object store, so that a state's
 * new blobs and its manifest commit in a single transaction: either the state
 * is there whole, or not at all.
 */
export class StateStore {
  /** The `kv` object store (idb-keyval's shape); waits for the open-time check. */
  readonly idb: UseStore;
  /** The versioned database (src/store/schema.ts). Tests wrap it to inject IndexedDB errors. */
  db: Database;
  readonly hot: HotCache<ModelState>;
  readonly dbName: string;
  /** Changes told to, and heard from, other pages of this origin. */
  readonly channel: StoreChannel;
  /** The check run on open: orphan blobs removed, manifests with missing blobs marked damaged. */
  readonly ready: Promise<RepairReport>;
  /** Counts of IndexedDB reads of blobs, so tests and health() can see which tier served. */
  blobReads = 0;
  /** Requests the last write transaction made (a fault-injection sweep goes over 1..this). */
  lastWriteRequests = 0;
  /** Corrupt or missing blobs found by reads since this store was opened. */
  damageDetected = 0;
  budgetBytes: number | null;
  private policy: CodecPolicy = { codec: 'fp32' };
  private chooser: CodecChooser | undefined;
  private fault: WriteFault | null = null;
  private usePending = new Map<string, number>();
  private useTimer: ReturnType<typeof setTimeout> | null = null;
  private useFlushMs: number;

  constructor(opts: StoreOptions = {}) {
    this.dbName = opts.dbName ?? 'statecart';
    this.db = openDatabase(this.dbName);
    this.hot = new HotCache(opts.hotBytes ?? 256 * 1024 * 1024);
    this.budgetBytes = checkBudget(opts.budgetBytes ?? null);
    this.useFlushMs = opts.useFlushMs ?? 1000;
    if (opts.codec) this.setCodecPolicy(opts.codec);
    this.ready = this.repair();
    const ready = this.ready.catch(() => undefined);
    this.idb = (mode, cb) => ready.then(() => this.db.idb(mode, cb));
    this.channel = new StoreChannel(this.dbName);
    // Another page deleted or evicted these: drop the decoded copies held here.
    this.channel.on((e) => {
      if (e.type === 'deleted') for (const k of e.keys) this.hot.delete(k);
      if (e.type === 'deleted' && e.reason === 'clear') this.hot.clear();
    });
  }

  /** A transaction over several object stores, after the open-time check. */
  private async tx<T>(stores: string[], mode: IDBTransactionMode, cb: (tx: IDBTransaction) => T | PromiseLike<T>): Promise<T> {
    await this.ready.catch(() => undefined);
    return this.db.tx(stores, mode, cb);
  }

  /**
   * Tests: the next write transaction runs `fault.action` (default: abort)
   * after its n-th IndexedDB request has succeeded.
   */
  faultAfterRequests(n: number, action?: (tx: IDBTransaction) => void): void {
    if (!Number.isInteger(n) || n < 1) throw new InvalidInput('faultAfterRequests: n is a whole number ≥ 1');
    this.fault = { afterRequests: n, ...(action ? { action } : {}) };
  }

  /** Sets (or, with null, removes) the byte budget; evicts at once if the store is over it. */
  async setBudget(bytes: number | null): Promise<EvictResult | null> {
    this.budgetBytes = checkBudget(bytes);
    if (this.budgetBytes === null) return null;
    return this.evict({ targetBytes: this.budgetBytes });
  }

  async storageInfo(): Promise<StorageInfo> {
    const [u, est, persisted] = await Promise.all([this.usage(), originEstimate(), isPersisted()]);
    return { storeBytes: u.bytes, budgetBytes: this.budgetBytes, usage: est?.usage ?? null, quota: est?.quota ?? null, persisted };
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

  private async codecFor(input: PutInput): Promise<BlockCodec> {
    if (input.codec) return input.codec;
    if (this.policy.codec !== 'auto') return this.policy.codec;
    return this.chooser!(input.state, input, this.policy);
  }

  /**
   * For each chain hash (a GPT-2 block), the key of a stored blob holding it,
   * in any codec (the most precise one when there are several), or undefined.
   */
  async blockKeysFor(chain: (Uint8Array | string)[]): Promise<(string | undefined)[]> {
    const names = chain.map((h) => (typeof h === 'string' ? h : keyOf(h)));
    const found = await this.idb('readonly', (s) =>
      Promise.all(names.map((n) => promisifyRequest(s.getAllKeys(IDBKeyRange.bound(B + n + '/', B + n + '/\uffff'))) as Promise<IDBValidKey[]>)),
    );
    return found.map((ks, i) => {
      const have = new Set(ks.map((k) => String(k).slice(B.length)));
      for (const c of CODEC_PREFERENCE) {
        const k = `${names[i]}/${c}`;
        if (have.has(k)) return k;
      }
      return undefined;
    });
  }

  /** Which GPT-2 blocks (by chain hash) are stored, in any codec: prefix lookup walks this. */
  async hasBlocks(chain: (Uint8Array | string)[]): Promise<boolean[]> {
    return (await this.blockKeysFor(chain)).map((k) => k !== undefined);
  }

  async has(key: string): Promise<boolean> {
    if (this.hot.has(key)) return true;
    return (await this.getManifest(key)) !== undefined;
  }

  getManifest(key: string): Promise<Manifest | undefined> {
    return this.idb('readonly', (s) => promisifyRequest(s.get(M + key) as IDBRequest<Manifest | undefined>));
  }

  /** Manifests for many keys in one transaction (prefix lookup asks for hundreds). */
  getManifests(keys: string[]): Promise<(Manifest | undefined)[]> {
    return this.idb('readonly', (s) => Promise.all(keys.map((k) => promisifyRequest(s.get(M + k) as IDBRequest<Manifest | undefined>))));
  }

  /** Which of these blob keys exist (without reading their bytes). */
  hasBlobs(keys: string[]): Promise<boolean[]> {
    return this.idb('readonly', (s) => Promise.all(keys.map((k) => promisifyRequest(s.getKey(B + k)).then((x) => x !== undefined))));
  }

  /** Every manifest, with lastUsed as last recorded by any page (and by this one's unflushed reads). */
  async list(): Promise<Manifest[]> {
    const [ms, use] = await this.tx([KV, USE], 'readonly', (tx) =>
      Promise.all([promisifyRequest(tx.objectStore(KV).getAll(IDBKeyRange.bound(M, M + '\uffff')) as IDBRequest<Manifest[]>), readUse(tx)]),
    );
    for (const [k, t] of this.usePending) use.set(k, Math.max(use.get(k) ?? 0, t));
    for (const m of ms) m.lastUsed = lastUseOf(m, use);
    return ms;
  }

  /** Records a read; written in a batch later, in the small `use` store, so reads stay reads. */
  private noteUse(key: string): void {
    this.usePending.set(key, Date.now());
    if (this.useTimer) return;
    this.useTimer = setTimeout(() => {
      this.useTimer = null;
      void this.flushUse().catch(() => undefined);
    }, this.useFlushMs);
  }

  async flushUse(): Promise<void> {
    if (this.usePending.size === 0) return;
    const batch = [...this.usePending];
    this.usePending.clear();
    await this.tx([USE], 'readwrite', (tx) => {
      const u = tx.objectStore(USE);
      for (const [k, t] of batch) u.put(t, k);
      return promisifyRequest(tx);
    });
  }

  /**
   * Stores a state: blobs the store already holds (a shared prefix) are not
   * written again; new blobs and the manifest go in one transaction.
   */
  async putState(input: PutInput): Promise<Manifest> {
    const { state } = input;
    const now = Date.now();
    const codec = await this.codecFor(input);
    const specs = tensorSpecs(state);
    const refs: BlockRef[] = [];
    const records: [string, BlockRecord | null][] = [];
    const chain = state.arch === 'gpt2' ? await blockChain(input.modelFp, state.tokens) : [];
    // Full fp32 blocks the parent already names are the same bytes under the
    // same key (content addressing): they are neither cut, hashed nor copied
    // again, only checked to be present in the write's transaction. For a long
    // state continued by a few tokens this was most of the cost of a step.
    let skip = 0;
    if (!input.fullWrite && state.arch === 'gpt2' && codec === 'fp32' && input.parent) {
      const parent = await this.getManifest(input.parent);
      const own = new Map(
        (parent?.modelFp === input.modelFp ? parent.blocks : [])
          .filter((b) => b.codec === 'fp32' && !b.blobTokens && b.end - b.start === 16)
          .map((b) => [b.key, b]),
      );
      while (skip < Math.floor(state.tokens.length / 16)) {
        const ref = own.get(keyOf(chain[skip]!) + '/fp32');
        if (!ref || ref.start !== skip * 16) break;
        refs.push({ ...ref });
        records.push([ref.key, null]);
        skip++;
      }
    }
    const blocks = cutBlocks(state, skip * 16);
    // What a later read will decode: the hot tier must serve the same numbers,
    // or a state's continuation would depend on which tier it came from.
    const decoded: { start: number; end: number; data: Float32Array }[] = [];
    for (let j = 0; j < blocks.length; j++) {
      const i = skip + j;
      const b = blocks[j]!;
      // A full GPT-2 block is named by the chain hash after it, so every state
      // that starts with the same tokens names it the same way; the codec is
      // part of the name, as different codecs are different bytes.
      const blockKey = (state.arch === 'gpt2' ? keyOf(chain[i]!) : input.key) + '/' + codec;
      const bytes = codec === 'fp32' ? bytesOf(b.data) : encodeBlock(state.arch, specs, b, codec);
      const digest = await digestOf(bytes);
      refs.push({ key: blockKey, digest, start: b.start, end: b.end, codec, bytes: bytes.byteLength });
      // cutBlocks and encodeBlock return fresh arrays: their buffers can be stored as they are.
      const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
      records.push([blockKey, { digest, codec, data: (whole ? bytes.buffer : bytes.slice().buffer) as ArrayBuffer }]);
      if (codec !== 'fp32') decoded.push({ start: b.start, end: b.end, data: decodeBlock(state.arch, specs, b.start, b.end, codec, bytes) });
    }
    const manifest: Manifest = {
      v: 1,
      key: input.key,
      modelId: input.modelId,
      modelFp: input.modelFp,
      arch: state.arch,
      tokens: [...state.tokens],
      tensors: specs,
      blocks: refs,
      parent: input.parent,
      codec,
      bytes: refs.reduce((a, r) => a + r.bytes, 0),
      receipt: input.receipt,
      ...(input.receiptJson ? { receiptJson: input.receiptJson } : {}),
      createdAt: now,
      lastUsed: now,
      pinned: false,
      ...(input.label ? { label: input.label } : {}),
    };
    const tails = state.arch === 'gpt2' ? await tailCandidates(input.modelFp, state.tokens) : [];
    try {
      await this.writeAtomically(manifest, records, tails);
    } catch (e) {
      // A block named by the parent went missing meanwhile (evicted by another
      // tab): nothing was written; write the state whole instead.
      if (e instanceof KnownBlockMissing) return this.putState({ ...input, fullWrite: true });
      throw e;
    }
    const hot = codec === 'fp32' ? state : joinBlocks(state.arch, state.tokens, specs, decoded);
    this.hot.set(input.key, hot, stateBytes(hot));
    this.channel.post({ type: 'put', keys: [input.key] });
    return manifest;
  }

  /**
   * One transaction: evictions the write needs, the new blobs, the shared-tail
   * moves and the manifest, last. Either all of it commits or none of it: a
   * crash, an abort or a quota error leaves the store as it was.
   *
   * With a budget (or with the origin's quota close), the cold unpinned states
   * that must go to make room are chosen and deleted in the same transaction,
   * so a write that fails evicts nothing. If IndexedDB itself reports the
   * quota full, the write is tried once more with at least its own size freed.
   */
  private async writeAtomically(manifest: Manifest, records: [string, BlockRecord | null][], tails: TailCandidate[] = []): Promise<void> {
    const room = roomUnderQuota(await originEstimate());
    let need = 0;
    try {
      await this.writeOnce(manifest, records, tails, room, false, (n) => (need = n));
    } catch (e) {
      const err = mapIdbError(e);
      if (!(err instanceof QuotaExceeded) || err.details.planned) throw err;
      // The browser's quota, not our budget: free at least this write's size and try once more.
      try {
        await this.writeOnce(manifest, records, tails, room, true, () => undefined);
      } catch (e2) {
        const err2 = mapIdbError(e2);
        if (err2 instanceof QuotaExceeded)
          throw new QuotaExceeded(`${err2.message} (${need} new bytes were needed; evicting every unpinned state could not make room.)`, {
            ...err2.details,
            needed: need,
          });
        throw err2;
      }
    }
  }

  private async writeOnce(
    manifest: Manifest,
    records: [string, BlockRecord | null][],
    tails: TailCandidate[],
    room: number,
    tight: boolean,
    onNeed: (n: number) => void,
  ): Promise<void> {
    const fault = this.fault;
    this.fault = null;
    const counter = { n: 0 };
    const limited = tight || this.budgetBytes !== null || room !== Infinity;
    const pendingUse = new Map(this.usePending);
    let evicted: string[] = [];
    try {
      await this.tx([KV, USE], 'readwrite', async (tx) => {
        const done = promisifyRequest(tx);
        done.catch(() => undefined);
        const s = countingStore(tx.objectStore(KV), counter, fault);
        const use = tx.objectStore(USE);
        try {
          // A blob already present keeps its bytes, and the manifest takes its
          // digest: two writers of one block end with one copy and agree on it.
          const existing = await Promise.all(
            records.map(([k, rec]) =>
              rec
                ? promisifyRequest(s.get(B + k) as IDBRequest<BlockRecord | undefined>)
                : promisifyRequest(s.getKey(B + k)).then((x) => (x === undefined ? undefined : null)),
            ),
          );
          if (records.some(([, rec], i) => !rec && existing[i] === undefined)) throw new KnownBlockMissing();
          let extra = 0;
          records.forEach(([, rec], i) => {
            if (rec && !existing[i]) extra += rec.data.byteLength;
          });
          onNeed(extra);
          if (limited) {
            const [ms, used] = await Promise.all([promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')) as IDBRequest<Manifest[]>), readUse(tx)]);
            for (const [k, t] of pendingUse) used.set(k, Math.max(used.get(k) ?? 0, t));
            const current = uniqueBytes(ms);
            let limit = Math.min(this.budgetBytes ?? Infinity, current + room);
            if (tight) limit = Math.min(limit, extra > 0 ? current : Math.max(0, current - 1));
            const others = ms.filter((m) => m.key !== manifest.key);
            const plan = planEviction({ manifests: others, lastUsed: used, limitBytes: limit, extraBytes: extra, keepBlobs: new Set(records.map(([k]) => k)) });
            if (!plan.fits) {
              throw new QuotaExceeded(
                `Storing state ${manifest.key} needs ${extra} more bytes; the store holds ${current} bytes and may hold ${Number.isFinite(limit) ? limit : 'no more'}${this.budgetBytes !== null ? ` (budget ${this.budgetBytes})` : ''}. Even evicting every unpinned state leaves ${plan.bytesAfter} bytes. Unpin or delete states, or raise the budget. Nothing was written.`,
                { key: manifest.key, needed: extra, storeBytes: current, limit, planned: true },
              );
            }
            for (const v of plan.victims) {
              s.delete(M + v);
              use.delete(v);
            }
            for (const k of plan.freed.keys()) s.delete(B + k);
            evicted = plan.victims;
          }
          records.forEach(([k, rec], i) => {
            if (!rec) return; // named by the parent, and present (checked above)
            const ex = existing[i];
            if (ex) manifest.blocks[i]!.digest = ex.digest;
            else s.put(rec, B + k);
          });
          // Shorter states' tails move onto this state's blocks once its digests are final.
          await repointTails(s, manifest, tails);
          s.put(manifest, M + manifest.key);
          use.put(manifest.lastUsed, manifest.key);
        } catch (e) {
          safeAbort(tx);
          throw e;
        }
        await done;
      });
    } finally {
      this.lastWriteRequests = counter.n;
    }
    if (evicted.length) {
      for (const k of evicted) {
        this.hot.delete(k);
        this.usePending.delete(k);
      }
      this.channel.post({ type: 'deleted', keys: evicted, reason: 'evict' });
    }
  }

  /**
   * Deletes least-recently-used unpinned states until the store holds at most
   * `targetBytes` (0: every unpinned state). Blocks that remaining states use
   * stay. One transaction: a reader in another page sees a state whole or not at all.
   */
  async evict(opts: { targetBytes: number }): Promise<EvictResult> {
    const target = opts?.targetBytes;
    if (typeof target !== 'number' || !(target >= 0)) throw new InvalidInput('evict: targetBytes is a number of bytes ≥ 0');
    const pendingUse = new Map(this.usePending);
    const r = await this.tx([KV, USE], 'readwrite', async (tx) => {
      const s = tx.objectStore(KV);
      const use = tx.objectStore(USE);
      const [ms, used] = await Promise.all([promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')) as IDBRequest<Manifest[]>), readUse(tx)]);
      for (const [k, t] of pendingUse) used.set(k, Math.max(used.get(k) ?? 0, t));
      const plan = planEviction({ manifests: ms, lastUsed: used, limitBytes: target });
      for (const v of plan.victims) {
        s.delete(M + v);
        use.delete(v);
      }
      let bytesFreed = 0;
      for (const [k, n] of plan.freed) {
        s.delete(B + k);
        bytesFreed += n;
      }
      await promisifyRequest(tx);
      return { evicted: plan.victims, blobsFreed: plan.freed.size, bytesFreed, bytesBefore: plan.bytesBefore, bytesAfter: plan.bytesAfter, reached: plan.fits };
    });
    for (const k of r.evicted) {
      this.hot.delete(k);
      this.usePending.delete(k);
    }
    this.channel.post({ type: 'deleted', keys: r.evicted, reason: 'evict' });
    return r;
  }

  /**
   * The check run when the store opens: blobs that no manifest names are
   * deleted, and manifests that name a missing blob are marked damaged. Kept
   * rather than deleted: their tokens are intact, so the engine recomputes
   * them (and clears the mark) when their model is loaded; until then they
   * are listed as damaged and never served. One transaction, so it sees no
   * other tab's write half-done.
   */
  async repair(): Promise<RepairReport> {
    return this.db.tx([KV, USE], 'readwrite', async (tx) => {
      const s = tx.objectStore(KV);
      const use = tx.objectStore(USE);
      const [ms, blobKeys, useKeys] = await Promise.all([
        promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')) as IDBRequest<Manifest[]>),
        promisifyRequest(s.getAllKeys(IDBKeyRange.bound(B, B + '\uffff'))) as Promise<IDBValidKey[]>,
        promisifyRequest(use.getAllKeys()) as Promise<IDBValidKey[]>,
      ]);
      const have = new Set(blobKeys.map((k) => String(k).slice(B.length)));
      const named = new Set<string>();
      const stateKeys = new Set<string>();
      let damaged = 0;
      const now = Date.now();
      for (const m of ms) {
        stateKeys.add(m.key);
        for (const b of m.blocks) named.add(b.key);
        const missing = [...new Set(m.blocks.filter((b) => !have.has(b.key)).map((b) => b.key))];
        if (missing.length) {
          damaged++;
          if (m.damaged?.reason !== 'missing' || m.damaged.blocks.join() !== missing.join()) {
            m.damaged = { reason: 'missing', blocks: missing, at: now };
            s.put(m, M + m.key);
          }
        }
      }
      let orphanBlobs = 0;
      for (const k of have) {
        if (!named.has(k)) {
          s.delete(B + k);
          orphanBlobs++;
        }
      }
      let staleUse = 0;
      for (const k of useKeys) {
        if (!stateKeys.has(String(k))) {
          use.delete(k);
          staleUse++;
        }
      }
      await promisifyRequest(tx);
      return { states: ms.length, blobs: have.size, orphanBlobs, damaged, staleUse };
    });
  }

  /**
   * Restores a state: from the hot tier, or from IndexedDB with every blob's
   * digest checked. The manifest and its blobs are read in one transaction: a
   * delete or an eviction in another page commits either before it (the state
   * is not found) or after it (the read is whole), never between.
   */
  async getState(key: string): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
    const inHot = this.hot.has(key);
    const { manifest, recs } = await this.idb('readonly', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      if (!m || inHot) return { manifest: m, recs: null };
      const r = await Promise.all(m.blocks.map((b) => promisifyRequest(s.get(B + b.key) as IDBRequest<BlockRecord | undefined>)));
      return { manifest: m, recs: r };
    });
    if (!manifest) {
      this.hot.delete(key);
      throw new StateNotFound(`No stored state has the key ${key}. Create it with createState, or import its cartridge.`, { key });
    }
    this.noteUse(key);
    const hot = this.hot.get(key);
    if (hot) return { state: hot, tier: 'hot', manifest };
    // (evicted from the hot tier between the check and here: read it now)
    if (!recs) return this.getState(key);
    this.blobReads += recs.length;
    const blocks = [];
    for (let i = 0; i < recs.length; i++) {
      const ref = manifest.blocks[i]!;
      const rec = recs[i];
      if (!rec) {
        await this.markDamaged(manifest, 'missing', [ref.key]);
        throw new CorruptBlob(
          `State ${key} is damaged: its block ${ref.key} (tokens ${ref.start}–${ref.end}) is missing. It was not used; infer or createState with the same tokens recomputes it.`,
          { key, block: ref.key, reason: 'missing' },
        );
      }
      const bytes = new Uint8Array(rec.data);
      const digest = await digestOf(bytes);
      if (digest !== ref.digest) {
        if (digest === rec.digest) {
          // The blob is intact but is not the one this manifest was written
          // against (another device recomputed the block): not served as this
          // state, not deleted either, as it is good for whoever wrote it.
          await this.markDamaged(manifest, 'replaced', [ref.key]);
          throw new CorruptBlob(
            `State ${key}: block ${ref.key} (tokens ${ref.start}–${ref.end}) was rewritten with other bytes (digest ${digest}, this state expects ${ref.digest}). It was not used; infer or createState with the same tokens recomputes the state.`,
            { key, block: ref.key, expected: ref.digest, actual: digest, reason: 'replaced' },
          );
        }
        // The damaged blob is removed so that the next write of this block
        // (a recompute from the tokens) stores good bytes again.
        await this.markDamaged(manifest, 'digest mismatch', [ref.key], [{ key: ref.key, bytes }]);
        throw new CorruptBlob(
          `State ${key} is damaged: block ${ref.key} (tokens ${ref.start}–${ref.end}) has digest ${digest}, expected ${ref.digest}. It was not used; infer or createState with the same tokens recomputes it.`,
          { key, block: ref.key, expected: ref.digest, actual: digest, reason: 'digest mismatch' },
        );
      }
      let data: Float32Array;
      try {
        const span = ref.blobTokens ?? ref.end - ref.start;
        data = headOfBlock(
          decodeBlock(manifest.arch, manifest.tensors, ref.start, ref.start + span, ref.codec ?? 'fp32', bytes),
          manifest.tensors,
          span,
          ref.end - ref.start,
        );
      } catch (e) {
        throw new CorruptBlob(
          `State ${key}: block ${ref.key} (tokens ${ref.start}–${ref.end}) cannot be decoded as ${ref.codec}: ${e instanceof Error ? e.message : String(e)}`,
          { key, block: ref.key },
        );
      }
      blocks.push({ start: ref.start, end: ref.end, data });
    }
    const state = joinBlocks(manifest.arch, manifest.tokens, manifest.tensors, blocks);
    // Every blob checked out (a missing one came back, written by a recompute): no longer damaged.
    if (manifest.damaged) await this.clearDamaged(key, manifest);
    this.hot.set(key, state, stateBytes(state));
    return { state, tier: 'stored', manifest };
  }

  /**
   * Marks damaged every state that names one of `blobKeys` and deletes the
   * corrupt blobs in `drop` (only if they still hold the bytes that were read:
   * another page may have rewritten them meanwhile). One transaction.
   */
  private async markDamaged(
    m: Manifest | null,
    reason: Damage['reason'],
    blobKeys: string[],
    drop: { key: string; bytes: Uint8Array }[] = [],
  ): Promise<string[]> {
    this.damageDetected++;
    const bad = new Set(blobKeys);
    const at = Date.now();
    const keys = await this.idb('readwrite', async (s) => {
      const marked: string[] = [];
      for (const d of drop) {
        const cur = (await promisifyRequest(s.get(B + d.key))) as BlockRecord | undefined;
        if (cur && sameBytes(new Uint8Array(cur.data), d.bytes)) s.delete(B + d.key);
      }
      // 'replaced' concerns this state only; a missing or corrupt blob, every state naming it.
      const ms =
        reason === 'replaced' && m
          ? [(await promisifyRequest(s.get(M + m.key))) as Manifest | undefined]
          : ((await promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')))) as Manifest[]);
      for (const x of ms) {
        if (!x) continue;
        const hit = [...new Set(x.blocks.filter((b) => bad.has(b.key)).map((b) => b.key))];
        if (!hit.length) continue;
        x.damaged = { reason, blocks: hit, at };
        s.put(x, M + x.key);
        marked.push(x.key);
      }
      await promisifyRequest(s.transaction);
      return marked;
    });
    for (const k of keys) this.hot.delete(k);
    this.channel.post({ type: 'damaged', keys });
    return keys;
  }

  private async clearDamaged(key: string, seen: Manifest): Promise<void> {
    await this.idb('readwrite', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      // Only if nobody rewrote the manifest since it was read.
      if (m?.damaged && JSON.stringify(m.blocks) === JSON.stringify(seen.blocks)) {
        delete m.damaged;
        s.put(m, M + key);
      }
      return promisifyRequest(s.transaction);
    });
  }

  /** Records the receipt that made a state (written after the state, as it names the state's digests). */
  async setReceipt(key: string, receipt: SignedReceipt): Promise<void> {
    await this.idb('readwrite', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      if (m && m.receipt !== receipt.hash) {
        m.receipt = receipt.hash;
        m.receiptJson = canonicalize(receipt.receipt);
        s.put(m, M + key);
      }
      return promisifyRequest(s.transaction);
    });
  }

  /**
   * A GPT-2 state rebuilt from stored blocks alone (tokens.length a multiple of
   * 16): any state that starts with these tokens stored them, whether or not a
   * state of exactly this length exists.
   */
  async getBlockPrefix(model: { fingerprint: string; stateSpecs: TensorSpec[] }, tokens: number[]): Promise<ModelState | undefined> {
    const chain = await blockChain(model.fingerprint, tokens);
    const found = await this.blockKeysFor(chain);
    if (found.some((k) => k === undefined)) return undefined;
    const keys = found as string[];
    const recs = await this.idb('readonly', (s) => Promise.all(keys.map((k) => promisifyRequest(s.get(B + k) as IDBRequest<BlockRecord | undefined>))));
    this.blobReads += recs.length;
    const blocks = [];
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i];
      if (!rec) return undefined;
      const bytes = new Uint8Array(rec.data);
      if ((await digestOf(bytes)) !== rec.digest) {
        // Damaged: removed (and its states marked), so that the recompute that follows stores good bytes.
        await this.markDamaged(null, 'digest mismatch', [keys[i]!], [{ key: keys[i]!, bytes }]);
        return undefined;
      }
      const start = i * 16;
      const end = Math.min((i + 1) * 16, tokens.length);
      try {
        blocks.push({ start, end, data: decodeBlock('gpt2', model.stateSpecs, start, end, rec.codec ?? 'fp32', bytes) });
      } catch {
        return undefined;
      }
    }
    try {
      return joinBlocks('gpt2', tokens, model.stateSpecs, blocks);
    } catch {
      return undefined;
    }
  }

  /**
   * Checks every blob of a state against its digest without decoding it. What
   * it finds is handled as a read would: the state is marked damaged and a
   * corrupt blob is deleted; a state found whole loses its damaged mark.
   */
  async verify(key: string): Promise<{ ok: boolean; blocks: number; damaged: { key: string; start: number; end: number; reason: string }[] }> {
    const { manifest, recs } = await this.idb('readonly', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      if (!m) return { manifest: m, recs: [] };
      return { manifest: m, recs: await Promise.all(m.blocks.map((b) => promisifyRequest(s.get(B + b.key) as IDBRequest<BlockRecord | undefined>))) };
    });
    if (!manifest) throw new StateNotFound(`No stored state has the key ${key}.`, { key });
    const damaged: { key: string; start: number; end: number; reason: Damage['reason'] }[] = [];
    const drop: { key: string; bytes: Uint8Array }[] = [];
    for (let i = 0; i < recs.length; i++) {
      const ref = manifest.blocks[i]!;
      const rec = recs[i];
      if (!rec) {
        damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason: 'missing' });
        continue;
      }
      const bytes = new Uint8Array(rec.data);
      const digest = await digestOf(bytes);
      if (digest === ref.digest) continue;
      const reason = digest === rec.digest ? 'replaced' : 'digest mismatch';
      damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason });
      if (reason === 'digest mismatch') drop.push({ key: ref.key, bytes });
    }
    for (const r of ['missing', 'digest mismatch', 'replaced'] as const) {
      const ks = damaged.filter((d) => d.reason === r).map((d) => d.key);
      if (ks.length)
        await this.markDamaged(
          manifest,
          r,
          ks,
          drop.filter((d) => ks.includes(d.key)),
        );
    }
    if (!damaged.length && manifest.damaged) await this.clearDamaged(key, manifest);
    return { ok: damaged.length === 0, blocks: recs.length, damaged };
  }

  /** Marks a state as used now (eviction goes least-recent first). */
  async touch(key: string): Promise<void> {
    this.noteUse(key);
    await this.flushUse();
  }

  async setPinned(key: string, pinned: boolean): Promise<void> {
    await this.idb('readwrite', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      if (!m) throw new StateNotFound(`No stored state has the key ${key}.`, { key });
      m.pinned = pinned;
      s.put(m, M + key);
      return promisifyRequest(s.transaction);
    });
  }

  /**
   * Deletes a state's manifest, then sweeps every blob no remaining manifest
   * names. Mark-and-sweep rather than reference counts: a count can drift if a
   * tab dies between two writes; a sweep recomputes the truth from manifests.
   */
  async delete(key: string): Promise<{ blobsFreed: number; bytesFreed: number }> {
    this.hot.delete(key);
    this.usePending.delete(key);
    const r = await this.tx([KV, USE], 'readwrite', async (tx) => {
      const s = tx.objectStore(KV);
      tx.objectStore(USE).delete(key);
      s.delete(M + key);
      const manifests = (await promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')))) as Manifest[];
      const live = new Set<string>();
      for (const m of manifests) if (m.key !== key) for (const b of m.blocks) live.add(b.key);
      const blobKeys = (await promisifyRequest(s.getAllKeys(IDBKeyRange.bound(B, B + '\uffff')))) as string[];
      let blobsFreed = 0;
      let bytesFreed = 0;
      const dead = blobKeys.filter((k) => !live.has(k.slice(B.length)));
      const sizes = new Map<string, number>();
      for (const m of manifests) for (const b of m.blocks) sizes.set(b.key, b.bytes);
      for (const k of dead) {
        s.delete(k);
        blobsFreed++;
        bytesFreed += sizes.get(k.slice(B.length)) ?? 0;
      }
      await promisifyRequest(tx);
      return { blobsFreed, bytesFreed };
    });
    this.channel.post({ type: 'deleted', keys: [key], reason: 'delete' });
    return r;
  }

  /** Bytes of unique blobs named by manifests (a shared block counts once). */
  async usage(): Promise<{ states: number; blobs: number; bytes: number; logicalBytes: number; damaged: number; pinned: number }> {
    const ms = await this.list();
    const seen = new Map<string, number>();
    let logical = 0;
    for (const m of ms) {
      logical += m.bytes;
      for (const b of m.blocks) seen.set(b.key, b.bytes);
    }
    let bytes = 0;
    for (const v of seen.values()) bytes += v;
    return {
      states: ms.length,
      blobs: seen.size,
      bytes,
      logicalBytes: logical,
      damaged: ms.filter((m) => m.damaged).length,
      pinned: ms.filter((m) => m.pinned).length,
    };
  }

  async clear(): Promise<void> {
    this.hot.clear();
    this.usePending.clear();
    const keys = await this.tx([KV, USE], 'readwrite', async (tx) => {
      const ks = (await promisifyRequest(tx.objectStore(KV).getAllKeys(IDBKeyRange.bound(M, M + '\uffff')))) as string[];
      tx.objectStore(KV).clear();
      tx.objectStore(USE).clear();
      await promisifyRequest(tx);
      return ks.map((k) => k.slice(M.length));
    });
    this.channel.post({ type: 'deleted', keys, reason: 'clear' });
  }

  /** Stops listening to other pages and closes the database connection. */
  close(): void {
    if (this.useTimer) clearTimeout(this.useTimer);
    this.useTimer = null;
    this.channel.close();
    this.db.close();
  }
}

/** Last-use times from the `use` store of a transaction that covers it. */
async function readUse(tx: IDBTransaction): Promise<Map<string, number>> {
  const u = tx.objectStore(USE);
  const [ks, vs] = await Promise.all([promisifyRequest(u.getAllKeys()), promisifyRequest(u.getAll() as IDBRequest<number[]>)]);
  const out = new Map<string, number>();
  ks.forEach((k, i) => out.set(String(k), vs[i]!));
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkBudget(b: number | null): number | null {
  if (b === null || b === undefined) return null;
  if (typeof b !== 'number' || !(b >= 0) || !Number.isFinite(b)) throw new InvalidInput('budgetBytes is a number of bytes ≥ 0, or null for none');
  return b;
}

function mapIdbError(e: unknown): Error {
  if (e instanceof StatecartError) return e;
  const name = (e as { name?: string })?.name;
  if (name === 'QuotaExceededError') {
    return new QuotaExceeded(
      'The browser refused to store more: the storage quota is full. Delete or evict states, or request persistent storage, then try again. Nothing was written.',
    );
  }
  // An aborted transaction rejects with tx.error, which is null for abort().
  if (e === null || e === undefined || name === 'AbortError') return new StatecartError('The write was interrupted before it committed; nothing was written.');
  return e instanceof Error ? e : new Error(String(e));
}

export { toHex };
