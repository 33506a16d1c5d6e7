/**
 * `npm run bench [-- --quick]`: statecart against a page without it, measured
 * side by side in one run, in headless Chromium (the e2e tests' browser setup)
 * on WASM, and on WebGPU when an adapter exists (a software adapter: tiny
 * models only, a reduced plan).
 *
 *   (no flag)            every model, every row: writes bench/results/latest.json,
 *                        latest.md and the README's table (between <!-- bench:start -->
 *                        and <!-- bench:end -->), which is generated from latest.json only
 *   --quick              the tiny models: writes bench/results/latest-quick.json / .md only
 *   --models a,b         only these models        } any of these makes a partial run:
 *   --devices wasm,webgpu                          } it writes bench/results/partial.json / .md
 *   --only agent,ttft,decode,prefill,restore,agents } (or --out NAME), never latest.* or
 *   --reps N             N repetitions everywhere  } the README
 *   --steps N            the first N agent-loop steps }
 *   --out NAME           write bench/results/NAME.json and NAME.md (never the README)
 *   --port N             the bench's own Vite server (default 5199, or $BENCH_PORT)
 *   --no-readme          leave README.md alone
 *   --from-json FILE     run nothing: rewrite FILE's .md (and for latest.json the README's
 *                        table) from FILE, which is not changed
 *
 * Every run (quick included) also fills quality[]: the held-out perplexity of
 * micro-gpt2 and tiny-gpt2, in Node on their served ONNX graphs (bench/lib/quality.ts).
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
import { agentLoopRow, decodeRow, prefillRow, ttftRow } from './lib/rows.ts';
import { readResults } from './lib/upgrade.ts';
import { heldOutPerplexity } from './lib/quality.ts';
import { DEFINITIONS } from './lib/definitions.ts';
import { TARGETS } from './lib/targets.ts';
import { outputName, parseArgs, type Section } from './lib/args.ts';
import type { BenchDevice, BenchResults, MambaRestoreRow, RunTarget, SkipNote } from './lib/types.ts';
import type { Bench } from './lib/page.ts';
import { measureCodecRows } from './codec-rows.ts';

// ---------------------------------------------------------------- the plan

/** 20 deltas in 10–40 tokens; with 4 new tokens a step, base 512 + 426 + 80 = 1,018 tokens fits GPT-2's 1,024 positions. */
const AGENT_DELTAS = [12, 31, 18, 25, 10, 40, 14, 22, 17, 28, 11, 35, 16, 20, 13, 26, 19, 24, 15, 30];
const AGENT = { baseTokens: 512, gen: 4 };
/** The trained default model and the seeded one it replaced, for quality[]. */
const QUALITY_MODELS = ['micro-gpt2', 'tiny-gpt2'];

interface Plan {
  /** The agent loop's steps (GPT-2 only): 20 plain re-prefills of up to 1,014 tokens. */
  agentSteps: number;
  ttft: { baseTokens: number; newTokens: number; reps: number }[];
  decode: { contexts: number[]; reps: number } | null;
  prefill: { tokens: number; reps: number } | null;
  restore: { tokens: number; reps: number }[];
  /** Agents continuing one base (GPT-2 only). */
  agents: number;
}

function planFor(model: string, arch: 'gpt2' | 'mamba', softwareGpu: boolean): Plan {
  const tiny = model.startsWith('tiny');
  const ttft = (reps: number) => [TARGETS.ttftHot, TARGETS.ttftStored].map((t) => ({ baseTokens: t.baseTokens, newTokens: t.newTokens, reps }));
  const d = TARGETS.decode;
  // SwiftShader takes tens of seconds for a tiny model's 512-token prefill here: small sizes, two runs.
  if (softwareGpu)
    return {
      agentSteps: 0,
      ttft: [{ baseTokens: 128, newTokens: 16, reps: 2 }],
      decode: null,
      prefill: null,
      restore: [{ tokens: arch === 'gpt2' ? 128 : 256, reps: 2 }],
      agents: 0,
    };
  const reps = tiny ? 5 : 3;
  return {
    agentSteps: arch === 'gpt2' ? AGENT_DELTAS.length : 0,
    ttft: ttft(reps),
    decode: { contexts: [d.short, d.mid, d.long], reps },
    prefill: { tokens: TARGETS.prefill.tokens, reps },
    restore:
      arch === 'gpt2'
        ? [128, 512, 1024].map((tokens) => ({ tokens, reps }))
        : [
            { tokens: 256, reps },
            { tokens: 1024, reps: tiny ? reps : 2 },
            { tokens: 4096, reps: tiny ? reps : 2 },
          ],
    agents: arch === 'gpt2' ? 100 : 0,
  };
}

