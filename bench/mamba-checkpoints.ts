/**
 * Mamba prefix checkpoints (issue 18) on mamba-130m-shape: a stored
 * 1,100-token state, then a prompt that shares its first 1,000 tokens and adds
 * 100 of its own. For each checkpoint spacing K (0: none), how many tokens the
 * second prompt recomputes and how long it takes, the bytes the checkpoints
 * add and the first prefill's cost of writing them.
 *
 *   npx tsx scripts/make-models.ts --models mamba-130m-shape   # once
 *   npx tsx bench/mamba-checkpoints.ts [--where browser|node] [--ks 0,256,512,1024] [--reps 2] [--port 5198]
 *
 * browser: headless Chromium, the demo page's client, onnxruntime-web on WASM
 * (as an app runs it). node: the engine in-thread on onnxruntime-node (CPU)
 * and fake-indexeddb. Prints JSON lines and a table; writes
 * bench/results/mamba-checkpoints-<where>.json.
 */
import 'fake-indexeddb/auto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { launchOptions } from '../tests/e2e/browser.ts';
import { CACHE_MODELS, REPO_ROOT } from '../scripts/make-models.ts';
import { startServer } from './lib/server.ts';
import type { StatecartClient } from '../src/lib/index.ts';
import type { DebugApi } from '../src/lib/testing.ts';
import type { CreateStateRequest, CreateStateResult } from '../src/engine/api.ts';
import { Engine } from '../src/engine/engine.ts';
import { StateStore } from '../src/store/store.ts';
import { loadNodeModel } from '../tests/unit/support/codec-models.ts';

declare global {
  interface Window {
    statecart?: StatecartClient;
    statecartReady?: Promise<StatecartClient>;
    statecartTesting?: DebugApi;
  }
}

const argv = process.argv.slice(2);
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 && argv[i + 1] ? argv[i + 1]! : d;
};
const model = arg('model', 'mamba-130m-shape');
const where = arg('where', 'browser');
const ks = arg('ks', '0,256,512,1024').split(',').map(Number);
const reps = Number(arg('reps', '2'));
const port = Number(arg('port', '5198'));
const STORED = 1100;
const SHARED = 1000;
const OWN = 100;

const median = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const ids = (n: number, salt: number): number[] => Array.from({ length: n }, (_, i) => (i * 7919 + 13 + salt * 104729) % 50257);

/** One run of the case: what each of the two createState calls returned, and the store's bytes after the first. */
interface Sample {
  first: CreateStateResult;
  second: CreateStateResult;
  bytesAfterFirst: number;
}

/** The calls the case makes, wherever the engine runs. */
interface Driver {
  clear(): Promise<void>;
  create(req: CreateStateRequest): Promise<CreateStateResult>;
  dropHot(): Promise<void>;
  storeBytes(): Promise<number>;
  info(): Promise<Record<string, unknown>>;
  close(): Promise<void>;
}

async function nodeDriver(): Promise<Driver> {
  const m = await loadNodeModel(model);
  let store = new StateStore({ dbName: `bench-ck-${process.pid}-0` });
  let n = 0;
  let engine = new Engine(store, async () => m);
  return {
    clear: async () => {
      store.close();
      store = new StateStore({ dbName: `bench-ck-${process.pid}-${++n}` });
      engine = new Engine(store, async () => m);
    },
    create: (req) => engine.createState(req),
    dropHot: async () => store.hot.clear(),
    storeBytes: async () => (await store.usage()).bytes,
    info: async () => ({ device: m.device, runtime: 'onnxruntime-node', store: 'fake-indexeddb' }),
    close: async () => store.close(),
  };
}

