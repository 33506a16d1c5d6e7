import type { Provenance } from '../core/model-fingerprint.ts';
import { promisifyRequest } from 'idb-keyval';
import { QuotaExceeded, StatecartError, WriteInterrupted } from '../core/errors.ts';
import { BLOCK_TOKENS, type KeyChain } from '../core/key-chain.ts';
import { blobDigest, type SignedReceipt } from '../core/receipts.ts';
import { digestOf } from '../core/sha256.ts';
import { canonicalize } from '../core/canonical-json.ts';
import { bytesOf } from '../core/bytes.ts';
import { isSliceable, stateBytes, type ModelState } from '../core/state.ts';
import { cutBlocks, decodeBlock, encodeBlock, joinBlocks, placeBlock, tensorSpecs, type BlockCodec } from './blocks.ts';
import type { StoreCore } from './context.ts';
import { countingStore, safeAbort } from './fault.ts';
import { originEstimate, planEviction, recordEviction, roomUnderQuota, uniqueBytes } from './quota.ts';
import {
  allManifests,
  blobId,
  blobKeyFor,
  getBlob,
  getManifest,
  hasBlob,
  putManifest,
  useGoneKey,
  type BlockRecord,
  type BlockRef,
  type Manifest,
} from './records.ts';
import { KV, USE, readUse } from './schema.ts';
import { repointTails, type TailCandidate } from './shared-tails.ts';

/**
 * Writing a state: blobs the store already holds (a shared prefix) are not
 * written again; new blobs, the manifest and its receipt go in one
 * transaction, with whatever eviction the write needs. Either all of it
 * commits or none of it: a crash, an abort or a quota error leaves the store
 * as it was.
 */

export interface PutInput {
  state: ModelState;
  /** The chain over the state's tokens: its key is the state's key, its block hashes name the KV blocks. */
  chain: KeyChain;
  modelId: string;
  modelFp: string;
  /** The model's architecture name (display only). */
  arch: string;
  /** The stored state this one continues: its full fp32 blocks are taken by reference. */
  parent: Manifest | null;
  label?: string;
  codec: BlockCodec;
  /** Makes the receipt from the state's blob digest; it is written in the state's own transaction. */
  receipt?: (blobDigest: string) => Promise<SignedReceipt>;
  /** Keeps this receipt (a damaged state written again as it was). */
  keepReceipt?: { hash: string | null; json?: string };
  /** Cut and write every block, even those the parent names (the fallback when one went missing). */
  fullWrite?: boolean;
  /**
   * The state was continued from `parent` as a read of it returns it (its
   * first tokens hold the parent's decoded numbers): the parent's full blocks
   * are then taken by reference in a lossy codec too, and the new blocks'
   * decoded numbers are written into `state` itself, which becomes the hot
   * copy. Without it, only fp32 blocks are taken (their bytes are the numbers).
   */
  restoredFromParent?: boolean;
  /** Write over a stored manifest of the same key (merge, a damaged state healed); otherwise a stored, whole state is left as it is. */
  replace?: boolean;
  /** Pinned (default: as the replaced manifest was, else not). */
  pinned?: boolean;
  /** What computed the state (device, runtimes, dtype); kept in the manifest, not in the key. */
  provenance?: Provenance;
  /** A checkpoint kept inside a longer prefill (Manifest.checkpoint). */
  checkpoint?: boolean;
  /**
   * An optimisation nobody asked for (a checkpoint): when its queued write
   * finds the store full (QuotaExceeded), it is dropped and not reported to
   * flush(). A caller waiting on landed() still sees the error.
   */
  bestEffort?: boolean;
}

export interface PutResult {
  manifest: Manifest;
  /** The receipt stored with the state (null when it was already stored, undamaged: nothing was written). */
  receipt: SignedReceipt | null;
  written: boolean;
}

/**
 * A write queued behind the call (write-behind): the manifest and receipt it
 * will write, and its landing. `written` is false when the same state's
 * write was already queued here (nothing more is queued).
 */
export interface QueuedPut extends PutResult {
  /**
   * Settles when the write has landed, with the result as committed, or with
   * the write's own error (QuotaExceeded, WriteInterrupted…). A caller that
   * waits here is told of a failure, so flush() does not report it again.
   */
  landed(): Promise<PutResult>;
}

