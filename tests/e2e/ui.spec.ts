import { test, expect, chromium, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launchOptions } from './browser.ts';
import { serveStatic } from './support/static-server.ts';

const SHOTS = 'test-results/screenshots';

async function shot(page: Page, name: string, fullPage = true): Promise<void> {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage });
}

/** Opens the page as a visitor would, waits for the worker, and (optionally) empties the store first. */
async function visit(page: Page, opts: { clear?: boolean; query?: string } = {}): Promise<void> {
  await page.goto(`/?device=wasm&model=tiny-gpt2${opts.query ?? ''}`);
  await page.waitForFunction(() => window.statecartReady !== undefined);
  await page.evaluate(async () => void (await window.statecartReady));
  await expect(page.locator('#status')).not.toHaveClass(/error/);
  if (opts.clear !== false) {
    await page.evaluate(() => window.statecart!.clearStore());
    await page.reload();
    await page.evaluate(async () => void (await window.statecartReady));
  }
}

const nodes = (page: Page) => page.getByTestId('state-node');
const chartValues = async (page: Page, id: string) => (await page.locator(`#${id}`).getAttribute('aria-label')) ?? '';

/** Values of one series as the chart announces them to screen readers: "label v1, v2; label2 …". */
function series(aria: string, label: string): string[] {
  const part = aria.split(/[:;] /).find((p) => p.startsWith(label));
  return part ? part.slice(label.length).trim().split(', ') : [];
}

async function storeKeys(page: Page): Promise<string[]> {
  return page.evaluate(async () => (await window.statecart!.listStates()).map((s) => s.key).sort());
}

test.describe('the demo page, driven as a person would', () => {
  test('pick the tiny model, create a base, chain three deltas: the graph and the charts follow', async ({ page }) => {
    await visit(page);
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByLabel('Model', { exact: true }).selectOption('tiny-gpt2');
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.locator('#status')).toContainText('tiny-gpt2');
    await expect(page.getByTestId('device-badge')).toContainText('WASM');
    await page.getByRole('button', { name: 'System prompt' }).click();
    await page.getByRole('button', { name: 'Create base state' }).click();
    await expect(page.getByTestId('create-result')).toContainText('tokens');
    await expect(nodes(page)).toHaveCount(1);
    await shot(page, '01-base');

    const deltas = ['\nUser: where is the wood glue?\nAssistant:', '\nUser: and clamps?\nAssistant:', '\nUser: thanks, bye\nAssistant:'];
    for (const [i, d] of deltas.entries()) {
      await page.getByLabel('New text after this state').fill(d);
      await page.getByLabel('New tokens', { exact: true }).fill('6');
      await page.getByRole('button', { name: 'Continue' }).click();
      await expect(nodes(page)).toHaveCount(i + 2);
      await expect(page.getByTestId('action-result')).toContainText('processed');
    }
    await shot(page, '02-chain');

    // The graph is the store: four states, each delta's parent the one before.
    const states = await page.evaluate(async () => (await window.statecart!.listStates()).map((s) => ({ key: s.key, parent: s.parent, tokens: s.tokens })));
    expect(states).toHaveLength(4);
    for (let i = 1; i < 4; i++) expect(states[i]!.parent).toBe(states[i - 1]!.key);
    for (const s of states) await expect(page.locator(`[data-testid="state-node"][data-key="${s.key}"]`)).toContainText(`${s.tokens} tok`);

    // The charts hold one point per step, and the numbers are the engine's: each
    // delta processes only its own tokens plus 6 generated, the naive request the whole text.
    const tok = await chartValues(page, 'chartTokens');
    const cached = series(tok, 'with the cache').map(Number);
    const naive = series(tok, 'without (recompute all)').map(Number);
    expect(cached).toHaveLength(4);
    expect(naive).toHaveLength(4);
    for (let i = 1; i < 4; i++) {
      const deltaTokens = await page.evaluate((t) => window.statecart!.tokenize({ text: t }), deltas[i - 1]!);
      expect(cached[i]).toBe(deltaTokens.length + 6);
      expect(naive[i]).toBe(states[i - 1]!.tokens + deltaTokens.length + 6);
      expect(naive[i]!).toBeGreaterThan(naive[i - 1]!);
    }
    const time = await chartValues(page, 'chartTime');
    expect(series(time, 'recomputed').filter((v) => v !== '—')).toHaveLength(4);
    const bytes = await chartValues(page, 'chartBytes');
    expect(series(bytes, 'stored (shared blocks)')).toHaveLength(4);
    await expect(page.getByTestId('savings-summary')).toContainText('4 steps');

    // Pin the base, evict the rest: only the pinned state is left.
    await nodes(page).first().click();
    await page.getByRole('button', { name: 'Pin', exact: true }).click();
    await expect(nodes(page).first()).toHaveAttribute('aria-label', /pinned/);
    await shot(page, '03-pinned');
    await page.getByRole('button', { name: 'Evict unpinned states' }).click();
    await expect(nodes(page)).toHaveCount(1);
    expect(await storeKeys(page)).toEqual([states[0]!.key]);
  });

  test('the agent loop fills the charts, and a phone-width screen stays readable', async ({ page }) => {
    await visit(page);
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByLabel('Steps').fill('5');
    await page.getByRole('button', { name: 'Run the agent loop' }).click();
    await expect(page.locator('#loopResult')).toContainText('base + 5 steps', { timeout: 120_000 });
    await expect(nodes(page)).toHaveCount(6);
    const tok = await chartValues(page, 'chartTokens');
    expect(series(tok, 'with the cache')).toHaveLength(6);
    await shot(page, '04-agent-loop');
    await page.setViewportSize({ width: 390, height: 844 });
    // Nothing wider than the screen but the scrollable graph.
    // Chart.js resizes its canvases on the next ResizeObserver tick: poll, as the eye would wait a frame.
    const measure = () =>
      page.evaluate(() => ({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        offenders: [...document.querySelectorAll('body *')]
          .filter((e) => !e.closest('.graph-wrap') && e.getBoundingClientRect().right > window.innerWidth + 1)
          .map((e) => `${e.tagName.toLowerCase()}#${e.id}.${e.className}`)
          .slice(0, 8),
      }));
    await expect
      .poll(async () => (await measure()).overflow, { timeout: 5_000 })
      .toBeLessThanOrEqual(0)
      .catch(async () => {
        const m = await measure();
        throw new Error(`page is ${m.overflow}px wider than the screen; elements: ${m.offenders.join(', ')}`);
      });
    await shot(page, '05-phone');
  });
});

