/**
 * `npm run bench [-- --quick]`: statecart's savings, measured side by side in
 * one run, in headless Chromium (the e2e tests' browser setup) on WASM, and on
 * WebGPU when an adapter exists (a software adapter: tiny models only).
 *
 *   --quick              tiny models only (a couple of minutes)
 *   --models a,b         only these models
 *   --devices wasm,webgpu
 *   --port N             the bench's own Vite server (default 5199, or $BENCH_PORT)
 *   --no-readme          leave README.md alone
 *   --out NAME           write bench/results/NAME.json and NAME.md instead of latest.* (no README)
 *   --from-json FILE     run nothing: rewrite FILE's .md and the README's table from FILE
 *                        (merging codecs.json / mamba-restore.json into it when it has no such rows)
 *
 * Writes bench/results/latest.json and latest.md (and a copy of both as
 * latest-quick.* or latest-full.*, so a quick run does not lose the last full
 * one), and the README's table between <!-- bench:start --> and <!-- bench:end -->.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { launchOptions } from '../tests/e2e/browser.ts';
import { ensureModels, CACHE_MODELS, REPO_ROOT } from '../scripts/make-models.ts';
import { startServer } from './lib/server.ts';
import { stat, toMarkdown, readmeSection, replaceBetweenMarkers, consoleSummary } from './lib/report.ts';
import type { AgentLoopResult, BenchDevice, BenchResults, CodecRow, MambaRestoreRow, RunTarget, SkipNote } from './lib/types.ts';
import type { Bench } from './lib/page.ts';

// ---------------------------------------------------------------- the plan

/** 20 deltas in 10–40 tokens; with 4 new tokens a step, base 512 + 506 = 1,018 tokens fits GPT-2's 1,024 positions. */
const AGENT_DELTAS = [12, 31, 18, 25, 10, 40, 14, 22, 17, 28, 11, 35, 16, 20, 13, 26, 19, 24, 15, 30];
const AGENT = { baseTokens: 512, gen: 4 };

interface Plan {
  gpt2Restore: { tokens: number; reps: number }[];
  continueReps: number;
  continueTokens: number;
  /** The agent loop and the agents (20 + 100 prefills): too slow on a software adapter. */
  loop: boolean;
  agents: number;
  mamba: { tokens: number; reps: number }[];
}

function planFor(model: string, quick: boolean, softwareGpu: boolean): Plan {
  const tiny = model.startsWith('tiny');
  // SwiftShader takes tens of seconds for a tiny model's 512-token prefill here: one small size, two runs.
  if (softwareGpu)
    return { gpt2Restore: [{ tokens: 128, reps: 2 }], continueReps: 2, continueTokens: 128, loop: false, agents: 0, mamba: [{ tokens: 256, reps: 2 }] };
  if (tiny) {
    return {
      gpt2Restore: [128, 512, 1024].map((tokens) => ({ tokens, reps: 5 })),
      continueReps: 5,
      continueTokens: 512,
      loop: true,
      agents: 100,
      mamba: [256, 1024, 4096].map((tokens) => ({ tokens, reps: quick ? 3 : 5 })),
    };
  }
  return {
    gpt2Restore: [
      { tokens: 128, reps: 3 },
      { tokens: 512, reps: 3 },
      { tokens: 1024, reps: 3 },
    ],
    continueReps: 3,
    continueTokens: 512,
    loop: true,
    agents: 100,
    mamba: [
      { tokens: 256, reps: 3 },
      { tokens: 1024, reps: 2 },
      { tokens: 4096, reps: 2 },
    ],
  };
}

const ARCH: Record<string, 'gpt2' | 'mamba'> = { 'tiny-gpt2': 'gpt2', 'gpt2-shape': 'gpt2', 'tiny-mamba': 'mamba', 'mamba-130m-shape': 'mamba' };

// ---------------------------------------------------------------- args

function parseArgs(argv: string[]) {
  const get = (name: string) => {
    const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
    if (i < 0) return undefined;
    return argv[i]!.includes('=') ? argv[i]!.split('=').slice(1).join('=') : argv[i + 1];
  };
  const quick = argv.includes('--quick');
  return {
    quick,
    models: get('models')?.split(',').filter(Boolean) ?? (quick ? ['tiny-gpt2', 'tiny-mamba'] : ['tiny-gpt2', 'gpt2-shape', 'tiny-mamba', 'mamba-130m-shape']),
    devices: (get('devices')?.split(',').filter(Boolean) ?? ['wasm', 'webgpu']) as BenchDevice[],
    port: Number(get('port') ?? process.env.BENCH_PORT ?? 5199),
    readme: !argv.includes('--no-readme'),
    fromJson: get('from-json'),
    out: get('out'),
  };
}

