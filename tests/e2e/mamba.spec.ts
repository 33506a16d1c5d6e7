import { test, expect, chromium, type Page } from '@playwright/test';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPage, maxAbsDiff, LOREM } from './helpers.ts';
import { launchOptions } from './browser.ts';
import { seededMambaWeights } from '../../src/models/mamba-build.ts';
import { mambaReferenceForward, zeroMambaState, type MambaDims, type MambaWeights } from '../../src/models/mamba-reference.ts';

const MODEL = 'tiny-mamba';
const TOL = 1e-4;

let weights: MambaWeights | null = null;

/** tiny-mamba's weights, regenerated in Node from the seed and scale recorded next to the model. */
function tinyMambaWeights(): MambaWeights {
  if (weights) return weights;
  const sc = JSON.parse(readFileSync(join(process.cwd(), 'public/models', MODEL, 'statecart.json'), 'utf8'));
  expect(sc.weight_source.kind).toBe('seeded');
  const { chunk: _c, subchunk: _s, ...dims } = sc.config as MambaDims & { chunk: number; subchunk: number };
  weights = seededMambaWeights(dims, sc.weight_source.seed, sc.weight_source.scale);
  return weights;
}

function referenceLogits(tokens: number[]): Float32Array {
  const w = tinyMambaWeights();
  return mambaReferenceForward(w, tokens, zeroMambaState(w.dims));
}

/** Greedy continuation by the reference recurrence, token by token from the start. */
function referenceGreedy(tokens: number[], n: number): number[] {
  const w = tinyMambaWeights();
  const st = zeroMambaState(w.dims);
  let logits = mambaReferenceForward(w, tokens, st);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
    out.push(best);
    logits = mambaReferenceForward(w, [best], st);
  }
  return out;
}

// Ids spread over the whole vocabulary, deterministic.
const ids = (n: number, salt = 0): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % 50257);

const probe = (page: Page, tokens: number[], stateKey?: string): Promise<number[]> =>
  page.evaluate(async ({ tokens, stateKey }) => Array.from(await window.statecartTesting!.probe(stateKey ? { tokens, stateKey } : { tokens })), {
    tokens,
    stateKey,
  });

