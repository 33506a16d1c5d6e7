import type { TensorSpec } from '../models/state-layout.ts';

export interface BlockRef {
  /** IndexedDB key of the blob, without the "b:" prefix. */
  key: string;
  /** "sha256:<hex>" of the blob's bytes, checked on every read. */
  digest: string;
  start: number;
  end: number;
  codec: string;
  bytes: number;
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
}

export interface BlockRecord {
  digest: string;
  codec: string;
  data: ArrayBuffer;
}