/** --only, --reps and --steps narrow the plan. */
function narrow(p: Plan, only: Section[] | null, reps: number | null, steps: number | null): Plan {
  const on = (s: Section) => !only || only.includes(s);
  const r = <T extends { reps: number }>(x: T): T => (reps ? { ...x, reps } : x);
  return {
    agentSteps: on('agent') ? Math.min(p.agentSteps, steps ?? Infinity) : 0,
    ttft: on('ttft') ? p.ttft.map(r) : [],
    decode: on('decode') && p.decode ? r(p.decode) : null,
    prefill: on('prefill') && p.prefill ? r(p.prefill) : null,
    restore: on('restore') ? p.restore.map(r) : [],
    agents: on('agents') ? p.agents : 0,
  };
}

const ARCH: Record<string, 'gpt2' | 'mamba'> = { 'tiny-gpt2': 'gpt2', 'gpt2-shape': 'gpt2', 'tiny-mamba': 'mamba', 'mamba-130m-shape': 'mamba' };

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
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 1024 ** 3),
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
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
        reprefillOverHotLookup: reprefill.median / restore.median,
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

/** quality[]: held-out perplexity of the trained default model and the seeded tiny one. */
async function measureQuality(res: BenchResults, skipped: SkipNote[]): Promise<void> {
  for (const model of QUALITY_MODELS) {
    const ts = Date.now();
    try {
      const [built] = await ensureModels([model], undefined, { log: (s) => console.log(`[models] ${s}`) });
      const row = await heldOutPerplexity(model, built!.dir);
      res.quality.push(row);
      console.log(
        `  quality ${model}: perplexity ${row.perplexity.toFixed(1)} over ${row.heldOutTokens} held-out tokens (${((Date.now() - ts) / 1000).toFixed(1)} s)`,
      );
    } catch (e) {
      console.log(`  quality ${model} FAILED: ${(e as Error).message}`);
      skipped.push({ what: `held-out perplexity, ${model}`, reason: (e as Error).message.split('\n')[0]! });
    }
  }
}

