// Hub models in Chromium, through the Hub-shaped mirror (scripts/mirror.ts)
// on another port (cross-origin: CORS and CORP matter). The library: GPT-2 in
// fp32 and q8 and Mamba from its checkpoint load, make states, survive a
// reload and are reused, and the second visit downloads nothing. The page:
// pick a Hub model, see its size, load with progress, cancel, load again.
import { test, expect, type Page } from '@playwright/test';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startMirror, type Mirror, type MirrorOptions } from '../../scripts/mirror.ts';
import { GPT2_REPO, MAMBA_REPO, makeHubRepos } from '../../scripts/make-hub-repos.ts';
import { REPO_ROOT } from '../../scripts/make-models.ts';
import { LOREM } from './helpers.ts';

let tmp: string;
let root: string;

/** A mirror on the first free port of 5280–5289 (this worktree's range). */
async function mirrorInRange(o: Omit<MirrorOptions, 'root' | 'port'> = {}): Promise<Mirror> {
  for (let port = 5280; port <= 5289; port++) {
    try {
      return await startMirror({ root, port, ...o });
    } catch (e) {
      if ((e as { code?: string }).code !== 'EADDRINUSE') throw e;
    }
  }
  throw new Error('no free port in 5280–5289 for the mirror');
}

test.beforeAll(async () => {
  mkdirSync(join(REPO_ROOT, '.cache'), { recursive: true });
  tmp = mkdtempSync(join(REPO_ROOT, '.cache', 'test-hub-e2e-'));
  root = join(tmp, 'hub');
  await makeHubRepos({ out: root });
});

test.afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const size = (repo: string, f: string) => readFileSync(join(root, repo, f)).length;
/** The mirror's log as `METHOD file status` (resolve paths shortened to the file). */
const requests = (m: Mirror) => m.log.map((e) => `${e.method} ${e.path.replace(/^\/[^/]+\/[^/]+\/resolve\/main\//, '')} ${e.status}`);

/** The page with no model loaded, its client pointed at the mirror. */
async function openBare(page: Page, hub: string): Promise<void> {
  await page.goto(`/?${new URLSearchParams({ autoload: '0', device: 'wasm', hub })}`);
  await page.waitForFunction(() => window.statecartReady !== undefined);
  await page.evaluate(async () => {
    await window.statecartReady;
  });
}

/** A cartridge's metadata (the safetensors header's __metadata__), read in the page. */
const cartridgeMetadata = (page: Page, stateKey: string) =>
  page.evaluate(async (k) => {
    const buf = new Uint8Array(await (await window.statecart!.exportCartridge({ stateKey: k })).arrayBuffer());
    const n = Number(new DataView(buf.buffer).getBigUint64(0, true));
    return JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n))).__metadata__ as Record<string, string>;
  }, stateKey);

