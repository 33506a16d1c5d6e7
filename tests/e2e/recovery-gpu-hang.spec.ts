import { test, expect } from '@playwright/test';

// Issue 18, part 4: the recovery paths the supervisor promises. A worker on
// WebGPU (Chromium's software adapter here) whose device is destroyed in the
// middle of a prefill is replaced by one on WASM, and the calls it had in
// flight fail with WorkerCrashed; a worker that stops answering is found by
// the heartbeat and replaced.

type Lib = typeof import('../../src/lib/index.ts');
type TestingLib = typeof import('../../src/lib/testing.ts');

/** The page with its own client up, so that Vite has served (and optimised) the library before the test imports it. */
async function libraryPage(page: import('@playwright/test').Page): Promise<void> {
  await page.goto('/?autoload=0');
  await page.waitForFunction(() => (window as { statecartReady?: Promise<unknown> }).statecartReady !== undefined);
  await page.evaluate(() => (window as { statecartReady?: Promise<unknown> }).statecartReady);
}

test('WebGPU device lost mid-prefill: pending calls fail with WorkerCrashed, the new worker runs on WASM, nothing half-done is stored', async ({ page }) => {
  test.setTimeout(600_000);
  await libraryPage(page);
  const r = await page.evaluate(async () => {
    // Vite serves the library's source to the page; the paths are the page's, not Node's.
    const lib = '/src/lib/index.ts';
    const testingLib = '/src/lib/testing.ts';
    const { createStatecart } = (await import(/* @vite-ignore */ lib)) as Lib;
    const { testing } = (await import(/* @vite-ignore */ testingLib)) as TestingLib;
    const restarts: string[] = [];
    const sc = await createStatecart({
      model: 'tiny-gpt2',
      device: 'webgpu',
      heartbeatMs: 250,
      // SwiftShader can hold the worker for tens of seconds on a loaded host: only the device loss should replace it here.
      hangMs: 180_000, // room for a slow software adapter on a loaded host: the device loss must be what replaces the worker
      dbName: 'recovery-webgpu-test',
      onRestart: (why) => restarts.push(why),
    });
    await sc.clearStore();
    const before = await sc.health();
    const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 13 + salt * 7) % 50000);
    let fault: Promise<string> | null = null;
    const progress: number[] = [];
    const first = sc.createState(
      { tokens: ids(700, 1) },
      {
        onProgress: (p) => {
          progress.push(p.done);
          // Once the prefill is under way, destroy onnxruntime's GPUDevice: the real `lost` path.
          if (!fault && p.done > 0 && p.done < p.total)
            fault = testing(sc)
              .fault('destroy-device')
              .then(
                () => 'destroyed',
                (e: Error) => e.name,
              );
        },
      },
    );
    // A second call in flight at the same time.
    const second = sc.createState({ tokens: ids(650, 2) });
    const errors = await Promise.all(
      [first, second].map((p) =>
        p.then(
          () => 'completed',
          (e: Error) => `${e.name}: ${e.message}`,
        ),
      ),
    );
    const faultResult = await fault;
    const after = await sc.health();
    const next = await sc.createState({ text: 'after the device was lost' });
    const states = await sc.listStates();
    const checks = await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })));
    sc.terminate();
    return {
      before,
      after,
      errors,
      faultResult,
      restarts,
      restartsCount: sc.restarts,
      next,
      states: states.map((s) => s.key),
      verified: checks.every((c) => c.ok),
      progress,
    };
  });
  expect(r.before.device).toBe('webgpu');
  expect(r.faultResult).not.toBe('InvalidInput');
  for (const e of r.errors) expect(e).toMatch(/^WorkerCrashed: /);
  expect(r.restartsCount).toBe(1);
  expect(r.restarts[0]).toMatch(/WebGPU device was lost/);
  expect(r.after.device).toBe('wasm');
  expect(r.next.processed).toBe(r.next.tokens);
  // Only the state made after the loss: the interrupted prefills stored nothing.
  expect(r.states).toEqual([r.next.stateKey]);
  expect(r.verified).toBe(true);
});

test('a hung worker is found by the heartbeat and replaced: the pending call fails with WorkerCrashed, the next one works', async ({ page }) => {
  await libraryPage(page);
  const r = await page.evaluate(async () => {
    const lib = '/src/lib/index.ts';
    const testingLib = '/src/lib/testing.ts';
    const { createStatecart } = (await import(/* @vite-ignore */ lib)) as Lib;
    const { testing } = (await import(/* @vite-ignore */ testingLib)) as TestingLib;
    const restarts: string[] = [];
    const sc = await createStatecart({
      model: 'tiny-gpt2',
      device: 'wasm',
      heartbeatMs: 200,
      hangMs: 1500,
      dbName: 'recovery-hang-test',
      onRestart: (why) => restarts.push(why),
    });
    await sc.clearStore();
    const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 17 + salt * 5) % 50000);
    let hung = false;
    const t0 = performance.now();
    const error = await sc
      .createState(
        { tokens: ids(900, 3) },
        {
          onProgress: (p) => {
            if (!hung && p.done > 0 && p.done < p.total) {
              hung = true;
              // Busy forever from the worker's next task on: no message is read again, the pings included.
              void testing(sc)
                .fault('hang')
                .catch(() => undefined);
            }
          },
        },
      )
      .then(
        () => 'completed',
        (e: Error) => `${e.name}: ${e.message}`,
      );
    const detectedMs = performance.now() - t0;
    const next = await sc.createState({ text: 'after the hang' }).catch((e: Error) => `${e.name}: ${e.message}`);
    const states = await sc.listStates().catch((e: Error) => [{ key: `${e.name}: ${e.message} ${JSON.stringify(restarts)}` }]);
    sc.terminate();
    return { error, hung, restarts, restartsCount: sc.restarts, next, states: states.map((s) => s.key), detectedMs };
  });
  expect(r.hung).toBe(true);
  expect(typeof r.next, JSON.stringify({ next: r.next, restarts: r.restarts })).toBe('object');
  if (typeof r.next !== 'object') return;
  expect(r.error).toMatch(/^WorkerCrashed: .*did not answer/);
  expect(r.restartsCount).toBe(1);
  expect(r.restarts[0]).toMatch(/did not answer for 2 s/);
  expect(r.next.processed).toBe(r.next.tokens);
  expect(r.states).toEqual([r.next.stateKey]);
});