async function browserDriver(): Promise<Driver> {
  const srv = await startServer({ root: REPO_ROOT, port, cacheRoot: CACHE_MODELS });
  const browser = await chromium.launch(launchOptions());
  const page = await browser.newPage({ baseURL: srv.url });
  page.on('console', (m) => m.type() === 'error' && console.error('[page]', m.text()));
  await page.goto(`/?${new URLSearchParams({ model, device: 'wasm' })}`);
  await page.waitForFunction(() => window.statecartReady !== undefined, undefined, { timeout: 600_000 });
  await page.evaluate(() => window.statecartReady, undefined);
  const h = await page.evaluate(() => window.statecart!.health());
  if (h.model !== model) throw new Error(`the page loaded ${h.model}, not ${model}`);
  return {
    clear: () => page.evaluate(() => window.statecart!.clearStore()),
    create: (req) => page.evaluate((r) => window.statecart!.createState(r), req),
    dropHot: () => page.evaluate(() => window.statecartTesting!.dropHot()),
    storeBytes: () => page.evaluate(async () => (await window.statecart!.storageInfo()).storeBytes),
    info: async () => ({ device: h.device, threads: h.threads, crossOriginIsolated: h.crossOriginIsolated, runtime: 'onnxruntime-web', store: 'IndexedDB' }),
    close: async () => {
      await browser.close();
      await srv.close();
    },
  };
}

const d = where === 'node' ? await nodeDriver() : await browserDriver();
const rows: Record<string, unknown>[] = [];
try {
  const info = await d.info();
  console.log(JSON.stringify({ model, where, ...info, cpus: os.cpus().length, load1: os.loadavg()[0] }));
  let salt = 1;
  for (const K of ks) {
    const samples: Sample[] = [];
    for (let i = 0; i < reps; i++) {
      await d.clear();
      const stored = ids(STORED, salt++);
      const first = await d.create({ tokens: stored, checkpointEvery: K });
      const bytesAfterFirst = await d.storeBytes();
      // From IndexedDB, as after a restart: the checkpoint is read and its digest checked.
      await d.dropHot();
      const second = await d.create({ tokens: [...stored.slice(0, SHARED), ...ids(OWN, salt++)], checkpointEvery: K });
      samples.push({ first, second, bytesAfterFirst });
    }
    const s0 = samples[0]!;
    const ckBytes = s0.first.checkpoints.length ? (s0.bytesAfterFirst - s0.first.bytes) / s0.first.checkpoints.length : 0;
    const row = {
      K,
      checkpoints: s0.first.checkpoints.length,
      stateBytes: s0.first.bytes,
      bytesPerCheckpoint: Math.round(ckBytes),
      bytesPer1024Tokens: K ? Math.round(ckBytes * Math.floor(1024 / K)) : 0,
      firstPrefillMs: +median(samples.map((s) => s.first.timings.prefillMs)).toFixed(0),
      firstStoreMs: +median(samples.map((s) => s.first.timings.storeMs)).toFixed(0),
      prefillTokPerS: +median(samples.map((s) => (STORED / s.first.timings.prefillMs) * 1000)).toFixed(0),
      secondReused: s0.second.reused,
      secondRecomputed: s0.second.processed,
      secondBound: K ? K + OWN : STORED,
      secondPrefillMs: +median(samples.map((s) => s.second.timings.prefillMs)).toFixed(0),
      secondTotalMs: +median(samples.map((s) => s.second.timings.totalMs)).toFixed(0),
      reason: s0.second.reuse.reason,
    };
    if (K && row.secondRecomputed > K + OWN) throw new Error(`K=${K}: recomputed ${row.secondRecomputed} > K + ${OWN}`);
    rows.push(row);
    console.log(JSON.stringify(row));
  }
  console.log(
    '\n| K | checkpoints | bytes / checkpoint | bytes / 1,024 tokens | 1st prefill ms | 1st store ms | prefill tok/s | 2nd reused | 2nd recomputed | 2nd prefill ms | 2nd total ms |',
  );
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows)
    console.log(
      `| ${r.K || 'none'} | ${r.checkpoints} | ${r.bytesPerCheckpoint} | ${r.bytesPer1024Tokens} | ${r.firstPrefillMs} | ${r.firstStoreMs} | ${r.prefillTokPerS} | ${r.secondReused} | ${r.secondRecomputed} | ${r.secondPrefillMs} | ${r.secondTotalMs} |`,
    );
  mkdirSync(join(REPO_ROOT, 'bench/results'), { recursive: true });
  writeFileSync(
    join(REPO_ROOT, `bench/results/mamba-checkpoints-${where}.json`),
    JSON.stringify({ model, where, ...info, reps, load1: os.loadavg()[0], when: new Date().toISOString(), rows }, null, 2) + '\n',
  );
} finally {
  await d.close();
}
