import { createStore, promisifyRequest, type UseStore } from 'idb-keyval';
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

export type Tier = 'hot' | 'stored';

export interface StoreOptions {
  dbName?: string;
  /** Byte budget of the in-memory tier of decoded states. */
  hotBytes?: number;
  /** Codec of new states (default fp32). 'auto' needs a chooser: see setCodecPolicy. */
  codec?: CodecPolicy;
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
}

const M = 'm:'; // manifests
const B = 'b:'; // blobs

/**
 * IndexedDB holds two kinds of record in one object store, so that a state's
 * new blobs and its manifest commit in a single transaction: either the state
 * is there whole, or not at all.
 */
export class StateStore {
  readonly idb: UseStore;
  readonly hot: HotCache<ModelState>;
  /** Counts of IndexedDB reads of blobs, so tests and health() can see which tier served. */
  blobReads = 0;
  private policy: CodecPolicy = { codec: 'fp32' };
  private chooser: CodecChooser | undefined;

  constructor(opts: StoreOptions = {}) {
    this.idb = createStore(opts.dbName ?? 'statecart', 'kv');
    this.hot = new HotCache(opts.hotBytes ?? 256 * 1024 * 1024);
    if (opts.codec) this.setCodecPolicy(opts.codec);
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
    return this.idb('readonly', (s) =>
      Promise.all(keys.map((k) => promisifyRequest(s.getKey(B + k)).then((x) => x !== undefined))),
    );
  }

  async list(): Promise<Manifest[]> {
    return this.idb('readonly', (s) => promisifyRequest(s.getAll(IDBKeyRange.bound(M, M + '\uffff')) as IDBRequest<Manifest[]>));
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
    const records: [string, BlockRecord][] = [];
    const blocks = cutBlocks(state);
    const chain = state.arch === 'gpt2' ? await blockChain(input.modelFp, state.tokens) : [];
    // What a later read will decode: the hot tier must serve the same numbers,
    // or a state's continuation would depend on which tier it came from.
    const decoded: { start: number; end: number; data: Float32Array }[] = [];
    for (let i = 0; i < blocks.length; i++) {
      const b = blocks[i]!;
      // A full GPT-2 block is named by the chain hash after it, so every state
      // that starts with the same tokens names it the same way; the codec is
      // part of the name, as different codecs are different bytes.
      const blockKey = (state.arch === 'gpt2' ? keyOf(chain[i]!) : input.key) + '/' + codec;
      const bytes = codec === 'fp32' ? bytesOf(b.data) : encodeBlock(state.arch, specs, b, codec);
      const digest = await digestOf(bytes);
      refs.push({ key: blockKey, digest, start: b.start, end: b.end, codec, bytes: bytes.byteLength });
      records.push([blockKey, { digest, codec, data: bytes.slice().buffer }]);
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
    await this.writeAtomically(manifest, records, tails);
    const hot = codec === 'fp32' ? state : joinBlocks(state.arch, state.tokens, specs, decoded);
    this.hot.set(input.key, hot, stateBytes(hot));
    return manifest;
  }

  private async writeAtomically(manifest: Manifest, records: [string, BlockRecord][], tails: TailCandidate[] = []): Promise<void> {
    try {
      await this.idb('readwrite', (s) => {
        const tx = s.transaction;
        const done = promisifyRequest(tx);
        // A blob already present keeps its bytes, and the manifest takes its
        // digest: two writers of one block end with one copy and agree on it.
        let pending = records.length;
        // Shorter states' tails move onto this state's blocks once its digests are final.
        const finish = () => void repointTails(s, manifest, tails).then(() => s.put(manifest, M + manifest.key), () => tx.abort());
        if (pending === 0) finish();
        records.forEach(([k, rec], i) => {
          const req = s.get(B + k) as IDBRequest<BlockRecord | undefined>;
          req.onsuccess = () => {
            const existing = req.result;
            if (existing) manifest.blocks[i]!.digest = existing.digest;
            else s.put(rec, B + k);
            if (--pending === 0) finish();
          };
        });
        return done;
      });
    } catch (e) {
      throw mapIdbError(e);
    }
  }

  /** Restores a state: from the hot tier, or from IndexedDB with every blob's digest checked. */
  async getState(key: string): Promise<{ state: ModelState; tier: Tier; manifest: Manifest }> {
    const manifest = await this.getManifest(key);
    if (!manifest) {
      this.hot.delete(key);
      throw new StateNotFound(`No stored state has the key ${key}. Create it with createState, or import its cartridge.`, { key });
    }
    const hot = this.hot.get(key);
    if (hot) return { state: hot, tier: 'hot', manifest };
    const recs = await this.idb('readonly', (s) =>
      Promise.all(manifest.blocks.map((b) => promisifyRequest(s.get(B + b.key) as IDBRequest<BlockRecord | undefined>))),
    );
    this.blobReads += recs.length;
    const blocks = [];
    for (let i = 0; i < recs.length; i++) {
      const ref = manifest.blocks[i]!;
      const rec = recs[i];
      if (!rec) throw new CorruptBlob(`State ${key} is damaged: its block ${ref.key} (tokens ${ref.start}–${ref.end}) is missing. Delete the state and create it again from its text.`, { key, block: ref.key });
      const bytes = new Uint8Array(rec.data);
      const digest = await digestOf(bytes);
      if (digest !== ref.digest) {
        // The damaged blob is removed so that the next write of this block
        // (a recompute from the tokens) stores good bytes again.
        await this.idb('readwrite', (s) => promisifyRequest(s.delete(B + ref.key)));
        throw new CorruptBlob(`State ${key} is damaged: block ${ref.key} (tokens ${ref.start}–${ref.end}) has digest ${digest}, expected ${ref.digest}. It was not used.`, { key, block: ref.key, expected: ref.digest, actual: digest });
      }
      let data: Float32Array;
      try {
        const span = ref.blobTokens ?? ref.end - ref.start;
        data = headOfBlock(decodeBlock(manifest.arch, manifest.tensors, ref.start, ref.start + span, ref.codec ?? 'fp32', bytes), manifest.tensors, span, ref.end - ref.start);
      } catch (e) {
        throw new CorruptBlob(`State ${key}: block ${ref.key} (tokens ${ref.start}–${ref.end}) cannot be decoded as ${ref.codec}: ${e instanceof Error ? e.message : String(e)}`, { key, block: ref.key });
      }
      blocks.push({ start: ref.start, end: ref.end, data });
    }
    const state = joinBlocks(manifest.arch, manifest.tokens, manifest.tensors, blocks);
    this.hot.set(key, state, stateBytes(state));
    return { state, tier: 'stored', manifest };
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
        // Damaged: removed, so that the recompute that follows stores good bytes.
        await this.idb('readwrite', (s) => promisifyRequest(s.delete(B + keys[i]!)));
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

  /** Checks every blob of a state against its digest without decoding it. */
  async verify(key: string): Promise<{ ok: boolean; blocks: number; damaged: { key: string; start: number; end: number; reason: string }[] }> {
    const manifest = await this.getManifest(key);
    if (!manifest) throw new StateNotFound(`No stored state has the key ${key}.`, { key });
    const recs = await this.idb('readonly', (s) =>
      Promise.all(manifest.blocks.map((b) => promisifyRequest(s.get(B + b.key) as IDBRequest<BlockRecord | undefined>))),
    );
    const damaged = [];
    for (let i = 0; i < recs.length; i++) {
      const ref = manifest.blocks[i]!;
      const rec = recs[i];
      if (!rec) damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason: 'missing' });
      else if ((await digestOf(new Uint8Array(rec.data))) !== ref.digest) damaged.push({ key: ref.key, start: ref.start, end: ref.end, reason: 'digest mismatch' });
    }
    return { ok: damaged.length === 0, blocks: recs.length, damaged };
  }