/** A block the parent names was not in the store at write time. */
class KnownBlockMissing extends Error {}
/** A blob was already stored with other bytes than ours: the manifest takes its digest, so the receipt is made again. */
class DigestsChanged extends Error {
  constructor(readonly digests: Map<number, string>) {
    super('digests changed');
  }
}

/** A state cut, encoded and hashed, ready to be written: everything its transaction needs, computed before it starts. */
interface Prepared {
  input: PutInput;
  manifest: Manifest;
  /** One per manifest block: the record to write, or null for a block taken from the parent by reference. */
  records: [string, BlockRecord | null][];
  tails: TailCandidate[];
  /** What a later read of the state will decode (the hot tier serves the same numbers). */
  hot: ModelState;
  receipt: SignedReceipt | null;
}

/**
 * Cuts, encodes and hashes what the state adds to its parent, and makes its
 * manifest and receipt. A state continued from its parent takes the parent's
 * full fp32 blocks by reference: only the blocks from the parent's last full
 * block on are cut, hashed and copied, so a step costs its new tokens, not
 * its context.
 */
async function prepare(input: PutInput): Promise<Prepared> {
  const { state, chain } = input;
  const key = chain.key();
  const codec = input.codec;
  const specs = tensorSpecs(state);
  const sliceable = isSliceable(state.tensors);
  const n = state.tokens.length;
  const refs: BlockRef[] = [];
  const records: [string, BlockRecord | null][] = [];
  // Full fp32 blocks the parent already names are the same bytes under the
  // same key (content addressing): they are neither cut, hashed nor copied
  // again, only checked to be present in the write's transaction. A lossy
  // block is taken too when the state holds what it decodes to (continued
  // from the parent as read), so a step encodes only its new tokens.
  let skip = 0;
  const parent = input.parent;
  const byRef = codec === 'fp32' || Boolean(input.restoredFromParent);
  if (!input.fullWrite && sliceable && byRef && parent && parent.modelFp === input.modelFp) {
    const own = new Map(parent.blocks.filter((b) => b.codec === codec && !b.blobTokens && b.end - b.start === BLOCK_TOKENS).map((b) => [b.key, b]));
    while (skip < Math.floor(n / BLOCK_TOKENS)) {
      const ref = own.get(blobKeyFor(chain.blockKey(skip), codec));
      if (!ref || ref.start !== skip * BLOCK_TOKENS) break;
      refs.push({ ...ref });
      records.push([ref.key, null]);
      skip++;
    }
  }
  const blocks = cutBlocks(state, skip * BLOCK_TOKENS);
  // What a later read will decode: the hot tier must serve the same numbers,
  // or a state's continuation would depend on which tier it came from.
  const decoded: { start: number; end: number; data: Float32Array }[] = [];
  const encoded = blocks.map((b) => (codec === 'fp32' ? bytesOf(b.data) : encodeBlock(specs, b, codec)));
  // (digests of all new blocks at once: WebCrypto may run them side by side)
  const digests = await Promise.all(encoded.map((bytes) => digestOf(bytes)));
  for (let j = 0; j < blocks.length; j++) {
    const b = blocks[j]!;
    // A full KV block is named by the chain hash after it, so every state that
    // starts with the same tokens names it the same way; a partial last block,
    // or a fixed-size state, by the state's key. The codec is part of the name.
    const name = sliceable ? chain.keyAt(b.end) : key;
    const blobKey = blobKeyFor(name, codec);
    const bytes = encoded[j]!;
    const digest = digests[j]!;
    refs.push({ key: blobKey, digest, start: b.start, end: b.end, codec, bytes: bytes.byteLength });
    // cutBlocks and encodeBlock return fresh arrays: their buffers can be stored as they are.
    const whole = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength;
    records.push([blobKey, { digest, codec, data: (whole ? bytes.buffer : bytes.slice().buffer) as ArrayBuffer }]);
    if (codec !== 'fp32') decoded.push({ start: b.start, end: b.end, data: decodeBlock(specs, b.start, b.end, codec, bytes) });
  }
  // Shorter stored states whose partial tail lies inside one of the blocks written here.
  const tails: TailCandidate[] = [];
  if (sliceable)
    for (let L = skip * BLOCK_TOKENS + 1; L < n; L++) if (L % BLOCK_TOKENS !== 0) tails.push({ key: chain.keyAt(L), block: Math.floor(L / BLOCK_TOKENS) });
  const now = Date.now();
  const manifest: Manifest = {
    v: 2,
    key,
    modelId: input.modelId,
    modelFp: input.modelFp,
    arch: input.arch,
    tokens: [...state.tokens],
    tensors: specs,
    blocks: refs,
    parent: parent?.key ?? null,
    codec,
    bytes: refs.reduce((a, r) => a + r.bytes, 0),
    receipt: input.keepReceipt?.hash ?? null,
    ...(input.keepReceipt?.json ? { receiptJson: input.keepReceipt.json } : {}),
    createdAt: now,
    lastUsed: now,
    pinned: input.pinned ?? false,
    ...(input.label ? { label: input.label } : {}),
    ...(input.provenance ? { provenance: input.provenance } : {}),
    ...(input.checkpoint ? { checkpoint: true as const } : {}),
  };
  let hot: ModelState;
  if (codec === 'fp32') hot = state;
  else if (skip > 0) {
    // The parent's blocks are already the decoded numbers in `state`: only the new blocks' are written in.
    for (const d of decoded) placeBlock(state.tensors, n, d.start, d.end, d.data);
    hot = state;
  } else hot = joinBlocks(state.tokens, specs, decoded);
  const p: Prepared = { input, manifest, records, tails, hot, receipt: null };
  await sign(p);
  return p;
}

