import { test, expect, type Page } from '@playwright/test';
import { openPage, LOREM } from './helpers.ts';

// Issue 10: crash-safe writes, budget and eviction, many tabs, corrupt data.
// Modules are imported by their path on the Vite server, not Node's.
const STORE = '/src/store/store.ts';
const SYNTH = '/tests/unit/support/synthetic-state.ts';
const LIB = '/src/lib/index.ts';
const KEYS = '/src/core/key-chain.ts';

type StoreMod = typeof import('../../src/store/store.ts');
type SynthMod = typeof import('../unit/support/synthetic-state.ts');

test.describe.configure({ timeout: 420_000 });

test('a worker closed after each IndexedDB request of a 20-block write leaves the state whole or absent, and no orphans', async ({ page }) => {
  await page.goto('/?autoload=0');
  const r = await page.evaluate(
    async ({ STORE, SYNTH, KEYS }) => {
      const { StateStore } = (await import(/* @vite-ignore */ STORE)) as StoreMod;
      const { audit, tokensFor, syntheticState, maxDiff, FP } = (await import(/* @vite-ignore */ SYNTH)) as SynthMod;
      const { stateKey } = (await import(/* @vite-ignore */ KEYS)) as typeof import('../../src/core/key-chain.ts');
      const dbName = 'reliability-crash';
      const long = tokensFor(1, 316); // 19 full blocks and a 12-token tail
      const prefixes = [long.slice(0, 40), long.slice(0, 75)]; // their tails move onto the long state's blocks
      const run = (msg: object) =>
        new Promise<{ type: string; requests?: number; name?: string; message?: string }>((resolve) => {
          const w = new Worker(new URL('/tests/e2e/support/store-fault-worker.ts', location.href), { type: 'module' });
          w.onmessage = (ev) => {
            resolve(ev.data);
            // A closed worker is gone already; terminate the others.
            if (ev.data.type !== 'closing') w.terminate();
          };
          w.onerror = (ev) => resolve({ type: 'error', message: ev.message });
          w.postMessage({ dbName, prefixes, long, faultAfter: null, ...msg });
        });
      const kvText = async (store: InstanceType<StoreMod['StateStore']>) => {
        const a = await audit(store);
        const out: string[] = [];
        for (const m of a.manifests) out.push('m:' + JSON.stringify(m));
        for (const [k, b] of a.blobs) out.push(`b:${k}:${b.digest}:${b.data.byteLength}`);
        return out.sort().join('\n');
      };
      // A clean write says how many requests there are.
      await run({ setup: true });
      const clean = await run({});
      if (clean.type !== 'done') throw new Error(`the clean write failed: ${JSON.stringify(clean)}`);
      const total = clean.requests!;
      const longKey = await stateKey(FP, long);
      const tally = { tried: 0, whole: 0, absent: 0, between: 0, orphans: 0, missing: 0, badDigest: 0, lost: 0, closed: 0, failures: [] as string[] };
      for (let k = 1; k <= total; k++) {
        await run({ setup: true });
        const before = new StateStore({ dbName });
        const beforeText = await kvText(before);
        before.close();
        const res = await run({ faultAfter: k });
        tally.tried++;
        if (res.type === 'closing') tally.closed++;
        // A later page opens the store: the open-time check runs first.
        const store = new StateStore({ dbName, hotBytes: 1 });
        const report = await store.ready;
        tally.orphans += report.orphanBlobs;
        const a = await audit(store);
        tally.orphans += a.orphans.length;
        tally.missing += a.missing.length;
        tally.badDigest += a.badDigest.length;
        const has = (await store.getManifest(longKey)) !== undefined;
        if (has) {
          tally.whole++;
          const { state } = await store.getState(longKey);
          if (maxDiff(state, syntheticState(long)) !== 0) tally.between++;
        } else {
          tally.absent++;
          if ((await kvText(store)) !== beforeText) {
            tally.between++;
            tally.failures.push(`k=${k}: store changed but the state is absent`);
          }
        }
        for (const p of prefixes) {
          const key = await stateKey(FP, p);
          const got = await store.getState(key).then(
            (x) => maxDiff(x.state, syntheticState(p)),
            () => Infinity,
          );
          if (got !== 0) tally.lost++;
        }
        store.close();
      }
      return { total, ...tally };
    },
    { STORE, SYNTH, KEYS },
  );
  console.log(`[reliability] crash sweep in Chromium: ${JSON.stringify(r)}`);
  expect(r.total).toBeGreaterThan(40);
  expect(r.tried).toBe(r.total);
  expect(r.closed).toBe(r.total); // the fault fired at every point
  expect(r.whole + r.absent).toBe(r.tried);
  expect(r.between).toBe(0);
  expect(r.orphans).toBe(0);
  expect(r.missing).toBe(0);
  expect(r.badDigest).toBe(0);
  expect(r.lost).toBe(0);
});

