import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { signReceipt, verifyReceipts, receiptBytes, blobDigest, type Receipt } from '../../src/core/receipts.ts';
import { canonicalize } from '../../src/core/canonical-json.ts';

const h = (c: string) => 'sha256:' + c.repeat(64);
const FIXED: Receipt = {
  op: 'infer',
  model_fp: 'a'.repeat(64),
  input_keys: [h('b')],
  delta_tokens: 3,
  output_key: h('c'),
  blob_digest: h('d'),
  tokens_processed: 7,
  tokens_reused: 100,
  prev: h('e'),
};
const FIXED_JSON = `{"blob_digest":"${h('d')}","delta_tokens":3,"input_keys":["${h('b')}"],"model_fp":"${'a'.repeat(64)}","op":"infer","output_key":"${h('c')}","prev":"${h('e')}","tokens_processed":7,"tokens_reused":100}`;
const FIXED_HASH = 'sha256:519c861ee7f457251575711871e419c2cb9938cb15af495fd2ce7242fc38c483';
const sha = (s: string | Uint8Array) => 'sha256:' + createHash('sha256').update(s).digest('hex');

async function chainOf(n: number) {
  const out = [];
  let prev: string | null = null;
  for (let i = 0; i < n; i++) {
    const r: Receipt = {
      op: i === 0 ? 'create' : i === n - 1 ? 'merge' : 'infer',
      model_fp: 'a'.repeat(64),
      input_keys: i ? [h(String(i))] : [],
      delta_tokens: i * 2,
      output_key: h(String(i + 1)),
      blob_digest: h('f'),
      tokens_processed: 10 + i,
      tokens_reused: 5 * i,
      prev,
    };
    const s = await signReceipt(r);
    out.push(s);
    prev = s.hash;
  }
  return out;
}

describe('receipts: known answers and verification', () => {
  it('a fixed receipt has pinned canonical bytes and hash', async () => {
    expect(canonicalize(FIXED)).toBe(FIXED_JSON);
    expect(new TextDecoder().decode(receiptBytes(FIXED))).toBe(FIXED_JSON);
    expect(sha(FIXED_JSON)).toBe(FIXED_HASH);
    expect((await signReceipt(FIXED)).hash).toBe(FIXED_HASH);
    // Field order in the object does not matter; values do.
    const shuffled = Object.fromEntries(Object.entries(FIXED).reverse()) as unknown as Receipt;
    expect((await signReceipt(shuffled)).hash).toBe(FIXED_HASH);
    expect((await signReceipt({ ...FIXED, tokens_reused: 101 })).hash).not.toBe(FIXED_HASH);
  });

  it('blob_digest is sha256 of the JSON list of block digests', async () => {
    const ds = [h('1'), h('2')];
    expect(await blobDigest(ds)).toBe(sha(`["${h('1')}","${h('2')}"]`));
  });

  it('a good chain verifies, as objects and as canonical text', async () => {
    const chain = await chainOf(5);
    expect(await verifyReceipts(chain)).toEqual({ ok: true });
    expect(await verifyReceipts(chain.map((s) => ({ json: canonicalize(s.receipt), hash: s.hash })))).toEqual({ ok: true });
  });

  it('one altered byte anywhere fails at exactly that link', async () => {
    const chain = await chainOf(5);
    const text = chain.map((s) => ({ json: canonicalize(s.receipt), hash: s.hash }));
    for (let link = 0; link < text.length; link++) {
      for (const pos of [0, 7, Math.floor(text[link]!.json.length / 2), text[link]!.json.length - 2]) {
        const bad = text.map((x) => ({ ...x }));
        const j = bad[link]!.json;
        const c = j.charCodeAt(pos);
        bad[link]!.json = j.slice(0, pos) + String.fromCharCode(c === 0x30 ? 0x31 : c ^ 1) + j.slice(pos + 1);
        const v = await verifyReceipts(bad);
        expect(v.ok, `link ${link}, byte ${pos}`).toBe(false);
        expect(v.firstBad).toBe(link);
        expect(v.reason).toContain(`receipt ${link}`);
      }
      // A changed hash is caught at its own link too (not only at the next one's prev).
      const bad = text.map((x) => ({ ...x }));
      bad[link]!.hash = bad[link]!.hash.slice(0, -1) + (bad[link]!.hash.endsWith('0') ? '1' : '0');
      expect((await verifyReceipts(bad)).firstBad).toBe(link);
    }
  });

  it('a link that is re-signed but not chained fails at that link', async () => {
    const chain = await chainOf(4);
    const forged = await signReceipt({ ...chain[2]!.receipt, tokens_processed: 0 });
    const v = await verifyReceipts([chain[0]!, chain[1]!, forged, chain[3]!]);
    expect(v.ok).toBe(false);
    expect(v.firstBad).toBe(3);
    const wrongPrev = await signReceipt({ ...chain[1]!.receipt, prev: h('9') });
    expect((await verifyReceipts([chain[0]!, wrongPrev])).firstBad).toBe(1);
  });
});