  async touch(key: string): Promise<void> {
    await this.idb('readwrite', async (s) => {
      const m = (await promisifyRequest(s.get(M + key))) as Manifest | undefined;
      if (m) {
        m.lastUsed = Date.now();
        s.put(m, M + key);
      }
      return promisifyRequest(s.transaction);
    });
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
    return this.idb('readwrite', async (s) => {
      const tx = s.transaction;
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
  }

  /** Bytes of unique blobs named by manifests (a shared block counts once). */
  async usage(): Promise<{ states: number; blobs: number; bytes: number; logicalBytes: number }> {
    const ms = await this.list();
    const seen = new Map<string, number>();
    let logical = 0;
    for (const m of ms) {
      logical += m.bytes;
      for (const b of m.blocks) seen.set(b.key, b.bytes);
    }
    let bytes = 0;
    for (const v of seen.values()) bytes += v;
    return { states: ms.length, blobs: seen.size, bytes, logicalBytes: logical };
  }

  async clear(): Promise<void> {
    this.hot.clear();
    await this.idb('readwrite', (s) => promisifyRequest(s.clear()));
  }
}

function mapIdbError(e: unknown): Error {
  if (e instanceof StatecartError) return e;
  const name = (e as { name?: string })?.name;
  if (name === 'QuotaExceededError') {
    return new QuotaExceeded('The browser refused to store more: the storage quota is full. Delete or evict states, or request persistent storage, then try again. Nothing was written.');
  }
  return e instanceof Error ? e : new Error(String(e));
}

export { toHex };
