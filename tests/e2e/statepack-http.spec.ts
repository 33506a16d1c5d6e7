import { test, expect, type Frame, type Page } from '@playwright/test';
import { openPage } from './helpers.ts';

// Issue 17, part 3: State Pack v0.2 over HTTP, in the page. A Service Worker
// answers the seed's routes under /statepack/ on the page's origin and forwards
// them to the origin's engine; a same-origin iframe with no engine of its own
// reaches it too.

const BASE = 'You are a legal research agent. Read each clause and say which obligations it creates.';
const STEPS = [' Step 1: clause 4 affects indemnity.', ' Step 2: clause 9 limits liability.'];

interface Session {
  statuses: number[];
  keys: string[];
  created: Record<string, unknown>;
  infer: Record<string, unknown>;
  compact: Record<string, unknown>;
  state: Record<string, unknown>;
  health: Record<string, unknown>;
}

/** The seed's curl session, as fetch calls (run inside the page or the frame). */
function session(where: Page | Frame): Promise<Session> {
  return where.evaluate(
    async ({ base, steps }) => {
      const statuses: number[] = [];
      const call = async (method: string, path: string, body?: unknown) => {
        const r = await fetch(`/statepack/${path}`, {
          method,
          ...(body ? { headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) } : {}),
        });
        statuses.push(r.status);
        return (await r.json()) as Record<string, unknown>;
      };
      const created = await call('POST', 'states', { base_text: base });
      const i1 = await call('POST', 'infer', { state_hash: created.state_hash, delta_text: steps[0], max_new_tokens: 4 });
      const i2 = await call('POST', 'infer', { state_hash: i1.new_state_hash, delta_text: steps[1], max_new_tokens: 4 });
      const compact = await call('POST', 'compact', { state_hash: i2.new_state_hash, keep: { first_tokens: 8, last_tokens: 16 } });
      const health = await call('GET', 'health');
      const state = await call('GET', `states/${compact.new_state_hash}`);
      return {
        statuses,
        keys: [created.state_hash, i1.new_state_hash, i2.new_state_hash, compact.new_state_hash] as string[],
        created,
        infer: i1,
        compact,
        state,
        health,
      };
    },
    { base: BASE, steps: STEPS },
  );
}

test('fetch from the page and from a same-origin iframe: create → infer → infer → compact → health through the Service Worker, with the library’s keys', async ({
  page,
}) => {
  await openPage(page);
  const sw = await page.evaluate(async () => (await window.statepackReady!).base);
  expect(new URL(sw).pathname).toBe('/statepack/');
  expect(await page.evaluate(() => navigator.serviceWorker.controller?.scriptURL)).toMatch(/\/statepack-sw\.js$/);

  const fromPage = await session(page);
  expect(fromPage.statuses).toEqual([200, 200, 200, 200, 200, 200]);
  expect(fromPage.created).toMatchObject({ state_hash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), tokens: expect.any(Number), bytes: expect.any(Number) });
  expect(fromPage.created.receipt_hash).toMatch(/^sha256:/);
  expect(fromPage.infer).toMatchObject({ new_state_hash: expect.any(String), output: expect.any(String), savings: { tokens_reused: fromPage.created.tokens } });
  expect(fromPage.compact).toMatchObject({ steps_folded: 3, tokens: 24 });
  expect(fromPage.state).toMatchObject({ state_hash: fromPage.keys[3], tokens: 24, hot: true });
  expect(fromPage.health).toMatchObject({ states_hot: expect.any(Number), states_cached: 4, model: 'tiny-gpt2' });

  // A same-origin iframe with no engine of its own: the Service Worker sends its requests to this page's engine.
  await page.evaluate(async () => {
    const f = document.createElement('iframe');
    f.src = '/tests/e2e/support/statepack-frame.html';
    f.name = 'frame';
    document.body.append(f);
    await new Promise((r) => f.addEventListener('load', r, { once: true }));
  });
  const frame = page.frame({ name: 'frame' })!;
  expect(await frame.evaluate(() => ({ engine: 'statecart' in window, controlled: Boolean(navigator.serviceWorker.controller) }))).toEqual({
    engine: false,
    controlled: true,
  });
  const fromFrame = await session(frame);
  expect(fromFrame.statuses).toEqual([200, 200, 200, 200, 200, 200]);
  expect(fromFrame.keys).toEqual(fromPage.keys);
  // The same store: the frame's create was a cache hit.
  expect(fromFrame.created.tokens_processed).toBe(0);

  // The same calls through the library on an empty store give the same keys.
  const lib = await page.evaluate(
    async ({ base, steps }) => {
      const sc = window.statecart!;
      await sc.clearStore();
      const c = await sc.createState({ text: base });
      const i1 = await sc.infer({ stateKey: c.stateKey, delta: steps[0], maxNewTokens: 4 });
      const i2 = await sc.infer({ stateKey: i1.newStateKey, delta: steps[1], maxNewTokens: 4 });
      const k = await sc.compact({ stateKey: i2.newStateKey, keep: { firstTokens: 8, lastTokens: 16 } });
      return { keys: [c.stateKey, i1.newStateKey, i2.newStateKey, k.newStateKey], output: i1.output, receipt: c.receipt.hash };
    },
    { base: BASE, steps: STEPS },
  );
  expect(lib.keys).toEqual(fromPage.keys);
  expect(lib.output).toBe(fromPage.infer.output);
  expect(lib.receipt).toBe(fromPage.created.receipt_hash);
});

