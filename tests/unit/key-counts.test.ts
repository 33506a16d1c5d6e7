import { describe, it, expect } from 'vitest';
import { localStatecart } from './support/node-engine.ts';
import { BLOCK_TOKENS, hashStats } from '../../src/core/key-chain.ts';
import { readStats } from '../../src/store/records.ts';

// The key travels as a value: one chain per call, each token hashed once, and
// each manifest read once outside the write (which reads the manifests it may
// rewrite, in its own transaction). These count that work. Writes go behind
// the calls: a counted call includes flush(), so its write is counted with it,
// and the work before it has landed first.

const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 17) % 50257);

/** A call's result once its write has landed. */
async function landed<T>(sc: { flush(): Promise<unknown> }, call: Promise<T>): Promise<T> {
  const r = await call;
  await sc.flush();
  return r;
}

async function counted<T>(fn: () => Promise<T>) {
  const t0 = hashStats.tokens;
  readStats.log = [];
  try {
    const value = await fn();
    const log = readStats.log;
    const outside = new Map<string, number>();
    for (const r of log) if (r.phase === 'read') outside.set(r.key, (outside.get(r.key) ?? 0) + 1);
    return { value, tokensHashed: hashStats.tokens - t0, log, outside };
  } finally {
    readStats.log = null;
  }
}

describe('one request, one key chain (the in-thread Statecart)', () => {
  it('infer on a stored state: each token hashed once; the state manifest read once; each candidate once', async () => {
    const sc = await localStatecart();
    await sc.loadModel({ model: 'tiny-gpt2' });
    const base = await sc.createState({ tokens: ids(40, 1) });
    await sc.store.dropHot();
    const delta = ids(5, 2);
    const r = await counted(() => landed(sc, sc.infer({ stateKey: base.stateKey, deltaTokens: delta, maxNewTokens: 3 })));
    expect(r.value.tier).toBe('stored');
    // 40 + 5 + 3 tokens, each fed to SHA-256 once.
    expect(r.tokensHashed).toBe(40 + 5 + 3);
    // Outside the write: the state itself once, and the 5 longer prefixes the delta makes, once each.
    expect(r.outside.get(base.stateKey)).toBe(1);
    expect([...r.outside.values()].every((c) => c === 1)).toBe(true);
    expect(r.outside.size).toBe(1 + delta.length);
    // Inside the write: the new key (is it stored already?) and the shorter states whose tails the new blocks can hold.
    const inWrite = r.log.filter((x) => x.phase === 'write').map((x) => x.key);
    expect(inWrite).toContain(r.value.newStateKey);
    expect(new Set(inWrite).size).toBe(inWrite.length);
    // Tails: lengths after the base's last full block (32) up to the new state's length, not on a block edge.
    const n = 40 + 5 + 3;
    const tails = Array.from({ length: n - 1 - 32 }, (_, i) => 33 + i).filter((L) => L % BLOCK_TOKENS !== 0).length;
    expect(inWrite.length).toBe(1 + tails);
  });

  it('infer on a hot state reads no manifest outside its write, and hashes each token once', async () => {
    const sc = await localStatecart();
    await sc.loadModel({ model: 'tiny-gpt2' });
    const base = await sc.createState({ tokens: ids(64, 3) });
    await sc.flush();
    const r = await counted(() => landed(sc, sc.infer({ stateKey: base.stateKey, deltaTokens: ids(8, 4), maxNewTokens: 4 })));
    expect(r.value.tier).toBe('hot');
    expect(r.tokensHashed).toBe(64 + 8 + 4);
    expect(r.outside.size).toBe(0);
  });

  it('createState of a new text hashes each token once; a repeat reads one manifest and hashes each token once', async () => {
    const sc = await localStatecart();
    await sc.loadModel({ model: 'tiny-gpt2' });
    const tokens = ids(50, 5);
    const first = await counted(() => landed(sc, sc.createState({ tokens })));
    expect(first.tokensHashed).toBe(50);
    expect([...first.outside.values()].every((c) => c === 1)).toBe(true);
    const again = await counted(() => landed(sc, sc.createState({ tokens })));
    expect(again.value.stateKey).toBe(first.value.stateKey);
    expect(again.value.processed).toBe(0);
    expect(again.tokensHashed).toBe(50);
    expect(again.log.filter((x) => x.phase === 'write')).toEqual([]);
    // The hot tier answers: no manifest read at all.
    expect(again.outside.size).toBe(0);
  });

  it("the receipt is written in the state's own transaction: its blob digest is the stored one", async () => {
    const sc = await localStatecart();
    await sc.loadModel({ model: 'tiny-gpt2' });
    const a = await sc.createState({ tokens: ids(30, 6) });
    const b = await sc.infer({ stateKey: a.stateKey, deltaTokens: ids(4, 7), maxNewTokens: 2 });
    await sc.flush();
    const m = (await sc.store.getManifest(b.newStateKey))!;
    expect(m.receipt).toBe(b.receipt.hash);
    expect(m.blobDigest).toBe(b.receipt.receipt.blob_digest);
    expect(JSON.parse(m.receiptJson!)).toEqual(b.receipt.receipt);
    expect(await sc.receipt({ stateKey: b.newStateKey })).toEqual(b.receipt);
  });
});
