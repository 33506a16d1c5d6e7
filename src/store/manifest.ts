import type { TensorSpec } from '../models/state-layout.ts';

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
  v: 1;
  key: string;
  modelId: string;
  modelFp: string;
  arch: 'gpt2' | 'mamba';
  tokens: number[];
  tensors: TensorSpec[];
  blocks: BlockRef[];
  /** The state this one was continued from, if any (for the state graph). */
  parent: string | null;
  /** The codec every block of this state was written with (a block's own `codec` says the same). */
  codec: string;
  /** Sum of this state's blob sizes (blocks shared with other states counted here too). */
  bytes: number;
  /** SHA-256 of the receipt that made this state. */
  receipt: string | null;
  /** The receipt itself, as RFC 8785 JSON, so a chain can be verified after a reload. */
  receiptJson?: string;
  createdAt: number;
  lastUsed: number;
  pinned: boolean;
  label?: string;
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
