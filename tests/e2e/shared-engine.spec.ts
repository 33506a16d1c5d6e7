import { test, expect, type Page } from '@playwright/test';
import { openPage, LOREM } from './helpers.ts';

// Issue 17, part 2: one engine per origin. Tabs share one SharedWorker (one
// model load, one hot tier); when it dies every tab reconnects to one new
// engine; where the browser has no SharedWorker each page keeps a worker of its own.

type Counters = Awaited<ReturnType<NonNullable<Window['statecartTesting']>['counters']>>;

const counters = (p: Page): Promise<Counters> => p.evaluate(() => window.statecartTesting!.counters());

async function twoTabs(page: Page): Promise<Page> {
  await openPage(page);
  const other = await page.context().newPage();
  await openPage(other, { clear: false });
  return other;
}

test('two tabs: one model load between them, and a state made in one tab is a hot hit in the other', async ({ page }) => {
  const other = await twoTabs(page);
  const a = await page.evaluate(async (text) => {
    const sc = window.statecart!;
    const s = await sc.createState({ text });
    return { shared: sc.shared, isShared: sc.worker instanceof SharedWorker, key: s.stateKey, processed: s.processed };
  }, LOREM);
  expect(a.shared).toBe(true);
  expect(a.isShared).toBe(true);
  const b = await other.evaluate(async (key) => {
    const sc = window.statecart!;
    const info = await sc.getState({ stateKey: key });
    const r = await sc.infer({ stateKey: key, delta: ' and then', maxNewTokens: 3 });
    return { tier: r.tier, infoTier: info.tier, reused: r.savings.tokensReused, shared: sc.shared };
  }, a.key);
  expect(b.shared).toBe(true);
  expect(b.infoTier).toBe('hot');
  expect(b.tier).toBe('hot');
  expect(b.reused).toBe(a.processed);
  const [ca, cb] = [await counters(page), await counters(other)];
  console.log(`[shared-engine] two tabs: worker ${ca.workerId} / ${cb.workerId}, model loads ${cb.modelLoads}, engines ${cb.engines}, pages ${cb.pages}`);
  expect(cb.workerId).toBe(ca.workerId);
  expect(ca.shared).toBe(true);
  expect(cb.modelLoads).toBe(1);
  expect(cb.engines).toBe(1);
  expect(cb.pages).toBe(2);
  await other.close();
});

test('the shared worker killed mid-request: both tabs recover, on one new engine with one model load', async ({ page }) => {
  const other = await twoTabs(page);
  const before = await counters(page);
  // A long prefill in the other tab, in flight when the worker goes.
  await other.evaluate(() => {
    const w = window as unknown as { pending: Promise<string>; started: boolean };
    const long = Array.from({ length: 900 }, (_, i) => (i * 31 + 7) % 50000);
    w.pending = window
      .statecart!.createState(
        { tokens: long },
        {
          onProgress: (p) => {
            if (p.done >= 128) w.started = true;
          },
        },
      )
      .then(
        () => 'completed',
        (e: Error) => e.name,
      );
  });
  await other.waitForFunction(() => (window as unknown as { started?: boolean }).started === true);
  await page.evaluate(() => window.statecartTesting!.fault('close').catch(() => undefined));
  const pending = await other.evaluate(() => (window as unknown as { pending: Promise<string> }).pending);
  expect(pending).toBe('WorkerCrashed');
  // Both tabs work again, on the same new worker.
  const key = await page.evaluate(async (text) => (await window.statecart!.createState({ text: `${text} after the crash` })).stateKey, LOREM);
  const hit = await other.evaluate(async (key) => (await window.statecart!.infer({ stateKey: key, delta: ' ok', maxNewTokens: 2 })).tier, key);
  expect(hit).toBe('hot');
  const [ca, cb] = [await counters(page), await counters(other)];
  const restarts = await Promise.all([page, other].map((p) => p.evaluate(() => window.statecart!.restarts)));
  console.log(
    `[shared-engine] after the kill: worker ${before.workerId} → ${ca.workerId} / ${cb.workerId}, model loads ${cb.modelLoads}, restarts ${restarts}`,
  );
  expect(ca.workerId).not.toBe(before.workerId);
  expect(cb.workerId).toBe(ca.workerId);
  expect(cb.modelLoads).toBe(1);
  expect(restarts).toEqual([1, 1]);
  // Nothing half-written: the interrupted prefill left no state.
  const states = await page.evaluate(async () => (await window.statecart!.listStates()).map((s) => s.tokens));
  expect(states).not.toContain(900);
  await other.close();
});

test('where the browser has no SharedWorker, each page keeps a dedicated worker: it works and recovers as before', async ({ page }) => {
  await page.goto('/?autoload=0');
  const r = await page.evaluate(async () => {
    // The browser without SharedWorker (as Chrome on Android, or an older Safari).
    delete (window as { SharedWorker?: unknown }).SharedWorker;
    const lib = '/src/lib/index.ts';
    const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
    const testingLib = '/src/lib/testing.ts';
    const { testing } = (await import(/* @vite-ignore */ testingLib)) as typeof import('../../src/lib/testing.ts');
    const sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', dbName: 'dedicated-test', heartbeatMs: 250, hangMs: 8000 });
    await sc.clearStore();
    const kind = { shared: sc.shared, worker: sc.worker instanceof Worker };
    const first = await sc.createState({ text: 'a dedicated worker' });
    const long = Array.from({ length: 900 }, (_, i) => (i * 13 + 5) % 50000);
    const crashed = await sc
      .createState(
        { tokens: long },
        {
          onProgress: (p) => {
            if (p.done === 128)
              void testing(sc)
                .fault('close')
                .catch(() => undefined);
          },
        },
      )
      .then(
        () => 'completed',
        (e: Error) => e.name,
      );
    const next = await sc.infer({ stateKey: first.stateKey, delta: ' again', maxNewTokens: 2 });
    const c = await testing(sc).counters();
    const out = { ...kind, crashed, nextTier: next.tier, restarts: sc.restarts, sharedCounter: c.shared, states: (await sc.listStates()).length };
    sc.terminate();
    return out;
  });
  expect(r).toEqual({ shared: false, worker: true, crashed: 'WorkerCrashed', nextTier: 'stored', restarts: 1, sharedCounter: false, states: 2 });
});
