import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { KeyChain, hashStats, stateKey } from '../../src/core/key-chain.ts';
import { modelFingerprint } from '../../src/core/model-fingerprint.ts';

// Independent implementation of DESIGN.md "State keys", straight from the bytes:
// block_0 = sha256("statecart/v1" ‖ fp(32 raw bytes) ‖ u32le ids), block_i = sha256(block_{i-1} ‖ u32le ids).
function u32le(ids: number[]): Buffer {
  const b = Buffer.alloc(ids.length * 4);
  ids.forEach((t, i) => b.writeUInt32LE(t, i * 4));
  return b;
}
function refKey(fpHex: string, ids: number[]): string {
  let prev: Buffer = Buffer.concat([Buffer.from('statecart/v1', 'utf8'), Buffer.from(fpHex, 'hex')]);
  for (let s = 0; s < ids.length; s += 16)
    prev = createHash('sha256')
      .update(prev)
      .update(u32le(ids.slice(s, s + 16)))
      .digest();
  return 'sha256:' + prev.toString('hex');
}

const FP = 'a'.repeat(64);
const PINNED: [number[], string][] = [
  [[0], 'sha256:f331dffe4c019fd07bcc9ca587cdba39d9b9ceca5a863ba5a8ce66812f470dbd'],
  [[15496, 995], 'sha256:7fe72b743cf967cb6ac882aef734e410b97f9d2627b8577acb2fb88a4bfab284'],
  [Array.from({ length: 16 }, (_, i) => i), 'sha256:b065108cc8662d6485fd9573899215966ab365c893dd5cdafe6cb5026f6334d3'],
  [Array.from({ length: 20 }, (_, i) => i * 1000), 'sha256:53174b5d13a0e721712234e73f85adbb9f1f2be53187069b34fba05454578d62'],
];

describe('state keys: known answers', () => {
  it('equal an independent node:crypto computation over the spelled-out bytes, and pinned values', async () => {
    for (const [ids, hex] of PINNED) {
      expect(refKey(FP, ids)).toBe(hex);
      expect(await stateKey(FP, ids)).toBe(hex);
      expect(await stateKey('sha256:' + FP, ids)).toBe(hex);
    }
    // The first one, by hand: one hash over 12 + 32 + 4 bytes.
    const bytes = Buffer.concat([Buffer.from('statecart/v1'), Buffer.alloc(32, 0xaa), Buffer.from([0, 0, 0, 0])]);
    expect(bytes.length).toBe(48);
    expect('sha256:' + createHash('sha256').update(bytes).digest('hex')).toBe(PINNED[0]![1]);
  });

  it('every prefix key, and the block chain, agree with the reference on lengths around block edges', async () => {
    const ids = Array.from({ length: 50 }, (_, i) => (i * 40503 + 17) % 50257);
    const chain = await KeyChain.create(FP, ids);
    const keys = chain.keysFrom(1);
    expect(keys.length).toBe(50);
    for (const L of [1, 15, 16, 17, 31, 32, 33, 50]) expect(keys[L - 1]).toBe(refKey(FP, ids.slice(0, L)));
    expect([0, 1, 2].map((i) => chain.blockKey(i))).toEqual([16, 32, 48].map((L) => refKey(FP, ids.slice(0, L))));
    // Out of order, from a fresh chain, and from a chain grown by append: the same keys.
    const other = await KeyChain.create(FP, ids.slice(0, 20));
    expect(other.keyAt(18)).toBe(refKey(FP, ids.slice(0, 18)));
    expect(other.keyAt(3)).toBe(refKey(FP, ids.slice(0, 3)));
    other.append(ids.slice(20));
    for (const L of [33, 17, 50, 49]) expect(other.keyAt(L)).toBe(refKey(FP, ids.slice(0, L)));
    expect(other.prefix(40).key()).toBe(refKey(FP, ids.slice(0, 40)));
  });

  it('changes with the model, a token, the order, and token ids ≥ 2^16', async () => {
    const base = await stateKey(FP, [1, 2, 3]);
    expect(await stateKey('b'.repeat(64), [1, 2, 3])).not.toBe(base);
    expect(await stateKey(FP, [1, 2, 4])).not.toBe(base);
    expect(await stateKey(FP, [2, 1, 3])).not.toBe(base);
    expect(await stateKey(FP, [70000])).toBe(refKey(FP, [70000]));
  });

  it('refuses an empty token list and a bad fingerprint', async () => {
    await expect(stateKey(FP, [])).rejects.toThrow(/empty/);
    await expect(stateKey('abcd', [1])).rejects.toThrow(/32 bytes/);
  });

  it('model fingerprint: sha256 of the RFC 8785 JSON of a fixed identity', async () => {
    const id = {
      arch: 'gpt2' as const,
      config: { n_layer: 2, n_head: 4, n_embd: 64, vocab_size: 50257, n_positions: 1024 },
      weights_sha256: '0'.repeat(64),
      tokenizer_sha256: '1'.repeat(64),
      dtype: 'fp32' as const,
    };
    // Keys sorted, no spaces, the format version added.
    const json = `{"arch":"gpt2","config":{"n_embd":64,"n_head":4,"n_layer":2,"n_positions":1024,"vocab_size":50257},"dtype":"fp32","format_version":1,"tokenizer_sha256":"${'1'.repeat(64)}","weights_sha256":"${'0'.repeat(64)}"}`;
    const want = createHash('sha256').update(json, 'utf8').digest('hex');
    expect(await modelFingerprint(id)).toBe(want);
    expect(want).toBe('5ad6c06dbeffad25511c4dbe6af4990b25e0a7df520cbef15ebbbb1e674de186');
    expect(await modelFingerprint({ ...id, dtype: 'fp16' })).not.toBe(want);
  });

  it('a chain feeds each token to SHA-256 once, asked for in the order requests ask (ascending, and past a block already extended): every prefix key of n tokens costs n tokens hashed and n digests', async () => {
    const fp = 'ab'.repeat(32);
    const tokens = Array.from({ length: 53 }, (_, i) => (i * 7919) % 50257);
    const chain = await KeyChain.create(fp, tokens.slice(0, 30));
    const t0 = hashStats.tokens;
    const d0 = hashStats.digests;
    chain.keysFrom(1);
    chain.append(tokens.slice(30));
    chain.keyAt(40);
    chain.keysFrom(31);
    // Asking again hashes nothing.
    chain.keysFrom(1);
    chain.key();
    expect(hashStats.tokens - t0).toBe(53);
    expect(hashStats.digests - d0).toBe(53);
    for (const L of [1, 16, 30, 31, 53]) expect(chain.keyAt(L)).toBe(refKey(fp, tokens.slice(0, L)));
    // Only the last key of a long chain: one digest per block, and one for the tail.
    const t1 = hashStats.tokens;
    const d1 = hashStats.digests;
    expect((await KeyChain.create(fp, tokens)).key()).toBe(refKey(fp, tokens));
    expect(hashStats.tokens - t1).toBe(53);
    // Three full blocks, then the keys of lengths 49..53 inside the last one.
    expect(hashStats.digests - d1).toBe(3 + 5);
  });
});