test('the statecart worker closed in the middle of a write is replaced; the store is whole and the next request works', async ({ page }) => {
  await page.goto('/?autoload=0');
  if (process.env.DEBUG_POINTS) {
    page.on('console', (m) => console.log('[page]', m.text()));
    await page.evaluate((p) => ((window as unknown as { POINTS?: number[] }).POINTS = p), JSON.parse(process.env.DEBUG_POINTS) as number[]);
  }
  const r = await page.evaluate(async (LIB) => {
    const { createStatecart } = (await import(/* @vite-ignore */ LIB)) as typeof import('../../src/lib/index.ts');
    const { testing } = (await import(/* @vite-ignore */ LIB.replace('index.ts', 'testing.ts'))) as typeof import('../../src/lib/testing.ts');
    const sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', heartbeatMs: 250, hangMs: 8000, dbName: 'reliability-client-crash' });
    const long = Array.from({ length: 316 }, (_, i) => (i * 31 + 7) % 50000);
    // How many IndexedDB requests the write makes when nothing goes wrong: the points spread over them, the last one included.
    // (durable: the call waits for its write, which otherwise lands behind it; a crash during the write then reaches the call)
    await sc.clearStore();
    await sc.createState({ tokens: long.slice(0, 40) });
    await sc.createState({ tokens: long.slice(0, 75) });
    await sc.flush();
    await sc.createState({ tokens: long }, { durable: true });
    const total = (await testing(sc).counters()).lastWriteRequests;
    const points = (window as unknown as { POINTS?: number[] }).POINTS ?? [1, 21, 41, Math.floor(total * 0.6), total];
    const out = [];
    for (const k of points) {
      await sc.clearStore();
      await sc.createState({ tokens: long.slice(0, 40) });
      await sc.createState({ tokens: long.slice(0, 75) });
      await sc.flush();
      await testing(sc).storeFault(k);
      const first = await sc.createState({ tokens: long }, { durable: true }).then(
        () => 'completed',
        (e: Error) => e.name,
      );
      const check = await sc.checkStore();
      const states = await sc.listStates();
      const verified = await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })));
      const next = await sc.createState({ tokens: long }).then(
        (x) => x.tokens,
        (e: Error) => e.name,
      );
      const cont = await sc.infer({ stateKey: (await sc.listStates()).find((s) => s.tokens === 316)!.key, maxNewTokens: 2 }).then(
        (x) => x.outputTokens.length,
        (e: Error) => e.name,
      );
      out.push({ k, first, orphans: check.orphanBlobs, damaged: check.damaged, states: states.length, allVerified: verified.every((v) => v.ok), next, cont });
    }
    const restarts = sc.restarts;
    sc.terminate();
    return { out, restarts };
  }, LIB);
  console.log(`[reliability] statecart worker closed mid-write: ${JSON.stringify(r)}`);
  for (const o of r.out) {
    expect(o.first, `fault after request ${o.k}`).toBe('WorkerCrashed');
    expect(o.orphans).toBe(0);
    expect(o.damaged).toBe(0);
    // The two prefixes, and the long state only if its write committed whole.
    expect([2, 3]).toContain(o.states);
    expect(o.allVerified).toBe(true);
    expect(o.next).toBe(316);
    expect(o.cont).toBe(2);
  }
  expect(r.restarts).toBe(r.out.length);
});

