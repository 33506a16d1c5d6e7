import type { Provenance } from '../core/model-fingerprint.ts';
import { promisifyRequest } from 'idb-keyval';
import type { TensorSpec } from '../core/state.ts';

/**
 * The records statecart keeps in IndexedDB, and the one place that knows
 * their kinds and key prefixes. Both kinds live in one object store (`kv`),
 * so that a state's new blobs and its manifest commit in a single
 * transaction: a state is there whole, or not at all.
 *
 *   m:<stateKey>          a Manifest (what makes a state; written last)
 *   b:<chainHash>/<codec> a BlockRecord (a 16-token KV block, named by the chain hash after it)
 *   b:<stateKey>/<codec>  a BlockRecord (a partial last block, or a fixed-size state whole)
 *
 * The small `use` store (src/store/schema.ts) holds what reads record, in
 * batches, so that a read never rewrites a manifest:
 *
 *   <stateKey>            last use (ms)
 *   hits:<stateKey>       how many requests reused the state (useHitKey)
 *   gone:<name>           when eviction removed the state or block of this name (useGoneKey)
 */

export interface BlockRef {
  /** IndexedDB key of the blob, without the "b:" prefix. */
  key: string;
  /** "sha256:<hex>" of the blob's bytes, checked on every read. */
  digest: string;
  start: number;
  end: number;
  /** fp32 | fp16 | int8 | kivi4: how this blob's bytes encode the block (the blob key ends in it too). */
  codec: string;
  /** Encoded size: what is stored, and what the digest covers. */
  bytes: number;
  /** Set when the blob holds more tokens than [start, end): a shorter state's tail shares the head of a longer state's block (src/store/shared-tails.ts). */
  blobTokens?: number;
}

/** What makes a stored state: written last, so a visible manifest means all its blobs are there. */
export interface Manifest {
  /** 2: tensors carry their token axis. (1: written before; upgraded when the database opens.) */
  v: 2;
  key: string;
  modelId: string;
  modelFp: string;
  /** The model's architecture name (display only; how to cut a state is in `tensors`). */
  arch: string;
  tokens: number[];
  tensors: TensorSpec[];
  blocks: BlockRef[];
  /** The state this one was continued from, if any (for the state graph). */
  parent: string | null;
  /** The codec every block of this state was written with (a block's own `codec` says the same). */
  codec: string;
  /** Sum of this state's blob sizes (blocks shared with other states counted here too). */
  bytes: number;
  /**
   * The receipt's blob_digest: sha256 of the JSON list of this state's own
   * block digests as written (it names the state's own cut, so it stays when a
   * tail is later shared with a longer state's block).
   */
  blobDigest?: string;
  /** SHA-256 of the receipt that made this state. */
  receipt: string | null;
  /** The receipt itself, as RFC 8785 JSON, so a chain can be verified after a reload. */
  receiptJson?: string;
  createdAt: number;
  lastUsed: number;
  pinned: boolean;
  label?: string;
  /** What computed this state (device, adapter, runtime versions, dtype): provenance, never part of the key. */
  provenance?: Provenance;
  /**
   * A state the engine kept at a K-token boundary inside a longer prefill of
   * a model whose states cannot be cut by token (Mamba), so that a later text
   * sharing only part of it resumes from the last boundary instead of from
   * nothing. Eviction takes those never reused before any other state.
   */
  checkpoint?: true;
  /**
   * Requests that reused this state, as counted in the `use` store (not
   * stored in the manifest record: filled in by list(), like lastUsed).
   */
  hits?: number;
  /**
   * Set when a read found a blob of this state missing or not matching its
   * digest. The state is kept (its tokens are here, so the engine recomputes
   * it when its model is loaded, which clears the flag); its bytes are never
   * served. See docs/guarantees.md.
   */
  damaged?: Damage;
}

export interface Damage {
  /** 'missing': a blob is gone; 'digest mismatch': a blob's bytes are not what its digest says; 'replaced': the blob was rewritten (another device recomputed it) and no longer matches this manifest. */
  reason: 'missing' | 'digest mismatch' | 'replaced';
  /** The blob keys concerned. */
  blocks: string[];
  at: number;
}

export interface BlockRecord {
  digest: string;
  codec: string;
  data: ArrayBuffer;
}

/** Quality limits on a lossy codec, measured by running the model (src/engine/quality.ts). */
export interface CodecConstraints {
  /** Largest allowed |logit − fp32 logit| over the probe; 0 allows only lossless fp32. */
  maxLogitError?: number;
  /** Largest allowed KL(fp32 ‖ codec) of a next-token distribution over the probe, in nats. */
  maxKL?: number;
  /** Greedy decoding of the probe must pick the same tokens as fp32 (default true). */
  requireGreedyMatch?: boolean;
  /** Tokens fed after the state before comparing (default: the state's last token). */
  probeTokens?: number[];
  /** Greedy tokens compared after the probe (default 32). */
  greedyTokens?: number;
}