test('errors over HTTP: bad JSON 400, an unknown hash 404, a context overflow 409 naming compact (from the page and the iframe)', async ({ page }) => {
  await openPage(page);
  await page.evaluate(async () => void (await window.statepackReady));
  await page.evaluate(async () => {
    const f = document.createElement('iframe');
    f.src = '/tests/e2e/support/statepack-frame.html';
    f.name = 'frame';
    document.body.append(f);
    await new Promise((r) => f.addEventListener('load', r, { once: true }));
  });
  for (const where of [page, page.frame({ name: 'frame' })!]) {
    const r = await where.evaluate(async (base) => {
      const call = async (method: string, path: string, body?: string) => {
        const res = await fetch(`/statepack/${path}`, { method, ...(body !== undefined ? { headers: { 'Content-Type': 'application/json' }, body } : {}) });
        return { status: res.status, type: res.headers.get('content-type'), body: (await res.json()) as { error: string; message: string } };
      };
      const badJson = await call('POST', 'states', '{"base_text": "unfinished');
      const unknown = await call('GET', `states/sha256:${'ab'.repeat(32)}`);
      const unknownInfer = await call('POST', 'infer', JSON.stringify({ state_hash: `sha256:${'cd'.repeat(32)}`, delta_text: 'x' }));
      const made = await call('POST', 'states', JSON.stringify({ base_text: base }));
      const overflow = await call(
        'POST',
        'infer',
        JSON.stringify({ state_hash: (made.body as unknown as { state_hash: string }).state_hash, delta_text: ' more', max_new_tokens: 2000 }),
      );
      const route = await call('GET', 'nowhere');
      return { badJson, unknown, unknownInfer, overflow, route };
    }, BASE);
    expect(r.badJson).toMatchObject({ status: 400, type: 'application/json', body: { error: 'InvalidInput' } });
    expect(r.unknown).toMatchObject({ status: 404, body: { error: 'StateNotFound' } });
    expect(r.unknownInfer).toMatchObject({ status: 404, body: { error: 'StateNotFound' } });
    expect(r.overflow).toMatchObject({ status: 409, body: { error: 'ContextOverflow' } });
    expect(r.overflow.body.message).toMatch(/compact/);
    expect(r.route.status).toBe(404);
  }
});
