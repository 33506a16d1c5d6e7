import { canonicalize } from './canonical-json.ts';
import { digestOf } from './sha256.ts';
import { utf8 } from './bytes.ts';

export type ReceiptOp = 'create' | 'infer' | 'merge' | 'compact' | 'import';

/**
 * What an operation did, and nothing that varies between runs: timings travel
 * beside a receipt, never inside, so the same calls give the same receipts.
 */
export interface Receipt {
  op: ReceiptOp;
  model_fp: string;
  input_keys: string[];
  delta_tokens: number;
  output_key: string;
  /** sha256 of the RFC 8785 JSON array of the output state's blob digests, in token order. */
  blob_digest: string;
  tokens_processed: number;
  tokens_reused: number;
  /** Hash of the receipt of the state this one came from, or null for a base. */
  prev: string | null;
}

export interface SignedReceipt {
  receipt: Receipt;
  /** "sha256:<hex>" of the receipt's canonical JSON bytes. */
  hash: string;
}

export const receiptBytes = (r: Receipt): Uint8Array => utf8(canonicalize(r));

export async function signReceipt(r: Receipt): Promise<SignedReceipt> {
  return { receipt: r, hash: await digestOf(receiptBytes(r)) };
}

export async function blobDigest(blockDigests: string[]): Promise<string> {
  return digestOf(utf8(canonicalize(blockDigests)));
}

export interface VerifyResult {
  ok: boolean;
  /** Index of the first bad link, if any. */
  firstBad?: number;
  reason?: string;
}

/**
 * Checks a chain, oldest first: each receipt's hash is recomputed from its
 * bytes, and each one's `prev` must be the hash of the one before it.
 * Receipts may arrive as parsed objects or as their canonical JSON text.
 */
export async function verifyReceipts(chain: (SignedReceipt | { json: string; hash: string })[]): Promise<VerifyResult> {
  let prevHash: string | null = null;
  for (let i = 0; i < chain.length; i++) {
    const link = chain[i]!;
    let r: Receipt;
    let bytes: Uint8Array;
    if ('json' in link) {
      bytes = utf8(link.json);
      try {
        r = JSON.parse(link.json) as Receipt;
      } catch {
        return { ok: false, firstBad: i, reason: `receipt ${i} is not valid JSON` };
      }
    } else {
      r = link.receipt;
      bytes = receiptBytes(r);
    }
    const h = await digestOf(bytes);
    if (h !== link.hash) return { ok: false, firstBad: i, reason: `receipt ${i}: its hash is ${h}, the chain says ${link.hash}` };
    if (i > 0 && r.prev !== prevHash) return { ok: false, firstBad: i, reason: `receipt ${i}: prev is ${r.prev}, expected ${prevHash}` };
    prevHash = link.hash;
  }
  return { ok: true };
}