test.describe('Mamba (tiny-mamba) on onnxruntime-web', () => {
  test('on WebGPU every compute node runs on the GPU; only the causal mask index ops stay on the CPU', async ({ page }) => {
    // ORT prints node placement at verbose level; the worker does not log, so
    // the graphs are loaded here in the page with the module the worker uses.
    const lines: string[] = [];
    page.on('console', (m) => lines.push(m.text()));
    await page.goto(`/models/${MODEL}/statecart.json`);
    // What `onnxruntime-web/webgpu` resolves to (its package.json "exports"), served by Vite.
    const ortUrl = '/node_modules/onnxruntime-web/dist/ort.webgpu.bundle.min.mjs';
    const graphs = await page.evaluate(
      async ({ model, ortUrl }) => {
        const ort = await import(/* @vite-ignore */ ortUrl);
        ort.env.wasm.wasmPaths = { wasm: '/ort/ort-wasm-simd-threaded.asyncify.wasm' };
        ort.env.wasm.numThreads = 1;
        ort.env.logLevel = 'verbose';
        const get = async (p: string) => new Uint8Array(await (await fetch(`/models/${model}/${p}`)).arrayBuffer());
        const weights = await get('onnx/weights.bin');
        const done: string[] = [];
        for (const k of ['prefill', 'tail', 'step']) {
          console.log(`statecart-graph ${k}`);
          const s = await ort.InferenceSession.create(await get(`onnx/${k}.onnx`), {
            executionProviders: ['webgpu'],
            graphOptimizationLevel: 'all',
            externalData: [{ path: 'weights.bin', data: weights }],
            logSeverityLevel: 0,
            logVerbosityLevel: 0,
          });
          await s.release();
          done.push(k);
        }
        return done;
      },
      { model: MODEL, ortUrl },
    );
    expect(graphs).toEqual(['prefill', 'tail', 'step']);
    // "Node(s) placed on [EP]. Number of nodes: n" then one line per node; or,
    // when one EP has them all, only "All nodes placed on [EP]. Number of nodes: n".
    const placed: Record<string, Record<string, string[]>> = {};
    const all: Record<string, { ep: string; n: number }> = {};
    let graph = '';
    let ep = '';
    for (const l of lines) {
      const g = /statecart-graph (\w+)/.exec(l);
      if (g) (graph = g[1]!), (placed[graph] = {}), (ep = '');
      const a = /All nodes placed on \[(\w+)\]\. Number of nodes: (\d+)/.exec(l);
      if (a && graph) (all[graph] = { ep: a[1]!, n: Number(a[2]) }), (ep = '');
      const p = /Node\(s\) placed on \[(\w+)\]/.exec(l);
      if (p && graph) (ep = p[1]!), (placed[graph]![ep] = []);
      const n = /VerifyEachNodeIsAssignedToAnEp\]\s{3}(\w+) \(/.exec(l);
      if (n && ep) placed[graph]![ep]!.push(n[1]!);
    }
    expect(all.step, 'the step graph: every node on WebGPU').toMatchObject({ ep: 'WebGpuExecutionProvider' });
    expect(all.step!.n).toBeGreaterThan(50);
    const shapeOps = new Set(['Shape', 'Gather', 'Range', 'Reshape', 'Less', 'LessOrEqual']);
    for (const k of ['prefill', 'tail']) {
      const gpu = placed[k]?.WebGpuExecutionProvider ?? [];
      const cpu = placed[k]?.CPUExecutionProvider ?? [];
      for (const op of ['MatMul', 'Exp', 'Mul', 'Add', 'Gemm']) expect(gpu, `${k}: ${op} on WebGPU`).toContain(op);
      for (const op of ['CumSum', 'ReduceSum', 'Where']) expect(gpu, `${k}: ${op} on WebGPU`).toContain(op);
      expect(
        cpu.filter((op) => !shapeOps.has(op)),
        `${k}: compute ops on the CPU`,
      ).toEqual([]);
      // One shared mask chain: Gather of a shape, Range, 2 Reshapes, a comparison.
      expect(cpu.length, `${k}: nodes on the CPU: ${cpu.join(', ')}`).toBeLessThanOrEqual(5);
    }
  });

  for (const device of ['wasm', 'webgpu'] as const) {
    test(`graphs equal the reference recurrence on ${device}, from nothing and from a stored state`, async ({ page }) => {
      await openPage(page, { model: MODEL, device });
      const health = await page.evaluate(() => window.statecart!.health());
      expect(health.device).toBe(device);
      expect(health.model).toBe(MODEL);
      // On WebGPU: 1 (step graph), 5 (tail), 37 (prefill 32 + tail 5), 140 (2 chunks of 64 + 8 + tail 4).
      // On WASM: 1 (step), then prefill-scan for any length (140: 64, 64, 12).
      for (const tokens of [[15496], ids(5, 1), ids(37, 2), ids(140, 3)]) {
        const d = maxAbsDiff(await probe(page, tokens), referenceLogits(tokens));
        test.info().annotations.push({ type: 'max abs logit difference', description: `${tokens.length} tokens on ${device}: ${d.toExponential(2)}` });
        expect(d, `max abs logit difference, ${tokens.length} tokens on ${device}`).toBeLessThanOrEqual(TOL);
      }
      // The state goes out of the graphs, through the store and back in.
      const all = ids(90, 4);
      const a = await page.evaluate((t) => window.statecart!.createState({ tokens: t }), all.slice(0, 41));
      expect(maxAbsDiff(await probe(page, all.slice(41), a.stateKey), referenceLogits(all))).toBeLessThanOrEqual(TOL);
      // Greedy generation from it, step graph on this device.
      const r = await page.evaluate((k) => window.statecart!.infer({ stateKey: k, deltaTokens: [262, 3290], maxNewTokens: 10 }), a.stateKey);
      const want = referenceGreedy([...all.slice(0, 41), 262, 3290], 10);
      expect(r.outputTokens).toEqual(want);
      expect(new Set(want).size, 'the tiny model must not repeat one token').toBeGreaterThan(3);
    });
  }

  test('feeding the tokens in pieces of 1, 7 or 64 reaches the same state, processing only each new piece', async ({ page }) => {
    await openPage(page, { model: MODEL });
    const toks = ids(100, 5);
    const next = [464];
    const want = referenceLogits([...toks, ...next]);
    const results: { piece: number; key: string; logits: number[]; processed: number[]; reused: number[] }[] = [];
    for (const piece of [1, 7, 64]) {
      const r = await page.evaluate(
        async ({ toks, piece, next }) => {
          const sc = window.statecart!;
          await sc.clearStore();
          const processed: number[] = [];
          const reused: number[] = [];
          let key = '';
          for (let end = Math.min(piece, toks.length); ; end = Math.min(end + piece, toks.length)) {
            const c = await sc.createState({ tokens: toks.slice(0, end) });
            processed.push(c.processed);
            reused.push(c.reused);
            key = c.stateKey;
            if (end === toks.length) break;
          }
          await window.statecartTesting!.dropHot(); // the final state comes back from IndexedDB
          return { piece, key, logits: Array.from(await window.statecartTesting!.probe({ tokens: next, stateKey: key })), processed, reused };
        },
        { toks, piece, next },
      );
      const pieces = Array.from({ length: Math.ceil(toks.length / piece) }, (_, i) => Math.min(piece, toks.length - i * piece));
      expect(r.processed, `pieces of ${piece}`).toEqual(pieces);
      expect(r.reused, `pieces of ${piece}`).toEqual(pieces.map((_, i) => i * piece));
      expect(maxAbsDiff(r.logits, want), `pieces of ${piece} against the reference`).toBeLessThanOrEqual(TOL);
      results.push(r);
    }
    expect(new Set(results.map((r) => r.key)).size, 'one state key for one token list').toBe(1);
    expect(maxAbsDiff(results[0]!.logits, results[1]!.logits)).toBeLessThanOrEqual(TOL);
    expect(maxAbsDiff(results[0]!.logits, results[2]!.logits)).toBeLessThanOrEqual(TOL);
  });

  test('continuing from a stored state equals processing the whole text, and processes only the delta', async ({ page }) => {
    await openPage(page, { model: MODEL });
    const base = LOREM.repeat(3);
    const delta = ' Then the next request asks';
    const r = await page.evaluate(
      async ({ base, delta }) => {
        const sc = window.statecart!;
        const baseTokens = await sc.tokenize({ text: base });
        const deltaTokens = await sc.tokenize({ text: delta });
        const a = await sc.createState({ text: base });
        await window.statecartTesting!.dropHot();
        const b = await sc.infer({ stateKey: a.stateKey, delta, maxNewTokens: 12 });
        await sc.clearStore();
        const full = await sc.createState({ tokens: [...baseTokens, ...deltaTokens] });
        const c = await sc.infer({ stateKey: full.stateKey, deltaTokens: [], maxNewTokens: 12 });
        return { baseTokens, deltaTokens, a, b, c, info: await sc.getState({ stateKey: b.newStateKey }) };
      },
      { base, delta },
    );
    expect(r.a.processed).toBe(r.baseTokens.length);
    expect(r.b.tier).toBe('stored');
    expect(r.b.savings.tokensReused).toBe(r.baseTokens.length);
    expect(r.b.savings.tokensProcessed).toBe(r.deltaTokens.length + 12);
    const want = referenceGreedy([...r.baseTokens, ...r.deltaTokens], 12);
    expect(r.b.outputTokens).toEqual(want);
    expect(r.c.outputTokens).toEqual(want);
    expect(new Set(want).size).toBeGreaterThan(3);
    expect(r.c.newStateKey).toBe(r.b.newStateKey);
    // The stored value is the whole conv + SSM state, 2 layers × 128 × (3 + 16) fp32,
    // and the last position's logits (50,257 fp32), so that a request adding no tokens runs none again.
    expect(r.info.tokens).toBe(r.baseTokens.length + r.deltaTokens.length + 12);
    expect(r.info.bytes).toBe(2 * 128 * (3 + 16) * 4 + 50257 * 4);
  });

  test('a long prefill leaves the worker responsive: other calls answer meanwhile, and cancel stops it', async ({ page }) => {
    await openPage(page, { model: MODEL });
    const r = await page.evaluate(
      async (long) => {
        const sc = window.statecart!;
        const order: string[] = [];
        let progressSeen = 0;
        const build = sc.createState({ tokens: long }, { onProgress: (p) => (progressSeen = p.done) }).then(() => order.push('createState'));
        // Wait until the prefill is under way, then ask something else.
        while (progressSeen === 0) await new Promise((res) => setTimeout(res, 5));
        await sc.health().then(() => order.push('health'));
        await build;
        // (the prefill kept checkpoint states every K tokens as well: count what the cancelled call adds)
        const stored = (await sc.listStates()).length;
        const ac = new AbortController();
        let at = 0;
        const cancelled = sc
          .createState(
            { tokens: long.map((t) => (t + 1) % 50257) },
            {
              signal: ac.signal,
              onProgress: (p) => {
                at = p.done;
                if (p.done > 0 && !ac.signal.aborted) ac.abort();
              },
            },
          )
          .then(
            () => 'finished',
            (e: Error) => e.name,
          );
        const cancelledName = await cancelled;
        const cancelledAt = at;
        const states = (await sc.listStates()).length - stored;
        // Generation is a loop of one-token runs: cancel must reach it too.
        const ac2 = new AbortController();
        const first = (await sc.listStates())[0]!.key;
        setTimeout(() => ac2.abort(), 300);
        const generating = await sc.infer({ stateKey: first, deltaTokens: [11], maxNewTokens: 5000 }, { signal: ac2.signal }).then(
          () => 'finished',
          (e: Error) => e.name,
        );
        return { order, cancelled: cancelledName, at: cancelledAt, states, generating };
      },
      ids(6000, 6),
    );
    expect(r.order).toEqual(['health', 'createState']);
    expect(r.cancelled).toBe('Aborted');
    expect(r.at).toBeLessThan(6000);
    expect(r.states).toBe(0);
    expect(r.generating).toBe('Aborted');
  });

  test('a Mamba state survives a page reload and is read back from IndexedDB', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'statecart-mamba-profile-'));
    try {
      const baseURL = test.info().project.use.baseURL!;
      const ctx = await chromium.launchPersistentContext(dir, { ...launchOptions(), baseURL });
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      await openPage(page, { model: MODEL });
      const text = LOREM.repeat(2);
      const a = await page.evaluate(async (t) => {
        const sc = window.statecart!;
        // durable: written before the page goes (a state still queued would go with it).
        return { ...(await sc.createState({ text: t }, { durable: true })), tokenIds: await sc.tokenize({ text: t }) };
      }, text);
      await page.reload();
      await openPage(page, { model: MODEL, clear: false });
      const after = await page.evaluate(async (k) => {
        const sc = window.statecart!;
        const info = await sc.getState({ stateKey: k });
        const before = (await sc.health()).blobReads;
        const r = await sc.infer({ stateKey: k, delta: ' And', maxNewTokens: 6 });
        return { info, r, reads: (await sc.health()).blobReads - before, and: await sc.tokenize({ text: ' And' }) };
      }, a.stateKey);
      expect(after.info.tokens).toBe(a.tokens);
      expect(after.info.tier).toBe('stored');
      expect(after.r.tier).toBe('stored');
      expect(after.reads).toBeGreaterThan(0);
      expect(after.r.savings.tokensReused).toBe(a.tokens);
      expect(after.r.savings.tokensProcessed).toBe(after.and.length + 6);
      expect(after.r.outputTokens).toEqual(referenceGreedy([...a.tokenIds, ...after.and], 6));
      await ctx.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
