import { test, expect, type Page } from '@playwright/test';
import { gpt2Forward } from '../../src/models/gpt2-reference.ts';
import { maxAbsDiff, tinyGpt2Weights } from './helpers.ts';
import type { Outcome } from './support/gpt2-run-page.ts';

// GPT-2 runs that keep the KV cache in onnxruntime-web between feeds
// (src/models/gpt2-run.ts), on this page's runtime: WASM (new rows appended
// to run-owned buffers) and WebGPU (present.* kept as GPU buffers, new rows
// read back at state()). tiny-gpt2 only: WebGPU here is a software adapter.

const TOL = 1e-4;
const V = 50257;
const MODULE = '/tests/e2e/support/gpt2-run-page.ts';
const ids = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % V);

type Api = typeof import('./support/gpt2-run-page.ts');

async function load(page: Page, device: 'wasm' | 'webgpu') {
  // Any page of the dev server: it is cross-origin isolated and serves /ort and /models.
  await page.goto('/models/tiny-gpt2/config.json');
  return page.evaluate(
    async ({ m, device }) => {
      const api = (await import(/* @vite-ignore */ m)) as Api;
      (globalThis as unknown as { runApi: Api }).runApi = api;
      return api.load(device);
    },
    { m: MODULE, device },
  );
}

const feed = (page: Page, which: 'auto' | 'present', parts: number[][], from?: Outcome, stateEvery = 0): Promise<Outcome> =>
  page.evaluate(({ which, parts, from, stateEvery }) => (globalThis as unknown as { runApi: Api }).runApi.feed(which, parts, from, stateEvery), {
    which,
    parts,
    from,
    stateEvery,
  });

/** The reference's logits after `tokens` and its cache, as the state's tensors. */
function reference(tokens: number[]) {
  const r = gpt2Forward(tinyGpt2Weights(), tokens, { lastOnly: true });
  return { logits: r.logits, kv: r.present.flatMap((l) => [l.key, l.value]) };
}

/** `o` fed `parts` on top of a state of `prefix`: its state and logits are the reference's. */
function expectReference(o: Outcome, parts: number[][], what: string, prefix: number[] = []): void {
  const all = [...prefix, ...parts.flat()];
  expect(o.tokens, what).toEqual(all);
  const ref = reference(all);
  o.tensors.forEach((t, i) => {
    expect(t.dims, `${what}: ${t.name} dims`).toEqual([4, all.length, 16]);
    expect(maxAbsDiff(t.data, ref.kv[i]!), `${what}: ${t.name}`).toBeLessThanOrEqual(TOL);
  });
  let n = prefix.length;
  parts.forEach((p, i) => {
    n += p.length;
    const l = o.logits[i];
    if (l) expect(maxAbsDiff(l, reference(all.slice(0, n)).logits), `${what}: logits after part ${i}`).toBeLessThanOrEqual(TOL);
  });
}

const all = ids(150, 5);
const PATTERNS: Record<string, number[][]> = {
  // 150 tokens: two session runs (128 + 22).
  prefill: [all],
  pieces: [all.slice(0, 37), all.slice(37, 38), all.slice(38, 39), all.slice(39, 99), all.slice(99)],
  'token by token': [all.slice(0, 130), ...all.slice(130).map((t) => [t])],
};

test.describe('GPT-2 runs keep the KV cache in onnxruntime-web', () => {
  test('WASM: new rows appended in JS equal the present.* path bit for bit, and the reference', async ({ page }) => {
    const modes = await load(page, 'wasm');
    expect(modes).toEqual({ auto: 'rows', present: 'present', kvType: 'float32' });
    for (const [name, parts] of Object.entries(PATTERNS)) {
      const rows = await feed(page, 'auto', parts);
      const present = await feed(page, 'present', parts);
      expect(rows, `${name}: rows vs present`).toEqual(present);
      expectReference(rows, parts, name);
    }
    // From a stored state (with state() read between feeds) equals computing everything, bit for bit.
    const tail = [all.slice(50, 51), all.slice(51, 60), [all[60]!], [all[61]!]];
    const first = await feed(page, 'auto', [all.slice(0, 50)]);
    const rest = await feed(page, 'auto', tail, first, 1);
    const whole = await feed(page, 'auto', [all.slice(0, 50), ...tail]);
    expect(rest.tensors).toEqual(whole.tensors);
    expect(rest.logits.at(-1)).toEqual(whole.logits.at(-1));
    expectReference(rest, tail, 'from a stored state', all.slice(0, 50));
  });

  test('WebGPU: present.* stay GPU buffers, new rows read back at state() equal the reference; no buffers leak across runs', async ({ page }) => {
    // A software adapter on a shared machine: minutes.
    test.setTimeout(600_000);
    const modes = await load(page, 'webgpu');
    expect(modes.auto).toBe('gpu');
    for (const [name, parts] of Object.entries(PATTERNS)) expectReference(await feed(page, 'auto', parts), parts, `${name} on WebGPU`);
    // From a stored state, reading the state after every feed (each read takes only the rows not read before).
    const tail = [all.slice(50, 51), all.slice(51, 60), [all[60]!], [all[61]!]];
    const first = await feed(page, 'auto', [all.slice(0, 50)]);
    const rest = await feed(page, 'auto', tail, first, 1);
    const whole = await feed(page, 'auto', [all.slice(0, 50), ...tail]);
    expectReference(rest, tail, 'from a stored state on WebGPU', all.slice(0, 50));
    rest.tensors.forEach((t, i) => expect(maxAbsDiff(t.data, whole.tensors[i]!.data)).toBeLessThanOrEqual(TOL));
    // Every read-back copied only new rows on the GPU, none a whole buffer: one per state()
    // with new tokens (3 patterns; first; rest after each of its 4 feeds, then nothing new; whole).
    const reads = await page.evaluate(() => (globalThis as unknown as { runApi: Api }).runApi.reads());
    expect(reads).toEqual({ rows: 3 + 1 + 4 + 1, whole: 0 });

    // Live GPU buffers (made − destroyed) after more closed runs stay where they were;
    // runs left open keep theirs, so the count does see a leak.
    const parts = [ids(8, 6), [7], [8]];
    const churn = (runs: number, close = true) =>
      page.evaluate(({ runs, parts, close }) => (globalThis as unknown as { runApi: Api }).runApi.churn(runs, parts, close), { runs, parts, close });
    const warm = await churn(3);
    const after = await churn(10);
    test.info().annotations.push({ type: 'live GPU buffers', description: `after 3 closed runs ${warm}, after 10 more ${after}` });
    console.log(`live GPU buffers: after 3 closed runs ${warm}, after 10 more ${after}`);
    expect(after, 'live GPU buffers after 10 more closed runs').toBeLessThanOrEqual(warm);
    const leaked = await churn(3, false);
    test.info().annotations.push({ type: 'live GPU buffers, runs left open', description: `${leaked}` });
    console.log(`live GPU buffers after 3 runs left open: ${leaked}`);
    expect(leaked, 'runs never closed hold their buffers').toBeGreaterThan(after);
  });
});
