import { test, expect, chromium } from '@playwright/test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPage, referenceLogits, referenceGreedy, maxAbsDiff, LOREM } from './helpers.ts';
import { launchOptions } from './browser.ts';

test.describe('foundation: tiny-gpt2 in a worker, states in IndexedDB', () => {
  test('the tokenizer gives GPT-2 ids', async ({ page }) => {
    await openPage(page);
    const ids = await page.evaluate(async () => {
      const sc = window.statecart!;
      return {
        hello: await sc.tokenize({ text: 'Hello world' }),
        the: await sc.tokenize({ text: ' the' }),
        eot: await sc.tokenize({ text: '<|endoftext|>' }),
        round: await sc.decode({ tokens: await sc.tokenize({ text: 'Grüße, 世界! 🙂' }) }),
      };
    });
    expect(ids.hello).toEqual([15496, 995]);
    expect(ids.the).toEqual([262]);
    expect(ids.eot).toEqual([50256]);
    expect(ids.round).toBe('Grüße, 世界! 🙂');
  });

  for (const device of ['wasm', 'webgpu'] as const) {
    test(`ONNX logits equal the reference forward pass on ${device}`, async ({ page }) => {
      await openPage(page, { device });
      const health = await page.evaluate(() => window.statecart!.health());
      expect(health.device).toBe(device);
      // Lengths chosen to cross the 128-token prefill chunk (past + new in one call).
      const prompts = [
        [15496],
        [15496, 995, 11, 314, 716],
        Array.from({ length: 37 }, (_, i) => (i * 977) % 50257),
        Array.from({ length: 140 }, (_, i) => (i * 7919 + 13) % 50257),
      ];
      for (const tokens of prompts) {
        const got = await page.evaluate(async (t) => Array.from(await window.statecartTesting!.probe({ tokens: t })), tokens);
        const want = referenceLogits(tokens);
        const d = maxAbsDiff(got, want);
        expect(d, `max abs logit difference for ${tokens.length} tokens on ${device}`).toBeLessThanOrEqual(1e-4);
      }
    });
  }

  test('continuing from a stored state equals recomputing, and processes only the delta', async ({ page }) => {
    await openPage(page);
    const base = LOREM.repeat(3);
    const delta = ' Then the next request asks';
    const r = await page.evaluate(
      async ({ base, delta }) => {
        const sc = window.statecart!;
        const baseTokens = await sc.tokenize({ text: base });
        const deltaTokens = await sc.tokenize({ text: delta });
        const a = await sc.createState({ text: base });
        const b = await sc.infer({ stateKey: a.stateKey, delta, maxNewTokens: 12 });
        // The same request with nothing cached: a fresh store, the whole text at once.
        await sc.clearStore();
        const full = await sc.createState({ tokens: [...baseTokens, ...deltaTokens] });
        const c = await sc.infer({ stateKey: full.stateKey, maxNewTokens: 12 });
        return { baseTokens, deltaTokens, a, b, c };
      },
      { base, delta },
    );
    expect(r.a.processed).toBe(r.baseTokens.length);
    expect(r.a.reused).toBe(0);
    expect(r.b.savings.tokensReused).toBe(r.baseTokens.length);
    // Only the delta, plus one step per generated token.
    expect(r.b.savings.tokensProcessed).toBe(r.deltaTokens.length + 12);
    expect(r.b.tier).toBe('hot');
    const want = referenceGreedy([...r.baseTokens, ...r.deltaTokens], 12);
    expect(r.b.outputTokens).toEqual(want);
    expect(r.c.outputTokens).toEqual(want);
    expect(new Set(want).size, 'the tiny model must not repeat one token').toBeGreaterThan(3);
    // The two routes reach the same state: same tokens, same key.
    expect(r.c.newStateKey).toBe(r.b.newStateKey);
  });

  test('a state survives a reload and a browser restart, and is reused from IndexedDB', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'statecart-profile-'));
    try {
      const baseURL = test.info().project.use.baseURL!;
      let ctx = await chromium.launchPersistentContext(dir, { ...launchOptions(), baseURL });
      let page = ctx.pages()[0] ?? (await ctx.newPage());
      await openPage(page);
      const text = LOREM.repeat(2);
      // durable: written before the page goes (a state still queued would go with it).
      const a = await page.evaluate((t) => window.statecart!.createState({ text: t }, { durable: true }), text);
      await page.reload();
      await openPage(page, { clear: false });
      const afterReload = await page.evaluate(async (k) => {
        const sc = window.statecart!;
        const info = await sc.getState({ stateKey: k });
        const r = await sc.infer({ stateKey: k, delta: ' And', maxNewTokens: 4 });
        return { info, r, health: await sc.health() };
      }, a.stateKey);
      expect(afterReload.info.tokens).toBe(a.tokens);
      expect(afterReload.info.tier).toBe('stored');
      expect(afterReload.r.tier).toBe('stored');
      expect(afterReload.r.savings.tokensReused).toBe(a.tokens);
      expect(afterReload.health.blobReads).toBeGreaterThan(0);
      await ctx.close();
      // A new browser process on the same profile.
      ctx = await chromium.launchPersistentContext(dir, { ...launchOptions(), baseURL });
      page = ctx.pages()[0] ?? (await ctx.newPage());
      await openPage(page, { clear: false });
      const again = await page.evaluate(async (k) => {
        const sc = window.statecart!;
        const states = await sc.listStates();
        const r = await sc.infer({ stateKey: k, delta: ' And', maxNewTokens: 4 });
        return { states: states.map((s) => s.key), r };
      }, a.stateKey);
      expect(again.states).toContain(a.stateKey);
      expect(again.r.savings.tokensReused).toBe(a.tokens);
      expect(again.r.outputTokens).toEqual(afterReload.r.outputTokens);
      await ctx.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a blob corrupted in IndexedDB is detected and never served', async ({ page }) => {
    await openPage(page);
    const r = await page.evaluate(async (text) => {
      const sc = window.statecart!;
      const a = await sc.createState({ text });
      const clean = await sc.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 6 });
      await sc.flush();
      // Flip one byte of one stored KV block, behind the store's back.
      const flipped = await new Promise<string>((resolve, reject) => {
        const open = indexedDB.open('statecart');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const db = open.result;
          const tx = db.transaction('kv', 'readwrite');
          const os = tx.objectStore('kv');
          const req = os.openCursor(IDBKeyRange.bound('b:', 'b:\uffff'));
          let done = '';
          req.onsuccess = () => {
            const cur = req.result;
            if (!cur || done) return;
            const rec = cur.value as { digest: string; codec: string; data: ArrayBuffer };
            const bytes = new Uint8Array(rec.data.slice(0));
            bytes[17] ^= 0x40;
            cur.update({ ...rec, data: bytes.buffer });
            done = String(cur.key);
          };
          tx.oncomplete = () => resolve(done);
          tx.onerror = () => reject(tx.error);
        };
      });
      await window.statecartTesting!.dropHot();
      const verify = await sc.verifyState({ stateKey: a.stateKey });
      const probeErr = await window.statecartTesting!.probe({ tokens: [11], stateKey: a.stateKey }).then(
        () => 'served!',
        (e: Error) => e.name,
      );
      // infer does not serve the damaged block: it recomputes from the tokens.
      const again = await sc.infer({ stateKey: a.stateKey, delta: ' so', maxNewTokens: 6 });
      const verifyAfter = await sc.verifyState({ stateKey: a.stateKey });
      return { flipped, verify, probeErr, clean, again, verifyAfter };
    }, LOREM.repeat(2));
    expect(r.flipped).toMatch(/^b:/);
    expect(r.verify.ok).toBe(false);
    expect(r.verify.damaged.length).toBe(1);
    expect(r.probeErr).toBe('CorruptBlob');
    expect(r.again.tier).toBe('recomputed');
    expect(r.again.outputTokens).toEqual(r.clean.outputTokens);
    // The recompute rewrote the damaged block: the state is whole again.
    expect(r.verifyAfter.ok).toBe(true);
  });
});
