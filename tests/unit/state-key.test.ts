import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { stateKey, prefixKeys, blockChain, keyOf } from '../../src/core/state-key.ts';
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
    const keys = await prefixKeys(FP, ids);
    expect(keys.length).toBe(50);
    for (const L of [1, 15, 16, 17, 31, 32, 33, 50]) expect(keys[L - 1]).toBe(refKey(FP, ids.slice(0, L)));
    const chain = await blockChain(FP, ids);
    expect(chain.map(keyOf)).toEqual([16, 32, 48, 50].map((L) => refKey(FP, ids.slice(0, L))));
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

  it('prefix keys from a given length equal the full list there, and leave shorter slots empty', async () => {
    const fp = 'ab'.repeat(32);
    const tokens = Array.from({ length: 53 }, (_, i) => (i * 7919) % 50257);
    const all = await prefixKeys(fp, tokens);
    for (const from of [1, 15, 16, 17, 40, 53]) {
      const some = await prefixKeys(fp, tokens, from);
      expect(some.length).toBe(all.length);
      for (let L = 1; L <= tokens.length; L++) expect(some[L - 1], `length ${L} from ${from}`).toBe(L >= from ? all[L - 1] : '');
    }
  });
});
