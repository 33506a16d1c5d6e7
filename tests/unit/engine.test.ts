import { describe, it, expect } from 'vitest';
import { nodeEngine } from './support/node-engine.ts';
import { BLOCK_TOKENS } from '../../src/core/key-chain.ts';
import { verifyReceipts } from '../../src/core/receipts.ts';

const BASE = 'The cache keys every state by the SHA-256 of its model and its tokens, so a prefix computed once is found again. '.repeat(3);

describe('engine (Node, fake IndexedDB, onnxruntime-node)', () => {
  it('creates a state, continues it from the cache, and equals recomputing', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ text: BASE });
    expect(a.reused).toBe(0);
    expect(a.processed).toBe(a.tokens);
    const b = await engine.infer({ stateKey: a.stateKey, delta: ' Next', maxNewTokens: 8 });
    expect(b.savings.tokensReused).toBe(a.tokens);
    // Without the cache: the whole text (state + delta) and the generation.
    expect(b.savings.naiveTokens).toBe(a.tokens + b.deltaTokens + 8);
    expect(b.savings.tokensProcessed).toBe(b.deltaTokens + 8);
    expect(b.tier).toBe('hot');
    // (its write landed first: write-behind)
    await store.dropHot();
    const c = await engine.infer({ stateKey: a.stateKey, delta: ' Next', maxNewTokens: 8 });
    expect(c.tier).toBe('stored');
    expect(c.outputTokens).toEqual(b.outputTokens);
    const { engine: fresh } = await nodeEngine();
    const whole = await fresh.createState({ text: BASE + ' Next' });
    const d = await fresh.infer({ stateKey: whole.stateKey, maxNewTokens: 8 });
    expect(d.outputTokens).toEqual(b.outputTokens);
    expect(d.newStateKey).toBe(b.newStateKey);
  });

  it('finds the longest stored prefix by itself and shares full blocks', async () => {
    const { engine, store } = await nodeEngine();
    const a = await engine.createState({ text: BASE });
    const b = await engine.createState({ text: BASE + ' and a branch that goes on for a while' });
    expect(b.reused).toBe(a.tokens);
    // (usage counts what has landed: writes go behind the calls)
    await store.flush();
    const u = await store.usage();
    // The first state's blocks all lie inside the second's (its partial tail
    // is read from the head of the second's block): one copy of each.
    expect(a.tokens % BLOCK_TOKENS).not.toBe(0);
    expect(u.blobs).toBe(Math.ceil(b.tokens / BLOCK_TOKENS));
    expect((await engine.getState(a.stateKey)).tokens).toBe(a.tokens);
    // Deleting the first frees nothing: every block it used is the second's too.
    const del = await engine.deleteState(a.stateKey);
    expect(del.blobsFreed).toBe(0);
    const again = await engine.infer({ stateKey: b.stateKey, maxNewTokens: 2 });
    expect(again.savings.tokensReused).toBeGreaterThan(0);
  });

  it('receipts chain and verify; one altered byte fails at that link', async () => {
    const { engine } = await nodeEngine();
    const a = await engine.createState({ text: BASE });
    const b = await engine.infer({ stateKey: a.stateKey, delta: ' one', maxNewTokens: 2 });
    const c = await engine.infer({ stateKey: b.newStateKey, delta: ' two', maxNewTokens: 2 });
    const chain = [a.receipt, b.receipt, c.receipt];
    expect(await verifyReceipts(chain)).toEqual({ ok: true });
    expect(c.receipt.receipt.prev).toBe(b.receipt.hash);
    const { canonicalize } = await import('../../src/core/canonical-json.ts');
    const canon = chain.map((r) => ({ json: canonicalize(r.receipt), hash: r.hash }));
    expect((await verifyReceipts(canon)).ok).toBe(true);
    const bad = canon.map((x) => ({ ...x }));
    bad[1]!.json = bad[1]!.json.replace('"tokens_processed":', '"tokens_processed":1');
    const v = await verifyReceipts(bad);
    expect(v.ok).toBe(false);
    expect(v.firstBad).toBe(1);
  });

  it('refuses to overflow the context with a typed error naming compact', async () => {
    const { engine } = await nodeEngine();
    const a = await engine.createState({ tokens: Array.from({ length: 1000 }, (_, i) => (i * 31) % 50000) });
    const err = await engine.infer({ stateKey: a.stateKey, deltaTokens: Array(20).fill(11), maxNewTokens: 10 }).catch((e) => e);
    expect(err.name).toBe('ContextOverflow');
    expect(err.message).toMatch(/compact/);
  });

  it('a cancelled prefill writes nothing', async () => {
    const { engine, store } = await nodeEngine();
    const ac = new AbortController();
    const p = engine.createState(
      { tokens: Array.from({ length: 600 }, (_, i) => (i * 7) % 50000) },
      {
        signal: ac.signal,
        onProgress: (x) => {
          if (x.done >= 128) ac.abort();
        },
      },
    );
    const err = await p.catch((e) => e);
    expect(err.name).toBe('Aborted');
    const u = await store.usage();
    expect(u.states).toBe(0);
    expect(
      await store.idb(
        'readonly',
        (s) =>
          new Promise((r) => {
            const q = s.count();
            q.onsuccess = () => r(q.result);
          }),
      ),
    ).toBe(0);
  });
});