/** The manifest's blob digest, and the receipt made from it (again, when digests changed). */
async function sign(p: Prepared): Promise<void> {
  const m = p.manifest;
  m.blobDigest = await blobDigest(m.blocks.map((r) => r.digest));
  p.receipt = p.input.receipt ? await p.input.receipt(m.blobDigest) : null;
  if (p.receipt) {
    m.receipt = p.receipt.hash;
    m.receiptJson = canonicalize(p.receipt.receipt);
  }
}

/** Writes a prepared state in one transaction (again, if another writer changed what it builds on); the hot tier then serves it. */
async function commit(core: StoreCore, prepared: Prepared): Promise<PutResult> {
  let p = prepared;
  const key = p.manifest.key;
  for (;;) {
    try {
      const r = await writeAtomically(core, p.manifest, p.records, p.tails, {
        replace: !!p.input.replace,
        pinned: p.input.pinned,
        parent: p.input.parent && !p.input.fullWrite ? p.input.parent.key : null,
      });
      if (r.written) {
        core.hot.set(key, { state: p.hot, manifest: r.manifest }, stateBytes(p.hot));
        core.channel.post({ type: 'put', keys: [key] });
      }
      return { ...r, receipt: r.written ? p.receipt : null };
    } catch (e) {
      // A block named by the parent went missing meanwhile (evicted by another
      // tab, or the parent's own queued write failed): nothing was written;
      // write the state whole instead.
      if (e instanceof KnownBlockMissing) {
        p = await prepare({ ...p.input, fullWrite: true });
        continue;
      }
      if (e instanceof DigestsChanged) {
        for (const [i, d] of e.digests) p.manifest.blocks[i]!.digest = d;
        await sign(p);
        continue;
      }
      throw e;
    }
  }
}

/** Stores a state (and its receipt) in one transaction, in the store's write order; resolves once it has landed. */
export async function putState(core: StoreCore, input: PutInput): Promise<PutResult> {
  return (await queueState(core, input, { behind: false })).landed();
}

/**
 * Queues a state's write and resolves once it is queued: the state is held
 * in memory (lookups find it) until the write lands in IndexedDB. With
 * `behind`, a failure of the write is kept for flush() (and told to other
 * pages) unless a caller waits for it through `landed()`; without, the one
 * caller is expected to wait.
 */
