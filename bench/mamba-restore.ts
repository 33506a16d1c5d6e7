/**
 * Mamba restore versus re-prefill, on mamba-130m-shape (WASM by default) in
 * headless Chromium, through the demo page's client exactly as an app calls it:
 *
 *   npx tsx scripts/make-models.ts --models mamba-130m-shape   # once (~520 MB in .cache/models)
 *   npx tsx bench/mamba-restore.ts [--model mamba-130m-shape] [--device wasm] [--sizes 256,1024,4096] [--reps 2] [--port 5192]
 *
 * For each context size: re-prefill = createState on an empty store (the
 * engine's prefillMs: every token through the model); restore = infer with a
 * one-token delta and no generation, the engine's restoreMs (prefix keys,
 * manifest lookup, blob read, digest check, decode), from the hot tier and
 * from IndexedDB after dropHot. Each restore uses a new delta token, so no
 * earlier run's child state is a prefix of the next. Step = generateMs / n.
 * Prints JSON lines and a table; writes bench/results/mamba-restore.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { launchOptions } from '../tests/e2e/browser.ts';
import { CACHE_MODELS, REPO_ROOT } from '../scripts/make-models.ts';
import { startServer } from './lib/server.ts';
import type { StatecartClient } from '../src/lib/index.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
  }
}

const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const model = arg('model', 'mamba-130m-shape');
const device = arg('device', 'wasm');
const sizes = arg('sizes', '256,1024,4096').split(',').map(Number);
const reps = Number(arg('reps', '2'));
const port = Number(arg('port', '5192'));
const stepTokens = Number(arg('steps', '16'));

const median = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
// Ids spread over the vocabulary, deterministic, different per salt.
const ids = (n: number, salt: number): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % 50257);

const srv = await startServer({ root: REPO_ROOT, port, cacheRoot: CACHE_MODELS });
const browser = await chromium.launch(launchOptions());
const rows: Record<string, unknown>[] = [];
try {
  const page = await browser.newPage({ baseURL: srv.url });
  page.on('console', (m) => m.type() === 'error' && console.error('[page]', m.text()));
  const t0 = performance.now();
  await page.goto(`/?${new URLSearchParams({ model, device })}`);
  await page.waitForFunction(() => window.statecartReady !== undefined, undefined, { timeout: 600_000 });
  await page.evaluate(() => window.statecartReady, undefined);
  const health = await page.evaluate(() => window.statecart!.health());
  if (health.model !== model) throw new Error(`the page loaded ${health.model}, not ${model} (status: ${await page.locator('#status').textContent()})`);
  console.log(
    JSON.stringify({
      model,
      device: health.device,
      threads: health.threads,
      crossOriginIsolated: health.crossOriginIsolated,
      loadS: +((performance.now() - t0) / 1000).toFixed(1),
      cpus: os.cpus().length,
      load1: os.loadavg()[0],
    }),
  );

  let salt = 1;
  for (const n of sizes) {
    const r = await page.evaluate(
      async ({ n, reps, base, deltaBase, stepTokens }) => {
        const sc = window.statecart!;
        const prefill: number[] = [];
        let key = '';
        let bytes = 0;
        for (let i = 0; i < reps; i++) {
          await sc.clearStore();
          const c = await sc.createState({ tokens: base });
          if (c.processed !== n) throw new Error(`re-prefill processed ${c.processed} of ${n} tokens`);
          prefill.push(c.timings.prefillMs);
          key = c.stateKey;
          bytes = c.bytes;
        }
        const hot: number[] = [];
        const stored: number[] = [];
        let d = 0;
        for (let i = 0; i < Math.max(reps, 3); i++) {
          const h = await sc.infer({ stateKey: key, deltaTokens: [deltaBase + d++], maxNewTokens: 0 });
          if (h.tier !== 'hot' || h.savings.tokensReused !== n) throw new Error(`hot restore came from ${h.tier}, reused ${h.savings.tokensReused}`);
          hot.push(h.timings.restoreMs);
          await window.statecartTesting!.dropHot();
          const s = await sc.infer({ stateKey: key, deltaTokens: [deltaBase + d++], maxNewTokens: 0 });
          if (s.tier !== 'stored' || s.savings.tokensReused !== n) throw new Error(`stored restore came from ${s.tier}, reused ${s.savings.tokensReused}`);
          stored.push(s.timings.restoreMs);
        }
        const g = await sc.infer({ stateKey: key, deltaTokens: [deltaBase + d++], maxNewTokens: stepTokens });
        return { prefill, hot, stored, bytes, stepMs: g.timings.generateMs / stepTokens };
      },
      { n, reps, base: ids(n, salt++), deltaBase: 1000 + 100 * salt, stepTokens },
    );
    const row = {
      tokens: n,
      stateBytes: r.bytes,
      reprefillMs: +median(r.prefill).toFixed(1),
      prefillTokPerS: +((n / median(r.prefill)) * 1000).toFixed(1),
      restoreHotMs: +median(r.hot).toFixed(2),
      restoreStoredMs: +median(r.stored).toFixed(2),
      speedupHot: Math.round(median(r.prefill) / median(r.hot)),
      speedupStored: Math.round(median(r.prefill) / median(r.stored)),
      stepMs: +r.stepMs.toFixed(1),
      samples: r,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  console.log('\n| tokens | re-prefill ms | prefill tok/s | restore hot ms | restore stored ms | × hot | × stored | step ms |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(
      `| ${r.tokens} | ${r.reprefillMs} | ${r.prefillTokPerS} | ${r.restoreHotMs} | ${r.restoreStoredMs} | ${r.speedupHot} | ${r.speedupStored} | ${r.stepMs} |`,
    );
  mkdirSync(join(REPO_ROOT, 'bench/results'), { recursive: true });
  writeFileSync(
    join(REPO_ROOT, 'bench/results/mamba-restore.json'),
    JSON.stringify({ model, device: health.device, threads: health.threads, load1: os.loadavg()[0], when: new Date().toISOString(), rows }, null, 2) + '\n',
  );
} finally {
  await browser.close();
  await srv.close();
}