/** How new states are encoded: one codec always, or the smallest meeting constraints ('auto'). */
export interface CodecPolicy {
  codec: 'fp32' | 'fp16' | 'int8' | 'kivi4' | 'auto';
  constraints?: CodecConstraints;
}

const M = 'm:';
const B = 'b:';
export const MANIFESTS = (): IDBKeyRange => IDBKeyRange.bound(M, M + '\uffff');
const BLOBS = (): IDBKeyRange => IDBKeyRange.bound(B, B + '\uffff');
/** Every blob of one block name, in any codec. */
export const BLOBS_OF = (name: string): IDBKeyRange => IDBKeyRange.bound(`${B}${name}/`, `${B}${name}/\uffff`);

export const manifestId = (stateKey: string): string => M + stateKey;
const HITS = 'hits:';
const GONE = 'gone:';
/** `use` store key of a state's hit count. */
export const useHitKey = (stateKey: string): string => HITS + stateKey;
/** `use` store key of an eviction record: `name` is a state key or a block's chain name (the state key of the tokens up to the block's end). */
export const useGoneKey = (name: string): string => GONE + name;
/** What a `use` store key records: a state's last use, its hit count, or an eviction. */
export function useKeyKind(k: IDBValidKey): { kind: 'last-use' | 'hits' | 'gone'; key: string } {
  const s = String(k);
  if (s.startsWith(HITS)) return { kind: 'hits', key: s.slice(HITS.length) };
  if (s.startsWith(GONE)) return { kind: 'gone', key: s.slice(GONE.length) };
  return { kind: 'last-use', key: s };
}
export const blobId = (blobKey: string): string => B + blobKey;
/** The blob key of an IndexedDB key from BLOBS / BLOBS_OF. */
export const blobKeyOf = (id: IDBValidKey): string => String(id).slice(B.length);
export const stateKeyOf = (id: IDBValidKey): string => String(id).slice(M.length);
/** A blob's key: the name of what it holds (a chain hash, or a state key) and its codec. */
export const blobKeyFor = (name: string, codec: string): string => `${name}/${codec}`;
/** The name in a blob key (what blobKeyFor was given). */
export const blobNameOf = (blobKey: string): string => blobKey.slice(0, blobKey.lastIndexOf('/'));

/**
 * Manifest reads, for tests that check how often a call reads each manifest:
 * a count, and (when a test sets `log` to an array) each key read, with the
 * phase it was read in ('write': inside a write transaction, which reads the
 * manifests it may rewrite; writes run behind calls, so the phase is the
 * reader's to say, not a time window).
 */
export const readStats: { manifests: number; log: { key: string; phase: 'read' | 'write' }[] | null } = {
  manifests: 0,
  log: null,
};

/**
 * A manifest as stored, in today's shape. A v1 manifest (written before
 * tensors carried their token axis) had KV tensors as the only 3-dimensional
 * ones, with tokens on axis 1.
 */
function upgradeManifest(m: Manifest | { v: 1 } | undefined): Manifest | undefined {
  if (!m) return undefined;
  if (m.v === 2) return m;
  const old = m as unknown as Manifest;
  return { ...old, v: 2, tensors: old.tensors.map((t) => (t.dims.length === 3 && t.tokenAxis === undefined ? { ...t, tokenAxis: 1 } : t)) };
}

export async function getManifest(s: IDBObjectStore, stateKey: string, phase: 'read' | 'write' = 'read'): Promise<Manifest | undefined> {
  readStats.manifests++;
  readStats.log?.push({ key: stateKey, phase });
  return upgradeManifest((await promisifyRequest(s.get(manifestId(stateKey)))) as Manifest | undefined);
}

export function putManifest(s: IDBObjectStore, m: Manifest): void {
  s.put(m, manifestId(m.key));
}

export async function allManifests(s: IDBObjectStore): Promise<Manifest[]> {
  const ms = (await promisifyRequest(s.getAll(MANIFESTS()))) as Manifest[];
  readStats.manifests += ms.length;
  return ms.map((m) => upgradeManifest(m)!);
}

export function getBlob(s: IDBObjectStore, blobKey: string): Promise<BlockRecord | undefined> {
  return promisifyRequest(s.get(blobId(blobKey)) as IDBRequest<BlockRecord | undefined>);
}

export async function hasBlob(s: IDBObjectStore, blobKey: string): Promise<boolean> {
  return (await promisifyRequest(s.getKey(blobId(blobKey)))) !== undefined;
}

export async function allBlobKeys(s: IDBObjectStore): Promise<string[]> {
  return ((await promisifyRequest(s.getAllKeys(BLOBS()))) as IDBValidKey[]).map(blobKeyOf);
}