export async function queueState(core: StoreCore, input: PutInput, o: { behind: boolean; maxQueuedBytes?: number }): Promise<QueuedPut> {
  const key = input.chain.key();
  // The same state already queued here (the same tokens computed again): nothing more to write.
  const waiting = o.behind && !input.replace ? core.queue.entry(key) : undefined;
  const landing = core.queue.landing(key);
  if (waiting && landing && waiting.manifest.modelFp === input.modelFp && !waiting.manifest.damaged) {
    return { manifest: waiting.manifest, receipt: null, written: false, landed: () => told(core, key, landing) };
  }
  const p = await prepare(input);
  core.counters.lastBlocksPrepared = p.records.filter(([, rec]) => rec).length;
  // Back-pressure: queued states are held in memory until they land, so a
  // caller that outruns the writes waits for the oldest one.
  const bytes = stateBytes(p.hot);
  const limit = o.maxQueuedBytes ?? Infinity;
  while (core.queue.size > 0 && core.queue.queuedBytes + bytes > limit) await core.queue.waitOldest();
  const landed = core.queue.add(key, { state: p.hot, manifest: p.manifest }, bytes, async () => {
    try {
      return await commit(core, p);
    } catch (e) {
      const err = mapIdbError(e);
      if (o.behind && !(input.bestEffort && err instanceof QuotaExceeded)) {
        core.queue.fail(key, err);
        core.channel.post({ type: 'failed', keys: [key], reason: err.message });
      }
      throw err;
    }
  });
  // Reported through flush() or to a caller that waits: never an unhandled rejection.
  landed.catch(() => undefined);
  return { manifest: p.manifest, receipt: p.receipt, written: true, landed: () => told(core, key, landed) };
}

function told(core: StoreCore, key: string, landed: Promise<PutResult>): Promise<PutResult> {
  return landed.catch((e: unknown) => {
    core.queue.reported(key);
    throw e;
  });
}

/**
 * With a budget (or with the origin's quota close), the cold unpinned states
 * that must go to make room are chosen and deleted in the same transaction,
 * so a write that fails evicts nothing. If IndexedDB itself reports the
 * quota full, the write is tried once more with at least its own size freed.
 */
interface WriteMode {
  replace: boolean;
  pinned: boolean | undefined;
  /** The parent whose blocks the manifest takes by reference (its first blocks whose record is null). */
  parent: string | null;
}

async function writeAtomically(
  core: StoreCore,
  manifest: Manifest,
  records: [string, BlockRecord | null][],
  tails: TailCandidate[],
  mode: WriteMode,
): Promise<{ written: boolean; manifest: Manifest }> {
  const room = roomUnderQuota(await originEstimate());
  let need = 0;
  try {
    return await writeOnce(core, manifest, records, tails, mode, room, false, (x) => {
      need = x;
    });
  } catch (e) {
    const err = mapIdbError(e);
    if (!(err instanceof QuotaExceeded) || err.details.planned) throw err;
    // The browser's quota, not our budget: free at least this write's size and try once more.
    try {
      return await writeOnce(core, manifest, records, tails, mode, room, true, () => undefined);
    } catch (e2) {
      const err2 = mapIdbError(e2);
      if (err2 instanceof QuotaExceeded) throw new QuotaExceeded({ browser: true, needed: need, key: manifest.key });
      throw err2;
    }
  }
}