test('under a small byte budget: pinned states survive, least recent go first, shared blocks stay, nothing half-written', async ({ page }) => {
  await page.goto('/?autoload=0');
  const r = await page.evaluate(async (LIB) => {
    const { createStatecart } = (await import(/* @vite-ignore */ LIB)) as typeof import('../../src/lib/index.ts');
    const { testing } = (await import(/* @vite-ignore */ LIB.replace('index.ts', 'testing.ts'))) as typeof import('../../src/lib/testing.ts');
    const base = Array.from({ length: 48 }, (_, i) => (i * 97 + 3) % 50000);
    const perToken = 2 * 2 * 64 * 4; // tiny-gpt2: 2 layers × (K, V) × width 64 × fp32
    const budget = perToken * (48 + 4 * 20);
    const sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', dbName: 'reliability-budget', budgetBytes: budget });
    await sc.clearStore();
    const ext = (i: number) => [...base, ...Array.from({ length: 20 }, (_, j) => (i * 1009 + j * 13 + 5) % 50000)];
    const pinned = await sc.createState({ tokens: ext(0) });
    await sc.pinState({ stateKey: pinned.stateKey, pinned: true });
    const made: string[] = [];
    const gone: string[] = [];
    let created = 1;
    let overBudget = 0;
    let unverified = 0;
    let orphans = 0;
    for (let i = 1; i <= 14; i++) {
      // durable: the write (and the eviction it makes room with) has landed when the call returns, so the listing below sees its effect.
      const s = await sc.createState({ tokens: ext(i) }, { durable: true });
      created++;
      made.push(s.stateKey);
      const keys = new Set((await sc.listStates()).map((x) => x.key));
      for (const k of made) if (!keys.has(k) && !gone.includes(k)) gone.push(k);
      const h = await sc.health();
      if (h.bytesStored > budget) overBudget++;
      for (const k of keys) if (!(await sc.verifyState({ stateKey: k })).ok) unverified++;
      orphans += (await sc.checkStore()).orphanBlobs;
      // Reading the first state keeps it recent (probe restores it from the store).
      if (keys.has(made[0]!)) await testing(sc).probe({ tokens: [11], stateKey: made[0]! });
    }
    const final = new Set((await sc.listStates()).map((x) => x.key));
    const expectedGone = made.slice(1).filter((k) => !final.has(k));
    const evictAll = await sc.evict({ targetBytes: 0 });
    const afterEvict = await sc.listStates();
    const info = await sc.storageInfo();
    sc.terminate();
    return {
      created,
      budget,
      gone,
      expectedGone,
      pinnedKept: final.has(pinned.stateKey),
      firstKept: final.has(made[0]!),
      overBudget,
      unverified,
      orphans,
      evicted: evictAll.evicted.length,
      afterEvict: afterEvict.map((s) => s.key),
      pinnedKey: pinned.stateKey,
      info,
    };
  }, LIB);
  console.log(
    `[reliability] budget ${r.budget} B: ${r.created} states created, ${r.gone.length} evicted least-recent first; over budget ${r.overBudget}, unverified ${r.unverified}, orphans ${r.orphans}; evict-all removed ${r.evicted}; storage ${JSON.stringify(r.info)}`,
  );
  expect(r.pinnedKept).toBe(true);
  expect(r.firstKept).toBe(true);
  expect(r.gone.length).toBeGreaterThanOrEqual(8);
  expect(r.gone).toEqual(r.expectedGone); // creation order = last-use order for the unread ones
  expect(r.overBudget).toBe(0);
  expect(r.unverified).toBe(0);
  expect(r.orphans).toBe(0);
  expect(r.afterEvict).toEqual([r.pinnedKey]);
  expect(r.info.budgetBytes).toBe(r.budget);
  expect(r.info.quota).toBeGreaterThan(0);
});