test.describe('Hub models through the mirror', () => {
  test('hf:Xenova/gpt2 in fp32 and q8: one download per file, different keys, reused after a reload with nothing downloaded', async ({ page }) => {
    const mirror = await mirrorInRange();
    try {
      await openBare(page, mirror.url);
      const text = LOREM.repeat(2);
      const first = await page.evaluate(async (t) => {
        const sc = window.statecart!;
        const files: string[] = [];
        const f32 = await sc.loadModel({ model: 'hf:Xenova/gpt2', dtype: 'fp32', device: 'wasm' }, { onProgress: (p) => void files.push(p.file) });
        const a = await sc.createState({ text: t });
        const q8 = await sc.loadModel({ model: 'hf:Xenova/gpt2', dtype: 'q8', device: 'wasm' });
        const b = await sc.createState({ text: t });
        return { f32, q8, a, b, files: [...new Set(files)] };
      }, text);
      expect(first.f32).toMatchObject({ id: 'hf:Xenova/gpt2', arch: 'gpt2', dtype: 'fp32', device: 'wasm' });
      expect(first.q8).toMatchObject({ id: 'hf:Xenova/gpt2', dtype: 'q8' });
      expect(first.q8.fingerprint).not.toBe(first.f32.fingerprint);
      expect(first.b.stateKey).not.toBe(first.a.stateKey);
      expect(first.b.tokens).toBe(first.a.tokens);
      expect(first.files).toContain('onnx/model.onnx');
      // Each file once (small files shared by both dtypes), each graph once: no second fetch for the fingerprint, no request by transformers.js.
      const log = requests(mirror);
      for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'])
        expect(
          log.filter((r) => r === `GET ${f} 200`),
          f,
        ).toHaveLength(1);
      expect(log.filter((r) => r === 'GET onnx/model.onnx 302')).toHaveLength(1);
      expect(log.filter((r) => r === 'GET onnx/model_quantized.onnx 302')).toHaveLength(1);
      expect(log.filter((r) => r.startsWith('GET /cdn-lfs/'))).toHaveLength(2);
      expect(log.filter((r) => !r.startsWith('OPTIONS'))).toHaveLength(8);
      const lfsBytes = mirror.log.filter((e) => e.path.startsWith('/cdn-lfs/')).reduce((a, e) => a + e.bytes, 0);
      expect(lfsBytes).toBe(size(GPT2_REPO, 'onnx/model.onnx') + size(GPT2_REPO, 'onnx/model_quantized.onnx'));
      // Provenance beside the state, not in its key.
      const meta = await cartridgeMetadata(page, first.b.stateKey);
      const prov = JSON.parse(meta.provenance!);
      expect(prov).toMatchObject({ device: 'wasm', dtype: 'q8' });
      expect(prov.runtimes['transformers.js']).toMatch(/^\d+\.\d+/);
      expect(prov.runtimes['onnxruntime-web']).toMatch(/^\d+\.\d+/);

      // A second visit: the files come from the browser's cache, the states from IndexedDB.
      // Writes go behind the calls: let them land before the page goes (a state still queued would go with it).
      await page.evaluate(() => window.statecart!.flush());
      await page.reload();
      await page.waitForFunction(() => window.statecartReady !== undefined);
      await page.evaluate(async () => {
        await window.statecartReady;
      });
      mirror.reset();
      const second = await page.evaluate(async (t) => {
        const sc = window.statecart!;
        const info = await sc.loadModel({ model: 'hf:Xenova/gpt2', dtype: 'fp32', device: 'wasm' });
        const a = await sc.createState({ text: t });
        const q8 = await sc.loadModel({ model: 'hf:Xenova/gpt2', dtype: 'q8', device: 'wasm' });
        const b = await sc.createState({ text: t });
        return { info, a, q8, b };
      }, text);
      expect(requests(mirror)).toEqual([]);
      expect(second.info.fingerprint).toBe(first.f32.fingerprint);
      expect(second.q8.fingerprint).toBe(first.q8.fingerprint);
      expect(second.a).toMatchObject({ stateKey: first.a.stateKey, reused: first.a.tokens, processed: 0 });
      expect(second.b).toMatchObject({ stateKey: first.b.stateKey, reused: first.b.tokens, processed: 0 });

      // A missing repository: a typed error naming it and the file, through the worker.
      const err = await page.evaluate(async () => {
        try {
          await window.statecart!.loadModel({ model: 'hf:acme/missing', device: 'wasm' });
          return null;
        } catch (e) {
          const x = e as { name: string; message: string; details?: Record<string, unknown> };
          return { name: x.name, message: x.message, details: x.details };
        }
      });
      expect(err).toMatchObject({ name: 'ModelNotLoaded', details: { repo: 'acme/missing', file: 'config.json', status: 404 } });
      expect(err!.message).toContain('has no repository acme/missing');
    } finally {
      await mirror.close();
    }
  });

  test('hf:state-spaces/mamba-130m-hf: converted in the worker with progress, kept; a reload neither downloads nor converts', async ({ page }) => {
    const mirror = await mirrorInRange();
    try {
      await openBare(page, mirror.url);
      const text = LOREM.repeat(2);
      const load = () =>
        page.evaluate(async (t) => {
          const sc = window.statecart!;
          const progress: { file: string; loaded: number; total: number }[] = [];
          const info = await sc.loadModel({ model: 'hf:state-spaces/mamba-130m-hf', device: 'wasm' }, { onProgress: (p) => void progress.push(p) });
          const s = await sc.createState({ text: t });
          return { info, s, progress };
        }, text);
      const a = await load();
      expect(a.info).toMatchObject({ id: 'hf:state-spaces/mamba-130m-hf', arch: 'mamba', dtype: 'fp32', sliceable: false });
      const conv = a.progress.filter((p) => p.file.startsWith('converting'));
      expect(conv.map((p) => p.loaded)).toEqual([0, 1, 2, 3]);
      expect(a.progress.some((p) => p.file === 'model.safetensors' && p.loaded === size(MAMBA_REPO, 'model.safetensors'))).toBe(true);
      expect(requests(mirror).filter((r) => r.startsWith('GET /cdn-lfs/'))).toHaveLength(1);

      // Writes go behind the calls: let them land before the page goes (a state still queued would go with it).
      await page.evaluate(() => window.statecart!.flush());
      await page.reload();
      await page.waitForFunction(() => window.statecartReady !== undefined);
      await page.evaluate(async () => {
        await window.statecartReady;
      });
      mirror.reset();
      const b = await load();
      expect(requests(mirror)).toEqual([]);
      expect(b.progress.filter((p) => p.file.startsWith('converting'))).toEqual([]);
      expect(b.info.fingerprint).toBe(a.info.fingerprint);
      expect(b.s).toMatchObject({ stateKey: a.s.stateKey, reused: a.s.tokens, processed: 0 });
    } finally {
      await mirror.close();
    }
  });

  test('the page: pick the Hub model, see its size, load with per-file progress, cancel, load again', async ({ page }) => {
    // Slow enough that Cancel lands mid-download.
    const mirror = await mirrorInRange({ bytesPerSecond: 3_000_000 });
    try {
      await openBare(page, mirror.url);
      await page.selectOption('#model', 'hf:Xenova/gpt2');
      await page.selectOption('#dtype', 'q8');
      await expect(page.locator('#dtype option[value="fp16"]')).toBeEnabled();
      const files = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model_quantized.onnx'];
      const total = files.reduce((a, f) => a + size(GPT2_REPO, f), 0);
      const note = page.locator('#modelNote');
      await expect(note).toHaveAttribute('data-download', String(total));
      await expect(note).toContainText('to download');
      // Sizes were asked with HEAD: nothing downloaded yet.
      expect(mirror.log.filter((e) => e.method === 'GET')).toEqual([]);

      await page.click('#load');
      const onnx = page.locator('#loadFiles li[data-file="onnx/model_quantized.onnx"]');
      await expect(onnx).toHaveAttribute('data-total', String(size(GPT2_REPO, 'onnx/model_quantized.onnx')));
      await expect.poll(async () => Number(await onnx.getAttribute('data-loaded'))).toBeGreaterThan(0);
      // (the small files, downloaded beside it, are whole before the graph is)
      const tok = page.locator('#loadFiles li[data-file="tokenizer.json"]');
      await expect(tok).toHaveAttribute('data-loaded', String(size(GPT2_REPO, 'tokenizer.json')));
      expect(Number(await onnx.getAttribute('data-loaded'))).toBeLessThan(size(GPT2_REPO, 'onnx/model_quantized.onnx'));
      await page.click('#cancelLoad');
      await expect(page.locator('#status')).toContainText('cancelled');
      await expect(page.locator('#status')).not.toHaveClass(/error/);
      await expect(page.locator('#cancelLoad')).toBeHidden();
      // The small files were kept; the cut graph was not.
      await expect(note).toHaveAttribute('data-download', String(size(GPT2_REPO, 'onnx/model_quantized.onnx')));

      await page.click('#load');
      await expect(page.locator('#status')).toContainText('loaded in', { timeout: 120_000 });
      await expect(page.locator('#status')).toContainText('hf:Xenova/gpt2 q8');
      await expect(note).toHaveAttribute('data-download', 'cached');
      await expect(note).toContainText('cached');
      const got = await page.evaluate(async () => (await window.statecart!.health()).model);
      expect(got).toBe('hf:Xenova/gpt2');
      // The graph's bytes went out once whole (and once cut short), never a third time.
      const bodies = mirror.log.filter((e) => e.path.startsWith('/cdn-lfs/') && e.method === 'GET');
      expect(bodies).toHaveLength(2);
      expect(bodies[1]!.bytes).toBe(size(GPT2_REPO, 'onnx/model_quantized.onnx'));
      expect(bodies[0]!.bytes).toBeLessThan(size(GPT2_REPO, 'onnx/model_quantized.onnx'));
    } finally {
      await mirror.close();
    }
  });

  test('the address picks model, dtype and mirror: ?model=hf:Xenova/gpt2&dtype=q8&hub=…', async ({ page }) => {
    const mirror = await mirrorInRange();
    try {
      await page.goto(`/?${new URLSearchParams({ model: 'hf:Xenova/gpt2', dtype: 'q8', hub: mirror.url, device: 'wasm' })}`);
      await page.waitForFunction(() => window.statecartReady !== undefined);
      await page.evaluate(async () => {
        await window.statecartReady;
      });
      await expect(page.locator('#status')).toContainText('hf:Xenova/gpt2 q8');
      expect(await page.locator('#dtype').inputValue()).toBe('q8');
      expect(requests(mirror).some((r) => r === 'GET onnx/model_quantized.onnx 302')).toBe(true);
      expect(requests(mirror).some((r) => r.startsWith('GET onnx/model.onnx'))).toBe(false);
    } finally {
      await mirror.close();
    }
  });
});