// ---------------------------------------------------------------- helpers

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

function machine(): BenchResults['machine'] {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    hardwareConcurrency: cpus.length,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

/**
 * The codec optimizer's tables, written by bench/codec-table.ts (another part
 * of the bench) to bench/results/codecs.json, merged when present:
 * { date, results: [{ model, tokens, report: { rows: [{ codec, bytes, metrics: { maxLogitError, greedyMatch } }], choice } }] }.
 */
function readCodecRows(dir: string, skipped: SkipNote[]): CodecRow[] {
  const f = join(dir, 'codecs.json');
  if (!existsSync(f)) return [];
  try {
    const j = JSON.parse(readFileSync(f, 'utf8')) as {
      date?: string;
      results?: { model: string; tokens?: number; report?: { rows?: Record<string, unknown>[]; choice?: string } }[];
    };
    const out: CodecRow[] = [];
    for (const r of j.results ?? []) {
      for (const row of r.report?.rows ?? []) {
        const m = (row.metrics ?? {}) as Record<string, unknown>;
        out.push({
          model: r.tokens ? `${r.model} (${r.tokens} tokens)` : r.model,
          codec: String(row.codec),
          bytes: Number(row.bytes),
          maxLogitError: Number(m.maxLogitError ?? NaN),
          greedyMatch: Boolean(m.greedyMatch),
          chosen: row.codec === r.report?.choice,
          from: `bench/results/codecs.json (${j.date ?? 'undated'})`,
        });
      }
    }
    return out;
  } catch (e) {
    skipped.push({ what: 'codec table', reason: `bench/results/codecs.json could not be read: ${(e as Error).message}` });
    return [];
  }
}

/**
 * Rows of bench/mamba-restore.ts (the Mamba runner's own script, the same
 * measurement) for a model this run did not measure: { model, device, when, rows: [{ tokens, stateBytes, samples: { prefill, hot, stored } }] }.
 */
function readMambaRows(dir: string, have: MambaRestoreRow[], skipped: SkipNote[]): MambaRestoreRow[] {
  const f = join(dir, 'mamba-restore.json');
  if (!existsSync(f)) return [];
  try {
    const j = JSON.parse(readFileSync(f, 'utf8')) as {
      model: string;
      device: string;
      when?: string;
      load1?: number;
      rows: { tokens: number; stateBytes: number; samples: { prefill: number[]; hot: number[]; stored: number[] } }[];
    };
    const device: BenchDevice = j.device === 'webgpu' ? 'webgpu' : 'wasm';
    if (have.some((r) => r.model === j.model && r.device === device)) return [];
    return j.rows.map((r) => {
      const reprefill = stat(r.samples.prefill);
      const restore = stat(r.samples.hot);
      return {
        model: j.model,
        device,
        tokens: r.tokens,
        stateBytes: r.stateBytes,
        reprefillMs: reprefill,
        restoreMs: restore,
        restoreStoredMs: stat(r.samples.stored),
        speedup: reprefill.median / restore.median,
        from: `bench/mamba-restore.ts, ${j.when ?? 'undated'}${j.load1 !== undefined ? `, load ${j.load1.toFixed(1)}` : ''}`,
      };
    });
  } catch (e) {
    skipped.push({ what: 'bench/results/mamba-restore.json', reason: `could not be read: ${(e as Error).message}` });
    return [];
  }
}

type Call = <K extends keyof Bench>(name: K, ...args: Parameters<Bench[K]>) => Promise<Awaited<ReturnType<Bench[K]>>>;

async function openBench(browser: Browser, url: string): Promise<{ page: Page; call: Call }> {
  const page = await browser.newPage();
  page.on('console', (m) => {
    const t = m.text();
    // onnxruntime's node-placement warnings arrive as errors; they are expected.
    if (t.startsWith('[bench]') || (m.type() === 'error' && !t.includes('VerifyEachNodeIsAssignedToAnEp'))) console.log(`  ${t}`);
  });
  page.on('pageerror', (e) => console.log(`  page error: ${e.message}`));
  await page.goto(`${url}/bench/lib/page.html`);
  await page.waitForFunction(() => (window as unknown as { bench?: unknown }).bench !== undefined, undefined, { timeout: 120_000 });
  const call: Call = (name, ...args) =>
    page.evaluate(
      ([n, a]) => (window as unknown as { bench: Record<string, (...x: unknown[]) => Promise<unknown>> }).bench[n as string]!(...(a as unknown[])),
      [name, args] as const,
    ) as never;
  return { page, call };
}

// ---------------------------------------------------------------- main

function writeReadme(res: BenchResults, mdPath: string): void {
  const readme = join(REPO_ROOT, 'README.md');
  const doc = existsSync(readme) ? readFileSync(readme, 'utf8') : null;
  const next = doc === null ? null : replaceBetweenMarkers(doc, readmeSection(res, relative(REPO_ROOT, mdPath).split(sep).join('/')));
  if (next === null) console.log('note: README.md or its <!-- bench:start --> / <!-- bench:end --> markers are missing; its table was not written.');
  else if (next !== doc) {
    writeFileSync(readme, next);
    console.log("updated the README's table");
  } else console.log("the README's table is already up to date");
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.fromJson) {
    const res = JSON.parse(readFileSync(args.fromJson, 'utf8')) as BenchResults;
    // The separate scripts' outputs may be newer than the run: merge them (marked as merged) when the run has none.
    const dir = join(REPO_ROOT, 'bench', 'results');
    if (!res.codecs.length) {
      res.codecs = readCodecRows(dir, res.skipped);
      if (res.codecs.length) res.skipped = res.skipped.filter((x) => x.what !== 'codec table');
    }
    res.mambaRestore.push(...readMambaRows(dir, res.mambaRestore, res.skipped));
    writeFileSync(args.fromJson, JSON.stringify(res, null, 2) + '\n');
    const md = args.fromJson.replace(/\.json$/, '') + '.md';
    writeFileSync(md, toMarkdown(res));
    console.log(`${consoleSummary(res)}\n\nwrote ${md}`);
    if (args.readme) writeReadme(res, resolve(md));
    return;
  }
  const t0 = Date.now();
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(resultsDir, { recursive: true });
  const skipped: SkipNote[] = [];
  const res: BenchResults = {
    version: 1,
    mode: args.quick ? 'quick' : 'full',
    date: new Date().toISOString(),
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
    machine: machine(),
    browser: { name: 'Chromium', version: '', userAgent: '', crossOriginIsolated: false, threads: 0, webgpuAdapter: null, webgpuSoftware: null },
    devices: [],
    note: process.env.BENCH_NOTE ?? '',
    durationS: 0,
    loads: [],
    agentLoop: [],
    restore: [],
    continue: [],
    storage: [],
    mambaRestore: [],
    codecs: [],
    skipped,
  };

  console.log(`statecart bench (${res.mode}): models ${args.models.join(', ')}; load average ${res.machine.loadAvg.join(' ')} on ${res.machine.cores} cores`);
  await ensureModels(args.models, undefined, { log: (s) => console.log(`[models] ${s}`) });

  const server = await startServer({ root: REPO_ROOT, port: args.port, cacheRoot: CACHE_MODELS });
  const browser = await chromium.launch(launchOptions());
  try {
    res.browser.version = browser.version();
    {
      const { page, call } = await openBench(browser, server.url);
      const env = await call('env');
      res.browser.userAgent = env.userAgent;
      res.browser.crossOriginIsolated = env.crossOriginIsolated;
      res.browser.webgpuAdapter = env.adapter;
      res.browser.webgpuSoftware = env.software;
      await page.close();
    }
    const devices = args.devices.filter((d) => d === 'wasm' || res.browser.webgpuAdapter !== null);
    if (args.devices.includes('webgpu') && !res.browser.webgpuAdapter) skipped.push({ what: 'WebGPU', reason: 'this browser found no WebGPU adapter' });
    res.devices = devices;

    for (const device of devices) {
      const software = device === 'webgpu' && res.browser.webgpuSoftware === true;
      for (const model of args.models) {
        if (software && !model.startsWith('tiny')) {
          skipped.push({
            what: `${model} on WebGPU`,
            reason: `the only adapter is a software one (${res.browser.webgpuAdapter}); big models run on WASM only`,
          });
          continue;
        }
        const tgt: RunTarget = { model, device, ...(software ? { softwareAdapter: true } : {}) };
        const label = `${model} on ${device}${software ? ' (software adapter)' : ''}`;
        console.log(`\n== ${label}`);
        const { page, call } = await openBench(browser, server.url);
        try {
          await call('start', { device });
          let load: Awaited<ReturnType<Bench['load']>>;
          try {
            load = await call('load', model, device);
          } catch (e) {
            skipped.push({ what: label, reason: `the model did not load: ${(e as Error).message.split('\n')[0]}` });
            continue;
          }
          if (load.info.device !== device) {
            skipped.push({ what: label, reason: `the worker ran it on ${load.info.device} instead (${load.info.deviceReason})` });
            continue;
          }
          res.browser.crossOriginIsolated = load.crossOriginIsolated;
          if (device === 'wasm') res.browser.threads = load.threads;
          res.loads.push({
            ...tgt,
            wallMs: load.wallMs,
            loadMs: load.info.loadMs,
            adapter: load.info.adapter,
            deviceReason: load.info.deviceReason,
            threads: load.threads,
          });
          const plan = planFor(model, args.quick, software);
          const arch = load.info.arch ?? ARCH[model] ?? 'gpt2';
          const attempt = async (what: string, f: () => Promise<void>) => {
            const ts = Date.now();
            try {
              await f();
              console.log(`  ${what}: ${((Date.now() - ts) / 1000).toFixed(1)} s`);
            } catch (e) {
              console.log(`  ${what} FAILED: ${(e as Error).message}`);
              skipped.push({ what: `${what}, ${label}`, reason: (e as Error).message.split('\n')[0]! });
            }
          };
          if (arch === 'gpt2') {
            for (const r of plan.gpt2Restore) {
              await attempt(`restore ${r.tokens}`, async () => {
                const x = await call('restore', r);
                res.restore.push({
                  ...tgt,
                  tokens: r.tokens,
                  stateBytes: x.stateBytes,
                  recomputeMs: stat(x.recompute),
                  recomputePrefillMs: stat(x.recomputePrefill),
                  hotMs: stat(x.hot),
                  storedMs: stat(x.stored),
                  hotFirstLogitsMs: stat(x.hotFirst),
                  storedFirstLogitsMs: stat(x.storedFirst),
                  floorMs: stat(x.floor),
                  storedProfile: x.profile,
                });
              });
            }
            await attempt(`continue ${plan.continueTokens} + 16`, async () => {
              const x = await call('continue', { tokens: plan.continueTokens, newTokens: 16, reps: plan.continueReps });
              res.continue.push({
                ...tgt,
                baseTokens: plan.continueTokens,
                newTokens: 16,
                prefillBaseMs: stat(x.prefill),
                continueHotMs: stat(x.hot),
                continueStoredMs: stat(x.stored),
                freshMs: stat(x.fresh),
              });
            });
            if (!plan.loop)
              skipped.push({ what: `agent loop and agents, ${label}`, reason: 'too slow on a software WebGPU adapter (20 re-prefills of up to 1,014 tokens)' });
            let chain: { chainBytes: number; chainLogicalBytes: number; uniqueKvBytes: number; states: number } | null = null;
            if (plan.loop)
              await attempt('agent loop', async () => {
                const x = await call('agentLoop', { baseTokens: AGENT.baseTokens, deltas: AGENT_DELTAS, gen: AGENT.gen });
                res.agentLoop.push(agentLoopResult(tgt, x));
                chain = { chainBytes: x.health.bytesStored, chainLogicalBytes: x.health.logicalBytes, uniqueKvBytes: x.finalBytes, states: x.health.states };
              });
            if (plan.loop)
              await attempt(`${plan.agents} agents on one base`, async () => {
                const delta = 8;
                const x = await call('agents', { tokens: 512, count: plan.agents, delta });
                const c = chain as { chainBytes: number; chainLogicalBytes: number; uniqueKvBytes: number; states: number } | null;
                res.storage.push({
                  ...tgt,
                  chainBytes: c?.chainBytes ?? NaN,
                  chainLogicalBytes: c?.chainLogicalBytes ?? NaN,
                  uniqueKvBytes: c?.uniqueKvBytes ?? NaN,
                  ratio: c ? c.chainBytes / c.uniqueKvBytes : NaN,
                  states: c?.states ?? 0,
                  agents: plan.agents,
                  agentDeltaTokens: delta,
                  agentsBytes: x.agentsBytes,
                  naiveAgentsBytes: x.naiveAgentsBytes,
                  baseBytes: x.baseBytes,
                });
              });
          } else {
            for (const r of plan.mamba) {
              await attempt(`mamba restore ${r.tokens}`, async () => {
                const x = await call('restore', r);
                const reprefill = stat(x.recompute);
                const restore = stat(x.hot);
                res.mambaRestore.push({
                  ...tgt,
                  tokens: r.tokens,
                  stateBytes: x.stateBytes,
                  reprefillMs: reprefill,
                  restoreMs: restore,
                  restoreStoredMs: stat(x.stored),
                  speedup: reprefill.median / restore.median,
                });
              });
            }
          }
        } finally {
          await page.close();
        }
      }
    }
  } finally {
    await browser.close();
    await server.close();
  }

  res.codecs = readCodecRows(resultsDir, skipped);
  res.mambaRestore.push(...readMambaRows(resultsDir, res.mambaRestore, skipped));
  if (!res.codecs.length) skipped.push({ what: 'codec table', reason: 'no codec results in bench/results/ (bench/codec-table.ts writes them)' });
  const end = os.loadavg();
  res.machine.loadAvgEnd = end.map((x) => Math.round(x * 100) / 100);
  // The 15-minute average at the end covers most of a long run; the start's 1-minute one covers a short run's beginning.
  const la = Math.max(res.machine.loadAvg[0]!, end[0]!, end[2]!);
  if (!res.note && la > res.machine.cores * 0.75) {
    res.note = `Taken under load: load averages ${res.machine.loadAvg.join('/')} (1/5/15 min) at the start and ${res.machine.loadAvgEnd.join('/')} at the end, on ${res.machine.cores} cores, so timings are noisy and slower than on an idle machine.`;
  }
  res.durationS = (Date.now() - t0) / 1000;

  console.log(`\n${consoleSummary(res)}\n`);
  const names = args.out ? [args.out] : ['latest', `latest-${res.mode}`];
  for (const n of names) {
    writeFileSync(join(resultsDir, `${n}.json`), JSON.stringify(res, null, 2) + '\n');
    writeFileSync(join(resultsDir, `${n}.md`), toMarkdown(res));
  }
  console.log(`wrote ${names.map((n) => `bench/results/${n}.json and .md`).join(', ')} (${Math.round(res.durationS)} s)`);
  if (args.readme && !args.out) writeReadme(res, join(resultsDir, 'latest.md'));
}

