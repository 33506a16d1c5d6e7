import { test, expect, type Page } from '@playwright/test';
import { openPage, LOREM } from './helpers.ts';

/** Every key and value of the worker's IndexedDB, read from the page (same origin), blob bytes hashed; after the queued writes land. */
async function idbSnapshot(page: Page): Promise<[string, string][]> {
  return page.evaluate(async () => {
    await window.statecart?.flush();
    const db = await new Promise<IDBDatabase>((r, j) => {
      const q = indexedDB.open('statecart');
      q.onsuccess = () => r(q.result);
      q.onerror = () => j(q.error);
    });
    const tx = db.transaction('kv', 'readonly').objectStore('kv');
    const [keys, values] = await Promise.all(
      [tx.getAllKeys(), tx.getAll()].map(
        (q) =>
          new Promise<unknown[]>((r) => {
            q.onsuccess = () => r(q.result as unknown[]);
          }),
      ),
    );
    db.close();
    const out: [string, string][] = [];
    for (let i = 0; i < keys!.length; i++) {
      const v = values![i] as Record<string, unknown>;
      let text: string;
      if (v && v.data instanceof ArrayBuffer) {
        const d = new Uint8Array(await crypto.subtle.digest('SHA-256', v.data));
        text = JSON.stringify({ ...v, data: Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('') });
      } else text = JSON.stringify(v);
      out.push([String(keys![i]), text]);
    }
    return out;
  });
}

test.describe('protocol on WASM through the library', () => {
  test('the same calls from an empty store give the same keys, blob digests and receipts', async ({ page }) => {
    await openPage(page, { device: 'wasm' });
    const runs = [];
    for (let i = 0; i < 2; i++) {
      await page.evaluate(() => window.statecart!.clearStore());
      const r = await page.evaluate(async (text) => {
        const sc = window.statecart!;
        const out: string[] = [];
        const a = await sc.createState({ text });
        const b = await sc.infer({ stateKey: a.stateKey, delta: ' Next question?', maxNewTokens: 6 });
        const c = await sc.infer({ stateKey: b.newStateKey, delta: ' More', maxNewTokens: 5, sampling: { temperature: 0.8, topK: 40, topP: 0.9, seed: 5 } });
        const m = await sc.merge({ stateKeys: [a.stateKey, b.newStateKey, c.newStateKey] });
        const k = await sc.compact({ stateKey: m.newStateKey, keep: { firstTokens: 16, lastTokens: 8 } });
        for (const x of [a.receipt, b.receipt, c.receipt, m.receipt, k.receipt]) out.push(JSON.stringify(x));
        return { keys: [a.stateKey, b.newStateKey, c.newStateKey, m.newStateKey, k.newStateKey], receipts: out, released: m.released };
      }, LOREM.repeat(2));
      const blobs = (await idbSnapshot(page)).filter(([k]) => k.startsWith('b:'));
      runs.push({ ...r, blobs });
    }
    expect(runs[0]!.released.length).toBe(2);
    expect(runs[0]!.keys[3]).toBe(runs[0]!.keys[2]);
    expect(runs[0]!.blobs.length).toBeGreaterThan(0);
    expect(runs[1]!.keys).toEqual(runs[0]!.keys);
    expect(runs[1]!.receipts).toEqual(runs[0]!.receipts);
    expect(runs[1]!.blobs).toEqual(runs[0]!.blobs);
  });

  test('a prefill cancelled halfway through the AbortSignal leaves IndexedDB byte for byte unchanged; progress is monotonic', async ({ page }) => {
    await openPage(page, { device: 'wasm' });
    await page.evaluate(async (text) => {
      const sc = window.statecart!;
      const a = await sc.createState({ text });
      await sc.infer({ stateKey: a.stateKey, delta: ' x', maxNewTokens: 2 });
    }, LOREM);
    const before = await idbSnapshot(page);
    expect(before.length).toBeGreaterThan(2);
    const r = await page.evaluate(async () => {
      const sc = window.statecart!;
      const tokens = Array.from({ length: 1000 }, (_, i) => (i * 7919 + 11) % 50000);
      const ac = new AbortController();
      const seen: { done: number; total: number }[] = [];
      const err = await sc
        .createState(
          { tokens },
          {
            signal: ac.signal,
            onProgress: (p) => {
              seen.push(p);
              if (p.done >= 300) ac.abort();
            },
          },
        )
        .then(
          () => null,
          (e: Error) => ({ name: e.name, isAborted: e instanceof Error }),
        );
      // The whole run, uncancelled, for the progress check.
      const all: { done: number; total: number }[] = [];
      const other = Array.from({ length: 700 }, (_, i) => (i * 104729 + 3) % 50000);
      return { err, seen, all, other };
    });
    expect(r.err?.name).toBe('Aborted');
    expect(r.seen.length).toBeGreaterThan(0);
    expect(r.seen[r.seen.length - 1]!.done).toBeLessThan(1000);
    expect(await idbSnapshot(page)).toEqual(before);

    const progress = await page.evaluate(async (tokens) => {
      const seen: { done: number; total: number }[] = [];
      await window.statecart!.createState({ tokens }, { onProgress: (p) => seen.push(p) });
      return seen;
    }, r.other);
    expect(progress.length).toBeGreaterThan(2);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.done).toBeGreaterThanOrEqual(progress[i - 1]!.done);
    expect(progress.every((p) => p.total === 700 && p.done <= 700)).toBe(true);
    expect(progress[progress.length - 1]!.done).toBe(700);
  });

  test('a second infer on the same state reads no blob from IndexedDB', async ({ page }) => {
    await openPage(page, { device: 'wasm' });
    const r = await page.evaluate(async (text) => {
      const sc = window.statecart!;
      const a = await sc.createState({ text });
      await window.statecartTesting!.dropHot();
      const tierBefore = (await sc.getState({ stateKey: a.stateKey })).tier;
      const h0 = (await sc.health()).blobReads;
      const first = await sc.infer({ stateKey: a.stateKey, delta: ' q', maxNewTokens: 4 });
      const h1 = (await sc.health()).blobReads;
      const tierAfter = (await sc.getState({ stateKey: a.stateKey })).tier;
      const second = await sc.infer({ stateKey: a.stateKey, delta: ' q', maxNewTokens: 4 });
      const h2 = (await sc.health()).blobReads;
      return {
        tierBefore,
        tierAfter,
        h0,
        h1,
        h2,
        t1: first.tier,
        t2: second.tier,
        same: JSON.stringify(first.outputTokens) === JSON.stringify(second.outputTokens),
      };
    }, LOREM.repeat(2));
    expect(r.tierBefore).toBe('stored');
    expect(r.t1).toBe('stored');
    expect(r.h1).toBeGreaterThan(r.h0);
    expect(r.tierAfter).toBe('hot');
    expect(r.t2).toBe('hot');
    expect(r.h2).toBe(r.h1);
    expect(r.same).toBe(true);
  });
});