async function twoPages(page: Page): Promise<Page> {
  await openPage(page);
  const other = await page.context().newPage();
  await openPage(other, { clear: false });
  return other;
}

test('two pages write and read concurrently: no lost states, one copy per key, and each hears the other', async ({ page }) => {
  const other = await twoPages(page);
  const listen = (p: Page) =>
    p.evaluate(() => {
      const w = window as unknown as { heard: string[] };
      w.heard = [];
      window.statecart!.onStoreChange((e) => {
        if (e.type === 'put') w.heard.push(...e.keys);
      });
    });
  await listen(page);
  await listen(other);
  const ROUNDS = 8;
  const pages = [page, other];
  const own: string[][] = [[], []];
  const shared: string[] = [];
  let crossReads = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // Both pages at once: one text in common (the same key), one of their own.
    const res = await Promise.all(
      pages.map((p, i) =>
        p.evaluate(
          async ({ round, i, text }) => {
            const sc = window.statecart!;
            const [a, b] = await Promise.all([
              sc.createState({ text: `${text} round ${round}` }),
              sc.createState({ text: `${text} page ${i} round ${round}` }),
            ]);
            // Written behind the calls: stored (and announced) before the other page looks.
            await sc.flush();
            return { shared: a.stateKey, own: b.stateKey };
          },
          { round, i, text: LOREM },
        ),
      ),
    );
    expect(res[0]!.shared).toBe(res[1]!.shared);
    shared.push(res[0]!.shared);
    own[0]!.push(res[0]!.own);
    own[1]!.push(res[1]!.own);
    // Each reads and continues the other's state.
    const reads = await Promise.all(
      pages.map((p, i) =>
        p.evaluate(
          async (key) => {
            const sc = window.statecart!;
            await window.statecartTesting!.dropHot();
            const info = await sc.getState({ stateKey: key });
            const r = await sc.infer({ stateKey: key, delta: ' and', maxNewTokens: 2 });
            return { tokens: info.tokens, out: r.outputTokens.length, tier: r.tier };
          },
          res[1 - i]!.own,
        ),
      ),
    );
    for (const x of reads) {
      expect(x.out).toBe(2);
      expect(x.tier).toBe('stored');
      crossReads++;
    }
  }
  const final = await Promise.all(
    pages.map((p) =>
      p.evaluate(async () => {
        const sc = window.statecart!;
        const states = await sc.listStates();
        const checks = await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })));
        const report = await sc.checkStore();
        const h = await sc.health();
        const counts = await new Promise<{ blobs: number; manifests: number }>((resolve) => {
          const open = indexedDB.open('statecart');
          open.onsuccess = () => {
            const tx = open.result.transaction('kv');
            const q1 = tx.objectStore('kv').count(IDBKeyRange.bound('b:', 'b:\uffff'));
            const q2 = tx.objectStore('kv').count(IDBKeyRange.bound('m:', 'm:\uffff'));
            tx.oncomplete = () => {
              resolve({ blobs: q1.result, manifests: q2.result });
              open.result.close();
            };
          };
        });
        return {
          keys: states.map((s) => s.key),
          ok: checks.every((c) => c.ok),
          report,
          blobs: h.bytesStored,
          counts,
          heard: (window as unknown as { heard: string[] }).heard,
        };
      }),
    ),
  );
  const all = new Set([...shared, ...own[0]!, ...own[1]!]);
  let lost = 0;
  for (const f of final) {
    expect(new Set(f.keys).size).toBe(f.keys.length); // one manifest per key
    for (const k of all) if (!f.keys.includes(k)) lost++;
    expect(f.ok).toBe(true);
    expect(f.report.orphanBlobs).toBe(0);
    expect(f.report.damaged).toBe(0);
    expect(f.counts.manifests).toBe(f.keys.length);
  }
  // Both pages see the same store, and every blob in it is named by a state (no second copies).
  expect(final[0]!.keys.sort()).toEqual(final[1]!.keys.sort());
  expect(final[0]!.counts).toEqual(final[1]!.counts);
  // Each page heard about the states the other created.
  const heard0 = own[1]!.filter((k) => final[0]!.heard.includes(k)).length;
  const heard1 = own[0]!.filter((k) => final[1]!.heard.includes(k)).length;
  console.log(
    `[reliability] two pages, ${ROUNDS} rounds: ${all.size} distinct states (${shared.length} written by both at once), ${final[0]!.keys.length} stored, ${final[0]!.counts.blobs} blobs, ${crossReads} cross-page reads, lost ${lost}; broadcasts heard ${heard0}/${ROUNDS} and ${heard1}/${ROUNDS}`,
  );
  expect(lost).toBe(0);
  expect(heard0).toBe(ROUNDS);
  expect(heard1).toBe(ROUNDS);
  await other.close();
});