async function writeOnce(
  core: StoreCore,
  manifest: Manifest,
  records: [string, BlockRecord | null][],
  tails: TailCandidate[],
  { replace, pinned, parent }: WriteMode,
  room: number,
  tight: boolean,
  onNeed: (n: number) => void,
): Promise<{ written: boolean; manifest: Manifest }> {
  const fault = core.fault;
  core.fault = null;
  const counter = { n: 0 };
  const pendingUse = new Map(core.usePending);
  let evicted: string[] = [];
  let moved: Manifest[] = [];
  try {
    const out = await core.tx([KV, USE], 'readwrite', async (tx) => {
      const done = promisifyRequest(tx);
      done.catch(() => undefined);
      const s = countingStore(tx.objectStore(KV), counter, fault);
      const use = tx.objectStore(USE);
      try {
        // The manifests this write reads, each once: its own key (is it stored
        // already?), its parent's (does it still name the blocks taken by
        // reference?) and the shorter states whose tails it may take over.
        const reads = [...new Set([manifest.key, ...(parent ? [parent] : []), ...tails.map((t) => t.key)])];
        const got = await Promise.all(reads.map((k) => getManifest(s, k, 'write')));
        const stored = new Map(reads.map((k, i) => [k, got[i]]));
        // Already stored and whole (the same tokens computed before, here or in
        // another tab): nothing to write; its receipt stays the one that made it.
        const have = stored.get(manifest.key);
        if (have && !replace && !have.damaged && have.modelFp === manifest.modelFp) {
          await done;
          return { written: false, manifest: have };
        }
        if (have) {
          manifest.createdAt = have.createdAt;
          manifest.pinned = pinned ?? have.pinned;
        }
        // Blocks taken by reference are checked to be present (another tab may
        // have evicted them, or the parent's own queued write failed); where
        // the stored parent names one with another digest than the one taken
        // (its write adopted a digest another writer stored first), the
        // manifest takes the stored one.
        const p = parent ? stored.get(parent) : undefined;
        const named = p && p.modelFp === manifest.modelFp ? new Map(p.blocks.map((b) => [b.key, b.digest])) : null;
        // A blob already present keeps its bytes, and the manifest takes its
        // digest: two writers of one block end with one copy and agree on it.
        // (async: a request on a transaction the fault aborted throws; each becomes a rejection Promise.all handles)
        const existing = await Promise.all(
          records.map(async ([k, rec]) => {
            if (rec) return getBlob(s, k);
            if (!(await hasBlob(s, k))) return undefined;
            return named?.has(k) ? { digest: named.get(k)! } : null;
          }),
        );
        if (records.some(([, rec], i) => !rec && existing[i] === undefined)) throw new KnownBlockMissing();
        const changed = new Map<number, string>();
        records.forEach((_, i) => {
          const ex = existing[i];
          if (ex && ex.digest !== manifest.blocks[i]!.digest) changed.set(i, ex.digest);
        });
        if (changed.size) throw new DigestsChanged(changed);
        let extra = 0;
        records.forEach(([, rec], i) => {
          if (rec && !existing[i]) extra += rec.data.byteLength;
        });
        onNeed(extra);
        // Without a budget, a write that fits in the origin's room (the quota
        // less what the origin uses, from estimate()) evicts nothing: the plan
        // below would find no victim, so its scan of every manifest (a cost
        // that grows with the store, on every write) is skipped.
        if (tight || core.budgetBytes !== null || extra > room) {
          const [ms, used] = await Promise.all([allManifests(s), readUse(tx)]);
          for (const [k, t] of pendingUse) used.set(k, Math.max(used.get(k) ?? 0, t));
          const current = uniqueBytes(ms);
          let limit = Math.min(core.budgetBytes ?? Infinity, current + room);
          if (tight) limit = Math.min(limit, extra > 0 ? current : Math.max(0, current - 1));
          const others = ms.filter((m) => m.key !== manifest.key);
          const plan = planEviction({ manifests: others, lastUsed: used, limitBytes: limit, extraBytes: extra, keepBlobs: new Set(records.map(([k]) => k)) });
          if (!plan.fits) {
            throw new QuotaExceeded({
              key: manifest.key,
              needed: extra,
              storeBytes: current,
              limit,
              budget: core.budgetBytes,
              afterEviction: plan.bytesAfter,
              planned: true,
            });
          }
          for (const v of plan.victims) s.delete(`m:${v}`);
          recordEviction(use, plan);
          for (const k of plan.freed.keys()) s.delete(blobId(k));
          evicted = plan.victims;
        }
        records.forEach(([k, rec], i) => {
          // named by the parent and present (checked above), or already stored with these bytes
          if (rec && !existing[i]) s.put(rec, blobId(k));
        });
        // Shorter states' tails move onto this state's blocks once its digests are final.
        moved = repointTails(s, manifest, tails, stored);
        putManifest(s, manifest);
        use.put(manifest.lastUsed, manifest.key);
        use.delete(useGoneKey(manifest.key));
      } catch (e) {
        safeAbort(tx);
        throw e;
      }
      await done;
      return { written: true, manifest };
    });
    // States whose tails moved keep their hot copy (the same numbers), with the manifest as now stored.
    for (const m of moved) {
      const h = core.hot.get(m.key);
      if (h) h.manifest = m;
    }
    if (evicted.length) {
      for (const k of evicted) {
        core.hot.delete(k);
        core.usePending.delete(k);
        core.hitsPending.delete(k);
      }
      core.channel.post({ type: 'deleted', keys: evicted, reason: 'evict' });
    }
    return out;
  } finally {
    core.counters.lastWriteRequests = counter.n;
  }
}

function mapIdbError(e: unknown): Error {
  if (e instanceof StatecartError || e instanceof KnownBlockMissing || e instanceof DigestsChanged) return e;
  const name = (e as { name?: string })?.name;
  if (name === 'QuotaExceededError') return new QuotaExceeded({ browser: true });
  // An aborted transaction rejects with tx.error, which is null for abort().
  if (e === null || e === undefined || name === 'AbortError') return new WriteInterrupted();
  return e instanceof Error ? e : new Error(String(e));
}