test('typed errors cross the worker boundary as their own classes, with the facts they were written from', async ({ page }) => {
  await openPage(page);
  const r = await page.evaluate(async () => {
    const lib = '/src/lib/index.ts';
    const errors = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
    const sc = window.statecart!;
    const missing = 'sha256:' + 'ab'.repeat(32);
    const out: Record<string, { cls: boolean; name: string; message: string; details: Record<string, unknown> }> = {};
    const grab = async (label: string, p: Promise<unknown>, cls: new (...a: never[]) => Error) => {
      try {
        await p;
        out[label] = { cls: false, name: 'none', message: 'no error', details: {} };
      } catch (e) {
        const x = e as Error & { details?: Record<string, unknown> };
        out[label] = { cls: x instanceof cls && x instanceof errors.StatecartError, name: x.name, message: x.message, details: x.details ?? {} };
      }
    };
    await grab('notFound', sc.infer({ stateKey: missing, delta: ' x' }), errors.StateNotFound);
    const base = await sc.createState({ tokens: Array.from({ length: 1000 }, (_, i) => (i * 7 + 3) % 50000) });
    await grab('overflow', sc.infer({ stateKey: base.stateKey, deltaTokens: [1, 2, 3], maxNewTokens: 30 }), errors.ContextOverflow);
    await grab('cartridge', sc.importCartridge({ source: new Uint8Array([1, 2, 3]) }), errors.InvalidCartridge);
    return out;
  });
  expect(r.notFound).toMatchObject({ cls: true, name: 'StateNotFound', details: { key: 'sha256:' + 'ab'.repeat(32) } });
  expect(r.notFound!.message).toMatch(/createState/);
  expect(r.overflow).toMatchObject({
    cls: true,
    name: 'ContextOverflow',
    details: { limit: 1024, wanted: 1033, state: 1000, delta: 3, maxNewTokens: 30, op: 'infer' },
  });
  expect(r.overflow!.message).toMatch(/compact/);
  expect(r.cartridge).toMatchObject({ cls: true, name: 'InvalidCartridge' });
  expect(r.cartridge!.message).toMatch(/^Invalid cartridge: /);
  expect(typeof r.cartridge!.details.problem).toBe('string');
});