test.describe('a local model through the same cache', () => {
  test('tiny-gpt2: its graph is fetched once (the fingerprint hashes what transformers.js read), and its digest is the file’s', async ({ page }) => {
    const graphFetches: string[] = [];
    page.on('request', (r) => {
      if (r.url().endsWith('/models/tiny-gpt2/onnx/model.onnx')) graphFetches.push(r.method());
    });
    // (a worker of the page's own: Playwright does not see a shared worker's requests, which are the ones counted here)
    await page.goto('/?model=tiny-gpt2&device=wasm&shared=0');
    await page.waitForFunction(() => window.statecartReady !== undefined);
    const fp = await page.evaluate(async () => (await (await window.statecartReady!).health()).modelFp);
    expect(graphFetches).toEqual(['GET']);
    // The fingerprint's weights digest is the digest of the file served: the same as Node computes from the disk.
    const { modelFingerprint } = await import('../../src/core/model-fingerprint.ts');
    const { createHash } = await import('node:crypto');
    const dir = join(REPO_ROOT, 'public', 'models', 'tiny-gpt2');
    const sha = (f: string) =>
      createHash('sha256')
        .update(readFileSync(join(dir, f)))
        .digest('hex');
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const want = await modelFingerprint({
      arch: 'gpt2',
      config: { n_layer: cfg.n_layer, n_head: cfg.n_head, n_embd: cfg.n_embd, n_positions: cfg.n_positions ?? cfg.n_ctx, vocab_size: cfg.vocab_size },
      weights_sha256: sha('onnx/model.onnx'),
      tokenizer_sha256: sha('tokenizer.json'),
      dtype: 'fp32',
    });
    expect(fp).toBe(want);
  });
});