test('eviction in one page never removes a block another page is reading: every read is whole or not found', async ({ page }) => {
  await page.goto('/?autoload=0');
  const other = await page.context().newPage();
  await other.goto('/?autoload=0');
  const setup = await page.evaluate(
    async ({ STORE, SYNTH }) => {
      const { StateStore } = (await import(/* @vite-ignore */ STORE)) as StoreMod;
      const { putSynthetic, tokensFor } = (await import(/* @vite-ignore */ SYNTH)) as SynthMod;
      const store = new StateStore({ dbName: 'reliability-race' });
      await store.clear();
      const m = await putSynthetic(store, tokensFor(5, 200)); // 13 blobs
      store.close();
      return m.key;
    },
    { STORE, SYNTH },
  );
  const READS = 400;
  const CYCLES = 150;
  const [reader, evictor] = await Promise.all([
    page.evaluate(
      async ({ STORE, SYNTH, key, READS }) => {
        const { StateStore } = (await import(/* @vite-ignore */ STORE)) as StoreMod;
        const { syntheticState, tokensFor, maxDiff } = (await import(/* @vite-ignore */ SYNTH)) as SynthMod;
        const store = new StateStore({ dbName: 'reliability-race', hotBytes: 1 }); // every read from IndexedDB
        const want = syntheticState(tokensFor(5, 200));
        const t = { whole: 0, notFound: 0, corrupt: 0, wrong: 0, other: [] as string[] };
        for (let i = 0; i < READS; i++) {
          try {
            const { state } = await store.getState(key);
            if (maxDiff(state, want) === 0) t.whole++;
            else t.wrong++;
          } catch (e) {
            const n = (e as Error).name;
            if (n === 'StateNotFound') t.notFound++;
            else if (n === 'CorruptBlob') t.corrupt++;
            else t.other.push(`${n}: ${(e as Error).message}`);
          }
        }
        store.close();
        return t;
      },
      { STORE, SYNTH, key: setup, READS },
    ),
    other.evaluate(
      async ({ STORE, SYNTH, CYCLES }) => {
        const { StateStore } = (await import(/* @vite-ignore */ STORE)) as StoreMod;
        const { putSynthetic, tokensFor } = (await import(/* @vite-ignore */ SYNTH)) as SynthMod;
        const store = new StateStore({ dbName: 'reliability-race' });
        let evicted = 0;
        for (let i = 0; i < CYCLES; i++) {
          const r =
            i % 2 ? await store.evict({ targetBytes: 0 }) : { evicted: (await store.delete((await store.list())[0]?.key ?? 'none')).blobsFreed ? ['x'] : [] };
          evicted += r.evicted.length;
          await putSynthetic(store, tokensFor(5, 200));
        }
        store.close();
        return { evicted };
      },
      { STORE, SYNTH, CYCLES },
    ),
  ]);
  console.log(
    `[reliability] eviction race: ${READS} reads (${reader.whole} whole, ${reader.notFound} not found, ${reader.corrupt} corrupt, ${reader.wrong} wrong) against ${CYCLES} delete/evict + rewrite cycles (${evictor.evicted} removals)`,
  );
  expect(reader.corrupt).toBe(0);
  expect(reader.wrong).toBe(0);
  expect(reader.other).toEqual([]);
  expect(reader.whole + reader.notFound).toBe(READS);
  expect(reader.whole).toBeGreaterThan(0);
  expect(reader.notFound).toBeGreaterThan(0); // the race did happen
  expect(evictor.evicted).toBeGreaterThan(0);
  await other.close();
});

