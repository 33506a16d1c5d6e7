import { test, expect } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serveStatic } from './support/static-server.ts';
import { EXAMPLES } from '../../src/ui/examples.ts';

// Issue 17 on the built site, from a plain static host (no COOP/COEP): the
// sample states it ships are a remote state host and a catalog on the first
// visit, the tabs share one engine, and the Service Worker answers the HTTP routes.

test('the built site: sample states from its own host on a first visit, one engine for two tabs, State Pack over HTTP', async ({ browser }) => {
  test.setTimeout(600_000);
  const out = join(process.cwd(), 'test-results', 'pastbrowser-dist');
  execFileSync('npx', ['vite', 'build', '--outDir', out, '--emptyOutDir', '--logLevel', 'error'], { stdio: 'pipe', timeout: 480_000 });
  for (const f of ['statepack-sw.js', 'catalog.json', 'index.html']) expect(existsSync(join(out, f)), f).toBe(true);
  const fps = readdirSync(join(out, 'states'));
  expect(fps).toHaveLength(2); // tiny-gpt2 and tiny-mamba
  const catalog = JSON.parse(readFileSync(join(out, 'catalog.json'), 'utf8'));
  expect(catalog.remote).toBe('states/');
  expect(catalog.cartridges.map((c: { name: string; model: string }) => `${c.model}: ${c.name}`).sort()).toEqual([
    'tiny-gpt2: Long document',
    'tiny-gpt2: System prompt',
    'tiny-mamba: Long document',
    'tiny-mamba: System prompt',
  ]);

  const site = await serveStatic(out, 0);
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    await page.goto(`${site.url}?device=wasm&model=tiny-gpt2`);
    await page.waitForFunction(() => window.statecartReady !== undefined);
    await page.evaluate(async () => void (await window.statecartReady));
    expect(await page.evaluate(() => ({ isolated: self.crossOriginIsolated, shared: window.statecart!.shared }))).toEqual({ isolated: false, shared: true });
    // The catalog panel lists the samples; the remotes field holds the site's own host.
    await expect(page.locator('#catalog li')).toHaveCount(4);
    await expect(page.locator('#remotes')).toHaveValue(`${site.url}states/`);

    // A visitor clicks the example and creates the base: it comes from the site's sample, not the model.
    site.gets.length = 0;
    await page.getByRole('button', { name: 'System prompt' }).click();
    await page.getByRole('button', { name: 'Create base state' }).click();
    await expect(page.getByTestId('create-result')).toContainText('came from the remote');
    await expect(page.getByTestId('create-result')).toContainText('was already stored');
    const gpt2 = catalog.cartridges.find((c: { model: string; name: string }) => c.model === 'tiny-gpt2' && c.name === 'System prompt');
    expect(site.gets.filter((g) => g.endsWith('.safetensors'))).toEqual([`/${gpt2.url}`]);

    // A second tab of the site: the same engine, so the state is hot there.
    const other = await ctx.newPage();
    await other.goto(`${site.url}?device=wasm&model=tiny-gpt2`);
    await other.evaluate(async () => void (await window.statecartReady));
    expect(await other.evaluate(async (key) => (await window.statecart!.getState({ stateKey: key })).tier, gpt2.key)).toBe('hot');

    // The HTTP routes, relative to the site (it may live in any folder).
    await page.evaluate(async () => void (await window.statepackReady));
    const http = await other.evaluate(async (key) => {
      await window.statepackReady;
      const h = await fetch('statepack/health');
      const r = await fetch('statepack/infer', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ state_hash: key, delta_text: ' Where is the glue?', max_new_tokens: 4 }),
      });
      return { health: { status: h.status, body: await h.json() }, infer: { status: r.status, body: await r.json() } };
    }, gpt2.key);
    expect(http.health).toMatchObject({ status: 200, body: { states_cached: 1, model: 'tiny-gpt2' } });
    expect(http.infer).toMatchObject({ status: 200, body: { savings: { tokens_reused: gpt2.tokens } } });

    // tiny-mamba (a fixed-size state): its sample comes from the site too, on an engine of its own in the same shared worker.
    const mamba = await ctx.newPage();
    await mamba.goto(`${site.url}?device=wasm&model=tiny-mamba`);
    await mamba.evaluate(async () => void (await window.statecartReady));
    const m = await mamba.evaluate(async (text) => {
      const sc = window.statecart!;
      const r = await sc.createState({ text });
      const next = await sc.infer({ stateKey: r.stateKey, delta: ' Section 17.', maxNewTokens: 4 });
      return { r, next };
    }, EXAMPLES['Long document']!);
    const mambaDoc = catalog.cartridges.find((c: { model: string; name: string }) => c.model === 'tiny-mamba' && c.name === 'Long document');
    expect(m.r.stateKey).toBe(mambaDoc.key);
    expect(m.r.processed).toBe(0);
    expect(m.r.remote?.from?.tokens).toBe(mambaDoc.tokens);
    expect(m.next.savings.tokensReused).toBe(mambaDoc.tokens);
    // The GPT-2 tabs keep their engine and model.
    expect(await page.evaluate(async () => (await window.statecart!.health()).model)).toBe('tiny-gpt2');
  } finally {
    await ctx.close();
    await site.close();
  }
});