/** Medians of the worker's own timers over the cached steps; "other" is the wall time none of them covers (messaging, lookups). */
function breakdown(steps: { ms: number; timings: Record<string, number> }[]): AgentLoopResult['cachedBreakdown'] {
  const med = (f: (s: { ms: number; timings: Record<string, number> }) => number) => stat(steps.map(f)).median;
  const part = (k: string) => med((s) => s.timings[k] ?? 0);
  const known = ['restoreMs', 'prefillMs', 'generateMs', 'storeMs'];
  return {
    restoreMs: part('restoreMs'),
    prefillMs: part('prefillMs'),
    generateMs: part('generateMs'),
    storeMs: part('storeMs'),
    otherMs: med((s) => s.ms - known.reduce((a, k) => a + (s.timings[k] ?? 0), 0)),
  };
}

type AgentLoopRaw = Awaited<ReturnType<Bench['agentLoop']>>;

/** Totals and ratios of one agent-loop run. */
function agentLoopResult(tgt: RunTarget, x: AgentLoopRaw): AgentLoopResult {
  const sum = (a: number[]) => a.reduce((s, v) => s + v, 0);
  const naiveTokens = sum(x.naive.map((s) => s.tokens));
  const cachedTokensNoBase = sum(x.cached.map((s) => s.tokens));
  const cachedTokens = x.baseProcessed + cachedTokensNoBase;
  const naiveMs = sum(x.naive.map((s) => s.ms));
  const naiveComputeMs = sum(x.naive.map((s) => s.computeMs));
  const identical =
    x.naive.length === x.cached.length && x.naive.every((s, i) => s.out.length === x.cached[i]!.out.length && s.out.every((t, j) => t === x.cached[i]!.out[j]));
  return {
    ...tgt,
    steps: x.naive.length,
    baseTokens: AGENT.baseTokens,
    deltaTokens: x.deltaTokens,
    newTokensPerStep: AGENT.gen,
    naiveTokens,
    cachedTokens,
    cachedTokensNoBase,
    tokensSavedPct: 100 * (1 - cachedTokens / naiveTokens),
    naiveMs,
    naiveComputeMs,
    cachedMs: x.cachedMs,
    cachedStepsMs: x.cachedMs - x.baseMs,
    naiveStepMs: stat(x.naive.map((s) => s.ms)),
    cachedStepMs: stat(x.cached.map((s) => s.ms)),
    speedup: naiveMs / x.cachedMs,
    speedupVsCompute: naiveComputeMs / x.cachedMs,
    identicalOutputs: identical,
    cachedBreakdown: breakdown(x.cached),
  };
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
