import { test, expect, chromium, type Page } from '@playwright/test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchOptions } from './browser.ts';
import { openPage } from './helpers.ts';

// Issue 18: Mamba checkpoints, explained reuse and hit counts in the browser
// (IndexedDB, onnxruntime-web on WASM), across a full browser restart, and
// on the page.

const ids = (n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % 50257);

test('Mamba checkpoints and hit counts survive a browser restart; after it, a text sharing part of a stored one resumes from a checkpoint in IndexedDB', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'statecart-reuse-profile-'));
  const baseURL = test.info().project.use.baseURL!;
  const open = async (clear: boolean) => {
    const ctx = await chromium.launchPersistentContext(dir, { ...launchOptions(), baseURL });
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    await openPage(page, { model: 'tiny-mamba', clear });
    return { ctx, page };
  };
  try {
    let { ctx, page } = await open(true);
    const text = ids(300, 1);
    const before = await page.evaluate(async (t) => {
      const sc = window.statecart!;
      const a = await sc.createState({ tokens: t, checkpointEvery: 64 });
      // Shares 200 tokens with A: resumes from A's checkpoint at 192 (a hit).
      const b = await sc.createState({ tokens: [...t.slice(0, 200), 11, 12, 13], checkpointEvery: 64 });
      const cont = await sc.infer({ stateKey: a.stateKey, deltaTokens: [5, 6, 7], maxNewTokens: 6 });
      return { a, b, cont };
    }, text);
    expect(before.a.checkpoints).toHaveLength(4); // 64, 128, 192, 256
    expect(before.b.reused).toBe(192);
    expect(before.b.reuse.fromKey).toBe(before.a.checkpoints[2]);
    // Hit counts are written in batches (about a second after the reads): let the batch go out before the browser closes.
    await page.waitForTimeout(2500);
    await ctx.close();

    // A new browser process on the same profile: nothing in memory.
    ({ ctx, page } = await open(false));
    const after = await page.evaluate(
      async ({ t, a }) => {
        const sc = window.statecart!;
        const states = await sc.listStates();
        const cont = await sc.infer({ stateKey: a, deltaTokens: [5, 6, 7], maxNewTokens: 6 });
        const c = await sc.createState({ tokens: [...t.slice(0, 150), 21, 22], checkpointEvery: 64 });
        const verified = await Promise.all(states.map((s) => sc.verifyState({ stateKey: s.key })));
        return { states, cont, c, verified: verified.every((v) => v.ok) };
      },
      { t: text, a: before.a.stateKey },
    );
    const byKey = new Map(after.states.map((s) => [s.key, s]));
    for (const k of before.a.checkpoints) expect(byKey.get(k)?.checkpoint).toBe(true);
    expect(byKey.get(before.a.checkpoints[2]!)?.hits).toBe(1);
    expect(byKey.get(before.a.checkpoints[0]!)?.hits).toBe(0);
    expect(byKey.get(before.a.stateKey)?.hits).toBe(1); // the infer before the restart
    expect(byKey.get(before.a.stateKey)?.checkpoint).toBeUndefined();
    expect(after.verified).toBe(true);
    // The state itself, read back from IndexedDB, continues exactly as before the restart.
    expect(after.cont.tier).toBe('stored');
    expect(after.cont.savings.tokensReused).toBe(300);
    expect(after.cont.outputTokens).toEqual(before.cont.outputTokens);
    // A text sharing 150 tokens resumes from the checkpoint at 128, read from IndexedDB.
    expect(after.c.reused).toBe(128);
    expect(after.c.processed).toBe(152 - 128);
    expect(after.c.reuse).toMatchObject({ cause: 'no-checkpoint', stoppedAt: 150, tier: 'stored', fromKey: before.a.checkpoints[1] });
    await ctx.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

const nodes = (page: Page) => page.getByTestId('state-node');

test('the page says why each step reused what it did, shows hits, and keeps checkpoints out of the graph until asked', async ({ page }) => {
  await openPage(page, { model: 'tiny-mamba' });
  // A long base: the 'Long document' example is several hundred tokens, so its prefill keeps a checkpoint every 256.
  await page.getByRole('button', { name: 'Long document' }).click();
  const doc = await page.getByLabel('Base text').inputValue();
  const docTokens = await page.evaluate((t) => window.statecart!.tokenize({ text: t }), doc);
  expect(docTokens.length).toBeGreaterThan(256);
  await page.getByRole('button', { name: 'Create base state' }).click();
  await expect(page.getByTestId('create-result')).toContainText('checkpoint');
  const first = page.getByTestId('reuse-log').locator('li');
  await expect(first).toHaveCount(1);
  await expect(first.first()).toContainText('nothing is stored for tiny-mamba yet');
  const count = Math.floor((docTokens.length - 1) / 256);
  await expect(page.locator('#checkpointCount')).toHaveText(String(count));
  // Hidden by default: one node, the base.
  await expect(nodes(page)).toHaveCount(1);
  await page.getByLabel(/show \d+ checkpoints/).check();
  await expect(nodes(page)).toHaveCount(1 + count);
  await expect(page.locator('#graph .node.checkpoint')).toHaveCount(count);
  await page.getByLabel(/show \d+ checkpoints/).uncheck();
  await expect(nodes(page)).toHaveCount(1);

  // A second base that shares the first 300 tokens' text: it resumes from the checkpoint at 256.
  const shared = await page.evaluate((t) => window.statecart!.decode({ tokens: t.slice(0, 300) }), docTokens);
  await page.locator('#base').fill(`${shared} A different ending.`);
  await page.getByRole('button', { name: 'Create base state' }).click();
  await expect(page.getByTestId('reuse-log').locator('li')).toHaveCount(2);
  const second = page.getByTestId('reuse-log').locator('li').nth(1);
  await expect(second).toHaveAttribute('data-cause', 'no-checkpoint');
  await expect(second).toContainText('reused 256 of');
  await expect(second).toContainText('no checkpoint before token');
  // The checkpoint's hit shows in the graph once it is shown.
  await page.getByLabel(/show \d+ checkpoints/).check();
  await expect(page.locator('#graph .node.checkpoint[data-hits="1"]')).toHaveCount(1);
  await expect(page.locator('#graph .node.checkpoint[data-hits="1"]')).toContainText('1 hit');
  await page.screenshot({ path: 'test-results/screenshots/20-reuse.png', fullPage: true });
});