// ---------------------------------------------------------------- main

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const out = outputName(args);
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  if (args.fromJson) {
    const file = resolve(args.fromJson);
    const res = readResults(JSON.parse(readFileSync(file, 'utf8')));
    const md = file.replace(/\.json$/, '') + '.md';
    writeFileSync(md, toMarkdown(res));
    console.log(`${consoleSummary(res)}\n\nwrote ${relative(REPO_ROOT, md)}`);
    // Only the full run's file may write the README.
    if (args.readme && file === join(resultsDir, 'latest.json')) writeReadme(res, md);
    return;
  }
  const t0 = Date.now();
  mkdirSync(resultsDir, { recursive: true });
  const skipped: SkipNote[] = [];
  const res: BenchResults = {
    version: 2,
    mode: args.mode,
    command: args.command,
    date: new Date().toISOString(),
    commit: git(['rev-parse', 'HEAD']) || 'unknown',
    dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
    machine: machine(),
    browser: {
      name: 'Chromium',
      version: '',
      userAgent: '',
      hardwareConcurrency: null,
      crossOriginIsolated: false,
      threads: 0,
      plainThreads: null,
      webgpuAdapter: null,
      webgpuSoftware: null,
    },
    devices: [],
    note: process.env.BENCH_NOTE ?? '',
    durationS: 0,
    definitions: DEFINITIONS,
    loads: [],
    agentLoop: [],
    ttft: [],
    decode: [],
    prefill: [],
    restore: [],
    storage: [],
    mambaRestore: [],
    codecs: [],
    quality: [],
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
      res.browser.hardwareConcurrency = env.hardwareConcurrency;
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
        const arch0 = ARCH[model] ?? 'gpt2';
        const plan = narrow(planFor(model, arch0, software), args.only, args.reps, args.steps);
        const needsPlain = plan.agentSteps > 0 || plan.ttft.length > 0 || plan.decode !== null || plan.prefill !== null;
        const { page, call } = await openBench(browser, server.url);
        try {
          await call('start', { device });
          let load: Awaited<ReturnType<Bench['load']>>;
          try {
            load = await call('load', model, device, { plain: needsPlain });
          } catch (e) {
            skipped.push({ what: label, reason: `the model did not load: ${(e as Error).message.split('\n')[0]}` });
            continue;
          }
          if (load.info.device !== device) {
            skipped.push({ what: label, reason: `the worker ran it on ${load.info.device} instead (${load.info.deviceReason})` });
            continue;
          }
          res.browser.crossOriginIsolated = load.crossOriginIsolated;
          if (device === 'wasm') {
            res.browser.threads = load.threads;
            if (load.plain) res.browser.plainThreads = load.plain.threads;
          }
          res.loads.push({
            ...tgt,
            wallMs: load.wallMs,
            loadMs: load.info.loadMs,
            adapter: load.info.adapter,
            deviceReason: load.info.deviceReason,
            threads: load.threads,
            plainWallMs: load.plain?.wallMs ?? null,
            plainThreads: load.plain?.threads ?? null,
          });
          // A baseline on other threads or other weights would not be the same model's cost.
          let plainOk = load.plain !== null;
          if (load.plain && (load.plain.threads !== load.threads || !load.plain.fingerprintMatches || !load.plain.sameEnv)) {
            plainOk = false;
            skipped.push({
              what: `plain-baseline rows, ${label}`,
              reason: `the plain worker did not match the statecart worker (threads ${load.plain.threads} vs ${load.threads}, same weights: ${load.plain.fingerprintMatches}, one onnxruntime env: ${load.plain.sameEnv})`,
            });
          }
          const arch = load.info.arch;
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

          let chain: { chainBytes: number; chainLogicalBytes: number; uniqueKvBytes: number; states: number } | null = null;
          if (plainOk && plan.agentSteps > 0)
            await attempt('agent loop', async () => {
              const x = await call('agentLoop', { baseTokens: AGENT.baseTokens, deltas: AGENT_DELTAS.slice(0, plan.agentSteps), gen: AGENT.gen });
              const row = agentLoopRow(tgt, x);
              res.agentLoop.push(row);
              if (!row.identicalOutputs) skipped.push({ what: `agent loop, ${label}`, reason: 'the plain and cached runs generated different tokens' });
              chain = { chainBytes: x.health.bytesStored, chainLogicalBytes: x.health.logicalBytes, uniqueKvBytes: x.finalBytes, states: x.health.states };
            });
          else if (arch === 'gpt2' && software) skipped.push({ what: `agent loop and agents, ${label}`, reason: 'too slow on a software WebGPU adapter' });
          if (plainOk)
            for (const t of plan.ttft)
              await attempt(`first token ${t.baseTokens} + ${t.newTokens}`, async () => {
                const x = await call('ttft', t);
                const row = ttftRow(tgt, x);
                res.ttft.push(row);
                if (!row.identicalFirstToken)
                  skipped.push({ what: `first token ${t.baseTokens} + ${t.newTokens}, ${label}`, reason: 'plain and statecart picked different first tokens' });
              });
          if (plainOk && plan.decode)
            for (const context of plan.decode.contexts)
              await attempt(`decode at ${context}`, async () => {
                const x = await call('decode', { context, extraTokens: TARGETS.decode.extraTokens, reps: plan.decode!.reps });
                res.decode.push(decodeRow(tgt, x));
              });
          if (plainOk && plan.prefill)
            await attempt(`prefill ${plan.prefill.tokens}`, async () => {
              res.prefill.push(prefillRow(tgt, await call('prefill', plan.prefill!)));
            });
          for (const r of plan.restore) {
            await attempt(`restore ${r.tokens}`, async () => {
              const x = await call('restore', r);
              if (arch === 'gpt2') {
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
              } else {
                const reprefill = stat(x.recompute);
                const restore = stat(x.hot);
                res.mambaRestore.push({
                  ...tgt,
                  tokens: r.tokens,
                  stateBytes: x.stateBytes,
                  reprefillMs: reprefill,
                  restoreMs: restore,
                  restoreStoredMs: stat(x.stored),
                  reprefillOverHotLookup: reprefill.median / restore.median,
                });
              }
            });
          }
          if (plan.agents > 0)
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
          await call('close').catch(() => undefined);
        } finally {
          await page.close();
        }
      }
    }
  } finally {
    await browser.close();
    await server.close();
  }

  // Quality is measured in every run (quick included), in Node on the served ONNX graphs: the trained model against the seeded one.
  await measureQuality(res, skipped);

  // The separate scripts' rows (marked as merged) complete a full run only; a quick or partial one shows what it measured.
  // The codec table is measured in this run (bench/codec-rows.ts: the trained micro-gpt2, in Node), full and quick alike.
  if (res.mode !== 'partial') res.codecs = await measureCodecRows({ quick: res.mode === 'quick', skipped, log: (s) => console.log(s) });
  if (res.mode === 'full') res.mambaRestore.push(...readMambaRows(resultsDir, res.mambaRestore, skipped));
  const end = os.loadavg();
  res.machine.loadAvgEnd = end.map((x) => Math.round(x * 100) / 100);
  // The 15-minute average at the end covers most of a long run; the start's 1-minute one covers a short run's beginning.
  const la = Math.max(res.machine.loadAvg[0]!, end[0]!, end[2]!);
  if (!res.note && la > res.machine.cores * 0.75) {
    res.note = `Taken under load: load averages ${res.machine.loadAvg.join('/')} (1/5/15 min) at the start and ${res.machine.loadAvgEnd.join('/')} at the end, on ${res.machine.cores} cores, so timings are noisy and slower than on an idle machine.`;
  }
  res.durationS = (Date.now() - t0) / 1000;

  console.log(`\n${consoleSummary(res)}\n`);
  // A quick or narrowed run never replaces the full run's files or the README.
  const jsonPath = join(resultsDir, `${out.name}.json`);
  const mdPath = join(resultsDir, `${out.name}.md`);
  writeFileSync(jsonPath, JSON.stringify(res, null, 2) + '\n');
  writeFileSync(mdPath, toMarkdown(res));
  console.log(`wrote ${relative(REPO_ROOT, jsonPath)} and ${relative(REPO_ROOT, mdPath)} (${Math.round(res.durationS)} s)`);
  if (args.readme && out.readme) writeReadme(res, mdPath);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