test('flipped bytes in stored blobs: every read detects them, the state is listed as damaged, and createState heals it', async ({ page }) => {
  await openPage(page);
  const r = await page.evaluate(async (text) => {
    const sc = window.statecart!;
    const texts = [text, text + text, 'A second text, shorter.'];
    for (const t of texts) await sc.createState({ text: t });
    await sc.flush();
    const rawManifest = (key: string) =>
      new Promise<{ blocks: { key: string }[] }>((resolve) => {
        const open = indexedDB.open('statecart');
        open.onsuccess = () => {
          const q = open.result
            .transaction('kv')
            .objectStore('kv')
            .get('m:' + key);
          q.onsuccess = () => {
            resolve(q.result);
            open.result.close();
          };
        };
      });
    const flip = (blobKey: string, at: number) =>
      new Promise<void>((resolve, reject) => {
        const open = indexedDB.open('statecart');
        open.onsuccess = () => {
          const tx = open.result.transaction('kv', 'readwrite');
          const os = tx.objectStore('kv');
          const q = os.get('b:' + blobKey);
          q.onsuccess = () => {
            const rec = q.result as { data: ArrayBuffer };
            const bytes = new Uint8Array(rec.data.slice(0));
            bytes[at % bytes.length]! ^= 0x10;
            os.put({ ...rec, data: bytes.buffer }, 'b:' + blobKey);
          };
          tx.oncomplete = () => {
            open.result.close();
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      });
    let flips = 0;
    let detected = 0;
    let served = 0;
    let listedDamaged = 0;
    let healed = 0;
    for (const t of texts) {
      const key = (await sc.createState({ text: t })).stateKey;
      const nBlocks = (await rawManifest(key)).blocks.length;
      for (let i = 0; i < nBlocks; i++) {
        const blob = (await rawManifest(key)).blocks[i]!.key;
        await flip(blob, 13 + i * 97);
        flips++;
        await window.statecartTesting!.dropHot();
        const res = await window.statecartTesting!.probe({ tokens: [11], stateKey: key }).then(
          () => 'served',
          (e: Error) => e.name,
        );
        if (res === 'CorruptBlob') detected++;
        if (res === 'served') served++;
        if ((await sc.getState({ stateKey: key })).damaged) listedDamaged++;
        const again = await sc.createState({ text: t });
        if (again.stateKey === key && !(await sc.getState({ stateKey: key })).damaged && (await sc.verifyState({ stateKey: key })).ok) healed++;
      }
    }
    // A block shared with another text may have been recomputed with other
    // bits: that state is then marked damaged too, and heals the same way.
    for (const t of texts) await sc.createState({ text: t });
    const states = await sc.listStates();
    const ok = (await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })))).every((v) => v.ok);
    return { flips, detected, served, listedDamaged, healed, ok, damagedLeft: (await sc.listStates()).filter((s) => s.damaged).length };
  }, LOREM.repeat(2));
  console.log(
    `[reliability] ${r.flips} flipped blobs: ${r.detected} detected on read, ${r.served} served, ${r.listedDamaged} listed as damaged, ${r.healed} healed by createState`,
  );
  expect(r.flips).toBeGreaterThan(8);
  expect(r.detected).toBe(r.flips);
  expect(r.served).toBe(0);
  expect(r.listedDamaged).toBe(r.flips);
  expect(r.healed).toBe(r.flips);
  expect(r.ok).toBe(true);
  expect(r.damagedLeft).toBe(0);
});
