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

test('a hung shared worker cannot be ended from a page: every tab moves to the next generation of its name, one new engine', async ({ page }) => {
  test.setTimeout(300_000);
  await page.goto('/?autoload=0');
  const other = await page.context().newPage();
  await other.goto('/?autoload=0');
  const start = (p: Page) =>
    p.evaluate(async () => {
      const lib = '/src/lib/index.ts';
      const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
      const testingLib = '/src/lib/testing.ts';
      const { testing } = (await import(/* @vite-ignore */ testingLib)) as typeof import('../../src/lib/testing.ts');
      const w = window as unknown as { sc: Awaited<ReturnType<typeof createStatecart>>; t: ReturnType<typeof testing> };
      w.sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', dbName: 'hang-test', shared: true, heartbeatMs: 500, hangMs: 20_000 });
      w.t = testing(w.sc);
      return (await w.t.counters()).workerId;
    });
  const [a, b] = [await start(page), await start(other)];
  expect(b).toBe(a);
  const gen = await page.evaluate(() => localStorage.getItem('statecart:shared-worker-generation'));
  await page.evaluate(() => (window as unknown as { t: { fault(k: string): Promise<void> } }).t.fault('hang'));
  // Both tabs notice (no answer for hangMs), move on, and meet in one new worker.
  const after = await Promise.all(
    [page, other].map((p) =>
      p.evaluate(async () => {
        const w = window as unknown as {
          sc: { restarts: number; createState(r: object): Promise<{ stateKey: string }> };
          t: { counters(): Promise<{ workerId: string; modelLoads: number }> };
        };
        while (w.sc.restarts === 0) await new Promise((r) => setTimeout(r, 250));
        const s = await w.sc.createState({ text: 'after the hang' });
        return { key: s.stateKey, ...(await w.t.counters()) };
      }),
    ),
  );
  expect(after[0]!.workerId).not.toBe(a);
  expect(after[1]!.workerId).toBe(after[0]!.workerId);
  expect(after[0]!.modelLoads).toBe(1);
  const gen2 = await other.evaluate(() => localStorage.getItem('statecart:shared-worker-generation'));
  expect(Number(gen2)).toBe(Number(gen ?? 0) + 1);
  await other.close();
});

test('the shared worker’s uncaught error and lost GPU device end it for its tabs, which recover as from a dedicated worker', async ({ page }) => {
  await page.goto('/?autoload=0');
  const r = await page.evaluate(async () => {
    const lib = '/src/lib/index.ts';
    const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
    const testingLib = '/src/lib/testing.ts';
    const { testing } = (await import(/* @vite-ignore */ testingLib)) as typeof import('../../src/lib/testing.ts');
    const restarts: string[] = [];
    const sc = await createStatecart({ model: 'tiny-gpt2', device: 'wasm', shared: true, dbName: 'shared-faults', onRestart: (why) => restarts.push(why) });
    await sc.clearStore();
    const out: Record<string, { error: string; next: number | string; worker: string }> = {};
    for (const kind of ['throw', 'device-lost'] as const) {
      const long = Array.from({ length: 900 }, (_, i) => (i * 17 + kind.length) % 50000);
      const error = await sc
        .createState(
          { tokens: long },
          {
            onProgress: (p) => {
              if (p.done === 128)
                void testing(sc)
                  .fault(kind)
                  .catch(() => undefined);
            },
          },
        )
        .then(
          () => 'completed',
          (e: Error) => e.name,
        );
      const next = await sc.createState({ text: `after ${kind}` }).then(
        (x) => x.tokens,
        (e: Error) => `${e.name}: ${e.message}`,
      );
      out[kind] = { error, next, worker: (await testing(sc).counters()).workerId };
    }
    const h = await sc.health();
    sc.terminate();
    return { out, restarts, shared: sc.shared, device: h.device };
  });
  expect(r.shared).toBe(true);
  expect(r.out.throw!.error).toBe('WorkerCrashed');
  expect(r.out['device-lost']!.error).toBe('WorkerCrashed');
  expect(typeof r.out.throw!.next).toBe('number');
  expect(typeof r.out['device-lost']!.next).toBe('number');
  expect(r.out.throw!.worker).not.toBe(r.out['device-lost']!.worker);
  expect(r.restarts).toHaveLength(2);
  expect(r.restarts[0]).toMatch(/injected fault/);
  expect(r.restarts[1]).toMatch(/WebGPU device was lost/);
  expect(r.device).toBe('wasm');
});