test.describe('cartridges through the page', () => {
  test('download a cartridge, reload, upload it into a fresh profile (delta refused without its parent), and continue the same way', async ({ page }) => {
    const tmp = mkdtempSync(join(tmpdir(), 'statecart-ui-'));
    try {
      await visit(page);
      await page.getByRole('button', { name: 'Few-shot' }).click();
      await page.getByRole('button', { name: 'Create base state' }).click();
      await expect(nodes(page)).toHaveCount(1);
      await page.getByLabel('New text after this state').fill(' Lima\nQ: capital of Spain? A:');
      await page.getByLabel('New tokens', { exact: true }).fill('4');
      await page.getByRole('button', { name: 'Continue' }).click();
      await expect(nodes(page)).toHaveCount(2);
      const chainEnd = await nodes(page).nth(1).getAttribute('data-key');
      await expect(page.locator('#exportTarget')).toContainText('delta of');

      const save = async (delta: boolean, codec: string) => {
        await page.getByLabel('delta from its parent').setChecked(delta);
        await page.getByLabel('Codec', { exact: true }).selectOption(codec);
        const [dl] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download cartridge' }).click()]);
        const path = join(tmp, dl.suggestedFilename());
        await dl.saveAs(path);
        await expect(page.locator('#exportResult')).toContainText(dl.suggestedFilename());
        return path;
      };
      const full = await save(false, 'fp32');
      const delta = await save(true, 'fp32');
      expect(full).toMatch(/\.safetensors$/);
      expect(statSync(delta).size).toBeLessThan(statSync(full).size);
      await shot(page, '06-cartridge-exported');

      // What continuing from the state gives here, to compare after the trip.
      const question = '\nQ: capital of Italy? A:';
      await page.getByLabel('New text after this state').fill(question);
      await page.getByLabel('New tokens', { exact: true }).fill('6');
      await page.getByRole('button', { name: 'Continue' }).click();
      await expect(nodes(page)).toHaveCount(3);
      // The graph can redraw before the output is written: wait for the step's own result line.
      await expect(page.getByTestId('action-result')).toContainText('processed');
      const here = await page.getByTestId('output').textContent();

      // A reload keeps everything: the graph is read back from IndexedDB.
      await page.reload();
      await page.evaluate(async () => void (await window.statecartReady));
      await expect(nodes(page)).toHaveCount(3);
      await expect(nodes(page).first()).toHaveAttribute('aria-label', /tier stored/);

      // A fresh profile: nothing stored, then the files.
      const profile = join(tmp, 'profile');
      const ctx = await chromium.launchPersistentContext(profile, { ...launchOptions(), baseURL: test.info().project.use.baseURL!, acceptDownloads: true });
      try {
        const p2 = ctx.pages()[0] ?? (await ctx.newPage());
        await visit(p2, { clear: false });
        expect(await storeKeys(p2)).toEqual([]);
        await p2.setInputFiles('#file', delta);
        const refused = p2.getByTestId('import-entry').first();
        await expect(refused).toHaveClass(/error/);
        await expect(refused).toContainText('MissingParent');
        await expect(refused).toContainText('the store is unchanged (0 states');
        expect(await storeKeys(p2)).toEqual([]);
        await p2.setInputFiles('#file', full);
        const ok = p2.getByTestId('import-entry').first();
        await expect(ok).toHaveClass(/ok/);
        await expect(ok).toContainText('imported state');
        await expect(nodes(p2)).toHaveCount(1);
        expect(await storeKeys(p2)).toEqual([chainEnd]);
        await shot(p2, '07-imported-fresh-profile');
        await p2.getByLabel('New text after this state').fill(question);
        await p2.getByLabel('New tokens', { exact: true }).fill('6');
        await p2.getByRole('button', { name: 'Continue' }).click();
        await expect(nodes(p2)).toHaveCount(2);
        await expect(p2.getByTestId('action-result')).toContainText('processed');
        expect(await p2.getByTestId('output').textContent()).toBe(here);
      } finally {
        await ctx.close();
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  test('a broken file is refused in plain words next to its name, and the store is unchanged', async ({ page }) => {
    const tmp = mkdtempSync(join(tmpdir(), 'statecart-ui-'));
    try {
      await visit(page);
      await page.getByRole('button', { name: 'System prompt' }).click();
      await page.getByRole('button', { name: 'Create base state' }).click();
      await expect(nodes(page)).toHaveCount(1);
      // A real cartridge cut in half, and bytes that were never one.
      const bytes = await page.evaluate(async () => {
        const sc = window.statecart!;
        const [s] = await sc.listStates();
        return Array.from(new Uint8Array(await (await sc.exportCartridge({ stateKey: s!.key })).arrayBuffer()));
      });
      writeFileSync(join(tmp, 'cut.safetensors'), Uint8Array.from(bytes.slice(0, bytes.length >> 1)));
      writeFileSync(join(tmp, 'junk.safetensors'), Buffer.from('this is not a cartridge at all, just text\n'.repeat(4)));
      const before = await storeKeys(page);
      const bytesBefore = await page.evaluate(async () => (await window.statecart!.health()).bytesStored);
      for (const name of ['cut.safetensors', 'junk.safetensors']) {
        await page.setInputFiles('#file', join(tmp, name));
        const entry = page.getByTestId('import-entry').first();
        await expect(entry).toContainText(name);
        await expect(entry).toHaveClass(/error/);
        await expect(entry).toContainText('InvalidCartridge');
        await expect(entry).toContainText('the store is unchanged (1 states');
      }
      expect(await storeKeys(page)).toEqual(before);
      expect(await page.evaluate(async () => (await window.statecart!.health()).bytesStored)).toBe(bytesBefore);
      await expect(nodes(page)).toHaveCount(1);
      await shot(page, '08-broken-file');
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

test.describe('the built static site', () => {
  test('vite build output runs single-threaded from a host without COOP/COEP: create, continue, cartridge round trip', async ({ browser }) => {
    test.setTimeout(400_000);
    const out = join(process.cwd(), 'test-results', 'ui-dist');
    execFileSync('npx', ['vite', 'build', '--outDir', out, '--emptyOutDir', '--logLevel', 'warn'], { stdio: 'pipe', timeout: 300_000 });
    expect(existsSync(join(out, 'models/tiny-gpt2/config.json')), 'the tiny models ship with the site').toBe(true);
    const host = await serveStatic(out, 0);
    const { url } = host;
    const ctx = await browser.newContext({ acceptDownloads: true });
    try {
      const page = await ctx.newPage();
      // A sub-folder path, as on GitHub Pages: the relative base must hold.
      await page.goto(`${url}?device=wasm&model=tiny-gpt2`);
      await page.waitForFunction(() => window.statecartReady !== undefined);
      await page.evaluate(async () => void (await window.statecartReady));
      await expect(page.locator('#status')).not.toHaveClass(/error/);
      await page.evaluate(() => window.statecart!.clearStore());
      const env = await page.evaluate(async () => ({ isolated: self.crossOriginIsolated, h: await window.statecart!.health() }));
      expect(env.isolated).toBe(false);
      expect(env.h.crossOriginIsolated).toBe(false);
      expect(env.h.threads).toBe(1);
      await expect(page.getByTestId('device-badge')).toContainText('1 thread');
      await expect(page.locator('#deviceReason')).toContainText('not cross-origin isolated');
      await page.getByRole('button', { name: 'System prompt' }).click();
      await page.getByRole('button', { name: 'Create base state' }).click();
      await expect(nodes(page)).toHaveCount(1);
      await page.getByLabel('New text after this state').fill('\nUser: glue?\nAssistant:');
      await page.getByRole('button', { name: 'Continue' }).click();
      await expect(nodes(page)).toHaveCount(2);
      await shot(page, '09-static-site');
      const trip = await page.evaluate(async () => {
        const sc = window.statecart!;
        const states = await sc.listStates();
        const last = states[states.length - 1]!;
        const blob = await sc.exportCartridge({ stateKey: last.key });
        const a = await sc.infer({ stateKey: last.key, delta: ' And', maxNewTokens: 5 });
        await sc.clearStore();
        const imp = await sc.importCartridge({ source: blob });
        const b = await sc.infer({ stateKey: imp.stateKey, delta: ' And', maxNewTokens: 5 });
        return { same: imp.stateKey === last.key, a: a.outputTokens, b: b.outputTokens, reused: b.savings.tokensReused, tokens: last.tokens };
      });
      expect(trip.same).toBe(true);
      expect(trip.b).toEqual(trip.a);
      expect(trip.reused).toBe(trip.tokens);
    } finally {
      await ctx.close();
      await host.close();
    }
  });
});

test.describe('merge and codecs from the graph', () => {
  test('merge a chain into one state, and measure the codecs on it', async ({ page }) => {
    await visit(page);
    await page.getByRole('button', { name: 'System prompt' }).click();
    await page.getByRole('button', { name: 'Create base state' }).click();
    for (const d of [' First.', ' Second.']) {
      await page.getByLabel('New text after this state').fill(d);
      await page.getByLabel('New tokens', { exact: true }).fill('2');
      await page.getByRole('button', { name: 'Continue' }).click();
      await expect(page.getByTestId('action-result')).toContainText(' → ');
    }
    await expect(nodes(page)).toHaveCount(3);
    const last = await page.evaluate(async () => (await window.statecart!.listStates()).at(-1)!.key);
    await expect(nodes(page).last()).toHaveAttribute('aria-pressed', 'true');
    await page.getByRole('button', { name: 'Merge chain' }).click();
    await expect(page.getByTestId('action-result')).toContainText('merged 3 states');
    const after = await storeKeys(page);
    expect(after).toContain(last);
    await expect(nodes(page)).toHaveCount(after.length);
    expect(after.length).toBeLessThan(3);
    await page.locator(`[data-testid="state-node"][data-key="${last}"]`).click();
    await page.getByRole('button', { name: 'Choose codec' }).click();
    const table = page.getByTestId('codec-table');
    await expect(table.locator('tbody tr')).toHaveCount(4, { timeout: 60_000 });
    await expect(table).toContainText('fp32');
    await expect(table.locator('tr.chosen')).toHaveCount(1);
    await shot(page, '11-merge-codecs');
  });
});

test.describe('Mamba and the keyboard', () => {
  test('tiny-mamba from the picker: a base and a delta appear in the graph, chosen with the keyboard', async ({ page }) => {
    await visit(page, { query: '&autoload=0' });
    await page.getByLabel('Model', { exact: true }).selectOption('tiny-mamba');
    await page.getByRole('button', { name: 'Load model' }).click();
    await expect(page.locator('#status')).toContainText('tiny-mamba (mamba');
    await expect(page.locator('#status')).not.toHaveClass(/error/);
    await page.getByRole('button', { name: 'Few-shot' }).click();
    await page.getByRole('button', { name: 'Create base state' }).click();
    await expect(nodes(page)).toHaveCount(1);
    await page.getByLabel('New text after this state').fill(' Lima');
    await page.getByRole('button', { name: 'Continue' }).click();
    await expect(nodes(page)).toHaveCount(2);
    const states = await page.evaluate(async () => (await window.statecart!.listStates()).map((s) => ({ model: s.model, parent: s.parent, key: s.key })));
    expect(states.map((s) => s.model)).toEqual(['tiny-mamba', 'tiny-mamba']);
    expect(states[1]!.parent).toBe(states[0]!.key);
    // Keyboard only: focus the base node, press Enter, and it is the selected state.
    await nodes(page).first().focus();
    await page.keyboard.press('Enter');
    await expect(nodes(page).first()).toHaveAttribute('aria-pressed', 'true');
    await expect(page.getByTestId('state-detail')).toContainText(states[0]!.key.slice(7, 19));
    await expect(page.locator(':focus')).toHaveAttribute('data-key', states[0]!.key);
    await shot(page, '10-mamba');
  });
});
