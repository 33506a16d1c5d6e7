// Mamba prefill on onnxruntime-web (WASM, in headless Chromium, as the bench
// measures it) against a gpt2-shape prefill of the same length in the same
// worker, timed in alternation so that machine load falls on both alike; for
// each way of computing a Mamba prefill (`scan`: prefill-scan.onnx, what a CPU
// runs; `chunked`: prefill.onnx + tail.onnx, what WebGPU runs). With
// --profile, onnxruntime's per-node profile of the Mamba runs.
//
// It is the quick check of issue 14's prefill line (mamba-130m-shape tokens/s
// ≥ 0.8× gpt2-shape's, same run): `ratio` = gpt2 ms / mamba ms for the same
// token count. `chunked` is what a CPU ran before prefill-scan.onnx existed,
// so the two rows are before and after, measured under the same load. The
// full measurement stays `npm run bench -- --only prefill`. Needs
// .cache/models/{gpt2-shape,mamba-130m-shape} (npm run models builds them;
// the Mamba folder must come from a builder that writes prefill-scan.onnx).
//
//   npx tsx bench/mamba-prefill.ts [--tokens 512] [--rounds 2] [--threads 2] [--port 5196]
//        [--graphs scan,chunked] [--model mamba-130m-shape] [--build [--layers N] [--vocab V] [--chunk 64]]
//        [--profile] [--profile-gpt2] [--no-gpt2]
//
// --build writes the graphs of the current builder (src/models/mamba-onnx.ts) with seeded
// weights to .cache/models/profile-<model>/ first, so a change to the builder is measured
// without touching the model folders the bench uses; --layers / --vocab shrink it.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { launchOptions } from '../tests/e2e/browser.ts';
import { CACHE_MODELS, REPO_ROOT } from '../scripts/make-models.ts';
import { startServer } from './lib/server.ts';
import { buildMambaFiles, DEFAULT_SCALE, MAMBA_PRESETS, seededMambaWeights, type MambaPreset } from '../src/models/mamba-build.ts';
import type { MambaPrefillGraphs } from '../src/models/mamba.ts';
import type { ProfileApi } from './mamba-prefill/worker.ts';
import { summariseProfile, type ProfileEvent } from './mamba-prefill/summary.ts';

const argv = process.argv.slice(2);
const arg = (name: string, dflt: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : dflt;
};
const TOKENS = Number(arg('tokens', '512'));
const ROUNDS = Number(arg('rounds', '2'));
const THREADS = Number(arg('threads', '2'));
const PORT = Number(arg('port', process.env.BENCH_PORT ?? '5196'));
const MODEL = arg('model', 'mamba-130m-shape') as MambaPreset;
const GRAPHS = arg('graphs', 'scan,chunked').split(',') as MambaPrefillGraphs[];
const PROFILE = argv.includes('--profile');
const PROFILE_GPT2 = argv.includes('--profile-gpt2');
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

