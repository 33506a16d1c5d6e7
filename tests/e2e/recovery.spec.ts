import { test, expect } from '@playwright/test';

// Issue 10, part 4: a worker that dies or hangs is replaced; pending calls fail
// with a typed error, nothing half-done is stored, and the next request works.
test('the client recovers from a crashed, exited or GPU-lost worker during a prefill', async ({ page }) => {
  await page.goto('/?autoload=0');
  const r = await page.evaluate(async () => {
    // Vite serves the library's source to the page; the path is the page's, not Node's.
    const lib = '/src/lib/index.ts';
    const { createStatecart } = (await import(/* @vite-ignore */ lib)) as typeof import('../../src/lib/index.ts');
    const testingLib = '/src/lib/testing.ts';
    const { testing } = (await import(/* @vite-ignore */ testingLib)) as typeof import('../../src/lib/testing.ts');
    const restarts: string[] = [];
    const sc = await createStatecart({
      model: 'tiny-gpt2',
      device: 'wasm',
      heartbeatMs: 250,
      hangMs: 10_000,
      dbName: 'recovery-test',
      onRestart: (why) => restarts.push(why),
    });
    await sc.clearStore();
    const out: Record<string, { error: string; next: number | string; states: number; verified: boolean }> = {};
    for (const kind of ['throw', 'close', 'device-lost'] as const) {
      const long = Array.from({ length: 900 }, (_, i) => (i * 13 + kind.length) % 50000);
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
      const states = await sc.listStates();
      const checks = await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })));
      out[kind] = { error, next, states: states.length, verified: checks.every((c) => c.ok) };
    }
    const h = await sc.health();
    sc.terminate();
    return { out, restarts, device: h.device, restartsCount: sc.restarts };
  });
  for (const kind of ['throw', 'close', 'device-lost']) {
    expect(r.out[kind]!.error, kind).toBe('WorkerCrashed');
    expect(typeof r.out[kind]!.next, `next request after ${kind}`).toBe('number');
    expect(r.out[kind]!.verified).toBe(true);
  }
  // Only the small follow-up states exist: the interrupted 900-token prefills stored nothing.
  expect(r.out['device-lost']!.states).toBe(3);
  expect(r.restartsCount).toBe(3);
  expect(r.restarts.some((x) => /WebGPU device was lost/.test(x))).toBe(true);
  expect(r.device).toBe('wasm');
});