let folder = MODEL as string;
if (argv.includes('--build')) {
  const t0 = performance.now();
  const chunk = Number(arg('chunk', '64'));
  const p = MAMBA_PRESETS[MODEL];
  const dims = { ...p, n_layer: Number(arg('layers', String(p.n_layer))), vocab_size: Number(arg('vocab', String(p.vocab_size))) };
  const built = await buildMambaFiles(seededMambaWeights(dims, 1, DEFAULT_SCALE[MODEL]), { kind: 'seeded' }, { id: MODEL, chunk });
  folder = `profile-${MODEL}`;
  const dir = join(CACHE_MODELS, folder);
  await mkdir(join(dir, 'onnx'), { recursive: true });
  for (const [f, bytes] of built.files) await writeFile(join(dir, f), bytes);
  console.log(`built ${folder} (${dims.n_layer} layers, vocab ${dims.vocab_size}, chunk ${chunk}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

const server = await startServer({ root: REPO_ROOT, port: PORT, cacheRoot: CACHE_MODELS });
const browser = await chromium.launch(launchOptions());
const events: ProfileEvent[] = [];
try {
  const page = await browser.newPage();
  page.on('console', (m) => {
    const t = m.text();
    // With profiling on, onnxruntime-web prints each profile event as a JSON line.
    if ((PROFILE || PROFILE_GPT2) && t.includes('"cat"') && t.includes('"dur"')) {
      try {
        events.push(JSON.parse(t.slice(t.indexOf('{'), t.lastIndexOf('}') + 1)));
        return;
      } catch {
        /* not an event */
      }
    }
    if (m.type() === 'error') console.log(`  ${t.slice(0, 300)}`);
  });
  page.on('pageerror', (e) => console.log(`  page error: ${e.message}`));
  await page.goto(`${server.url}/bench/mamba-prefill/page.html`);
  await page.waitForFunction(() => 'profile' in window, null, { timeout: 120_000 });
  const call = <K extends keyof ProfileApi>(k: K, a?: unknown): Promise<Awaited<ReturnType<ProfileApi[K]>>> =>
    page.evaluate(`window.profile.${k}(${JSON.stringify(a ?? {})})`) as never;
  const flushProfile = async (title: string, end: 'endGpt2Profiling' | 'endMambaProfiling'): Promise<void> => {
    await call(end);
    await new Promise((res) => setTimeout(res, 2000));
    console.log(`\n${title}: ${events.length} profile events`);
    summariseProfile(events.splice(0), console.log);
  };
  await call('init', { numThreads: THREADS });
  const base = (id: string) => `${server.url}/models/${id}/`;
  const gName = MODEL === 'tiny-mamba' ? 'tiny-gpt2' : 'gpt2-shape';
  const withGpt2 = !argv.includes('--no-gpt2');
  if (withGpt2) {
    await call('loadGpt2', { base: base(gName), sessionOptions: PROFILE_GPT2 ? { enableProfiling: true } : {} });
    await call('gpt2Prefill', { tokens: 16, reps: 1, warm: 0 });
    if (PROFILE_GPT2) {
      await call('gpt2Prefill', { tokens: TOKENS, reps: 1, warm: 0 });
      await flushProfile(`${gName} prefill ${TOKENS}`, 'endGpt2Profiling');
    }
  }
  for (const graphs of GRAPHS) {
    const l = await call('loadMamba', { base: base(folder), prefillGraphs: graphs, sessionOptions: PROFILE ? { enableProfiling: true } : {} });
    console.log(`\n${folder} (${l.graphs}) loaded in ${(l.ms / 1000).toFixed(1)} s, ${l.threads} threads`);
    await call('mambaPrefill', { tokens: 64, reps: 1, warm: 0 });
    events.splice(0);
    const ratios: number[] = [];
    const mt: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const g = withGpt2 && r % 2 === 0 ? (await call('gpt2Prefill', { tokens: TOKENS, reps: 1, warm: 0 })).ms[0]! : null;
      const m = (await call('mambaPrefill', { tokens: TOKENS, reps: 1, warm: 0 })).ms[0]!;
      const g2 = withGpt2 && r % 2 === 1 ? (await call('gpt2Prefill', { tokens: TOKENS, reps: 1, warm: 0 })).ms[0]! : null;
      const gm = g ?? g2;
      mt.push(m);
      if (gm !== null) ratios.push(gm / m);
      const tps = (ms: number) => ((TOKENS / ms) * 1000).toFixed(1);
      console.log(`  round ${r + 1}: mamba (${graphs}) ${tps(m)} tok/s${gm !== null ? `, ${gName} ${tps(gm)} tok/s, ratio ${(gm / m).toFixed(2)}` : ''}`);
    }
    console.log(
      `${folder} (${graphs}) prefill ${TOKENS}: median ${((TOKENS / median(mt)) * 1000).toFixed(1)} tok/s${ratios.length ? `; mamba/gpt2 median ${median(ratios).toFixed(2)} (${ratios.map((x) => x.toFixed(2)).join(', ')})` : ''}`,
    );
    if (PROFILE) await flushProfile(`${folder} (${graphs})`, 'endMambaProfiling');
    await call('disposeMamba');
  }
} finally {
  await browser.close();
  await server.close();
}
